"""`python -m bot migrate-store --to postgresql://…` as the operator runs it: a real process
copying an SQLite store into a throwaway PostgreSQL database, then the real bot started on that
database against the fake Bot API. Nothing already sent is sent again; what was pending is
sent once; a target in use, a running bot and a store of another schema are refused; a rerun
onto the store's own copy changes nothing that was sent."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from storage import follows, lease
from storage.follows import TopicTerms
from storage.instance_lock import InstanceLocked, acquire_instance_lock
from storage.migrations import MIGRATIONS
from storage.models import ChatType, FanOut
from storage.store import Store
from storage.store_copy import TABLES, copy_store
from tests.factories import new_item, sent
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import BotProcess, CliRun, bot_env, cli_env, run_cli, running_bot, wait_for

ROOT = Path(__file__).resolve().parents[2]
NOW = time.time()
PASSWORD = "s3cret-Pa55word"  # the test cluster trusts every login: any password works
COPIED = [table.name for table in TABLES]


@dataclass(frozen=True)
class Run(CliRun):
    @property
    def counts(self) -> dict[str, int]:
        """The report's `  table: count` lines."""
        found: dict[str, int] = {}
        for line in self.out.splitlines():
            name, sep, count = line.strip().partition(":")
            if line.startswith("  ") and sep and name in COPIED:
                found[name] = int(count.split()[0])
        return found


async def cli(*args: str, env: Mapping[str, str], timeout: float = 120) -> Run:
    run = await run_cli(*args, env=env, timeout=timeout)
    return Run(run.code, run.out, run.err)


async def migrate(db_path: Path, url: str) -> Run:
    """`migrate-store --to URL` with DATABASE_URL naming the SQLite store, and nothing else."""
    return await cli("migrate-store", "--to", url, env={"DATABASE_URL": f"sqlite:///{db_path}"})


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


def shown(url: str) -> str:
    return url.replace("postgresql://postgres@", "postgresql://postgres:***@", 1)


def rss(n: int) -> str:
    return make_rss(
        [{"title": f"Piece {i}", "link": f"https://caliber.az/en/p{i}", "guid": f"guid-{i}"}
         for i in range(n, 0, -1)]
    )  # fmt: skip


# ------------------------------------------------------------------------------- the stores


class Killed(Exception):
    """The bot dying between two transactions of a fan-out."""


def killed() -> None:
    raise Killed


async def build_store(
    db_path: Path,
    feed_url: str,
    *,
    chats: int,
    pieces: int = 2,
    sent_chats: int,
    cut_at: int | None = None,
) -> dict[int, int]:
    """An SQLite store as a bot leaves it: a feed whose pieces 2..`pieces` are fanned out to
    `chats` private chats, every piece sent to the first `sent_chats` chats (message id per
    chat), the rest pending; and a row in every other copied table. With `cut_at`, the bot
    died once the fan-out had reached that many chats (of piece 2 alone): the rest is left
    to its job, with a filter's verdict and a followed topic's match. Returns {chat: message
    id} of the chats already sent to."""
    store = await Store.open(db_path)
    try:
        feed = await store.ensure_feed(feed_url, "en")
        chat_ids = [1000 + n for n in range(chats)]
        for chat_id in chat_ids:
            await store.upsert_chat(
                chat_id, ChatType.PRIVATE, title=None, username=None, default_lang="en",
                now=NOW, subscribed=True,
            )  # fmt: skip
        # A group that receives nothing: its settings history, incident and forum topic.
        group = -100777
        await store.upsert_chat(
            group, ChatType.SUPERGROUP, title="Ops", username=None, default_lang="en",
            now=NOW, subscribed=False,
        )  # fmt: skip
        await store.store_poll(
            feed.id, [new_item(1)], etag=None, last_modified=None, now=NOW,
            next_poll_at=NOW, max_age=1e9, backfill=0,
        )  # fmt: skip  # the first poll: backlog, nothing queued
        if cut_at is None:
            await store.store_poll(
                feed.id, [new_item(n) for n in range(1, pieces + 1)], etag=None,
                last_modified=None, now=NOW, next_poll_at=NOW, max_age=1e9, backfill=0,
            )  # fmt: skip  # pieces 2.. queued for every chat
        else:
            # The group (no subscriber) comes first by id: the first chunk ends at the chat
            # `cut_at`. The verdict is for the group; no chat follows the topic matched.
            store.fan_out_chunk = cut_at + 1
            with contextlib.suppress(Killed):
                await store.store_poll(
                    feed.id, [new_item(1), new_item(2)], etag=None, last_modified=None,
                    now=NOW, next_poll_at=NOW, max_age=1e9, backfill=0, on_queued=killed,
                    fan_out=FanOut(skips={"guid-2": {group: "excluded: ops"}},
                                   topics={"guid-2": [999]}),
                )  # fmt: skip
        message_ids = {chat_id: 500 + n for n, chat_id in enumerate(chat_ids[:sent_chats])}
        rows = await store.fetchall("SELECT id, chat_id FROM deliveries ORDER BY id")
        await store.record_outcomes(
            [sent(r[0], message_ids[r[1]], NOW) for r in rows if r[1] in message_ids]
        )
        await store.record_event("429", "Too Many Requests: retry after 3", NOW, chat_id=1000)
        async with store.transaction() as conn:
            await conn.execute(
                "INSERT INTO settings_changes (chat_id, user_id, user_name, at, what, old, new) "
                "VALUES (?, 7, 'ann', ?, 'lang', 'en', 'ru')",
                (group, NOW),
            )
            await conn.execute(
                "INSERT INTO chat_incidents (chat_id, reason, missing_right, at) "
                "VALUES (?, 'no_rights', 'can_post_messages', ?)",
                (group, NOW),
            )
            await conn.execute(
                "INSERT INTO forum_topics (chat_id, thread_id, name, seen_at) "
                "VALUES (?, 5, 'News', ?)",
                (group, NOW),
            )
            await conn.execute(
                "INSERT INTO articles (url, status, fetched_at, text, title) "
                "VALUES ('https://caliber.az/en/p1', 'ok', ?, 'Full text', 'Piece 1')",
                (NOW,),
            )
            await conn.execute(
                "INSERT INTO search_keys (key, chat_id, query, words, lang, created_at) "
                "VALUES ('k1', 1000, 'sanctions', 'sanction', 'en', ?)",
                (NOW,),
            )
            await conn.execute(
                "INSERT INTO pending_inputs (user_id, chat_id, kind, expires_at) "
                "VALUES (7, ?, 'rename', ?)",
                (group, NOW + 600),
            )
            await conn.execute("INSERT INTO paid_sends (day, sends) VALUES ('2026-01-01', 3)")
        # The group follows a two-word topic (its inverted index has several keys to page by).
        words = TopicTerms("iran oil", (("en0iran", "ru0иран"), ("en0oil", "ru0нефт")))
        await follows.add(store, group, "Iran oil", words, any_lang=True, analyzer=1, limit=20,
                          now=NOW)  # fmt: skip
    finally:
        await store.close()
    return message_ids


def sqlite_counts(db_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(db_path)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COPIED}
    finally:
        conn.close()


def sqlite_sql(db_path: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


async def pg_fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def pg_val(url: str, sql: str, *args: Any) -> Any:
    rows = await pg_fetch(url, sql, *args)
    return rows[0][0] if rows else None


async def pg_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied table's rows in key order (the copy's own provenance row left out)."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    for table in TABLES:
        where = " WHERE kind <> 'migrated_from'" if table.name == "events" else ""
        order = ", ".join(table.key)
        rows = await pg_fetch(url, f"SELECT * FROM {table.name}{where} ORDER BY {order}")
        dump[table.name] = [tuple(r) for r in rows]
    return dump


async def pg_sent(url: str) -> dict[int, tuple[int, float]]:
    """{delivery id: (message id, sent_at)} of the sent deliveries."""
    rows = await pg_fetch(
        url, "SELECT id, message_id, sent_at FROM deliveries WHERE state = 'sent'"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def pg_has_schema(url: str) -> bool:
    return bool(await pg_val(url, "SELECT to_regclass('schema_migrations') IS NOT NULL"))


# ------------------------------------------------------------------------------- the copy


async def test_after_the_copy_the_bot_on_postgresql_sends_each_chat_the_piece_exactly_once(
    api: FakeBotApi, feed_server: FeedServer, tmp_path: Path, pg_url: str
) -> None:
    feed_server.set("/en/rss", rss(2))
    feed_url = feed_server.url("/en/rss")
    db_path = tmp_path / "bot.sqlite3"
    # Piece 2 was queued for 3 chats when the bot died: its job copies, and the bot on
    # PostgreSQL queues it for the other 5.
    already = await build_store(db_path, feed_url, chats=8, sent_chats=3, cut_at=3)
    url = with_password(pg_url)
    source_bytes = db_path.read_bytes()

    run = await migrate(db_path, url)
    assert run.code == 0, run.out + run.err
    assert db_path.read_bytes() == source_bytes  # read, never written
    assert run.counts == sqlite_counts(db_path)  # every table, its count as the report says
    assert run.counts["deliveries"] == 3 and run.counts["items"] == 2
    assert run.counts["fan_out_jobs"] == 1
    assert [t for t in COPIED if run.counts[t] < 1] == [], run.counts
    assert f"copying {db_path} into {shown(pg_url)}" in run.out
    assert "every count matches" in run.out
    assert PASSWORD not in run.out + run.err
    assert run.err == ""

    # The copy is exact: ids kept, sent rows sent with their message ids, the rest pending.
    assert {k: v[0] for k, v in (await pg_sent(pg_url)).items()} == {
        d: already[c]
        for d, c in await pg_fetch(pg_url, "SELECT id, chat_id FROM deliveries")
        if c in already
    }
    provenance = await pg_fetch(pg_url, "SELECT detail FROM events WHERE kind = 'migrated_from'")
    assert len(provenance) == 1
    assert json.loads(provenance[0][0])["source"] == str(db_path)
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM search_docs") == 0  # built by the bot
    # The sequences follow the copied ids: the next row gets a new id.
    assert await pg_val(pg_url, "SELECT nextval(pg_get_serial_sequence('items', 'id'))") == 3

    env = cli_env(bot_env(api.url, {"en": feed_url}, db_path, DATABASE_URL=url, LOG_LEVEL="INFO"))
    bot = BotProcess(env, tmp_path / "bot.log")
    try:
        bot.start()
        await api.wait_for(lambda a: len(a.sent()) >= 5, timeout=30)
        # Let it poll the feed (pieces 1 and 2, both known) and publish a while longer.
        polls = len(feed_server.requests_to("/en/rss"))
        await wait_for(
            "three more polls", lambda: len(feed_server.requests_to("/en/rss")) >= polls + 3,
            within=30,
        )  # fmt: skip
        assert await bot.stop() == 0, bot.log()
    finally:
        bot.kill_if_running()

    per_chat = Counter(call.result["chat"]["id"] for call in api.sent())
    pending_chats = {1000 + n for n in range(8)} - set(already)
    assert per_chat == dict.fromkeys(pending_chats, 1), api.sent()  # none of the sent chats
    assert all("Piece 2" in text for text in api.sent_texts())
    # Every chat has the piece once: 3 before the move, 5 after it; nothing left pending.
    rows = await pg_fetch(pg_url, "SELECT chat_id, state, message_id FROM deliveries")
    assert sorted(r[0] for r in rows) == sorted({1000 + n for n in range(8)})
    assert {r[1] for r in rows} == {"sent"}
    assert {r[0]: r[2] for r in rows if r[0] in already} == already  # kept as they were
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM fan_out_jobs") == 0  # finished
    # The bot built the search index at start: every item is in it.
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM search_docs") == 2
    assert PASSWORD not in (tmp_path / "bot.log").read_text()


async def test_a_rerun_onto_its_own_copy_updates_it_and_never_unsends(
    tmp_path: Path, pg_url: str
) -> None:
    db_path = tmp_path / "bot.sqlite3"
    # 40 chats x 29 pieces: more rows than one batch of the copy.
    await build_store(db_path, "https://caliber.az/en/rss", chats=40, pieces=30, sent_chats=10)
    backup = tmp_path / "backup.sqlite3"
    src, dst = sqlite3.connect(db_path), sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    store = await Store.open(db_path)  # the bot runs on: 10 more chats are sent to
    rows = await store.fetchall(
        "SELECT id FROM deliveries WHERE state = 'pending' AND chat_id < 1020 ORDER BY id"
    )
    await store.record_outcomes([sent(r[0], 9000 + r[0], NOW + 60) for r in rows])
    await store.close()

    first = await migrate(db_path, pg_url)
    assert first.code == 0, first.out + first.err
    assert first.counts == sqlite_counts(db_path)
    assert first.counts["deliveries"] == 40 * 29 > 1000
    assert "a rerun onto" not in first.out
    sent_first = await pg_sent(pg_url)
    assert len(sent_first) == 20 * 29

    # The bot ran on SQLite a while longer: more sent, an event, a search key expired.
    store = await Store.open(db_path)
    rows = await store.fetchall(
        "SELECT id FROM deliveries WHERE state = 'pending' AND chat_id < 1025 ORDER BY id"
    )
    await store.record_outcomes([sent(r[0], 9000 + r[0], NOW + 120) for r in rows])
    await store.record_event("403", "Forbidden: bot was blocked by the user", NOW + 120)
    await store.close()
    sqlite_sql(db_path, "DELETE FROM search_keys")

    second = await migrate(db_path, pg_url)
    assert second.code == 0, second.out + second.err
    assert second.counts == sqlite_counts(db_path)
    assert "a rerun onto this store's earlier copy: 1 row(s)" in second.out
    sent_second = await pg_sent(pg_url)
    assert len(sent_second) == 25 * 29
    assert all(sent_second[d] == sent_first[d] for d in sent_first)
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM search_keys") == 0
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM events WHERE kind = '403'") == 1

    # The SQLite store is restored from the backup taken before those sends: the source says
    # pending where the copy says sent. Sent wins: nothing sent is queued again.
    backup.replace(db_path)
    third = await migrate(db_path, pg_url)
    assert third.code == 0, third.out + third.err
    assert third.counts == sqlite_counts(db_path)
    assert f"{15 * 29} sent delivery(ies) kept as sent" in third.out
    assert await pg_sent(pg_url) == sent_second
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM events WHERE kind = '403'") == 0
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM search_keys") == 1  # the backup's

    # Once more with nothing changed: the target is the same, row for row.
    before = await pg_dump(pg_url)
    fourth = await migrate(db_path, pg_url)
    assert fourth.code == 0, fourth.out + fourth.err
    assert "0 row(s) the store no longer has deleted" in fourth.out
    assert await pg_dump(pg_url) == before
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM events WHERE kind = 'migrated_from'") == 1


async def test_the_copy_holds_the_sqlite_lock_until_it_is_done(tmp_path: Path, pg_url: str) -> None:
    db_path = tmp_path / "bot.sqlite3"
    await build_store(db_path, "https://caliber.az/en/rss", chats=2, sent_chats=1)
    refused: dict[str, str] = {}

    async def a_bot_starts(table: str) -> None:
        try:
            acquire_instance_lock(db_path, started_at=NOW).release()
        except InstanceLocked as exc:
            refused[table] = exc.holder

    report = await copy_store(db_path, pg_url, before_table=a_bot_starts)
    assert report.ok and not report.rerun
    assert list(refused) == [t.name for t in TABLES]  # refused before every table
    assert all(f"pid {os.getpid()} on host {socket.gethostname()}" in h for h in refused.values())
    acquire_instance_lock(db_path, started_at=NOW).release()  # and free afterwards


async def test_pages_of_one_row_copy_every_row_including_a_table_without_rowid(
    tmp_path: Path, pg_url: str
) -> None:
    db_path = tmp_path / "bot.sqlite3"
    await build_store(db_path, "https://caliber.az/en/rss", chats=3, sent_chats=1)
    report = await copy_store(db_path, pg_url, chunk=1)
    assert report.ok
    conn = sqlite3.connect(db_path)
    try:
        source = sorted(conn.execute("SELECT term, topic_id, word, size FROM topic_terms"))
    finally:
        conn.close()
    assert len(source) == 4  # two words, two terms each: four pages keyed by (term, topic, word)
    copied = await pg_fetch(pg_url, "SELECT term, topic_id, word, size FROM topic_terms")
    assert sorted(tuple(r) for r in copied) == source


# ------------------------------------------------------------------------------- refusals


async def test_refuses_while_a_bot_runs_on_the_sqlite_store(
    api: FakeBotApi, feed_server: FeedServer, tmp_path: Path, pg_url: str
) -> None:
    feed_server.set("/en/rss", rss(1))
    db_path = tmp_path / "bot.sqlite3"
    bot = BotProcess(
        cli_env(bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)),
        tmp_path / "bot.log",
    )
    try:
        bot.start()
        await api.wait_for(lambda a: bool(a.calls_to("getUpdates")), timeout=30)
        run = await migrate(db_path, with_password(pg_url))
        assert run.code == 2, run.out + run.err
        lines = run.err.strip().splitlines()
        assert len(lines) == 1, run.err
        assert str(db_path) in lines[0]
        assert f"pid {bot.pid} on host {socket.gethostname()}, started 20" in lines[0]
        assert PASSWORD not in run.out + run.err
        assert bot.proc is not None and bot.proc.poll() is None  # the bot runs on
    finally:
        await bot.stop()
        bot.kill_if_running()
    assert not await pg_has_schema(pg_url)  # the target was not even opened


async def test_refuses_a_database_a_bot_has_run_on(
    api: FakeBotApi, feed_server: FeedServer, tmp_path: Path, pg_url: str
) -> None:
    feed_server.set("/en/rss", rss(1))
    feed_url = feed_server.url("/en/rss")
    db_path = tmp_path / "bot.sqlite3"
    await build_store(db_path, feed_url, chats=2, sent_chats=1)
    url = with_password(pg_url)
    env = bot_env(api.url, {"en": feed_url}, tmp_path / "unused.sqlite3", DATABASE_URL=url)
    async with running_bot(env):
        await wait_for(
            "the lease taken",
            lambda: pg_val(pg_url, "SELECT COUNT(*) FROM leader_lease"),
            within=20,
        )
    before = await pg_dump(pg_url)

    run = await migrate(db_path, url)
    assert run.code == 1, run.out + run.err
    assert "a bot has run on the target" in run.err
    assert PASSWORD not in run.out + run.err
    assert await pg_dump(pg_url) == before  # untouched
    assert await pg_val(pg_url, "SELECT COUNT(*) FROM events WHERE kind = 'migrated_from'") == 0


async def test_refuses_a_database_holding_other_data_or_another_stores_copy(
    tmp_path: Path, pg_new_database: Callable[[], str]
) -> None:
    ours, other = tmp_path / "ours.sqlite3", tmp_path / "other.sqlite3"
    await build_store(ours, "https://caliber.az/en/rss", chats=2, sent_chats=1)
    await build_store(other, "https://caliber.az/en/rss", chats=3, sent_chats=0)

    filled = pg_new_database()  # a database someone filled otherwise
    store = await Store.open(filled)
    await store.ensure_feed("https://example.org/rss", "en")
    await store.close()
    run = await migrate(ours, filled)
    assert run.code == 1
    assert "already holds data (feeds has rows)" in run.err
    assert await pg_val(filled, "SELECT COUNT(*) FROM items") == 0

    copied = pg_new_database()  # the copy of another store
    assert (await migrate(other, copied)).code == 0
    before = await pg_dump(copied)
    run = await migrate(ours, copied)
    assert run.code == 1
    assert f"holds a copy of another store ({other})" in run.err
    assert await pg_dump(copied) == before

    leased = pg_new_database()  # an empty database a bot has taken the lease of
    store = await Store.open(leased)
    await lease.take(store, "host-1:42", 30)
    await store.close()
    run = await migrate(ours, leased)
    assert run.code == 1
    assert "the leader lease names host-1:42" in run.err


async def test_refuses_what_it_cannot_copy_with_a_clear_message(
    tmp_path: Path, pg_url: str
) -> None:
    db_path = tmp_path / "bot.sqlite3"
    url = with_password(pg_url)

    missing = await migrate(db_path, url)
    assert missing.code == 1
    assert f"no store at {db_path}" in missing.err
    assert not db_path.exists() and not db_path.with_name("bot.sqlite3.lock").exists()

    not_sqlite = await cli("migrate-store", "--to", url, env={"DATABASE_URL": url})
    assert not_sqlite.code == 2
    assert "DATABASE_URL" in not_sqlite.err and "SQLite" in not_sqlite.err

    bad_target = await migrate(db_path, "mysql://root@localhost/bot")
    assert bad_target.code == 2
    assert "--to must be postgresql://" in bad_target.err

    await build_store(db_path, "https://caliber.az/en/rss", chats=1, sent_chats=0)
    latest = MIGRATIONS[-1].version
    sqlite_sql(db_path, "DELETE FROM schema_migrations WHERE version = ?", latest)
    older = await migrate(db_path, url)
    assert older.code == 1
    assert f"schema version {latest - 1}; this code reads {latest}" in older.err
    assert "start this version of the bot once on the SQLite store" in older.err
    assert not await pg_has_schema(pg_url)
    for run in (missing, not_sqlite, bad_target, older):
        assert PASSWORD not in run.out + run.err


async def test_a_count_that_differs_fails_the_copy_and_commits_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    db_path = tmp_path / "bot.sqlite3"
    await build_store(db_path, "https://caliber.az/en/rss", chats=2, sent_chats=1)
    store = await Store.open(pg_url)  # the schema, and a trigger that drops every article
    await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE FUNCTION drop_row() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RETURN NULL; END $$; "
            "CREATE TRIGGER lose_articles BEFORE INSERT ON articles "
            "FOR EACH ROW EXECUTE FUNCTION drop_row();"
        )
    finally:
        await conn.close()

    run = await migrate(db_path, with_password(pg_url))
    assert run.code == 1, run.out + run.err
    assert "  articles: 1  MISMATCH: 0 copied" in run.out
    assert "the counts differ (SQLite vs PostgreSQL): articles 1 vs 0; nothing committed" in (
        run.err
    )
    for table in COPIED:
        assert await pg_val(pg_url, f"SELECT COUNT(*) FROM {table}") == 0


async def test_the_target_url_may_come_from_a_file_so_ps_never_shows_its_password(
    tmp_path: Path, pg_url: str
) -> None:
    db_path = tmp_path / "bot.sqlite3"
    await build_store(db_path, "https://caliber.az/en/rss", chats=2, sent_chats=1)
    secret = tmp_path / "database_url"
    secret.write_text(with_password(pg_url) + "\n")
    secret.chmod(0o600)
    env = {"DATABASE_URL": f"sqlite:///{db_path}"}
    run = await cli("migrate-store", "--to-file", str(secret), env=env)
    assert run.code == 0, run.out + run.err
    assert "every count matches" in run.out and PASSWORD not in run.out + run.err
    missing = await cli("migrate-store", "--to-file", str(tmp_path / "nope"), env=env)
    assert missing.code == 2 and "cannot read --to-file" in missing.err
