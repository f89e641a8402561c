"""Logging: one record per line on stderr, as text or JSON, with every secret redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

# Ids a record may carry (log calls pass them with `extra=`); JSON lines show them as fields.
ID_FIELDS = ("feed_id", "chat_id", "item_id", "delivery_id")
REDACTED = "<redacted>"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# httpx logs every request URL at INFO, and Bot API URLs carry the token; PTB's updater (its
# webhook handler too) logs whole updates, readers' messages, at DEBUG; tornado logs each
# webhook request at INFO (refused ones at WARNING, which stay).
NOISY_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram.ext.Updater",
    "tornado.access",
    "apscheduler",
)
_TOKEN_RE = re.compile(r"^\d+:(.+)$")
_PERCENT_ESCAPE_RE = re.compile(r"%[0-9A-F]{2}")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class Redactor:
    """Replaces every spelling of the given secrets in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        spellings = sorted(_spellings(secrets), key=len, reverse=True)  # longest first
        self._pattern = re.compile("|".join(map(re.escape, spellings))) if spellings else None

    def __call__(self, text: str) -> str:
        """Return `text` with the secrets replaced by a marker."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def __bool__(self) -> bool:
        return self._pattern is not None


def _spellings(secrets: Iterable[str]) -> set[str]:
    """A secret as it is, URL-encoded (in either case), and a bot token's part after the
    colon, which alone is what makes the token secret (the bot id before it is public)."""
    found: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        variants = [secret]
        token = _TOKEN_RE.match(secret)
        if token:
            variants.append(token.group(1))
        for variant in variants:
            quoted = quote(variant, safe="")
            found |= {variant, quoted, _PERCENT_ESCAPE_RE.sub(lambda m: m.group().lower(), quoted)}
    return found


class RedactingFilter(logging.Filter):
    """Redact secrets in a record (message, exception, stack, `extra` strings) in place.

    For handlers this module does not format (a test's capture handler, say); the formatters
    below redact what they write themselves.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redact:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, self.redact(value))
        return True


class TextFormatter(logging.Formatter):
    """`time level logger: message`, then any traceback; secrets redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, the ids the record
    carries, and the traceback as "exception"; secrets redacted in every field."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        clean = {k: self.redact(v) if isinstance(v, str) else v for k, v in line.items()}
        return json.dumps(clean, ensure_ascii=False, default=str)


def setup_logging(
    level: str,
    secrets: Sequence[str] = (),
    *,
    fmt: str = "text",
    stream: TextIO | None = None,
) -> None:
    """Send records to `stream` (stderr) at `level` as `fmt` ("text" or "json"), with
    `secrets` redacted and noisy loggers quieted."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


@contextmanager
def redacted(secrets: Sequence[str]) -> Iterator[None]:
    """Redact `secrets` in whatever the root logger's handlers write while the block runs.

    python-telegram-bot logs its API URL, token included, at DEBUG when the bot starts, and
    the parameters of every call (setWebhook's secret_token too).
    """
    redactor = RedactingFilter(secrets)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(redactor)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redactor)
