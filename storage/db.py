"""The storage layer's public base: one connection, short transactions, reads, row mappers.

Every storage module (store, admin, articles, search, search_keys) works through this API:
`transaction()` for writes (BEGIN IMMEDIATE … COMMIT under the connection's lock),
`fetchall`/`fetchone` for single reads, `reading()` for several reads in a row, and the
mappers below to turn rows selected with the column lists into models. Nothing outside
storage/ runs SQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiosqlite

from storage.backup import backup_before_migration, readonly_uri
from storage.migrations import MIGRATIONS, migrate, schema_version
from storage.models import (
    Chat,
    ChatSettings,
    ChatType,
    Delivery,
    DeliveryState,
    Item,
    ItemOrigin,
)

# Told of each write transaction: its seconds, and whether SQLite took it (False: the store
# could not be written: locked by another process, read-only, disk full, I/O error).
WriteHook = Callable[[float, bool], None]
# Told how many seconds a search query took (storage.search).
SearchHook = Callable[[float], None]

# Column lists for the mappers below; the tables are aliased i (items), c (chats),
# d (deliveries).
ITEM_COLUMNS = (
    "i.id, i.feed_id, i.lang, i.identity, i.link, i.title, i.summary, i.author, i.image_url, "
    "i.categories, i.published_at, i.first_seen_at, i.origin, i.content_hash"
)
CHAT_COLUMNS = (
    "c.id, c.type, c.title, c.username, c.lang, c.languages, c.active, c.subscribed, c.paused, "
    "c.settings, c.added_by, c.deactivated_reason, c.created_at, c.updated_at"
)
DELIVERY_COLUMNS = (
    "d.id, d.item_id, d.chat_id, d.state, d.priority, d.attempts, d.next_attempt_at, "
    "d.last_error, d.message_id, d.created_at, d.sent_at"
)


class SchemaMismatchError(RuntimeError):
    """A store opened read-only is at another schema version than this code's."""


class StoreUnusable(RuntimeError):
    """The store file cannot be opened or migrated (corrupt, unreadable, a newer schema)."""


class Database:
    """One SQLite file: `await Store.open(path)` (Store is the subclass), then `close()`."""

    # Timing and outcome hooks (health and metrics); set by the composition root.
    on_write: WriteHook | None = None
    on_search: SearchHook | None = None

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # aiosqlite runs one connection on one thread; the lock keeps each call's statements
        # together so two coroutines never interleave inside one transaction.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Self:
        """Open (creating if needed) the SQLite file at `path` and bring its schema up to date.

        A new file is created 0600 (its -wal and -shm files take its mode); an existing one
        that needs a migration is first copied beside itself (storage.backup).
        """
        try:
            return await cls._open(path)
        except (sqlite3.DatabaseError, OSError, RuntimeError) as exc:
            # One line that names the file: "file is not a database" alone says nothing of which.
            raise StoreUnusable(f"the store {path} cannot be used: {exc}") from exc

    @classmethod
    async def _open(cls, path: str | Path) -> Self:
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
    async def open_readonly(cls, path: str | Path) -> Self:
        """Open an existing store for reading only: never created, never migrated.

        Raises FileNotFoundError for a missing file and SchemaMismatchError when its schema is
        not the one this code reads. Works while the bot is writing (WAL).
        """
        uri = await asyncio.to_thread(readonly_uri, Path(path))
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            found, expected = await schema_version(conn), MIGRATIONS[-1].version
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

    @asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """Run the block's statements in one write transaction (BEGIN IMMEDIATE … COMMIT).

        `durable` commits with synchronous=FULL (a power loss cannot take it back). Keep the
        block short and free of anything but SQL: no network call, no core callback.
        """
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

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the connection for several reads in a row (no transaction is opened)."""
        async with self._lock:
            yield self._conn

    async def fetchall(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[sqlite3.Row]:
        """Run one query; return every row."""
        async with self._lock, self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> sqlite3.Row | None:
        """Run one query; return its first row, None when there is none."""
        async with self._lock, self._conn.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def probe_write(self) -> None:
        """Commit a real (self-cancelling) write, so an idle bot notices a store it cannot write.

        A no-op UPDATE would not do: SQLite skips writing a row overwritten by the same bytes.
        """
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO events (at, kind, detail) VALUES (0, 'write_probe', '')"
            )
            await conn.execute("DELETE FROM events WHERE id = ?", (cursor.lastrowid,))


def item_from_row(row: sqlite3.Row, offset: int = 0) -> Item:
    """Return the Item in `row` (selected with ITEM_COLUMNS, starting at column `offset`)."""
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


def chat_from_row(row: sqlite3.Row, offset: int = 0) -> Chat:
    """Return the Chat in `row` (selected with CHAT_COLUMNS, starting at column `offset`)."""
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


def delivery_from_row(row: sqlite3.Row, offset: int = 0) -> Delivery:
    """Return the Delivery in `row` (selected with DELIVERY_COLUMNS, from column `offset`)."""
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


def _cannot_write(exc: sqlite3.DatabaseError) -> bool:
    """Whether a failed write means the store itself refuses writes (not a bad statement)."""
    return not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError
    )
