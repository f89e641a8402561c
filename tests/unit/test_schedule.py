"""Daily digests and quiet hours below Telegram: the scheduling arithmetic (DST, offsets, windows
that wrap midnight), the digest's rendering and splitting, the button codec, and the store's
holds and releases on both back ends (exactly once, crash-safe, invisible to readiness)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bot.delivery.digests import DigestScheduler, change_schedule
from bot.delivery.schedule import (
    NAMED_ZONES,
    OFFSETS,
    QUIET_RELEASE_MAX,
    ScheduleUpdate,
    changed_hold,
    is_zone_name,
    next_digest_at,
    offset_name,
    planned_hold,
    quiet_window,
    zone,
)
from bot.ops.health import Health
from bot.text.i18n import Translator
from bot.text.render import DIGEST_ENTITIES, LINK_BUDGET, TEXT_LIMIT, Renderer
from handlers.views import callbacks
from handlers.views.callbacks import MAX_BYTES
from handlers.views.channels import cb, parse_callback
from handlers.views.schedule import (
    Step,
    make_step,
    panel_arg,
    parse_panel_arg,
    parse_reader_data,
    reader_data,
)
from storage import outbox
from storage import schedule as schedule_store
from storage.models import ChatSettings, ChatType, DeliveryMode, Hold, Item
from storage.schedule import Held, ReleaseConflict
from storage.store import OutboxDepth, Store
from tests.factories import item, new_item, sent
from tests.fakes.clock import ManualClock
from tests.fakes.telegram_html import parse_html, utf16_len

BAKU = ZoneInfo("Asia/Baku")
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
RENDERER = Renderer(Translator(), "Asia/Baku", 600)


def at(tz: timezone | ZoneInfo, *fields: int, fold: int = 0) -> float:
    """The moment of a local wall time (year, month, day, hour, minute)."""
    year, month, day, hour, minute = (*fields, 0)[:5]
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).timestamp()


def local(moment: float, tz: timezone | ZoneInfo) -> datetime:
    return datetime.fromtimestamp(moment, UTC).astimezone(tz)


# ---------------------------------------------------------------------- the next digest


def test_the_next_digest_is_today_at_the_hour_else_tomorrow() -> None:
    assert next_digest_at(9, BAKU, at(BAKU, 2026, 5, 4, 8, 59)) == at(BAKU, 2026, 5, 4, 9)
    # At the hour itself the digest is the one being made: the next is tomorrow's.
    assert next_digest_at(9, BAKU, at(BAKU, 2026, 5, 4, 9)) == at(BAKU, 2026, 5, 5, 9)
    assert next_digest_at(0, BAKU, at(BAKU, 2026, 12, 31, 23, 30)) == at(BAKU, 2027, 1, 1, 0)
    assert at(BAKU, 2026, 5, 4, 9) == datetime(2026, 5, 4, 5, tzinfo=UTC).timestamp()


def test_a_digest_keeps_its_wall_hour_across_summer_time() -> None:
    """London: 9:00 is 08:00 UTC in summer, 09:00 UTC in winter; the day of each change is
    23 or 25 hours long, and the digest stays at 9:00 on the clocks."""
    saturday = at(LONDON, 2026, 3, 28, 9)  # the clocks go forward on Sunday 29 March, 01:00
    sunday = next_digest_at(9, LONDON, saturday)
    assert local(sunday, LONDON).hour == 9 and sunday - saturday == 23 * 3600
    assert datetime.fromtimestamp(sunday, UTC).hour == 8
    before_back = at(LONDON, 2026, 10, 24, 9)  # back on Sunday 25 October, 02:00
    after_back = next_digest_at(9, LONDON, before_back)
    assert after_back - before_back == 25 * 3600 and local(after_back, LONDON).hour == 9


def test_a_skipped_hour_goes_at_the_jump_and_a_doubled_hour_once() -> None:
    # New York skips 02:00–03:00 on 8 March 2026: a digest at 2 goes when the clocks jump.
    jump = next_digest_at(2, NEW_YORK, at(NEW_YORK, 2026, 3, 7, 12))
    assert local(jump, NEW_YORK) == datetime(2026, 3, 8, 3, tzinfo=NEW_YORK)
    assert datetime.fromtimestamp(jump, UTC) == datetime(2026, 3, 8, 7, tzinfo=UTC)
    # London shows 01:00–02:00 twice on 25 October 2026: a digest at 1 goes at the first 01:00
    # only; the next one is a day later.
    first = next_digest_at(1, LONDON, at(LONDON, 2026, 10, 24, 12))
    assert first == at(LONDON, 2026, 10, 25, 1, fold=0)
    following = next_digest_at(1, LONDON, first)
    assert local(following, LONDON).date().day == 26
    assert following - first == 25 * 3600


@pytest.mark.parametrize(("hours", "utc_hour", "day"), [(4, 5, 4), (-12, 21, 3), (14, 19, 3)])
def test_fixed_offsets_never_move(hours: int, utc_hour: int, day: int) -> None:
    tz = zone(offset_name(hours), BAKU)
    after = datetime(2026, 5, 3, 12, tzinfo=UTC).timestamp()
    digest = next_digest_at(9, tz, after)
    assert datetime.fromtimestamp(digest, UTC) == datetime(2026, 5, day, utc_hour, tzinfo=UTC)
    summer_to_winter = next_digest_at(9, tz, after + 180 * 86400) - digest
    assert summer_to_winter % 86400 == 0


def test_zones_by_name_and_offset() -> None:
    assert zone(None, BAKU) is BAKU
    assert zone("UTC", BAKU).utcoffset(None) == timedelta(0)
    assert zone("UTC-3", BAKU).utcoffset(None) == timedelta(hours=-3)
    assert zone("UTC+14", BAKU).utcoffset(None) == timedelta(hours=14)
    assert zone("Europe/London", BAKU) == LONDON
    for unknown in ("UTC+15", "UTC+04", "Mars/Olympus", "", "../etc/passwd"):
        assert zone(unknown, BAKU) is BAKU, unknown
    assert all(is_zone_name(name) for name in NAMED_ZONES)
    assert [offset_name(h) for h in (-12, 0, 14)] == ["UTC-12", "UTC", "UTC+14"]
    assert len(OFFSETS) == 27 and not is_zone_name("Europe/Paris")


# ---------------------------------------------------------------------- quiet hours


def test_quiet_hours_that_wrap_midnight() -> None:
    night = (23, 8)
    evening = at(BAKU, 2026, 5, 4, 22)
    assert quiet_window(night, BAKU, evening) == Hold(
        at(BAKU, 2026, 5, 4, 23), at(BAKU, 2026, 5, 5, 8)
    )
    late = quiet_window(night, BAKU, at(BAKU, 2026, 5, 4, 23, 30))
    assert late.active(at(BAKU, 2026, 5, 4, 23, 30)) and late.start == at(BAKU, 2026, 5, 4, 23)
    dawn = quiet_window(night, BAKU, at(BAKU, 2026, 5, 5, 7))
    assert dawn == late  # the same window, seen from its other side of midnight
    # At its end the window is over: the next one starts in the evening.
    assert quiet_window(night, BAKU, at(BAKU, 2026, 5, 5, 8)).start == at(BAKU, 2026, 5, 5, 23)


def test_quiet_hours_within_a_day_and_across_summer_time() -> None:
    noon = quiet_window((13, 15), BAKU, at(BAKU, 2026, 5, 4, 14))
    assert noon == Hold(at(BAKU, 2026, 5, 4, 13), at(BAKU, 2026, 5, 4, 15))
    # The night the clocks go forward is an hour shorter, and still ends at 8 on the clocks.
    spring = quiet_window((23, 8), LONDON, at(LONDON, 2026, 3, 28, 22))
    assert spring.until is not None and spring.start is not None
    assert spring.until - spring.start == 8 * 3600
    assert local(spring.until, LONDON).hour == 8


def test_the_hold_a_chat_asks_for() -> None:
    now = at(BAKU, 2026, 5, 4, 12)
    digest = ChatSettings(delivery=DeliveryMode.DIGEST, digest_hour=9, timezone="UTC+4")
    assert planned_hold(digest, ChatType.CHANNEL, now, LONDON) == Hold(now, at(BAKU, 2026, 5, 5, 9))
    quiet = ChatSettings(quiet_from=11, quiet_to=13)
    assert planned_hold(quiet, ChatType.PRIVATE, now, BAKU).active(now)
    assert planned_hold(quiet, ChatType.GROUP, now, BAKU) == Hold()  # private chats only
    assert planned_hold(ChatSettings(), ChatType.PRIVATE, now, BAKU) == Hold()


def test_a_change_never_releases_held_posts_itself() -> None:
    now = 1000.0
    held = Hold(500.0, 2000.0)
    assert changed_hold(held, Hold(now, 5000.0), now) == Hold(500.0, 5000.0)
    # Not held any more by the new plan: the scheduler releases them at once, by its rules.
    assert changed_hold(held, Hold(), now) == Hold(500.0, now)
    assert changed_hold(held, Hold(3000.0, 4000.0), now) == Hold(500.0, now)
    assert changed_hold(Hold(3000.0, 4000.0), Hold(), now) == Hold()
    assert changed_hold(Hold(), Hold(now, 5000.0), now) == Hold(now, 5000.0)


def test_updates_from_buttons_are_checked_again() -> None:
    settings = ChatSettings()
    quiet = ScheduleUpdate(quiet=(23, 8))
    assert quiet.applied(settings, ChatType.PRIVATE).quiet_hours == (23, 8)
    assert quiet.applied(settings, ChatType.SUPERGROUP).quiet_hours is None
    off = ScheduleUpdate(quiet=(0, 0)).applied(
        ChatSettings(quiet_from=23, quiet_to=8), ChatType.PRIVATE
    )
    assert off.quiet_hours is None
    assert ScheduleUpdate(digest_hour=24).applied(settings, ChatType.PRIVATE) == settings
    assert ScheduleUpdate(timezone="Mars/Olympus").applied(settings, ChatType.PRIVATE) == settings
    chosen = ScheduleUpdate(timezone="UTC-5").applied(settings, ChatType.CHANNEL)
    assert chosen.timezone == "UTC-5"
    assert ScheduleUpdate(timezone="").applied(chosen, ChatType.CHANNEL).timezone is None


def test_settings_keep_the_schedule_as_json() -> None:
    settings = ChatSettings(
        delivery=DeliveryMode.DIGEST, digest_hour=7, timezone="Europe/London", quiet_from=23,
        quiet_to=8,
    )  # fmt: skip
    assert ChatSettings.from_json(settings.to_json()) == settings
    assert ChatSettings.from_json('{"delivery": "weekly"}') == ChatSettings()  # a newer mode
    assert ChatSettings().to_json() == "{}"


# ---------------------------------------------------------------------- button data


def test_schedule_buttons_decode_to_what_they_said() -> None:
    steps = [Step("st"), Step("md"), Step("hs", 23), Step("z", 2), Step("zn", len(NAMED_ZONES) - 1),
             Step("zo", -12), Step("zo", 14), Step("zd"), Step("qf", 0), Step("qt", 23, 8),
             Step("qx")]  # fmt: skip
    for step in steps:
        assert parse_reader_data(reader_data(step)) == step
        assert len(reader_data(step).encode()) <= MAX_BYTES
    for step in steps:
        if not step.op.startswith("q"):
            data = cb(-1009999999999999, "sched", panel_arg(step))
            press = parse_callback(data)
            assert press is not None and parse_panel_arg(press.arg) == step
            assert len(data.encode()) <= MAX_BYTES
    assert parse_panel_arg("") == Step("st")


@pytest.mark.parametrize(
    "data",
    ["sc", "sc:", "sc:hs", "sc:hs:24", "sc:hs:-1", "sc:zo:15", "sc:zo:-13", "sc:zn:99",
     "sc:z:3", "sc:qt:8:8", "sc:qt:23", "sc:qt:23:8:1", "sc:st:1", "sc:xx", "sc:md:1"],
)  # fmt: skip
def test_schedule_data_the_bot_did_not_make_is_refused(data: str) -> None:
    assert parse_reader_data(data) is None


def test_no_other_family_claims_schedule_data() -> None:
    families = [f for f in vars(callbacks).values() if isinstance(f, callbacks.Family)]
    for step in (Step("st"), Step("qt", 23, 8), Step("zo", -3)):
        data = reader_data(step)
        assert [f for f in families if f.decode(data) is not None] == [callbacks.SCHEDULE]


def test_the_panel_offers_no_quiet_hours_and_checks_numbers() -> None:
    for arg in ("q", "qt.23.8", "hs.24", "zo.15", "zn.99", "z.7", "hs", "xx"):
        assert parse_panel_arg(arg) is None, arg
    assert make_step("qt", "1", "2") == Step("qt", 1, 2)


def test_steps_say_what_they_change() -> None:
    assert Step("md").update == ScheduleUpdate(delivery=DeliveryMode.DIGEST)
    assert Step("hs", 7).update == ScheduleUpdate(delivery=DeliveryMode.DIGEST, digest_hour=7)
    assert Step("zn", 0).update == ScheduleUpdate(timezone=NAMED_ZONES[0])
    assert Step("zo", -3).update == ScheduleUpdate(timezone="UTC-3")
    assert Step("qx").update == ScheduleUpdate(quiet=(0, 0))
    assert Step("z", 1).update is None and Step("h").update is None


# ---------------------------------------------------------------------- the digest's text


def piece(n: int, *, title: str | None = None, categories: tuple[str, ...] = ()) -> Item:
    return item(n, title=title or f"Piece {n}", categories=categories,
                link=f"https://caliber.az/en/post/{n}-{'x' * 40}")  # fmt: skip


def test_a_digest_groups_linked_titles_by_category_and_escapes_them() -> None:
    items = [
        piece(1, categories=("Politics", "War")),
        piece(2, title="Oil <b>& gas</b>", categories=("Economy",)),
        piece(3),
        piece(4, categories=("POLITICS",)),
    ]
    (message,) = RENDERER.digest(items, "ru", "Дайджест <сегодня>")
    parsed = parse_html(message)
    assert parsed.text.split("\n") == [
        "Дайджест <сегодня>", "", "Politics", "• Piece 1", "• Piece 4", "", "Economy",
        "• Oil <b>& gas</b>", "", "Другое", "• Piece 3",
    ]  # fmt: skip
    links = [e.url for e in parsed.entities if e.type == "text_link"]
    assert links == [items[0].link, items[3].link, items[1].link, items[2].link]
    bold = [
        parsed.text[e.offset : e.offset + e.length] for e in parsed.entities if e.type == "bold"
    ]
    assert bold == ["Дайджест <сегодня>", "Politics", "Economy", "Другое"]


def test_a_big_digest_is_split_within_telegrams_limits() -> None:
    items = [
        piece(n, title=f"{n} " + "Ə" * 180, categories=(f"Category {n % 3}",)) for n in range(300)
    ]
    messages = RENDERER.digest(items, "az", "Gündəlik icmal")
    assert len(messages) > 2
    seen: list[str] = []
    for number, message in enumerate(messages, start=1):
        parsed = parse_html(message)
        assert utf16_len(parsed.text) <= TEXT_LIMIT
        assert len(parsed.entities) <= DIGEST_ENTITIES
        links = [e.url for e in parsed.entities if e.type == "text_link"]
        assert sum(len(link) for link in links if link) <= LINK_BUDGET
        assert parsed.text.startswith(f"Gündəlik icmal ({number}/{len(messages)})")
        # Each message names the category of its first line.
        assert parsed.text.split("\n")[2].startswith("Category ")
        seen += [link for link in links if link]
    # Every piece once, by category (in the order the categories first appear), oldest first.
    assert seen == [i.link for c in range(3) for i in items if i.categories == (f"Category {c}",)]


# ---------------------------------------------------------------------- readiness


async def test_held_posts_never_make_the_bot_look_stuck() -> None:
    """A night of quiet hours: nothing sent for hours, Telegram not asked, 500 posts held."""
    clock = ManualClock()
    health = Health(clock, api_grace=300.0, max_lag=300.0, poll_interval=120.0)
    health.note_unreachable()
    await clock.advance(8 * 3600)
    health.note_outbox(OutboxDepth(pending=500, due=0, oldest_due_at=None, held=500))
    check = health.checks()["delivery"]
    assert check.ok, check.detail
    assert "500 held for digests or quiet hours" in check.detail
    # The same 500 rows not held would be deliveries waiting in vain.
    health.note_outbox(OutboxDepth(pending=500, due=0, oldest_due_at=None))
    assert not health.checks()["delivery"].ok


# ---------------------------------------------------------------------- the store


NOW = 1_767_225_600.0  # 2026-01-01 04:00 in Baku
DAY = 86400.0


@pytest.fixture
async def store(store_target: str):  # type: ignore[no-untyped-def]
    s = await Store.open(store_target)
    yield s
    await s.close()


async def _world(store: Store, *chats: tuple[int, ChatType]) -> int:
    """Chats subscribed to the English feed, whose backlog is read; return the feed id."""
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    for chat_id, kind in chats:
        await store.upsert_chat(chat_id, kind, title=None, username=None, default_lang="en",
                                now=NOW, subscribed=True)  # fmt: skip
    await _poll(store, feed.id, [])
    return feed.id


async def _poll(store: Store, feed_id: int, entries: list, now: float = NOW) -> None:  # type: ignore[type-arg]
    await store.store_poll(
        feed_id, entries, etag=None, last_modified=None, now=now, next_poll_at=now + 60,
        max_age=1e9, backfill=0,
    )  # fmt: skip


async def _heads(store: Store, now: float) -> list[int]:
    heads = await outbox.pending_heads(store, now)
    return [d.chat.id for d in await outbox.due_by_ids(store, [h.delivery_id for h in heads], now)]


async def _set(store: Store, chat_id: int, update: ScheduleUpdate, now: float = NOW) -> None:
    chat = await store.get_chat(chat_id)
    assert chat is not None
    await change_schedule(
        store, chat_id, lambda s: update.applied(s, chat.type), user_id=7, user_name="Ann",
        now=now, default_zone=BAKU,
    )  # fmt: skip


async def _states(store: Store, chat_id: int) -> list[tuple[str, str, str | None]]:
    rows = await store.fetchall(
        "SELECT kind, state, last_error FROM deliveries WHERE chat_id = ? ORDER BY id", (chat_id,)
    )
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


async def test_a_held_chat_gets_nothing_and_is_not_due(store: Store) -> None:
    feed_id = await _world(store, (-100, ChatType.CHANNEL), (200, ChatType.PRIVATE))
    await _set(store, -100, ScheduleUpdate(delivery=DeliveryMode.DIGEST, digest_hour=9))
    hold = await schedule_store.get_hold(store, -100)
    assert hold == Hold(NOW, NOW + 5 * 3600)  # 04:00 now, 09:00 in Baku
    await _poll(store, feed_id, [new_item(1), new_item(2)], now=NOW + 60)
    assert await _heads(store, NOW + 61) == [200]  # the channel's posts wait
    depth = await store.outbox_depth(NOW + 3600)
    assert (depth.pending, depth.due, depth.held) == (4, 2, 2)
    assert depth.oldest_due_at == NOW + 60
    # A notice to the held chat (an admin's message, a digest) still goes out.
    await outbox.enqueue_notice(store, -100, "en", "hello", NOW + 120)
    assert sorted(await _heads(store, NOW + 121)) == [-100, 200]
    # The audit trail has who chose the digest.
    rows = await store.fetchall(
        "SELECT what, old, new, user_name FROM settings_changes WHERE chat_id = -100 ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [("delivery", "immediate", "digest", "Ann")]


async def test_quiet_hours_hold_only_inside_their_window(store: Store) -> None:
    feed_id = await _world(store, (200, ChatType.PRIVATE))
    await _set(store, 200, ScheduleUpdate(quiet=(23, 8)))  # 04:00 in Baku now: inside
    assert (await schedule_store.get_hold(store, 200)).active(NOW)
    await _poll(store, feed_id, [new_item(1)], now=NOW + 60)
    assert await _heads(store, NOW + 61) == []
    await _set(store, 200, ScheduleUpdate(quiet=(1, 2)))  # not now: release what waits
    hold = await schedule_store.get_hold(store, 200)
    assert hold == Hold(hold.start, NOW)  # still held until the scheduler releases it
    assert await _heads(store, NOW + 61) == []
    assert await schedule_store.holds_ended(store, NOW, 10) != []


async def test_a_release_happens_once_and_loses_nothing(store: Store) -> None:
    feed_id = await _world(store, (-100, ChatType.CHANNEL))
    await _set(store, -100, ScheduleUpdate(delivery=DeliveryMode.DIGEST))
    await _poll(store, feed_id, [new_item(1), new_item(2), new_item(3)], now=NOW + 60)
    (held,) = await schedule_store.holds_ended(store, NOW + 5 * 3600, 10)
    waiting = await schedule_store.waiting_posts(store, -100)
    assert [w.item.identity for w in waiting] == ["guid-1", "guid-2", "guid-3"]
    # A piece arrives between the read and the release: it is not in this digest, and waits.
    await _poll(store, feed_id, [new_item(4)], now=NOW + 5 * 3600)
    later = Hold(NOW + 5 * 3600, NOW + 29 * 3600)
    consumed = [w.delivery_id for w in waiting]
    queued = await schedule_store.release(
        store, -100, held.hold, later, NOW + 5 * 3600, digest=["<b>1</b>", "<b>2</b>"],
        consumed=consumed,
    )  # fmt: skip
    assert queued == 2
    # The same release again (a retry, another instance): the hold moved on, nothing is written.
    with pytest.raises(ReleaseConflict):
        await schedule_store.release(
            store, -100, held.hold, later, NOW + 5 * 3600, digest=["<b>1</b>"],
            consumed=consumed,
        )  # fmt: skip
    assert await _states(store, -100) == [
        ("post", "skipped", "digest"), ("post", "skipped", "digest"),
        ("post", "skipped", "digest"), ("post", "pending", None),
        ("notice", "pending", None), ("notice", "pending", None),
    ]  # fmt: skip
    assert await schedule_store.get_hold(store, -100) == later
    # The digest's messages go out in order, one at a time; the waiting piece does not.
    heads = await outbox.pending_heads(store, NOW + 5 * 3600)
    (first,) = await outbox.due_by_ids(store, [h.delivery_id for h in heads], NOW + 5 * 3600)
    assert isinstance(first, outbox.DueMessage) and first.digest and first.text == "<b>1</b>"


async def test_a_release_that_fails_half_way_writes_nothing(store: Store) -> None:
    """A crash inside the release (here: a consumed post was sent meanwhile) rolls it all back:
    the hold, the digest rows and the other posts stay as they were."""
    feed_id = await _world(store, (-100, ChatType.CHANNEL))
    await _set(store, -100, ScheduleUpdate(delivery=DeliveryMode.DIGEST))
    await _poll(store, feed_id, [new_item(1), new_item(2)], now=NOW + 60)
    (held,) = await schedule_store.holds_ended(store, NOW + 5 * 3600, 10)
    waiting = await schedule_store.waiting_posts(store, -100)
    await store.record_outcomes([sent(waiting[0].delivery_id, 5, NOW + 100)])
    before = await _states(store, -100)
    with pytest.raises(ReleaseConflict):
        await schedule_store.release(
            store, -100, held.hold, Hold(NOW, NOW + DAY), NOW + 5 * 3600, digest=["x"],
            consumed=[w.delivery_id for w in waiting],
        )  # fmt: skip
    assert await _states(store, -100) == before
    assert await schedule_store.get_hold(store, -100) == held.hold


class BrokenRenderer(Renderer):
    def digest(self, items: Sequence[Item], lang: str, heading: str) -> list[str]:
        raise RuntimeError("a rendering bug")


def scheduler(store: Store, clock: ManualClock, woken: list[int]) -> DigestScheduler:
    return DigestScheduler(
        store, RENDERER, clock, default_zone=BAKU, on_queued=lambda: woken.append(1)
    )


async def test_the_scheduler_makes_each_digest_once(store: Store) -> None:
    clock = ManualClock(start=NOW)
    feed_id = await _world(store, (-100, ChatType.CHANNEL), (-200, ChatType.CHANNEL))
    for chat_id in (-100, -200):
        await _set(store, chat_id, ScheduleUpdate(delivery=DeliveryMode.DIGEST, digest_hour=9))
    await _poll(store, feed_id, [new_item(n, categories=("Politics",)) for n in (1, 2)], NOW + 1)
    woken: list[int] = []
    one, two = scheduler(store, clock, woken), scheduler(store, clock, woken)
    assert await one.release_due() == (0, False)  # 04:00: not yet
    await clock.advance(5 * 3600)
    # Two schedulers at once (two instances, or a retry racing the first): one digest each.
    results = await asyncio.gather(one.release_due(), two.release_due())
    assert sum(released for released, _ in results) == 2
    assert one.digests + two.digests == 2
    for chat_id in (-100, -200):
        states = await _states(store, chat_id)
        assert states.count(("notice", "pending", None)) == 1, states
        assert states.count(("post", "skipped", "digest")) == 2
        assert (await schedule_store.get_hold(store, chat_id)).until == NOW + 29 * 3600
    # Nothing new: the next digest time passes without a message.
    await clock.advance(DAY)
    await one.release_due()
    assert (await _states(store, -100)).count(("notice", "pending", None)) == 1
    assert (await schedule_store.get_hold(store, -100)).until == NOW + 53 * 3600


@pytest.mark.parametrize("pieces", [QUIET_RELEASE_MAX, QUIET_RELEASE_MAX + 1])
async def test_quiet_hours_release_a_few_one_by_one_and_more_as_a_digest(
    store: Store, pieces: int
) -> None:
    clock = ManualClock(start=NOW)  # 04:00 in Baku, inside 23–8
    feed_id = await _world(store, (200, ChatType.PRIVATE))
    await _set(store, 200, ScheduleUpdate(quiet=(23, 8)))
    await _poll(store, feed_id, [new_item(n) for n in range(1, pieces + 1)], NOW + 60)
    woken: list[int] = []
    await clock.advance(4 * 3600)  # 08:00
    assert await scheduler(store, clock, woken).release_due() == (1, False)
    assert woken == [1]
    states = await _states(store, 200)
    if pieces <= QUIET_RELEASE_MAX:
        assert states == [("post", "pending", None)] * pieces
        assert len(await _heads(store, clock.now())) == 1
        # Released now: readiness counts their wait from now, not from the night.
        depth = await store.outbox_depth(clock.now())
        assert (depth.due, depth.held, depth.oldest_due_at) == (pieces, 0, clock.now())
    else:
        assert states == [("post", "skipped", "digest")] * pieces + [("notice", "pending", None)]
    hold = await schedule_store.get_hold(store, 200)
    assert hold.start == at(BAKU, 2026, 1, 1, 23) and not hold.active(clock.now())


async def test_a_paused_chat_gets_no_digest(store: Store) -> None:
    clock = ManualClock(start=NOW)
    feed_id = await _world(store, (-100, ChatType.CHANNEL))
    await _set(store, -100, ScheduleUpdate(delivery=DeliveryMode.DIGEST))
    await _poll(store, feed_id, [new_item(1)], NOW + 60)
    await store.update_chat(-100, NOW + 70, paused=True)
    await clock.advance(5 * 3600)
    assert await scheduler(store, clock, []).release_due() == (1, False)
    assert ("notice", "pending", None) not in await _states(store, -100)
    assert (await schedule_store.get_hold(store, -100)).until == NOW + 29 * 3600


async def test_holds_are_found_by_when_they_end(store: Store) -> None:
    await _world(store, *((-100 - n, ChatType.CHANNEL) for n in range(5)))
    for n in range(5):
        await _set(store, -100 - n, ScheduleUpdate(delivery=DeliveryMode.DIGEST, digest_hour=5 + n))
    ended = await schedule_store.holds_ended(store, NOW + 7 * 3600, 2)
    assert [h.chat.id for h in ended] == [-100, -101]
    assert isinstance(ended[0], Held) and ended[0].chat.settings.digest_hour == 5
    assert await schedule_store.next_hold_end(store) == NOW + 3600
    assert await schedule_store.next_hold_end(store, exclude=[-100]) == NOW + 2 * 3600


async def test_a_release_that_crashes_before_its_commit_is_done_again_later(store: Store) -> None:
    """Read, render, crash (a bug in rendering): nothing is written, the chat is tried again
    after a while (not in a tight loop), and then gets its one digest."""
    clock = ManualClock(start=NOW)
    feed_id = await _world(store, (-100, ChatType.CHANNEL))
    await _set(store, -100, ScheduleUpdate(delivery=DeliveryMode.DIGEST))
    await _poll(store, feed_id, [new_item(1), new_item(2)], NOW + 60)
    broken = scheduler(store, clock, [])
    broken.renderer = BrokenRenderer(Translator(), "Asia/Baku", 600)
    await clock.advance(5 * 3600)
    before = await _states(store, -100)
    assert await broken.release_due() == (0, False)
    assert await _states(store, -100) == before
    assert (await schedule_store.get_hold(store, -100)).until == NOW + 5 * 3600
    assert await broken.release_due() == (0, False)  # not retried at once
    broken.renderer = RENDERER
    await clock.advance(61)
    assert await broken.release_due() == (1, False)
    assert (await _states(store, -100))[-1] == ("notice", "pending", None)
