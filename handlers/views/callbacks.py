"""Inline-button data: the one codec for every button the bot makes.

Telegram hands callback data back as it was sent, so anybody can forge it. Each family of
buttons is a prefix and a fixed list of fields, each field with its own pattern; data that does
not match exactly, or is longer than Telegram's 64 bytes, decodes to None and the handler answers
"stale button". Encoding checks the same grammar, so the bot cannot make a button it would refuse.
Only ids, page numbers and random keys go in: never a secret, never text a user typed.
"""

from __future__ import annotations

import re

MAX_BYTES = 64  # Telegram's limit on callback_data


class Family:
    """One kind of button data, `prefix:field:…`; the last `optional` fields may be left off."""

    def __init__(self, prefix: str, *fields: str, optional: int = 0) -> None:
        if not 0 <= optional <= len(fields):
            raise ValueError("more optional fields than fields")
        self.prefix = prefix
        self.size = len(fields)
        required, rest = fields[: len(fields) - optional], fields[len(fields) - optional :]
        grammar = re.escape(prefix) + "".join(f":({field})" for field in required)
        # Optional fields nest: the second may only follow the first.
        grammar += "".join(f"(?::({field})" for field in rest) + ")?" * len(rest)
        self._grammar = re.compile(grammar)

    @property
    def route(self) -> str:
        """The pattern the routing table matches; the handler then decodes strictly."""
        return f"^{re.escape(self.prefix)}:"

    def encode(self, *values: str | int) -> str:
        """The data for a button; empty trailing optional values are left off."""
        parts = [str(value) for value in values]
        while parts and parts[-1] == "":
            parts.pop()
        data = ":".join([self.prefix, *parts])
        if self.decode(data) is None:
            raise ValueError(f"the bot would refuse its own button data {data!r}")
        return data

    def decode(self, data: str | None) -> tuple[str, ...] | None:
        """The fields of `data` ("" for an optional one left off); None when not this family."""
        if data is None or len(data.encode()) > MAX_BYTES:
            return None
        match = self._grammar.fullmatch(data)
        if match is None:
            return None
        return tuple(value or "" for value in match.groups())


# Every family the bot makes, in one table, so two can never claim the same data.
LANGUAGE = Family("lang", "[a-z]{2,3}", "start|set", optional=1)
SEARCH_PAGE = Family("s", "[1-9][0-9]{0,3}", "[la]", "[A-Za-z0-9_-]{12}")
SUBSCRIPTION = Family("set", "sub", "on|off")
PANEL_LIST = Family("ch", "list")
PANEL = Family("ch", r"-?\d{1,20}", "[a-z]{2,8}", r"[a-z0-9.+-]{1,24}", optional=1)
# Followed topics: "tp:lang:<follow id>" (its language scope), "tp:drop:<follow id>".
TOPIC = Family("tp", "lang|drop", r"[1-9][0-9]{0,18}")
# Delivery schedule from /settings: "sc:<op>[:<a>[:<b>]]" (handlers.views.schedule checks the
# numbers each operation takes).
_SCHEDULE_OPS = "st|mi|md|hs|h|zn|zo|zd|z|qf|qt|qx|q"
SCHEDULE = Family("sc", _SCHEDULE_OPS, r"-?\d{1,2}", r"\d{1,2}", optional=2)
