"""A feed is data from the internet: what is done to its bytes before feedparser sees them.

- `neutralise_dtd` drops the internal DTD subset and every entity declaration of the prolog.
  expat refuses entity expansion, but feedparser then falls back to its loose parser, which
  re-declares the "safe" entities (plain text values) and expands them: an 80 KB document
  became a 400,000,000-character title. A plain DOCTYPE (RSS 0.91's Netscape one) stays.
- `prescan` rejects, in one linear pass, the shapes whose parse cost grows with the square of
  their size in feedparser: one element with thousands of attributes (10,000 cost 1.9 s), one
  entry with thousands of categories (20,000 cost 12 s) or links. The caps are far beyond any
  real feed's (see the constants), and a rejected document is a feed error, retried with backoff.

Both take and return bytes in the document's own encoding (UTF-16 and UTF-32 included).
CPU work on untrusted input: they run in the parsing worker thread, before feedparser.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Callable

# At most this many attributes on one element (feedparser's cost is quadratic in them).
MAX_ATTRIBUTES = 256
# At most this many elements of one list-building kind (category, link…) in one entry.
MAX_REPEATS_PER_ENTRY = 200


class PathologicalFeed(ValueError):
    """The document has a shape that would cost far more to parse than its size suggests."""


# Elements feedparser collects into a list per entry, each addition checked against the list.
_LISTED = frozenset(
    {"category", "subject", "keywords", "link", "enclosure", "content", "contributor", "author"}
)
_ENTRY = frozenset({"item", "entry"})
# Only the start tags that matter here: scanning for these few names costs a sixth of
# scanning every tag (about 3 ms for a 1 MB feed whose bare parse takes 900 ms).
_COUNTED_TAG = re.compile(
    r"<(?:[A-Za-z_][\w.-]*:)?(item|entry|category|subject|keywords|link|enclosure|content"
    r"|contributor|author)[\s/>]"
)
_LONG_TAG = re.compile(r"<[A-Za-z_][^<>]{1024,}>?")
_ATTRIBUTE = re.compile(r"""[\s"'][^\s=<>"'/]+\s*=""")
_FIRST_ELEMENT = re.compile(r"<[A-Za-z_]")
_DOCTYPE = re.compile(r"<!DOCTYPE", re.IGNORECASE)
_ENTITY_DECL = re.compile(r"<!ENTITY[^>]*>", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_BOMLESS = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)


def neutralise_dtd(body: bytes) -> bytes:
    """Return `body` without an internal DTD subset or entity declarations before its root."""
    if b"<!" not in body and b"<\x00!" not in body and b"\x00<\x00!" not in body:
        return body  # the common case: no DOCTYPE, no declarations (a quick byte test)
    return _as_text(body, _without_declarations)


def prescan(body: bytes) -> None:
    """Raise PathologicalFeed when the document has a shape feedparser parses in square time."""
    _as_text(body, _check_shapes)


def _as_text(body: bytes, work: Callable[[str], str | None]) -> bytes:
    """Run `work` on the document as text and re-encode what it returns (None: unchanged).

    ASCII-compatible encodings (UTF-8, Windows-1251, KOI8-R…) go through Latin-1, which maps
    every byte to one character and back, so their bytes come back as they were; UTF-16 and
    UTF-32 are decoded and encoded again in the same form.
    """
    codec, skip = _wide_codec(body)
    if codec is None:
        text = body.decode("latin-1")
        changed = work(text)
        return body if changed is None else changed.encode("latin-1")
    try:
        text = body[skip:].decode(codec)
    except UnicodeDecodeError:
        return body  # not really that encoding; feedparser will say what it makes of it
    changed = work(text)
    if changed is None:
        return body
    return body[:skip] + changed.encode(codec)


def _wide_codec(body: bytes) -> tuple[str | None, int]:
    for bom, name in _BOMS:
        if body.startswith(bom):
            suffix = "-le" if bom in (codecs.BOM_UTF32_LE, codecs.BOM_UTF16_LE) else "-be"
            return name + suffix, len(bom)
    for start, name in _BOMLESS:
        if body.startswith(start):
            return name, 0
    return None, 0


def _without_declarations(text: str) -> str | None:
    first = _FIRST_ELEMENT.search(text)
    prolog_end = first.start() if first else len(text)
    doctype = _DOCTYPE.search(text, 0, prolog_end)
    prolog = text[:prolog_end]
    changed = False
    if doctype is not None:
        end = _doctype_end(text, doctype.end())
        declaration = text[doctype.start() : end]
        bracket = _subset_start(declaration)
        if bracket is not None:
            # Keep the name and external id (RSS 0.91's Netscape DTD is how feedparser knows
            # the version); drop the internal subset with every declaration in it.
            kept = declaration[:bracket].rstrip() + ">"
            text = text[: doctype.start()] + kept + text[end:]
            prolog_end += len(kept) - len(declaration)
            prolog = text[:prolog_end]
            changed = True
    if "<!ENTITY" in prolog.upper():
        text = _ENTITY_DECL.sub("", prolog) + text[prolog_end:]
        changed = True
    return text if changed else None


def _subset_start(declaration: str) -> int | None:
    """Index of the `[` opening the internal subset of a DOCTYPE declaration, if it has one."""
    quote = ""
    for index, char in enumerate(declaration):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "[":
            return index
    return None


def _doctype_end(text: str, start: int) -> int:
    """Index just past the `>` closing the DOCTYPE whose keyword ends at `start`.

    Quotes, comments and the internal subset's brackets are honoured, so a `>` inside an
    entity's value does not end it; an unterminated declaration runs to the end of the text.
    """
    quote = ""
    depth = 0
    index = start
    length = len(text)
    while index < length:
        char = text[index]
        if quote:
            if char == quote:
                quote = ""
        elif text.startswith("<!--", index):
            close = text.find("-->", index + 4)
            index = length if close < 0 else close + 3
            continue
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == ">" and depth == 0:
            return index + 1
        index += 1
    return length


def _check_shapes(text: str) -> str | None:
    if text.count("=") > MAX_ATTRIBUTES:
        for tag in _LONG_TAG.finditer(text):
            attributes = len(_ATTRIBUTE.findall(tag.group()))
            if attributes > MAX_ATTRIBUTES:
                raise PathologicalFeed(
                    f"an element with {attributes} attributes (at most {MAX_ATTRIBUTES})"
                )
    repeats: Counter[str] = Counter()
    for name in _COUNTED_TAG.findall(text):
        if name in _ENTRY:
            repeats.clear()
        elif name in _LISTED:
            repeats[name] += 1
            if repeats[name] > MAX_REPEATS_PER_ENTRY:
                raise PathologicalFeed(
                    f"an entry with more than {MAX_REPEATS_PER_ENTRY} <{name}> elements"
                )
    return None
