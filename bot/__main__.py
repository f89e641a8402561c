"""Command line: `python -m bot [run]` runs the bot; `preview`, `check`, `backup` and `stats`
are the operator's tools (they work while the bot runs and never take its instance lock);
`migrate-store --to postgresql://…` copies the SQLite store into PostgreSQL (it takes the
instance lock: the bot must be stopped).

The only module that touches argv, the environment, logging setup, signals and exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings, load_settings, postgresql_url, url_secrets
from bot.logs import setup_logging

if TYPE_CHECKING:
    from bot.ops.check import Check

log = logging.getLogger("bot")

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 2  # another bot holds the store


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="Caliber.az analytics to Telegram."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)")
    preview = sub.add_parser(
        "preview", help="print the posts a feed would produce; needs no token and no Telegram"
    )
    preview.add_argument("--feed", help="feed URL or file (default: the first of FEEDS)")
    preview.add_argument("--lang", help="language of the post's fixed words (default: the feed's)")
    preview.add_argument("--limit", type=int, default=3, help="how many posts (default 3)")
    preview.add_argument("--html", action="store_true", help="print the Telegram HTML")
    check = sub.add_parser(
        "check", help="check the configuration, Telegram, the feeds, the store and the disk"
    )
    check.add_argument("--offline", action="store_true", help="skip getMe and the feeds")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument(
        "--min-free-mb", type=int, default=100, help="least free space in the data directory (MiB)"
    )
    backup = sub.add_parser("backup", help="copy the store, consistently, while the bot runs")
    backup.add_argument("path", type=Path, help="the file to write (created 0600)")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    sub.add_parser("stats", help="print feeds, chats, the outbox and the last day's deliveries")
    migrate = sub.add_parser(
        "migrate-store",
        help="copy the SQLite store (DATABASE_URL) into PostgreSQL; the bot must be stopped",
    )
    target = migrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="URL", help="postgresql://user:password@host:port/database")
    # A URL on the command line shows its password to `ps`; a file (0600) does not.
    target.add_argument("--to-file", metavar="PATH", type=Path, help="a file holding that URL")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command or "run"
    if command == "check":
        return _check(args)
    try:
        if command == "preview":
            return _preview(args)
        if command in ("backup", "stats", "migrate-store"):
            settings = load_settings(_feeds_optional(os.environ), require_token=False)
        else:
            settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if command == "backup":
        setup_logging("WARNING", settings.secrets)
        return _backup(settings, args.path, force=args.force)
    if command == "stats":
        setup_logging("WARNING", settings.secrets)
        return asyncio.run(_stats(settings))
    if command == "migrate-store":
        to = args.to if args.to is not None else _read_secret_file(args.to_file)
        if to is None:
            return EXIT_CONFIG
        return _migrate_store(settings, to)
    setup_logging(settings.log_level, settings.secrets, fmt=settings.log_format)
    return asyncio.run(_run(settings))


async def _run(settings: Settings) -> int:
    from telegram.error import InvalidToken

    from bot.app import run_bot
    from bot.leadership import Deposed
    from storage.db import StoreUnusable
    from storage.instance_lock import InstanceLocked

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await run_bot(settings, stop)
    except InstanceLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except StoreUnusable as exc:
        log.critical("%s; restore a backup (README: Backups) or move the file away", exc)
        return 1
    except InvalidToken:
        log.critical("Telegram rejected TELEGRAM_BOT_TOKEN (401); check the token")
        return 1
    except Deposed as exc:
        log.error("%s", exc)  # exits 1: the orchestrator restarts it as a standby
        return 1
    except Exception:
        # Through the logger, whose handler redacts the token, never as a bare traceback.
        log.critical("the bot stopped on an unexpected error", exc_info=True)
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from bot.ops.check import check_config, checks_json, format_checks

    settings, config = check_config(os.environ)
    checks = [config]
    if settings is not None:
        setup_logging("WARNING", settings.secrets)
        checks += asyncio.run(
            _run_checks(settings, offline=args.offline, min_free=args.min_free_mb * 1024 * 1024)
        )
    secrets = settings.secrets if settings is not None else ()
    print(checks_json(checks, secrets) if args.json else format_checks(checks, secrets))
    return 0 if all(c.ok for c in checks) else EXIT_FAILED


async def _run_checks(settings: Settings, *, offline: bool, min_free: int) -> list[Check]:
    import httpx

    from bot.app import make_http_client
    from bot.ops.check import run_checks

    if offline:
        return await run_checks(settings, api=None, feeds=None, min_free=min_free)
    timeout = httpx.Timeout(settings.http_timeout, connect=min(10.0, settings.http_timeout))
    async with httpx.AsyncClient(timeout=timeout) as api, make_http_client(settings) as feeds:
        return await run_checks(settings, api=api, feeds=feeds, min_free=min_free)


def _backup(settings: Settings, target: Path, *, force: bool) -> int:
    from storage.backup import BackupError, backup_store

    if settings.database_path is None:
        print(
            "backup copies an SQLite store; back PostgreSQL up with pg_dump (README: PostgreSQL)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        result = backup_store(settings.database_path, target, force=force)
    except BackupError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"backup written: {result.path} ({result.size} bytes, schema {result.schema_version}, "
        f"integrity ok, {result.seconds:.1f} s)"
    )
    return 0


async def _stats(settings: Settings) -> int:
    from bot.clock import SystemClock
    from bot.ops.stats import format_stats, stats_report
    from storage.db import StoreUnusable
    from storage.store import SchemaMismatchError, Store

    try:
        store = await Store.open_readonly(settings.store_target)
    except (FileNotFoundError, SchemaMismatchError, StoreUnusable, sqlite3.Error) as exc:
        print(f"stats: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        report = await stats_report(store, SystemClock().now())
    finally:
        await store.close()
    print(format_stats(report))
    return 0


def _read_secret_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or exc
        print(f"migrate-store: cannot read --to-file {path}: {reason}", file=sys.stderr)
        return None


def _migrate_store(settings: Settings, target: str) -> int:
    """Copy the SQLite store into the PostgreSQL database `target` (storage.store_copy)."""
    from storage.postgres import redacted

    try:
        postgresql_url(target)  # the same rule as DATABASE_URL's
    except ValueError:
        print(
            "migrate-store: --to must be postgresql://user:password@host:port/database",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if settings.database_path is None:
        print(
            "migrate-store copies the SQLite store DATABASE_URL names; it names PostgreSQL "
            "(set DATABASE_URL=sqlite:///path/to/bot.sqlite3 for the copy)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    setup_logging("WARNING", (*settings.secrets, *url_secrets(target)))
    print(f"migrate-store: copying {settings.database_path} into {redacted(target)}", flush=True)
    return asyncio.run(_copy_store(settings.database_path, target))


async def _copy_store(source: Path, target: str) -> int:
    from storage.backends import store_errors
    from storage.db import StoreUnusable
    from storage.instance_lock import InstanceLocked
    from storage.postgres import redacted
    from storage.store_copy import CopyRefused, CountMismatch, copy_store

    try:
        report = await copy_store(source, target)
    except InstanceLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except CountMismatch as exc:
        for table in exc.report.tables:
            mark = "" if table.source == table.target else f"  MISMATCH: {table.target} copied"
            print(f"  {table.name}: {table.source}{mark}")
        print(f"migrate-store: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (CopyRefused, FileNotFoundError, StoreUnusable) as exc:
        print(f"migrate-store: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except store_errors() as exc:
        # asyncpg's and sqlite3's messages name tables and values, never the password.
        print(
            f"migrate-store: the copy failed, nothing was committed: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    width = max(len(t.name) for t in report.tables) + 1
    for table in report.tables:
        print(f"  {table.name + ':':<{width}} {table.source}")
    rate = report.rows / report.seconds if report.seconds > 0 else 0.0
    print(
        f"copied {report.rows} rows in {report.seconds:.1f} s ({rate:.0f} rows/s); "
        "every count matches"
    )
    if report.rerun:
        print(
            f"a rerun onto this store's earlier copy: {report.deleted} row(s) the store no "
            f"longer has deleted, {report.sent_kept} sent delivery(ies) kept as sent"
        )
    print(
        "the bot builds the search index when it first starts on PostgreSQL; start it with "
        f"DATABASE_URL={redacted(target)}"
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from bot.ops.preview import run_preview

    env = _feeds_optional(os.environ)
    settings = load_settings(env, require_token=False)
    setup_logging(settings.log_level if env.get("LOG_LEVEL") else "WARNING")
    return asyncio.run(
        run_preview(settings, feed=args.feed, lang=args.lang, limit=args.limit, html=args.html)
    )


def _feeds_optional(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with a placeholder FEEDS if it has none: preview reads --feed (or the bundled
    sample feed), and backup and stats read only DATABASE_URL."""
    if not env.get("FEEDS", "").strip():
        return dict(env) | {"FEEDS": "en=https://preview.invalid/feed"}
    return dict(env)


if __name__ == "__main__":
    sys.exit(main())
