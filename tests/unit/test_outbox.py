"""The outbox at a million subscribers, on SQLite and PostgreSQL: the fan-out queued a chunk of
chats per transaction and resumed after a crash, the publisher's sweep in dispatch order, held
chats' posts parked out of it, the indexes a row pays for, and retention by ids."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from storage import follows, outbox
from storage import schedule as schedule_store
from storage.follows import TopicTerms
from storage.models import ChatType, DeliveryState, DueDelivery, FanOut, Hold
from storage.schedule import ScheduleChange
from storage.store import Store
from tests.factories import new_item, retry, sent

NOW = 1_767_225_600.0
DAY = 86400.0
IRAN = TopicTerms("iran", (("en0iran",),))


@pytest.fixture
async def store(store_target: str):  # type: ignore[no-untyped-def]
    s = await Store.open(store_target)
    yield s
    await s.close()


@pytest.fixture
def another_target(store_target: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A second, empty store on the back end of `store_target`."""
    if store_target.startswith("postgresql"):
        url: str = request.getfixturevalue("pg_new_database")()
        return url
    return str(tmp_path / "another.sqlite3")


async def _chats(
    store: Store, *ids: int, kind: ChatType = ChatType.PRIVATE, subscribed: bool = True
) -> None:
    for chat_id in ids:
        await store.upsert_chat(
            chat_id, kind, title=None, username=None, default_lang="en", now=NOW,
            subscribed=subscribed,
        )  # fmt: skip


async def _feed(store: Store, url: str = "https://caliber.az/en/rss") -> int:
    feed = await store.ensure_feed(url, "en")
    await _poll(store, feed.id, [])  # the backlog: seen, not queued
    return feed.id


async def _poll(store: Store, feed_id: int, numbers: list[int], **options):  # type: ignore[no-untyped-def]
    return await store.store_poll(
        feed_id, [new_item(n) for n in numbers], etag=None, last_modified=None, now=NOW,
        next_poll_at=NOW + 60, max_age=2 * DAY, backfill=0, **options,
    )  # fmt: skip


async def _pairs(store: Store) -> list[tuple[int, int]]:
    """(item, chat) of every post row, duplicates kept."""
    rows = await store.fetchall(
        "SELECT item_id, chat_id FROM deliveries WHERE kind = 'post' ORDER BY item_id, chat_id"
    )
    return [(int(r[0]), int(r[1])) for r in rows]


async def _jobs(store: Store) -> int:
    row = await store.fetchone("SELECT COUNT(*) FROM fan_out_jobs")
    assert row is not None
    return int(row[0])


class Crash(Exception):
    """The process dying between two of the fan-out's transactions."""


# ---------------------------------------------------------------------- the fan-out in chunks


async def test_a_fan_out_is_queued_a_chunk_at_a_time_and_wakes_the_publisher_each_time(
    store: Store,
) -> None:
    chats = list(range(101, 111))
    await _chats(store, *chats)
    feed_id = await _feed(store)
    store.fan_out_chunk = 3  # rows per transaction: 3 chats of one piece
    wakes: list[None] = []
    outcome = await _poll(store, feed_id, [1], on_queued=lambda: wakes.append(None))
    assert outcome.queued == 10
    assert len(wakes) == 4  # 3 + 3 + 3 + 1 chats
    assert await _pairs(store) == [(1, c) for c in chats]
    assert await _jobs(store) == 0  # the job goes with its last chunk


async def test_a_chunk_slower_than_its_budget_halves_the_next_and_a_quick_one_doubles_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk's size follows its pace (a busy disk, pages freed all over the file), since
    its time is what every other writer waits for; the fan-out still queues each pair once."""
    import storage.store as store_module

    chats = list(range(301, 321))
    await _chats(store, *chats)
    feed_id = await _feed(store)
    store.fan_out_chunk = 8
    monkeypatch.setattr(store_module, "_MIN_CHUNK", 1)
    monkeypatch.setattr(store_module, "_CHUNK_SECONDS", 1e-9)  # every chunk is too slow
    chunks: list[None] = []
    await _poll(store, feed_id, [1], on_queued=lambda: chunks.append(None))
    assert len(chunks) == 9  # 8, 4, 2, then 1 chat at a time: 20 chats (fixed: 3 chunks)
    monkeypatch.setattr(store_module, "_CHUNK_SECONDS", 1e9)  # every chunk is quick
    chunks.clear()
    await _poll(store, feed_id, [2], on_queued=lambda: chunks.append(None))
    assert len(chunks) == 5  # from the last pace up: 1, 2, 4, 8 (fan_out_chunk's cap), 5
    assert await _pairs(store) == [(item, c) for item in (1, 2) for c in chats]


async def test_a_fan_out_cut_between_chunks_resumes_where_it_stopped_and_queues_no_pair_twice(
    store_target: str,
) -> None:
    chats = list(range(201, 210))
    store = await Store.open(store_target)
    await _chats(store, *chats)
    feed_id = await _feed(store)
    store.fan_out_chunk = 4  # two pieces: two chats a chunk

    def crash() -> None:
        raise Crash

    with pytest.raises(Crash):
        await _poll(store, feed_id, [1, 2], on_queued=crash)
    # The first chunk was committed before the crash; the job says what is left.
    assert await _pairs(store) == [(1, 201), (1, 202), (2, 201), (2, 202)]
    assert await _jobs(store) == 1
    await store.close()

    # A new process: its first poll (nothing new in the feed) finishes the job first.
    store = await Store.open(store_target)
    store.fan_out_chunk = 4
    woken: list[None] = []
    outcome = await _poll(store, feed_id, [1, 2], on_queued=lambda: woken.append(None))
    assert outcome.queued == 0 and len(woken) == 4  # its own pieces are known; 7 chats left
    assert await _pairs(store) == [(item, c) for item in (1, 2) for c in chats]
    assert await _jobs(store) == 0
    counts = await store.delivery_counts()
    assert counts[DeliveryState.PENDING] == 18
    await store.close()


async def test_two_expanders_of_one_job_never_queue_a_chunk_twice(store_target: str) -> None:
    """An instance deposed mid-job and its successor (or two tasks) expanding at once: the
    compare-and-set on the job's cursor gives each chunk to one of them."""
    chats = list(range(301, 341))
    first = await Store.open(store_target)
    await _chats(first, *chats)
    feed_id = await _feed(first)
    first.fan_out_chunk = 1

    def crash() -> None:
        raise Crash

    with pytest.raises(Crash):
        await _poll(first, feed_id, [1], on_queued=crash)
    second = await Store.open(store_target)
    second.fan_out_chunk = 1
    try:
        done = await asyncio.gather(first.expand_fan_outs(), second.expand_fan_outs())
        assert sum(d.get(1, 0) for d in done) == len(chats) - 1  # each chunk counted once
        assert await _pairs(first) == [(1, c) for c in chats]
    finally:
        await second.close()
        await first.close()


async def test_filters_followers_and_repeated_links_hold_whatever_the_chunk(
    store_target: str, another_target: str
) -> None:
    """The same polls queued one chat per transaction and all at once give the same rows."""
    results = []
    for target, chunk in ((store_target, 1), (another_target, 10_000)):
        store = await Store.open(target)
        store.fan_out_chunk = chunk
        await _chats(store, 1, 2, 3, 4)
        await _chats(store, 5, subscribed=False)
        await store.update_chat(3, NOW, paused=True)
        follow, _ = await follows.add(
            store, 5, "iran", IRAN, any_lang=False, analyzer=1, limit=20, now=NOW
        )
        main = await _feed(store)
        section = await _feed(store, "https://caliber.az/en/analytics/rss")
        # Pieces 1 and 2 share a link; piece 1 again in the section's feed reaches nobody twice.
        entries = [new_item(1), new_item(2, link="https://caliber.az/en/post/1"), new_item(3)]
        await store.store_poll(
            main, entries, etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
            max_age=2 * DAY, backfill=0,
            fan_out=FanOut(skips={"guid-3": {2: "excluded: war"}},
                           topics={"guid-1": [follow.topic_id]}),
        )  # fmt: skip
        await store.store_poll(
            section, [new_item(1, identity="other")], etag=None, last_modified=None, now=NOW,
            next_poll_at=NOW, max_age=2 * DAY, backfill=0,
        )  # fmt: skip
        rows = await store.fetchall(
            "SELECT i.identity, d.chat_id, d.state, d.last_error FROM deliveries d "
            "JOIN items i ON i.id = d.item_id ORDER BY i.identity, d.chat_id"
        )
        results.append([tuple(r) for r in rows])
        await store.close()
    assert results[0] == results[1]
    assert results[0] == [
        ("guid-1", 1, "pending", None), ("guid-1", 2, "pending", None),
        ("guid-1", 3, "skipped", "paused"), ("guid-1", 4, "pending", None),
        ("guid-1", 5, "pending", None),
        ("guid-3", 1, "pending", None), ("guid-3", 2, "skipped", "excluded: war"),
        ("guid-3", 3, "skipped", "paused"), ("guid-3", 4, "pending", None),
    ]  # fmt: skip


# ---------------------------------------------------------------------- the sweep


async def test_the_sweep_reads_in_dispatch_order_a_batch_at_a_time(store: Store) -> None:
    await _chats(store, 401, 402)
    await _chats(store, -1_001_000_000_401, kind=ChatType.CHANNEL)
    await _chats(store, -1_002_000_000_401, kind=ChatType.SUPERGROUP)
    feed_id = await _feed(store)
    await _poll(store, feed_id, [1, 2])
    notice = await outbox.enqueue_notice(store, 402, "en", "hello", NOW)
    read: list[outbox.Pending] = []
    after = None
    while batch := await outbox.sweep(store, after, NOW, 3):
        assert len(batch) <= 3
        read += batch
        after = batch[-1]
    order = [(p.chat_id, p.item_id) for p in read]
    assert order == [
        (-1_001_000_000_401, 1), (-1_001_000_000_401, 2),  # channels
        (-1_002_000_000_401, 1), (-1_002_000_000_401, 2),  # groups
        (402, None),  # then private chats: the notice first,
        (401, 1), (402, 1), (401, 2), (402, 2),  # then the oldest piece
    ]  # fmt: skip
    assert read[4].id == notice and not any(p.held for p in read)


async def test_a_row_behind_its_chats_waiting_head_is_not_due(store: Store) -> None:
    await _chats(store, 501)
    feed_id = await _feed(store)
    await _poll(store, feed_id, [1, 2])
    first, second = await outbox.sweep(store, None, NOW, 10)
    ((due, more),) = await outbox.due_heads(store, [first.id, second.id], NOW)
    assert isinstance(due, DueDelivery) and due.delivery.id == first.id
    assert more  # the head, with a piece behind it
    await store.record_outcomes([retry(first.id, "500", NOW, NOW + 60)], durable=False)
    assert await outbox.due_heads(store, [first.id, second.id], NOW + 1) == []
    # A notice queued meanwhile goes first: the piece is no longer the chat's head.
    await store.record_outcomes([sent(first.id, 7, NOW + 61)], durable=False)
    notice = await outbox.enqueue_notice(store, 501, "en", "hello", NOW + 62)
    heads = await outbox.due_heads(store, [second.id, notice], NOW + 62)
    assert [(d.id, more) for d, more in heads] == [(notice, True)]  # type: ignore[union-attr]


async def _hold(store: Store, chat_id: int, hold: Hold) -> None:
    await schedule_store.change_schedule(
        store, chat_id, lambda chat, _: ScheduleChange(chat.settings, hold, ()),
        user_id=None, user_name=None, now=NOW,
    )  # fmt: skip


async def test_a_held_chats_posts_are_parked_out_of_the_sweep_until_the_hold_ends(
    store: Store,
) -> None:
    await _chats(store, 601, 602)
    feed_id = await _feed(store)
    await _hold(store, 601, Hold(NOW, NOW + 3600))
    await _poll(store, feed_id, [1, 2])
    read = await outbox.sweep(store, None, NOW + 1, 10)
    assert [(p.chat_id, p.held) for p in read] == [
        (601, True),
        (602, False),
        (601, True),
        (602, False),
    ]
    assert await outbox.park(store, [601], NOW + 1) == 2
    assert [p.chat_id for p in await outbox.sweep(store, None, NOW + 1, 10)] == [602, 602]
    # Still held: nothing comes back, and a notice to the held chat is swept as usual.
    assert await outbox.unpark(store, NOW + 2) == 0
    await outbox.enqueue_notice(store, 601, "en", "digest", NOW + 2)
    assert [p.chat_id for p in await outbox.sweep(store, None, NOW + 2, 10)] == [601, 602, 602]
    # The hold moves on (a release): the posts come back in their place and order.
    await _hold(store, 601, Hold(NOW + DAY, NOW + DAY + 3600))
    assert await outbox.unpark(store, NOW + 3) == 2
    read = await outbox.sweep(store, None, NOW + 3, 10)
    assert [(p.chat_id, p.item_id, p.priority) for p in read] == [
        (601, None, 2),
        (601, 1, 2),
        (602, 1, 2),
        (601, 2, 2),
        (602, 2, 2),
    ]
    assert await outbox.unpark(store, NOW + 4) == 0  # and the chat is no longer parked


async def test_a_parked_chat_that_migrates_keeps_its_hold_or_leaves_it_behind(
    store: Store,
) -> None:
    """A group that becomes a supergroup: under a new id its hold and parked posts move with
    it; into a chat already known, its posts come back (the hold was the old chat's)."""
    await _chats(store, -701, -702, kind=ChatType.GROUP)
    await _chats(store, -1_001_000_000_702, kind=ChatType.SUPERGROUP, subscribed=False)
    feed_id = await _feed(store)
    for chat_id in (-701, -702):
        await _hold(store, chat_id, Hold(NOW, NOW + 3600))
    await _poll(store, feed_id, [1])
    assert await outbox.park(store, [-701, -702], NOW + 1) == 2
    await store.migrate_chat(-701, -1_001_000_000_701, NOW + 2)  # a new id
    await store.migrate_chat(-702, -1_001_000_000_702, NOW + 2)  # a known one
    assert [(p.chat_id, p.priority) for p in await outbox.sweep(store, None, NOW + 3, 10)] == [
        (-1_001_000_000_702, 1)
    ]
    await _hold(store, -1_001_000_000_701, Hold())  # its hold is over: the posts come back
    assert await outbox.unpark(store, NOW + 4) == 1
    rows = await store.fetchall("SELECT chat_id, priority FROM deliveries ORDER BY chat_id")
    assert [tuple(r) for r in rows] == [(-1_001_000_000_702, 1), (-1_001_000_000_701, 1)]


# ---------------------------------------------------------------------- bytes and retention


async def test_the_outbox_keeps_only_the_indexes_its_queries_use(store: Store) -> None:
    if store.dialect == "sqlite":
        rows = await store.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' "
            "AND sql IS NOT NULL"
        )
    else:
        rows = await store.fetchall(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries' "
            "AND indexname != 'deliveries_pkey'"
        )
    assert sorted(str(r[0]) for r in rows) == [
        "deliveries_chat", "deliveries_pending", "deliveries_pending_messages", "deliveries_post",
    ]  # fmt: skip


async def test_a_delivery_costs_well_under_200_bytes_and_retention_gives_them_back(
    db_path: Path,
) -> None:
    chats = 5000
    store = await Store.open(db_path)
    feed_id = await _feed(store)
    _chats_fast(db_path, chats)
    await _poll(store, feed_id, [1])
    grown = _outbox_bytes(db_path)
    # At most 200 bytes is the promise; the indexes before migration 15 took it to 160.
    assert grown / chats <= 130, f"{grown / chats:.0f} bytes a delivery"
    async with store.transaction() as conn:
        await conn.execute("UPDATE deliveries SET state = 'sent', sent_at = ?", (NOW,))
    assert await store.prune_deliveries(NOW + 1) == chats
    assert _outbox_bytes(db_path) < grown / 10  # the pages are free for the next rows
    size = _database_bytes(db_path)
    await _poll(store, feed_id, [1, 2])
    await store.close()
    assert _database_bytes(db_path) <= size * 1.05  # the next fan-out reused them


def _database_bytes(db_path: Path) -> int:
    """The database's size, free pages included (the file's, once the WAL is folded in)."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def _chats_fast(db_path: Path, count: int) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany(
            "INSERT INTO chats (id, type, lang, languages, active, subscribed, created_at, "
            "updated_at) VALUES (?, 'private', 'en', 'en', 1, 1, ?, ?)",
            [(10_000_000 + n, NOW, NOW) for n in range(count)],
        )


def _outbox_bytes(db_path: Path) -> int:
    """The bytes of the deliveries table and its indexes (SQLite's dbstat)."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        row = conn.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = 'deliveries' OR name IN "
            "(SELECT name FROM sqlite_master WHERE tbl_name = 'deliveries')"
        ).fetchone()
    return int(row[0])


async def test_retention_walks_the_ids_and_stops_at_the_first_recent_row(store: Store) -> None:
    await _chats(store, 801, 802)
    feed_id = await _feed(store)
    await store.store_poll(
        feed_id, [new_item(1)], etag=None, last_modified=None, now=NOW - 40 * DAY,
        next_poll_at=NOW, max_age=3650 * DAY, backfill=0,
    )  # fmt: skip
    await _poll(store, feed_id, [1, 2])
    old = await store.fetchall("SELECT id FROM deliveries WHERE item_id = 1 ORDER BY id")
    recent = await store.fetchall("SELECT id FROM deliveries WHERE item_id = 2 ORDER BY id")
    await store.record_outcomes(
        [sent(int(old[0][0]), 1, NOW), sent(int(recent[0][0]), 2, NOW)], durable=False
    )
    assert await store.prune_deliveries(NOW - 30 * DAY, chunk=1) == 1  # the old sent one
    assert await _pairs(store) == [(1, 802), (2, 801), (2, 802)]
    assert await store.delivery_counts(NOW - DAY) == {
        DeliveryState.PENDING: 1, DeliveryState.SENT: 1, DeliveryState.FAILED: 0,
        DeliveryState.CANCELLED: 0, DeliveryState.SKIPPED: 0,
    }  # fmt: skip
