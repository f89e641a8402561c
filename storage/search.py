"""The search index's SQL: an FTS5 table of folded, stemmed terms, ranked by bm25 and recency.

`search_fts` (migration 2) holds one row per item, rowid = items.id: the item's title and text
as terms already folded, stemmed and tagged with the item's language by bot.search. The tag
makes the language filter part of the terms themselves (a query in English looks for English
terms only), so MATCH does no extra work for it. This module never sees raw reader text: the
expression it gets is built by bot.search from quoted terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiosqlite

from storage.models import Item
from storage.store import _ITEM_COLUMNS, Store, _item

# Title words weigh more than words of the text (bm25 column weights: title, body).
TITLE_WEIGHT = 4.0
BODY_WEIGHT = 1.0
# Recency: a piece published now ranks as if its bm25 score were (1 + RECENCY_BOOST) times
# better; the boost halves at RECENCY_HALF_LIFE seconds of age and keeps fading after that.
RECENCY_BOOST = 0.5
RECENCY_HALF_LIFE = 30 * 86400.0
# Above this many matches only the newest this many are ranked (see search()).
CANDIDATE_WINDOW = 5000
# How many of the best by bm25 alone set the bar for the rest (see _SEARCH).
FIRST_FETCH = 48


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


_BOOST = "(1.0 + :boost / (1.0 + MAX(0.0, :now - d.ts) / :half_life))"


async def write_docs(conn: aiosqlite.Connection, docs: Sequence[SearchDoc]) -> None:
    """Add or replace `docs` using the caller's transaction (the store's item hook)."""
    await conn.executemany(
        "INSERT OR REPLACE INTO search_fts (rowid, title, body) VALUES (?, ?, ?)",
        [(d.item_id, d.title, d.body) for d in docs],
    )
    await conn.executemany(
        "INSERT OR REPLACE INTO search_dates (id, ts) VALUES (?, ?)",
        [(d.item_id, d.ts) for d in docs],
    )


async def index_docs(store: Store, docs: Sequence[SearchDoc]) -> None:
    """Add or replace `docs` in one transaction of their own."""
    async with store._tx() as conn:
        await write_docs(conn, docs)


async def unindexed_items(store: Store, after_id: int, limit: int) -> list[Item]:
    """Return up to `limit` items with an id above `after_id` that the index lacks."""
    rows = await store._fetchall(
        f"SELECT {_ITEM_COLUMNS} FROM items i WHERE i.id > ? "
        "AND NOT EXISTS (SELECT 1 FROM search_fts f WHERE f.rowid = i.id) "
        "ORDER BY i.id LIMIT ?",
        (after_id, limit),
    )
    return [_item(r) for r in rows]


async def analyzer_version(store: Store) -> int:
    """Return the version of the text analysis the index was built with."""
    row = await store._fetchone("SELECT analyzer_version FROM search_state WHERE id = 1")
    return int(row[0]) if row else 0


async def clear(store: Store, version: int) -> None:
    """Empty the index and record that it will be rebuilt with analysis `version`."""
    async with store._tx() as conn:
        await conn.execute("DELETE FROM search_fts")
        await conn.execute("DELETE FROM search_dates")
        await conn.execute(
            "INSERT INTO search_state (id, analyzer_version) VALUES (1, ?) "
            "ON CONFLICT(id) DO UPDATE SET analyzer_version = excluded.analyzer_version",
            (version,),
        )


# One statement, so a search is one trip to the database thread:
# - floor: when more than :window items match, the id of the :window-th newest match (only
#   matches from there on are ranked), else 0;
# - m: every match with its bm25 score (title words weighing more);
# - top: the :fetch best by bm25 alone, with the recency boost applied;
# - cut: the :wanted-th best boosted score among those;
# - ranked: since the boost improves a score at most :max_boost times, only matches whose
#   bm25 * :max_boost reaches the cut can still be among the :wanted best; they are boosted
#   and sorted, and the page is cut from them (exact, however flat the bm25 scores are);
# - the page's items are read, with the number of matches.
_SEARCH = f"""
WITH floor AS (
    SELECT COALESCE((
        SELECT rowid FROM search_fts WHERE search_fts MATCH :q
        ORDER BY rowid DESC LIMIT 1 OFFSET :window - 1
    ), 0) AS id
),
m AS MATERIALIZED (
    SELECT rowid AS id, bm25(search_fts, :title_weight, :body_weight) AS b FROM search_fts
    WHERE search_fts MATCH :q AND rowid >= (SELECT id FROM floor)
),
top AS MATERIALIZED (
    SELECT t.id, t.b * {_BOOST} AS s
    FROM (SELECT id, b FROM m ORDER BY b LIMIT :fetch) t JOIN search_dates d ON d.id = t.id
),
cut AS (SELECT s FROM top ORDER BY s LIMIT 1 OFFSET :wanted - 1),
ranked AS MATERIALIZED (
    SELECT m.id, m.b * {_BOOST} AS s FROM m JOIN search_dates d ON d.id = m.id
    WHERE (SELECT s FROM cut) IS NULL OR m.b * :max_boost <= (SELECT s FROM cut)
    ORDER BY s, m.id DESC LIMIT :limit + 1 OFFSET :offset
)
SELECT r.s, CASE WHEN (SELECT id FROM floor) > 0
                 THEN (SELECT COUNT(*) FROM search_fts WHERE search_fts MATCH :q)
                 ELSE (SELECT COUNT(*) FROM m) END,
       {_ITEM_COLUMNS}
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
    params: dict[str, object] = {
        "q": expression,
        "window": CANDIDATE_WINDOW,
        "title_weight": TITLE_WEIGHT,
        "body_weight": BODY_WEIGHT,
        "boost": RECENCY_BOOST,
        "now": now,
        "half_life": RECENCY_HALF_LIFE,
        "fetch": max(FIRST_FETCH, 2 * (offset + limit + 1)),
        "wanted": offset + limit + 1,
        "max_boost": 1.0 + RECENCY_BOOST,
        "limit": limit,
        "offset": offset,
    }
    # sqlite3 takes a mapping for named parameters; _fetchall passes it through.
    rows = await store._fetchall(_SEARCH, cast(Sequence[Any], params))
    if not rows:
        total = 0
        if offset > 0:
            count = await store._fetchone(
                "SELECT COUNT(*) FROM search_fts WHERE search_fts MATCH ?", (expression,)
            )
            total = int(count[0]) if count else 0
        return SearchPage(hits=(), has_more=False, offset=offset, total=total)
    hits = tuple(SearchHit(_item(row, 2), float(row[0])) for row in rows[:limit])
    return SearchPage(hits=hits, has_more=len(rows) > limit, offset=offset, total=int(rows[0][1]))


async def bare_match(store: Store, expression: str, limit: int = 5) -> list[int]:
    """Return the ids of the best bm25 matches and nothing else (the benchmark's baseline)."""
    rows = await store._fetchall(
        "SELECT rowid FROM search_fts WHERE search_fts MATCH ? ORDER BY bm25(search_fts) LIMIT ?",
        (expression, limit),
    )
    return [int(r[0]) for r in rows]
