"""Helpers shared by the end-to-end tests: the environment for a test bot, and running it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.app import Runtime, run_bot
from bot.clock import Clock
from bot.config import load_settings
from tests.fakes.clock import ManualClock

TOKEN = "123456:TEST-TOKEN-0123456789abcdefghij"
ROOT = Path(__file__).resolve().parents[1]


def bot_env(
    api_url: str, feeds: Mapping[str, str], db_path: Path, **overrides: str
) -> dict[str, str]:
    """Environment for a bot talking to the fake Bot API, polling `feeds` (lang -> URL) fast."""
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": api_url,
        "FEEDS": ",".join(f"{lang}={url}" for lang, url in feeds.items()),
        "DATABASE_URL": f"sqlite:///{db_path}",
        "POLL_INTERVAL": "0.2",
        "POLL_JITTER": "0",
        "HTTP_TIMEOUT": "2",
        "LOG_LEVEL": "DEBUG",
        "MAX_AGE": "3650d",
        "SHUTDOWN_TIMEOUT": "2",
        # Telegram's limits, scaled by 20 so tests pace sends but stay fast.
        "RATE_GLOBAL_PER_SECOND": "600",
        "RATE_GROUP_PER_MINUTE": "400",
        "RATE_PRIVATE_PER_SECOND": "20",
    }
    env.update(overrides)
    return env


async def advance_until(
    clock: ManualClock,
    what: str,
    predicate: Callable[[], bool],
    *,
    within: float,
    step: float = 0.05,
    pause: float = 0.002,
) -> float:
    """Move virtual time on in `step`s until `predicate()`; return the virtual seconds taken.

    Between steps the loop gets `pause` real seconds for the HTTP round trips and store writes
    that the step started (virtual time stands still meanwhile), so no test sleeps for timing.
    `within` bounds the virtual seconds; what a test asserts about time, it asserts in these.
    """
    start = clock.monotonic()
    while not predicate():
        if clock.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within} virtual seconds")
        await clock.advance(step)
        await asyncio.sleep(pause)
    return clock.monotonic() - start


async def wait_for(
    what: str,
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = 10.0,
    interval: float = 0.01,
) -> None:
    """Yield to the loop until `predicate()` (a bool, or an awaitable of one) holds; fail
    naming `what` if it still does not after `within` real seconds.

    For conditions that wait on real I/O, not on virtual time: HTTP round trips, the store's
    thread, a lock held by another connection. `within` is a bound on a condition that should
    hold long before it, so that a broken bot fails the test instead of hanging it; it is never
    a timing assertion (say how long something took in virtual time, with advance_until).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = predicate()
        held = await outcome if inspect.isawaitable(outcome) else outcome
        if held:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_bot(
    env: Mapping[str, str], *, clock: Clock | None = None, seed: int = 1
) -> AsyncIterator[Runtime]:
    """Run the real bot in this event loop until the block ends, then stop it gracefully."""
    settings = load_settings(env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Runtime] = loop.create_future()
    task = asyncio.create_task(
        run_bot(settings, stop, clock=clock, rng=random.Random(seed), on_started=started.set_result)
    )
    done, _ = await asyncio.wait({task, started}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what made the bot fail to start
        raise AssertionError("the bot stopped before it started")
    if started not in done:
        stop.set()
        task.cancel()
        raise AssertionError("the bot did not start within 15 s")
    try:
        yield started.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


class BotProcess:
    """`python -m bot` as the container runs it: its own process, its output in a log file,
    stopped by signals. Shared by the process tests and the benchmarks."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                # BENCH_PYTHON_ARGS="-m cProfile -o bot.prof" profiles the bot.
                [sys.executable, *os.environ.get("BENCH_PYTHON_ARGS", "").split(), "-m", "bot"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        """The exit status, once the process has exited; TimeoutError after `timeout` s."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bot {self.proc.pid} still running after {timeout} s")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    async def exit_code(self, timeout: float) -> int:
        """As wait(), failing the test with the log's tail when the bot does not exit."""
        try:
            return await self.wait(timeout)
        except TimeoutError as exc:
            raise AssertionError(f"the bot did not exit within {timeout} s\n{self.log()}") from exc

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.proc.kill()
            return await self.wait(5)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    log_tail = log


def max_in_window(times: Sequence[float], period: float) -> int:
    """The most events in any window of `period` seconds (a stamp a period old has left)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - period + 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---------------------------------------------------------------------- operator commands


@dataclass(frozen=True)
class CliRun:
    """A finished `python -m bot …`: its exit status and what it printed."""

    code: int
    out: str
    err: str


def cli_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: nothing of the test runner's TELEGRAM_* or FEEDS leaks in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return env | {"PYTHONPATH": str(ROOT)} | dict(extra)


async def run_cli(*args: str, env: Mapping[str, str], timeout: float = 60) -> CliRun:
    """Run `python -m bot ARGS` to completion (the event loop keeps serving the fakes)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=ROOT, env=cli_env(env),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return CliRun(proc.returncode, out.decode(), err.decode())
