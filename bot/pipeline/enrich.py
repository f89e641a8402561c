"""Article pages for thin feed items: a guarded fetch, extraction, a cache, and the enricher the
poller calls before it stores new items.

The fetch goes only to the feed's own host or to ARTICLE_HOSTS, and only to public addresses
(unless ALLOW_PRIVATE_ADDRESSES): the host is resolved here, every address is checked, and the
request is sent to the checked address (so a second DNS answer cannot swap in another one);
redirects are followed by hand and each hop is checked again. Pages are capped in size and
time, at most a few are fetched at once per host, and each page's result is cached by URL.
Enrichment of a whole batch is bounded by ARTICLE_TIMEOUT; an item whose page is late or
broken keeps the feed's own text.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Literal, TypeVar
from urllib.parse import urljoin

import httpx

from bot.clock import Clock
from bot.config import Settings
from bot.pipeline.extract import extract_article
from bot.pipeline.feeds import read_response
from bot.pipeline.httpbody import ACCEPT_ENCODING
from bot.pipeline.netguard import Refused, Resolver, host_of, pinned_request, system_resolver
from bot.text.summary import LEAD, clean_text, summarise
from bot.workers import RunCpu
from storage.articles import Article, get_article, prune_articles, save_article
from storage.models import Feed, Item, NewItem
from storage.store import Store

log = logging.getLogger(__name__)

ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PRUNE_EVERY = 3600.0

AnyItem = TypeVar("AnyItem", NewItem, Item)


@dataclass(frozen=True, slots=True)
class Page:
    """The outcome of fetching one page: ok (with a body), refused (never sent) or error."""

    status: Literal["ok", "refused", "error"]
    url: str
    body: bytes = b""
    content_type: str | None = None
    error: str | None = None


class PageFetcher:
    """Fetches article pages under the host and address rules, a few at a time per host."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        extra_hosts: frozenset[str] = frozenset(),
        allow_private: bool = False,
        max_bytes: int = 3 * 1024 * 1024,
        timeout: float = 20.0,
        per_host: int = 3,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.client = client
        self.extra_hosts = extra_hosts
        self.allow_private = allow_private
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.per_host = per_host
        self.resolver = resolver
        self._slots: dict[str, asyncio.Semaphore] = {}

    def allowed_hosts(self, feed_url: str) -> frozenset[str]:
        return self.extra_hosts | {host_of(feed_url)} - {""}

    async def fetch(self, url: str, feed_url: str, *, lang: str | None = None) -> Page:
        """GET an article page linked from the feed at `feed_url`; never raise for I/O."""
        allowed = self.allowed_hosts(feed_url)
        host = host_of(url)
        if host not in allowed:
            return Page("refused", url, error=f"host {host or '?'} is not the feed's or listed")
        slots = self._slots.setdefault(host, asyncio.Semaphore(self.per_host))
        async with slots:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._follow(url, allowed, lang)
            except TimeoutError:
                return Page("error", url, error="timed out")
            except httpx.HTTPError as exc:
                return Page("error", url, error=f"{type(exc).__name__}: {exc}"[:300])
            except OSError as exc:  # name resolution
                return Page("error", url, error=f"cannot resolve: {exc}"[:300])

    async def _follow(self, url: str, allowed: frozenset[str], lang: str | None) -> Page:
        headers = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
        if lang:
            headers["Accept-Language"] = f"{lang}, *;q=0.5"
        for _ in range(MAX_REDIRECTS + 1):
            target = await self._checked_target(url, allowed, headers)
            if isinstance(target, Page):
                return target
            response = await self.client.send(target, follow_redirects=False, stream=True)
            try:
                location = response.headers.get("Location")
                if response.status_code in _REDIRECTS and location:
                    url = urljoin(url, location.strip())
                    continue
                result = await read_response(response, url, self.max_bytes)
            finally:
                await response.aclose()
            if result.status != "ok":
                return Page("error", url, error=result.error or f"HTTP {result.http_status}")
            content_type = (result.content_type or "").lower()
            if content_type and "html" not in content_type:
                return Page("error", url, error=f"not a web page ({content_type})")
            return Page("ok", url, body=result.body, content_type=result.content_type)
        return Page("error", url, error="too many redirects")

    async def _checked_target(
        self, url: str, allowed: frozenset[str], headers: dict[str, str]
    ) -> httpx.Request | Page:
        """Build the request for `url` pinned to a checked address, or say why not."""
        host = host_of(url)
        if host and host not in allowed:
            return Page("refused", url, error=f"host {host} is not the feed's or listed")
        try:
            target = await pinned_request(
                self.client, url, headers, self.resolver, require_public=not self.allow_private
            )
        except Refused as exc:
            return Page("refused", url, error=str(exc))
        return target.request


def apply_article(
    item: AnyItem,
    article: Article | None,
    *,
    lang: str,
    length: int,
    mode: str = LEAD,
) -> AnyItem:
    """Return `item` with its summary made from the best text at hand (the page's body, else
    the longer of the feed's text and the page's description) and the page's image, author,
    categories, title and date where the feed had none. Identity and content hash stay."""
    text = item.summary
    page = article.page if article is not None else None
    if article is not None and article.status == "ok":
        own = len(clean_text(item.summary, title=item.title, lang=lang))
        for candidate in (article.page.text, article.page.description or ""):
            if len(clean_text(candidate, title=item.title, lang=lang)) > own:
                text = candidate
                break
    title = item.title or (page.title if page else None) or ""
    author = item.author or (page.author if page else None)
    summary = summarise(text, length, mode=mode, title=title, author=author, lang=lang)
    if article is None or article.status != "ok":
        return replace(item, summary=summary)
    return replace(
        item,
        title=title,
        summary=summary,
        author=author,
        image_url=item.image_url or article.page.image_url,
        categories=item.categories or article.page.categories,
        published_at=item.published_at or article.page.published_at,
    )


class ArticleEnricher:
    """The poller's enricher: new items with thin feed text get their article page's text."""

    def __init__(
        self,
        store: Store,
        fetcher: PageFetcher,
        clock: Clock,
        *,
        threshold: int = 200,
        summary_length: int = 600,
        mode: str = LEAD,
        batch_timeout: float = 20.0,
        retention: float = 30 * 86400.0,
        cpu: RunCpu = asyncio.to_thread,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.cpu = cpu
        self.clock = clock
        self.threshold = threshold
        self.summary_length = summary_length
        self.mode = mode
        self.batch_timeout = batch_timeout
        self.retention = retention
        self._pruned_at: float | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        client: httpx.AsyncClient,
        clock: Clock,
        cpu: RunCpu = asyncio.to_thread,
    ) -> ArticleEnricher:
        fetcher = PageFetcher(
            client,
            extra_hosts=settings.article_hosts,
            allow_private=settings.allow_private_addresses,
            max_bytes=settings.article_max_bytes,
            timeout=min(settings.article_timeout, settings.http_timeout * 2),
            per_host=settings.article_concurrency_per_host,
        )
        return cls(
            store,
            fetcher,
            clock,
            threshold=settings.article_fetch_threshold,
            summary_length=settings.summary_length,
            mode=settings.summary_mode,
            batch_timeout=settings.article_timeout,
            retention=settings.delivery_retention,
            cpu=cpu,
        )

    async def __call__(self, feed: Feed, items: list[NewItem]) -> list[NewItem]:
        """Improve `items` within the batch deadline; any item not done in time stays as is."""
        if not items:
            return items
        await self._prune()
        tasks = [
            asyncio.create_task(self._enrich(feed, item), name=f"enrich-{index}")
            for index, item in enumerate(items)
        ]
        try:
            done, pending = await asyncio.wait(tasks, timeout=self.batch_timeout)
        finally:
            for task in tasks:
                task.cancel()  # a no-op for finished ones; stops the rest on shutdown too
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning(
                "feed %s: %d article page(s) not ready within %.0f s; posting the feed's text",
                feed.url,
                len(pending),
                self.batch_timeout,
            )
        result: list[NewItem] = []
        for task, item in zip(tasks, items, strict=True):
            if task in done and task.exception() is None:
                result.append(task.result())
            else:
                if task in done:
                    log.error("enriching %s failed", item.link, exc_info=task.exception())
                result.append(await self._finish(item, None, feed.lang))
        return result

    async def _enrich(self, feed: Feed, item: NewItem) -> NewItem:
        article = None
        own = clean_text(item.summary, title=item.title, author=item.author, lang=feed.lang)
        if len(own) < self.threshold:
            article = await self.article(feed, item.link)
        return await self._finish(item, article, feed.lang)

    async def _finish(self, item: NewItem, article: Article | None, lang: str) -> NewItem:
        # LexRank is CPU work; the lead is cheap enough for the loop.
        if self.mode == LEAD:
            return apply_article(item, article, lang=lang, length=self.summary_length)
        return await self.cpu(
            apply_article, item, article, lang=lang, length=self.summary_length, mode=self.mode
        )

    async def article(self, feed: Feed, url: str) -> Article | None:
        """Return the cached page for `url`, fetching and caching it the first time."""
        cached = await get_article(self.store, url)
        if cached is not None:
            return cached
        page = await self.fetcher.fetch(url, feed.url, lang=feed.lang)
        if page.status == "refused":
            log.info("not fetching %s: %s", url, page.error)
            return None
        now = self.clock.now()
        if page.status == "error":
            log.info("article page %s failed: %s", url, page.error)
            article = Article(url=url, status="error", fetched_at=now, error=page.error)
        else:
            content = await self.cpu(extract_article, _decoded(page), url)
            useful = bool(content.text or content.description or content.image_url)
            status = "ok" if useful else "empty"
            article = Article(url=url, status=status, fetched_at=now, page=content)
        await save_article(self.store, article)
        return article

    async def _prune(self) -> None:
        now = self.clock.now()
        if self._pruned_at is not None and now - self._pruned_at < _PRUNE_EVERY:
            return
        self._pruned_at = now
        pruned = await prune_articles(self.store, now - self.retention)
        if pruned:
            log.info("forgot %d cached article page(s)", pruned)


def _decoded(page: Page) -> bytes | str:
    """The page as text when the server named its charset, else bytes for the extractor to sniff."""
    charset = None
    for param in (page.content_type or "").split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"' ")
    if charset:
        try:
            return page.body.decode(charset, errors="replace")
        except LookupError:
            pass
    return page.body
