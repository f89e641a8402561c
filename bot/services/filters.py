"""A chat's include/exclude rules, decided for each new piece before it is queued.

Pure functions: `check(piece, settings)` returns a machine-readable reason when the piece must
not be posted ("exclude_category:Sport", "exclude_keyword:war", "not_included") and None when
it may; /why translates the reason at display time. The poller asks `decide()` for the new
pieces and the few chats that have rules before a poll is stored; the store queues every other
chat without asking (storage.models.FanOut).

Matching ignores case and diacritics the way a reader expects (İ/I/ı → i, ə → e, ё → е,
ş → s…). A keyword matches where a word of the title or summary begins with it, so "Armeni"
matches Armenia and Армения-style inflections; a keyword in double quotes matches whole words
only ("war" does not match Warsaw). Categories match by their whole name.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Protocol

from bot.services import search
from bot.text.analysis import fold
from storage.models import Chat, ChatSettings

EXCLUDE_CATEGORY = "exclude_category"
EXCLUDE_KEYWORD = "exclude_keyword"
NOT_INCLUDED = "not_included"
PAUSED = "paused"

_QUOTES = "\"“”«»„'‘’"

# fold is the shared analysis's; re-exported because rules and their editors speak of it here.
__all__ = [
    "EXCLUDE_CATEGORY",
    "EXCLUDE_KEYWORD",
    "NOT_INCLUDED",
    "PAUSED",
    "Piece",
    "check",
    "decide",
    "fold",
    "keyword_pattern",
    "matches_keyword",
    "parse_reason",
]


class Piece(search.Piece, Protocol):
    """What a rule looks at: a stored Item or an entry not yet stored (NewItem)."""

    def __hash__(self) -> int: ...  # folded once per piece (_folded's cache)


def keyword_pattern(keyword: str) -> tuple[str, bool] | None:
    """Return (folded keyword, whole-words-only) for a rule as the admin typed it."""
    stripped = keyword.strip()
    exact = len(stripped) >= 2 and stripped[0] in _QUOTES and stripped[-1] in _QUOTES
    folded = fold(stripped.strip(_QUOTES))
    return (folded, exact) if folded else None


def matches_keyword(folded_text: str, keyword: str) -> bool:
    """True when `keyword` (as typed) occurs in text already passed through fold()."""
    pattern = keyword_pattern(keyword)
    if pattern is None:
        return False
    words, exact = pattern
    haystack = f" {folded_text} "
    return (f" {words} " if exact else f" {words}") in haystack


def _category_set(categories: Iterable[str]) -> frozenset[str]:
    return frozenset(filter(None, map(fold, categories)))


@functools.lru_cache(maxsize=256)
def _folded(item: Piece) -> tuple[str, frozenset[str]]:
    # One fold per piece, however many chats it is checked for.
    return fold(f"{item.title}\n{item.summary}"), _category_set(item.categories)


def check(item: Piece, settings: ChatSettings) -> str | None:
    """Return why `item` must not be posted under `settings`, or None to post it."""
    rules = (
        settings.include_categories,
        settings.exclude_categories,
        settings.include_keywords,
        settings.exclude_keywords,
    )
    if not any(rules):
        return None
    text, categories = _folded(item)
    for category in settings.exclude_categories:
        if fold(category) in categories:
            return f"{EXCLUDE_CATEGORY}:{category}"
    for keyword in settings.exclude_keywords:
        if matches_keyword(text, keyword):
            return f"{EXCLUDE_KEYWORD}:{keyword}"
    if settings.include_categories or settings.include_keywords:
        if categories & _category_set(settings.include_categories):
            return None
        if any(matches_keyword(text, keyword) for keyword in settings.include_keywords):
            return None
        return NOT_INCLUDED
    return None


def decide(item: Piece, chat: Chat) -> str | None:
    """Why `chat` should not get `item` (None: queue it)."""
    return check(item, chat.settings)


def parse_reason(reason: str) -> tuple[str, str]:
    """Split a stored reason: "exclude_keyword:war" → ("exclude_keyword", "war")."""
    rule, _, value = reason.partition(":")
    return rule, value
