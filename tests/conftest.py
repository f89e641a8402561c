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
