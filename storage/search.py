"""The search index's SQL, on SQLite (FTS5, bm25) and on PostgreSQL (tsvector, ts_rank).

Both back ends index the same thing: an item's title and text as terms already folded, stemmed
and tagged with the item's language by bot.services.search (e.g. "en0sanction"). The tag makes
the language filter part of the terms themselves (a query in English looks for English terms
only), so matching does no extra work for it. Each row also carries the mark of the analysis
that made it (analysis_mark, e.g. "0v2", at the end of the text), so the rows a change of
analysis left behind are found without a table or column of their own (items_to_index), and a
re-analysis never overwrites a row the current analysis wrote meanwhile (keep_current).

A query reaches this module as term groups (TermGroups): every group must match, and within a
group any one of its terms. This module renders them for its back end (fts5_expression,
tsquery) from terms it has checked to be letters and digits only, so no text of a reader's can
be read as an operator by either engine, and the rendered query is always a bound parameter.

- SQLite: `search_fts` (FTS5, rowid = items.id; columns title and body) and `search_dates`
  (each item's date, small enough to stay cached). Ranked by bm25 with title words weighing
  more; bm25 is negative, lower is better.
- PostgreSQL: `search_docs` (id = items.id, the date `ts`, and `doc`, a tsvector with a GIN
  index). The tsvector is built here from the analysed terms (title terms weight A, text terms
  weight D, each with its positions), never by PostgreSQL's parser, which with the C locale
  may split words at non-ASCII letters. Ranked by ts_rank with the same title/text ratio.

Either way a hit's score is the relevance times the same recency boost, and SearchHit.score is
lower-is-better on both back ends (bm25 as it is; ts_rank negated).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.models import Item

if TYPE_CHECKING:  # storage.store imports this module (forget_docs)
    from storage.store import Store
from storage.backends import Conn, Dialect
from storage.db import ITEM_COLUMNS, item_from_row

# Title words weigh more than words of the text: bm25's column weights on SQLite; on
# PostgreSQL the ts_rank weights of A (title) and D (text) lexemes, in the same ratio.
TITLE_WEIGHT = 4.0
BODY_WEIGHT = 1.0
# Recency: a piece published now ranks as if its relevance were (1 + RECENCY_BOOST) times
# better; the boost fades linearly to nothing at RECENCY_WINDOW seconds of age. Ending the boost
# at a fixed age (rather than letting a long tail fade) is what lets a search skip reading the
# date of every older match (see _SEARCH).
RECENCY_BOOST = 0.5
RECENCY_WINDOW = 90 * 86400.0
# Above this many matches only the newest this many are ranked (see search()): 400 pages of
# results, and the bound that keeps the broadest query (a word in every piece) well under
# 20 ms on a 2-core machine (cost grows with the window: about 3 ms per 1,000 ranked).
CANDIDATE_WINDOW = 2000

# A query: every group must match; within a group, any one of its tagged terms (a word's term
# in each language searched), e.g. (("en0iran", "ru0iran"), ("en0oil", "ru0oil")).
TermGroups = tuple[tuple[str, ...], ...]

# What a term may hold: letters and digits (the analysis makes nothing else).
_TERM = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class SearchDoc:
    """One item as the index stores it: tagged terms of its title and of its text."""

    item_id: int
    ts: float  # publication time, else first sight
    title: str
    body: str
    version: int = 0  # the analysis that made the terms; 0: none named, the row is not marked


def analysis_mark(version: int) -> str:
    """Return the term every row made by analysis `version` holds, e.g. "0v2".

    It starts with a digit, so it equals no tagged term and no query ever looks for it.
    """
    return f"0v{version}"


def _indexed_body(doc: SearchDoc) -> str:
    # The mark goes last, so the title's and text's positions are as they were without it.
    return f"{doc.body} {analysis_mark(doc.version)}" if doc.version else doc.body


@dataclass(frozen=True, slots=True)
class SearchHit:
    item: Item
    # Lower is better on both back ends: bm25 × boost on SQLite (bm25 is negative), and
    # -(ts_rank × boost) on PostgreSQL. Compare scores of one search only.
    score: float


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of results; `has_more` tells whether another page follows."""

    hits: tuple[SearchHit, ...]
    has_more: bool
    offset: int
    total: int  # every match, including any beyond the ranked window


# ---------------------------------------------------------------------- rendering a query


def checked(groups: TermGroups) -> TermGroups:
    """Return `groups` if every term is letters and digits only; raise ValueError otherwise.

    This is what makes the rendered queries safe: a term can hold no quote, space, operator
    or backslash, so it is one quoted word to FTS5 and one quoted lexeme to tsquery.
    """
    if not groups or not all(groups):
        raise ValueError("a search needs at least one term in every group")
    for group in groups:
        for term in group:
            if not isinstance(term, str) or not _TERM.fullmatch(term):
                raise ValueError(f"not a search term: {term!r}")
    return groups


def fts5_expression(groups: TermGroups) -> str:
    """Return the FTS5 MATCH expression of `groups`: quoted terms, OR within, AND between."""
    rendered = []
    for group in checked(groups):
        forms = ['"' + term.replace('"', '""') + '"' for term in group]
        rendered.append(forms[0] if len(forms) == 1 else "(" + " OR ".join(forms) + ")")
    return " AND ".join(rendered)


def tsquery(groups: TermGroups) -> str:
    """Return the tsquery text of `groups`, written as PostgreSQL prints it: what must match."""
    alternatives = [[_quoted(_lexeme(term)) for term in group] for group in checked(groups)]
    if len(alternatives) == 1:
        return " | ".join(alternatives[0])
    return " & ".join(
        lexemes[0] if len(lexemes) == 1 else f"( {' | '.join(lexemes)} )"
        for lexemes in alternatives
    )


def rank_tsquery(groups: TermGroups) -> str:
    """Return the tsquery ts_rank scores with: every distinct term OR-ed.

    ts_rank scores an AND query by how close its words stand (words far apart score nearly
    nothing), an OR query by each word's occurrences and weights, as bm25 does; the matches
    are found with tsquery(), so only the scoring reads this one.
    """
    lexemes = dict.fromkeys(_lexeme(term) for group in checked(groups) for term in group)
    return " | ".join(_quoted(lexeme) for lexeme in lexemes)


# ---------------------------------------------------------------------- the PostgreSQL tsvector

# PostgreSQL's limits: a lexeme of at most 2046 bytes, positions 1…16383, and 1 MB of lexemes
# in one tsvector (more positions than 256 per lexeme are dropped by PostgreSQL itself).
_MAX_LEXEME_BYTES = 2046
_MAX_POSITION = 16383
_MAX_LEXEMES_BYTES = 1_000_000


def _lexeme(term: str) -> str:
    """`term` as a PostgreSQL lexeme: itself, or if too long a prefix and a digest of it.

    Applied alike to indexed and searched terms, so a very long word still matches itself.
    """
    if len(term.encode()) <= _MAX_LEXEME_BYTES:
        return term
    digest = hashlib.sha256(term.encode()).hexdigest()  # 64 letters and digits
    prefix = term.encode()[: _MAX_LEXEME_BYTES - 1 - len(digest)].decode(errors="ignore")
    return f"{prefix}0{digest}"


def _quoted(lexeme: str) -> str:
    # Checked terms hold no quote or backslash; escaping keeps this right even if that changes.
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector(doc: SearchDoc) -> str:
    """Return the tsvector text of `doc`: each lexeme with its positions, title ones weight A.

    Positions run on from the title into the text, as the words stand in the piece, and the
    analysis's mark comes last (kept even when the text's lexemes fill the tsvector).
    """
    positions: dict[str, list[str]] = {}
    size = 0
    position = 0
    for text, weight in ((doc.title, "A"), (doc.body, "")):
        # Split as FTS5 splits the same text on SQLite (terms are letters and digits already).
        for term in _TERM.findall(text):
            position = min(position + 1, _MAX_POSITION)
            lexeme = _lexeme(term)
            seen = positions.get(lexeme)
            if seen is None:
                size += len(lexeme.encode())
                if size > _MAX_LEXEMES_BYTES:
                    continue
                positions[lexeme] = seen = []
            seen.append(f"{position}{weight}")
    if doc.version:
        positions[analysis_mark(doc.version)] = [str(min(position + 1, _MAX_POSITION))]
    return " ".join(f"{_quoted(lexeme)}:{','.join(at)}" for lexeme, at in positions.items())


# ---------------------------------------------------------------------- keeping the index

# The table holding each indexed item's id and date.
_DATES: dict[Dialect, str] = {"sqlite": "search_dates", "postgresql": "search_docs"}


async def write_docs(conn: Conn, docs: Sequence[SearchDoc], *, keep_current: bool = False) -> None:
    """Add or replace `docs` using the caller's transaction.

    `keep_current` leaves alone the row of an item that already holds its document's mark: a
    re-analysis (SearchIndex.attach) read the item before the poller or the article fetcher
    changed it and indexed it again (with the current analysis, after their commit), and that
    newer row must stay.
    """
    if keep_current and conn.dialect == "sqlite":
        docs = await _without_current(conn, docs)
    if not docs:
        return
    if conn.dialect == "postgresql":
        # Only items that still exist: one deleted since it was stored is left out, as the
        # SQLite trigger would have dropped its row.
        keep = " WHERE NOT (search_docs.doc @@ CAST(? AS tsquery))" if keep_current else ""
        await conn.executemany(
            "INSERT INTO search_docs (id, ts, doc) "
            "SELECT i.id, ?, CAST(? AS tsvector) FROM items i WHERE i.id = ? "
            "ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, doc = excluded.doc" + keep,
            [
                (float(d.ts), tsvector(d), d.item_id)
                + ((_quoted(analysis_mark(d.version)),) if keep_current else ())
                for d in docs
            ],
        )
        lower = "LEAST"
    else:
        await conn.executemany(
            "INSERT OR REPLACE INTO search_fts (rowid, title, body) VALUES (?, ?, ?)",
            [(d.item_id, d.title, _indexed_body(d)) for d in docs],
        )
        await conn.executemany(
            "INSERT OR REPLACE INTO search_dates (id, ts) VALUES (?, ?)",
            [(d.item_id, d.ts) for d in docs],
        )
        lower = "MIN"
    # Keep the recency floor's promise (see refresh_recency): if any of these pieces is dated
    # after fresh_since, the floor comes down to the lowest id among them. One statement for
    # the batch; lowering it further than needed only costs a few date reads.
    await conn.execute(
        f"UPDATE search_state SET fresh_from = {lower}(fresh_from, ?) "
        "WHERE id = 1 AND fresh_since <= ?",
        (min(d.item_id for d in docs), float(max(d.ts for d in docs))),
    )


async def _without_current(conn: Conn, docs: Sequence[SearchDoc]) -> list[SearchDoc]:
    """`docs` less those whose item's row already holds the document's own mark (SQLite)."""
    current: set[tuple[int, int]] = set()
    for version in {d.version for d in docs if d.version}:
        ids = [d.item_id for d in docs if d.version == version]
        rows = await conn.fetchall(
            "SELECT rowid FROM search_fts WHERE search_fts MATCH ? AND rowid BETWEEN ? AND ?",
            (fts5_expression(((analysis_mark(version),),)), min(ids), max(ids)),
        )
        current |= {(version, int(row[0])) for row in rows}
    return [d for d in docs if (d.version, d.item_id) not in current]


async def forget_docs(conn: Conn, item_ids: Sequence[int]) -> None:
    """Drop the index rows of items whose text changed, in the caller's transaction.

    The caller indexes them again after its commit; if the process dies first, the start-up
    catch-up (items_to_index) finds them missing and indexes them.
    """
    if item_ids:
        table, key = (
            ("search_docs", "id") if conn.dialect == "postgresql" else ("search_fts", "rowid")
        )
        await conn.execute(
            f"DELETE FROM {table} WHERE {key} IN ({','.join('?' * len(item_ids))})", item_ids
        )


async def refresh_recency(store: Store, now: float) -> int:
    """Raise the recency floor to the lowest id of a piece dated within RECENCY_WINDOW of `now`.

    The floor (search_state.fresh_from) lets a search give pieces below it no boost without
    reading their dates: every piece dated at or after fresh_since has an id of at least
    fresh_from. write_docs keeps that true as pieces are added or re-dated, so the floor stays
    usable for any later search (one whose window starts at or after fresh_since); refreshing
    it (at start and hourly) only makes it tighter as time passes. Return the new floor.

    SQLite's search uses it; PostgreSQL's reads each match's date from the row it matched in
    anyway, so there the floor is kept (the same promise, the same value) but not needed.
    """
    since = now - RECENCY_WINDOW
    dates = _DATES[store.dialect]
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE search_state SET fresh_since = :since, fresh_from = COALESCE("
            f"(SELECT MIN(id) FROM {dates} WHERE ts >= :since), "
            f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {dates})) WHERE id = 1",
            {"since": since},
        )
        floor = await conn.fetchval("SELECT fresh_from FROM search_state WHERE id = 1")
    return int(floor or 0)


async def index_docs(
    store: Store, docs: Sequence[SearchDoc], *, keep_current: bool = False
) -> None:
    """Add or replace `docs` in one transaction of their own (`keep_current`: see write_docs)."""
    async with store.transaction() as conn:
        await write_docs(conn, docs, keep_current=keep_current)


# Above every item id: "no upper bound" for items_to_index.
_NO_BOUND = 2**63 - 1


async def items_to_index(
    store: Store, *, below: int | None, limit: int, version: int | None = None
) -> list[Item]:
    """Return up to `limit` items with an id below `below` (None: any) that need indexing,
    newest first: those the index lacks, and with `version`, those whose row analysis
    `version` did not make (it lacks that analysis's mark)."""
    params: dict[str, object] = {"below": _NO_BOUND if below is None else below, "limit": limit}
    if version is None:
        missing = (
            "NOT EXISTS (SELECT 1 FROM search_docs f WHERE f.id = i.id)"
            if store.dialect == "postgresql"
            else "NOT EXISTS (SELECT 1 FROM search_fts f WHERE f.rowid = i.id)"
        )
    elif store.dialect == "postgresql":
        missing = (
            "NOT EXISTS (SELECT 1 FROM search_docs f WHERE f.id = i.id "
            "AND f.doc @@ CAST(:mark AS tsquery))"
        )
        params["mark"] = _quoted(analysis_mark(version))
    else:
        # The marked rows below the bound, collected once per call from the mark's doclist
        # (a lookup per item would run a full-text query per item).
        missing = (
            "i.id NOT IN (SELECT rowid FROM search_fts "
            "WHERE search_fts MATCH :mark AND rowid < :below)"
        )
        params["mark"] = fts5_expression(((analysis_mark(version),),))
    rows = await store.fetchall(
        f"SELECT {ITEM_COLUMNS} FROM items i WHERE i.id < :below AND {missing} "
        "ORDER BY i.id DESC LIMIT :limit",
        params,
    )
    return [item_from_row(r) for r in rows]


async def analyzer_version(store: Store) -> int:
    """Return the version of the text analysis the whole index was built with (0: none yet)."""
    row = await store.fetchone("SELECT analyzer_version FROM search_state WHERE id = 1")
    return int(row[0]) if row else 0


async def record_analyzer_version(store: Store, version: int) -> None:
    """Record that every row of the index was made by analysis `version`."""
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO search_state (id, analyzer_version) VALUES (1, ?) "
            "ON CONFLICT(id) DO UPDATE SET analyzer_version = excluded.analyzer_version",
            (version,),
        )


# ---------------------------------------------------------------------- searching

# The boost of the piece whose date is d.ts (a piece dated in the future counts as new); an SQL
# expression of the named parameters :boost, :now and :recency, per back end.
BOOST_SQL = "(1.0 + :boost * MIN(1.0, MAX(0.0, 1.0 - (:now - d.ts) / :recency)))"
PG_BOOST_SQL = (
    "(1.0 + CAST(:boost AS float8) * LEAST(1.0, GREATEST(0.0, "
    "1.0 - (CAST(:now AS float8) - d.ts) / CAST(:recency AS float8))))"
)

# SQLite, one statement, so a search is one trip to the database thread and one pass over the
# matches:
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

# PostgreSQL, in the same spirit:
# - hits: every match, found through the GIN index: PostgreSQL has no way to stop at the newest
#   :window, so one pass counts them all too (SQLite counts again only when its window is
#   full). A LIMIT straight on this scan would also invite the plan PostgreSQL caches for a
#   prepared statement after five runs to guess a small LIMIT and walk the whole primary key
#   for a rare word (17 ms instead of 0.4 at 30,000 pieces, growing with the archive);
# - m: the newest :window of them;
# - scored: each of those looked up once more, by id, for its tsvector and date: ts_rank over
#   the OR of the terms (:rq, see rank_tsquery) with weights {D, C, B, A} putting title (A)
#   words TITLE_WEIGHT/BODY_WEIGHT times above text (D) words, normalisation 1 (divided by
#   log2 of 1 + the piece's length in words, as bm25 favours short pieces), times the recency
#   boost, negated so that lower is better as on SQLite. (A subquery per id: as a join, this
#   was planned as a merge join reading the whole primary key.) The date comes from the same
#   row, so the recency floor is not needed;
# - ranked: the page, best first, ties going to the newer piece; the page's items are read.
_PG_SEARCH = f"""
WITH hits AS MATERIALIZED (
    SELECT id FROM search_docs WHERE doc @@ CAST(:q AS tsquery)
),
m AS MATERIALIZED (SELECT id FROM hits ORDER BY id DESC LIMIT :window),
scored AS MATERIALIZED (
    SELECT m.id, (
        SELECT -ts_rank(CAST(:weights AS real[]), d.doc, CAST(:rq AS tsquery), 1)
            * {PG_BOOST_SQL}
        FROM search_docs d WHERE d.id = m.id
    ) AS s
    FROM m
),
ranked AS MATERIALIZED (
    SELECT id, s FROM scored ORDER BY s, id DESC LIMIT :limit OFFSET :offset
)
SELECT r.s, (SELECT COUNT(*) FROM hits), {ITEM_COLUMNS}
FROM ranked r JOIN items i ON i.id = r.id
ORDER BY r.s, r.id DESC
"""


def pg_weights() -> list[float]:
    """ts_rank's weights of D, C, B and A lexemes (each at most 1): text, -, -, title."""
    return [BODY_WEIGHT / TITLE_WEIGHT, 0.0, 0.0, 1.0]


async def search(
    store: Store, groups: TermGroups, *, now: float, offset: int = 0, limit: int = 5
) -> SearchPage:
    """Return one page of the items matching `groups` (every group, any term of each).

    Best first: relevance with title words weighing more (bm25 on SQLite, ts_rank on
    PostgreSQL), made up to 1 + RECENCY_BOOST times better for recent pieces; ties go to the
    newer piece. When more than CANDIDATE_WINDOW items match, only the newest CANDIDATE_WINDOW
    are ranked: such a query is too broad for an old piece to be what the reader is after, and
    ranking every match would cost time in proportion to the archive.
    """
    started = time.perf_counter()
    try:
        return await _search(store, groups, now=now, offset=offset, limit=limit)
    finally:
        if store.on_search is not None:
            store.on_search(time.perf_counter() - started)


async def _search(
    store: Store, groups: TermGroups, *, now: float, offset: int, limit: int
) -> SearchPage:
    params: dict[str, object] = {
        "window": CANDIDATE_WINDOW,
        "boost": RECENCY_BOOST,
        "now": now,
        "recency": RECENCY_WINDOW,
        "limit": limit,
        "offset": offset,
    }
    if store.dialect == "postgresql":
        q = tsquery(groups)
        params |= {"q": q, "rq": rank_tsquery(groups), "weights": pg_weights()}
        rows = await store.fetchall(_PG_SEARCH, params)
        counted_all = True  # the statement counts every match
    else:
        q = fts5_expression(groups)
        params |= {"q": q, "title_weight": TITLE_WEIGHT, "body_weight": BODY_WEIGHT}
        rows = await store.fetchall(_SEARCH, params)
        counted_all = False  # the statement counts up to :window matches
    if not rows:
        total = await _count(store, q) if offset > 0 else 0
        return SearchPage(hits=(), has_more=False, offset=offset, total=total)
    total = int(rows[0][1])
    if total >= CANDIDATE_WINDOW and not counted_all:  # m was full: count beyond it
        total = await _count(store, q)
    hits = tuple(SearchHit(item_from_row(row, 2), float(row[0])) for row in rows)
    ranked = min(total, CANDIDATE_WINDOW)
    return SearchPage(hits=hits, has_more=offset + len(hits) < ranked, offset=offset, total=total)


async def _count(store: Store, q: str) -> int:
    """How many items match `q` (rendered for the store's back end)."""
    if store.dialect == "postgresql":
        sql = "SELECT COUNT(*) FROM search_docs WHERE doc @@ CAST(? AS tsquery)"
    else:
        sql = "SELECT COUNT(*) FROM search_fts WHERE search_fts MATCH ?"
    row = await store.fetchone(sql, (q,))
    return int(row[0]) if row else 0


async def bare_match(store: Store, groups: TermGroups, limit: int = 5) -> list[int]:
    """Return the ids of the best matches by relevance alone and nothing else (the benchmark's
    baseline): bm25 on SQLite, ts_rank on PostgreSQL, with default weights."""
    if store.dialect == "postgresql":
        rows = await store.fetchall(
            "SELECT id FROM search_docs WHERE doc @@ CAST(:q AS tsquery) "
            "ORDER BY ts_rank(doc, CAST(:q AS tsquery)) DESC LIMIT :limit",
            {"q": tsquery(groups), "limit": limit},
        )
    else:
        rows = await store.fetchall(
            "SELECT rowid FROM search_fts WHERE search_fts MATCH ? "
            "ORDER BY bm25(search_fts) LIMIT ?",
            (fts5_expression(groups), limit),
        )
    return [int(r[0]) for r in rows]
