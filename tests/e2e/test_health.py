"""Health endpoints over real HTTP: the real bot, the fake Bot API, a feed server, a SQLite file.

/healthz answers while the process runs; /readyz turns red naming the failing check when the
store cannot be written, the Bot API stops answering, every feed fails, or deliveries wait and
none is sent, and green again after recovery; /metrics counts polls and deliveries. The
readiness rules themselves (what counts as stuck) are also pinned on the virtual clock.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.health import FEED_GRACE_INTERVALS, Health
from storage.store import OutboxDepth
from tests.fakes.botapi import FakeBotApi
from tests.fakes.clock import ManualClock
from tests.fakes.feedserver import FeedServer, numbered_feed
from tests.support import TOKEN, bot_env, running_bot, wait_for

CHANNEL = -1001000000001


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PinnedBotApi(FakeBotApi):
    """The fake Bot API that comes back on the same port after stop(): Telegram returning."""

    async def start(self) -> None:
        if self._port is None:
            await super().start()
            return
        self._closing = False
        self._runner = web.AppRunner(
            self.make_app(), access_log=None, shutdown_timeout=self.shutdown_timeout
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port).start()


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with PinnedBotApi(
        TOKEN, global_per_second=600, group_per_minute=400, private_per_second=20
    ) as server:
        server.add_chat(CHANNEL, "channel", title="Caliber EN")
        yield server


class Probe:
    """A client of the bot's health port."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, timeout=aiohttp.ClientTimeout(5)) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = await self.get("/readyz")
        assert isinstance(body, dict)
        return status, body

    async def until(
        self, condition: Callable[[int, dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Ask /readyz until `condition(status, body)` holds; fail after `timeout` s."""
        seen: tuple[int, dict[str, Any]] = (0, {})

        async def holds() -> bool:
            nonlocal seen
            seen = await self.readyz()
            return condition(*seen)

        try:
            await wait_for("/readyz", holds, within=timeout, interval=0.05)
        except AssertionError as exc:
            raise AssertionError(f"/readyz still {seen[0]} {seen[1]} after {timeout} s") from exc
        return seen[1]

    async def red(self, check: str, timeout: float = 15.0) -> dict[str, Any]:
        return await self.until(lambda s, b: s == 503 and check in b["failing"], timeout)

    async def green(self, timeout: float = 15.0) -> dict[str, Any]:
        return await self.until(lambda s, b: s == 200 and b["ready"], timeout)

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = await self.get("/metrics")
        assert status == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def env_for(
    api: FakeBotApi, server: FeedServer, db_path: Path, port: int, **extra: str
) -> dict[str, str]:
    return bot_env(
        api.url,
        {"en": server.url("/en/rss")},
        db_path,
        CHANNELS=f"en={CHANNEL}",
        HEALTH_PORT=str(port),
        BACKOFF_MAX="0.4",
        **extra,
    )


async def polled(server: FeedServer, times: int) -> None:
    await wait_for(f"{times} polls", lambda: len(server.requests_to("/en/rss")) >= times)


async def test_healthy_bot_is_live_and_ready_and_its_metrics_count_a_delivery(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, session: aiohttp.ClientSession
) -> None:
    feed_server.set("/en/rss", numbered_feed(1))
    port = free_port()
    probe = Probe(session, port)
    async with running_bot(env_for(api, feed_server, db_path, port)):
        status, body = await probe.get("/healthz")
        assert status == 200 and body["ok"] is True and body["loop_lag_seconds"] >= 0
        ready = await probe.green()
        await polled(feed_server, 2)  # the first poll is stored: its backlog marked as seen
        assert set(ready["checks"]) == {"store", "bot_api", "feeds", "delivery"}
        assert all(check["ok"] for check in ready["checks"].values())

        feed_server.set("/en/rss", numbered_feed(1, 2))
        await api.wait_sent(1, CHANNEL)
        await wait_for("one post", lambda: len(api.sent(CHANNEL)) == 1)
        await polled(feed_server, len(feed_server.requests_to("/en/rss")) + 2)
        samples = await probe.metrics()

    url = feed_server.url("/en/rss")
    sent = ("caliberbot_deliveries_total", (("chat_type", "channel"), ("outcome", "sent")))
    assert samples[sent] == 1
    private = ("caliberbot_deliveries_total", (("chat_type", "private"), ("outcome", "sent")))
    assert samples[private] == 0
    assert samples[("caliberbot_polls_total", (("feed", url), ("result", "ok")))] >= 2
    assert samples[("caliberbot_polls_total", (("feed", url), ("result", "not_modified")))] >= 1
    assert samples[("caliberbot_new_pieces_total", (("feed", url),))] == 2  # backlog, then one
    assert samples[("caliberbot_send_duration_seconds_count", ())] == 1
    assert samples[("caliberbot_bot_api_responses_total", (("code", "200"),))] >= 2
    assert samples[("caliberbot_store_write_duration_seconds_count", ())] >= 3
    assert samples[("caliberbot_ready", ())] == 1
    assert samples[("caliberbot_feed_error_streak", (("feed", url),))] == 0
    assert ("caliberbot_outbox_pending", ()) in samples
    assert ("caliberbot_outbox_held", ()) in samples


async def test_paid_broadcasts_are_counted_on_metrics(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, session: aiohttp.ClientSession
) -> None:
    channels = [CHANNEL, CHANNEL - 1, CHANNEL - 2, CHANNEL - 3]
    for chat in channels[1:]:
        api.add_chat(chat, "channel", title=f"Caliber {chat}")
    feed_server.set("/en/rss", numbered_feed(1))
    port = free_port()
    probe = Probe(session, port)
    env = env_for(api, feed_server, db_path, port, PAID_BROADCAST="true",
                  RATE_GLOBAL_PER_SECOND="1")  # fmt: skip
    env["CHANNELS"] = ",".join(f"en={chat}" for chat in channels)
    async with running_bot(env):
        await probe.green()
        await polled(feed_server, 2)
        feed_server.set("/en/rss", numbered_feed(1, 2))
        await wait_for("four posts", lambda: all(api.sent(chat) for chat in channels))
        await polled(feed_server, len(feed_server.requests_to("/en/rss")) + 2)
        samples = await probe.metrics()

    sends = [c for chat in channels for c in api.sent(chat)]
    paid = [c for c in sends if c.params.get("allow_paid_broadcast") is True]
    # The free rate (1/s here) carries what it can; the rest within that second is paid.
    assert 1 <= len(paid) <= 3 and api.rate_violations == 0
    assert samples[("caliberbot_paid_sends_total", ())] == len(paid)
    assert samples[("caliberbot_paid_broadcast_stars_today", ())] == pytest.approx(0.1 * len(paid))


async def test_store_that_cannot_be_written_turns_readiness_red_until_a_write_succeeds(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, session: aiohttp.ClientSession
) -> None:
    feed_server.set("/en/rss", numbered_feed(1))
    port = free_port()
    probe = Probe(session, port)
    async with running_bot(env_for(api, feed_server, db_path, port, POLL_INTERVAL="0.5")):
        await probe.green()
        # Another process takes the database's write lock and keeps it (a stuck backup, an
        # sqlite3 shell left in a transaction): the bot's writes fail after SQLite's busy wait.
        # The lock is taken off the event loop: the bot shares this loop, and a transaction of
        # its own that is open at that moment must be able to finish, or both wait 10 s.
        blocker = sqlite3.connect(
            db_path, isolation_level=None, timeout=10, check_same_thread=False
        )
        try:
            await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
            body = await probe.red("store", timeout=20)
            assert not body["checks"]["store"]["ok"]
            assert "no write has succeeded" in body["checks"]["store"]["detail"]
            samples = await probe.metrics()
            assert samples[("caliberbot_store_write_errors_total", ())] >= 1
            assert samples[("caliberbot_ready_check", (("check", "store"),))] == 0
        finally:
            blocker.rollback()
            blocker.close()
        body = await probe.until(lambda s, b: b["checks"]["store"]["ok"], timeout=20)
        await probe.green(timeout=10)


async def test_bot_api_gone_turns_readiness_red_and_its_return_green(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, session: aiohttp.ClientSession
) -> None:
    feed_server.set("/en/rss", numbered_feed(1))
    port = free_port()
    probe = Probe(session, port)
    async with running_bot(env_for(api, feed_server, db_path, port, READY_API_GRACE="1")):
        await probe.green()
        await api.stop()  # connections refused: no answer at all
        body = await probe.red("bot_api")
        assert "no answer from the Bot API" in body["checks"]["bot_api"]["detail"]
        assert body["failing"] == ["bot_api"]  # feeds, store and the outbox are fine
        await api.start()
        await probe.green()
        # While Telegram is quiet (a long poll waiting), getMe keeps the check honest.
        assert len(api.calls_to("getMe")) >= 2


async def test_feeds_failing_for_three_intervals_turn_readiness_red_until_a_good_poll(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, session: aiohttp.ClientSession
) -> None:
    feed_server.set("/en/rss", numbered_feed(1))
    port = free_port()
    probe = Probe(session, port)
    async with running_bot(env_for(api, feed_server, db_path, port)):
        await probe.green()
        feed_server.set("/en/rss", "upstream broke", status=500)
        body = await probe.red("feeds")
        assert f"{FEED_GRACE_INTERVALS} x POLL_INTERVAL" in body["checks"]["feeds"]["detail"]
        url = feed_server.url("/en/rss")
        streak = ("caliberbot_feed_error_streak", (("feed", url),))
        errors = ("caliberbot_polls_total", (("feed", url), ("result", "error")))

        async def failures_counted() -> bool:
            # Red comes with time since the last good poll, not with a number of failures:
            # the second failure may still be on its way when the check turns.
            samples = await probe.metrics()
            return samples[streak] >= 2 and samples[errors] >= 2

        await wait_for("two failed polls in the metrics", failures_counted, interval=0.05)
        feed_server.set("/en/rss", numbered_feed(1))
        await probe.green()
        samples = await probe.metrics()
        assert samples[streak] == 0


async def test_deliveries_held_on_purpose_stay_green_but_unanswered_sends_turn_red(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, session: aiohttp.ClientSession
) -> None:
    feed_server.set("/en/rss", numbered_feed(1))
    port = free_port()
    probe = Probe(session, port)
    env = env_for(api, feed_server, db_path, port, READY_MAX_LAG="1", POLL_INTERVAL="0.3")
    async with running_bot(env):
        await probe.green()
        await polled(feed_server, 2)
        # A 429 holds the piece for 3 s (longer than READY_MAX_LAG): held on purpose, not stuck.
        api.retry_after(CHANNEL, 3)
        feed_server.set("/en/rss", numbered_feed(1, 2))
        await wait_for("the refused send", lambda: len(api.calls_to("sendMessage")) == 1)

        async def sent_and_ready_meanwhile() -> bool:
            status, body = await probe.readyz()
            assert status == 200, body
            return bool(api.sent(CHANNEL))

        await wait_for("the held piece sent", sent_and_ready_meanwhile, within=15, interval=0.1)

        # Telegram answers 500 to the next send: the row backs off (about 10 s) and waits.
        api.server_error("sendMessage", times=1)
        feed_server.set("/en/rss", numbered_feed(1, 2, 3))
        body = await probe.red("delivery")
        assert body["failing"] == ["delivery"]  # Telegram answers, so bot_api stays green
        assert "has not answered a send" in body["checks"]["delivery"]["detail"]
        await api.wait_sent(2, CHANNEL, timeout=20)  # the retry goes through
        await probe.green()
        samples = await probe.metrics()
    unreachable = (("chat_type", "channel"), ("outcome", "unreachable"))
    assert samples[("caliberbot_deliveries_total", unreachable)] == 1
    limited = (("chat_type", "channel"), ("outcome", "rate_limited"))
    assert samples[("caliberbot_deliveries_total", limited)] == 1
    assert samples[("caliberbot_bot_api_429_total", ())] == 1


# ---------------------------------------------------------------------- the rules, on virtual time

MAX_LAG = 300.0


def health(clock: ManualClock) -> Health:
    return Health(clock, api_grace=300.0, max_lag=MAX_LAG, poll_interval=120.0)


def failing(h: Health) -> list[str]:
    return [name for name, check in h.checks().items() if not check.ok]


def outbox(clock: ManualClock, pending: int, due: int, due_for: float | None) -> OutboxDepth:
    return OutboxDepth(pending, due, None if due_for is None else clock.now() - due_for)


async def test_a_long_fan_out_at_the_rate_limit_stays_ready_while_sends_happen() -> None:
    clock = ManualClock()
    h = health(clock)
    for _ in range(20):  # 10 minutes of sending, the oldest due row waiting all along
        await clock.advance(30)
        h.note_api_answer()
        h.note_poll(ok=True)
        h.note_sent()
        h.note_outbox(outbox(clock, 5000, 5000, due_for=clock.monotonic()))
    assert h.oldest_due_age() > MAX_LAG
    assert failing(h) == []
    await clock.advance(MAX_LAG + 1)  # ...until the sends stop
    h.note_api_answer()
    h.note_poll(ok=True)
    assert failing(h) == ["delivery"]
    h.note_sent()
    assert failing(h) == []


async def test_rows_held_for_later_are_not_due_and_an_idle_bot_is_ready() -> None:
    clock = ManualClock()
    h = health(clock)
    await clock.advance(3600)
    h.note_api_answer()
    h.note_poll(ok=True)
    h.note_outbox(outbox(clock, 40, 0, due_for=None))  # every pending row waits for its time
    assert failing(h) == []
    h.note_outbox(outbox(clock, 40, 1, due_for=1.0))  # a new piece, due a second ago
    assert failing(h) == []
    await clock.advance(MAX_LAG)
    h.note_api_answer()
    h.note_poll(ok=True)
    assert failing(h) == ["delivery"]  # the outbox read is 300 s old: the row has waited 301 s


async def test_checks_recover_with_the_next_good_signal() -> None:
    clock = ManualClock()
    h = health(clock)
    h.note_store_write(ok=False)
    assert failing(h) == ["store"]
    h.note_store_write(ok=False)
    h.note_store_write(ok=True)
    assert failing(h) == []
    await clock.advance(301)
    assert failing(h) == ["bot_api"]  # feeds: 3 x 120 s have not passed yet
    await clock.advance(60)
    assert failing(h) == ["bot_api", "feeds"]
    h.note_poll(ok=False)
    h.note_api_answer()
    assert failing(h) == ["feeds"]
    h.note_poll(ok=True)
    assert failing(h) == []
