"""Telegram's flood control: sliding windows of accepted sends and edits, 429 with retry_after.

Telegram documents about 30 messages a second overall, 20 a minute in one group or channel,
and about one a second in one private chat; a private rate below 1 here means one message per
``1/rate`` seconds. Refused requests don't count, so a client retrying too early doesn't
extend its own wait.
"""

from __future__ import annotations

import math
from collections import deque
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
        self, global_per_second: int, group_per_minute: int, private_per_second: float
    ) -> None:
        self._global = Window(global_per_second, 1.0)
        self._group_per_minute = group_per_minute
        rate = private_per_second
        self._private = (int(rate), 1.0) if rate >= 1 else (1, 1.0 / rate)
        self._per_chat: dict[int, Window] = {}
        #: 429s the windows gave (scripted ones not included).
        self.violations = 0

    def check(self, call: ApiCall, chats: Chats) -> list[Window]:
        """Raise 429 if a window is full; else return the windows to record the call into."""
        if call.method not in RATE_LIMITED_METHODS:
            return []
        windows = [self._global]
        raw_chat = call.params.get("chat_id")
        if raw_chat is not None:
            windows.append(self._chat_window(chats.resolve(raw_chat)["id"]))
        wait = max(window.wait_needed(call.at) for window in windows)
        if wait > 0:
            self.violations += 1
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds}
            )
        return windows

    def _chat_window(self, chat_id: int) -> Window:
        window = self._per_chat.get(chat_id)
        if window is None:
            limit, length = self._private if chat_id > 0 else (self._group_per_minute, 60.0)
            window = self._per_chat[chat_id] = Window(limit, length)
        return window
