"""How incoming updates are received and scheduled.

- TolerantBot: an update that PTB cannot parse (a field its version does not know, or lacks)
  is logged and replaced by an empty update with the same id, so getUpdates moves past it
  instead of fetching the same batch forever and starving every other chat.
- PerChatUpdateProcessor: updates of one chat are handled one at a time and in order, so
  replies never overtake each other; different chats are handled concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor, ExtBot

log = logging.getLogger(__name__)


class TolerantBot(ExtBot[Any]):
    """ExtBot whose getUpdates survives updates it cannot parse."""

    async def _post(self, endpoint: str, data: Any = None, **kwargs: Any) -> Any:
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
    """Run updates concurrently across chats but strictly in order within one chat."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = _chat_key(update)
        if key is None:
            await coroutine
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:  # asyncio.Lock wakes waiters first come, first served
                await coroutine
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                # Bounded by the chats with updates under way, not by every chat ever seen.
                del self._waiting[key], self._locks[key]

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def _chat_key(update: object) -> int | None:
    if not isinstance(update, Update):
        return None
    if update.effective_chat is not None:
        return update.effective_chat.id
    if update.effective_user is not None:
        return update.effective_user.id  # inline queries: one queue per user
    return None
