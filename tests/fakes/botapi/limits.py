"""Telegram's flood control: sliding windows of accepted sends and edits, 429 with retry_after.

Telegram documents about 30 messages a second overall, 20 a minute in one group or channel,
and about one a second in one private chat; a private rate below 1 here means one message per
``1/rate`` seconds. A send with ``allow_paid_broadcast`` ignores the free overall limit and
counts only against the paid one (up to 1,000 a second), which every send counts against.
Refused requests don't count, so a client retrying too early doesn't extend its own wait.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

from tests.fakes.botapi.calls import ApiCall, ApiError
from tests.fakes.botapi.chats import Chats
from tests.fakes.botapi.messages import MESSAGE_METHODS

#: Methods subject to the flood-control windows.
RATE_LIMITED_METHODS = MESSAGE_METHODS | {"editMessageText", "editMessageCaption"}


@dataclass(slots=True)
class Window:
    """Sliding window of accepted request times."""

    limit: int
    length: float
    times: deque[float] = field(default_factory=deque)

    def wait_needed(self, now: float) -> float:
        """Seconds until one more request fits (0 if it fits now)."""
        while self.times and self.times[0] <= now - self.length:
            self.times.popleft()
        if len(self.times) < self.limit:
            return 0.0
        # The window frees a slot when the (len-limit+1)-th oldest entry expires.
        return self.times[len(self.times) - self.limit] + self.length - now


class Limits:
    def __init__(
        self,
        global_per_second: int,
        group_per_minute: int,
        private_per_second: float,
        paid_per_second: int = 1000,
    ) -> None:
        self._global = Window(global_per_second, 1.0)
        self._paid = Window(max(paid_per_second, global_per_second), 1.0)
        self._group_per_minute = group_per_minute
        rate = private_per_second
        self._private = (int(rate), 1.0) if rate >= 1 else (1, 1.0 / rate)
        self._per_chat: dict[int, Window] = {}
        #: 429s the windows gave (scripted ones not included).
        self.violations = 0
        #: Of those, how many each kind of window refused: "paid" (every send), "free"
        #: (sends without allow_paid_broadcast), "chat" (the chat's own).
        self.refused_by: Counter[str] = Counter()

    def check(self, call: ApiCall, chats: Chats) -> list[Window]:
        """Raise 429 if a window is full; else return the windows to record the call into."""
        if call.method not in RATE_LIMITED_METHODS:
            return []
        # Paid sends skip the free window; every send, paid or not, fills the paid one.
        named = [("paid", self._paid)]
        if not call.params.get("allow_paid_broadcast"):
            named.append(("free", self._global))
        raw_chat = call.params.get("chat_id")
        if raw_chat is not None:
            named.append(("chat", self._chat_window(chats.resolve(raw_chat)["id"])))
        waits = [(name, window.wait_needed(call.at)) for name, window in named]
        wait = max(seconds for _, seconds in waits)
        if wait > 0:
            self.violations += 1
            self.refused_by.update(name for name, seconds in waits if seconds > 0)
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds}
            )
        return [window for _, window in named]

    def _chat_window(self, chat_id: int) -> Window:
        window = self._per_chat.get(chat_id)
        if window is None:
            limit, length = self._private if chat_id > 0 else (self._group_per_minute, 60.0)
            window = self._per_chat[chat_id] = Window(limit, length)
        return window
