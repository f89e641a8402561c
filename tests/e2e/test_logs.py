"""Logs: LOG_FORMAT=json writes one JSON object per line with the ids a record carries; in every
format and at every level no spelling of the token or the webhook secret gets out, not even
from a DEBUG run of the real bot, whose libraries log URLs and call parameters."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from bot.logs import ID_FIELDS, NOISY_LOGGERS, REDACTED, setup_logging
from tests.e2e.test_webhook import free_port
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import TOKEN, bot_env, running_bot

SECRET = "hook-secret_0123456789abcdefABCDEF"
TOKEN_PART = TOKEN.split(":", 1)[1]
# Every spelling that must never appear in a log line.
LEAKS = (TOKEN, quote(TOKEN, safe=""), TOKEN.replace(":", "%3a"), TOKEN_PART, SECRET)
CHANNEL = -1001000000777
READER = 7201

Install = Callable[[str], io.StringIO]


@pytest.fixture
def install_logging() -> Iterator[Install]:
    """Install the bot's logging (writing to a buffer) as __main__ does; restore pytest's after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}

    def install(fmt: str, level: str = "DEBUG") -> io.StringIO:
        buffer = io.StringIO()
        setup_logging(level, (TOKEN, SECRET), fmt=fmt, stream=buffer)
        return buffer

    yield install
    root.handlers[:], root.level = saved
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def assert_no_secrets(output: str) -> None:
    for leak in LEAKS:
        assert leak not in output, f"{leak!r} leaked"


def test_json_lines_carry_time_level_logger_message_ids_and_exception(
    install_logging: Install,
) -> None:
    out = install_logging("json")
    log = logging.getLogger("bot.delivery.publisher")
    log.warning("delivery %d to chat %d: %s", 5, -100, "Bad Request", extra={
        "delivery_id": 5, "chat_id": -100, "item_id": 9,
    })  # fmt: skip
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("bot.pipeline.poller").exception("feed crashed", extra={"feed_id": 3})
    logging.getLogger("bot").debug("plain")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    first, second, third = lines
    assert first["level"] == "WARNING" and first["logger"] == "bot.delivery.publisher"
    assert first["message"] == "delivery 5 to chat -100: Bad Request"
    assert (first["delivery_id"], first["chat_id"], first["item_id"]) == (5, -100, 9)
    assert "feed_id" not in first and "exception" not in first
    moment = datetime.fromisoformat(first["time"])
    assert first["time"].endswith("Z") and moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)
    assert second["feed_id"] == 3 and second["level"] == "ERROR"
    assert second["exception"].startswith("Traceback") and "ValueError: boom" in second["exception"]
    assert set(third) == {"time", "level", "logger", "message"}


def test_text_is_the_default_format(install_logging: Install) -> None:
    buffer = io.StringIO()
    setup_logging("INFO", stream=buffer)
    logging.getLogger("bot.pipeline.poller").info("feed %s recovered", "x", extra={"feed_id": 1})
    logging.getLogger("bot.pipeline.poller").debug("below the level")
    [line] = buffer.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO bot.pipeline.poller: feed x recovered", line
    )


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_spelling_of_the_secrets_is_redacted(fmt: str, install_logging: Install) -> None:
    out = install_logging(fmt)
    log = logging.getLogger("telegram.ext.ExtBot")
    log.debug("POST https://api.telegram.org/bot%s/getMe", TOKEN)
    log.debug("url-encoded: %s and %s", quote(TOKEN, safe=""), TOKEN.replace(":", "%3a"))
    log.info("the secret part alone: " + TOKEN_PART)  # noqa: G003 - as a library might
    log.warning("setWebhook %s", {"secret_token": SECRET})
    log.error("as an id field", extra={"chat_id": f"x{TOKEN}x", "item_id": SECRET})
    try:
        raise RuntimeError(f"The token `{TOKEN}` was rejected; header {SECRET}")
    except RuntimeError:
        log.critical("start failed", exc_info=True)
    log.info("stack", stack_info=True, extra={"feed_id": 1})

    output = out.getvalue()
    assert_no_secrets(output)
    assert output.count(REDACTED) >= 7  # the text format shows no id fields
    if fmt == "json":
        lines = [json.loads(line) for line in output.splitlines()]
        assert lines[4]["chat_id"] == f"x{REDACTED}x" and lines[4]["item_id"] == REDACTED
        assert "RuntimeError: The token `<redacted>` was rejected" in lines[5]["exception"]


async def _exercise_the_bot(
    api: FakeBotApi, feed_server: FeedServer, env: dict[str, str], out: io.StringIO
) -> None:
    """Run the bot through start, a failed delivery, a reader's /start, and stop."""
    items = [
        {
            "title": f"Piece {n}",
            "link": f"https://caliber.az/en/post/{n}",
            "guid": f"p-{n}",
            "description": f"<p>Piece {n} text.</p>",
            "pub_date": datetime(2026, 11, 20, 8, tzinfo=UTC) + timedelta(hours=n),
        }
        for n in (2, 1)
    ]
    feed_server.set("/en/rss", make_rss(items))
    api.add_chat(CHANNEL, "channel", title="Caliber EN")
    api.add_chat(READER, "private", title="Reader")
    reader = api.user(READER, first_name="Reader", language_code="en")
    api.fail("sendMessage", chat_id=CHANNEL, description="Bad Request: scripted failure")
    start = api.make_message_update(READER, reader, "/start")
    async with running_bot(env):
        await api.wait_for(lambda _: f"to chat {CHANNEL} failed" in out.getvalue(), 10)
        if "WEBHOOK_URL" in env:
            url = f"http://127.0.0.1:{env['WEBHOOK_PORT']}/hook"
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            async with aiohttp.ClientSession() as session, session.post(
                url, json={"update_id": 1, **start}, headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as answer:  # fmt: skip
                assert answer.status == 200
        else:
            api.push_update(start)
        await api.wait_sent(1, READER)


@pytest.mark.parametrize(("fmt", "mode"), [("json", "polling"), ("text", "webhook"),
                                           ("json", "webhook")])  # fmt: skip
async def test_a_debug_run_of_the_bot_never_logs_a_secret(
    fmt: str,
    mode: str,
    api: FakeBotApi,
    feed_server: FeedServer,
    db_path: Path,
    install_logging: Install,
) -> None:
    out = install_logging(fmt)
    extra = {"LOG_LEVEL": "DEBUG", "LOG_FORMAT": fmt, "CHANNELS": f"en={CHANNEL}"}
    extra |= {"BACKFILL": "1", "MAX_SEND_ATTEMPTS": "1"}
    if mode == "webhook":
        extra |= {
            "WEBHOOK_URL": "https://example.invalid/hook",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_LISTEN": "127.0.0.1",
            "WEBHOOK_PORT": str(free_port()),
        }
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path, **extra)
    await _exercise_the_bot(api, feed_server, env, out)

    output = out.getvalue()
    assert "getMe" in output  # PTB's DEBUG lines about its calls were written...
    assert REDACTED in output  # ...and they named a secret, which was redacted
    assert_no_secrets(output)
    if fmt == "json":
        lines = [json.loads(line) for line in output.splitlines()]
        assert {line["level"] for line in lines} >= {"DEBUG", "INFO", "ERROR"}
        failed = [line for line in lines if "delivery_id" in line]
        assert failed and failed[0]["chat_id"] == CHANNEL and failed[0]["item_id"] >= 1
        assert any(line.get("feed_id") for line in lines)
        assert all(set(ID_FIELDS) | {"time", "level", "logger", "message", "exception"}
                   >= set(line) for line in lines)  # fmt: skip
