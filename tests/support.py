"""Helpers shared by the end-to-end tests: the environment for a test bot, and running it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from bot.app import Runtime, run_bot
from bot.clock import Clock
from bot.config import load_settings
from tests.fakes.clock import ManualClock

TOKEN = "123456:TEST-TOKEN-0123456789abcdefghij"


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
) -> float:
    """Move virtual time on in `step`s until `predicate()`; return the virtual seconds taken.

    Between steps the loop gets a little real time for the HTTP round trips and store writes
    that the step started (virtual time stands still meanwhile), so no test sleeps for timing.
    """
    start = clock.monotonic()
    while not predicate():
        if clock.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within} virtual seconds")
        await clock.advance(step)
        await asyncio.sleep(0.002)
    return clock.monotonic() - start


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
