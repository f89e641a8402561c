"""Configuration: every bad value stops the bot with exit status 2 and one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from tests.support import TOKEN

ROOT = Path(__file__).resolve().parents[2]
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
        ("PAID_BROADCAST_DAILY_STARS", "lots"),
        ("PAID_BROADCAST_DAILY_STARS", "-5"),
        ("PAID_BROADCAST_DAILY_STARS", "2.5"),
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


# -- secrets from files (NAME_FILE), webhook mode, log format ------------------------------------

WEBHOOK = {"WEBHOOK_URL": "https://bot.example.com/tg/hook", "WEBHOOK_SECRET": "s3cret_-0123456789"}


def test_secrets_are_read_from_files_without_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "secret").write_text("s3cret_-0123456789\n")
    (tmp_path / "db").write_text("sqlite:////data/from-file.sqlite3\n")
    env = {
        "FEEDS": GOOD["FEEDS"],
        "TELEGRAM_BOT_TOKEN_FILE": str(tmp_path / "token"),
        "WEBHOOK_URL": WEBHOOK["WEBHOOK_URL"],
        "WEBHOOK_SECRET_FILE": str(tmp_path / "secret"),
        "DATABASE_URL_FILE": str(tmp_path / "db"),
    }
    settings = load_settings(env)
    assert settings.token == TOKEN
    assert settings.webhook_secret == "s3cret_-0123456789"
    assert str(settings.database_path) == "/data/from-file.sqlite3"
    assert set(settings.secrets) == {TOKEN, "s3cret_-0123456789"}


@pytest.mark.parametrize("name", ["TELEGRAM_BOT_TOKEN", "WEBHOOK_SECRET", "DATABASE_URL"])
def test_a_secret_and_its_file_together_are_refused(name: str, tmp_path: Path) -> None:
    (tmp_path / "value").write_text("whatever\n")
    env = GOOD | WEBHOOK | {"DATABASE_URL": "sqlite:///x.sqlite3"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env | {f"{name}_FILE": str(tmp_path / "value")})
    assert caught.value.name == f"{name}_FILE"
    assert name in caught.value.expected and "not both" in caught.value.expected


def test_an_unreadable_or_empty_secret_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as caught:
        load_settings({"FEEDS": GOOD["FEEDS"], "TELEGRAM_BOT_TOKEN_FILE": str(missing)})
    assert caught.value.name == "TELEGRAM_BOT_TOKEN_FILE"
    assert str(missing) in str(caught.value) and "readable" in caught.value.expected

    with pytest.raises(ConfigError) as caught:  # a directory is not a file
        load_settings({"FEEDS": GOOD["FEEDS"], "TELEGRAM_BOT_TOKEN_FILE": str(tmp_path)})
    assert caught.value.name == "TELEGRAM_BOT_TOKEN_FILE"

    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(GOOD | {"WEBHOOK_URL": WEBHOOK["WEBHOOK_URL"],
                              "WEBHOOK_SECRET_FILE": str(tmp_path / "empty")})  # fmt: skip
    assert caught.value.name == "WEBHOOK_SECRET_FILE"


def test_cli_never_echoes_a_secret_read_from_a_file(tmp_path: Path) -> None:
    secretish = "123456:THIS-IS-A-SECRET-BUT-MALFORMED!"
    (tmp_path / "token").write_text(secretish + "\n")
    result = _run_bot({"TELEGRAM_BOT_TOKEN_FILE": str(tmp_path / "token"), "FEEDS": GOOD["FEEDS"]})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "TELEGRAM_BOT_TOKEN" in line
    assert "SECRET" not in result.stderr + result.stdout

    (tmp_path / "hook").write_text("not a valid secret: has spaces and a colon\n")
    result = _run_bot(GOOD | {"WEBHOOK_URL": WEBHOOK["WEBHOOK_URL"],
                              "WEBHOOK_SECRET_FILE": str(tmp_path / "hook")})  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "WEBHOOK_SECRET" in line and "has spaces" not in result.stderr + result.stdout


def test_webhook_settings_and_log_format() -> None:
    settings = load_settings(GOOD)
    assert settings.webhook_url is None and settings.log_format == "text"
    assert settings.secrets == (TOKEN,)

    settings = load_settings(GOOD | WEBHOOK | {"LOG_FORMAT": "JSON"})
    assert settings.webhook_url == WEBHOOK["WEBHOOK_URL"]
    assert settings.webhook_secret == WEBHOOK["WEBHOOK_SECRET"]
    assert (settings.webhook_listen, settings.webhook_port) == ("0.0.0.0", 8443)
    assert settings.log_format == "json"

    settings = load_settings(GOOD | WEBHOOK | {"WEBHOOK_LISTEN": "::1", "WEBHOOK_PORT": "9000"})
    assert (settings.webhook_listen, settings.webhook_port) == ("::1", 9000)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"WEBHOOK_URL": WEBHOOK["WEBHOOK_URL"]}, "WEBHOOK_SECRET"),  # a secret is required
        (WEBHOOK | {"WEBHOOK_URL": "http://bot.example.com/hook"}, "WEBHOOK_URL"),  # not https
        (WEBHOOK | {"WEBHOOK_URL": "https:///hook"}, "WEBHOOK_URL"),
        (WEBHOOK | {"WEBHOOK_SECRET": "with space"}, "WEBHOOK_SECRET"),
        (WEBHOOK | {"WEBHOOK_SECRET": "x" * 257}, "WEBHOOK_SECRET"),
        (WEBHOOK | {"WEBHOOK_PORT": "0"}, "WEBHOOK_PORT"),
        (WEBHOOK | {"WEBHOOK_PORT": "http"}, "WEBHOOK_PORT"),
        (WEBHOOK | {"WEBHOOK_LISTEN": "example.com"}, "WEBHOOK_LISTEN"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_webhook_and_log_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(GOOD | env)
    assert caught.value.name == name
    if name == "WEBHOOK_SECRET" and "WEBHOOK_SECRET" in env:
        assert env["WEBHOOK_SECRET"] not in str(caught.value)  # a secret is never echoed


def test_a_postgresql_url_selects_postgresql_and_its_password_is_a_secret() -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "FEEDS": "en=https://caliber.az/en/rss",
            "DATABASE_URL": "postgresql://bot:p%40ss-w0rd@db.internal:5432/caliber",
        }
    )
    assert settings.database_path is None
    assert settings.store_target == "postgresql://bot:p%40ss-w0rd@db.internal:5432/caliber"
    # Both spellings of the password: as the URL writes it and as it is.
    assert {"p%40ss-w0rd", "p@ss-w0rd"} <= set(settings.secrets)
    assert settings.leader_timeout == 15 and settings.instances == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bot:hunter2-secret@db.internal:5432/",  # no database
        "postgresql://bot:hunter2-secret@/caliber",  # no host
        "postgresql://bot:hunter2-secret@db.internal:port/caliber",  # no port number
        "mysql://bot:hunter2-secret@db.internal/caliber",
    ],
)
def test_a_bad_database_url_is_named_but_its_password_never_shown(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {"TELEGRAM_BOT_TOKEN": TOKEN, "FEEDS": "en=https://x.az/rss", "DATABASE_URL": url}
        )
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: ")
    assert "postgresql://user:password@host:port/database" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(("name", "value"), [("LEADER_TIMEOUT", "2"), ("INSTANCES", "0")])
def test_several_instances_settings_are_checked(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "FEEDS": "en=https://x.az/rss", name: value})


def test_the_paid_broadcast_cap_is_whole_stars_or_none() -> None:
    assert load_settings(GOOD).paid_broadcast_daily_stars is None
    assert (
        load_settings(GOOD | {"PAID_BROADCAST_DAILY_STARS": ""}).paid_broadcast_daily_stars is None
    )
    capped = load_settings(GOOD | {"PAID_BROADCAST": "true", "PAID_BROADCAST_DAILY_STARS": "500"})
    assert capped.paid_broadcast_daily_stars == 500
