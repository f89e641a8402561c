"""A local HTTP server for RSS/Atom feeds and article pages, plus feed builders.

``FeedServer`` serves configured bodies with real HTTP semantics (ETag and
Last-Modified validators, 304 answers, gzip when asked for) and can misbehave on
purpose: error statuses, garbage bodies, slow or endless answers, redirects. Every
request is recorded in ``server.requests``. ``make_rss`` and ``make_atom`` build feed
documents shaped like the ones Caliber.az publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from tests.fakes.local import LocalServer

__all__ = ["FeedRequest", "FeedServer", "make_atom", "make_rss"]

RSS_CONTENT_TYPE = "application/rss+xml; charset=utf-8"
ATOM_CONTENT_TYPE = "application/atom+xml; charset=utf-8"
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
_CHUNK = 64 * 1024


@dataclass(slots=True)
class FeedRequest:
    """One request the server received; ``headers`` keys are lower-case.

    Recorded on arrival (``time`` is its monotonic arrival time); ``status`` stays
    None until the answer is decided, e.g. while a slow() path is still waiting.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    time: float
    status: int | None = None
    gzipped: bool = False


@dataclass(slots=True)
class _Route:
    body: bytes = b""
    content_type: str = RSS_CONTENT_TYPE
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "body"  # "body", "huge" or "redirect"
    huge_size: int = 0
    huge_declare_length: bool = False
    redirect_to: str = ""


class FeedServer(LocalServer):
    """HTTP server on 127.0.0.1 serving configured paths; ``async with FeedServer()``."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[FeedRequest] = []
        # What stamps a request's arrival: real time, or a test's virtual clock.
        self.clock: Callable[[], float] = time.monotonic
        self._routes: dict[str, _Route] = {}
        self._failures: dict[str, list[int]] = {}
        self._delays: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------

    # Short shutdown timeout: a slow() answer must not hold up the test's teardown.
    shutdown_timeout = 0.5

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    @property
    def base_url(self) -> str:
        return self.origin

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return self.base_url + _normalize_path(path)

    # -- configuration ------------------------------------------------------------------

    def set(
        self,
        path: str,
        body: bytes | str,
        *,
        content_type: str = RSS_CONTENT_TYPE,
        etag: str | None = "auto",
        last_modified: str | datetime | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Serve ``body`` at ``path`` (replacing any previous setup of that path).

        ``etag="auto"`` derives a quoted SHA-1 of the body, so changing the body
        changes the validator; None sends no ETag. ``last_modified`` is an HTTP date
        (a datetime is formatted for you).
        """
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if etag == "auto":
            etag = f'"{hashlib.sha1(data, usedforsecurity=False).hexdigest()}"'
        elif etag is not None and not etag.startswith(('"', 'W/"')):
            etag = f'"{etag}"'
        if isinstance(last_modified, datetime):
            last_modified = _http_date(last_modified)
        self._routes[_normalize_path(path)] = _Route(
            body=data,
            content_type=content_type,
            etag=etag,
            last_modified=last_modified,
            status=status,
            headers=dict(headers or {}),
        )

    def set_page(self, path: str, html: str, **kwargs: Any) -> None:
        """Serve an article page (text/html)."""
        kwargs.setdefault("content_type", HTML_CONTENT_TYPE)
        self.set(path, html, **kwargs)

    def fail(self, path: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``path`` with ``status``."""
        self._failures.setdefault(_normalize_path(path), []).extend([status] * times)

    def garbage(self, path: str, size: int = 2048) -> None:
        """Serve random non-XML bytes (under the feed content type) at ``path``."""
        rng = random.Random(path)  # deterministic per path, so failures reproduce
        data = bytes(rng.randrange(256) for _ in range(size))
        # Never let it look like markup or start with a BOM.
        data = b"\x00\xff garbage " + data.replace(b"<", b"?")
        self.set(path, data, etag=None)

    def slow(self, path: str, seconds: float) -> None:
        """Delay every answer for ``path`` by ``seconds`` (0 removes the delay)."""
        if seconds > 0:
            self._delays[_normalize_path(path)] = seconds
        else:
            self._delays.pop(_normalize_path(path), None)

    def huge(self, path: str, size_bytes: int, *, declare_length: bool = False) -> None:
        """Stream ``size_bytes`` of an endless-looking feed (chunked unless declared)."""
        self._routes[_normalize_path(path)] = _Route(
            kind="huge", huge_size=size_bytes, huge_declare_length=declare_length
        )

    def redirect(self, path: str, to_url: str, status: int = 302) -> None:
        """Redirect ``path`` to ``to_url`` (a path on this server or a full URL)."""
        self._routes[_normalize_path(path)] = _Route(
            kind="redirect", redirect_to=to_url, status=status
        )

    def remove(self, path: str) -> None:
        """Forget ``path`` (it answers 404 again)."""
        self._routes.pop(_normalize_path(path), None)

    def requests_to(self, path: str) -> list[FeedRequest]:
        path = _normalize_path(path)
        return [r for r in self.requests if r.path == path or f"{r.path}?{r.query}" == path]

    # -- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.path_qs if request.path_qs in self._routes else request.path
        headers = {k.lower(): v for k, v in request.headers.items()}
        entry = FeedRequest(
            request.method, request.path, request.query_string, headers, self.clock()
        )
        self.requests.append(entry)

        def record(status: int, gzipped: bool = False) -> None:
            entry.status, entry.gzipped = status, gzipped

        delay = self._delays.get(key, self._delays.get(request.path))
        if delay:
            await asyncio.sleep(delay)

        failures = self._failures.get(key) or self._failures.get(request.path)
        if failures:
            status = failures.pop(0)
            record(status)
            return web.Response(status=status, text=f"scripted failure {status}")

        route = self._routes.get(key)
        if route is None:
            record(404)
            return web.Response(status=404, text="not found")
        if route.kind == "redirect":
            target = route.redirect_to
            if target.startswith("/"):
                target = self.url(target)
            record(route.status)
            return web.Response(status=route.status, headers={"Location": target})
        if route.kind == "huge":
            record(200)
            return await self._stream_huge(request, route)

        common: dict[str, str] = dict(route.headers)
        if route.etag:
            common["ETag"] = route.etag
        if route.last_modified:
            common["Last-Modified"] = route.last_modified
        if route.status == 200 and _not_modified(headers, route):
            record(304)
            return web.Response(status=304, headers=common)

        body = route.body
        # A route that sets its own Content-Encoding serves its bytes exactly as given.
        gzipped = (
            "gzip" in headers.get("accept-encoding", "").lower()
            and bool(body)
            and "Content-Encoding" not in route.headers
        )
        if gzipped:
            # Compressed by hand (not aiohttp's enable_compression) to control the
            # exact bytes and record that compression happened.
            body = gzip.compress(body)
            common["Content-Encoding"] = "gzip"
        common["Vary"] = "Accept-Encoding"
        common["Content-Type"] = route.content_type
        record(route.status, gzipped)
        return web.Response(status=route.status, body=body, headers=common)

    async def _stream_huge(self, request: web.Request, route: _Route) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": RSS_CONTENT_TYPE})
        if route.huge_declare_length:
            response.content_length = route.huge_size
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        head = b'<?xml version="1.0"?><rss version="2.0"><channel><title>'
        remaining = route.huge_size
        first = head[:remaining]
        filler = b"x" * _CHUNK
        # The client hanging up on purpose (a size cap) is the point of this route.
        with contextlib.suppress(ConnectionError):
            await response.write(first)
            remaining -= len(first)
            while remaining > 0:
                chunk = filler[: min(_CHUNK, remaining)]
                await response.write(chunk)
                remaining -= len(chunk)
            await response.write_eof()
        return response


def _normalize_path(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _not_modified(headers: Mapping[str, str], route: _Route) -> bool:
    """Conditional GET: If-None-Match wins over If-Modified-Since (RFC 9110)."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if route.etag is None:
            return False
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or route.etag.removeprefix("W/") in tags
    if_modified_since = headers.get("if-modified-since")
    if if_modified_since is None or route.last_modified is None:
        return False
    if if_modified_since.strip() == route.last_modified:
        return True
    try:
        return parsedate_to_datetime(if_modified_since) >= parsedate_to_datetime(
            route.last_modified
        )
    except (TypeError, ValueError):
        return False


def _http_date(value: datetime) -> str:
    return format_datetime(_as_utc(value), usegmt=True)


def _as_utc(value: datetime) -> datetime:
    # Naive datetimes in fixtures mean UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _rfc822(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return format_datetime(value)


def _cdata(text: str) -> str:
    # "]]>" cannot appear inside CDATA; split it across two sections.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _attrs(values: Mapping[str, Any]) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in values.items() if v is not None)


def make_rss(
    items: Iterable[Mapping[str, Any]],
    *,
    title: str = "Caliber.az",
    link: str = "https://caliber.az/en",
    lang: str = "en",
    description: str = "Caliber.az analytics",
) -> str:
    """Build an RSS 2.0 document.

    Item keys (all optional): ``title``, ``link``, ``guid`` with ``guid_is_permalink``
    (bool), ``description`` (HTML; put in CDATA), ``content`` (HTML, as
    content:encoded), ``pub_date`` (datetime, naive = UTC; or a preformatted str),
    ``categories`` (list of str), ``author``, ``creator`` (dc:creator), ``enclosure``
    (URL str or dict with url/type/length) and ``media_content`` (URL str or dict
    with url/medium/type/width/height).
    """
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:media="http://search.yahoo.com/mrss/">',
        "<channel>",
        f"<title>{escape(title)}</title>",
        f"<link>{escape(link)}</link>",
        f"<description>{escape(description)}</description>",
        f"<language>{escape(lang)}</language>",
    ]
    for item in items:
        out.append("<item>")
        if "title" in item:
            out.append(f"<title>{escape(item['title'])}</title>")
        if "link" in item:
            out.append(f"<link>{escape(item['link'])}</link>")
        if "guid" in item:
            permalink = "true" if item.get("guid_is_permalink", False) else "false"
            out.append(f'<guid isPermaLink="{permalink}">{escape(str(item["guid"]))}</guid>')
        if "description" in item:
            out.append(f"<description>{_cdata(item['description'])}</description>")
        if "content" in item:
            out.append(f"<content:encoded>{_cdata(item['content'])}</content:encoded>")
        if "pub_date" in item:
            pub = item["pub_date"]
            pub_text = _rfc822(pub) if isinstance(pub, datetime) else str(pub)
            out.append(f"<pubDate>{escape(pub_text)}</pubDate>")
        for category in item.get("categories", ()):
            out.append(f"<category>{escape(category)}</category>")
        if "author" in item:
            out.append(f"<author>{escape(item['author'])}</author>")
        if "creator" in item:
            out.append(f"<dc:creator>{escape(item['creator'])}</dc:creator>")
        if "enclosure" in item:
            enclosure = item["enclosure"]
            if isinstance(enclosure, str):
                enclosure = {"url": enclosure, "type": "image/jpeg"}
            attrs = {"url": enclosure["url"], "length": enclosure.get("length", 0)}
            attrs["type"] = enclosure.get("type", "image/jpeg")
            out.append(f"<enclosure{_attrs(attrs)}/>")
        if "media_content" in item:
            media = item["media_content"]
            if isinstance(media, str):
                media = {"url": media, "medium": "image"}
            out.append(f"<media:content{_attrs(media)}/>")
        out.append("</item>")
    out += ["</channel>", "</rss>"]
    return "\n".join(out) + "\n"


def numbered_feed(*numbers: int, slug: str = "piece", guid: str = "caliber") -> str:
    """RSS of the pieces "Piece n" (one an hour from 2026-11-20 08:00 UTC), newest first as the
    site lists them; `slug` and `guid` keep two tests' feeds apart."""
    start = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    return make_rss(
        [
            {
                "title": f"Piece {n}",
                "link": f"https://caliber.az/en/post/{slug}-{n}",
                "guid": f"{guid}-{n}",
                "description": f"<p>Summary of piece {n}.</p>",
                "pub_date": start + timedelta(hours=n),
            }
            for n in sorted(numbers, reverse=True)
        ]
    )


def make_atom(
    entries: Iterable[Mapping[str, Any]],
    *,
    title: str = "Caliber.az",
    link: str = "https://caliber.az/en",
    lang: str = "en",
    feed_id: str | None = None,
    updated: datetime | None = None,
) -> str:
    """Build an Atom 1.0 document.

    Entry keys (all optional): ``id``, ``title``, ``link``, ``summary`` (HTML),
    ``content`` (HTML), ``updated`` and ``published`` (datetime, naive = UTC),
    ``author`` and ``categories`` (list of str).
    """
    entries = list(entries)
    feed_updated = updated or max(
        (_as_utc(e["updated"]) for e in entries if isinstance(e.get("updated"), datetime)),
        default=datetime(2024, 1, 1, tzinfo=UTC),
    )
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang={quoteattr(lang)}>',
        f"<title>{escape(title)}</title>",
        f'<link href={quoteattr(link)} rel="alternate"/>',
        f"<id>{escape(feed_id or link)}</id>",
        f"<updated>{_as_utc(feed_updated).isoformat()}</updated>",
    ]
    for entry in entries:
        out.append("<entry>")
        if "id" in entry:
            out.append(f"<id>{escape(str(entry['id']))}</id>")
        if "title" in entry:
            out.append(f"<title>{escape(entry['title'])}</title>")
        if "link" in entry:
            out.append(f'<link href={quoteattr(entry["link"])} rel="alternate"/>')
        for key in ("updated", "published"):
            if isinstance(entry.get(key), datetime):
                out.append(f"<{key}>{_as_utc(entry[key]).isoformat()}</{key}>")
        if "author" in entry:
            out.append(f"<author><name>{escape(entry['author'])}</name></author>")
        for category in entry.get("categories", ()):
            out.append(f"<category term={quoteattr(category)}/>")
        # HTML travels escaped inside type="html" elements, as Atom specifies.
        if "summary" in entry:
            out.append(f'<summary type="html">{escape(entry["summary"])}</summary>')
        if "content" in entry:
            out.append(f'<content type="html">{escape(entry["content"])}</content>')
        out.append("</entry>")
    out.append("</feed>")
    return "\n".join(out) + "\n"
