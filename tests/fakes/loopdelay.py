"""How late a test server's event loop runs: the error bar on the arrival stamps it takes.

A server stamps a request when its loop gets to it. Whatever holds the loop (a long callback, a
garbage collection, the process waiting for a CPU) makes every request read meanwhile look as if
it arrived later, and several of them at once: a server that judges rate windows on its stamps
would blame the client for its own stall. LoopMonitor measures that delay, so a benchmark can
report it beside the windows' verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any


class LoopMonitor:
    """A ticker that asks to wake every `interval` seconds and records how late it woke."""

    def __init__(self, interval: float = 0.01, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        #: (when the ticker woke, seconds late), in order.
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tick(self) -> None:
        while True:
            due = self._clock() + self.interval
            await asyncio.sleep(self.interval)
            woke = self._clock()
            self.samples.append((woke, max(0.0, woke - due)))

    def summary(self, since: float = -math.inf, until: float = math.inf) -> dict[str, Any]:
        """Lateness between `since` and `until` (monotonic seconds): samples, p50, p99, max."""
        late = sorted(lag for at, lag in self.samples if since <= at <= until)
        return {
            "interval_ms": self.interval * 1000,
            "samples": len(late),
            "p50_ms": _percentile(late, 0.50) * 1000,
            "p99_ms": _percentile(late, 0.99) * 1000,
            "max_ms": (late[-1] if late else 0.0) * 1000,
        }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
