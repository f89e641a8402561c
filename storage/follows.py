"""Followed topics (migration 12): who follows what, and the inverted index that matches pieces.

A topic is a set of words that must all occur in a piece, each word standing for every term the
analysis gives it in every language (bot.services.topics makes them). Topics are shared: the
chats that follow "Иран нефть" point at one `topics` row, so the index holds each distinct
topic's terms once, and matching a piece costs the distinct topics its terms touch, not the
chats that follow them (the chats come in only when the matches are expanded into deliveries).

Matching reads the index for the terms a poll's pieces offer (postings(): one probe of
`topic_terms`' primary key per distinct term) and keeps, for each piece, the topics whose every
word it has (match(), plain CPU work). Only then do chats come in: the fan-out statement of
storage.store expands those (piece, topic) matches into their followers (FOLLOWED_SQL), so
matches become delivery rows in the same transaction that stores the pieces.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from storage.backends import Conn, Row
from storage.db import Database

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class TopicTerms:
    """A topic as the analysis made it: its identity and, for each word, its index terms."""

    words: str  # the folded words, space-separated: the same topic whatever its spelling
    terms: tuple[tuple[str, ...], ...]  # per word: every tagged term it may appear as


@dataclass(frozen=True, slots=True)
class Follow:
    id: int
    chat_id: int
    topic_id: int
    text: str  # as the reader typed it (cleaned)
    any_lang: bool  # False: only pieces in the chat's languages
    created_at: float


class TooMany(Exception):
    """The chat already follows as many topics as it may."""


_FOLLOW_COLUMNS = "f.id, f.chat_id, f.topic_id, f.text, f.any_lang, f.created_at"


def _follow(row: Row) -> Follow:
    return Follow(
        id=int(row[0]),
        chat_id=int(row[1]),
        topic_id=int(row[2]),
        text=str(row[3]),
        any_lang=bool(row[4]),
        created_at=float(row[5]),
    )


async def add(
    db: Database,
    chat_id: int,
    text: str,
    topic: TopicTerms,
    *,
    any_lang: bool,
    analyzer: int,
    limit: int,
    now: float,
) -> tuple[Follow, bool]:
    """Make `chat_id` follow `topic`; return the follow and whether it is new.

    Following a topic the chat already follows (under any spelling of its words) returns the
    existing follow unchanged. Raises TooMany when the chat follows `limit` topics already.
    """
    async with db.transaction() as conn:
        if conn.dialect == "postgresql":
            # The chat's row is the lock that keeps two instances' follows under the limit
            # (SQLite's write transactions are serial already).
            await conn.fetchone("SELECT 1 FROM chats WHERE id = ? FOR UPDATE", (chat_id,))
        topic_id = await _topic_id(conn, topic, analyzer)
        row = await conn.fetchone(
            f"SELECT {_FOLLOW_COLUMNS} FROM follows f WHERE f.chat_id = ? AND f.topic_id = ?",
            (chat_id, topic_id),
        )
        if row is not None:
            return _follow(row), False
        count = await conn.fetchval("SELECT COUNT(*) FROM follows WHERE chat_id = ?", (chat_id,))
        if int(count or 0) >= limit:
            raise TooMany
        follow_id = await conn.insert(
            "INSERT INTO follows (chat_id, topic_id, text, any_lang, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (chat_id, topic_id, text, int(any_lang), now),
        )
        return Follow(follow_id, chat_id, topic_id, text, any_lang, now), True


async def _topic_id(conn: Conn, topic: TopicTerms, analyzer: int) -> int:
    """The id of `topic`'s row, made with its index terms when no chat followed it yet.

    The insert does nothing when another transaction made the same topic first (two chats, two
    instances); its row is then read, and waited for until that transaction commits.
    """
    made = await conn.fetchval(
        "INSERT INTO topics (words, size, analyzer) VALUES (?, ?, ?) "
        "ON CONFLICT (words) DO NOTHING RETURNING id",
        (topic.words, len(topic.terms), analyzer),
    )
    if made is None:
        return int(await conn.fetchval("SELECT id FROM topics WHERE words = ?", (topic.words,)))
    await _write_terms(conn, int(made), topic)
    await changed(conn)
    return int(made)


async def _write_terms(conn: Conn, topic_id: int, topic: TopicTerms) -> None:
    size = len(topic.terms)
    await conn.executemany(
        "INSERT INTO topic_terms (term, topic_id, word, size) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(term, topic_id, word, size) for word, terms in enumerate(topic.terms) for term in terms],
    )


async def of_chat(db: Database, chat_id: int) -> list[Follow]:
    """The chat's follows, oldest first."""
    rows = await db.fetchall(
        f"SELECT {_FOLLOW_COLUMNS} FROM follows f WHERE f.chat_id = ? ORDER BY f.id", (chat_id,)
    )
    return [_follow(row) for row in rows]


async def get(db: Database, chat_id: int, follow_id: int) -> Follow | None:
    """One of the chat's follows (None when it is not the chat's, or gone)."""
    row = await db.fetchone(
        f"SELECT {_FOLLOW_COLUMNS} FROM follows f WHERE f.id = ? AND f.chat_id = ?",
        (follow_id, chat_id),
    )
    return _follow(row) if row is not None else None


async def by_words(db: Database, chat_id: int, words: str) -> Follow | None:
    """The chat's follow of the topic whose folded words are `words` (None: it follows none)."""
    row = await db.fetchone(
        f"SELECT {_FOLLOW_COLUMNS} FROM follows f JOIN topics t ON t.id = f.topic_id "
        "WHERE f.chat_id = ? AND t.words = ?",
        (chat_id, words),
    )
    return _follow(row) if row is not None else None


async def remove(db: Database, chat_id: int, follow_id: int) -> Follow | None:
    """Stop the chat following a topic; return what it followed (None: it did not).

    A topic nobody follows any more leaves the index with its terms.
    """
    async with db.transaction() as conn:
        row = await conn.fetchone(
            f"SELECT {_FOLLOW_COLUMNS} FROM follows f WHERE f.id = ? AND f.chat_id = ?",
            (follow_id, chat_id),
        )
        if row is None:
            return None
        follow = _follow(row)
        await conn.execute("DELETE FROM follows WHERE id = ?", (follow_id,))
        await _drop_if_orphan(conn, follow.topic_id)
        return follow


async def _drop_if_orphan(conn: Conn, topic_id: int) -> None:
    dropped = await conn.execute(
        "DELETE FROM topics WHERE id = ? AND NOT EXISTS (SELECT 1 FROM follows WHERE topic_id = ?)",
        (topic_id, topic_id),
    )
    if dropped:
        await changed(conn)


async def drop_orphans(conn: Conn) -> None:
    """Delete the topics nobody follows (after chats were merged or deleted)."""
    if await conn.execute(
        "DELETE FROM topics WHERE NOT EXISTS (SELECT 1 FROM follows f WHERE f.topic_id = topics.id)"
    ):
        await changed(conn)


async def changed(conn: Conn) -> None:
    """Count a change of the set of topics or of their terms (see vocabulary())."""
    await conn.execute("UPDATE topics_state SET version = version + 1 WHERE id = 1")


async def set_any_lang(db: Database, chat_id: int, follow_id: int, any_lang: bool) -> Follow | None:
    """Set whether a follow takes pieces in every language; None when it is not the chat's."""
    async with db.transaction() as conn:
        changed = await conn.execute(
            "UPDATE follows SET any_lang = ? WHERE id = ? AND chat_id = ?",
            (int(any_lang), follow_id, chat_id),
        )
        if not changed:
            return None
        row = await conn.fetchone(
            f"SELECT {_FOLLOW_COLUMNS} FROM follows f WHERE f.id = ?", (follow_id,)
        )
        return _follow(row) if row is not None else None


async def remove_all(db: Database, chat_id: int) -> int:
    """Drop every follow of a chat (it left, or was disconnected); return how many."""
    async with db.transaction() as conn:
        topic_ids = [
            int(r[0])
            for r in await conn.fetchall(
                "SELECT topic_id FROM follows WHERE chat_id = ?", (chat_id,)
            )
        ]
        removed = await conn.execute("DELETE FROM follows WHERE chat_id = ?", (chat_id,))
        for topic_id in topic_ids:
            await _drop_if_orphan(conn, topic_id)
        return removed


async def version(db: Database) -> int | None:
    """The topics' change counter; None when no chat follows a topic."""
    row = await db.fetchone(
        "SELECT version FROM topics_state WHERE id = 1 AND EXISTS (SELECT 1 FROM topics)"
    )
    return int(row[0]) if row is not None else None


async def vocabulary(db: Database, lang: str) -> tuple[int, frozenset[str]]:
    """Every term of the index tagged with `lang`, and the change counter it goes with.

    A poll sends only the pieces' terms that some topic has (a piece offers about a hundred,
    topics use a few), so the index query probes a handful of terms per piece. The set is a
    process's copy of the store's index, read again whenever the counter moves.
    """
    prefix = f"{lang}0"
    async with db.reading() as conn:
        counter = await conn.fetchval("SELECT version FROM topics_state WHERE id = 1")
        rows = await conn.fetchall(
            "SELECT DISTINCT term FROM topic_terms WHERE term >= ? AND term < ?",
            (prefix, f"{lang}1"),
        )
    return int(counter or 0), frozenset(str(r[0]) for r in rows)


async def stale_topics(db: Database, analyzer: int, limit: int = 500) -> list[tuple[int, str]]:
    """Topics whose terms an older analysis made: (id, text as one follower typed it), to be
    analysed again (from typed text: the folded words have lost letters the analysis reads)."""
    rows = await db.fetchall(
        "SELECT t.id, COALESCE((SELECT MIN(f.text) FROM follows f WHERE f.topic_id = t.id), "
        "t.words) FROM topics t WHERE t.analyzer != ? ORDER BY t.id LIMIT ?",
        (analyzer, limit),
    )
    return [(int(r[0]), str(r[1])) for r in rows]


async def reanalyse(db: Database, topic_id: int, topic: TopicTerms, analyzer: int) -> None:
    """Replace a topic's index terms with those of the current analysis."""
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM topic_terms WHERE topic_id = ?", (topic_id,))
        await conn.execute(
            "UPDATE topics SET size = ?, analyzer = ? WHERE id = ?",
            (len(topic.terms), analyzer, topic_id),
        )
        await _write_terms(conn, topic_id, topic)
        await changed(conn)


# --------------------------------------------------------------------------- matching

# A posting of the index: (topic id, which word of it, how many words it has).
Posting = tuple[int, int, int]


async def postings(
    db: Database, terms: Iterable[str], chunk: int = 500
) -> dict[str, list[Posting]]:
    """The index's postings of `terms` (those it has): term -> [(topic, word, size), ...]."""
    wanted = sorted(set(terms))
    found: dict[str, list[Posting]] = {}
    async with db.reading() as conn:
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            rows = await conn.fetchall(
                "SELECT term, topic_id, word, size FROM topic_terms "
                f"WHERE term IN ({', '.join('?' * len(part))})",
                part,
            )
            for term, topic_id, word, size in rows:
                found.setdefault(str(term), []).append((int(topic_id), int(word), int(size)))
    return found


def match(
    offered: Mapping[K, Iterable[str]], index: Mapping[str, Sequence[Posting]]
) -> dict[K, tuple[int, ...]]:
    """For each piece (its terms, by key), the topics it matches: those whose every word has a
    term among the piece's. Pieces matching nothing are left out (CPU work of a poll's size)."""
    found: dict[K, tuple[int, ...]] = {}
    for key, terms in offered.items():
        whole: set[int] = set()
        partial: dict[int, set[int]] = {}
        for term in terms:
            for topic_id, word, size in index.get(term, ()):
                if size == 1:
                    whole.add(topic_id)
                else:
                    words = partial.setdefault(topic_id, set())
                    words.add(word)
                    if len(words) == size:
                        whole.add(topic_id)
        if whole:
            found[key] = tuple(sorted(whole))
    return found


# The poll's matches, from one JSON parameter {item id: [topic ids]}.
_HITS = {
    "sqlite": "SELECT CAST(p.key AS INTEGER), t.value "
    "FROM json_each(:hits) p, json_each(p.value) t",
    "postgresql": "SELECT p.key::bigint, t.value::bigint "
    "FROM jsonb_each(CAST(:hits AS jsonb)) p, jsonb_array_elements_text(p.value) t",
}

# (piece, chat) for every chat following a topic the piece matches, the piece being in one of
# the chat's languages unless the follow takes every language. Reachable chats only;
# subscription and pause are the fan-out's concern. CTEs to put in front of a statement that
# reads `followed(item_id, chat_id)`.
FOLLOWED_SQL = """
hits(item_id, topic_id) AS MATERIALIZED ({hits}),
followed(item_id, chat_id) AS MATERIALIZED (
    SELECT DISTINCT h.item_id, f.chat_id
    FROM hits h JOIN follows f ON f.topic_id = h.topic_id
    JOIN items i ON i.id = h.item_id
    JOIN chats c ON c.id = f.chat_id
    WHERE c.active = 1
      AND (f.any_lang = 1 OR ',' || c.languages || ',' LIKE '%,' || i.lang || ',%')
)
"""


def followed_sql(dialect: str) -> str:
    """FOLLOWED_SQL for `dialect`, reading the matches from the `:hits` parameter."""
    return FOLLOWED_SQL.format(hits=_HITS[dialect])


def hits_parameter(hits: Mapping[int, Sequence[int]]) -> str:
    """The `:hits` parameter: {item id: the topics it matches}."""
    return json.dumps({str(k): list(v) for k, v in hits.items()})


async def followers(db: Database, hits: Mapping[int, Sequence[int]]) -> set[tuple[int, int]]:
    """(item id, chat id) for each stored piece in `hits` and each chat following one of its
    topics (what the fan-out queues for followers, without queueing it)."""
    if not hits:
        return set()
    rows = await db.fetchall(
        f"WITH {followed_sql(db.dialect)} SELECT item_id, chat_id FROM followed",
        {"hits": hits_parameter(hits)},
    )
    return {(int(r[0]), int(r[1])) for r in rows}
