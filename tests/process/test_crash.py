"""Crash safety for real: `python -m bot` in a subprocess fans a piece out to hundreds of chats
through the fake Bot API, and is killed (SIGKILL) or stopped (SIGTERM) in the middle of it.

After a kill and a restart every chat has the piece, and only sends that were in flight at the
kill (at most SEND_CONCURRENCY) arrived twice. After SIGTERM the bot exits 0 with every answered
send recorded, and the restarted bot sends each chat's piece exactly once overall. (Whether
the sends kept to Telegram's windows is tested on virtual time in test_publisher; here the fake
server shares the machine with the test and the bot, and a 429 would only delay a send.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest
from telegram import Bot

from storage.models import ChatType
from storage.outbox import enqueue_edits, enqueue_notice
from storage.store import Store
from tests import factories
from tests.factories import new_item
from tests.fakes.botapi import MESSAGE_METHODS, FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss, numbered_feed
from tests.support import TOKEN, BotProcess, bot_env

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_767_225_600.0
CHANNELS = [-1_001_500_000_000 - i for i in range(1, 11)]
GROUPS = [-1_002_500_000_000 - i for i in range(1, 41)]
PRIVATE = [50_000_000 + i for i in range(1, 801)]
ALL_CHATS = CHANNELS + GROUPS + PRIVATE
IN_FLIGHT = 16
# Telegram's limits x10, on the bot and on the fake server alike.
SCALED = {
    "RATE_GLOBAL_PER_SECOND": "300",
    "RATE_GROUP_PER_MINUTE": "200",
    "RATE_PRIVATE_PER_SECOND": "10",
}


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(
        TOKEN, global_per_second=300, group_per_minute=200, private_per_second=10
    ) as server:
        for chat_id in CHANNELS:
            server.add_chat(chat_id, "channel", title=f"Channel {chat_id}")
        yield server


async def _subscribe_all(db_path: Path) -> None:
    store = await Store.open(db_path)
    kinds = [(CHANNELS, ChatType.CHANNEL), (GROUPS, ChatType.SUPERGROUP)]
    kinds.append((PRIVATE, ChatType.PRIVATE))
    for ids, kind in kinds:
        for chat_id in ids:
            await store.upsert_chat(
                chat_id, kind, title=None, username=None, default_lang="en", now=NOW,
                subscribed=True,
            )  # fmt: skip
    await store.close()


def _received(api: FakeBotApi) -> Counter[int]:
    """Messages each chat received."""
    return Counter(c.chat_id for c in api.calls if c.ok and c.method in MESSAGE_METHODS)


async def _until(what: str, predicate: Callable[[], bool], bot: BotProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{bot.log()}")
        if bot.proc is not None and bot.proc.poll() is not None:
            raise AssertionError(f"{what}: the bot exited with {bot.proc.returncode}\n{bot.log()}")
        await asyncio.sleep(0.02)


def _sent_rows(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'").fetchone()[0]
        )


async def _fan_out_under_way(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> BotProcess:
    """Start the bot, let it mark the backlog, publish a piece, return once ~250 sends are out."""
    await _subscribe_all(db_path)
    feed_server.set("/en/rss", numbered_feed(1))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env |= bot_env(
        api.url, {"en": feed_server.url("/en/rss")}, db_path,
        LOG_LEVEL="INFO", SEND_CONCURRENCY=str(IN_FLIGHT), SHUTDOWN_TIMEOUT="10", **SCALED,
    )  # fmt: skip
    env["PYTHONPATH"] = str(ROOT)
    bot = BotProcess(env, tmp_path / "bot.log")
    bot.start()
    await _until("first polls", lambda: len(feed_server.requests_to("/en/rss")) >= 2, bot, 30)
    feed_server.set("/en/rss", numbered_feed(1, 2))
    await _until("fan-out under way", lambda: sum(_received(api).values()) >= 250, bot, 30)
    return bot


async def test_sigkill_mid_fan_out_then_restart_loses_nothing_and_repeats_little(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    bot = await _fan_out_under_way(api, feed_server, db_path, tmp_path)
    try:
        bot.signal(signal.SIGKILL)
        assert await bot.exit_code(10) == -signal.SIGKILL
        at_kill = sum(_received(api).values())
        assert at_kill < len(ALL_CHATS)  # killed in the middle of the fan-out

        bot.start()
        await _until(
            "every chat served after the restart",
            lambda: set(_received(api)) >= set(ALL_CHATS),
            bot,
            60,
        )
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(20) == 0, bot.log()
    finally:
        bot.kill_if_running()

    received = _received(api)
    assert set(received) == set(ALL_CHATS)
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= IN_FLIGHT, f"{duplicates} chats got the piece twice\n{bot.log()}"
    assert _sent_rows(db_path) == len(ALL_CHATS), bot.log()


async def test_sigterm_mid_fan_out_exits_0_and_nothing_is_lost_or_repeated(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    bot = await _fan_out_under_way(api, feed_server, db_path, tmp_path)
    try:
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(20) == 0, bot.log()
        at_stop = sum(_received(api).values())
        assert at_stop < len(ALL_CHATS)
        # Every send Telegram answered was recorded before the bot exited.
        assert _sent_rows(db_path) == at_stop, bot.log()
        assert "publisher stopped" in bot.log_path.read_text()

        bot.start()
        await _until(
            "the rest sent after the restart",
            lambda: set(_received(api)) >= set(ALL_CHATS),
            bot,
            60,
        )
        bot.signal(signal.SIGINT)
        assert await bot.exit_code(20) == 0, bot.log()
    finally:
        bot.kill_if_running()

    received = _received(api)
    assert set(received) == set(ALL_CHATS)
    twice = sorted(chat for chat, n in received.items() if n > 1)
    assert not twice, f"sent twice to {twice}\n{bot.log()}"
    assert _sent_rows(db_path) == len(ALL_CHATS), bot.log()


# ------------------------------------------------------------------ edits and notices

EDITED_CHANNELS = CHANNELS[:6]
ADMIN = 90_000_001


async def _queue_edits_and_a_notice(
    api: FakeBotApi, db_path: Path, feed_url: str
) -> dict[int, int]:
    """A piece posted to six channels (real messages in the fake), then an edit of each and a
    notice to an admin queued in the outbox: what the bot finds at its start. Returns the
    message id of the post in each channel."""
    store = await Store.open(db_path)
    feed = await store.ensure_feed(feed_url, "en")
    for chat_id in EDITED_CHANNELS:
        await store.upsert_chat(chat_id, ChatType.CHANNEL, title=None, username=None,
                                default_lang="en", now=NOW, subscribed=True)  # fmt: skip
    poll = partial(store.store_poll, feed.id, etag=None, last_modified=None, now=NOW,
                   next_poll_at=NOW, max_age=1e9, backfill=0)  # fmt: skip
    await poll([])  # the first poll: nothing is backlog
    await poll([new_item(1, title="Piece 1, as the site has it now")])
    (item,) = await store.find_items_by_link(new_item(1).link)
    sent: dict[int, int] = {}
    async with Bot(TOKEN, base_url=api.base_url) as bot:
        for chat_id in EDITED_CHANNELS:
            message = await bot.send_message(chat_id, "Piece 1, as it was first posted")
            delivery = await store.get_delivery(item.id, chat_id)
            assert delivery is not None
            await store.record_outcomes([factories.sent(delivery.id, message.message_id, NOW)])
            sent[chat_id] = message.message_id
    assert await enqueue_edits(store, item.id, NOW - 60, NOW) == len(EDITED_CHANNELS)
    await enqueue_notice(store, ADMIN, "en", "⚠️ <b>Notice</b> for the admin", NOW)
    await store.close()
    return sent


def _edited(api: FakeBotApi) -> Counter[int]:
    return Counter(c.chat_id for c in api.calls if c.ok and c.method == "editMessageText")


def _noticed(api: FakeBotApi) -> int:
    return sum(1 for c in api.calls if c.ok and c.chat_id == ADMIN and c.method == "sendMessage")


async def test_queued_edits_and_notices_survive_a_kill_and_are_sent_after_the_restart(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    api.add_chat(ADMIN, "private")
    feed_server.set("/en/rss", make_rss([]))
    sent = await _queue_edits_and_a_notice(api, db_path, feed_server.url("/en/rss"))
    # Telegram refuses every send and edit (429, retry after 1 s) while the first process runs.
    api.retry_after(None, 1, times=100_000)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env |= bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path, LOG_LEVEL="INFO",
                   **SCALED)  # fmt: skip
    env["PYTHONPATH"] = str(ROOT)
    bot = BotProcess(env, tmp_path / "bot.log")
    try:
        bot.start()
        await _until(
            "every edit and the notice tried",
            lambda: {c.chat_id for c in api.calls if c.status == 429} >= {*EDITED_CHANNELS, ADMIN},
            bot, 30,
        )  # fmt: skip
        bot.signal(signal.SIGKILL)
        assert await bot.exit_code(10) == -signal.SIGKILL
        assert not _edited(api) and _noticed(api) == 0

        api.clear_faults()
        bot.start()
        await _until(
            "edits and the notice sent after the restart",
            lambda: set(_edited(api)) == set(EDITED_CHANNELS) and _noticed(api) == 1,
            bot, 60,
        )  # fmt: skip
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(20) == 0, bot.log()
    finally:
        bot.kill_if_running()
    # Each message was edited once, in place, to the piece as stored; the notice came once.
    assert _edited(api) == Counter(EDITED_CHANNELS)
    for chat_id, message_id in sent.items():
        text = api.messages[(chat_id, message_id)]["text"]
        assert text.startswith("Piece 1, as the site has it now\n")
    assert _noticed(api) == 1
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT kind, state, COUNT(*) FROM deliveries WHERE kind != 'post' "
            "GROUP BY kind, state ORDER BY kind"
        ).fetchall()
    assert rows == [("edit", "sent", len(EDITED_CHANNELS)), ("notice", "sent", 1)]
