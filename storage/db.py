"""The storage layer's public base: one connection, short transactions, reads, row mappers.

Every storage module (store, outbox, admin, articles, search, search_keys) works through this
API: `transaction()` for writes, `fetchall`/`fetchone` for single reads, `reading()` for several
reads in a row, the Conn they yield (storage.backends: SQLite or PostgreSQL behind one API), and
the mappers below to turn rows selected with the column lists into models. Nothing outside
storage/ runs SQL.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Self

import aiosqlite

from storage.backends import Conn, Dialect, Params, PgConn, Row, SqliteConn, cannot_write
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
    """The store: `await Store.open(target)` (Store is the subclass), then `close()`.

    `target` is a SQLite file's path, or a postgresql:// URL (storage.postgres). Either way the
    storage modules see one API: `transaction()`, `reading()`, `fetchall`, `fetchone`, and the
    Conn they yield (storage.backends).
    """

    # Timing and outcome hooks (health and metrics); set by the composition root.
    on_write: WriteHook | None = None
    on_search: SearchHook | None = None

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        # One connection per process: the lock keeps each call's statements together so two
        # coroutines never interleave inside one transaction.
        self._lock = asyncio.Lock()

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    @classmethod
    async def open(cls, target: str | Path) -> Self:
        """Open (creating if needed) the store at `target` and bring its schema up to date.

        A new SQLite file is created 0600 (its -wal and -shm files take its mode); an existing
        one that needs a migration is first copied beside itself (storage.backup).
        """
        if is_postgresql(target):
            from storage.postgres import connect

            return cls(await connect(str(target)))
        try:
            return await cls._open(target)
        except (sqlite3.DatabaseError, OSError, RuntimeError) as exc:
            # One line that names the file: "file is not a database" alone says nothing of which.
            raise StoreUnusable(f"the store {target} cannot be used: {exc}") from exc

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
        return cls(SqliteConn(conn))

    @classmethod
    async def open_readonly(cls, target: str | Path) -> Self:
        """Open an existing store for reading only: never created, never migrated.

        Raises FileNotFoundError for a missing file and SchemaMismatchError when its schema is
        not the one this code reads. Works while the bot is writing (WAL).
        """
        if is_postgresql(target):
            from storage.postgres import connect

            return cls(await connect(str(target), migrate=False))
        uri = await asyncio.to_thread(readonly_uri, Path(target))
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            found, expected = await schema_version(conn), MIGRATIONS[-1].version
            if found != expected:
                raise SchemaMismatchError(
                    f"the store {target} has schema version {found}; this code reads {expected}"
                )
        except BaseException:
            await conn.close()
            raise
        return cls(SqliteConn(conn))

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    @asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[Conn]:
        """Run the block's statements in one write transaction.

        `durable` commits so that a power loss cannot take it back (SQLite: synchronous=FULL;
        PostgreSQL commits so anyway). Keep the block short and free of anything but SQL: no
        network call, no core callback.
        """
        async with self._lock:
            started = time.perf_counter()  # the transaction's own time, not the lock's wait
            try:
                conn = await self._usable()  # a failed reconnect is a failed write too
                async with conn.transaction(durable=durable):
                    yield conn
            except Exception as exc:
                if self.on_write is not None and cannot_write(exc):
                    self.on_write(time.perf_counter() - started, False)
                raise
            if self.on_write is not None:
                self.on_write(time.perf_counter() - started, True)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Conn]:
        """Hold the connection for several reads in a row (no transaction is opened)."""
        async with self._lock:
            yield await self._usable()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one query; return every row."""
        async with self._lock:
            return await (await self._usable()).fetchall(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run one query; return its first row, None when there is none."""
        async with self._lock:
            return await (await self._usable()).fetchone(sql, params)

    async def _usable(self) -> Conn:
        """The connection, opened again first if the server dropped it (PostgreSQL restarts)."""
        if self._conn.closed and isinstance(self._conn, PgConn):
            from storage.postgres import reconnect

            self._conn = await reconnect(self._conn)
        return self._conn

    async def probe_write(self) -> None:
        """Commit a real (self-cancelling) write, so an idle bot notices a store it cannot write.

        A no-op UPDATE would not do: SQLite skips writing a row overwritten by the same bytes.
        """
        async with self.transaction() as conn:
            probe = await conn.insert(
                "INSERT INTO events (at, kind, detail) VALUES (0, 'write_probe', '')"
            )
            await conn.execute("DELETE FROM events WHERE id = ?", (probe,))


def is_postgresql(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def item_from_row(row: Row, offset: int = 0) -> Item:
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


def chat_from_row(row: Row, offset: int = 0) -> Chat:
    """Return the Chat in `row` (selected with CHAT_COLUMNS, starting at column `offset`)."""
    # Called for every row a fan-out sends: a slice of the row and the lookup tables, not a
    # copy of the whole row and the enums' calls.
    (chat_id, kind, title, username, lang, languages, active, subscribed, paused, settings,
     added_by, deactivated_reason, created_at, updated_at) = row[offset : offset + 14]  # fmt: skip
    return Chat(
        id=chat_id,
        type=_CHAT_TYPES[kind],
        title=title,
        username=username,
        lang=lang,
        languages=_languages(languages),
        active=bool(active),
        subscribed=bool(subscribed),
        paused=bool(paused),
        settings=ChatSettings.from_json(settings),
        added_by=added_by,
        deactivated_reason=deactivated_reason,
        created_at=created_at,
        updated_at=updated_at,
    )


_CHAT_TYPES = {kind.value: kind for kind in ChatType}
_DELIVERY_STATES = {state.value: state for state in DeliveryState}


@functools.lru_cache(maxsize=256)
def _languages(text: object) -> tuple[str, ...]:
    """A chat's languages column ("en,ru") as a tuple; a handful of distinct values."""
    return tuple(x for x in str(text).split(",") if x)


def delivery_from_row(row: Row, offset: int = 0) -> Delivery:
    """Return the Delivery in `row` (selected with DELIVERY_COLUMNS, from column `offset`)."""
    r = row[offset : offset + 11]
    return Delivery(
        id=r[0],
        item_id=r[1],
        chat_id=r[2],
        state=_DELIVERY_STATES[r[3]],
        priority=r[4],
        attempts=r[5],
        next_attempt_at=r[6],
        last_error=r[7],
        message_id=r[8],
        created_at=r[9],
        sent_at=r[10],
    )
