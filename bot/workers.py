"""Worker threads for CPU work of size: parsing feeds, extracting pages, building summaries and
search documents, so the event loop never does it.

Why not asyncio.to_thread: `asyncio.run` joins the default executor's threads on the way out,
so a SIGTERM that arrived during a long parse waited for it (7.8 s with SHUTDOWN_TIMEOUT=2).
These threads are daemons and nothing joins them: the bot stops within its shutdown timeout
whatever is parsing, and a parse cut short that way loses nothing (the poll is not recorded,
so the next start polls again). The queue of jobs waiting for a thread is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class RunCpu(Protocol):
    """What the parts that do CPU work are given: CpuWorkers.run (asyncio.to_thread in tests)."""

    def __call__(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]: ...


_STOP = object()


class WorkersStopped(RuntimeError):
    """Work was submitted after shutdown()."""


class CpuWorkers:
    """A few daemon threads that run blocking functions for coroutines: `await workers.run(f)`."""

    def __init__(self, threads: int = 2, *, max_queued: int = 64, name: str = "cpu") -> None:
        self._threads_wanted = threads
        self._name = name
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._slots = asyncio.BoundedSemaphore(max_queued + threads)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `func(*args, **kwargs)` in a worker thread and return (or raise) its result."""
        if self._stopped:
            raise WorkersStopped("the workers were shut down")
        async with self._slots:
            self._start_threads()
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()
            self._jobs.put((functools.partial(func, *args, **kwargs), future, loop))
            return await future

    def shutdown(self) -> None:
        """Take no more work and let idle threads end; a running job is abandoned, not joined."""
        self._stopped = True
        for _ in self._threads:
            self._jobs.put(_STOP)

    def _start_threads(self) -> None:
        with self._lock:
            while len(self._threads) < self._threads_wanted:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            call, future, loop = job
            if future.cancelled():
                continue
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting coroutine, not lost
                _settle(loop, future, exc, failed=True)
            else:
                _settle(loop, future, result, failed=False)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any, *,
            failed: bool) -> None:  # fmt: skip
    def settle() -> None:
        if future.done():
            return  # the awaiting coroutine was cancelled meanwhile
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
        loop.call_soon_threadsafe(settle)
