"""The search index's SQL: an FTS5 table of folded, stemmed terms, ranked by bm25 and recency.

`search_fts` (migration 2) holds one row per item, rowid = items.id: the item's title and text
as terms already folded, stemmed and tagged with the item's language by bot.services.search. The tag
makes the language filter part of the terms themselves (a query in English looks for English
terms only), so MATCH does no extra work for it. This module never sees raw reader text: the
expression it gets is built by bot.services.search from quoted terms.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiosqlite

from storage.models import Item

if TYPE_CHECKING:  # storage.store imports this module (forget_docs)
    from storage.store import Store
from storage.db import ITEM_COLUMNS, item_from_row

# Title words weigh more than words of the text (bm25 column weights: title, body).
TITLE_WEIGHT = 4.0
BODY_WEIGHT = 1.0
# Recency: a piece published now ranks as if its bm25 score were (1 + RECENCY_BOOST) times
# better; the boost fades linearly to nothing at RECENCY_WINDOW seconds of age. Ending the boost
# at a fixed age (rather than letting a long tail fade) is what lets a search skip reading the
# date of every older match (see _SEARCH).
RECENCY_BOOST = 0.5
RECENCY_WINDOW = 90 * 86400.0
# Above this many matches only the newest this many are ranked (see search()): 400 pages of
# results, and the bound that keeps the broadest query (a word in every piece) well under
# 20 ms on a 2-core machine (cost grows with the window: about 3 ms per 1,000 ranked).
CANDIDATE_WINDOW = 2000


@dataclass(frozen=True, slots=True)
class SearchDoc:
    """One item as the index stores it: tagged terms of its title and of its text."""

    item_id: int
    ts: float  # publication time, else first sight
    title: str
    body: str


@dataclass(frozen=True, slots=True)
class SearchHit:
    item: Item
    score: float


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of results; `has_more` tells whether another page follows."""

    hits: tuple[SearchHit, ...]
    has_more: bool
    offset: int
    total: int  # every match, including any beyond the ranked window


# The boost of the piece whose date is d.ts (a piece dated in the future counts as new); an SQL
# expression of the named parameters :boost, :now and :recency.
BOOST_SQL = "(1.0 + :boost * MIN(1.0, MAX(0.0, 1.0 - (:now - d.ts) / :recency)))"


async def write_docs(conn: aiosqlite.Connection, docs: Sequence[SearchDoc]) -> None:
    """Add or replace `docs` using the caller's transaction."""
    if not docs:
        return
    await conn.executemany(
        "INSERT OR REPLACE INTO search_fts (rowid, title, body) VALUES (?, ?, ?)",
        [(d.item_id, d.title, d.body) for d in docs],
    )
    await conn.executemany(
        "INSERT OR REPLACE INTO search_dates (id, ts) VALUES (?, ?)",
        [(d.item_id, d.ts) for d in docs],
    )
    # Keep the recency floor's promise (see refresh_recency): if any of these pieces is dated
    # after fresh_since, the floor comes down to the lowest id among them. One statement for
    # the batch; lowering it further than needed only costs a few date reads.
    await conn.execute(
        "UPDATE search_state SET fresh_from = MIN(fresh_from, ?) WHERE id = 1 AND fresh_since <= ?",
        (min(d.item_id for d in docs), max(d.ts for d in docs)),
    )


async def forget_docs(conn: aiosqlite.Connection, item_ids: Sequence[int]) -> None:
    """Drop the index rows of items whose text changed, in the caller's transaction.

    The caller indexes them again after its commit; if the process dies first, the start-up
    catch-up (unindexed_items) finds them missing and indexes them.
    """
    if item_ids:
        await conn.execute(
            f"DELETE FROM search_fts WHERE rowid IN ({','.join('?' * len(item_ids))})", item_ids
        )


async def refresh_recency(store: Store, now: float) -> int:
    """Raise the recency floor to the lowest id of a piece dated within RECENCY_WINDOW of `now`.

    The floor (search_state.fresh_from) lets a search give pieces below it no boost without
    reading their dates: every piece dated at or after fresh_since has an id of at least
    fresh_from. write_docs keeps that true as pieces are added or re-dated, so the floor stays
    usable for any later search (one whose window starts at or after fresh_since); refreshing
    it (at start and hourly) only makes it tighter as time passes. Return the new floor.
    """
    since = now - RECENCY_WINDOW
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE search_state SET fresh_since = :since, fresh_from = COALESCE("
            "(SELECT MIN(id) FROM search_dates WHERE ts >= :since), "
            "(SELECT COALESCE(MAX(id), 0) + 1 FROM search_dates)) WHERE id = 1",
            {"since": since},
        )
        async with conn.execute("SELECT fresh_from FROM search_state WHERE id = 1") as cursor:
            row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def index_docs(store: Store, docs: Sequence[SearchDoc]) -> None:
    """Add or replace `docs` in one transaction of their own."""
    async with store.transaction() as conn:
        await write_docs(conn, docs)


async def unindexed_items(store: Store, after_id: int, limit: int) -> list[Item]:
    """Return up to `limit` items with an id above `after_id` that the index lacks."""
    rows = await store.fetchall(
        f"SELECT {ITEM_COLUMNS} FROM items i WHERE i.id > ? "
        "AND NOT EXISTS (SELECT 1 FROM search_fts f WHERE f.rowid = i.id) "
        "ORDER BY i.id LIMIT ?",
        (after_id, limit),
    )
    return [item_from_row(r) for r in rows]


async def analyzer_version(store: Store) -> int:
    """Return the version of the text analysis the index was built with."""
    row = await store.fetchone("SELECT analyzer_version FROM search_state WHERE id = 1")
    return int(row[0]) if row else 0


async def clear(store: Store, version: int) -> None:
    """Empty the index and record that it will be rebuilt with analysis `version`."""
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM search_fts")
        await conn.execute("DELETE FROM search_dates")
        await conn.execute(
            "INSERT INTO search_state (id, analyzer_version) VALUES (1, ?) "
            "ON CONFLICT(id) DO UPDATE SET analyzer_version = excluded.analyzer_version, "
            "fresh_from = 0, fresh_since = 0",
            (version,),
        )


# One statement, so a search is one trip to the database thread and one pass over the matches:
# - fresh: the recency floor, when it holds for this search's window (else 0: read every date);
# - m: the newest :window matches (FTS5 walks the doclist from the top and stops there), each
#   scored once: bm25 (title words weighing more) times the recency boost. A match below the
#   floor is older than RECENCY_WINDOW, so its boost is 1 and its date is not read; only the
#   few recent matches cost a lookup in search_dates;
# - how many matched, counted from m (search() counts the whole doclist when m is full);
# - ranked: the page, best first, ties going to the newer piece; the page's items are read.
_SEARCH = f"""
WITH fresh AS (
    SELECT CASE WHEN :now - :recency >= fresh_since THEN fresh_from ELSE 0 END AS id
    FROM search_state WHERE id = 1
),
m AS MATERIALIZED (
    SELECT f.rowid AS id, bm25(search_fts, :title_weight, :body_weight) * CASE
        WHEN f.rowid < (SELECT id FROM fresh) THEN 1.0
        ELSE COALESCE((SELECT {BOOST_SQL} FROM search_dates d WHERE d.id = f.rowid), 1.0)
    END AS s
    FROM search_fts f WHERE search_fts MATCH :q
    ORDER BY f.rowid DESC LIMIT :window
),
ranked AS MATERIALIZED (SELECT id, s FROM m ORDER BY s, id DESC LIMIT :limit OFFSET :offset)
SELECT r.s, (SELECT COUNT(*) FROM m), {ITEM_COLUMNS}
FROM ranked r JOIN items i ON i.id = r.id
ORDER BY r.s, r.id DESC
"""


async def search(
    store: Store, expression: str, *, now: float, offset: int = 0, limit: int = 5
) -> SearchPage:
    """Return one page of the items matching `expression` (FTS5 syntax of quoted terms).

    Best first: bm25 with title words weighing more, made up to 1 + RECENCY_BOOST times better
    for recent pieces. When more than CANDIDATE_WINDOW items match, only the newest
    CANDIDATE_WINDOW are ranked: such a query is too broad for an old piece to be what the
    reader is after, and ranking every match would cost time in proportion to the archive.
    """
    started = time.perf_counter()
    try:
        return await _search(store, expression, now=now, offset=offset, limit=limit)
    finally:
        if store.on_search is not None:
            store.on_search(time.perf_counter() - started)


async def _search(
    store: Store, expression: str, *, now: float, offset: int, limit: int
) -> SearchPage:
    params: dict[str, object] = {
        "q": expression,
        "window": CANDIDATE_WINDOW,
        "title_weight": TITLE_WEIGHT,
        "body_weight": BODY_WEIGHT,
        "boost": RECENCY_BOOST,
        "now": now,
        "recency": RECENCY_WINDOW,
        "limit": limit,
        "offset": offset,
    }
    rows = await store.fetchall(_SEARCH, params)
    if not rows:
        total = await _count(store, expression) if offset > 0 else 0
        return SearchPage(hits=(), has_more=False, offset=offset, total=total)
    total = int(rows[0][1])
    if total >= CANDIDATE_WINDOW:  # m was full: count every match, beyond the ranked ones
        total = await _count(store, expression)
    hits = tuple(SearchHit(item_from_row(row, 2), float(row[0])) for row in rows)
    ranked = min(total, CANDIDATE_WINDOW)
    return SearchPage(hits=hits, has_more=offset + len(hits) < ranked, offset=offset, total=total)


async def _count(store: Store, expression: str) -> int:
    row = await store.fetchone(
        "SELECT COUNT(*) FROM search_fts WHERE search_fts MATCH ?", (expression,)
    )
    return int(row[0]) if row else 0


async def bare_match(store: Store, expression: str, limit: int = 5) -> list[int]:
    """Return the ids of the best bm25 matches and nothing else (the benchmark's baseline)."""
    rows = await store.fetchall(
        "SELECT rowid FROM search_fts WHERE search_fts MATCH ? ORDER BY bm25(search_fts) LIMIT ?",
        (expression, limit),
    )
    return [int(r[0]) for r in rows]
