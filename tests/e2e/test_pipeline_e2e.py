"""End to end: the real bot, a local feed server, and the fake Bot API over HTTP on 127.0.0.1."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.models import DeliveryState
from storage.store import Store
from tests.fakes.botapi import FakeBotApi
from tests.fakes.clock import ManualClock
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import TOKEN, advance_until, bot_env, running_bot, wait_for

CHANNEL = -1001000000001
BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def piece(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "title": f"Piece {n}",
        "link": f"https://caliber.az/en/post/piece-{n}",
        "guid": f"caliber-{n}",
        "description": f"<p>Summary of piece {n}.</p>",
        "pub_date": BASE + timedelta(hours=n),
        **extra,
    }


def feed(*numbers: int) -> str:
    """The feed as the site lists it: newest first."""
    return make_rss([piece(n) for n in sorted(numbers, reverse=True)])


async def polls(server: FeedServer, path: str, at_least: int, api: FakeBotApi) -> None:
    await api.wait_for(lambda _: len(server.requests_to(path)) >= at_least, timeout=10)


@pytest.fixture
def channel(api: FakeBotApi) -> int:
    api.add_chat(CHANNEL, "channel", title="Caliber EN", username="caliber_en")
    return CHANNEL


def env_for(api: FakeBotApi, server: FeedServer, db_path: Path, **extra: str) -> dict[str, str]:
    return bot_env(
        api.url, {"en": server.url("/en/rss")}, db_path, CHANNELS=f"en={CHANNEL}", **extra
    )


async def test_backlog_is_not_posted_new_items_once_oldest_first_and_restart_safe(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, channel: int
) -> None:
    feed_server.set("/en/rss", feed(1, 2, 3))
    env = env_for(api, feed_server, db_path)
    async with running_bot(env):
        await polls(feed_server, "/en/rss", 2, api)
        assert api.sent(channel) == []  # the backlog is marked as seen, not posted

        feed_server.set("/en/rss", feed(1, 2, 3, 4, 5))
        await api.wait_sent(2, channel)
        count = len(feed_server.requests_to("/en/rss"))
        await polls(feed_server, "/en/rss", count + 3, api)

    texts = api.sent_texts(channel)
    assert len(texts) == 2
    assert texts[0].startswith("Piece 4") and texts[1].startswith("Piece 5")
    first = api.sent(channel)[0]
    assert first.params["parse_mode"] == "HTML"
    assert '<a href="https://caliber.az/en/post/piece-4">Piece 4</a>' in first.params["text"]
    assert "Summary of piece 4." in texts[0] and "Read more" in texts[0]
    # The preview card shows the article, not whatever link comes first in the text.
    assert first.params["link_preview_options"]["url"] == "https://caliber.az/en/post/piece-4"

    # A restart (same database) posts nothing again, even when items move or get edited.
    feed_server.set("/en/rss", make_rss([piece(4, title="Piece 4, edited"), piece(5), piece(3)]))
    async with running_bot(env):
        await polls(feed_server, "/en/rss", len(feed_server.requests) + 3, api)
    assert len(api.sent(channel)) == 2


async def test_conditional_get_and_304(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, channel: int
) -> None:
    feed_server.set("/en/rss", feed(1), last_modified="Thu, 26 Nov 2026 10:00:00 GMT")
    async with running_bot(env_for(api, feed_server, db_path)):
        await polls(feed_server, "/en/rss", 3, api)
    first, second, third = feed_server.requests_to("/en/rss")[:3]
    assert "if-none-match" not in {k.lower() for k in first.headers}
    headers = {k.lower(): v for k, v in second.headers.items()}
    assert headers["if-none-match"].startswith('"')
    assert headers["if-modified-since"] == "Thu, 26 Nov 2026 10:00:00 GMT"
    assert second.status == 304 and third.status == 304
    assert "gzip" in headers.get("accept-encoding", "")
    assert "CaliberTelegramBot" in headers["user-agent"]


async def test_broken_feed_backs_off_then_recovers_and_other_feeds_go_on(
    feed_server: FeedServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On virtual time: the waits between polls of the failing feed double up to BACKOFF_MAX,
    then return to POLL_INTERVAL once it answers; the healthy feed goes on meanwhile."""
    clock = ManualClock()
    feed_server.clock = clock.monotonic
    feed_server.set("/en/rss", feed(1))
    feed_server.fail("/ru/rss", status=503, times=3)
    feed_server.set("/ru/rss", feed(1))
    async with FakeBotApi(TOKEN, clock=clock.monotonic) as api:
        api.add_chat(CHANNEL, "channel", title="Caliber EN")
        env = bot_env(
            api.url,
            {"en": feed_server.url("/en/rss"), "ru": feed_server.url("/ru/rss")},
            db_path,
            CHANNELS=f"en={CHANNEL}",
            POLL_INTERVAL="1",
            BACKOFF_MAX="3",
        )
        caplog.set_level(logging.DEBUG)
        async with running_bot(env, clock=clock):
            ru = lambda: feed_server.requests_to("/ru/rss")  # noqa: E731
            await advance_until(clock, "five polls of ru", lambda: len(ru()) >= 5, within=30)
            feed_server.set("/en/rss", feed(1, 2))
            await advance_until(clock, "the en piece", lambda: len(api.sent(CHANNEL)) >= 1,
                                within=5)  # fmt: skip
    requests = ru()
    assert [r.status for r in requests[:5]] == [503, 503, 503, 200, 304]
    gaps = [b.time - a.time for a, b in itertools.pairwise(requests[:5])]
    # 1 s × 2^streak, capped at BACKOFF_MAX (3 s); POLL_JITTER=0. Then the interval again. The
    # wait starts when a poll ends; a poll takes a few of the test's 50 ms virtual steps.
    for gap, wait in zip(gaps, [2.0, 3.0, 3.0, 1.0], strict=True):
        assert wait <= gap < wait + 0.4, gaps
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "/ru/rss failing" in r.getMessage()
    ]
    assert len(warnings) == 1  # logged on the change of state, not on every poll
    assert any("recovered" in r.getMessage() for r in caplog.records)
    store = await Store.open(db_path)
    feeds = {f.url: f for f in await store.list_feeds()}
    await store.close()
    ru_state = feeds[feed_server.url("/ru/rss")]
    assert ru_state.error_streak == 0 and ru_state.initialized


@pytest.mark.parametrize("breakage", ["garbage", "huge", "slow", "404"])
async def test_unusable_feed_answers_are_errors_not_crashes(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, channel: int, breakage: str
) -> None:
    if breakage == "garbage":
        feed_server.garbage("/en/rss")
    elif breakage == "huge":
        feed_server.huge("/en/rss", 3 * 1024 * 1024)
    elif breakage == "slow":
        feed_server.slow("/en/rss", 5)
        feed_server.set("/en/rss", feed(1))
    env = env_for(api, feed_server, db_path, FEED_MAX_BYTES="1048576", HTTP_TIMEOUT="0.3")
    async with running_bot(env):
        await polls(feed_server, "/en/rss", 2, api)
    store = await Store.open(db_path)
    (state,) = await store.list_feeds()
    await store.close()
    assert state.status == "error" and state.error_streak >= 1
    expected = {
        "garbage": "not a feed",
        "huge": "too large",
        "slow": "timed out",
        "404": "HTTP 404",
    }
    assert expected[breakage] in (state.last_error or "")


async def test_429_waits_retry_after_then_sends(feed_server: FeedServer, db_path: Path) -> None:
    """On virtual time: the send refused with retry_after=3 goes again 3 s later, not sooner."""
    clock = ManualClock()
    feed_server.set("/en/rss", feed(1))
    async with FakeBotApi(TOKEN, clock=clock.monotonic) as api:
        api.add_chat(CHANNEL, "channel", title="Caliber EN")
        async with running_bot(env_for(api, feed_server, db_path), clock=clock):
            await advance_until(clock, "first poll",
                                lambda: len(feed_server.requests_to("/en/rss")) >= 2,
                                within=10)  # fmt: skip
            api.retry_after(CHANNEL, 3)
            feed_server.set("/en/rss", feed(1, 2))
            await advance_until(clock, "the piece", lambda: len(api.sent(CHANNEL)) >= 1,
                                within=20)  # fmt: skip
        (sent,) = api.sent(CHANNEL)
        refused = [c for c in api.calls_to("sendMessage") if c.error_code == 429]
    assert len(refused) == 1
    assert 3.0 <= sent.at - refused[0].at < 3.5  # retry_after honoured, then sent at once
    assert api.rate_violations == 0


async def test_403_deactivates_the_chat(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, channel: int
) -> None:
    feed_server.set("/en/rss", feed(1))
    api.forbid(channel, "Forbidden: bot was kicked from the channel chat")
    async with running_bot(env_for(api, feed_server, db_path)):
        await polls(feed_server, "/en/rss", 2, api)
        feed_server.set("/en/rss", feed(1, 2, 3))
        await api.wait_for(lambda a: len(a.calls_to("sendMessage")) >= 1)
        count = len(feed_server.requests_to("/en/rss"))
        await polls(feed_server, "/en/rss", count + 3, api)
    assert len(api.calls_to("sendMessage")) == 1  # no retry storm, no second item
    store = await Store.open(db_path)
    chat = await store.get_chat(channel)
    counts = await store.delivery_counts()
    await store.close()
    assert chat is not None and not chat.active and "kicked" in (chat.deactivated_reason or "")
    assert counts[DeliveryState.PENDING] == 0 and counts[DeliveryState.CANCELLED] == 2


async def test_group_migration_moves_the_chat_and_resends(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    old, new = -4001, -1004001
    api.add_chat(old, "group", title="Readers")
    api.add_chat(new, "supergroup", title="Readers")
    api.migrate(old, new)
    feed_server.set("/en/rss", feed(1))
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path, CHANNELS=f"en={old}")
    async with running_bot(env):
        await polls(feed_server, "/en/rss", 2, api)
        feed_server.set("/en/rss", feed(1, 2))
        await api.wait_sent(1, new)
    assert api.sent(old) == []
    store = await Store.open(db_path)
    moved = await store.get_chat(new)
    gone = await store.get_chat(old)
    await store.close()
    assert moved is not None and moved.subscribed and gone is None


async def test_my_chat_member_connects_and_disconnects_a_channel(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    channel = api.add_chat(-1002, "channel", title="Analytics <RU>", username="an_ru")
    admin = api.user(42, "Aysel", language_code="ru")
    feed_server.set("/en/rss", feed(1))
    async with running_bot(bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)):
        await polls(feed_server, "/en/rss", 2, api)
        api.push_update(api.make_my_chat_member_update(channel, admin, "left", "administrator"))
        (note,) = await api.wait_sent(1, 42)
        assert "Analytics <RU>" in api.sent_texts(42)[0]
        assert "подключён" in api.sent_texts(42)[0]  # in the admin's language
        assert note.params["parse_mode"] == "HTML"

        feed_server.set("/en/rss", feed(1, 2))
        await api.wait_sent(1, -1002)

        api.push_update(api.make_my_chat_member_update(channel, admin, "administrator", "left"))
        await api.wait_for(lambda a: len(a.sent(42)) >= 2)
        feed_server.set("/en/rss", feed(1, 2, 3))
        count = len(feed_server.requests_to("/en/rss"))
        await polls(feed_server, "/en/rss", count + 3, api)
    assert len(api.sent(-1002)) == 1  # nothing after the removal


async def test_token_never_logged_and_graceful_stop(
    api: FakeBotApi,
    feed_server: FeedServer,
    db_path: Path,
    channel: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A DEBUG run never logs the token; the stop finishes, keeps the unsent piece pending (not
    lost, not failed) and records what was sent."""
    caplog.set_level(logging.DEBUG)
    feed_server.set("/en/rss", feed(1))
    api.server_error("sendMessage", times=100)  # Telegram out of reach for piece 2
    async with running_bot(env_for(api, feed_server, db_path, LOG_LEVEL="DEBUG")):
        await polls(feed_server, "/en/rss", 2, api)
        feed_server.set("/en/rss", feed(1, 2))
        await api.wait_for(lambda a: any(c.error_code for c in a.calls_to("sendMessage")))
    # running_bot's exit waited for run_bot to return: the stop completed.
    assert any(r.getMessage().startswith("stopped (") for r in caplog.records)
    secret = TOKEN.split(":", 1)[1]
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert all(secret not in (record.exc_text or "") for record in caplog.records)
    store = await Store.open(db_path)
    counts = await store.delivery_counts()
    await store.close()
    assert counts[DeliveryState.PENDING] == 1 and counts[DeliveryState.SENT] == 0
    assert api.sent(channel) == []


async def test_group_that_restricts_the_bot_stops_receiving(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    group = api.add_chat(-1005, "supergroup", title="Readers")
    admin = api.user(43, "Rauf")
    feed_server.set("/en/rss", feed(1))
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path, CHANNELS="en=-1005")
    async with running_bot(env) as runtime:
        await polls(feed_server, "/en/rss", 2, api)
        api.push_update(
            api.make_my_chat_member_update(
                group, admin, "member", "restricted", can_send_messages=False, is_member=True
            )
        )

        async def inactive() -> bool:
            chat = await runtime.services.store.get_chat(-1005)
            return chat is not None and not chat.active

        await wait_for("the group marked inactive", inactive)
        feed_server.set("/en/rss", feed(1, 2))
        count = len(feed_server.requests_to("/en/rss"))
        await polls(feed_server, "/en/rss", count + 3, api)
    assert api.sent(-1005) == []


async def test_a_button_nobody_knows_is_still_answered(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    user = api.user(77, "Leyla", language_code="az")
    feed_server.set("/en/rss", feed(1))
    async with running_bot(bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)):
        api.push_update(api.make_callback_update(77, user, "garbage", message_id=1))
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 1)
    (answer,) = api.calls_to("answerCallbackQuery")
    assert answer.ok and answer.params.get("text")  # a translated "this button no longer works"


async def test_replies_in_one_chat_keep_the_order_of_the_commands(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    user = api.user(88, "Nigar")
    feed_server.set("/en/rss", feed(1))
    commands = ["/subscribe", "/unsubscribe", "/subscribe", "/unsubscribe"]
    async with running_bot(bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)):
        for command in commands:
            api.push_update(api.make_message_update(88, user, command))
        await api.wait_sent(len(commands), 88)
    firsts = [text.split(":")[0] for text in api.sent_texts(88)]
    assert firsts == ["✅ Subscribed", "🔕 Unsubscribed", "✅ Subscribed", "🔕 Unsubscribed"]


async def test_an_update_the_library_cannot_parse_is_skipped_not_refetched_forever(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user = api.user(89, "Elvin")
    feed_server.set("/en/rss", feed(1))
    broken = {"message": {"message_id": 1, "chat": {"id": 89}, "text": "/help"}}  # no type, date
    async with running_bot(bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)):
        api.push_update(broken)
        api.push_update(api.make_message_update(89, user, "/help"))
        await api.wait_sent(1, 89)
    assert any("cannot be parsed" in r.getMessage() for r in caplog.records)
    assert len(api.sent(89)) == 1  # the good update was handled once, the broken one skipped
