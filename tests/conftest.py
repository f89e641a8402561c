"""Fixtures: the fake Bot API server, a local feed server, and a database path per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.store import Store
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer
from tests.support import TOKEN

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture(autouse=True)
async def close_left_stores(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Close any store a failed test left open: its worker thread would keep pytest from exiting."""
    opened: list[Store] = []
    real_open = Store.open.__func__  # type: ignore[attr-defined]

    async def tracking_open(cls: type[Store], path: str | Path) -> Store:
        store = await real_open(cls, path)
        opened.append(store)
        return store

    monkeypatch.setattr(Store, "open", classmethod(tracking_open))
    yield
    for store in opened:
        await store.close()  # a no-op for a store the test closed


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    """A Bot API server on 127.0.0.1 enforcing Telegram's limits scaled x20 (like bot_env)."""
    async with FakeBotApi(
        TOKEN, global_per_second=600, group_per_minute=400, private_per_second=20
    ) as server:
        yield server


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bot.sqlite3"


# -- PostgreSQL: one server per session (tests/pg.py), a fresh database per test ---------------
# Synchronous on purpose: pytest-asyncio gives each test its own loop, which a session-scoped
# async fixture would outlive; the cluster's admin work is subprocesses, so no loop is needed.


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL 15 server for the whole session; fails (never skips) if it is not installed."""
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_new_database(
    pg_cluster: PgCluster, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Makes new, empty databases on demand (returns each one's URL); drops them after the test."""
    # The test's name makes leftovers readable; the random tail keeps names unique.
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40]
    made: list[str] = []

    def new_database() -> str:
        # A test that restarted the server and failed half-way may have left it down.
        pg_cluster.start()
        name = f"t_{stem}_{uuid.uuid4().hex[:8]}"
        url = pg_cluster.create_database(name)
        made.append(name)
        return url

    yield new_database
    pg_cluster.start()
    for name in made:
        pg_cluster.drop_database(name)  # ends the connections the test left open first


@pytest.fixture
def pg_url(pg_new_database: Callable[[], str]) -> str:
    """postgresql://postgres@127.0.0.1:<port>/<db> of a new, empty database for this test."""
    return pg_new_database()


# Down here, not in the import block above, so this section stays one self-contained addition.
import re  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

from tests.pg import PgCluster  # noqa: E402


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store opens, once per back end: an SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "bot.sqlite3")
    url: str = request.getfixturevalue("pg_url")
    return url
