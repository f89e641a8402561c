"""Plain-text helpers: HTML to text, whitespace, UTF-16 length and boundary-aware truncation."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

# Elements whose content is never reader text.
_DROP = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object"})
# Elements that end a line of text.
_BLOCK = frozenset(
    {
        "p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6",
        "blockquote", "pre", "section", "article", "header", "footer", "figure", "figcaption",
        "hr", "dd", "dt", "dl", "aside", "nav", "form",
    }
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_NEWLINES = re.compile(r"\s*\n\s*")
# Control characters other than tab and newline are never text a reader should get.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
ELLIPSIS = "…"
_SENTENCE_END = re.compile(r"[.!?…](?:[\"'»”)\]]*)(?=\s|$)")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP:
            self._skip_depth += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Turn an HTML fragment into plain text: no tags, scripts or styles; entities decoded once."""
    if "<" not in markup and "&" not in markup:
        return normalise_whitespace(markup)
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:
        return normalise_whitespace(re.sub(r"<[^>]*>", " ", html.unescape(markup)))
    return normalise_whitespace("".join(parser.parts))


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces, keep paragraph breaks as single newlines, drop control chars."""
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _NEWLINES.sub("\n", text)
    return text.strip()


def one_line(text: str) -> str:
    """Return `text` with all whitespace, newlines included, collapsed to single spaces."""
    return " ".join(_CONTROL.sub("", text).split())


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def cut_utf16(text: str, limit: int) -> str:
    """Return the longest prefix of `text` that fits in `limit` UTF-16 units (no split pairs)."""
    if utf16_len(text) <= limit:
        return text
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def truncate(text: str, limit: int) -> str:
    """Shorten `text` to at most `limit` UTF-16 units, at a sentence end when one is near.

    Falls back to a word boundary with an ellipsis (cut_at_word).
    """
    if utf16_len(text) <= limit:
        return text
    room = cut_utf16(text, limit)
    # A sentence end in the later part of the room reads better than a mid-sentence ellipsis.
    ends = [m.end() for m in _SENTENCE_END.finditer(room)]
    if ends and ends[-1] >= len(room) * 0.4:
        return room[: ends[-1]].rstrip()
    return cut_at_word(text, limit)


def cut_at_word(text: str, limit: int) -> str:
    """Shorten `text` to `limit` UTF-16 units at a word boundary, with an ellipsis."""
    if utf16_len(text) <= limit:
        return text
    if limit <= 1:
        return ""
    room = cut_utf16(text, limit - 1)
    boundary = max(room.rfind(" "), room.rfind("\n"))
    if boundary > len(room) * 0.3:  # else one giant word: cut inside it
        room = room[:boundary]
    room = room.rstrip(" \n,;:.—–-(«“„‘\"'")
    return room + ELLIPSIS if room else ""
