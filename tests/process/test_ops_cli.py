"""The operator's commands as the operator runs them: `python -m bot check|stats` and a second
`python -m bot` on a store that is in use, each a real process (talking to the fake Bot API and
the feed server on 127.0.0.1 where it needs the network)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.ops.check import check_data_dir
from storage import outbox
from storage.migrations import MIGRATIONS
from storage.models import ChatType
from storage.store import Store
from tests.factories import new_item, sent
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import TOKEN, BotProcess, CliRun, bot_env, cli_env, run_cli

ROOT = Path(__file__).resolve().parents[2]
LATEST = MIGRATIONS[-1].version
NOW = time.time()


@dataclass(frozen=True)
class Run(CliRun):
    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def line(self, prefix: str) -> str:
        """The report line of one check, found by its status and name (e.g. "FAIL feed ru")."""
        found = [line for line in self.lines if " ".join(line.split()[:3]).startswith(prefix)]
        assert found, f"no line {prefix!r} in:\n{self.out}\n{self.err}"
        return found[0]


async def cli(*args: str, env: Mapping[str, str], timeout: float = 60) -> Run:
    run = await run_cli(*args, env=env, timeout=timeout)
    return Run(run.code, run.out, run.err)


def offline_env(db_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "FEEDS": "en=https://caliber.invalid/en/rss",
        "DATABASE_URL": f"sqlite:///{db_path}",
    }
    return env | overrides


def rss(n: int) -> str:
    return make_rss(
        [{"title": f"Piece {i}", "link": f"https://caliber.az/en/p{i}", "guid": f"p{i}"}
         for i in range(n, 0, -1)]
    )  # fmt: skip


# ------------------------------------------------------------------------------- check


async def test_check_offline_on_a_fresh_deployment_passes_and_creates_nothing(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "data" / "bot.sqlite3"
    run = await cli("check", "--offline", env=offline_env(db_path))
    assert run.code == 0, run.out + run.err
    assert run.line("ok config")
    assert "not created yet" in run.line("ok store")
    assert "writable" in run.line("ok data dir")
    assert "MiB free" in run.line("ok data dir")
    assert not (tmp_path / "data").exists()  # a check never creates the store or its directory
    assert TOKEN not in run.out + run.err


async def test_check_offline_reports_the_schema_of_an_existing_store(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.close()
    run = await cli("check", "--offline", env=offline_env(db_path))
    assert run.code == 0, run.out + run.err
    assert f"schema {LATEST} (expected {LATEST})" in run.line("ok store")


async def test_check_fails_on_a_store_newer_than_the_code(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.close()
    with sqlite3.connect(db_path) as conn:  # as a newer bot leaves it
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, 'newer')", (LATEST + 1,)
        )
    run = await cli("check", "--offline", env=offline_env(db_path))
    assert run.code == 1
    line = run.line("FAIL store")
    assert f"schema {LATEST + 1} (expected {LATEST})" in line
    assert "newer than this bot" in line
    with sqlite3.connect(db_path) as conn:  # the check changed nothing
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == (
            LATEST + 1
        )


def _deny_writes(path: Path, deny: bool) -> None:
    """Make `path` unwritable (or writable again) even for root, who writes through permission
    bits: the immutable attribute stops root too."""
    if os.geteuid() != 0:
        path.chmod(0o555 if deny else 0o755)
        return
    subprocess.run(["chattr", "+i" if deny else "-i", str(path)], check=True)


@pytest.mark.parametrize("how", ["no write permission", "a file in the way"])
async def test_check_fails_when_the_data_directory_cannot_be_written(
    tmp_path: Path, how: str
) -> None:
    if how == "no write permission":
        data = tmp_path / "data"
        data.mkdir()
        _deny_writes(data, True)
        db_path = data / "bot.sqlite3"
    else:
        (tmp_path / "data").write_text("a file where the data directory should be")
        db_path = tmp_path / "data" / "db" / "bot.sqlite3"
    try:
        run = await cli("check", "--offline", env=offline_env(db_path))
    finally:
        if how == "no write permission":
            _deny_writes(tmp_path / "data", False)
    assert run.code == 1
    detail = run.line("FAIL data dir")
    assert "not writable" in detail or "cannot be created" in detail


async def test_check_fails_below_the_free_space_minimum(tmp_path: Path) -> None:
    db_path = tmp_path / "bot.sqlite3"
    run = await cli(
        "check", "--offline", "--min-free-mb", str(10**9), env=offline_env(db_path)
    )  # a petabyte: more than this machine has
    assert run.code == 1
    assert "but only" in run.line("FAIL data dir")
    # The default minimum, documented as 100 MiB.
    assert check_data_dir(db_path).detail.endswith("(minimum 100 MiB)")


async def test_check_json_is_one_object_and_a_config_error_names_the_variable(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "bot.sqlite3"
    good = await cli("check", "--offline", "--json", env=offline_env(db_path))
    body = json.loads(good.out)
    assert good.code == 0 and body["ok"] is True
    assert [c["name"] for c in body["checks"]] == ["config", "store", "data dir"]
    assert all(set(c) == {"name", "ok", "detail"} for c in body["checks"])

    bad = await cli("check", "--json", env=offline_env(db_path, POLL_INTERVAL="soon"))
    body = json.loads(bad.out)
    assert bad.code == 1 and body["ok"] is False
    assert body["checks"] == [
        {
            "name": "config",
            "ok": False,
            "detail": "POLL_INTERVAL: got 'soon'; expected seconds, 0.05..86400",
        }
    ]


async def test_check_online_calls_getme_and_reads_every_feed(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    feed_server.set("/en/rss", rss(3))
    feed_server.set("/ru/rss", rss(2))
    feeds = {"en": feed_server.url("/en/rss"), "ru": feed_server.url("/ru/rss")}
    env = bot_env(api.url, feeds, db_path)

    run = await cli("check", env=env)
    assert run.code == 0, run.out + run.err
    assert f"@{api.bot_user['username']}" in run.line("ok telegram")
    assert "3 item(s)" in run.line("ok feed en")
    assert "2 item(s)" in run.line("ok feed ru")
    assert len(api.calls_to("getMe")) == 1
    assert len(feed_server.requests_to("/en/rss")) == 1  # fetched once

    feed_server.garbage("/ru/rss")
    broken = await cli("check", "--json", env=env)
    assert broken.code == 1
    checks = {c["name"]: c for c in json.loads(broken.out)["checks"]}
    assert checks["telegram"]["ok"] and checks["feed en"]["ok"]
    assert not checks["feed ru"]["ok"]
    assert feeds["ru"] in checks["feed ru"]["detail"]

    feed_server.fail("/en/rss", 503)
    down = await cli("check", env=env)
    assert down.code == 1
    assert "HTTP 503" in down.line("FAIL feed en")
    for output in (run, broken, down):
        assert TOKEN not in output.out + output.err


async def test_check_online_reports_a_rejected_token_without_printing_it(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    feed_server.set("/en/rss", rss(1))
    wrong = "654321:WRONG-TOKEN-0123456789abcdefghij"
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)
    env["TELEGRAM_BOT_TOKEN"] = wrong
    run = await cli("check", env=env)
    assert run.code == 1
    assert "rejected (401)" in run.line("FAIL telegram")
    assert wrong not in run.out + run.err

    unreachable = dict(env, TELEGRAM_API_URL="http://127.0.0.1:9")  # discard: nothing listens
    run = await cli("check", env=unreachable)
    assert "not reachable" in run.line("FAIL telegram")
    assert wrong not in run.out + run.err


# ------------------------------------------------------------------------------- stats


async def test_stats_prints_the_report_from_a_read_only_store(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.ensure_feed("https://caliber.az/en/rss", "en")
    for chat_id, kind in [
        (-1001, ChatType.CHANNEL),
        (11, ChatType.PRIVATE),
        (12, ChatType.PRIVATE),
    ]:
        await store.upsert_chat(
            chat_id, kind, title=None, username=None, default_lang="en", now=NOW, subscribed=True
        )
    feed = await store.get_feed_by_url("https://caliber.az/en/rss")
    assert feed is not None
    await store.store_poll(
        feed.id, [new_item(1)], etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
        max_age=1e9, backfill=0,
    )  # fmt: skip  # the first poll: backlog, nothing queued
    await store.store_poll(
        feed.id, [new_item(1), new_item(2)], etag=None, last_modified=None, now=NOW,
        next_poll_at=NOW, max_age=1e9, backfill=0,
    )  # fmt: skip  # piece 2 is queued for the three chats
    due = await outbox.due_by_ids(
        store, [h.delivery_id for h in await outbox.pending_heads(store)], NOW
    )
    await store.record_outcomes([sent(due[0].delivery.id, 7, NOW)])
    await store.record_event("429", "Too Many Requests: retry after 3", NOW, chat_id=11)
    await store.close()
    before = await asyncio.to_thread(db_path.read_bytes)

    run = await cli("stats", env={"DATABASE_URL": f"sqlite:///{db_path}"})  # no FEEDS, no token
    assert run.code == 0, run.err
    assert run.lines[:10] == [
        "Feeds",
        "  en https://caliber.az/en/rss: ok, last poll "
        f"{datetime.fromtimestamp(NOW, UTC):%Y-%m-%d %H:%M:%S} UTC, 0 error(s) in a row, 2 item(s)",
        "Chats",
        "  channels: posting 1",
        "  groups: none",
        "  private: posting 2",
        "Outbox (all kept rows)",
        "  pending 2, sent 1, failed 0, cancelled 0, skipped 0",
        "Deliveries created in the last 24 h",
        "  sent 1, failed 0, skipped 0, pending now 2, 429 answers 1",
    ]
    assert "429 chat 11: Too Many Requests: retry after 3" in run.lines[-1]
    assert await asyncio.to_thread(db_path.read_bytes) == before  # read-only: nothing changed


async def test_stats_refuses_a_missing_store_or_another_schema(db_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{db_path}"}
    missing = await cli("stats", env=env)
    assert missing.code == 1
    assert f"no store at {db_path}" in missing.err
    assert not await asyncio.to_thread(db_path.exists)  # never created

    store = await Store.open(db_path)
    await store.close()
    with sqlite3.connect(db_path) as conn:  # as if the last migration had not run
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (LATEST,))
    older = await cli("stats", env=env)
    assert older.code == 1
    assert f"schema version {LATEST - 1}; this code reads {LATEST}" in older.err
    with sqlite3.connect(db_path) as conn:  # not migrated
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == (
            LATEST - 1
        )


# ------------------------------------------------------------------------------- one instance


async def test_a_second_bot_on_the_same_store_is_refused_until_the_first_dies(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    feed_server.set("/en/rss", rss(1))
    env = cli_env(bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path, LOG_LEVEL="INFO"))
    first = BotProcess(env, tmp_path / "first.log")
    third = BotProcess(env, tmp_path / "third.log")
    lock_file = db_path.with_name(db_path.name + ".lock")
    try:
        first.start()
        assert first.proc is not None
        await api.wait_for(lambda a: bool(a.calls_to("getUpdates")), timeout=30)
        assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600

        second = await cli(env=env)  # `python -m bot`, i.e. run
        assert second.code == 2
        lines = second.err.strip().splitlines()
        assert len(lines) == 1, second.err
        assert str(db_path) in lines[0]
        assert f"pid {first.proc.pid} on host {socket.gethostname()}, started 20" in lines[0]
        assert first.proc.poll() is None  # the first bot runs on, untouched
        # The tools do not take the lock: they work while the bot runs.
        assert (await cli("check", "--offline", env=env)).code == 0
        assert (await cli("stats", env=env)).code == 0

        first.signal(signal.SIGKILL)
        assert await first.exit_code(10) == -signal.SIGKILL
        calls_before = len(api.calls_to("getUpdates"))
        third.start()
        assert third.proc is not None
        await api.wait_for(lambda a: len(a.calls_to("getUpdates")) > calls_before, timeout=30)
        assert json.loads(lock_file.read_text())["pid"] == third.proc.pid
        third.signal(signal.SIGTERM)
        assert await third.exit_code(20) == 0, third.log()
    finally:
        first.kill_if_running()
        third.kill_if_running()
