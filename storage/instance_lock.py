"""One running bot per store: an exclusive flock on `<store>.lock`, held for the process's life.

The operating system drops the lock when the holding process ends in any way (kill -9
included), so a lock is never stale. The file itself stays; it names the last holder (pid,
host, start time) so a refused start can say who holds the store. SQLite's own locking is not
involved: the commands that only read or copy the store (check, backup, stats) never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_MAX_HOLDER_BYTES = 4096


class InstanceLocked(Exception):
    """Another process holds the store's instance lock."""

    def __init__(self, store: Path, holder: str) -> None:
        super().__init__(f"the store {store} is in use by another bot ({holder}); stop it first")
        self.store = store
        self.holder = holder


@dataclass
class InstanceLock:
    """The held lock; `release()` it when the bot stops (the OS does it if the process dies)."""

    path: Path
    fd: int | None

    def release(self) -> None:
        """Drop the lock; a second call does nothing."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)  # no holder any more; truncated while still holding the lock
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


def lock_path(store: Path) -> Path:
    """Return the lock file of the SQLite file `store`."""
    return store.with_name(store.name + ".lock")


def acquire_instance_lock(store: Path, *, started_at: float) -> InstanceLock:
    """Take the store's instance lock or raise InstanceLocked naming the holder.

    `started_at` (epoch seconds) is written into the lock file with this process's pid and
    host. An in-memory store has nothing to share and gets a lock that holds nothing.
    """
    if str(store) == ":memory:":
        return InstanceLock(Path(":memory:"), None)
    path = lock_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = _describe(os.pread(fd, _MAX_HOLDER_BYTES, 0))
        finally:
            os.close(fd)
        raise InstanceLocked(store, holder) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return InstanceLock(path, fd)


def _describe(raw: bytes) -> str:
    """The holder as one line: "pid 42 on host web-1, started 2026-01-01T00:00:00+00:00"."""
    try:
        record = json.loads(raw.decode())
        return f"pid {int(record['pid'])} on host {record['host']}, started {record['started_at']}"
    except (ValueError, KeyError, TypeError):
        # The holder is between taking the lock and writing its record, or wrote another format.
        return "holder not recorded yet"
