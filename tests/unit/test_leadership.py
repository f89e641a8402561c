"""The leader lease and the fence, on both back ends: one holder at a time, the epoch moves with
the holder, and a holder that cannot vouch for its lease sends nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.leadership import STANDBY_SHARE, TRUST, Leadership, rate_share
from storage import lease
from storage.store import Store
from tests.fakes.clock import ManualClock


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    s = await Store.open(store_target)
    yield s
    await s.close()


async def test_one_holder_at_a_time_and_the_epoch_moves_with_the_holder(store: Store) -> None:
    assert await lease.take(store, "a", 30) == 1
    assert await lease.take(store, "b", 30) is None  # a holds it
    assert await lease.take(store, "a", 30) == 1  # renewing keeps the epoch
    assert await lease.take(store, "a", -1) == 1  # a renewal that expires at once...
    assert await lease.take(store, "b", 30) == 2  # ...lets b take it, with a new epoch
    assert await lease.take(store, "a", 30) is None
    async with store.reading() as conn:
        assert await lease.holds(conn, "b", 2)
        assert not await lease.holds(conn, "a", 1)
        assert not await lease.holds(conn, "b", 1)  # the right holder at a stale epoch


async def test_a_released_lease_is_taken_at_once(store: Store) -> None:
    assert await lease.take(store, "a", 30) == 1
    await lease.release(store, "a")
    assert await lease.take(store, "b", 30) == 2
    current = await lease.current(store)
    assert current is not None and current[:2] == ("b", 2) and 0 < current[2] <= 30


async def test_the_outcome_write_is_fenced_but_sends_are_recorded(store: Store) -> None:
    """A deposed leader's sends are facts (recorded); anything else it would write is not."""
    from storage.models import ChatType, DeliveryState
    from tests import factories

    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    for chat in (1, 2):
        await store.upsert_chat(
            chat, ChatType.PRIVATE, title=None, username=None, default_lang="en", now=1.0,
            subscribed=True,
        )  # fmt: skip
    await store.store_poll(feed.id, [factories.new_item(1)], etag=None, last_modified=None,
                           now=1.0, next_poll_at=2.0, max_age=1e9, backfill=0)  # fmt: skip
    await store.store_poll(feed.id, [factories.new_item(1), factories.new_item(2)], etag=None,
                           last_modified=None, now=2.0, next_poll_at=3.0, max_age=1e9,
                           backfill=0)  # fmt: skip
    item = (await store.latest_items(None, 1))[0]
    first = await store.get_delivery(item.id, 1)
    second = await store.get_delivery(item.id, 2)
    assert first is not None and second is not None
    assert await lease.take(store, "old", -1) == 1
    assert await lease.take(store, "new", 30) == 2
    held = await store.record_outcomes(
        [factories.sent(first.id, 77, 3.0), factories.retry(second.id, "oops", 3.0, 60.0)],
        leader=("old", 1),
    )
    assert held is False
    after_first = await store.get_delivery(item.id, 1)
    after_second = await store.get_delivery(item.id, 2)
    assert after_first is not None and after_first.state is DeliveryState.SENT
    assert after_second is not None and after_second.attempts == 0  # the retry was not written


async def test_leadership_is_elected_and_deposed_when_another_takes_the_lease(
    store: Store,
) -> None:
    clock = ManualClock()
    elected: list[int] = []
    mine = Leadership(store, clock, timeout=15, holder="me", on_elected=elected.append)
    stop = asyncio.Event()
    task = asyncio.create_task(mine.run(stop))
    await asyncio.wait_for(mine.elected.wait(), 10)
    assert elected == [1] and mine.role == "leader" and mine.valid()
    assert await mine.confirm()
    # Another instance took the lease (it had expired): the check before a batch deposes us.
    assert await lease.take(store, "me", -1) == 1
    assert await lease.take(store, "other", 15) == 2
    assert not await mine.confirm()
    assert mine.deposed.is_set() and mine.role == "standby" and not mine.valid()
    await clock.advance(5.1)
    await asyncio.wait_for(task, 10)  # and it stops renewing
    assert await lease.take(store, "other", 15) == 2


async def test_a_frozen_leader_distrusts_its_lease_before_anyone_can_take_it(
    store: Store,
) -> None:
    clock = ManualClock()
    mine = Leadership(store, clock, timeout=15, holder="me")
    stop = asyncio.Event()
    task = asyncio.create_task(mine.run(stop))
    await asyncio.wait_for(mine.elected.wait(), 10)
    # SIGSTOP: nothing runs, but the monotonic clock moves on past the local trust.
    clock._mono += 15 * TRUST + 0.01  # a frozen process: time passed, nothing ran
    assert not mine.valid()  # the first send after waking is refused before it leaves
    # Meanwhile the lease expired in the database and another instance took it.
    assert await lease.take(store, "me", -1) == 1
    assert await lease.take(store, "other", 15) == 2
    await clock.advance(5.1)  # the renewal after waking finds it gone
    await asyncio.wait_for(mine.deposed.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)


def test_the_rate_shares_never_add_up_to_more_than_the_whole() -> None:
    for instances in range(1, 9):
        total = rate_share("leader", instances) + (instances - 1) * rate_share("standby", instances)
        assert total <= 1.0 + 1e-9
    assert rate_share("leader", 1) == 1.0
    assert rate_share("leader", 3) == pytest.approx(1 - STANDBY_SHARE)
    assert rate_share("standby", 3) == pytest.approx(STANDBY_SHARE / 2)
