"""The CPU workers: results and errors come back to the coroutine, the loop stays free, and a
job still running never holds the process at exit."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.workers import CpuWorkers, WorkersStopped


async def test_results_and_errors_come_back_and_the_loop_stays_free() -> None:
    workers = CpuWorkers(threads=2)
    release = threading.Event()
    blocked = asyncio.ensure_future(workers.run(release.wait, 5))
    # The loop keeps answering while a worker is busy.
    assert await workers.run(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await workers.run(divmod, 1, 0)
    release.set()
    assert await blocked is True
    workers.shutdown()
    with pytest.raises(WorkersStopped):
        await workers.run(sum, [1])
