"""Storage for search paging keys: which chat searched what, under which unguessable key.

A key is only ever read back together with the chat it was made in, so a key copied into
another chat's callback finds nothing. Rows are pruned by age and by count on every insert.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.store import Store


@dataclass(frozen=True, slots=True)
class SavedSearch:
    """A search as it was made: the text shown, the words looked for, the chat's language."""

    text: str
    words: tuple[str, ...]
    lang: str
    created_at: float


async def save(
    store: Store,
    key: str,
    chat_id: int,
    search: SavedSearch,
    *,
    max_age: float,
    per_chat: int,
) -> None:
    """Store `search` under `key` for `chat_id`; drop keys older than `max_age` and the chat's
    keys beyond its `per_chat` newest, in the same transaction."""
    now = search.created_at
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM search_keys WHERE created_at < ?", (now - max_age,))
        await conn.execute(
            "INSERT INTO search_keys (key, chat_id, query, words, lang, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, chat_id, search.text, " ".join(search.words), search.lang, now),
        )
        await conn.execute(
            "DELETE FROM search_keys WHERE chat_id = ? AND key NOT IN (SELECT key FROM "
            f"search_keys WHERE chat_id = ? ORDER BY created_at DESC, {_ORDER[conn.dialect]} DESC "
            "LIMIT ?)",
            (chat_id, chat_id, per_chat),
        )


async def load(
    store: Store, key: str, chat_id: int, *, now: float, max_age: float
) -> SavedSearch | None:
    """Return the search saved under `key` by `chat_id`, None when there is none (any more)."""
    row = await store.fetchone(
        "SELECT query, words, lang, created_at FROM search_keys "
        "WHERE key = ? AND chat_id = ? AND created_at >= ?",
        (key, chat_id, now - max_age),
    )
    if row is None:
        return None
    return SavedSearch(row[0], tuple(row[1].split()), row[2], row[3])


# Keys saved in the same instant: the later one is kept (SQLite's rowid, PostgreSQL's seq).
_ORDER = {"sqlite": "rowid", "postgresql": "seq"}
