"""A patient start: while getMe fails (5xx, an answer that is not the Bot API's, no network) the
bot waits with backoff, 1 s doubling, saying why once per change; a rejected token is final.

Every way out (stopped while waiting, a 401, a configuration error, a normal stop, in polling and
webhook mode) leaves no HTTP session or transport unclosed: `python -m bot` runs in developer
mode, where Python and aiohttp report those on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.app import Runtime, run_bot
from bot.config import load_settings
from bot.text.i18n import Translator
from handlers.views.readers import GREETING
from tests.fakes.botapi import FakeBotApi
from tests.fakes.clock import ManualClock
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import ROOT, BotProcess, bot_env

READER = 7101
TR = Translator()


def _env(api_url: str, feeds: FeedServer, db_path: Path, **extra: str) -> dict[str, str]:
    feeds.set("/en/rss", make_rss([]))
    return bot_env(api_url, {"en": feeds.url("/en/rss")}, db_path, **extra)


async def _wait(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)


async def test_getme_failures_are_waited_out_with_backoff_and_logged_once_per_reason(
    api: FakeBotApi,
    feed_server: FeedServer,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.app")
    api.server_error("getMe", times=3, status=502)  # nginx's HTML page, as Telegram's front
    api.garbage("getMe", times=2)  # 200 with a page that is not the Bot API's JSON
    api.add_chat(READER, "private", title="Reader")
    clock = ManualClock()
    settings = load_settings(_env(api.url, feed_server, db_path))
    stop = asyncio.Event()
    started: asyncio.Future[Runtime] = asyncio.get_running_loop().create_future()
    bot = asyncio.create_task(
        run_bot(settings, stop, clock=clock, rng=random.Random(1), on_started=started.set_result)
    )
    try:
        for attempt, delay in enumerate([1, 2, 4, 8, 16], start=1):
            await _wait(
                f"getMe attempt {attempt}",
                lambda n=attempt: len(api.calls_to("getMe")) >= n,  # type: ignore[misc]
            )
            await _wait(f"backoff after attempt {attempt}", lambda: clock.sleepers >= 1)
            assert not started.done()
            await clock.advance(delay - 0.01)
            assert len(api.calls_to("getMe")) == attempt  # not a moment early
            await clock.advance(0.01)
        await asyncio.wait_for(asyncio.shield(started), 10)

        # Serving as usual: a reader's /start is answered.
        reader = api.user(READER, first_name="Reader", language_code="en")
        api.push_update(api.make_message_update(READER, reader, "/start"))
        await api.wait_sent(1, READER)
        assert api.sent_texts(READER)[0].startswith(TR.gettext("en", GREETING))
    finally:
        stop.set()
        await asyncio.wait_for(bot, 20)

    assert len(api.calls_to("getMe")) == 6
    notes = [r for r in caplog.records if r.name == "bot.app" and "Bot API" in r.getMessage()]
    warnings = [r.getMessage() for r in notes if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one per reason, not one per attempt
    assert "Bad Gateway (502)" in warnings[0] and "retrying in 1 s" in warnings[0]
    assert "Invalid server response" in warnings[1] and "retrying in 8 s" in warnings[1]
    assert [r.getMessage() for r in notes if r.levelno == logging.INFO] == ["reached the Bot API"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _dev_mode_bot(env: dict[str, str], tmp_path: Path) -> BotProcess:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = base | env | {"PYTHONPATH": str(ROOT), "PYTHONDEVMODE": "1", "PYTHONWARNINGS": "default"}
    bot = BotProcess(env, tmp_path / "bot.log")
    bot.start()
    return bot


def _assert_nothing_left_open(bot: BotProcess) -> None:
    output = bot.log_path.read_text(errors="replace")
    # aiohttp: "Unclosed client session", "Unclosed connector"; Python: "unclosed transport".
    assert "unclosed" not in output.lower(), output
    assert "Task was destroyed but it is pending" not in output, output


@pytest.mark.parametrize("outage", ["502", "no server"])
async def test_stopped_while_waiting_for_the_bot_api_exits_0_with_nothing_left_open(
    outage: str, api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    if outage == "502":
        api.server_error("getMe", times=1000, status=502)
        api_url = api.url
    else:
        api_url = f"http://127.0.0.1:{_closed_port()}"
    bot = _dev_mode_bot(_env(api_url, feed_server, db_path, LOG_LEVEL="DEBUG"), tmp_path)
    try:
        await _wait(
            "the second failure",
            lambda: "still cannot reach the Bot API" in bot.log_path.read_text(),
            timeout=30,
        )
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(10) == 0, bot.log()
    finally:
        bot.kill_if_running()
    output = bot.log_path.read_text()
    assert output.count("cannot reach the Bot API (") == 1, output
    _assert_nothing_left_open(bot)


async def test_rejected_token_is_final_and_leaves_nothing_open(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    env = _env(api.url, feed_server, db_path, TELEGRAM_BOT_TOKEN="654321:" + "R" * 30)
    bot = _dev_mode_bot(env, tmp_path)
    try:
        assert await bot.exit_code(30) == 1, bot.log()
    finally:
        bot.kill_if_running()
    assert len(api.calls_to("getMe")) == 1
    output = bot.log_path.read_text()
    assert "Telegram rejected TELEGRAM_BOT_TOKEN" in output
    assert "R" * 30 not in output
    _assert_nothing_left_open(bot)


async def test_configuration_error_leaves_nothing_open(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    bot = _dev_mode_bot(_env(api.url, feed_server, db_path, POLL_INTERVAL="soon"), tmp_path)
    try:
        assert await bot.exit_code(30) == 2, bot.log()
    finally:
        bot.kill_if_running()
    assert "POLL_INTERVAL" in bot.log_path.read_text()
    _assert_nothing_left_open(bot)


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_normal_stop_leaves_nothing_open(
    mode: str, api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    extra = {"LOG_LEVEL": "INFO"}
    if mode == "webhook":
        extra |= {
            "WEBHOOK_URL": "https://example.invalid/hook",
            "WEBHOOK_SECRET": "s3cret-0123456789",
            "WEBHOOK_LISTEN": "127.0.0.1",
            "WEBHOOK_PORT": str(_closed_port()),
        }
    bot = _dev_mode_bot(_env(api.url, feed_server, db_path, **extra), tmp_path)
    receiving = "setWebhook" if mode == "webhook" else "getUpdates"
    try:
        await _wait("updates being received", lambda: bool(api.calls_to(receiving)), timeout=30)
        await _wait("the first poll", lambda: bool(feed_server.requests_to("/en/rss")), 30)
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(20) == 0, bot.log()
    finally:
        bot.kill_if_running()
    assert "stopped (" in bot.log_path.read_text()
    _assert_nothing_left_open(bot)


async def test_webhook_refused_by_telegram_stops_the_bot_with_nothing_left_open(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, tmp_path: Path
) -> None:
    refusal = "Bad Request: bad webhook: Failed to resolve host: Name or service not known"
    api.fail("setWebhook", description=refusal)
    env = _env(
        api.url, feed_server, db_path,
        WEBHOOK_URL="https://example.invalid/hook", WEBHOOK_SECRET="s3cret-0123456789",
        WEBHOOK_LISTEN="127.0.0.1", WEBHOOK_PORT=str(_closed_port()),
    )  # fmt: skip
    bot = _dev_mode_bot(env, tmp_path)
    try:
        assert await bot.exit_code(30) == 1, bot.log()
    finally:
        bot.kill_if_running()
    output = bot.log_path.read_text()
    assert "bad webhook: failed to resolve host" in output.lower()
    assert "still running" not in output  # the application was stopped before its shutdown
    _assert_nothing_left_open(bot)


async def test_a_corrupt_store_stops_the_bot_with_a_line_naming_the_file(tmp_path: Path) -> None:
    """Before, the bot died with 'file is not a database' and a traceback, naming no file."""
    db_path = tmp_path / "bot.sqlite3"
    db_path.write_bytes(b"this is not an SQLite database, just bytes " * 100)
    env = bot_env("http://127.0.0.1:9", {"en": "http://127.0.0.1:9/rss"}, db_path,
                  LOG_LEVEL="INFO")  # fmt: skip
    bot = BotProcess(env, tmp_path / "bot.log")
    bot.start()
    try:
        assert await bot.exit_code(timeout=30) == 1
    finally:
        bot.kill_if_running()
    log = (tmp_path / "bot.log").read_text()
    line = next(line for line in log.splitlines() if "CRITICAL" in line)
    assert f"the store {db_path} cannot be used" in line and "restore a backup" in line
    assert "Traceback" not in log
