"""The delivery engine on virtual time, against the fake Bot API over HTTP on 127.0.0.1.

The publisher, its rate limiter and the fake server all read one ManualClock, so Telegram's
windows are checked exactly as the server would stamp the requests, and a fan-out of hundreds
of chats at 30/s takes a second or two of real time. What is asserted is what Telegram and the
chats would notice: which messages arrived, when (in virtual time), and which were refused.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.clock import SystemClock
from bot.delivery.paid import PaidBudget
from bot.delivery.publisher import Publisher
from bot.delivery.ratelimit import BotApiRequest, Limits, RateLimits, TelegramRateLimiter
from bot.delivery.sender import Sender
from bot.text.i18n import Translator
from bot.text.render import Post, Renderer
from storage import paid as paid_sends
from storage.models import Chat, ChatType, Delivery, DeliveryState
from storage.outbox import enqueue_edits, enqueue_notice
from storage.store import Store
from tests.factories import new_item, sent
from tests.fakes.botapi import MESSAGE_METHODS, ApiCall, FakeBotApi
from tests.fakes.clock import ManualClock
from tests.support import TOKEN, advance_until, max_in_window

WALL = 1_767_225_600.0
CHANNELS = [-1_001_000_000_000 - i for i in range(1, 6)]
PRIVATE = [70_000_000 + i for i in range(1, 301)]


@dataclass
class Engine:
    publisher: Publisher
    limits: RateLimits
    store: Store
    api: FakeBotApi
    clock: ManualClock

    def sends(self, chat_id: int | None = None) -> list[ApiCall]:
        return [
            c
            for c in self.api.calls
            if c.ok and c.method in MESSAGE_METHODS and (chat_id is None or c.chat_id == chat_id)
        ]

    def refused(self) -> list[ApiCall]:
        return [c for c in self.api.calls if c.error_code == 429]

    async def until(
        self, what: str, predicate: Callable[[], bool], *, within: float, step: float = 0.01
    ) -> float:
        """Advance virtual time until `predicate()`; return the virtual seconds it took.

        Finer steps than the bot's tests take: sends here are paced in tens of milliseconds.
        """
        return await advance_until(
            self.clock, what, predicate, within=within, step=step, pause=0.001
        )

    async def settled(self) -> None:
        """Wait until every send has been answered and recorded."""
        await self.until("sends recorded", lambda: self.publisher.in_flight == 0, within=5)

    async def publish(self, *numbers: int) -> None:
        """Store new pieces (oldest first) for every subscriber and wake the engine."""
        feed = await self.store.ensure_feed("https://caliber.az/en/rss", "en")
        if not feed.initialized:
            await self._poll(feed.id, [new_item(0)])  # the backlog: marked seen, not queued
        await self._poll(feed.id, [new_item(n) for n in numbers])
        self.publisher.wake()

    async def _poll(self, feed_id: int, entries: Sequence[object]) -> None:
        now = self.clock.now()
        await self.store.store_poll(
            feed_id, entries, etag=None, last_modified=None, now=now,  # type: ignore[arg-type]
            next_poll_at=now + 60, max_age=3650 * 86400.0, backfill=0,
        )  # fmt: skip


@asynccontextmanager
async def engine(
    db_path: Path,
    *,
    chats: Sequence[tuple[int, ChatType]],
    rate: int = 30,
    paid: bool = False,
    unpaid_rate: int | None = None,
    server_rate: int | None = None,
    concurrency: int = 32,
    max_attempts: int = 6,
    daily_stars: int | None = None,
) -> AsyncIterator[Engine]:
    """A running publisher on virtual time, its chats subscribed, and the fake server.

    With `unpaid_rate` (paid broadcasts on), the server allows that rate to sends without
    allow_paid_broadcast and `rate` to all sends, as Telegram does."""
    clock = ManualClock()
    store = await Store.open(db_path)
    for chat_id, kind in chats:
        await store.upsert_chat(
            chat_id, kind, title=None, username=None, default_lang="en", now=WALL,
            subscribed=True,
        )  # fmt: skip
    limits = RateLimits(clock, Limits(global_per_second=rate, unpaid_per_second=unpaid_rate))
    if paid:
        limits.budget = PaidBudget(daily_stars, ZoneInfo("Asia/Baku"), clock.now)
    async with FakeBotApi(
        TOKEN,
        global_per_second=server_rate or unpaid_rate or rate,
        paid_per_second=rate,
        clock=clock.monotonic,
    ) as api:
        for chat_id, kind in chats:
            api.add_chat(chat_id, kind.value)
        bot: ExtBot[None] = ExtBot(
            TOKEN,
            base_url=f"{api.url}/bot",
            request=BotApiRequest(),
            rate_limiter=TelegramRateLimiter(limits),
        )
        await bot.initialize()
        renderer = Renderer(Translator(default_language="en"), "Asia/Baku", 600)
        publisher = Publisher(
            store, Sender(bot, paid_broadcast=paid), renderer, limits, clock,
            concurrency=concurrency, max_attempts=max_attempts,
        )  # fmt: skip
        runner = asyncio.create_task(publisher.run())
        try:
            yield Engine(publisher, limits, store, api, clock)
        finally:
            stopping = asyncio.create_task(publisher.stop(5.0))
            # Virtual time goes on while the sends in flight finish (stop's bound is real).
            await advance_until(clock, "the publisher stopped", stopping.done, within=600, step=0.1)
            await runner
            await bot.shutdown()
            await store.close()


def _piece(call: ApiCall) -> int:
    match = re.search(r"Piece (\d+)", call.text or "")
    assert match is not None
    return int(match.group(1))


def _chats(channels: Sequence[int] = (), private: Sequence[int] = ()) -> list[tuple[int, ChatType]]:
    return [(c, ChatType.CHANNEL) for c in channels] + [(c, ChatType.PRIVATE) for c in private]


# ---------------------------------------------------------------------- the fan-out


async def test_fan_out_runs_at_the_global_limit_channels_first_without_a_429(
    db_path: Path,
) -> None:
    async with engine(db_path, chats=_chats(CHANNELS, PRIVATE)) as e:
        await e.publish(1)
        total = len(CHANNELS) + len(PRIVATE)
        await e.until("fan-out", lambda: len(e.sends()) >= total, within=30)

        sends = e.sends()
        assert sorted(c.chat_id for c in sends) == sorted(CHANNELS + PRIVATE)  # once each
        assert e.refused() == [] and e.api.rate_violations == 0
        times = [c.at for c in sends]
        assert max_in_window(times, 1.0) <= 30
        rate = (len(times) - 1) / (max(times) - min(times))
        assert rate >= 0.95 * 30, f"{rate:.1f} sends/s"
        # Channels before private subscribers.
        assert {c.chat_id for c in sends[: len(CHANNELS)]} == set(CHANNELS)


async def test_each_chat_gets_the_oldest_piece_first_at_its_own_pace(db_path: Path) -> None:
    channel, private = CHANNELS[0], PRIVATE[:3]
    async with engine(db_path, chats=_chats([channel], private)) as e:
        await e.publish(1, 2, 3)
        await e.until("three pieces each", lambda: len(e.sends()) >= 12, within=30)

        for chat_id in [channel, *private]:
            sends = e.sends(chat_id)
            assert [_piece(c) for c in sends] == [1, 2, 3]
            gaps = [b.at - a.at for a, b in itertools.pairwise(sends)]
            assert min(gaps) >= 1.0  # one a second into any one chat
        assert e.sends()[0].chat_id == channel
        assert e.api.rate_violations == 0


async def test_a_failing_chat_never_holds_up_the_others(db_path: Path) -> None:
    broken, blocked, *healthy = PRIVATE[:20]
    async with engine(db_path, chats=_chats(private=PRIVATE[:20])) as e:
        e.api.fail(None, chat_id=broken, error_code=500, description="Internal Server Error",
                   times=1000)  # fmt: skip
        e.api.forbid(blocked)
        await e.publish(1, 2)
        took = await e.until(
            "healthy chats served", lambda: all(len(e.sends(c)) == 2 for c in healthy), within=10
        )
        assert took < 3.0  # two pieces each at one a second, however the broken chat fares
        await e.settled()

        assert e.sends(broken) == [] and e.sends(blocked) == []
        calls_to_broken = [c for c in e.api.calls if c.chat_id == broken]
        assert len(calls_to_broken) == 1  # backing off, and its second piece waits its turn
        head = await e.store.get_delivery(2, broken)  # piece 1 (item 1 is the backlog)
        assert head is not None and head.state is DeliveryState.PENDING
        # A 5xx is no answer from Telegram: the post waits, spending none of its attempts.
        assert head.attempts == 0 and "Internal Server Error" in (head.last_error or "")
        chat = await e.store.get_chat(blocked)
        assert chat is not None and not chat.active
        assert next(c for c in e.api.calls if c.chat_id == blocked).error_code == 403


# ---------------------------------------------------------------------- 429s


async def test_a_429_for_one_chat_holds_that_chat_only(db_path: Path) -> None:
    held, *others = PRIVATE[:10]
    async with engine(db_path, chats=_chats(private=PRIVATE[:10])) as e:
        e.api.retry_after(held, 5)
        await e.publish(1)
        await e.until("everyone served", lambda: len(e.sends()) >= 10, within=20)
        await e.settled()

        (refusal,) = e.refused()
        (sent,) = e.sends(held)
        assert sent.at - refusal.at >= 5.0  # retry_after honoured for that chat
        assert max(c.at for c in e.sends() if c.chat_id in others) < refusal.at + 1.0
        row = await e.store.get_delivery(2, held)
        assert row is not None and row.state is DeliveryState.SENT and row.attempts == 1


async def test_429s_for_several_chats_hold_every_send(db_path: Path) -> None:
    async with engine(db_path, chats=_chats(private=PRIVATE[:60])) as e:
        e.api.retry_after(None, 3, times=3)  # the bot-wide limit: three chats refused at once
        await e.publish(1)
        await e.until("everyone served", lambda: len(e.sends()) >= 60, within=30)

        refusals = e.refused()
        assert len(refusals) == 3
        last = max(c.at for c in refusals)
        assert not [c for c in e.sends() if last < c.at < last + 3.0]
        assert e.api.rate_violations == 0
        # Refusals the windows should have prevented: allow for more jitter from now on.
        assert e.limits.margin == pytest.approx(0.03 + 0.02)


# ---------------------------------------------------------------------- paid broadcasts


async def test_paid_broadcast_pays_only_for_what_the_free_rate_cannot_carry(
    db_path: Path,
) -> None:
    async with engine(
        db_path, chats=_chats(private=PRIVATE), rate=100, unpaid_rate=30, paid=True
    ) as e:
        paid_seen: list[int] = []
        e.publisher.on_paid = lambda: paid_seen.append(1)
        await e.publish(1)
        took = await e.until("fan-out", lambda: len(e.sends()) >= len(PRIVATE), within=20)
        await e.settled()

        assert took < len(PRIVATE) / 30 / 2  # far faster than the free 30/s
        times = [c.at for c in e.sends()]
        assert max_in_window(times, 1.0) <= 100
        assert (len(times) - 1) / (max(times) - min(times)) >= 0.95 * 100
        free = [c.at for c in e.sends() if not c.params.get("allow_paid_broadcast")]
        paid = [c for c in e.sends() if c.params.get("allow_paid_broadcast") is True]
        # The free rate is used to the full, and only the rest is paid for.
        assert max_in_window(free, 1.0) <= 30
        assert len(free) >= 0.9 * 30 * (max(times) - min(times))
        assert len(paid) == len(PRIVATE) - len(free) == len(paid_seen)
        assert e.api.rate_violations == 0
        assert e.limits.budget is not None and e.limits.budget.spent == len(paid)
        # Each paid send is counted on its day, in the store, for the cap after a restart.
        day = e.limits.budget.today()
        assert await paid_sends.today(e.store, day) == (day, len(paid))


async def test_the_daily_stars_cap_falls_back_to_the_free_rate(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine(
        db_path, chats=_chats(private=PRIVATE[:120]), rate=100, unpaid_rate=30, paid=True,
        daily_stars=3,
    ) as e:  # fmt: skip
        await e.publish(1)
        await e.until("fan-out", lambda: len(e.sends()) >= 120, within=20)

        paid = [c.at for c in e.sends() if c.params.get("allow_paid_broadcast") is True]
        free = [c.at for c in e.sends() if not c.params.get("allow_paid_broadcast")]
        assert len(paid) == 30  # 3 Stars at 0.1 a message
        # After the cap, no more paid sends: the rest keeps to the free window.
        assert max_in_window(free, 1.0) <= 30 and max(free) > max(paid)
        assert e.api.rate_violations == 0
        assert "reached today's cap of 30 messages" in caplog.text


async def test_a_restart_keeps_the_day_s_paid_count(db_path: Path) -> None:
    clock = ManualClock()
    budget = PaidBudget(1, ZoneInfo("Asia/Baku"), clock.now)  # 10 paid messages a day
    store = await Store.open(db_path)
    try:
        async with store.transaction() as conn:
            await paid_sends.add(conn, [budget.today()] * 9)
        budget.load(*await paid_sends.today(store, budget.today()))
        assert budget.may_pay()
        budget.charge()
        assert not budget.may_pay()
        await clock.advance(86_400.0)  # the next day starts afresh
        assert budget.may_pay() and budget.spent == 0
    finally:
        await store.close()


async def test_without_the_flag_sends_keep_to_the_free_rate() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, Limits(global_per_second=100, unpaid_per_second=30, margin=0))
    free = [await _timed(limits, clock, chat, paid=False) for chat in range(1, 61)]
    assert max_in_window(free, 1.0) <= 30
    paid = [await _timed(limits, clock, chat, paid=True) for chat in range(101, 201)]
    assert max_in_window(paid, 1.0) <= 100 and max(paid) - min(paid) < 1.5


async def _timed(limits: RateLimits, clock: ManualClock, chat: int, *, paid: bool) -> float:
    waiter = asyncio.create_task(limits.acquire(chat, paid=paid))
    while not waiter.done():
        await clock.advance(0.005)
    return (await waiter).at


# ---------------------------------------------------------------------- the limiter


async def test_global_waiters_queue_in_order_and_wake_one_at_a_time() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, Limits(global_per_second=10, margin=0))
    order: list[int] = []

    async def send(chat: int) -> None:
        await limits.acquire(chat)
        order.append(chat)

    tasks = [asyncio.create_task(send(chat)) for chat in range(1, 41)]
    await clock.settle()
    most_sleeping = 0
    while not all(t.done() for t in tasks):
        most_sleeping = max(most_sleeping, clock.sleepers)
        await clock.advance(0.01)
    assert order == list(range(1, 41))  # first come, first served
    assert most_sleeping == 1  # one waiter watches the window; the rest wait their turn


async def test_a_chat_waiting_for_its_own_window_does_not_hold_up_others() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, Limits(margin=0))
    await limits.acquire(7)
    second_to_7 = asyncio.create_task(limits.acquire(7))  # private chat: one a second
    await clock.settle()
    other = asyncio.create_task(limits.acquire(8))
    await clock.advance(0.05)  # the pacer's spacing of bot-wide sends
    assert other.done() and not second_to_7.done()
    await clock.advance(0.95)
    assert second_to_7.done()


async def test_the_pacer_spreads_a_second_of_sends_over_the_second() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, Limits(global_per_second=30, margin=0.03))
    stamps = [await _timed(limits, clock, chat, paid=True) for chat in range(1, 61)]
    assert max_in_window(stamps, 0.1) <= 4  # no burst of 30 at once
    assert max_in_window(stamps, 1.03) <= 30


async def test_a_send_written_late_is_restamped_when_it_leaves() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, Limits(global_per_second=2, margin=0))
    stamp = await limits.acquire(5)
    await clock.advance(0.4)  # e.g. the event loop was busy before the request was written
    stamp.restamp()
    assert stamp.at == 0.4
    assert limits.chat_ready_at(5) == pytest.approx(1.4)  # the chat's window counts from 0.4
    assert limits.late_writes == 1


async def test_the_http_layer_moves_a_stamp_to_when_the_request_is_written() -> None:
    # A busy moment between the limiter's stamp and the write: here the on_stamp hook blocks
    # the event loop for 80 ms, as a stalled process would.
    limits = RateLimits(SystemClock(), Limits(global_per_second=30, margin=0))
    async with FakeBotApi(TOKEN) as api:
        api.add_chat(70_000_001, "private")
        bot: ExtBot[None] = ExtBot(
            TOKEN, base_url=f"{api.url}/bot", request=BotApiRequest(),
            rate_limiter=TelegramRateLimiter(limits),
        )  # fmt: skip
        await bot.initialize()
        try:
            stamped: list[float] = []

            def stall() -> None:
                stamped.append(time.monotonic())
                time.sleep(0.08)

            await bot.send_message(70_000_001, "hello", rate_limit_args={"on_stamp": stall})
        finally:
            await bot.shutdown()
    assert limits.late_writes == 1 and limits.longest_write_delay >= 0.08
    # The chat's window counts from the write, not from the stamp before the stall.
    assert limits.chat_ready_at(70_000_001, stamped[0]) >= stamped[0] + 1.08


async def test_a_post_goes_out_whole_through_ptb_s_own_request_layer_too() -> None:
    # The sender's JSON body is made for BotApiRequest; any other request layer (PTB's httpx
    # one here) must still get every parameter.
    async with FakeBotApi(TOKEN) as api:
        api.add_chat(70_000_001, "private")
        bot: ExtBot[None] = ExtBot(TOKEN, base_url=f"{api.url}/bot", request=HTTPXRequest())
        await bot.initialize()
        try:
            post = Post(html="<b>Piece</b> &amp; more", text="Piece & more",
                        link="https://caliber.az/en/post/1", photo_url=None,
                        disable_preview=False)  # fmt: skip
            chat = _chat_of(70_000_001)
            result = await Sender(bot).send_post(chat, lambda _photo: post)
        finally:
            await bot.shutdown()
    assert result.outcome.value == "sent" and result.message_id is not None
    (call,) = api.sent(70_000_001)
    assert call.params["text"] == "<b>Piece</b> &amp; more"
    assert call.params["link_preview_options"]["url"] == "https://caliber.az/en/post/1"


def _chat_of(chat_id: int) -> Chat:
    return Chat(
        id=chat_id, type=ChatType.PRIVATE, title=None, username=None, lang="en",
        languages=("en",), active=True, subscribed=True, paused=False,
    )  # fmt: skip


# ---------------------------------------------------------------------- retention


async def test_retention_prunes_finished_rows_and_keeps_items_and_pending(db_path: Path) -> None:
    store = await Store.open(db_path)
    day = 86400.0
    for chat_id in (1, 2):
        await store.upsert_chat(
            chat_id, ChatType.PRIVATE, title=None, username=None, default_lang="en", now=WALL,
            subscribed=True,
        )  # fmt: skip
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    poll = {"etag": None, "last_modified": None, "max_age": 3650 * day, "backfill": 0}
    await store.store_poll(feed.id, [new_item(0)], now=WALL, next_poll_at=WALL, **poll)  # type: ignore[arg-type]
    old = WALL - 40 * day
    await store.store_poll(feed.id, [new_item(1)], now=old, next_poll_at=old, **poll)  # type: ignore[arg-type]
    await store.store_poll(feed.id, [new_item(2)], now=WALL, next_poll_at=WALL, **poll)  # type: ignore[arg-type]
    first = await store.get_delivery(2, 1)
    assert first is not None
    await store.record_outcomes([sent(first.id, 10, old)])  # chat 2's old piece is still pending

    pruned = await store.prune_deliveries(WALL - 30 * day, chunk=1)
    counts = await store.delivery_counts()
    items = await store.count_items()
    await store.close()

    assert pruned == 1
    assert counts[DeliveryState.SENT] == 0 and counts[DeliveryState.PENDING] == 3
    assert items == 3  # kept for search


async def test_an_outage_longer_than_every_retry_loses_no_post(db_path: Path) -> None:
    """No answer from Telegram (5xx) spends no attempts: the post waits out the outage."""
    chat = PRIVATE[0]
    async with engine(db_path, chats=_chats(private=[chat])) as e:
        e.api.server_error("sendMessage", times=12)  # twice the default MAX_SEND_ATTEMPTS
        await e.publish(1)
        await e.until("sent after the outage", lambda: len(e.sends(chat)) == 1, within=3600,
                      step=1.0)  # fmt: skip
        refused = [c for c in e.api.calls_to("sendMessage") if not c.ok]
        assert len(refused) == 12
        await e.settled()
        counts = await e.store.delivery_counts()
        assert counts[DeliveryState.SENT] == 1 and counts[DeliveryState.FAILED] == 0


# ---------------------------------------------------------------------- edits and notices


async def test_edits_and_notices_keep_to_the_chats_windows_like_posts(db_path: Path) -> None:
    channel, admin = CHANNELS[0], PRIVATE[0]
    async with engine(db_path, chats=_chats([channel])) as e:
        e.api.add_chat(admin, "private")
        await e.publish(*range(1, 16))
        # Steps under the bot's 0.03 s margin: a step is virtual time a request may spend
        # between its stamp and the server, and a larger one reads as network latency the
        # margin was never meant to absorb (the server then counts 21 in its 60 s window).
        await e.until("15 posts", lambda: len(e.sends(channel)) >= 15, within=120, step=0.02)
        # The site edits every piece: each message must change.
        feed = await e.store.ensure_feed("https://caliber.az/en/rss", "en")
        await e._poll(feed.id, [new_item(n, title=f"Piece {n}, revised") for n in range(1, 16)])
        now = e.clock.now()
        items = {d.item_id for d in await _sent_posts(e.store, channel)}
        for item_id in sorted(items):
            assert await enqueue_edits(e.store, item_id, now - 3600, now) == 1
        for n in range(5):
            await enqueue_notice(e.store, admin, "en", f"Notice {n}", now)
        e.publisher.wake()

        def edits() -> list[ApiCall]:
            return [c for c in e.api.calls if c.ok and c.method == "editMessageText"]

        await e.until(
            "15 edits and 5 notices",
            lambda: len(edits()) >= 15 and len(e.sends(admin)) >= 5,
            within=300, step=0.02,
        )  # fmt: skip

        assert e.refused() == [] and e.api.rate_violations == 0
        # Posts and edits share the channel's window: 20 a minute, 30 requests take > 60 s.
        into_channel = [c.at for c in [*e.sends(channel), *edits()]]
        assert max_in_window(into_channel, 60.0) <= 20
        assert max(into_channel) - min(into_channel) > 60.0
        notices = e.sends(admin)
        assert [c.text for c in notices] == [f"Notice {n}" for n in range(5)]
        assert min(b.at - a.at for a, b in itertools.pairwise(notices)) >= 1.0
        assert all("revised" in (c.text or "") for c in edits())
        assert sorted(c.params["message_id"] for c in edits()) == sorted(
            c.result["message_id"] for c in e.sends(channel)
        )


async def _sent_posts(store: Store, chat_id: int) -> list[Delivery]:
    found = []
    for item_id in range(1, 100):
        delivery = await store.get_delivery(item_id, chat_id)
        if delivery is not None and delivery.state is DeliveryState.SENT:
            found.append(delivery)
    return found
