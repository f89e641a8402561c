"""The CPU workers: results and errors come back to the coroutine, the loop stays free, and a
job still running never holds the process at exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

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


def test_a_job_still_running_does_not_hold_the_process_at_exit() -> None:
    """asyncio.to_thread's executor is joined by asyncio.run; these threads are not."""
    script = textwrap.dedent(
        """
        import asyncio, time
        from bot.workers import CpuWorkers

        async def main():
            workers = CpuWorkers(threads=1)
            job = asyncio.ensure_future(workers.run(time.sleep, 30))
            await asyncio.sleep(0.2)
            job.cancel()
            workers.shutdown()

        asyncio.run(main())
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], timeout=25, check=False)
    assert done.returncode == 0
    assert time.monotonic() - started < 10  # an upper bound: the 30 s job is not waited for
