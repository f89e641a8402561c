"""Main-text extraction from an article page: trafilatura finds the body and the metadata (title,
date, og:image, description, author, section and tags); paragraphs that are page furniture are
dropped, so menus, share buttons, counters and copyright lines never reach a summary.

CPU work on untrusted input: call `extract_article` through asyncio.to_thread. trafilatura (with
lxml, jusText, dateparser and their data: tens of MB) is imported at the first extraction, so a bot
whose feeds never need the article page does not carry it.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

from bot.text.plain import normalise_whitespace, one_line
from bot.text.summary import is_chrome, is_label
from storage.models import PageContent

log = logging.getLogger(__name__)

_MAX_TEXT = 50_000  # characters kept of a body; a summary never needs more
_WORDS = re.compile(r"\w+")


def extract_article(page: bytes | str, url: str) -> PageContent:
    """Extract the body and metadata of an article page; an empty PageContent when it has none."""
    import trafilatura  # heavy: loaded on first use (see the module docstring)

    try:
        document = trafilatura.bare_extraction(
            page,
            url=url,
            with_metadata=True,
            include_comments=False,
            include_tables=False,
            include_images=False,
            include_links=False,
            favor_precision=True,
        )
    except Exception:
        # A parser crash on hostile markup is the page's fault: no text, no metadata.
        log.warning("extraction of %s failed", url, exc_info=True)
        return PageContent()
    if document is None:
        return PageContent()
    title = _plain(getattr(document, "title", None))
    text = _body(str(getattr(document, "text", None) or ""), title)
    description = _plain(getattr(document, "description", None))
    if description and is_chrome(description):
        description = None
    categories = [
        *(getattr(document, "categories", None) or []),
        *(getattr(document, "tags", None) or []),
    ]
    return PageContent(
        text=text,
        title=title,
        description=description,
        image_url=_absolute(getattr(document, "image", None), url),
        author=_plain(getattr(document, "author", None)),
        published_at=_timestamp(getattr(document, "date", None)),
        categories=tuple(dict.fromkeys(c for c in map(_plain, categories) if c)),
    )


def _body(text: str, title: str | None) -> str:
    """The body's paragraphs without furniture, labels or the headline."""
    headline = _WORDS.findall((title or "").casefold())
    paragraphs = [
        p
        for p in normalise_whitespace(text).split("\n")
        if p.strip()
        and not is_chrome(p)
        and not is_label(p)
        and _WORDS.findall(p.casefold()) != headline
    ]
    return "\n".join(paragraphs)[:_MAX_TEXT]


def _plain(value: object) -> str | None:
    text = one_line(str(value)) if value else ""
    return text or None


def _absolute(value: object, base: str) -> str | None:
    if not value:
        return None
    absolute = urljoin(base, str(value).strip())
    return absolute if urlsplit(absolute).scheme in ("http", "https") else None


def _timestamp(value: object) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
