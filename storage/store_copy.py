"""migrate-store: copy an SQLite store into PostgreSQL, and again onto that copy if need be.

The copy runs while no bot writes the SQLite file (it holds the store's instance lock from
before it opens the file until it has committed) and reads the file in one read transaction,
so it copies one moment of the store. Every table is written in dependency order inside ONE
PostgreSQL transaction: a failed or refused copy leaves the target exactly as it was (a rerun
never starts from half a copy), the checks below see what they guard until the commit, and
the row counts are compared before committing (a mismatch rolls everything back).

The target must not be in use (see `_in_use`): no bot may have run on it, and any data in it
must come from an earlier copy of this same source, as recorded by the provenance row (an
events row of kind 'migrated_from' naming the source and its fingerprint). A rerun makes the
target equal to the source again: each source row is inserted or, if its key is there,
updated; rows the source no longer has are deleted (the source's own retention pruned them,
or a supergroup upgrade moved a chat). One exception, "sent always wins": a delivery the
target has as 'sent' stays sent, with its message id and time, whatever the source says, so
nothing already sent is ever queued again. Feeds and items are never deleted by the bot: a
target holding one the source lacks was copied from another store (or from this one before
it was restored from an older backup), and the copy is refused.

Not copied: the search index (SQLite's FTS5 tables, search_dates and search_state; PostgreSQL's
search_docs). A new database's search_state says analyser version 0 (or has no row, which reads
as 0), so the bot's start-up (bot.services.search.attach_index) records the current version and
indexes every stored item; a version other than 0 means a bot has started on the database. Nor the
migration history (each store keeps its own), the leader lease (the target's own) or
topics_state (a counter that tells processes their copy of the topics' vocabulary is stale).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.backends import Conn
from storage.db import Database, SchemaMismatchError
from storage.instance_lock import acquire_instance_lock
from storage.migrations import HISTORY_SINCE
from storage.postgres import MIGRATION_LOCK, redacted

CHUNK = 1000  # rows read, and written by one statement, at a time
PROVENANCE = "migrated_from"  # the events kind recording where a copy came from


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    key: tuple[str, ...]  # the primary key: what a rerun matches rows on
    identity: bool = False  # its id comes from a sequence, moved past the copied ids
    never_deleted: bool = False  # the bot never deletes its rows (see the module's docstring)
    rowid: bool = True  # False: a WITHOUT ROWID table, read in key order instead


# Parents before children: every foreign key points to a table earlier in the list.
TABLES: tuple[Table, ...] = (
    Table("feeds", ("id",), identity=True, never_deleted=True),
    Table("items", ("id",), identity=True, never_deleted=True),
    Table("chats", ("id",)),
    Table("events", ("id",), identity=True),
    Table("settings_changes", ("id",), identity=True),
    Table("chat_incidents", ("chat_id",)),
    Table("forum_topics", ("chat_id", "thread_id")),
    Table("articles", ("url",)),
    Table("search_keys", ("key",)),
    Table("pending_inputs", ("user_id",)),  # the panel's open questions (they expire)
    Table("topics", ("id",), identity=True),
    Table("topic_terms", ("term", "topic_id", "word"), rowid=False),
    Table("follows", ("id",), identity=True),
    Table("deliveries", ("id",), identity=True),
    # A fan-out still being queued: the copy's bot finishes it.
    Table("fan_out_jobs", ("id",), identity=True),
    Table("fan_out_skips", ("job_id", "chat_id", "item_id"), rowid=False),
    Table("fan_out_hits", ("job_id", "topic_id", "item_id"), rowid=False),
    Table("paid_sends", ("day",)),  # the daily Stars cap's count
)
# SQLite tables left behind on purpose (see the module's docstring); search_fts_* are FTS5's own.
NOT_COPIED = frozenset(
    {
        "search_fts",
        "search_dates",
        "search_state",
        "schema_migrations",
        "leader_lease",
        "topics_state",
    }
)
# What a delivery the target has as 'sent' keeps of its own on a rerun.
SENT_KEEPS = ("state", "attempts", "next_attempt_at", "last_error", "message_id", "sent_at")

Progress = Callable[[str], Awaitable[None]]


class CopyRefused(Exception):
    """The copy may not run: the source or the target is not one it may copy (from, into)."""


class TargetInUse(CopyRefused):
    """The target is a database a bot has run on, or holds data of another origin."""


@dataclass(frozen=True, slots=True)
class TableCount:
    name: str
    source: int
    target: int


@dataclass(frozen=True, slots=True)
class CopyReport:
    source: Path
    target: str  # the URL without its password
    rerun: bool  # onto this source's own earlier copy
    tables: tuple[TableCount, ...]
    deleted: int  # target rows the source no longer had (reruns only)
    sent_kept: int  # deliveries the target had as sent and the source did not
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.source for t in self.tables)

    @property
    def ok(self) -> bool:
        return all(t.source == t.target for t in self.tables)


class CountMismatch(Exception):
    """After the copy a table's count differs between the stores; nothing was committed."""

    def __init__(self, report: CopyReport) -> None:
        differ = ", ".join(
            f"{t.name} {t.source} vs {t.target}" for t in report.tables if t.source != t.target
        )
        super().__init__(f"the counts differ (SQLite vs PostgreSQL): {differ}; nothing committed")
        self.report = report


async def copy_store(
    source: Path,
    target_url: str,
    *,
    now: float | None = None,
    chunk: int = CHUNK,
    before_table: Progress | None = None,
) -> CopyReport:
    """Copy the SQLite store `source` into the PostgreSQL database at `target_url`.

    Raises InstanceLocked (a bot runs on the source), FileNotFoundError, CopyRefused (the
    source's schema is not this code's, an unknown table, the target in use), StoreUnusable
    (the target cannot be reached or migrated) and CountMismatch. `before_table` is awaited
    before each table is written (for tests: the copy is under way, the lock held).
    """
    started = time.perf_counter()
    at = time.time() if now is None else now
    # Checked before taking the lock, which would create its file (and the directory).
    if not await asyncio.to_thread(source.is_file):
        raise FileNotFoundError(f"no store at {source}")
    lock = acquire_instance_lock(source, started_at=at)
    try:
        try:
            src = await Database.open_readonly(source)
        except SchemaMismatchError as exc:
            raise CopyRefused(
                f"{exc}: start this version of the bot once on the SQLite store (it migrates "
                "the store at start), stop it, and run migrate-store again"
            ) from exc
        try:
            dst = await Database.open(target_url)  # creates or migrates the schema
            try:
                tables, deleted, sent_kept, rerun = await _copy(
                    src, dst, source, target_url, at, chunk, before_table
                )
            finally:
                await dst.close()
        finally:
            await src.close()
    finally:
        lock.release()
    return CopyReport(
        source=source,
        target=redacted(target_url),
        rerun=rerun,
        tables=tables,
        deleted=deleted,
        sent_kept=sent_kept,
        seconds=time.perf_counter() - started,
    )


async def _copy(
    src: Database,
    dst: Database,
    source: Path,
    target_url: str,
    now: float,
    chunk: int,
    before_table: Progress | None,
) -> tuple[tuple[TableCount, ...], int, int, bool]:
    async with src.reading() as s, dst.transaction() as t:
        await s.execute("BEGIN")  # one read transaction: one moment of the source
        try:
            await _check_tables(s)
            fingerprint = await _fingerprint(s)
            # A bot starting on the target waits for its migration lock until this commits;
            # one already running cannot take the lease nor index meanwhile.
            await t.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            await t.execute("LOCK TABLE leader_lease, search_state, search_docs IN EXCLUSIVE MODE")
            rerun = await _in_use(t, fingerprint)

            columns = {table.name: await _columns(s, t, table) for table in TABLES}
            # The last copy's provenance goes; this copy's own is written at the end.
            await t.execute("DELETE FROM events WHERE kind = ?", (PROVENANCE,))
            deleted = 0
            for table in reversed(TABLES):  # children first: no cascade takes a row twice
                deleted += await _delete_missing(s, t, table)
            for table in TABLES:
                if before_table is not None:
                    await before_table(table.name)
                await _copy_rows(s, t, table, columns[table.name], chunk)
                if table.identity:
                    await _move_sequence(t, table.name)
            await t.execute(
                "INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)",
                (now, PROVENANCE, json.dumps({"source": str(source), "fingerprint": fingerprint})),
            )
            # Every delivery the source has as sent is sent in the target now, and the target
            # has no delivery the source lacks: the difference is what "sent wins" kept.
            sent = "SELECT COUNT(*) FROM deliveries WHERE state = 'sent'"
            sent_kept = int(await t.fetchval(sent)) - int(await s.fetchval(sent))
            counts = tuple([await _counts(s, t, table.name) for table in TABLES])
        finally:
            await s.execute("COMMIT")
        if any(c.source != c.target for c in counts):
            raise CountMismatch(
                CopyReport(source, redacted(target_url), rerun, counts, deleted, sent_kept, 0.0)
            )
    return counts, deleted, sent_kept, rerun


async def _check_tables(s: Conn) -> None:
    """Refuse a source with a table this code does not know how to copy."""
    rows = await s.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    known = {table.name for table in TABLES} | NOT_COPIED
    names = [str(r[0]) for r in rows]
    unknown = sorted(n for n in names if n not in known and not n.startswith("search_fts_"))
    if unknown:
        raise CopyRefused(f"the source has table(s) migrate-store does not copy: {unknown}")


async def _fingerprint(s: Conn) -> str:
    """The source's identity: its migration history up to the history table's own migration.

    Those rows are dated when they ran and never change afterwards (later migrations only add
    rows), so a store keeps its fingerprint for life, whatever it holds and wherever it moves;
    only a copy of its file (a backup) shares it.
    """
    rows = await s.fetchall(
        "SELECT version, name, applied_at FROM schema_migrations WHERE version <= ? "
        "ORDER BY version",
        (HISTORY_SINCE,),
    )
    text = json.dumps([[r[0], r[1], r[2]] for r in rows])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def _in_use(t: Conn, fingerprint: str) -> bool:
    """Raise TargetInUse unless the target is new or this source's own copy; True for the latter.

    In use: a bot ran on it (it took the leader lease, or its start built the search index),
    or it holds data with no provenance row, or the provenance of another store.
    """
    lease = await t.fetchone("SELECT holder FROM leader_lease WHERE id = 1")
    if lease is not None:
        raise TargetInUse(
            f"a bot has run on the target (the leader lease names {lease[0]}); "
            "migrate-store copies only into a new database or onto its own earlier copy"
        )
    # A new database's search_state (if any) says version 0: "not built yet".
    indexed = await t.fetchone(
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM search_state WHERE analyzer_version <> 0) "
        "OR EXISTS (SELECT 1 FROM search_docs)"
    )
    if indexed:
        raise TargetInUse(
            "a bot has started on the target (it has a search index); migrate-store copies "
            "only into a new database or onto its own earlier copy"
        )
    marks = await t.fetchall(
        "SELECT detail FROM events WHERE kind = ? ORDER BY id DESC", (PROVENANCE,)
    )
    if marks:
        origin = _provenance(str(marks[0][0]))
        if origin.get("fingerprint") != fingerprint:
            raise TargetInUse(
                f"the target holds a copy of another store ({origin.get('source', '?')}); "
                "copy into a new, empty database"
            )
        return True
    for table in TABLES:
        if await t.fetchone(f"SELECT 1 FROM {table.name} LIMIT 1"):
            raise TargetInUse(
                f"the target already holds data ({table.name} has rows) that no migrate-store "
                "copy of this store put there; copy into a new, empty database"
            )
    return False


def _provenance(detail: str) -> dict[str, Any]:
    try:
        found = json.loads(detail)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


@dataclass(frozen=True, slots=True)
class _Columns:
    names: tuple[str, ...]  # the source's columns, all present in the target
    types: tuple[str, ...]  # their types in the target
    convert: tuple[Callable[[Any], Any], ...]  # a value to the target's type


async def _columns(s: Conn, t: Conn, table: Table) -> _Columns:
    """The columns to copy, checked against the target's (extra target columns must default)."""
    source = [str(r[1]) for r in await s.fetchall(f"PRAGMA table_info({table.name})")]
    target = {
        str(r[0]): (str(r[1]), r[2] is not None or r[3] == "YES")
        for r in await t.fetchall(
            "SELECT column_name, data_type, column_default, is_identity "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?",
            (table.name,),
        )
    }
    missing = [c for c in source if c not in target]
    if missing:
        raise CopyRefused(f"the target's {table.name} lacks column(s) {missing}")
    unfilled = [c for c, (_, defaults) in target.items() if c not in source and not defaults]
    if unfilled:
        raise CopyRefused(f"the target's {table.name} has column(s) {unfilled} the source lacks")
    types = tuple(target[c][0] for c in source)
    unknown = sorted({t for t in types if t not in _CONVERT})
    if unknown:
        raise CopyRefused(f"the target's {table.name} has column type(s) {unknown}")
    return _Columns(tuple(source), types, tuple(_CONVERT[t] for t in types))


def _to_int(value: Any) -> Any:
    if value is None or type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise CopyRefused(f"{value!r} is no integer")


def _to_float(value: Any) -> Any:
    if value is None or type(value) is float:
        return value
    if isinstance(value, int):
        return float(value)
    raise CopyRefused(f"{value!r} is no number")


def _to_text(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    if isinstance(value, int | float):
        return str(value)
    raise CopyRefused(f"{value!r} is no text")


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "bigint": _to_int,
    "integer": _to_int,
    "double precision": _to_float,
    "text": _to_text,
}


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


async def _delete_missing(s: Conn, t: Conn, table: Table) -> int:
    """Delete the target's rows whose key the source does not have; return how many."""
    keys = _quoted(table.key)
    target = {tuple(r) for r in await t.fetchall(f"SELECT {keys} FROM {table.name}")}
    if not target:  # a first copy
        return 0
    source = {tuple(r) for r in await s.fetchall(f"SELECT {keys} FROM {table.name}")}
    missing = sorted(target - source)
    if not missing:
        return 0
    if table.never_deleted:
        raise TargetInUse(
            f"the target has {len(missing)} {table.name} row(s) the source lacks (the first: "
            f"{missing[0]}): the source is not the store this database was copied from, or it "
            "was restored from an older backup since; copy into a new, empty database"
        )
    where = " AND ".join(f'"{c}" = ?' for c in table.key)
    for start in range(0, len(missing), CHUNK):
        await t.executemany(
            f"DELETE FROM {table.name} WHERE {where}", missing[start : start + CHUNK]
        )
    return len(missing)


def _upsert_sql(table: Table, names: Sequence[str], types: Sequence[str]) -> str:
    columns = _quoted(names)
    arrays = ", ".join(f"?::{t}[]" for t in types)
    sets = []
    for c in names:
        if c in table.key:
            continue
        if table.name == "deliveries" and c in SENT_KEEPS:
            # "sent" always wins: a row the target has as sent keeps its outcome.
            sets.append(
                f'"{c}" = CASE WHEN deliveries.state = \'sent\' THEN deliveries."{c}" '
                f'ELSE excluded."{c}" END'
            )
        else:
            sets.append(f'"{c}" = excluded."{c}"')
    action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    return (
        f"INSERT INTO {table.name} ({columns}) SELECT * FROM unnest({arrays}) WHERE true "
        f"ON CONFLICT ({_quoted(table.key)}) {action}"
    )


async def _copy_rows(s: Conn, t: Conn, table: Table, columns: _Columns, chunk: int) -> int:
    """Insert or update every source row, `chunk` rows at a time, in rowid (else key) order.

    Each chunk is one statement whose rows travel as one array per column (unnest): about
    2.5 times the speed of executemany's statement per row, foreign-key checks included.
    """
    insert = _upsert_sql(table, columns.names, columns.types)
    # Rows are read in pages that resume after the last row read: by rowid, or by the primary
    # key for a WITHOUT ROWID table (the first column is then an unused 0).
    if table.rowid:
        order, at = "rowid", [0]
    else:
        order, at = _quoted(table.key), [columns.names.index(name) + 1 for name in table.key]
    head = f"SELECT {'rowid' if table.rowid else '0'}, {_quoted(columns.names)}"
    marks = ", ".join("?" * len(at))
    convert = list(enumerate(columns.convert, start=1))
    after: tuple[Any, ...] | None = None
    copied = 0
    while True:
        if after is None:
            rows = await s.fetchall(f"{head} FROM {table.name} ORDER BY {order} LIMIT ?", (chunk,))
        else:
            rows = await s.fetchall(
                f"{head} FROM {table.name} WHERE ({order}) > ({marks}) ORDER BY {order} LIMIT ?",
                (*after, chunk),
            )
        if not rows:
            return copied
        try:
            arrays = [[f(row[i]) for row in rows] for i, f in convert]
        except CopyRefused as exc:
            raise CopyRefused(f"{table.name}: {exc}") from exc
        await t.execute(insert, arrays)
        copied += len(rows)
        after = tuple(rows[-1][i] for i in at)


async def _move_sequence(t: Conn, table: str) -> None:
    """Make the next generated id follow the largest copied one (1 for an empty table)."""
    await t.fetchval(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
    )


async def _counts(s: Conn, t: Conn, table: str) -> TableCount:
    source = await s.fetchval(f"SELECT COUNT(*) FROM {table}")
    if table == "events":  # the provenance row is the copy's own
        target = await t.fetchval("SELECT COUNT(*) FROM events WHERE kind <> ?", (PROVENANCE,))
    else:
        target = await t.fetchval(f"SELECT COUNT(*) FROM {table}")
    return TableCount(table, int(source), int(target))
