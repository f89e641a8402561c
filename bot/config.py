"""Settings: read once from an environment mapping, validated, frozen.

Every problem is a ConfigError naming the variable, the value it got and the form it expects;
`python -m bot` turns it into one line on stderr and exit status 2.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.text.i18n import LANGUAGES

T = TypeVar("T")

_TOKEN_RE = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DEFAULT_USER_AGENT = "CaliberTelegramBot/0.1 (+https://caliber.az; Telegram publishing bot)"
# A webhook must be reachable from outside the container.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
_CHAT_RE = re.compile(r"^(@[A-Za-z][A-Za-z0-9_]{3,31}|-?\d{1,20})$")


class ConfigError(ValueError):
    """A setting has a bad or missing value."""

    def __init__(self, name: str, value: str | None, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        shown = "(not set)" if value is None else repr(value)
        super().__init__(f"{name}: got {shown}; expected {expected}")


@dataclass(frozen=True, slots=True)
class FeedSource:
    lang: str
    url: str


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    lang: str
    chat: str  # "@username" or a numeric id as text

    @property
    def chat_id(self) -> int | None:
        return None if self.chat.startswith("@") else int(self.chat)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, validated. Built only by load_settings, which holds each default once
    (beside the variable's name and expected form); so no field has a default here."""

    feeds: tuple[FeedSource, ...]
    token: str | None
    api_url: str
    database_path: Path | None  # the SQLite file, None with PostgreSQL
    database_url: str | None  # the postgresql:// URL (it may hold a password: never shown)
    poll_interval: float
    poll_jitter: float
    channels: tuple[ChannelTarget, ...]
    admin_user_ids: frozenset[int]
    default_language: str
    log_level: str
    summary_length: int
    backfill: int
    max_age: float
    http_timeout: float
    feed_max_bytes: int
    backoff_max: float
    user_agent: str
    timezone: str
    rate_global_per_second: int
    rate_group_per_minute: int
    rate_private_per_second: float
    rate_margin: float
    paid_broadcast: bool
    paid_broadcast_rate: int
    paid_broadcast_daily_stars: int | None  # None: no cap
    send_concurrency: int
    max_send_attempts: int
    delivery_retention: float
    shutdown_timeout: float
    leader_timeout: float  # PostgreSQL: a leader silent this long is replaced
    instances: int  # PostgreSQL: how many instances share the bot's rate budget
    # Article pages and summaries (issue 6).
    article_hosts: frozenset[str]
    allow_private_addresses: bool
    article_fetch_threshold: int
    article_timeout: float
    article_max_bytes: int
    article_concurrency_per_host: int
    summary_mode: str
    edit_on_update: bool
    edit_window: float
    # Operators (issue 10): health endpoints, logs, webhook mode.
    health_port: int
    health_listen: str
    ready_api_grace: float
    ready_max_lag: float
    log_format: str
    webhook_url: str | None
    webhook_secret: str | None
    webhook_listen: str
    webhook_port: int

    @property
    def secrets(self) -> tuple[str, ...]:
        """Return the values no log line, stored row or message may ever show."""
        database = url_secrets(self.database_url) if self.database_url else ()
        return tuple(s for s in (self.token, self.webhook_secret, *database) if s)

    @property
    def store_target(self) -> Path | str:
        """Where the store is: the SQLite file, or the PostgreSQL URL."""
        target = self.database_url or self.database_path
        assert target is not None  # load_settings sets exactly one
        return target

    @property
    def global_rate(self) -> int:
        """Return the sends allowed in any one-second window overall."""
        return self.paid_broadcast_rate if self.paid_broadcast else self.rate_global_per_second

    @property
    def send_slots(self) -> int:
        """Return the sends allowed in flight: SEND_CONCURRENCY, or sized from the global rate."""
        if self.send_concurrency:
            return self.send_concurrency
        # Enough to keep the pipe full while Telegram answers within 250 ms.
        return max(32, min(512, math.ceil(self.global_rate * 0.25)))


# Secrets may come from files, as container orchestrators pass them: NAME_FILE holds the value.
SECRET_FILE_VARIABLES = ("TELEGRAM_BOT_TOKEN", "WEBHOOK_SECRET", "DATABASE_URL")
_SECRET_MAX_BYTES = 64 * 1024


def resolve_secret_files(env: Mapping[str, str]) -> Mapping[str, str]:
    """Return `env` with each NAME_FILE of SECRET_FILE_VARIABLES read into NAME.

    Setting both NAME and NAME_FILE is an error (which one wins would be a guess); a file that
    cannot be read names itself. One trailing newline is dropped, as editors add one.
    """
    resolved: dict[str, str] = {}
    for name in SECRET_FILE_VARIABLES:
        file_name = f"{name}_FILE"
        path = _get(env, file_name)
        if path is None:
            continue
        if _get(env, name) is not None:
            raise ConfigError(file_name, path, f"either {name} or {file_name}, not both")
        try:
            with open(path, "rb") as handle:
                data = handle.read(_SECRET_MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError(file_name, path, f"a readable file ({exc.strerror or exc})") from exc
        if len(data) > _SECRET_MAX_BYTES:
            raise ConfigError(file_name, path, "a file of at most 64 KiB")
        try:
            value = data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ConfigError(file_name, path, "a UTF-8 text file") from exc
        if not value:
            raise ConfigError(file_name, path, f"a file holding {name}")
        resolved[name] = value
    return _Overlay(resolved, env) if resolved else env


class _Overlay(Mapping[str, str]):
    """`top` over `env`, read through rather than copied, so every lookup still reaches `env`."""

    def __init__(self, top: dict[str, str], env: Mapping[str, str]) -> None:
        self._top = top
        self._env = env

    def __getitem__(self, key: str) -> str:
        return self._top[key] if key in self._top else self._env[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._top
        yield from (key for key in self._env if key not in self._top)

    def __len__(self) -> int:
        return len(self._top.keys() | self._env.keys())


def load_settings(env: Mapping[str, str], *, require_token: bool = True) -> Settings:
    """Build Settings from `env` (normally os.environ); raise ConfigError on the first bad value."""
    env = resolve_secret_files(env)
    token = _get(env, "TELEGRAM_BOT_TOKEN")
    if require_token and token is None:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN", None, "the bot token from @BotFather, like 123456:ABC…"
        )
    if token is not None and not _TOKEN_RE.match(token):
        # Never echo a malformed token: it may be a real one with a typo.
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN", "<hidden>", "digits, a colon and the secret, like 123456:ABC…"
        )
    default_language = _parse(env, "DEFAULT_LANGUAGE", "en", _language, _languages_hint())
    timezone = _parse(env, "TIMEZONE", "Asia/Baku", _timezone, "an IANA time zone like Asia/Baku")
    global_rate = _parse(env, "RATE_GLOBAL_PER_SECOND", "30", _int_range(1, 1000), "1..1000")
    webhook_url = _parse(env, "WEBHOOK_URL", "", _webhook_url, "an https URL, or empty")
    webhook_secret = _get(env, "WEBHOOK_SECRET")
    if webhook_secret is not None and not _SECRET_TOKEN_RE.match(webhook_secret):
        raise ConfigError(
            "WEBHOOK_SECRET", "<hidden>", "16-256 characters of A-Z, a-z, 0-9, _ and -"
        )
    if webhook_url and webhook_secret is None:
        raise ConfigError("WEBHOOK_SECRET", None, "a secret (required with WEBHOOK_URL)")
    database = _database(env)
    return Settings(
        token=token,
        api_url=_parse(
            env, "TELEGRAM_API_URL", "https://api.telegram.org", _http_url, "an http(s) URL"
        ),
        feeds=_parse(
            env, "FEEDS", None, _feeds, "comma-separated lang=url, e.g. en=https://caliber.az/rss"
        ),
        database_path=database if isinstance(database, Path) else None,
        database_url=database if isinstance(database, str) else None,
        poll_interval=_parse(
            env, "POLL_INTERVAL", "120", _float_range(0.05, 86400), "seconds, 0.05..86400"
        ),
        poll_jitter=_parse(env, "POLL_JITTER", "0.1", _float_range(0, 0.5), "a fraction, 0..0.5"),
        channels=_parse(
            env, "CHANNELS", "", _channels, "comma-separated lang=chat, chat = @username or id"
        ),
        admin_user_ids=_parse(
            env, "ADMIN_USER_IDS", "", _user_ids, "comma-separated numeric Telegram user ids"
        ),
        default_language=default_language,
        log_level=_parse(
            env, "LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL"
        ),
        summary_length=_parse(
            env, "SUMMARY_LENGTH", "600", _int_range(50, 3000), "characters, 50..3000"
        ),
        backfill=_parse(env, "BACKFILL", "0", _int_range(0, 100), "a whole number, 0..100"),
        max_age=_parse(env, "MAX_AGE", "2d", _duration, "a duration like 3600, 90m, 48h or 2d"),
        http_timeout=_parse(env, "HTTP_TIMEOUT", "15", _float_range(0.1, 300), "seconds, 0.1..300"),
        feed_max_bytes=_parse(
            env,
            "FEED_MAX_BYTES",
            "5242880",
            _int_range(1024, 100 * 1024 * 1024),
            "bytes, 1024..104857600",
        ),
        backoff_max=_parse(env, "BACKOFF_MAX", "1h", _duration, "a duration like 3600, 30m, 1h"),
        user_agent=_parse(
            env, "USER_AGENT", DEFAULT_USER_AGENT, _nonempty, "a non-empty User-Agent string"
        ),
        timezone=timezone,
        rate_global_per_second=global_rate,
        rate_group_per_minute=_parse(
            env, "RATE_GROUP_PER_MINUTE", "20", _int_range(1, 10000), "1..10000"
        ),
        rate_private_per_second=_parse(
            env, "RATE_PRIVATE_PER_SECOND", "1", _float_range(0.01, 1000), "0.01..1000"
        ),
        rate_margin=_parse(env, "RATE_MARGIN", "0.03", _float_range(0, 1), "seconds, 0..1"),
        paid_broadcast=_parse(env, "PAID_BROADCAST", "false", _bool, "true or false"),
        paid_broadcast_rate=_parse(
            env, "PAID_BROADCAST_RATE", "1000", _int_range(1, 1000), "1..1000"
        ),
        paid_broadcast_daily_stars=(
            None
            if _get(env, "PAID_BROADCAST_DAILY_STARS") is None
            else _parse(
                env,
                "PAID_BROADCAST_DAILY_STARS",
                None,
                _int_range(0, 100_000_000),
                "whole Telegram Stars a day, 0..100000000, or empty for no cap",
            )
        ),
        send_concurrency=_parse(
            env, "SEND_CONCURRENCY", "0", _int_range(0, 512), "0 (automatic) or 1..512"
        ),
        max_send_attempts=_parse(env, "MAX_SEND_ATTEMPTS", "6", _int_range(1, 50), "1..50"),
        delivery_retention=_parse(
            env, "DELIVERY_RETENTION", "30d", _duration, "a duration like 30d or 720h"
        ),
        shutdown_timeout=_parse(
            env, "SHUTDOWN_TIMEOUT", "10", _float_range(0, 120), "seconds, 0..120"
        ),
        leader_timeout=_parse(env, "LEADER_TIMEOUT", "15", _float_range(3, 120), "seconds, 3..120"),
        instances=_parse(env, "INSTANCES", "1", _int_range(1, 32), "a whole number, 1..32"),
        article_hosts=_parse(
            env, "ARTICLE_HOSTS", "", _hosts, "comma-separated host names, like caliber.az"
        ),
        allow_private_addresses=_parse(
            env, "ALLOW_PRIVATE_ADDRESSES", "false", _bool, "true or false"
        ),
        article_fetch_threshold=_parse(
            env, "ARTICLE_FETCH_THRESHOLD", "200", _int_range(0, 100000), "characters, 0..100000"
        ),
        article_timeout=_parse(
            env, "ARTICLE_TIMEOUT", "20", _float_range(0.1, 300), "seconds, 0.1..300"
        ),
        article_max_bytes=_parse(
            env,
            "ARTICLE_MAX_BYTES",
            "3145728",
            _int_range(1024, 100 * 1024 * 1024),
            "bytes, 1024..104857600",
        ),
        article_concurrency_per_host=_parse(
            env, "ARTICLE_CONCURRENCY_PER_HOST", "3", _int_range(1, 32), "1..32"
        ),
        summary_mode=_parse(env, "SUMMARY_MODE", "lead", _summary_mode, "lead or extractive"),
        edit_on_update=_parse(env, "EDIT_ON_UPDATE", "false", _bool, "true or false"),
        edit_window=_parse(env, "EDIT_WINDOW", "48h", _duration, "a duration like 48h or 2d"),
        health_port=_parse(env, "HEALTH_PORT", "0", _int_range(0, 65535), "0 (off) or a port"),
        health_listen=_parse(env, "HEALTH_LISTEN", "127.0.0.1", _ip, "an IP address to listen on"),
        ready_api_grace=_parse(
            env, "READY_API_GRACE", "5m", _duration, "a duration like 300, 5m or 1h"
        ),
        ready_max_lag=_parse(
            env, "READY_MAX_LAG", "5m", _duration, "a duration like 300, 5m or 1h"
        ),
        log_format=_parse(env, "LOG_FORMAT", "text", _log_format, "text or json"),
        webhook_url=webhook_url or None,
        webhook_secret=webhook_secret,
        webhook_listen=_parse(
            env,
            "WEBHOOK_LISTEN",
            ALL_INTERFACES,
            _ip,
            "an IP address to listen on",
        ),
        webhook_port=_parse(env, "WEBHOOK_PORT", "8443", _int_range(1, 65535), "a port, 1..65535"),
    )


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _parse(
    env: Mapping[str, str],
    name: str,
    default: str | None,
    convert: Callable[[str], T],
    expected: str,
) -> T:
    raw = _get(env, name)
    if raw is None:
        if default is None:
            raise ConfigError(name, None, expected)
        raw = default
    try:
        return convert(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(name, raw, expected) from exc


def _languages_hint() -> str:
    return "one of " + ", ".join(LANGUAGES)


def _language(raw: str) -> str:
    value = raw.strip().lower()
    if value not in LANGUAGES:
        raise ValueError(value)
    return value


def _split_list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _pairs(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for part in _split_list(raw):
        lang, sep, value = part.partition("=")
        if not sep or not value.strip():
            raise ValueError(part)
        pairs.append((_language(lang), value.strip()))
    return pairs


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(raw)
    _ = parts.port  # raises ValueError for a port that is not a number in range
    return raw.rstrip("/")


def _feeds(raw: str) -> tuple[FeedSource, ...]:
    feeds = []
    for lang, url in _pairs(raw):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.path):
            raise ValueError(url)
        feeds.append(FeedSource(lang=lang, url=url))
    if not feeds:
        raise ValueError(raw)
    if len({f.url for f in feeds}) != len(feeds):
        raise ValueError("duplicate feed URL")
    return tuple(feeds)


def _channels(raw: str) -> tuple[ChannelTarget, ...]:
    targets = []
    for lang, chat in _pairs(raw):
        # Telegram's ids have at most 52 significant bits; a longer one is a typo.
        if not _CHAT_RE.match(chat) or (chat[0] != "@" and abs(int(chat)) >= 2**52):
            raise ValueError(chat)
        targets.append(ChannelTarget(lang=lang, chat=chat))
    return tuple(targets)


def _user_ids(raw: str) -> frozenset[int]:
    ids = set()
    for part in _split_list(raw):
        if not part.isdigit():
            raise ValueError(part)
        ids.add(int(part))
    return frozenset(ids)


_DATABASE_FORMS = (
    "sqlite:///relative/path.sqlite3, sqlite:////absolute/path.sqlite3 or "
    "postgresql://user:password@host:port/database"
)


def _database(env: Mapping[str, str]) -> Path | str:
    raw = _get(env, "DATABASE_URL") or "sqlite:///./data/bot.sqlite3"
    try:
        if raw.startswith(("postgresql://", "postgres://")):
            return postgresql_url(raw)
        return _sqlite_path(raw)
    except ValueError as exc:
        # The URL may hold a password: name the variable and the form, never the value.
        shown = "<hidden>" if "@" in raw else raw
        raise ConfigError("DATABASE_URL", shown, _DATABASE_FORMS) from exc


def url_secrets(url: str) -> tuple[str, ...]:
    """The password in `url`, as the URL spells it and as it is (for the log redactor)."""
    password = urlsplit(url).password
    return (password, unquote(password)) if password else ()


def postgresql_url(raw: str) -> str:
    """`raw` if it is a postgresql:// URL with a host and a database; else ValueError."""
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("not a postgresql:// URL")
    parts = urlsplit(raw)
    if not parts.hostname or not parts.path.strip("/") or "/" in parts.path.strip("/"):
        raise ValueError("a host and a database name are required")
    parts.port  # noqa: B018 - raises ValueError for a port that is no number
    return raw


def _sqlite_path(raw: str) -> Path:
    prefix = "sqlite:///"
    if not raw.startswith(prefix) or len(raw) == len(prefix):
        raise ValueError(raw)
    path = Path(raw[len(prefix) :])
    if path.is_dir():
        raise ValueError(raw)
    return path


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:  # also rejects nan
            raise ValueError(raw)
        return value

    return convert


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return convert


def _duration(raw: str) -> float:
    match = _DURATION_RE.match(raw)
    if not match:
        raise ValueError(raw)
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError(raw)
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if not isinstance(logging.getLevelName(value), int):
        raise ValueError(raw)
    return value


def _timezone(raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "Asia" is a directory
        raise ValueError(raw) from exc
    return raw


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError(raw)
    return raw.strip()


_HOST_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9-]{1,63})*$")


def _hosts(raw: str) -> frozenset[str]:
    hosts = set()
    for part in _split_list(raw):
        host = part.strip().lower().rstrip(".")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(part) from exc
        if not _HOST_RE.match(host) and not _is_ip(host):
            raise ValueError(part)
        hosts.add(host)
    return frozenset(hosts)


def _is_ip(raw: str) -> bool:
    try:
        ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        return False
    return True


# Telegram allows 1-256 characters; fewer than 16 would be guessable (and, redacted from
# logs, would blank common text).
_SECRET_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


def _webhook_url(raw: str) -> str:
    if not raw.strip():
        return ""
    parts = urlsplit(raw.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(raw)  # Telegram delivers webhooks over HTTPS only
    _ = parts.port
    return raw.strip()


def _ip(raw: str) -> str:
    return str(ipaddress.ip_address(raw.strip().strip("[]")))


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(raw)
    return value


def _summary_mode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("lead", "extractive"):
        raise ValueError(raw)
    return value
