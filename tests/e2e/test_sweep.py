"""The publisher's sweep on virtual time, against the fake Bot API: a chat's order holds while
its head waits and the sweep goes on past it in small batches, a fan-out queued a chunk at a
time is sent from its first chunk on, and a held chat's posts are parked out of the sweep and
go out, in order, once the hold ends."""

from __future__ import annotations

import re
from pathlib import Path

from storage import schedule as schedule_store
from storage.models import PARKED, ChatType, Hold
from storage.schedule import ScheduleChange
from tests.e2e.test_publisher import WALL, Engine, engine
from tests.factories import new_item
from tests.fakes.botapi import ApiCall

PRIVATE = [80_000_000 + i for i in range(1, 41)]


def _private(ids: list[int]) -> list[tuple[int, ChatType]]:
    return [(chat_id, ChatType.PRIVATE) for chat_id in ids]


def _pieces(e: Engine, chat_id: int) -> list[int]:
    return [_piece(call) for call in e.sends(chat_id)]


def _piece(call: ApiCall) -> int:
    match = re.search(r"Piece (\d+)", call.text or "")
    assert match is not None
    return int(match.group(1))


async def test_a_chats_later_piece_waits_while_its_head_backs_off_and_the_sweep_goes_on(
    db_path: Path,
) -> None:
    failing, *others = PRIVATE[:20]
    async with engine(db_path, chats=_private(PRIVATE[:20])) as e:
        e.publisher.batch_size = 3  # a sweep of many small batches, past the waiting chat
        e.api.fail(None, chat_id=failing, error_code=502, description="Bad Gateway")
        await e.publish(1, 2, 3)
        await e.until("everyone's three pieces", lambda: len(e.sends()) >= 60, within=60)
        await e.settled()

        for chat_id in PRIVATE[:20]:
            assert _pieces(e, chat_id) == [1, 2, 3]  # in order, each once
        first_try = next(c for c in e.api.calls if c.chat_id == failing)
        assert first_try.error_code == 502
        # While its first piece backed off (5 s at least), the others went on.
        assert max(c.at for c in e.sends() if c.chat_id in others) < first_try.at + 5
        assert e.sends(failing)[0].at >= first_try.at + 5


async def test_a_fan_out_is_sent_from_its_first_chunk_on(db_path: Path) -> None:
    async with engine(db_path, chats=_private(PRIVATE)) as e:
        e.store.fan_out_chunk = 5  # 8 transactions for 40 chats
        feed = await e.store.ensure_feed("https://caliber.az/en/rss", "en")
        poll = {"etag": None, "last_modified": None, "max_age": 1e9, "backfill": 0}
        await e.store.store_poll(feed.id, [], now=WALL, next_poll_at=WALL, **poll)  # type: ignore[arg-type]
        queued_at: list[int] = []

        def woken() -> None:
            queued_at.append(len(e.sends()))
            e.publisher.wake()

        outcome = await e.store.store_poll(
            feed.id, [new_item(1)], now=WALL, next_poll_at=WALL, on_queued=woken, **poll,  # type: ignore[arg-type]
        )  # fmt: skip
        assert outcome.queued == 40 and len(queued_at) == 8
        await e.until("everyone served", lambda: len(e.sends()) >= 40, within=30)
        assert sorted(c.chat_id for c in e.sends()) == PRIVATE


async def test_a_held_chats_posts_are_parked_and_go_out_in_order_when_the_hold_ends(
    db_path: Path,
) -> None:
    held, *others = PRIVATE[:6]
    async with engine(db_path, chats=_private(PRIVATE[:6])) as e:
        await schedule_store.change_schedule(
            e.store, held, lambda chat, _: ScheduleChange(chat.settings, Hold(WALL, None), ()),
            user_id=None, user_name=None, now=WALL,
        )  # fmt: skip
        await e.publish(1, 2)
        await e.until("the others served", lambda: len(e.sends()) >= 10, within=30)
        await e.settled()
        assert e.sends(held) == []
        rows = await e.store.fetchall(
            "SELECT priority FROM deliveries WHERE chat_id = ? AND state = 'pending'", (held,)
        )
        assert [int(r[0]) for r in rows] == [2 + PARKED, 2 + PARKED]  # out of the sweep

        # The hold ends (a change of schedule, say): the next sweep brings the posts back.
        await schedule_store.change_schedule(
            e.store, held, lambda chat, _: ScheduleChange(chat.settings, Hold(), ()),
            user_id=None, user_name=None, now=e.clock.now(),
        )  # fmt: skip
        e.publisher.wake()
        await e.until("the held chat served", lambda: len(e.sends(held)) >= 2, within=30)
        assert _pieces(e, held) == [1, 2]
        assert all(_pieces(e, chat_id) == [1, 2] for chat_id in others)
