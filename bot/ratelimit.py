"""Telegram's send limits as sliding windows, and PTB's BaseRateLimiter built on them.

A leaky or token bucket lets a full bucket burst and then refills, so a window of the server's
size can see more than the limit; here every send is stamped when it actually leaves, and a send
is allowed only when the stamps in the trailing window are fewer than the limit. Every request
the bot makes goes through one RateLimits, so handler replies and the publisher share the budget.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from bot.clock import Clock

log = logging.getLogger(__name__)

# Requests that put a message into a chat: these are what Telegram counts.
_EDIT_ENDPOINTS = frozenset(
    {"editMessageText", "editMessageCaption", "editMessageMedia", "editMessageLiveLocation"}
)
_OTHER_COUNTED = frozenset(
    {"copyMessage", "copyMessages", "forwardMessage", "forwardMessages", "sendMediaGroup"}
)


def counts_as_send(endpoint: str) -> bool:
    """True for the Bot API methods that Telegram's message limits apply to."""
    return (
        (endpoint.startswith("send") and endpoint != "sendChatAction")
        or endpoint in _EDIT_ENDPOINTS
        or endpoint in _OTHER_COUNTED
    )


def is_private_chat(chat: int | str | None) -> bool:
    """Private chats have positive ids; groups and channels negative ids or @usernames."""
    if isinstance(chat, int):
        return chat > 0
    if isinstance(chat, str):
        text = chat.strip()
        return text.lstrip("-").isdigit() and not text.startswith("-")
    return False


class SlidingWindow:
    """At most `limit` events in any window of `period` seconds."""

    __slots__ = ("limit", "period", "stamps")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.stamps: deque[float] = deque()

    def _prune(self, now: float) -> None:
        horizon = now - self.period
        while self.stamps and self.stamps[0] <= horizon:
            self.stamps.popleft()

    def available_at(self, now: float) -> float:
        """Return the earliest time (>= now) at which one more event fits."""
        self._prune(now)
        if len(self.stamps) < self.limit:
            return now
        return self.stamps[len(self.stamps) - self.limit] + self.period

    def record(self, now: float) -> None:
        self.stamps.append(now)

    def idle(self, now: float) -> bool:
        self._prune(now)
        return not self.stamps


@dataclass(frozen=True, slots=True)
class Limits:
    global_per_second: int = 30
    group_per_minute: int = 20
    private_per_second: float = 1.0
    # Extra length given to each window: absorbs network jitter and event-loop stalls between
    # the stamp and the moment the server sees the request.
    margin: float = 0.03


class RateLimits:
    """The shared budget: one global window plus one or two windows per chat."""

    def __init__(self, clock: Clock, limits: Limits = Limits()) -> None:
        self.clock = clock
        self.limits = limits
        self._global = SlidingWindow(limits.global_per_second, 1.0 + limits.margin)
        self._chats: dict[str, tuple[SlidingWindow, ...]] = {}
        self._blocked_until: dict[str, float] = {}
        self._all_blocked_until = 0.0
        self._records_since_sweep = 0

    def _windows(self, chat: int | str) -> tuple[SlidingWindow, ...]:
        key = str(chat)
        windows = self._chats.get(key)
        if windows is None:
            lim = self.limits
            if is_private_chat(chat):
                count, period = _rate_to_window(lim.private_per_second)
                windows = (SlidingWindow(count, period + lim.margin),)
            else:
                # Groups and channels: 20 a minute, and never two in the same second.
                windows = (
                    SlidingWindow(lim.group_per_minute, 60.0 + lim.margin),
                    SlidingWindow(max(1, math.ceil(lim.group_per_minute / 20)), 1.0 + lim.margin),
                )
            self._chats[key] = windows
        return windows

    def chat_ready_at(self, chat: int | str, now: float | None = None) -> float:
        """Return when the chat's own windows and any retry_after allow the next send."""
        now = self.clock.monotonic() if now is None else now
        ready = max(now, self._blocked_until.get(str(chat), 0.0))
        for window in self._windows(chat):
            ready = max(ready, window.available_at(now))
        return ready

    def global_ready_at(self, now: float | None = None) -> float:
        now = self.clock.monotonic() if now is None else now
        return max(now, self._all_blocked_until, self._global.available_at(now))

    def ready_at(self, chat: int | str | None, now: float | None = None) -> float:
        """Return when a send to `chat` fits every window (>= now; == now means at once)."""
        now = self.clock.monotonic() if now is None else now
        ready = self.global_ready_at(now)
        if chat is not None:
            ready = max(ready, self.chat_ready_at(chat, now))
        return ready

    def try_acquire(self, chat: int | str | None) -> bool:
        """Stamp a send now if every window allows it; return whether it did."""
        now = self.clock.monotonic()
        if self.ready_at(chat, now) > now:
            return False
        self._record(chat, now)
        return True

    async def acquire(self, chat: int | str | None) -> None:
        """Wait until a send to `chat` fits every window, then stamp it."""
        while True:
            now = self.clock.monotonic()
            ready = self.ready_at(chat, now)
            if ready <= now:
                self._record(chat, now)
                return
            await self.clock.sleep(ready - now)

    def _record(self, chat: int | str | None, now: float) -> None:
        self._global.record(now)
        if chat is not None:
            for window in self._windows(chat):
                window.record(now)
        self._records_since_sweep += 1
        if self._records_since_sweep >= 5000:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Forget idle chats so the table stays bounded by recent activity."""
        self._records_since_sweep = 0
        idle = [k for k, ws in self._chats.items() if all(w.idle(now) for w in ws)]
        for key in idle:
            del self._chats[key]
        expired = [k for k, until in self._blocked_until.items() if until <= now]
        for key in expired:
            del self._blocked_until[key]

    def block_chat(self, chat: int | str, seconds: float) -> None:
        """Hold sends to one chat for `seconds` (Telegram's retry_after)."""
        until = self.clock.monotonic() + seconds
        key = str(chat)
        self._blocked_until[key] = max(self._blocked_until.get(key, 0.0), until)

    def block_all(self, seconds: float) -> None:
        """Hold every send for `seconds` (a flood wait on the whole bot)."""
        self._all_blocked_until = max(self._all_blocked_until, self.clock.monotonic() + seconds)


def _rate_to_window(per_second: float) -> tuple[int, float]:
    if per_second >= 1:
        return int(per_second), 1.0
    return 1, 1.0 / per_second


class TelegramRateLimiter(BaseRateLimiter[dict[str, Any]]):
    """PTB's rate-limiter hook: every message-sending request waits for RateLimits first.

    A 429 that still comes blocks that chat for retry_after; requests made with
    rate_limit_args={"retry": False} (the publisher's) get the RetryAfter back to handle,
    others are retried once after waiting.
    """

    def __init__(self, limits: RateLimits, max_retries: int = 1) -> None:
        self.limits = limits
        self.max_retries = max_retries

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: dict[str, Any] | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if not counts_as_send(endpoint):
            return await callback(*args, **kwargs)
        chat = data.get("chat_id")
        retries = (
            0 if rate_limit_args and rate_limit_args.get("retry") is False else self.max_retries
        )
        while True:
            await self.limits.acquire(chat)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", PTBDeprecationWarning)
                    wait = _seconds(exc.retry_after)
                if chat is not None:
                    self.limits.block_chat(chat, wait)
                else:
                    self.limits.block_all(wait)
                if retries <= 0:
                    raise
                retries -= 1
                log.warning("429 on %s for chat %s: waiting %.1f s", endpoint, chat, wait)


def _seconds(value: Any) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)
