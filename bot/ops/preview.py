"""`python -m bot preview`: fetch or read a feed and print its posts exactly as they would be sent.

Needs no token and no Telegram. Without --feed and FEEDS it reads a small sample feed that ships
with the bot, so it works offline on a fresh machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from bot.config import Settings
from bot.pipeline.feeds import FeedError, fetch_feed, parse_feed
from bot.text.i18n import Translator
from bot.text.plain import utf16_len
from bot.text.render import Renderer
from storage.models import ItemOrigin

SAMPLE_FEED = Path(__file__).parents[1] / "samples" / "caliber-en.xml"
_PLACEHOLDER_HOST = "preview.invalid"


async def run_preview(
    settings: Settings,
    *,
    feed: str | None,
    lang: str | None,
    limit: int,
    html: bool,
    out: TextIO = sys.stdout,
) -> int:
    """Print up to `limit` posts of the newest items; return the exit status."""
    source, feed_lang = _choose_feed(settings, feed)
    translator = Translator(default_language=settings.default_language)
    lang = translator.resolve(lang or feed_lang)
    renderer = Renderer(translator, settings.timezone, settings.summary_length)
    url = source if "://" in source else os.path.abspath(source)  # noqa: ASYNC240 - no I/O
    if "://" not in url:
        url = "file://" + url
    # Its own small client: one feed, no composition root (bot.app) behind a preview.
    timeout = httpx.Timeout(settings.http_timeout, connect=min(10.0, settings.http_timeout))
    headers = {"User-Agent": settings.user_agent}
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=5,
                                 headers=headers) as client:  # fmt: skip
        result = await fetch_feed(
            client, url, max_bytes=settings.feed_max_bytes, timeout=settings.http_timeout
        )
    if result.status != "ok":
        print(f"cannot read {source}: {result.error or result.status}", file=sys.stderr)
        return 1
    try:
        parsed = await asyncio.to_thread(
            parse_feed, result.body, result.url or url, result.content_type
        )
    except FeedError as exc:
        print(f"{source} is not a feed: {exc}", file=sys.stderr)
        return 1
    if parsed.bozo:
        print(f"note: the feed is malformed ({parsed.bozo}); showing what it yielded",
              file=sys.stderr)  # fmt: skip
    newest = list(reversed(parsed.items))[: max(limit, 0)]
    now = time.time()
    print(f"# {parsed.title or source}: {len(parsed.items)} item(s), showing {len(newest)}",
          file=out)  # fmt: skip
    for index, entry in enumerate(newest):
        item = entry.stored(index, 0, lang, now, ItemOrigin.NEW)
        post = renderer.post(item, lang=lang)
        print("-" * 72, file=out)
        print(post.html if html else post.text, file=out)
        print(f"[{utf16_len(post.text)} characters as Telegram counts; preview card: {post.link}]",
              file=out)  # fmt: skip
    return 0


def _choose_feed(settings: Settings, feed: str | None) -> tuple[str, str]:
    if feed:
        configured = {f.url: f.lang for f in settings.feeds}
        return feed, configured.get(feed, settings.feeds[0].lang if settings.feeds else "en")
    first = settings.feeds[0]
    if urlsplit(first.url).hostname == _PLACEHOLDER_HOST:
        return str(SAMPLE_FEED), first.lang
    return first.url, first.lang
