"""Backups of the store: `python -m bot backup` while the bot writes, a restore that resumes the
fan-out without repeating a recorded send, the copy taken before a migration, and the modes of
the files the store is made of."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import stat
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.backup import KEEP_MIGRATION_BACKUPS
from storage.migrations import HISTORY_SINCE, MIGRATIONS
from storage.models import ChatType
from storage.store import Store
from tests.fakes.botapi import MESSAGE_METHODS, FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.process.test_ops_cli import cli
from tests.support import TOKEN, bot_env, running_bot, wait_for

LATEST = MIGRATIONS[-1].version
NOW = 1_767_225_600.0
PRIVATE = [70_000_000 + i for i in range(1, 201)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# ------------------------------------------------------------------------------- online backup


async def test_backup_while_a_writer_writes_is_one_consistent_moment(
    db_path: Path, tmp_path: Path
) -> None:
    store = await Store.open(db_path)
    await store.close()
    stop, busy = threading.Event(), threading.Event()
    batches = 0

    def writer() -> None:
        # Ten rows a transaction: a consistent copy holds whole transactions only.
        nonlocal batches
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30)
        payload = "x" * 2000
        while not stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (at, kind, detail) VALUES (?, 'test', ?)",
                [(batches, payload)] * 10,
            )
            conn.execute("COMMIT")
            batches += 1
            if batches == 200:
                busy.set()
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert await asyncio.to_thread(busy.wait, 30)
        at_start = batches
        target = tmp_path / "backups" / "copy.sqlite3"
        target.parent.mkdir()
        run = await cli("backup", str(target), env={"DATABASE_URL": f"sqlite:///{db_path}"})
        at_end = batches
    finally:
        stop.set()
        thread.join()

    assert run.code == 0, run.err
    assert f"backup written: {target}" in run.out and "integrity ok" in run.out
    assert mode(target) == 0o600
    assert integrity(target) == "ok"
    assert user_version(target) == LATEST
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.sqlite3"]  # no leftovers
    with sqlite3.connect(target) as conn:
        per_batch = Counter(at for (at,) in conn.execute("SELECT at FROM events"))
    assert set(per_batch.values()) == {10}
    assert at_start <= len(per_batch) <= at_end
    assert sorted(per_batch) == list(range(len(per_batch)))  # a prefix: nothing skipped


async def test_backup_never_overwrites_unless_forced(db_path: Path, tmp_path: Path) -> None:
    store = await Store.open(db_path)
    await store.ensure_feed("https://caliber.az/en/rss", "en")
    await store.close()
    env = {"DATABASE_URL": f"sqlite:///{db_path}"}
    target = tmp_path / "copy.sqlite3"
    target.write_text("an older backup the operator keeps")

    refused = await cli("backup", str(target), env=env)
    assert refused.code == 1
    assert "exists; pass --force" in refused.err
    assert target.read_text() == "an older backup the operator keeps"

    forced = await cli("backup", "--force", str(target), env=env)
    assert forced.code == 0, forced.err
    assert integrity(target) == "ok"
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT url FROM feeds").fetchall() == [("https://caliber.az/en/rss",)]

    missing = await cli("backup", str(tmp_path / "x"), env={"DATABASE_URL": "sqlite:////nowhere/x"})
    assert missing.code == 1
    assert "no store at /nowhere/x" in missing.err


# ------------------------------------------------------------------------------- restore


def piece(n: int) -> dict[str, object]:
    return {
        "title": f"Piece {n}",
        "link": f"https://caliber.az/en/post/piece-{n}",
        "guid": f"caliber-{n}",
        "description": f"<p>Summary of piece {n}.</p>",
        "pub_date": datetime(2026, 11, 20, 8, 0, tzinfo=UTC) + timedelta(hours=n),
    }


def received(api: FakeBotApi) -> Counter[int]:
    return Counter(c.chat_id for c in api.calls if c.ok and c.method in MESSAGE_METHODS)


def deliveries_by_state(path: Path) -> dict[str, set[int]]:
    states: dict[str, set[int]] = {}
    with sqlite3.connect(path) as conn:
        for chat_id, state in conn.execute("SELECT chat_id, state FROM deliveries"):
            states.setdefault(state, set()).add(chat_id)
    return states


async def test_a_backup_taken_mid_fan_out_restores_without_repeating_a_recorded_send(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    store = await Store.open(db_path)
    for chat_id in PRIVATE:
        await store.upsert_chat(
            chat_id, ChatType.PRIVATE, title=None, username=None, default_lang="en", now=NOW,
            subscribed=True,
        )  # fmt: skip
    await store.close()
    feed_server.set("/en/rss", make_rss([piece(1)]))
    feeds = {"en": feed_server.url("/en/rss")}
    # 25 sends a second: the fan-out to 200 chats would take eight seconds.
    env = bot_env(api.url, feeds, db_path, RATE_GLOBAL_PER_SECOND="25")
    backup = tmp_path / "mid-fan-out.sqlite3"

    async with running_bot(env):
        # The first poll marks the backlog; the second sees nothing new.
        await wait_for("two polls", lambda: len(feed_server.requests_to("/en/rss")) >= 2, within=30)
        feed_server.set("/en/rss", make_rss([piece(2), piece(1)]))
        await api.wait_for(lambda a: sum(received(a).values()) >= 30, timeout=30)
        run = await cli("backup", str(backup), env=env)
        assert run.code == 0, run.err
        assert sum(received(api).values()) < len(PRIVATE)  # the fan-out was still going

    states = deliveries_by_state(backup)
    sent_before, pending = states.get("sent", set()), states.get("pending", set())
    assert sent_before and pending, f"not mid fan-out: {len(sent_before)} sent"
    assert sent_before | pending == set(PRIVATE)
    first_run = received(api)
    assert all(first_run[chat] == 1 for chat in sent_before)  # each recorded send happened

    restored = tmp_path / "restored" / "bot.sqlite3"
    restored.parent.mkdir()
    shutil.copyfile(backup, restored)
    async with FakeBotApi(TOKEN, global_per_second=600, private_per_second=20) as api2:
        env2 = bot_env(api2.url, feeds, restored)
        async with running_bot(env2):
            await api2.wait_for(lambda a: set(received(a)) >= pending, timeout=60)
            await wait_for(
                "all sent", lambda: set(deliveries_by_state(restored)) == {"sent"}, within=30
            )
        second_run = received(api2)

    assert not set(second_run) & sent_before, "a send recorded in the backup was repeated"
    assert second_run == Counter(dict.fromkeys(pending, 1))
    assert deliveries_by_state(restored) == {"sent": set(PRIVATE)}


# ------------------------------------------------------------------------------- migrations


def build_old_store(path: Path, version: int, marker: str) -> None:
    """A store as an older bot left it: the migrations up to `version`, and one feed."""
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        for migration in MIGRATIONS[:version]:
            conn.executescript(migration.sql)
        conn.execute(f"PRAGMA user_version = {version}")
        if version >= HISTORY_SINCE:  # as the older bot's migrate() recorded them
            conn.executemany(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                [(m.version, m.name) for m in MIGRATIONS[:version]],
            )
        conn.execute("INSERT INTO feeds (url, lang) VALUES (?, 'en')", (marker,))


def pre_migration_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.pre-v*.bak"))


async def test_an_upgrade_first_copies_the_store_and_keeps_the_last_three_copies(
    db_path: Path,
) -> None:
    unrelated = db_path.with_name("other.sqlite3.pre-v5-20200101T000000.000000Z.bak")
    unrelated.write_text("another store's backup")
    for n in range(1, 5):
        build_old_store(db_path, LATEST - 1, f"https://caliber.az/rss/{n}")
        store = await Store.open(db_path)
        await store.close()
        assert user_version(db_path) == LATEST  # migrated after the copy

    copies = pre_migration_copies(db_path)
    assert len(copies) == KEEP_MIGRATION_BACKUPS
    markers = []
    for copy in copies:
        assert copy.name.startswith(f"bot.sqlite3.pre-v{LATEST - 1}-")
        assert mode(copy) == 0o600
        assert integrity(copy) == "ok"
        assert user_version(copy) == LATEST - 1  # the store as it was before the migration
        with sqlite3.connect(copy) as conn:
            markers.append(conn.execute("SELECT url FROM feeds").fetchone()[0])
    assert markers == [f"https://caliber.az/rss/{n}" for n in (2, 3, 4)]  # the oldest went
    assert unrelated.read_text() == "another store's backup"

    # Rolling back: the copy is a store the older code opens as it is.
    rollback = db_path.with_name("rollback.sqlite3")
    shutil.copyfile(copies[-1], rollback)
    with sqlite3.connect(f"{rollback.as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST - 1
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_no_copy_for_a_new_store_or_one_already_current(db_path: Path) -> None:
    store = await Store.open(db_path)  # new
    await store.close()
    store = await Store.open(db_path)  # current
    await store.close()
    assert pre_migration_copies(db_path) == []


async def test_a_new_store_and_its_wal_files_are_private(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.ensure_feed("https://caliber.az/en/rss", "en")
    try:
        files = {p.name: mode(p) for p in db_path.parent.iterdir()}
        assert files == {
            "bot.sqlite3": 0o600,
            "bot.sqlite3-wal": 0o600,
            "bot.sqlite3-shm": 0o600,
        }
    finally:
        await store.close()
