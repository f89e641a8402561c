"""`python -m bot check`: is this deployment ready to run? Configuration, the Bot API (getMe),
each feed, the store's schema and the data directory, each a Check with a one-line verdict.

Nothing here writes to the store or creates it: the store is opened read-only and the data
directory is probed with a temporary file that is removed at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bot.config import ConfigError, FeedSource, Settings, load_settings
from bot.pipeline.feeds import FeedError, fetch_feed, parse_feed
from storage.backup import schema_version
from storage.migrations import MIGRATIONS
from storage.postgres import probe, redacted

MIN_FREE_BYTES = 100 * 1024 * 1024  # below this the data directory check fails
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_config(env: Mapping[str, str]) -> tuple[Settings | None, Check]:
    """Load the settings `run` would use; a bad value is a failed check naming the variable."""
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        return None, Check("config", ok=False, detail=str(exc))
    store = settings.database_path or redacted(settings.database_url or "")
    detail = f"{len(settings.feeds)} feed(s), store {store}"
    return settings, Check("config", ok=True, detail=detail)


async def check_bot_api(settings: Settings, client: httpx.AsyncClient) -> Check:
    """Call getMe with the configured token: is the Bot API reachable, is the token accepted?"""
    assert settings.token is not None
    url = f"{settings.api_url}/bot{settings.token}/getMe"
    try:
        response = await client.get(url)
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        detail = f"{settings.api_url} not reachable: {type(exc).__name__}: {exc}"
        return Check("telegram", ok=False, detail=scrub(detail, settings.secrets))
    if response.status_code == 401:
        return Check("telegram", ok=False, detail="getMe: the token was rejected (401)")
    me = answer.get("result") if isinstance(answer, dict) else None
    if not (isinstance(me, dict) and answer.get("ok")):
        description = answer.get("description") if isinstance(answer, dict) else None
        detail = f"getMe: HTTP {response.status_code} {description or 'unexpected answer'}"
        return Check("telegram", ok=False, detail=scrub(detail, settings.secrets))
    return Check("telegram", ok=True, detail=f"getMe: @{me.get('username')} (id {me.get('id')})")


async def check_feed(feed: FeedSource, settings: Settings, client: httpx.AsyncClient) -> Check:
    """Fetch and parse one feed once, as the poller does."""
    name = f"feed {feed.lang}"
    result = await fetch_feed(
        client, feed.url, max_bytes=settings.feed_max_bytes, timeout=settings.http_timeout
    )
    if result.status != "ok":
        return Check(name, ok=False, detail=f"{feed.url}: {result.error or result.status}")
    try:
        parsed = await asyncio.to_thread(parse_feed, result.body, feed.url, result.content_type)
    except FeedError as exc:
        return Check(name, ok=False, detail=f"{feed.url}: not a feed ({exc})")
    except Exception as exc:  # a parser bug must not end the report
        return Check(name, ok=False, detail=f"{feed.url}: parse failed ({type(exc).__name__})")
    dated = [i.published_at for i in parsed.items if i.published_at is not None]
    newest = f", newest {_utc(max(dated))}" if dated else ""
    malformed = f" (malformed, kept what it yielded: {parsed.bozo})" if parsed.bozo else ""
    http = f"HTTP {result.http_status}, " if result.http_status else ""
    detail = f"{feed.url}: {http}{len(parsed.items)} item(s){newest}{malformed}"
    return Check(name, ok=True, detail=detail)


def check_store(path: Path) -> Check:
    """Report the store's schema version against the code's, opening it read-only."""
    expected = MIGRATIONS[-1].version
    if not path.exists():
        return Check("store", ok=True, detail=f"{path} not created yet (created at start)")
    if not path.is_file():
        return Check("store", ok=False, detail=f"{path} is not a file")
    try:
        found = schema_version(path)
    except sqlite3.Error as exc:
        return Check("store", ok=False, detail=f"{path} cannot be read: {exc}")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("store", ok=False, detail=f"{path} is not writable by this user")
    versions = f"schema {found} (expected {expected})"
    if found > expected:
        detail = f"{versions}: newer than this bot; run the newer version or restore a backup"
        return Check("store", ok=False, detail=detail)
    if found == 0:
        return Check("store", ok=True, detail=f"{versions}: empty, initialised at start")
    if found < expected:
        detail = f"{versions}: migrated at start, after a backup is written beside it"
        return Check("store", ok=True, detail=detail)
    return Check("store", ok=True, detail=versions)


def check_data_dir(store: Path, min_free: int = MIN_FREE_BYTES) -> Check:
    """Is the store's directory (or, when missing, the place it will be made) writable and
    roomy? Probed with a temporary file, removed at once."""
    directory = store.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        detail = f"{directory} cannot be created: {existing} is a file"
        return Check("data dir", ok=False, detail=detail)
    where = f"{directory}" if existing == directory else f"{directory} (made in {existing})"
    try:
        handle, probe = tempfile.mkstemp(prefix=".bot-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return Check("data dir", ok=False, detail=f"{where} is not writable: {exc.strerror or exc}")
    free = shutil.disk_usage(existing).free
    room = f"{free / MIB:,.0f} MiB free (minimum {min_free / MIB:,.0f} MiB)"
    if free < min_free:
        return Check("data dir", ok=False, detail=f"{where} writable, but only {room}")
    return Check("data dir", ok=True, detail=f"{where} writable, {room}")


async def run_checks(
    settings: Settings,
    *,
    api: httpx.AsyncClient | None,
    feeds: httpx.AsyncClient | None,
    min_free: int = MIN_FREE_BYTES,
) -> list[Check]:
    """Run every check after the configuration's; `api`/`feeds` None skips the network ones."""
    checks: list[Check] = []
    if api is not None:
        checks.append(await check_bot_api(settings, api))
    if feeds is not None:
        checks += await asyncio.gather(*(check_feed(f, settings, feeds) for f in settings.feeds))
    if settings.database_path is not None:
        checks.append(await asyncio.to_thread(check_store, settings.database_path))
        checks.append(await asyncio.to_thread(check_data_dir, settings.database_path, min_free))
    elif settings.database_url is not None:
        checks.append(await check_postgresql(settings.database_url))
    return checks


async def check_postgresql(url: str) -> Check:
    """Reach the PostgreSQL database and report its schema version against the code's."""

    expected = MIGRATIONS[-1].version
    try:
        where, found = await probe(url)
    except Exception as exc:
        return Check("store", ok=False, detail=str(exc))
    versions = f"{where}: schema {found} (expected {expected})"
    if found > expected:
        return Check("store", ok=False, detail=f"{versions}: newer than this bot")
    if found < expected:
        return Check("store", ok=True, detail=f"{versions}: migrated at start")
    return Check("store", ok=True, detail=versions)


def format_checks(checks: Sequence[Check], secrets: Sequence[str] = ()) -> str:
    """One line a check: `ok   store     schema 6 (expected 6)`; FAIL for a failed one."""
    width = max((len(c.name) for c in checks), default=0) + 2
    return "\n".join(
        scrub(f"{'ok' if c.ok else 'FAIL':<5}{c.name:<{width}}{c.detail}", secrets) for c in checks
    )


def checks_json(checks: Sequence[Check], secrets: Sequence[str] = ()) -> str:
    """The checks as one JSON object: {"ok": all passed, "checks": [{name, ok, detail}]}."""
    body = {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
    return scrub(json.dumps(body, ensure_ascii=False), secrets)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret in `text` (the token may sit in an error's URL)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<token>")
    return text


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
