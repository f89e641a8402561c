"""The test PostgreSQL server (tests/pg.py) and its fixtures: databases, isolation, restarts."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from tests import pg
from tests.pg import PgCluster


async def test_a_pg_url_database_takes_connections_and_keeps_rows(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://postgres@127.0.0.1:")
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        await conn.executemany("INSERT INTO notes (body) VALUES ($1)", [("один",), ("Əli",)])
        rows = await conn.fetch("SELECT body, upper(body) AS up FROM notes ORDER BY id")
        # upper() of Cyrillic and Azerbaijani letters: the cluster's ctype is UTF-8, not C.
        assert [(r["body"], r["up"]) for r in rows] == [("один", "ОДИН"), ("Əli", "ƏLI")]
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()


async def test_two_databases_are_separate(pg_url: str, pg_new_database: Callable[[], str]) -> None:
    other_url = pg_new_database()
    assert other_url != pg_url
    first = await asyncpg.connect(pg_url)
    second = await asyncpg.connect(other_url)
    try:
        await first.execute("CREATE TABLE only_here (x int)")
        await first.execute("INSERT INTO only_here VALUES (1)")
        assert await second.fetchval("SELECT to_regclass('only_here')") is None
        await second.execute("CREATE TABLE only_here (x int)")  # no clash with the first one
        assert await second.fetchval("SELECT count(*) FROM only_here") == 0
        assert await first.fetchval("SELECT count(*) FROM only_here") == 1
    finally:
        await first.close()
        await second.close()


async def test_restart_keeps_the_data_and_the_url(pg_cluster: PgCluster, pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    port = pg_cluster.port

    await pg_cluster.arestart(down_for=0.1)  # in a thread: this loop keeps running meanwhile

    assert pg_cluster.port == port
    # The old connection was ended by the stop: using it fails rather than hanging.
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT x FROM kept") == 42
    finally:
        await conn.close()


async def test_drop_database_ends_open_connections(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database("t_drop_while_connected")
    conn = await asyncpg.connect(url)
    try:
        pg_cluster.drop_database("t_drop_while_connected")
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await asyncpg.connect(url)
    finally:
        conn.terminate()


def test_database_names_must_be_plain_identifiers(pg_cluster: PgCluster) -> None:
    with pytest.raises(ValueError, match="database name"):
        pg_cluster.create_database('x"; DROP DATABASE postgres; --')


def test_missing_server_binaries_fail_with_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like a machine with only libpq-dev: pg_config names a bindir that holds no server.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pg_config = bindir / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {tmp_path / 'empty'}\n")
    pg_config.chmod(pg_config.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(pg, "_DEBIAN_ROOT", tmp_path / "no-postgresql")

    with pytest.raises(RuntimeError, match=r"install postgresql-15 \(\.ci/run does\)"):
        PgCluster()
