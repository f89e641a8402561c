"""How incoming updates are received and scheduled.

- TolerantBot: an update that PTB cannot parse (a field its version does not know, or lacks)
  is logged and replaced by an empty update with the same id, so getUpdates moves past it
  instead of fetching the same batch forever and starving every other chat.
- PerChatUpdateProcessor: updates of one chat are handled one at a time and in order, so
  replies never overtake each other; different chats are handled concurrently, and one chat's
  backlog (bounded: a flood is cut, and the chat told once) never delays another chat.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor, ExtBot

log = logging.getLogger(__name__)

MAX_BACKLOG = 20  # updates of one chat waiting behind the one running; more are dropped


class TolerantBot(ExtBot[Any]):
    """ExtBot whose getUpdates survives updates it cannot parse, and is asked only while
    `may_poll()` allows (several instances: the leader alone may call it)."""

    may_poll: Callable[[], bool] | None = None

    def gate_polling(self, may_poll: Callable[[], bool]) -> None:
        """Ask getUpdates only while `may_poll()` (PTB freezes its objects after __init__)."""
        with self._unfrozen():
            self.may_poll = may_poll

    async def _post(self, endpoint: str, data: Any = None, **kwargs: Any) -> Any:
        if endpoint == "getUpdates" and self.may_poll is not None and not self.may_poll():
            # Not the leader (any more): no request, so Telegram never sees two pollers.
            await asyncio.sleep(1.0)
            return []
        result = await super()._post(endpoint, data, **kwargs)
        if endpoint == "getUpdates" and isinstance(result, list):
            return [self._parseable(raw) for raw in result]
        return result

    def _parseable(self, raw: Any) -> Any:
        if not isinstance(raw, dict) or "update_id" not in raw:
            return raw
        try:
            Update.de_json(raw, self)
        except Exception as exc:  # any parse failure must not block polling
            kinds = sorted(k for k in raw if k != "update_id")
            log.warning(
                "skipping update %s that cannot be parsed (%s): %s: %s",
                raw["update_id"], ",".join(kinds), type(exc).__name__, exc,
            )  # fmt: skip
            return {"update_id": raw["update_id"]}
        return raw


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Run updates concurrently across chats but strictly in order within one chat.

    PTB takes one of its `max_concurrent_updates` slots for every update before calling
    do_process_update. A chat with nothing running becomes busy and its update runs in that
    slot; that task then works through the chat's backlog, one update after another. Any
    further update of a busy chat is only put on its backlog and its task returns at once,
    giving the slot back: a chat's backlog holds one slot, never all of them, so it cannot delay
    another chat's reply. A backlog holds at most `max_backlog` updates; the excess is dropped
    (counted in `dropped`) and `on_flood` is told once per flood (until the backlog empties).
    """

    def __init__(
        self,
        max_concurrent_updates: int,
        *,
        max_backlog: int = MAX_BACKLOG,
        on_flood: Callable[[Update], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(max_concurrent_updates)
        self.max_backlog = max_backlog
        self.on_flood = on_flood  # set by whoever can word the notice (handlers.register)
        self.dropped = 0  # updates dropped because their chat's backlog was full
        self._busy: dict[int, _Backlog] = {}  # chats with an update running

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = _chat_key(update)
        if key is None:
            await coroutine
            return
        backlog = self._busy.get(key)
        if backlog is not None:
            await self._enqueue(key, backlog, update, coroutine)
            return
        backlog = self._busy[key] = _Backlog()
        try:
            current: Awaitable[Any] | None = coroutine
            while current is not None:
                await _run(key, current)
                current = backlog.queue.popleft() if backlog.queue else None
        finally:
            del self._busy[key]
            if backlog.dropped:
                log.warning("chat %d: %d update(s) of a flood were dropped", key, backlog.dropped)
            # Only left over when this task was cancelled: nothing will run them now.
            for left in backlog.queue:
                _close(left)

    async def _enqueue(
        self, key: int, backlog: _Backlog, update: object, coroutine: Awaitable[Any]
    ) -> None:
        if len(backlog.queue) < self.max_backlog:
            backlog.queue.append(coroutine)
            return
        _close(coroutine)
        self.dropped += 1
        backlog.dropped += 1
        if backlog.told:
            return
        backlog.told = True
        log.warning("chat %d: more than %d updates waiting; dropping the excess", key,
                    self.max_backlog)  # fmt: skip
        if self.on_flood is not None and isinstance(update, Update):
            try:
                await self.on_flood(update)
            except Exception:  # the notice is a courtesy; the bot goes on without it
                log.exception("chat %d: could not tell the chat about dropped updates", key)

    def drop_queued(self) -> int:
        """Drop every update that waits behind its chat's running one; return how many.

        For the shutdown: updates already running finish, nothing new starts after them.
        """
        count = 0
        for backlog in self._busy.values():
            while backlog.queue:
                _close(backlog.queue.popleft())
                count += 1
        self.dropped += count
        return count

    def waiting(self) -> int:
        """The number of updates waiting behind their chat's running one."""
        return sum(len(backlog.queue) for backlog in self._busy.values())

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        dropped = self.drop_queued()
        if dropped:
            log.warning("update processor shut down with %d update(s) not started", dropped)


@dataclass(slots=True)
class _Backlog:
    """The updates of one busy chat waiting for the one running."""

    queue: deque[Awaitable[Any]] = field(default_factory=deque)
    dropped: int = 0
    told: bool = False  # the chat was told about this flood


async def _run(key: int, coroutine: Awaitable[Any]) -> None:
    # The backlog's other updates must still run if one of them fails.
    try:
        await coroutine
    except Exception:
        log.exception("chat %d: an update failed", key)


def _close(coroutine: Awaitable[Any]) -> None:
    # A coroutine never awaited must be closed, else Python warns it was never awaited.
    if isinstance(coroutine, Coroutine):
        coroutine.close()


def _chat_key(update: object) -> int | None:
    if not isinstance(update, Update):
        return None
    if update.effective_chat is not None:
        return update.effective_chat.id
    if update.effective_user is not None:
        return update.effective_user.id  # inline queries: one queue per user
    return None
