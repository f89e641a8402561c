"""The two back ends behind one connection API: SQLite (aiosqlite) and PostgreSQL (asyncpg).

Storage modules write each statement once, with `?` placeholders (or `:name` ones with a
mapping), in the SQL both engines speak: ON CONFLICT upserts, RETURNING, CASE, COALESCE, LIKE,
integer flags compared with `= 1`. The PostgreSQL connection renumbers the placeholders to
$1…$n. Where the engines really differ (full-text search, JSON functions, pragmas) a module asks
`conn.dialect` and keeps both texts side by side.

Rows of both back ends index by position and by column name (sqlite3.Row, asyncpg.Record).
"""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, ClassVar, Literal

import aiosqlite
import asyncpg

Dialect = Literal["sqlite", "postgresql"]
Params = Sequence[Any] | Mapping[str, Any]
Row = Any  # sqlite3.Row or asyncpg.Record


class Conn(ABC):
    """One open connection: statements, reads, and transactions (the caller holds the lock)."""

    dialect: ClassVar[Dialect]

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return how many rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one query; return every row."""

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run one query; return its first row, None when there is none."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """Run one query (or an INSERT … RETURNING); return the first column of its first row."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    @abstractmethod
    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT of a single row into a table with an `id` key; return the new id."""

    @abstractmethod
    def transaction(self, *, durable: bool = False) -> Any:
        """An async context manager: the block's statements commit together or not at all."""

    @abstractmethod
    async def close(self) -> None: ...

    @property
    @abstractmethod
    def closed(self) -> bool: ...


class SqliteConn(Conn):
    """aiosqlite: one connection on its own thread, in autocommit mode between transactions."""

    dialect: ClassVar[Dialect] = "sqlite"

    def __init__(self, raw: aiosqlite.Connection) -> None:
        self.raw = raw
        self._closed = False

    # Each call is one trip to aiosqlite's thread: a cursor's fetch and close would be two
    # more, and at a thousand inserted pieces a poll those trips cost 5% of ingest.

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self.raw.execute(sql, params)
        return int(cursor.rowcount)  # read from the cursor object: no trip; closed when freed

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.raw.executemany(sql, rows)

    async def insert(self, sql: str, params: Params = ()) -> int:
        # lastrowid is read from the cursor object: cheaper than RETURNING's extra row.
        cursor = await self.raw.execute(sql, params)
        return int(cursor.lastrowid or 0)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self.raw.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.raw.execute_fetchall(sql, params)
        return next(iter(rows), None)

    @asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[SqliteConn]:
        # BEGIN IMMEDIATE takes the write lock now, so a transaction that reads and then
        # writes never fails half-way on another process's lock. `durable` commits with
        # synchronous=FULL: a power loss cannot take the commit back.
        if durable:
            await self.raw.execute("PRAGMA synchronous = FULL")
        try:
            await self.raw.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                await self.raw.rollback()
                raise
            await self.raw.commit()
        finally:
            if durable:
                await self.raw.execute("PRAGMA synchronous = NORMAL")

    async def close(self) -> None:
        self._closed = True
        await self.raw.close()

    @property
    def closed(self) -> bool:
        return self._closed


class PgConn(Conn):
    """asyncpg: one connection; statements are prepared and cached by asyncpg itself."""

    dialect: ClassVar[Dialect] = "postgresql"

    def __init__(self, raw: asyncpg.Connection, url: str) -> None:
        self.raw = raw
        self.url = url  # to connect again after the server went away; never logged

    async def execute(self, sql: str, params: Params = ()) -> int:
        query, args = _bind(sql, params)
        status: str = await self.raw.execute(query, *args)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the last word counts the rows.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        query, _ = _bind(sql, ())
        batch = [tuple(row) for row in rows]
        if batch:
            await self.raw.executemany(query, batch)

    async def insert(self, sql: str, params: Params = ()) -> int:
        query, args = _bind(sql + " RETURNING id", params)
        return int(await self.raw.fetchval(query, *args))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        query, args = _bind(sql, params)
        return list(await self.raw.fetch(query, *args))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        query, args = _bind(sql, params)
        return await self.raw.fetchrow(query, *args)

    @asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[PgConn]:
        # PostgreSQL commits durably by default (synchronous_commit = on): `durable` is
        # what every commit already is.
        async with self.raw.transaction():
            yield self

    async def close(self) -> None:
        await self.raw.close(timeout=5)

    @property
    def closed(self) -> bool:
        return bool(self.raw.is_closed())


# A placeholder outside quotes: `?`, or `:name` (not `::type`, a PostgreSQL cast).
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|\?|(?<![:\w]):([A-Za-z_]\w*)")


def _bind(sql: str, params: Params) -> tuple[str, tuple[Any, ...]]:
    """Return the statement with $n placeholders and its arguments in their order."""
    if isinstance(params, Mapping):
        query, names = _numbered(sql, tuple(sorted(params)))
        return query, tuple(params[name] for name in names)
    query, _ = _numbered(sql, ())
    return query, tuple(params)


@lru_cache(maxsize=512)
def _numbered(sql: str, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    names: list[str] = []
    counter = 0

    def renumber(match: re.Match[str]) -> str:
        nonlocal counter
        found = match.group(0)
        if found == "?":
            counter += 1
            return f"${counter}"
        name = match.group(1)
        if name is None or name not in keys:
            return found  # a quoted string, a cast, or a word after a colon in one
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PLACEHOLDER.sub(renumber, sql), tuple(names)


# Errors that mean the store itself refuses writes (not a bad statement or a broken rule).
def cannot_write(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.DatabaseError):
        return not isinstance(
            exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError
        )
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError):
        return False
    return isinstance(
        exc,
        asyncpg.PostgresError | asyncpg.InterfaceError | OSError | ConnectionError,
    )


def store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a store call may raise when the store (not the caller) is at fault."""
    return (
        sqlite3.DatabaseError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
        ConnectionError,
    )
