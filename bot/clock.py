"""Time as a dependency: the real clock, so that tests can substitute a virtual one."""

from __future__ import annotations

import asyncio
import time
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
