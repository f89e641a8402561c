"""The disk-full attack, replayed against the real `python -m bot`: a send that Telegram
accepted is never sent again while the store refuses to record it. Real time, upper bounds."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

from tests.e2e.test_store_outage import delivery_states
from tests.fakes.botapi import ApiCall, FakeBotApi
from tests.fakes.feedserver import FeedServer, numbered_feed
from tests.support import TOKEN, BotProcess, bot_env


async def test_disk_full_after_a_send_repeats_nothing_end_to_end(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """The attack, replayed: the real `python -m bot` whose file-size limit is cut to 1 KB
    (every SQLite write then fails with 'database or disk is full') while its send is in
    flight. Before: one piece reached the channel 19 times in 25 s."""
    channel = -1_001_700_000_001
    db_path = tmp_path / "bot.sqlite3"
    feed_server.set("/en/rss", numbered_feed(1))
    async with FakeBotApi(TOKEN) as api:
        api.add_chat(channel, "channel", title="Channel")
        env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path,
                      CHANNELS=f"en={channel}", POLL_INTERVAL="0.5", LOG_LEVEL="INFO")  # fmt: skip
        bot = BotProcess(env, tmp_path / "bot.log")
        limited: list[bool] = []

        async def disk_full(call: ApiCall) -> None:
            if call.method == "sendMessage" and bot.proc is not None and not limited:
                # The soft limit only: lifting it again needs no privilege.
                resource.prlimit(
                    bot.proc.pid, resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY)
                )
                limited.append(True)

        api.before_success = disk_full
        bot.start()
        try:
            await api.wait_for(lambda a: len(a.calls_to("getUpdates")) >= 1, timeout=20)
            await asyncio.sleep(1.5)  # the first poll: the backlog is seen, not sent
            feed_server.set("/en/rss", numbered_feed(1, 2))
            try:
                await api.wait_sent(1, channel, timeout=20)
            except AssertionError as exc:
                raise AssertionError(bot.log()) from exc
            await asyncio.sleep(10)  # the outage: the old code sent again on every pass
            assert len(api.sent(channel)) == 1, bot.log()
            assert bot.proc is not None and bot.proc.poll() is None
            resource.prlimit(
                bot.proc.pid, resource.RLIMIT_FSIZE,
                (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
            )  # fmt: skip

            def recorded() -> bool:
                return any(state == "sent" for _, state, _ in delivery_states(db_path))

            deadline = time.monotonic() + 60
            while not recorded():
                assert time.monotonic() < deadline, bot.log()
                await asyncio.sleep(0.2)
            assert len(api.sent(channel)) == 1
        finally:
            bot.kill_if_running()
    # And a restart on the recovered store sends nothing again.
    async with FakeBotApi(TOKEN) as api:
        api.add_chat(channel, "channel", title="Channel")
        bot = BotProcess(bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path,
                                 CHANNELS=f"en={channel}"), tmp_path / "bot2.log")  # fmt: skip
        bot.start()
        try:
            await api.wait_for(lambda a: len(a.calls_to("getUpdates")) >= 1, timeout=20)
            await asyncio.sleep(2.0)  # polls every 0.2 s; the publisher looks at once
            assert api.sent(channel) == [], bot.log()
        finally:
            bot.kill_if_running()
