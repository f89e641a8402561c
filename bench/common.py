"""What the delivery benchmarks share: a fake Telegram and a feed server on 127.0.0.1, a database
seeded with subscribers, the real bot run as a subprocess (`python -m bot`), and figures.

The fake Bot API (tests/fakes/botapi/) runs in the benchmark's own process and enforces
Telegram's windows as the requests arrive; the bot runs in its own process, as in production.
Nothing here talks to anything but 127.0.0.1, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from storage.db import is_postgresql
from storage.models import ChatType
from storage.store import Store
from tests.fakes.botapi import MESSAGE_METHODS, ApiCall, FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.pg import PgCluster
from tests.support import BotProcess

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456:BENCH-TOKEN-0123456789abcdefghij"
BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
NOW = 1_767_225_600.0
FEED_PATH = "/en/rss"


def piece(n: int) -> dict[str, Any]:
    """One feed entry shaped like a Caliber.az analytics piece."""
    return {
        "title": f"Piece {n}: the Caspian corridor and what it means for the region",
        "link": f"https://caliber.az/en/post/piece-{n}",
        "guid": f"caliber-{n}",
        "description": (
            f"<p>Summary of piece {n}. "
            + "Energy, trade and security in the South Caucasus, analysed. " * 6
            + "</p>"
        ),
        "pub_date": BASE + timedelta(minutes=n),
        "categories": ["Analytics", "Region"],
    }


def feed(*numbers: int) -> str:
    """The feed as the site lists it: newest first."""
    return make_rss([piece(n) for n in sorted(numbers, reverse=True)])


@dataclass(frozen=True, slots=True)
class Scale:
    """Telegram's limits multiplied by `factor`, set alike on the bot and on the fake server."""

    factor: float = 1.0

    @property
    def global_per_second(self) -> int:
        return round(30 * self.factor)

    @property
    def group_per_minute(self) -> int:
        return round(20 * self.factor)

    @property
    def private_per_second(self) -> float:
        return 1.0 * self.factor

    def bot_env(self) -> dict[str, str]:
        return {
            "RATE_GLOBAL_PER_SECOND": str(self.global_per_second),
            "RATE_GROUP_PER_MINUTE": str(self.group_per_minute),
            "RATE_PRIVATE_PER_SECOND": f"{self.private_per_second:g}",
        }

    def fake_api(self) -> FakeBotApi:
        return FakeBotApi(
            TOKEN,
            global_per_second=self.global_per_second,
            group_per_minute=self.group_per_minute,
            private_per_second=self.private_per_second,
        )


def chat_ids(count: int, *, channels: int = 0, groups: int = 0) -> list[tuple[int, ChatType]]:
    """`count` chats: the given number of channels and supergroups, the rest private chats."""
    chats: list[tuple[int, ChatType]] = []
    chats += [(-1_001_000_000_000 - i, ChatType.CHANNEL) for i in range(1, channels + 1)]
    chats += [(-1_002_000_000_000 - i, ChatType.SUPERGROUP) for i in range(1, groups + 1)]
    chats += [(10_000_000 + i, ChatType.PRIVATE) for i in range(1, count - len(chats) + 1)]
    return chats


Backend = Literal["sqlite", "postgresql"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgresql")
# Where a store lives: an SQLite file, or a postgresql:// URL (Store.open takes either).
Target = Path | str


def database_url(target: Target) -> str:
    """DATABASE_URL for the bot process: sqlite:///<file>, or the PostgreSQL URL as it is."""
    return target if is_postgresql(target) else f"sqlite:///{target}"  # type: ignore[return-value]


class Databases:
    """A new, empty database for each run, on the back end the benchmark was asked for.

    sqlite: the file the caller names, as the benchmarks always did. postgresql: one throwaway
    PostgreSQL 15 cluster for the whole benchmark invocation (tests/pg.py: initdb into a temp
    dir, 127.0.0.1, a free port; fsync and synchronous_commit off, as for the tests), a fresh
    database in it per run, its URL given where the file's path went; the cluster is stopped
    and its directory deleted on exit.

        with Databases(args.backend) as dbs:
            with dbs.fresh(Path(tmp) / "bot.sqlite3") as target:  # a Path, or a URL
                ...
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cluster: PgCluster | None = None
        self._serial = itertools.count(1)

    def __enter__(self) -> Self:
        if self.backend == "postgresql":
            self.cluster = PgCluster()
            self.cluster.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def new(self, sqlite_path: Path, stem: str = "bench") -> Target:
        """`sqlite_path` on SQLite; on PostgreSQL a new database (its URL), named uniquely."""
        if self.cluster is None:
            return sqlite_path
        return self.cluster.create_database(f"{stem}_{next(self._serial)}")

    def drop(self, target: Target) -> None:
        """Drop a run's PostgreSQL database (so no autovacuum of it disturbs the next runs)."""
        if self.cluster is not None and is_postgresql(target):
            self.cluster.drop_database(str(target).rsplit("/", 1)[1])

    @contextlib.contextmanager
    def fresh(self, sqlite_path: Path, stem: str = "bench") -> Iterator[Target]:
        target = self.new(sqlite_path, stem)
        try:
            yield target
        finally:
            self.drop(target)

    def describe(self) -> str:
        """One line saying which back end ran."""
        if self.cluster is None:
            return f"SQLite {sqlite3.sqlite_version} (in-process, WAL, synchronous=NORMAL)"
        version = self.cluster.version().removeprefix("postgres (PostgreSQL) ")
        return (
            f"PostgreSQL {version} (server processes of its own, 127.0.0.1 over TCP; "
            "fsync, synchronous_commit and full_page_writes off, as tests/pg.py sets them)"
        )

    @property
    def label(self) -> str:
        return "SQLite" if self.cluster is None else "PostgreSQL"

    def server_cpu(self) -> float | None:
        """CPU seconds the PostgreSQL server has used so far (None on SQLite): the postmaster and
        its live children (backends, checkpointer, autovacuum, ...) from the scheduler's own
        count, to the microsecond, plus the exited children the postmaster has reaped (its
        cutime and cstime, in clock ticks). A backend that exits between two readings moves
        from the first sum to the second, rounded to a tick: fine for benchmarks."""
        if self.cluster is None:
            return None
        postmaster = int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        seconds = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(stat.parent.name) != postmaster and int(fields[1]) != postmaster:
                    continue
                seconds += (int(fields[13]) + int(fields[14])) / tick  # reaped children
                seconds += _run_time(stat.parent, (int(fields[11]) + int(fields[12])) / tick)
        return seconds


def _run_time(proc: Path, fallback: float) -> float:
    """A process's CPU seconds from /proc/<pid>/sched (ms, to the ns); `fallback` (from
    /proc/<pid>/stat, whole clock ticks: 10 ms each) if the kernel does not give it."""
    with contextlib.suppress(OSError, ValueError):
        for line in (proc / "sched").read_text().splitlines():
            if line.startswith("se.sum_exec_runtime"):
                return float(line.split(":", 1)[1]) / 1000
    return fallback


async def seed_chats(db_path: Target, chats: Iterable[tuple[int, ChatType]]) -> int:
    """Subscribe `chats` to English posts through the store, as /start would."""
    store = await Store.open(db_path)
    try:
        count = 0
        for chat_id, chat_type in chats:
            await store.upsert_chat(
                chat_id,
                chat_type,
                title=None if chat_type is ChatType.PRIVATE else f"Chat {chat_id}",
                username=None,
                default_lang="en",
                now=NOW,
                subscribed=True,
            )
            count += 1
        return count
    finally:
        await store.close()


def register_chats(api: FakeBotApi, chats: Iterable[tuple[int, ChatType]]) -> None:
    """Tell the fake server the chats' types (it would guess channels as groups)."""
    for chat_id, chat_type in chats:
        api.add_chat(chat_id, chat_type.value, title=f"Chat {chat_id}")


def bot_env(
    api: FakeBotApi, feeds: FeedServer, db_path: Target, scale: Scale, **extra: str
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "LC_ALL", "VIRTUAL_ENV", "TMPDIR")
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": api.url,
            "FEEDS": f"en={feeds.url(FEED_PATH)}",
            "DATABASE_URL": database_url(db_path),
            "POLL_INTERVAL": "1",
            "POLL_JITTER": "0",
            "MAX_AGE": "3650d",
            "LOG_LEVEL": "WARNING",
            "HTTP_TIMEOUT": "5",
            **scale.bot_env(),
        }
    )
    env.update(extra)
    return env


def cpu_seconds(pid: int) -> float:
    """A process's CPU seconds so far, all its threads (user + system, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> tuple[int, int]:
    """Return (current RSS, peak RSS) of a process in KiB, from /proc."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


@asynccontextmanager
async def servers(scale: Scale) -> AsyncIterator[tuple[FakeBotApi, FeedServer]]:
    async with scale.fake_api() as api, FeedServer() as feeds:
        yield api, feeds


async def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        await asyncio.sleep(interval)


def successful_sends(api: FakeBotApi) -> list[ApiCall]:
    return [c for c in api.calls if c.ok and c.method in MESSAGE_METHODS]


class SendCounter:
    """Counts successful sends incrementally, so that polling it costs the fake server nothing."""

    def __init__(self, api: FakeBotApi) -> None:
        self.api = api
        self._seen = 0
        self.count = 0

    def __call__(self) -> int:
        calls = self.api.calls
        end = len(calls)
        # A send is answered in the same step that records it (only getUpdates waits).
        for call in calls[self._seen : end]:
            if call.ok and call.method in MESSAGE_METHODS:
                self.count += 1
        self._seen = end
        return self.count


def refused_429(api: FakeBotApi) -> int:
    return sum(1 for c in api.calls if c.error_code == 429)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_setup(server_priorities: Iterable[str]) -> None:
    """The lines under a fan-out benchmark's runs: the machine, and how the test server ran."""
    print()
    print(f"Machine: {machine()}")
    print(f"Test server: its own process, {', '.join(sorted(set(server_priorities)))}, GC off")
    print()


def machine() -> str:
    """One line saying what the figures were measured on."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def check_exit(bot: BotProcess, code: int) -> None:
    """Fail a run whose bot did not stop cleanly, with the end of its log."""
    if code != 0:
        print(bot.log_tail(), file=sys.stderr)
        raise RuntimeError(f"the bot exited with {code}")
