"""Storage on a real SQLite file: schema, dedupe, backlog, outbox, migration of chats."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import outbox
from storage.migrations import HISTORY_SINCE, MIGRATIONS
from storage.models import (
    ChatSettings,
    ChatType,
    DeliveryState,
    DueDelivery,
    FanOut,
    ItemOrigin,
    PostStyle,
)
from storage.store import Store
from tests.factories import new_item, retry, sent

NOW = 1_767_225_600.0
DAY = 86400.0


@pytest.fixture
async def store(store_target: str):  # type: ignore[no-untyped-def]
    """A store on each back end: every test that takes it runs on SQLite and on PostgreSQL."""
    s = await Store.open(store_target)
    yield s
    await s.close()


async def _poll(store: Store, feed_id: int, entries, *, backfill: int = 0, now: float = NOW):  # type: ignore[no-untyped-def]
    return await store.store_poll(
        feed_id, entries, etag='"e"', last_modified=None, now=now,
        next_poll_at=now + 60, max_age=2 * DAY, backfill=backfill,
    )  # fmt: skip


async def _subscriber(
    store: Store, chat_id: int, kind: ChatType = ChatType.CHANNEL, lang: str = "en"
):  # type: ignore[no-untyped-def]
    return await store.upsert_chat(
        chat_id, kind, title=f"chat {chat_id}", username=None, default_lang=lang, now=NOW,
        subscribed=True,
    )  # fmt: skip


async def _due(store: Store, now: float) -> list[DueDelivery]:
    """The deliveries the publisher would take now: each chat's queue head, if due."""
    heads = await outbox.pending_heads(store)
    return await outbox.due_by_ids(store, [h.delivery_id for h in heads], now)


async def test_schema_is_versioned_and_pragmas_set(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATIONS[-1].version
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # Reopening applies nothing twice.
    store = await Store.open(db_path)
    await store.close()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    await (await Store.open(db_path)).close()  # create the file
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        await Store.open(db_path)


async def test_the_migration_history_is_a_table(db_path: Path) -> None:
    """Every migration has a row (the record PostgreSQL keeps too); user_version follows it."""
    store = await Store.open(db_path)
    await store.close()
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATIONS[-1].version
    assert [(v, n) for v, n, _ in rows] == [(m.version, m.name) for m in MIGRATIONS]
    assert all(at is not None for _, _, at in rows)  # all ran now, so all are dated


async def test_a_store_from_before_the_history_table_gets_its_history(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        for migration in MIGRATIONS[: HISTORY_SINCE - 1]:
            conn.executescript(migration.sql)
        conn.execute(f"PRAGMA user_version = {HISTORY_SINCE - 1}")
    store = await Store.open(db_path)
    await store.close()
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT version, applied_at IS NOT NULL FROM schema_migrations ORDER BY version"
        ).fetchall()
    # The older bot's migrations are known but undated; the ones run now are dated.
    assert rows == [(m.version, m.version >= HISTORY_SINCE) for m in MIGRATIONS]


async def test_first_poll_is_backlog_then_new_items_queue_once(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, -100)
    first = await _poll(store, feed.id, [new_item(1), new_item(2)])
    assert [i.origin for i in first.new_items] == [ItemOrigin.BACKLOG, ItemOrigin.BACKLOG]
    assert first.queued == 0

    second = await _poll(store, feed.id, [new_item(1), new_item(2), new_item(3), new_item(4)])
    assert [i.identity for i in second.new_items] == ["guid-3", "guid-4"]
    assert second.queued == 2
    due = await _due(store, NOW)
    # Only the head of the chat's queue, oldest first.
    assert [d.item.identity for d in due] == ["guid-3"]

    again = await _poll(store, feed.id, [new_item(4), new_item(3)])
    assert again.new_items == () and again.queued == 0


async def test_backfill_posts_the_newest_n(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, -100)
    outcome = await _poll(store, feed.id, [new_item(n) for n in range(1, 6)], backfill=2)
    assert [i.origin for i in outcome.new_items] == [ItemOrigin.BACKLOG] * 3 + [ItemOrigin.NEW] * 2
    assert outcome.queued == 2


async def test_edited_item_is_updated_not_requeued(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, -100)
    await _poll(store, feed.id, [])
    await _poll(store, feed.id, [new_item(1)])
    edited = await _poll(store, feed.id, [new_item(1, title="Piece 1, corrected")])
    assert edited.queued == 0 and edited.new_items == ()
    assert [i.title for i in edited.updated_items] == ["Piece 1, corrected"]
    counts = await store.delivery_counts()
    assert counts[DeliveryState.PENDING] == 1


async def test_old_items_are_stored_not_queued(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, -100)
    await _poll(store, feed.id, [])
    outcome = await _poll(
        store, feed.id, [new_item(1, published_at=NOW - 3 * DAY), new_item(2, published_at=NOW)]
    )
    assert [i.origin for i in outcome.new_items] == [ItemOrigin.TOO_OLD, ItemOrigin.NEW]
    assert outcome.queued == 1


async def test_identity_is_compared_in_full(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _poll(store, feed.id, [])
    long_a = "x" * 5000 + "a"
    long_b = "x" * 5000 + "b"
    outcome = await _poll(
        store, feed.id, [new_item(1, identity=long_a), new_item(2, identity=long_b)]
    )
    assert len(outcome.new_items) == 2


async def test_language_routing_priority_and_paused(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/ru/rss", "ru")
    await _subscriber(store, 5, ChatType.PRIVATE, lang="ru")
    await _subscriber(store, -200, ChatType.CHANNEL, lang="ru")
    await _subscriber(store, -300, ChatType.CHANNEL, lang="en")
    paused = await _subscriber(store, -400, ChatType.CHANNEL, lang="ru")
    await store.update_chat(paused.id, NOW, paused=True)
    await _poll(store, feed.id, [])
    outcome = await _poll(store, feed.id, [new_item(1)])
    assert outcome.queued == 2
    due = await _due(store, NOW)
    assert [d.chat.id for d in due] == [-200, 5]  # channel before private chat
    skipped = await store.get_delivery(outcome.new_items[0].id, -400)
    assert skipped is not None and skipped.state is DeliveryState.SKIPPED
    assert skipped.last_error == "paused"


async def test_outbox_states_and_deactivation(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, 7, ChatType.PRIVATE)
    await _poll(store, feed.id, [])
    await _poll(store, feed.id, [new_item(1), new_item(2)])
    (head,) = await _due(store, NOW)
    await store.record_outcomes([retry(head.delivery.id, "NetworkError", NOW, NOW + 30)])
    assert await _due(store, NOW) == []  # the head is backing off: order holds
    assert min(h.next_attempt_at for h in await outbox.pending_heads(store)) == NOW + 30
    (head,) = await _due(store, NOW + 30)
    await store.record_outcomes([sent(head.delivery.id, 55, NOW + 30)])
    (second,) = await _due(store, NOW + 30)
    assert second.item.identity == "guid-2"
    cancelled = await store.deactivate_chat(7, "Forbidden: bot was blocked by the user", NOW)
    assert cancelled == 1
    assert await _due(store, NOW + 60) == []
    chat = await store.get_chat(7)
    assert chat is not None and not chat.active and "blocked" in (chat.deactivated_reason or "")
    recorded = await store.get_delivery(head.item.id, 7)
    assert recorded is not None and recorded.state is DeliveryState.SENT
    assert recorded.message_id == 55


async def test_migrate_chat_moves_pending_deliveries(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, -1, ChatType.GROUP)
    await _poll(store, feed.id, [])
    await _poll(store, feed.id, [new_item(1)])
    moved = await store.migrate_chat(-1, -1001, NOW)
    assert moved is not None and moved.type is ChatType.SUPERGROUP and moved.subscribed
    (due,) = await _due(store, NOW)
    assert due.chat.id == -1001
    assert await store.get_chat(-1) is None


async def test_prune_keeps_items_and_pending(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, 9, ChatType.PRIVATE)
    await _subscriber(store, 10, ChatType.PRIVATE)
    await _poll(store, feed.id, [])
    await _poll(store, feed.id, [new_item(1)])
    (first, _) = await _due(store, NOW)
    await store.record_outcomes([sent(first.delivery.id, 1, NOW)])
    assert await store.prune_deliveries(NOW + DAY) == 1
    counts = await store.delivery_counts()
    assert counts[DeliveryState.PENDING] == 1 and counts[DeliveryState.SENT] == 0
    assert await store.count_items() == 1


async def test_a_piece_in_two_feeds_reaches_a_chat_once(store: Store) -> None:
    main = await store.ensure_feed("https://caliber.az/en/rss", "en")
    section = await store.ensure_feed("https://caliber.az/en/analytics/rss", "en")
    await _subscriber(store, -100)
    await _poll(store, main.id, [])
    await _poll(store, section.id, [])
    first = await _poll(store, main.id, [new_item(1)])
    second = await _poll(store, section.id, [new_item(1, identity="other-guid")])
    assert first.queued == 1 and second.queued == 0
    assert len(second.new_items) == 1  # stored (for search and /why), not sent twice


async def test_one_link_twice_in_one_poll_reaches_a_chat_once(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, -100)
    await _poll(store, feed.id, [])
    # Two entries (two guids) of one document pointing at the same article.
    outcome = await _poll(store, feed.id, [new_item(1), new_item(2, link=new_item(1).link)])
    assert len(outcome.new_items) == 2 and outcome.queued == 1
    assert [d.item.id for d in await _due(store, NOW)] == [outcome.new_items[0].id]


async def test_fan_out_policy_is_applied_as_data(store: Store) -> None:
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await _subscriber(store, 7, ChatType.PRIVATE)
    await _subscriber(store, -100, ChatType.CHANNEL)
    await _subscriber(store, -200, ChatType.SUPERGROUP)
    filtered = await _subscriber(store, 8, ChatType.PRIVATE)
    paused = await _subscriber(store, 9, ChatType.PRIVATE)
    await store.update_chat(paused.id, NOW, paused=True)
    await _subscriber(store, 10, ChatType.PRIVATE, lang="ru")  # another language: no row
    await _poll(store, feed.id, [])
    entries = [new_item(1), new_item(2)]
    outcome = await store.store_poll(
        feed.id, entries, etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
        max_age=2 * DAY, backfill=0,
        fan_out=FanOut(
            priorities={ChatType.PRIVATE: 0, ChatType.SUPERGROUP: 1, ChatType.CHANNEL: 2},
            # The filters' verdict, and one the paused chat's own reason takes precedence over.
            skips={"guid-2": {filtered.id: "exclude_keyword:war", paused.id: "not_included"}},
        ),
    )  # fmt: skip
    first, second = (item.id for item in outcome.new_items)
    rows = await store.fetchall(
        "SELECT item_id, chat_id, state, priority, last_error FROM deliveries "
        "ORDER BY item_id, chat_id"
    )
    assert [tuple(r) for r in rows] == [
        (first, -200, "pending", 1, None),
        (first, -100, "pending", 2, None),
        (first, 7, "pending", 0, None),
        (first, 8, "pending", 0, None),
        (first, 9, "skipped", 0, "paused"),
        (second, -200, "pending", 1, None),
        (second, -100, "pending", 2, None),
        (second, 7, "pending", 0, None),
        (second, 8, "skipped", 0, "exclude_keyword:war"),
        (second, 9, "skipped", 0, "paused"),
    ]
    assert outcome.queued == 7


async def test_filtering_chats_are_only_those_with_rules(store: Store) -> None:
    await _subscriber(store, 1, ChatType.PRIVATE)
    ruled = await _subscriber(store, 2, ChatType.PRIVATE)
    styled = await _subscriber(store, 3, ChatType.PRIVATE)
    paused = await _subscriber(store, 4, ChatType.PRIVATE)
    await _subscriber(store, 5, ChatType.PRIVATE, lang="ru")
    rules = ChatSettings(exclude_keywords=("war",))
    await store.update_chat(ruled.id, NOW, settings=rules)
    await store.update_chat(styled.id, NOW, settings=ChatSettings(style=PostStyle.TEXT))
    await store.update_chat(paused.id, NOW, settings=rules, paused=True)  # skipped as paused
    await store.update_chat(5, NOW, settings=rules)  # takes Russian only
    assert [c.id for c in await store.filtering_chats("en")] == [ruled.id]
    assert [c.id for c in await store.filtering_chats("ru")] == [5]
