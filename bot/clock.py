"""Time as a dependency: the real clock, so that tests can substitute a virtual one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol


class Clock(Protocol):
    """What the poller, publisher and rate limiter need of time."""

    def now(self) -> float:
        """Return the wall-clock time in seconds since the epoch (stored in the database)."""

    def monotonic(self) -> float:
        """Return a monotonic time in seconds (used for rate windows and deadlines)."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (or return at once when it is not positive)."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


async def unless_stopped(work: Awaitable[object], stop: asyncio.Event) -> bool:
    """Await `work` unless `stop` is set first, which cancels it; True when `work` finished.

    The one stop-aware wait: a sleep on the clock, a wait for an event or a call to Telegram.
    """
    task = asyncio.ensure_future(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        return False
    task.result()  # raises what `work` raised
    return True
