"""Configuration: every bad value stops the bot with exit status 2 and one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from tests.support import TOKEN

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "TELEGRAM_BOT_TOKEN": TOKEN,
    "FEEDS": "en=https://caliber.az/en/rss, ru=https://caliber.az/ru/rss",
}


def test_defaults_and_parsing() -> None:
    settings = load_settings(
        GOOD
        | {
            "CHANNELS": "en=@caliber_en,ru=-1001234567890",
            "ADMIN_USER_IDS": "1, 22",
            "POLL_INTERVAL": "2.5",
            "MAX_AGE": "36h",
            "DATABASE_URL": "sqlite:////data/bot.sqlite3",
        }
    )
    assert [(f.lang, f.url) for f in settings.feeds] == [
        ("en", "https://caliber.az/en/rss"),
        ("ru", "https://caliber.az/ru/rss"),
    ]
    assert [(c.lang, c.chat, c.chat_id) for c in settings.channels] == [
        ("en", "@caliber_en", None),
        ("ru", "-1001234567890", -1001234567890),
    ]
    assert settings.admin_user_ids == {1, 22}
    assert settings.poll_interval == 2.5
    assert settings.max_age == 36 * 3600
    assert str(settings.database_path) == "/data/bot.sqlite3"
    assert settings.api_url == "https://api.telegram.org"
    assert settings.default_language == "en"
    assert settings.global_rate == 30


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEEDS", ""),
        ("FEEDS", "https://caliber.az/rss"),
        ("FEEDS", "fr=https://caliber.az/rss"),
        ("FEEDS", "en=ftp://caliber.az/rss"),
        ("TELEGRAM_API_URL", "api.telegram.org"),
        ("DATABASE_URL", "postgres://x"),
        ("POLL_INTERVAL", "often"),
        ("POLL_INTERVAL", "-1"),
        ("POLL_INTERVAL", "nan"),
        ("CHANNELS", "en=not a chat"),
        ("ADMIN_USER_IDS", "12,abc"),
        ("DEFAULT_LANGUAGE", "de"),
        ("LOG_LEVEL", "LOUD"),
        ("MAX_AGE", "two days"),
        ("BACKFILL", "-3"),
        ("PAID_BROADCAST", "maybe"),
        ("TIMEZONE", "Mars/Olympus"),
        ("TIMEZONE", "Asia"),  # a directory in the zone database, not a zone
        ("TELEGRAM_API_URL", "http://localhost:notaport"),
        ("DATABASE_URL", "sqlite:///" + str(Path(__file__).parent)),  # a directory
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(GOOD | {name: value})
    assert caught.value.name == name
    assert name in str(caught.value) and "expected" in str(caught.value)


def test_missing_token_and_feeds() -> None:
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        load_settings({"FEEDS": GOOD["FEEDS"]})
    with pytest.raises(ConfigError, match="FEEDS"):
        load_settings({"TELEGRAM_BOT_TOKEN": TOKEN})
    # preview needs no token
    assert load_settings({"FEEDS": GOOD["FEEDS"]}, require_token=False).token is None


def _run_bot(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in GOOD and not k.startswith("RATE_")}
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        env=clean | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exits_2_with_one_line_and_hides_the_token() -> None:
    secretish = "123456:THIS-IS-A-SECRET-BUT-MALFORMED!"
    result = _run_bot({"TELEGRAM_BOT_TOKEN": secretish, "FEEDS": GOOD["FEEDS"]})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TELEGRAM_BOT_TOKEN" in lines[0]
    assert "SECRET" not in result.stderr + result.stdout

    result = _run_bot(GOOD | {"POLL_INTERVAL": "soon"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: POLL_INTERVAL: got 'soon'; expected seconds, 0.05..86400"
    ]
