"""All SQL of the bot: one aiosqlite connection, one short transaction per call, typed results."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from storage.backup import backup_before_migration, readonly_uri
from storage.migrations import MIGRATIONS, migrate
from storage.models import (
    Chat,
    ChatSettings,
    ChatType,
    Delivery,
    DeliveryState,
    DueDelivery,
    Feed,
    FeedStatus,
    Item,
    ItemOrigin,
    NewItem,
    OutcomeRecord,
    PollOutcome,
)

log = logging.getLogger(__name__)

# Channels go first, then groups, then private subscribers (lower sorts first).
PRIORITY = {
    ChatType.CHANNEL: 0,
    ChatType.SUPERGROUP: 1,
    ChatType.GROUP: 1,
    ChatType.PRIVATE: 2,
}


@dataclass(frozen=True, slots=True)
class QueueHead:
    """A chat's oldest pending delivery, as the publisher's scheduler sees it (no row bodies)."""

    delivery_id: int
    chat_id: int
    priority: int
    item_id: int
    next_attempt_at: float
    pending: int  # how many deliveries the chat has pending, this one included


# Runs inside store_poll's transaction with the items it inserted or changed (e.g. the search
# index keeping itself in step with the items table).
ItemHook = Callable[[aiosqlite.Connection, Sequence[Item]], Awaitable[None]]
# Told of each write transaction: its seconds, and whether SQLite took it (False: the store
# could not be written: locked by another process, read-only, disk full, I/O error).
WriteHook = Callable[[float, bool], None]
# Told how many seconds a search query took (storage.search).
SearchHook = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """The outbox at a glance, for readiness and metrics."""

    pending: int
    due: int  # pending and next_attempt_at <= now: not held for a retry
    oldest_due_at: float | None  # when the longest-waiting due row became due


_ITEM_COLUMNS = (
    "i.id, i.feed_id, i.lang, i.identity, i.link, i.title, i.summary, i.author, i.image_url, "
    "i.categories, i.published_at, i.first_seen_at, i.origin, i.content_hash"
)
_CHAT_COLUMNS = (
    "c.id, c.type, c.title, c.username, c.lang, c.languages, c.active, c.subscribed, c.paused, "
    "c.settings, c.added_by, c.deactivated_reason, c.created_at, c.updated_at"
)
_DELIVERY_COLUMNS = (
    "d.id, d.item_id, d.chat_id, d.state, d.priority, d.attempts, d.next_attempt_at, "
    "d.last_error, d.message_id, d.created_at, d.sent_at"
)


class SchemaMismatchError(RuntimeError):
    """A store opened read-only is at another schema version than this code's."""


class Store:
    """The bot's persistence: `await Store.open(path)`, then `await store.close()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # aiosqlite runs one connection on one thread; the lock keeps each call's statements
        # together so two coroutines never interleave inside one transaction.
        import asyncio

        self._lock = asyncio.Lock()
        self.item_hooks: list[ItemHook] = []

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) the SQLite file at `path` and bring its schema up to date.

        A new file is created 0600 (its -wal and -shm files take its mode); an existing one
        that needs a migration is first copied beside itself (storage.backup).
        """
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            except FileExistsError:
                await asyncio.to_thread(backup_before_migration, Path(path))
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA busy_timeout = 5000")
            await migrate(conn)
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    @classmethod
    async def open_readonly(cls, path: str | Path) -> Store:
        """Open an existing store for reading only: never created, never migrated.

        Raises FileNotFoundError for a missing file and SchemaMismatchError when its schema is
        not the one this code reads. Works while the bot is writing (WAL).
        """
        uri = await asyncio.to_thread(readonly_uri, Path(path))
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            async with conn.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            found, expected = (int(row[0]) if row else 0), MIGRATIONS[-1].version
            if found != expected:
                raise SchemaMismatchError(
                    f"the store {path} has schema version {found}; this code reads {expected}"
                )
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    # Timing and outcome hooks (health and metrics); set by the composition root.
    on_write: WriteHook | None = None
    on_search: SearchHook | None = None

    @asynccontextmanager
    async def _tx(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            started = time.perf_counter()  # the transaction's own time, not the lock's wait
            try:
                if durable:
                    await self._conn.execute("PRAGMA synchronous = FULL")
                try:
                    await self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield self._conn
                    except BaseException:
                        await self._conn.rollback()
                        raise
                    await self._conn.commit()
                finally:
                    if durable:
                        await self._conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.DatabaseError as exc:
                if self.on_write is not None and _cannot_write(exc):
                    self.on_write(time.perf_counter() - started, False)
                raise
            if self.on_write is not None:
                self.on_write(time.perf_counter() - started, True)

    async def probe_write(self) -> None:
        """Commit a real (self-cancelling) write, so an idle bot notices a store it cannot write.

        A no-op UPDATE would not do: SQLite skips writing a row overwritten by the same bytes.
        """
        async with self._tx() as conn:
            cursor = await conn.execute(
                "INSERT INTO events (at, kind, detail) VALUES (0, 'write_probe', '')"
            )
            await conn.execute("DELETE FROM events WHERE id = ?", (cursor.lastrowid,))

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock, self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self._lock, self._conn.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    # ------------------------------------------------------------------ feeds

    async def ensure_feed(self, url: str, lang: str) -> Feed:
        """Register a configured feed (keeping its state if known) and return it."""
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO feeds (url, lang) VALUES (?, ?) "
                "ON CONFLICT(url) DO UPDATE SET lang = excluded.lang",
                (url, lang),
            )
        feed = await self.get_feed_by_url(url)
        assert feed is not None
        return feed

    async def get_feed_by_url(self, url: str) -> Feed | None:
        row = await self._fetchone(_FEED_SELECT + " WHERE f.url = ?", (url,))
        return _feed(row) if row else None

    async def get_feed(self, feed_id: int) -> Feed | None:
        row = await self._fetchone(_FEED_SELECT + " WHERE f.id = ?", (feed_id,))
        return _feed(row) if row else None

    async def list_feeds(self) -> list[Feed]:
        rows = await self._fetchall(_FEED_SELECT + " ORDER BY f.id")
        return [_feed(r) for r in rows]

    async def record_not_modified(self, feed_id: int, now: float, next_poll_at: float) -> None:
        """Note a 304 answer: the feed is healthy and nothing changed."""
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE feeds SET status = 'ok', error_streak = 0, last_error = NULL, "
                "last_polled_at = ?, last_success_at = ?, next_poll_at = ? WHERE id = ?",
                (now, now, next_poll_at, feed_id),
            )

    async def record_feed_error(
        self, feed_id: int, error: str, now: float, next_poll_at: float
    ) -> int:
        """Note a failed poll; return the new error streak."""
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE feeds SET status = 'error', error_streak = error_streak + 1, "
                "last_error = ?, last_polled_at = ?, next_poll_at = ? WHERE id = ?",
                (error[:500], now, next_poll_at, feed_id),
            )
            await conn.execute(
                "INSERT INTO events (at, kind, feed_id, detail) VALUES (?, 'feed_error', ?, ?)",
                (now, feed_id, error[:500]),
            )
            async with conn.execute(
                "SELECT error_streak FROM feeds WHERE id = ?", (feed_id,)
            ) as cursor:
                row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def store_poll(
        self,
        feed_id: int,
        entries: Sequence[NewItem],
        *,
        etag: str | None,
        last_modified: str | None,
        now: float,
        next_poll_at: float,
        max_age: float,
        backfill: int,
        decide: Callable[[Item, Chat], str | None] | None = None,
    ) -> PollOutcome:
        """Store a successful poll in one transaction: new items, their outbox rows, feed state.

        `entries` come oldest first. On the feed's first successful poll every entry is backlog
        (except the newest `backfill`); later, an entry dated older than `max_age` is kept
        but not queued. Entries already known are never queued again. For each chat that takes
        the feed's language, `decide(item, chat)` may return a reason to skip it (a filter);
        paused chats are skipped with the reason "paused". Skipped rows are kept for /why.
        """
        async with self._tx() as conn:
            async with conn.execute(
                "SELECT lang, initialized FROM feeds WHERE id = ?", (feed_id,)
            ) as cursor:
                feed_row = await cursor.fetchone()
            if feed_row is None:
                raise LookupError(f"feed {feed_id} does not exist")
            lang = str(feed_row["lang"])
            first_poll = not feed_row["initialized"]

            known = await _known_identities(conn, feed_id, _all_identities(entries))
            fresh: list[NewItem] = []
            seen_now: set[str] = set()
            updated_identities: list[str] = []
            for entry in entries:
                stored_as = _stored_identity(entry, known)
                if stored_as is not None:
                    old_hash = known[stored_as]
                    if entry.content_hash and old_hash != entry.content_hash:
                        await _update_item_content(conn, feed_id, stored_as, entry)
                        updated_identities.append(stored_as)
                    continue
                if entry.identity in seen_now:
                    continue  # the same entry twice in one document
                seen_now.add(entry.identity)
                fresh.append(entry)

            # Only new entries are queued: a poll with none need not read every chat.
            targets = await _target_chats(conn, lang) if fresh else []
            new_items: list[Item] = []
            queued = 0
            backfill_from = len(fresh) - max(backfill, 0)
            for index, entry in enumerate(fresh):
                if first_poll and index < backfill_from:
                    origin = ItemOrigin.BACKLOG
                elif entry.published_at is not None and now - entry.published_at > max_age:
                    origin = ItemOrigin.TOO_OLD
                else:
                    origin = ItemOrigin.NEW
                cursor = await conn.execute(
                    "INSERT INTO items (feed_id, lang, identity, link, title, summary, author, "
                    "image_url, categories, published_at, first_seen_at, origin, content_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        feed_id,
                        lang,
                        entry.identity,
                        entry.link,
                        entry.title,
                        entry.summary,
                        entry.author,
                        entry.image_url,
                        json.dumps(list(entry.categories), ensure_ascii=False),
                        entry.published_at,
                        now,
                        origin.value,
                        entry.content_hash,
                    ),
                )
                item_id = int(cursor.lastrowid or 0)
                item = entry.stored(item_id, feed_id, lang, now, origin)
                new_items.append(item)
                if origin is ItemOrigin.NEW and targets:
                    # The same piece listed in two feeds (the same link) reaches a
                    # chat once: chats that already have it from the other feed are skipped.
                    already = await _chats_with_piece(conn, item)
                    rows = []
                    for chat in targets:
                        if chat.id in already:
                            continue
                        reason = (
                            "paused" if chat.paused else (decide(item, chat) if decide else None)
                        )
                        state = DeliveryState.SKIPPED if reason else DeliveryState.PENDING
                        queued += state is DeliveryState.PENDING
                        rows.append(
                            (item_id, chat.id, state.value, PRIORITY[chat.type], now, reason, now)
                        )
                    await conn.executemany(
                        "INSERT OR IGNORE INTO deliveries (item_id, chat_id, state, priority, "
                        "next_attempt_at, last_error, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )

            await conn.execute(
                "UPDATE feeds SET etag = ?, last_modified = ?, status = 'ok', error_streak = 0, "
                "last_error = NULL, last_polled_at = ?, last_success_at = ?, next_poll_at = ?, "
                "initialized = 1 WHERE id = ?",
                (etag, last_modified, now, now, next_poll_at, feed_id),
            )
            updated = await _items_by_identity(conn, feed_id, updated_identities)
            for hook in self.item_hooks:
                await hook(conn, [*new_items, *updated])
        return PollOutcome(new_items=tuple(new_items), queued=queued, updated_items=updated)

    async def unknown_identities(self, feed_id: int, entries: Sequence[NewItem]) -> set[str]:
        """Return the identities of the entries the feed has never stored (under any alias)."""
        async with self._lock:
            known = await _known_identities(self._conn, feed_id, _all_identities(entries))
        return {e.identity for e in entries if _stored_identity(e, known) is None}

    # ------------------------------------------------------------------ items

    async def find_items_by_link(self, link: str) -> list[Item]:
        rows = await self._fetchall(
            f"SELECT {_ITEM_COLUMNS} FROM items i WHERE i.link = ? ORDER BY i.id", (link,)
        )
        return [_item(r) for r in rows]

    async def latest_items(self, langs: Iterable[str] | None, limit: int) -> list[Item]:
        """Return the newest items (by publication, else first sight), optionally by language."""
        params: list[Any] = []
        where = ""
        lang_list = list(langs) if langs is not None else None
        if lang_list is not None:
            where = f"WHERE i.lang IN ({','.join('?' * len(lang_list))})"
            params.extend(lang_list)
        params.append(limit)
        rows = await self._fetchall(
            f"SELECT {_ITEM_COLUMNS} FROM items i {where} "
            "ORDER BY COALESCE(i.published_at, i.first_seen_at) DESC, i.id DESC LIMIT ?",
            params,
        )
        return [_item(r) for r in rows]

    async def count_items(self) -> int:
        row = await self._fetchone("SELECT COUNT(*) FROM items")
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ chats

    async def upsert_chat(
        self,
        chat_id: int,
        chat_type: ChatType,
        *,
        title: str | None,
        username: str | None,
        default_lang: str,
        now: float,
        added_by: int | None = None,
        subscribed: bool | None = None,
        active: bool = True,
    ) -> Chat:
        """Create or refresh a chat; an existing chat keeps its language and settings."""
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO chats (id, type, title, username, lang, languages, active, "
                "subscribed, added_by, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET type = excluded.type, title = excluded.title, "
                "username = excluded.username, active = excluded.active, "
                "deactivated_reason = CASE WHEN excluded.active THEN NULL "
                "ELSE deactivated_reason END, "
                "added_by = COALESCE(excluded.added_by, added_by), "
                "subscribed = CASE WHEN ? IS NULL THEN subscribed ELSE excluded.subscribed END, "
                "updated_at = excluded.updated_at",
                (
                    chat_id,
                    chat_type.value,
                    title,
                    username,
                    default_lang,
                    default_lang,
                    int(active),
                    int(bool(subscribed)),
                    added_by,
                    now,
                    now,
                    None if subscribed is None else int(subscribed),
                ),
            )
        chat = await self.get_chat(chat_id)
        assert chat is not None
        return chat

    async def get_chat(self, chat_id: int) -> Chat | None:
        row = await self._fetchone(
            f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.id = ?", (chat_id,)
        )
        return _chat(row) if row else None

    async def list_chats(self, *, active_only: bool = False) -> list[Chat]:
        where = "WHERE c.active = 1" if active_only else ""
        rows = await self._fetchall(f"SELECT {_CHAT_COLUMNS} FROM chats c {where} ORDER BY c.id")
        return [_chat(r) for r in rows]

    async def update_chat(
        self,
        chat_id: int,
        now: float,
        *,
        lang: str | None = None,
        languages: Sequence[str] | None = None,
        subscribed: bool | None = None,
        paused: bool | None = None,
        settings: ChatSettings | None = None,
    ) -> Chat | None:
        """Change the given fields of a chat; return the updated chat (None if unknown)."""
        sets: list[str] = []
        params: list[Any] = []
        if lang is not None:
            sets.append("lang = ?")
            params.append(lang)
        if languages is not None:
            sets.append("languages = ?")
            params.append(",".join(languages))
        if subscribed is not None:
            sets.append("subscribed = ?")
            params.append(int(subscribed))
        if paused is not None:
            sets.append("paused = ?")
            params.append(int(paused))
        if settings is not None:
            sets.append("settings = ?")
            params.append(settings.to_json())
        if sets:
            sets.append("updated_at = ?")
            params.extend([now, chat_id])
            async with self._tx() as conn:
                await conn.execute(f"UPDATE chats SET {', '.join(sets)} WHERE id = ?", params)
        return await self.get_chat(chat_id)

    async def deactivate_chat(self, chat_id: int, reason: str, now: float) -> int:
        """Stop posting to a chat (blocked, kicked, gone); cancel its pending deliveries."""
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE chats SET active = 0, deactivated_reason = ?, updated_at = ? WHERE id = ?",
                (reason[:300], now, chat_id),
            )
            cursor = await conn.execute(
                "UPDATE deliveries SET state = 'cancelled', last_error = ? "
                "WHERE chat_id = ? AND state = 'pending'",
                (reason[:300], chat_id),
            )
            return cursor.rowcount

    async def migrate_chat(self, old_id: int, new_id: int, now: float) -> Chat | None:
        """Move a chat to the id Telegram gave it when a group became a supergroup."""
        async with self._tx() as conn:
            async with conn.execute("SELECT 1 FROM chats WHERE id = ?", (new_id,)) as cursor:
                exists = await cursor.fetchone() is not None
            if exists:
                # The new chat is already known: move what is still pending to it, drop the old.
                await conn.execute(
                    "UPDATE OR IGNORE deliveries SET chat_id = ? WHERE chat_id = ?",
                    (new_id, old_id),
                )
                await conn.execute(
                    "UPDATE chats SET subscribed = MAX(subscribed, "
                    "(SELECT subscribed FROM chats WHERE id = ?)), updated_at = ? WHERE id = ?",
                    (old_id, now, new_id),
                )
                await conn.execute("DELETE FROM chats WHERE id = ?", (old_id,))
            else:
                # ON UPDATE CASCADE carries the deliveries along.
                await conn.execute(
                    "UPDATE chats SET id = ?, type = 'supergroup', updated_at = ? WHERE id = ?",
                    (new_id, now, old_id),
                )
        return await self.get_chat(new_id)

    # ------------------------------------------------------------------ deliveries

    async def pending_heads(self) -> list[QueueHead]:
        """Return every chat's oldest pending delivery, channels first, then the oldest piece."""
        rows = await self._fetchall(
            """
            WITH heads AS (
                SELECT chat_id, MIN(item_id) AS item_id, COUNT(*) AS pending
                FROM deliveries WHERE state = 'pending' GROUP BY chat_id
            )
            SELECT d.id, d.chat_id, d.priority, d.item_id, d.next_attempt_at, h.pending
            FROM heads h
            JOIN deliveries d ON d.item_id = h.item_id AND d.chat_id = h.chat_id
            ORDER BY d.priority, d.item_id, d.id
            """
        )
        return [QueueHead(*row) for row in rows]

    async def due_by_ids(self, delivery_ids: Sequence[int], now: float) -> list[DueDelivery]:
        """Load those of `delivery_ids` that are still pending and due, in the order given."""
        found: dict[int, DueDelivery] = {}
        for start in range(0, len(delivery_ids), 500):
            chunk = delivery_ids[start : start + 500]
            rows = await self._fetchall(
                f"SELECT {_DELIVERY_COLUMNS}, {_ITEM_COLUMNS}, {_CHAT_COLUMNS} "
                "FROM deliveries d JOIN items i ON i.id = d.item_id "
                "JOIN chats c ON c.id = d.chat_id "
                f"WHERE d.state = 'pending' AND d.next_attempt_at <= ? "
                f"AND d.id IN ({','.join('?' * len(chunk))})",
                [now, *chunk],
            )
            for row in rows:
                due = _due(row)
                found[due.delivery.id] = due
        return [found[i] for i in delivery_ids if i in found]

    async def record_outcomes(
        self, records: Sequence[OutcomeRecord], *, durable: bool = True
    ) -> None:
        """Write the outcomes of several sends in one transaction.

        A batch that records a send is committed with synchronous=FULL: once this returns,
        a power loss cannot take the record back and let the piece be sent again. (Other
        commits run with NORMAL, which in WAL mode may lose the last ones on a power loss
        but never corrupts the file: a lost retry or poll is simply done again.)
        `durable=False` exists only to measure what FULL costs (bench/durability_bench.py).
        """
        sent = [r for r in records if r.state is DeliveryState.SENT]
        async with self._tx(durable=durable and bool(sent)) as conn:
            if sent:
                await conn.executemany(
                    "UPDATE deliveries SET state = 'sent', message_id = ?, sent_at = ?, "
                    "attempts = attempts + 1, last_error = NULL "
                    "WHERE id = ? AND state = 'pending'",
                    [(r.message_id, r.at, r.delivery_id) for r in sent],
                )
            retries = [r for r in records if r.state is DeliveryState.PENDING]
            if retries:
                await conn.executemany(
                    "UPDATE deliveries SET attempts = attempts + ?, last_error = ?, "
                    "next_attempt_at = ? WHERE id = ? AND state = 'pending'",
                    [
                        (int(r.count_attempt), (r.error or "")[:500], r.next_attempt_at,
                         r.delivery_id)
                        for r in retries
                    ],
                )  # fmt: skip
            failed = [r for r in records if r.state is DeliveryState.FAILED]
            if failed:
                await conn.executemany(
                    "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, "
                    "last_error = ?, sent_at = ? WHERE id = ? AND state = 'pending'",
                    [((r.error or "")[:500], r.at, r.delivery_id) for r in failed],
                )
            events = [r for r in records if r.event]
            if events:
                await conn.executemany(
                    "INSERT INTO events (at, kind, chat_id, detail) VALUES (?, ?, ?, ?)",
                    [(r.at, r.event, r.chat_id, (r.error or "")[:500]) for r in events],
                )

    async def mark_sent_many(self, sent: Sequence[tuple[int, int | None, float]]) -> None:
        """Record several sends (delivery id, message id, time) in one transaction."""
        async with self._tx() as conn:
            await conn.executemany(
                "UPDATE deliveries SET state = 'sent', message_id = ?, sent_at = ?, "
                "attempts = attempts + 1, last_error = NULL WHERE id = ? AND state = 'pending'",
                [(message_id, at, delivery_id) for delivery_id, message_id, at in sent],
            )

    async def mark_retry(
        self, delivery_id: int, error: str, next_attempt_at: float, *, count_attempt: bool = True
    ) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE deliveries SET attempts = attempts + ?, last_error = ?, "
                "next_attempt_at = ? WHERE id = ?",
                (int(count_attempt), error[:500], next_attempt_at, delivery_id),
            )

    async def mark_failed(self, delivery_id: int, error: str, now: float) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, "
                "last_error = ?, sent_at = ? WHERE id = ?",
                (error[:500], now, delivery_id),
            )

    async def get_delivery(self, item_id: int, chat_id: int) -> Delivery | None:
        row = await self._fetchone(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d WHERE d.item_id = ? AND d.chat_id = ?",
            (item_id, chat_id),
        )
        return _delivery(row) if row else None

    async def delivery_counts(self, since: float | None = None) -> dict[DeliveryState, int]:
        """Count deliveries by state (created since `since` when given)."""
        where, params = ("WHERE created_at >= ?", [since]) if since is not None else ("", [])
        rows = await self._fetchall(
            f"SELECT state, COUNT(*) FROM deliveries {where} GROUP BY state", params
        )
        counts = dict.fromkeys(DeliveryState, 0)
        for row in rows:
            counts[DeliveryState(row[0])] = int(row[1])
        return counts

    async def outbox_depth(self, now: float) -> OutboxDepth:
        """Count pending deliveries and those due at `now` (pending rows only, by their index)."""
        row = await self._fetchone(
            "SELECT COUNT(*), TOTAL(next_attempt_at <= ?), "
            "MIN(CASE WHEN next_attempt_at <= ? THEN next_attempt_at END) "
            "FROM deliveries WHERE state = 'pending'",
            (now, now),
        )
        if row is None:
            return OutboxDepth(0, 0, None)
        oldest = None if row[2] is None else float(row[2])
        return OutboxDepth(int(row[0]), int(row[1]), oldest)

    async def prune_deliveries(self, older_than: float, *, chunk: int = 10_000) -> int:
        """Delete finished delivery rows older than `older_than`; items are kept for search."""
        total = 0
        while True:
            # A chunk per transaction: the publisher's writes never wait for a long delete.
            async with self._tx() as conn:
                cursor = await conn.execute(
                    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "
                    "WHERE created_at < ? AND state != 'pending' LIMIT ?)",
                    (older_than, chunk),
                )
                deleted = cursor.rowcount
            total += deleted
            if deleted < chunk:
                break
        async with self._tx() as conn:
            await conn.execute("DELETE FROM events WHERE at < ?", (older_than,))
        return total

    # ------------------------------------------------------------------ events

    async def record_event(
        self,
        kind: str,
        detail: str,
        now: float,
        *,
        chat_id: int | None = None,
        feed_id: int | None = None,
    ) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO events (at, kind, chat_id, feed_id, detail) VALUES (?, ?, ?, ?, ?)",
                (now, kind, chat_id, feed_id, detail[:500]),
            )

    async def recent_events(self, limit: int = 5) -> list[tuple[float, str, int | None, str]]:
        rows = await self._fetchall(
            "SELECT at, kind, chat_id, detail FROM events ORDER BY at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [(float(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]


# ---------------------------------------------------------------------- helpers

_FEED_SELECT = (
    "SELECT f.id, f.url, f.lang, f.etag, f.last_modified, f.status, f.error_streak, "
    "f.last_error, f.last_polled_at, f.last_success_at, f.next_poll_at, f.initialized, "
    "(SELECT COUNT(*) FROM items WHERE feed_id = f.id) AS item_count FROM feeds f"
)


async def _known_identities(
    conn: aiosqlite.Connection, feed_id: int, identities: Sequence[str]
) -> dict[str, str]:
    known: dict[str, str] = {}
    # SQLite caps bound parameters; 500 at a time stays far below any build's limit.
    for start in range(0, len(identities), 500):
        chunk = identities[start : start + 500]
        async with conn.execute(
            f"SELECT identity, content_hash FROM items WHERE feed_id = ? "
            f"AND identity IN ({','.join('?' * len(chunk))})",
            [feed_id, *chunk],
        ) as cursor:
            for row in await cursor.fetchall():
                known[str(row[0])] = str(row[1])
    return known


def _all_identities(entries: Sequence[NewItem]) -> list[str]:
    return [identity for e in entries for identity in (e.identity, *e.aliases)]


def _stored_identity(entry: NewItem, known: Mapping[str, str]) -> str | None:
    """Return the identity `entry` is stored under (its own or an alias), or None if new."""
    if entry.identity in known:
        return entry.identity
    return next((alias for alias in entry.aliases if alias in known), None)


async def _update_item_content(
    conn: aiosqlite.Connection, feed_id: int, identity: str, entry: NewItem
) -> None:
    """Keep the stored text current when the site edits a piece (it is not posted again)."""
    await conn.execute(
        "UPDATE items SET title = ?, summary = ?, author = ?, image_url = ?, categories = ?, "
        "content_hash = ? WHERE feed_id = ? AND identity = ?",
        (
            entry.title,
            entry.summary,
            entry.author,
            entry.image_url,
            json.dumps(list(entry.categories), ensure_ascii=False),
            entry.content_hash,
            feed_id,
            identity,
        ),
    )


async def _chats_with_piece(conn: aiosqlite.Connection, item: Item) -> set[int]:
    """Return the chats that have (or had) a delivery of another item with `item`'s link."""
    async with conn.execute(
        "SELECT DISTINCT d.chat_id FROM items i JOIN deliveries d ON d.item_id = i.id "
        "WHERE i.link = ? AND i.id != ?",
        (item.link, item.id),
    ) as cursor:
        return {int(row[0]) for row in await cursor.fetchall()}


async def _target_chats(conn: aiosqlite.Connection, lang: str) -> list[Chat]:
    """Return every reachable, subscribed chat that takes posts in `lang` (paused ones too)."""
    async with conn.execute(
        f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.active = 1 AND c.subscribed = 1"
    ) as cursor:
        rows = await cursor.fetchall()
    return [chat for chat in map(_chat, rows) if lang in chat.languages]


async def _items_by_identity(
    conn: aiosqlite.Connection, feed_id: int, identities: Sequence[str]
) -> tuple[Item, ...]:
    items: list[Item] = []
    for identity in identities:
        async with conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items i WHERE i.feed_id = ? AND i.identity = ?",
            (feed_id, identity),
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None:
            items.append(_item(row))
    return tuple(items)


def _feed(row: sqlite3.Row) -> Feed:
    return Feed(
        id=row["id"],
        url=row["url"],
        lang=row["lang"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        status=FeedStatus(row["status"]),
        error_streak=row["error_streak"],
        last_error=row["last_error"],
        last_polled_at=row["last_polled_at"],
        last_success_at=row["last_success_at"],
        next_poll_at=row["next_poll_at"],
        initialized=bool(row["initialized"]),
        item_count=row["item_count"],
    )


def _item(row: sqlite3.Row, offset: int = 0) -> Item:
    # Called for every row of a search page or a fan-out: unpacking and the origin lookup
    # table are about a third cheaper than indexing and calling the enum.
    (item_id, feed_id, lang, identity, link, title, summary, author, image_url, categories,
     published_at, first_seen_at, origin, content_hash) = row[offset : offset + 14]  # fmt: skip
    return Item(
        id=item_id,
        feed_id=feed_id,
        lang=lang,
        identity=identity,
        link=link,
        title=title,
        summary=summary,
        author=author,
        image_url=image_url,
        categories=tuple(json.loads(categories)) if categories and categories != "[]" else (),
        published_at=published_at,
        first_seen_at=first_seen_at,
        origin=_ORIGINS[origin],
        content_hash=content_hash,
    )


_ORIGINS = {origin.value: origin for origin in ItemOrigin}


def _chat(row: sqlite3.Row, offset: int = 0) -> Chat:
    r = list(row)[offset : offset + 14]
    return Chat(
        id=r[0],
        type=ChatType(r[1]),
        title=r[2],
        username=r[3],
        lang=r[4],
        languages=tuple(x for x in str(r[5]).split(",") if x),
        active=bool(r[6]),
        subscribed=bool(r[7]),
        paused=bool(r[8]),
        settings=ChatSettings.from_json(r[9]),
        added_by=r[10],
        deactivated_reason=r[11],
        created_at=r[12],
        updated_at=r[13],
    )


def _delivery(row: sqlite3.Row, offset: int = 0) -> Delivery:
    r = list(row)[offset : offset + 11]
    return Delivery(
        id=r[0],
        item_id=r[1],
        chat_id=r[2],
        state=DeliveryState(r[3]),
        priority=r[4],
        attempts=r[5],
        next_attempt_at=r[6],
        last_error=r[7],
        message_id=r[8],
        created_at=r[9],
        sent_at=r[10],
    )


def _due(row: sqlite3.Row) -> DueDelivery:
    return DueDelivery(delivery=_delivery(row, 0), item=_item(row, 11), chat=_chat(row, 25))


def _cannot_write(exc: sqlite3.DatabaseError) -> bool:
    """Whether a failed write means the store itself refuses writes (not a bad statement)."""
    return not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError
    )
