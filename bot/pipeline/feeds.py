"""Fetching and parsing feeds: fetch_feed returns a FetchResult value, parse_feed is pure CPU work.

parse_feed runs feedparser and turns entries into NewItem records (identity, absolute and
de-tracked link, plain-text summary, date, categories, image); the poller calls it in a worker
thread so the event loop never parses.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit

import feedparser
import httpx

from bot.pipeline.feedguard import PathologicalFeed, neutralise_dtd, prescan
from bot.pipeline.httpbody import ACCEPT_ENCODING, BodyTooLarge, BoundedDecoder, UnsupportedEncoding
from bot.pipeline.netguard import Refused, Resolver, pinned_request, system_resolver
from bot.text.plain import cut_at_word, html_to_text, normalise_whitespace, one_line
from storage.models import NewItem

log = logging.getLogger(__name__)

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
# Query parameters that only track the reader; they make one article look like many.
_TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "hsa_", "_hs")
_TRACKING_NAMES = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "yclid", "msclkid", "igshid", "twclid",
        "_openstat", "ref_src", "ref_url", "spm", "cmpid", "ncid", "s_cid", "mkt_tok",
        "oly_anon_id",
        "oly_enc_id", "vero_id", "__twitter_impression", "at_medium", "at_campaign",
    }
)  # fmt: skip
# What feedparser strips before joining a URL: slashes beyond the two after "scheme:".
_EXTRA_SLASHES = re.compile(r"^([A-Za-z][A-Za-z0-9+-.]*://)(/*)(.*?)")  # feedparser's own
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RICH_SUMMARY = 200  # below this many characters, a longer content:encoded body is preferred

# Bounds on what one entry may store (characters). Text is cut at a word; identities never are:
# two pieces whose long guids share a prefix must stay two pieces, so a long one is hashed.
TITLE_MAX = 1_000
SUMMARY_MAX = 20_000
AUTHOR_MAX = 200
CATEGORIES_MAX = 50
CATEGORY_MAX = 100
IDENTITY_MAX = 1_000
URL_MAX = 2_048  # a longer link cannot be a post's link: the entry is skipped
# Markup read of one field before it becomes text: a bound on the work, well above SUMMARY_MAX.
_RAW_MAX = 10 * SUMMARY_MAX


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one HTTP poll: ok (with a body), not_modified, or error (with why)."""

    status: Literal["ok", "not_modified", "error"]
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    url: str = ""
    http_status: int | None = None
    error: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    items: list[NewItem]  # oldest first
    title: str | None = None
    bozo: str | None = None  # why feedparser found the document malformed, if it did
    skipped: int = 0  # entries that could not be turned into items
    errors: list[str] = field(default_factory=list)


class FeedError(Exception):
    """The document is not a feed at all."""


async def fetch_feed(
    client: httpx.AsyncClient,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = 5 * 1024 * 1024,
    timeout: float = 15.0,
    allow_private: bool = False,
    resolver: Resolver = system_resolver,
) -> FetchResult:
    """GET `url` conditionally, with a size cap and an overall deadline; never raise for I/O.

    The configured URL may be on any address (the operator chose it), but a redirect from a
    public address to a non-public one is refused unless `allow_private`: each hop is resolved
    and pinned here (bot.pipeline.netguard), so the address judged is the address connected to.
    """
    if url.startswith("file:"):
        return await _read_file(url, max_bytes)
    headers = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        # The per-phase timeouts live on the client; this deadline stops a server that
        # drips bytes slowly enough to never trip the read timeout.
        async with asyncio.timeout(timeout * 2):
            return await _follow(client, url, headers, max_bytes, allow_private, resolver)
    except TimeoutError:
        return FetchResult("error", url=url, error="timed out")
    except httpx.TimeoutException as exc:
        return FetchResult("error", url=url, error=f"timed out ({type(exc).__name__})")
    except Refused as exc:
        return FetchResult("error", url=url, error=f"refused: {exc}")
    except OSError as exc:  # name resolution
        return FetchResult("error", url=url, error=f"cannot resolve: {exc}"[:300])
    except httpx.HTTPError as exc:
        return FetchResult("error", url=url, error=f"{type(exc).__name__}: {exc}"[:300])


async def _follow(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    max_bytes: int,
    allow_private: bool,
    resolver: Resolver,
) -> FetchResult:
    origin_public = False
    for hop in range(MAX_REDIRECTS + 1):
        # Only a redirect away from a public origin is judged: the first URL is the operator's.
        guarded = hop > 0 and origin_public and not allow_private
        target = await pinned_request(client, url, headers, resolver, require_public=guarded)
        if hop == 0:
            origin_public = target.public
        response = await client.send(target.request, follow_redirects=False, stream=True)
        try:
            location = response.headers.get("Location")
            if response.status_code in _REDIRECTS and location:
                url = urljoin(url, location.strip())
                continue
            return await read_response(response, url, max_bytes)
        finally:
            await response.aclose()
    return FetchResult("error", url=url, error="too many redirects")


async def read_response(response: httpx.Response, url: str, max_bytes: int) -> FetchResult:
    """Turn a streamed response into a FetchResult: 304, HTTP errors, the size cap, the body.

    The body is read raw and decoded here under the cap (bot.pipeline.httpbody), every
    Content-Encoding layer included: a compression bomb is refused, not inflated.
    """
    status = response.status_code
    common: dict[str, Any] = {"url": url, "http_status": status}
    if status == 304:
        return FetchResult("not_modified", **common)
    if status >= 400 or status < 200:
        return FetchResult(
            "error",
            error=f"HTTP {status}",
            retry_after=_retry_after(response.headers.get("Retry-After")),
            **common,
        )
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        return FetchResult("error", error=f"too large: {declared} bytes > {max_bytes}", **common)
    try:
        decoder = BoundedDecoder(response.headers.get("Content-Encoding"), max_bytes)
        chunks: list[bytes] = []
        async for raw in response.aiter_raw():
            chunks.append(decoder.feed(raw))
    except BodyTooLarge:
        return FetchResult("error", error=f"too large: over {max_bytes} bytes", **common)
    except UnsupportedEncoding as exc:
        return FetchResult("error", error=str(exc), **common)
    return FetchResult(
        "ok",
        body=b"".join(chunks),
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
        content_type=response.headers.get("Content-Type"),
        **common,
    )


async def _read_file(url: str, max_bytes: int) -> FetchResult:
    path = Path(urlsplit(url).path)
    try:
        body = await asyncio.to_thread(_read_capped, path, max_bytes)
        if body is None:
            return FetchResult("error", url=url, error=f"too large: over {max_bytes} bytes")
    except OSError as exc:
        return FetchResult("error", url=url, error=f"cannot read file: {exc.strerror or exc}")
    return FetchResult("ok", body=body, url=url, content_type="application/xml")


def _read_capped(path: Path, max_bytes: int) -> bytes | None:
    with path.open("rb") as handle:
        body = handle.read(max_bytes + 1)
    return None if len(body) > max_bytes else body


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def parse_feed(body: bytes, url: str, content_type: str | None = None) -> ParsedFeed:
    """Parse feed bytes into items, oldest first; raise FeedError when it is not a feed.

    CPU work: call it through asyncio.to_thread. One malformed entry never blocks the others.
    """
    try:
        parsed = parse_document(body, content_type)
    except PathologicalFeed as refused:
        raise FeedError(f"refused: {refused}") from refused
    bozo = None
    if parsed.get("bozo"):
        exc = parsed.get("bozo_exception")
        bozo = f"{type(exc).__name__}: {exc}"[:300] if exc else "malformed"
    entries = parsed.get("entries") or []
    if not entries and not parsed.get("version"):
        raise FeedError(bozo or "not an RSS or Atom document")

    items: list[NewItem] = []
    errors: list[str] = []
    for position, entry in enumerate(entries):
        try:
            item = _entry_to_item(entry, url)
        except Exception as exc:
            errors.append(f"entry {position}: {type(exc).__name__}: {exc}"[:200])
            continue
        if item is not None:
            items.append(item)
        else:
            errors.append(f"entry {position}: no id, link or title")
    if _listed_newest_first(items):
        items.reverse()
    if items and all(i.published_at is not None for i in items):
        items.sort(key=lambda i: i.published_at or 0.0)
    feed_info = parsed.get("feed") or {}
    return ParsedFeed(
        items=items,
        title=one_line(str(feed_info.get("title") or "")) or None,
        bozo=bozo,
        skipped=len(errors),
        errors=errors,
    )


def parse_document(body: bytes, content_type: str | None = None) -> Any:
    """Run feedparser on the bytes, with only the work parse_feed needs (CPU: in a thread).

    Raises PathologicalFeed for a shape feedparser would take far too long over
    (bot.pipeline.feedguard);
    entity declarations are dropped first, so nothing the document declares is expanded.
    """
    body = neutralise_dtd(body)
    prescan(body)
    headers = {"content-type": content_type} if content_type else None
    # Feed markup never reaches Telegram as markup: titles and descriptions become plain text
    # (html_to_text drops scripts, styles and every tag) and are escaped when rendered. So
    # feedparser's HTML sanitiser and its resolving of links inside descriptions would be
    # work thrown away. Nor is it given the feed's URL as a base: it would join that base
    # with every element it meets (about a quarter of its time); _entry_to_item makes the
    # few URLs it keeps absolute instead. Together: about 40% fewer instructions than a
    # plain feedparser.parse.
    return feedparser.parse(
        body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )


def _listed_newest_first(items: Sequence[NewItem]) -> bool:
    """Tell the document's order from its dated entries; feeds without dates list newest first."""
    dates = [i.published_at for i in items if i.published_at is not None]
    pairs = list(pairwise(dates))
    rising = sum(1 for a, b in pairs if b > a)
    falling = sum(1 for a, b in pairs if b < a)
    return not rising > falling


def _entry_to_item(entry: Any, feed_url: str) -> NewItem | None:
    title = cut_at_word(one_line(_text(entry.get("title"), entry.get("title_detail"))), TITLE_MAX)
    raw_link = _entry_link(entry)
    link = clean_link(absolute(feed_url, raw_link)) if raw_link else ""
    if link and urlsplit(link).scheme not in ("http", "https"):
        link = ""  # javascript:, mailto:, data:… never become a post's link
    if len(link) > URL_MAX:
        raise ValueError(f"link longer than {URL_MAX} characters")
    published = _entry_time(entry)
    summary = cut_at_word(_entry_summary(entry), SUMMARY_MAX)
    guid = _bounded_identity(one_line(str(entry.get("id") or "")[:_RAW_MAX]))
    aliases: tuple[str, ...] = ()
    if guid:
        identity = guid
        # Earlier versions let feedparser join a guid with the feed's URL (unless it was
        # isPermaLink="false", which the entry no longer tells): a piece stored under the
        # joined form is the same piece.
        joined = _bounded_identity(absolute(feed_url, guid))
        if joined and joined != guid:
            aliases = (joined,)
    elif link:
        identity = _bounded_identity(link)
    elif title or summary:
        stamp = str(entry.get("published") or entry.get("updated") or "")
        digest = hashlib.sha256(f"{title}\x1f{stamp}\x1f{summary[:500]}".encode()).hexdigest()
        identity = "sha256:" + digest
    else:
        return None
    if not link:
        # A post must link back to the source; a permalink-style guid is the next best thing.
        candidate = absolute(feed_url, guid) if guid else ""
        if urlsplit(candidate).scheme in ("http", "https") and len(candidate) <= URL_MAX:
            link = clean_link(candidate)
        else:
            return None
    categories = tuple(
        dict.fromkeys(
            cut_at_word(
                one_line(str(tag.get("term") or tag.get("label") or "")[:_RAW_MAX]), CATEGORY_MAX
            )
            for tag in entry.get("tags") or []
            if isinstance(tag, dict) and (tag.get("term") or tag.get("label"))
        )
    )[:CATEGORIES_MAX]
    author = (
        cut_at_word(one_line(html_to_text(str(entry.get("author") or "")[:_RAW_MAX])), AUTHOR_MAX)
        or None
    )
    content_hash = hashlib.sha256(f"{title}\x1f{summary}".encode()).hexdigest()
    return NewItem(
        identity=identity,
        link=link,
        title=title,
        summary=summary,
        published_at=published,
        categories=categories,
        author=author,
        image_url=_entry_image(entry, feed_url),
        content_hash=content_hash,
        aliases=aliases,
    )


def _bounded_identity(identity: str) -> str:
    """The identity as given, or a hash of it when it is too long to keep (never a prefix)."""
    if len(identity) <= IDENTITY_MAX:
        return identity
    return "sha256:" + hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()


def absolute(base: str, uri: str) -> str:
    """Join `uri` with `base` as feedparser does ("" when it cannot be joined).

    Like feedparser, extra slashes after "scheme://" are dropped first, so a URL made
    absolute here is the one feedparser made when it was given the feed's URL as a base.
    """
    uri = _EXTRA_SLASHES.sub(r"\1\3", uri)
    try:
        return urljoin(base, uri)
    except ValueError:
        return ""


def _entry_link(entry: Any) -> str:
    link = entry.get("link")
    if link:
        return str(link).strip()
    for candidate in entry.get("links") or []:
        if isinstance(candidate, dict) and candidate.get("rel", "alternate") == "alternate":
            href = candidate.get("href")
            if href:
                return str(href).strip()
    return ""


def _entry_time(entry: Any) -> float | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            try:
                return float(calendar.timegm(value))
            except (TypeError, ValueError, OverflowError):
                continue
    return None


def _text(value: Any, detail: Any) -> str:
    """Plain text of a feed field: markup is stripped only when the feed says it is markup."""
    kind = str(detail.get("type") or "") if isinstance(detail, dict) else "text/html"
    raw = str(value or "")[:_RAW_MAX]
    # "<3" or "<Middle Corridor>" in a text/plain title is text, not a tag.
    return html_to_text(raw) if "html" in kind else normalise_whitespace(raw)


def _entry_summary(entry: Any) -> str:
    summary = _text(entry.get("summary"), entry.get("summary_detail"))
    if len(summary) >= _RICH_SUMMARY:
        return summary
    for content in entry.get("content") or []:
        value = _text(content.get("value"), content) if isinstance(content, dict) else ""
        if len(value) > len(summary):
            summary = value
    return summary


def _entry_image(entry: Any, feed_url: str) -> str | None:
    candidates: list[str] = []
    for media in (entry.get("media_content") or []) + (entry.get("media_thumbnail") or []):
        if isinstance(media, dict) and media.get("url"):
            kind = str(media.get("medium") or media.get("type") or "image")
            if kind.startswith("image"):
                candidates.append(str(media["url"]))
    for enclosure in entry.get("enclosures") or []:
        if isinstance(enclosure, dict) and str(enclosure.get("type") or "").startswith("image"):
            href = enclosure.get("href") or enclosure.get("url")
            if href:
                candidates.append(str(href))
    for candidate in candidates:
        joined = absolute(feed_url, candidate.strip())
        if urlsplit(joined).scheme in ("http", "https") and len(joined) <= URL_MAX:
            return joined
    return None


def clean_link(url: str) -> str:
    """Drop tracking parameters (utm_*, fbclid…) from a URL, keeping everything else in order."""
    parts = urlsplit(url.strip())
    if not parts.query:
        return urlunsplit(parts)
    # Work on the raw "k=v" pieces so that what is kept stays byte for byte as the site wrote it.
    pieces = [p for p in parts.query.split("&") if p]
    kept = [p for p in pieces if not _is_tracking(unquote_plus(p.split("=", 1)[0]))]
    return urlunsplit(parts._replace(query="&".join(kept)))


def _is_tracking(key: str) -> bool:
    lowered = key.lower()
    return lowered in _TRACKING_NAMES or lowered.startswith(_TRACKING_PREFIXES)
