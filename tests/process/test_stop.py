"""Stopping within SHUTDOWN_TIMEOUT whatever the bot is doing: a long parse, a flood of
commands, a CPU job still running at exit. Real processes, real time, upper bounds only."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.e2e.test_updates import FLOOD, FLOODER
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import TOKEN, BotProcess, bot_env
from tests.unit.test_hostile_feeds import item, rss


async def test_sigterm_during_a_long_parse_stops_within_the_shutdown_timeout(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """A parse that is still running must not hold the stop (the default executor used to be
    joined at exit: 7.8 s with SHUTDOWN_TIMEOUT=2). Process tier: real time, an upper bound."""

    # Costly to parse, though shaped like a real feed: 20,000 entries (about 1.2 MB).
    big = rss("".join(item(n) for n in range(20_000)))
    feed_server.set("/en/rss", big)
    async with FakeBotApi(TOKEN) as api:
        env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, tmp_path / "bot.sqlite3",
                      SHUTDOWN_TIMEOUT="1", LOG_LEVEL="INFO", FEED_MAX_BYTES="5242880")  # fmt: skip
        bot = BotProcess(env, tmp_path / "bot.log")
        bot.start()
        try:
            deadline = time.monotonic() + 20
            while not feed_server.requests_to("/en/rss"):
                assert time.monotonic() < deadline, bot.log()
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the body is read; the parse is under way
            started = time.monotonic()
            bot.signal(signal.SIGTERM)
            assert await bot.exit_code(timeout=15) == 0
            assert time.monotonic() - started < 4.0, bot.log()
        finally:
            bot.kill_if_running()


async def test_sigterm_during_a_flood_stops_within_the_shutdown_timeout(
    api: FakeBotApi, feed_server: FeedServer, tmp_path: Path
) -> None:
    """Process tier (real time, an upper bound): 90 commands from one chat fetched, then
    SIGTERM. Before, the stop waited for every reply (over 30 s); updates fetched but not
    handled in time are dropped, counted and logged (Telegram counts them as delivered)."""
    feed_server.set("/en/rss", make_rss([]))
    api.add_chat(FLOODER, "private")
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, tmp_path / "bot.sqlite3",
                  SHUTDOWN_TIMEOUT="2", LOG_LEVEL="INFO",
                  RATE_PRIVATE_PER_SECOND="1")  # fmt: skip # one reply a second: a slow backlog
    bot = BotProcess(env, tmp_path / "bot.log")
    bot.start()
    try:
        await api.wait_for(lambda a: len(a.calls_to("getUpdates")) >= 1, timeout=20)
        flooder = api.user(FLOODER, "Flo")
        for _ in range(FLOOD):
            api.push_update(api.make_message_update(FLOODER, flooder, "/latest"))
        await api.wait_sent(2, FLOODER, timeout=20)  # the backlog is being worked
        started = time.monotonic()
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(timeout=30) == 0, bot.log()
        assert time.monotonic() - started < 2 + 3, bot.log()  # SHUTDOWN_TIMEOUT, and room
        log = (tmp_path / "bot.log").read_text()
        assert "were dropped" in log or "skipped" in log, bot.log()
        assert len(api.sent(FLOODER)) < FLOOD
        await asyncio.sleep(0)
    finally:
        bot.kill_if_running()


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
