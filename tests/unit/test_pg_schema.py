"""PostgreSQL's schema after migration 15: the outbox indexes filled in key order pack their
pages (migration 16), on a store created at 15 as on a new one."""

from __future__ import annotations

import asyncpg
import pytest

from storage import postgres
from storage.migrations import MIGRATIONS
from storage.store import Store
from tests.factories import new_item

NOW = 1_767_225_600.0
PACKED = {"deliveries_pending": 100, "deliveries_pkey": 100, "deliveries_post": 100}


async def _fillfactors(raw: asyncpg.Connection) -> dict[str, int]:
    """The fillfactor set on each index of deliveries (those with none left out)."""
    rows = await raw.fetch(
        "SELECT c.relname, opt FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid, "
        "unnest(c.reloptions) opt WHERE i.indrelid = 'deliveries'::regclass "
        "AND opt LIKE 'fillfactor=%'"
    )
    return {str(r[0]): int(str(r[1]).split("=")[1]) for r in rows}


async def test_migration_16_packs_the_outbox_indexes_of_a_store_at_15(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = await asyncpg.connect(pg_url)
    try:
        with monkeypatch.context() as patch:  # a store made by the code before migration 16
            patch.setattr(postgres, "MIGRATIONS", MIGRATIONS[:15])
            assert await postgres.migrate_postgresql(raw) == 15
        assert await _fillfactors(raw) == {}
        assert await postgres.migrate_postgresql(raw) == MIGRATIONS[-1].version
        assert await _fillfactors(raw) == PACKED
        versions = await raw.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [int(r[0]) for r in versions] == [m.version for m in MIGRATIONS]
    finally:
        await raw.close()
    store = await Store.open(pg_url)  # and the code reads it
    await store.close()


async def test_a_fan_out_fills_the_packed_indexes_pages(pg_url: str) -> None:
    chats = 40_000
    store = await Store.open(pg_url)
    try:
        async with store.transaction() as conn:
            await conn.execute(
                "INSERT INTO chats (id, type, lang, languages, active, subscribed, created_at, "
                "updated_at) SELECT 10000000 + x, 'private', 'en', 'en', 1, 1, ?, ? "
                "FROM generate_series(1, ?) AS n(x)",
                (NOW, NOW, chats),
            )
        feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
        for numbers in ([], [1]):  # the backlog (seen, not queued), then a new piece
            await store.store_poll(
                feed.id, [new_item(n) for n in numbers], etag=None, last_modified=None,
                now=NOW, next_poll_at=NOW + 60, max_age=2 * 86400.0, backfill=0,
            )  # fmt: skip
        row = await store.fetchone(
            "SELECT SUM(pg_relation_size(indexrelid)) FROM pg_index "
            "WHERE indexrelid IN ('deliveries_pkey'::regclass, 'deliveries_post'::regclass, "
            "'deliveries_pending'::regclass)"
        )
    finally:
        await store.close()
    assert row is not None
    # Entries of 20, 28 and 36 bytes with their line pointers: 84 bytes a row packed, 93 at
    # the default fillfactor (90).
    per_row = int(row[0]) / chats
    assert per_row <= 90, f"{per_row:.1f} bytes a delivery in the three indexes"
