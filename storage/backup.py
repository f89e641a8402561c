"""Consistent copies of the SQLite store: online backups on demand, and one before a migration.

A copy is taken with SQLite's backup API in a single step, i.e. inside one read transaction:
with the store in WAL mode the bot keeps writing meanwhile and the copy is the store as it
was at one moment. The copy is written to a temporary file created 0600 beside the target,
checked with PRAGMA integrity_check, and only then renamed into place.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage.migrations import HAS_HISTORY, HISTORY_VERSION, LEGACY_VERSION, MIGRATIONS

log = logging.getLogger(__name__)

KEEP_MIGRATION_BACKUPS = 3
_PRE_MIGRATION_RE = re.compile(r"\.pre-v(\d+)-(\d{8}T\d{6}\.\d{6})Z\.bak$")


class BackupError(Exception):
    """The copy could not be made or did not verify; nothing was left at the target."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    size: int  # bytes
    schema_version: int
    seconds: float


def backup_store(source: Path, target: Path, *, force: bool = False) -> BackupResult:
    """Copy the store at `source` to `target` (0600), verified; blocking, run it in a thread.

    Refuses to replace an existing `target` unless `force`. The source is opened read-only and
    is never created or migrated.
    """
    started = time.monotonic()
    if not source.is_file():
        raise BackupError(f"no store at {source}")
    if target.exists() and not force:
        raise BackupError(f"{target} exists; pass --force to replace it")
    if target.is_dir():
        raise BackupError(f"{target} is a directory")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        _create_private(temporary)
        version = _copy(source, temporary)
        _verify(temporary)
        os.replace(temporary, target)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"backup of {source} to {target} failed: {exc}") from exc
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            temporary.with_name(temporary.name + suffix).unlink(missing_ok=True)
    return BackupResult(target, target.stat().st_size, version, time.monotonic() - started)


def backup_before_migration(store: Path, *, now: float | None = None) -> Path | None:
    """Copy an existing store that the code is about to migrate; return the copy's path.

    Does nothing (None) for a new or empty store, or one already at the code's version (or
    newer: the migration step refuses that). Keeps the newest KEEP_MIGRATION_BACKUPS copies
    of this store. Raises BackupError if the copy cannot be made: better not to start than to
    migrate without a way back.
    """
    version = schema_version(store)
    latest = MIGRATIONS[-1].version
    if not 0 < version < latest:
        return None
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S.%f")  # fixed width: sorts by time
    target = store.with_name(f"{store.name}.pre-v{version}-{stamp}Z.bak")
    result = backup_store(store, target)
    log.info(
        "schema %d -> %d: the store was copied to %s (%d bytes) before migrating",
        version, latest, result.path, result.size,
    )  # fmt: skip
    for old in prune_migration_backups(store, KEEP_MIGRATION_BACKUPS):
        log.info("removed the old pre-migration backup %s", old)
    return result.path


def prune_migration_backups(store: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` pre-migration copies of `store`; return the deleted."""
    copies: list[tuple[str, Path]] = []
    for candidate in store.parent.glob(f"{glob.escape(store.name)}.pre-v*.bak"):
        match = _PRE_MIGRATION_RE.search(candidate.name)
        if match and candidate.name == f"{store.name}{match.group(0)}":
            copies.append((match.group(2), candidate))
    copies.sort()
    doomed = [path for _, path in copies[: max(0, len(copies) - keep)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def schema_version(store: Path) -> int:
    """Return the store's schema version (0 for a missing or empty file), read-only."""
    if not store.is_file() or store.stat().st_size == 0:
        return 0
    conn = sqlite3.connect(readonly_uri(store), uri=True)
    try:
        return _version(conn)
    finally:
        conn.close()


def _version(conn: sqlite3.Connection) -> int:
    has_history = conn.execute(HAS_HISTORY).fetchone() is not None
    row = conn.execute(HISTORY_VERSION if has_history else LEGACY_VERSION).fetchone()
    return int(row[0]) if row else 0


def readonly_uri(store: Path) -> str:
    """Return the URI that opens `store` read-only; FileNotFoundError if there is no such file.

    mode=ro never creates the file nor writes to it (in WAL mode SQLite may still create the
    -wal and -shm files beside it, as any reader does).
    """
    if not store.is_file():
        raise FileNotFoundError(f"no store at {store}")
    return f"{store.resolve().as_uri()}?mode=ro"


def _create_private(path: Path) -> None:
    # Created 0600 before SQLite opens it: SQLite keeps an existing file's mode, and gives
    # its -wal and -shm files the database file's mode.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def _copy(source: Path, target: Path) -> int:
    src = sqlite3.connect(readonly_uri(source), uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # every page in one step: one read transaction, one moment
            # A single self-contained file: the bot switches it back to WAL when it opens it.
            dst.execute("PRAGMA journal_mode = DELETE")
            version = _version(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return version


def _verify(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        problems = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    if problems != ["ok"]:
        raise BackupError(f"the copy failed PRAGMA integrity_check: {'; '.join(problems[:5])}")
