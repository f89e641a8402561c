"""Article pages: thin feed items get their summary, image, author and categories from the page,
fetched only from allowed hosts and public addresses, once, within size and time bounds."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Runtime, make_http_client
from bot.clock import SystemClock
from bot.config import load_settings
from bot.pipeline.enrich import ArticleEnricher, PageFetcher
from bot.pipeline.netguard import is_public_address
from bot.text.summary import split_sentences
from storage.articles import get_article
from storage.models import ChatSettings, DeliveryState, Feed, NewItem, PostStyle
from storage.store import Store
from tests.data.pages import AZ_CHROME, RU_CHROME, caliber_page, corpus_article, page
from tests.factories import new_item
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import bot_env, running_bot, wait_for

CHANNEL = -1001000000001
PUBLISHED = datetime(2025, 7, 22, 10, 27, tzinfo=UTC)
OLD = {
    "title": "An older piece",
    "link": "https://caliber.az/en/post/old",
    "guid": "old",
    "description": "Seen at the first poll.",
    "pub_date": datetime(2025, 7, 1, tzinfo=UTC),
}


def no_chrome(text: str, chrome: tuple[str, ...]) -> None:
    for line in chrome:
        assert not re.search(rf"(?<!\w){re.escape(line)}(?!\w)", text), line


@asynccontextmanager
async def bot_after_first_poll(
    api: FakeBotApi,
    feed_server: FeedServer,
    db_path: Path,
    *,
    lang: str = "en",
    style: PostStyle | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Runtime]:
    """A running bot whose channel is connected and whose feed's backlog is already seen."""
    api.add_chat(CHANNEL, "channel", title="Caliber")
    feed_server.set(f"/{lang}/rss", make_rss([OLD], lang=lang))
    settings = {"CHANNELS": f"{lang}={CHANNEL}", "ALLOW_PRIVATE_ADDRESSES": "true", **(env or {})}
    config = bot_env(api.url, {lang: feed_server.url(f"/{lang}/rss")}, db_path, **settings)
    async with running_bot(config) as runtime:
        store = runtime.services.store

        async def ready() -> bool:
            feeds = await store.list_feeds()
            chat = await store.get_chat(CHANNEL)
            return bool(feeds and feeds[0].initialized and chat and chat.subscribed)

        await wait_for("the channel connected and the backlog seen", ready)
        if style is not None:
            await store.update_chat(CHANNEL, time.time(), settings=ChatSettings(style=style))
        yield runtime


def publish(feed_server: FeedServer, lang: str = "en", **item: Any) -> None:
    """Put one new piece (thin by default: no text) on top of the feed."""
    entry = {"title": "A new piece", "guid": "new-1", "description": "",
             "pub_date": PUBLISHED, **item}  # fmt: skip
    feed_server.set(f"/{lang}/rss", make_rss([entry, OLD], lang=lang))


def summary_of(text: str) -> str:
    """The summary paragraph of a post (between the date line and "Read more")."""
    return text.split("\n\n")[1]


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("lang", ["en", "ru", "az"])
async def test_thin_item_is_posted_with_the_pages_first_sentences_and_no_chrome(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, lang: str
) -> None:
    path = f"/{lang}/post/1"
    if lang == "en":
        article = corpus_article()
        feed_server.set_page(path, caliber_page(feed_server.url(path)))
        title, chrome = article.title, article.chrome_lines
        first = split_sentences(article.paragraphs[0])[0]
    else:
        feed_server.set_page(path, page(f"caliber-{lang}.html"))
        title = "Каспий как зеркало" if lang == "ru" else "Xəzərdə təlimlər"
        chrome = RU_CHROME if lang == "ru" else AZ_CHROME
        first = ("Совместные учения России и Ирана на Каспии" if lang == "ru"
                 else "Rusiya və İranın Xəzər dənizindəki birgə təlimləri")  # fmt: skip
    async with bot_after_first_poll(api, feed_server, db_path, lang=lang):
        publish(feed_server, lang, title=title, link=feed_server.url(path))
        await api.wait_sent(1, CHANNEL, timeout=15)
    text = api.sent_texts(CHANNEL)[0]
    summary = summary_of(text)
    assert summary.startswith(first)
    assert 200 < len(summary) <= 600 and summary[-1] in ".!?…»"
    no_chrome(text, chrome)
    hashtag = {"en": "#Analytics", "ru": "#Аналитика", "az": "#Analitika"}[lang]
    assert hashtag in text  # the page's section, as the feed named none
    assert len(feed_server.requests_to(path)) == 1
    request = feed_server.requests_to(path)[0]
    assert request.headers["user-agent"].startswith("CaliberTelegramBot/")
    assert request.gzipped


async def test_ru_page_names_the_author(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    feed_server.set_page("/ru/post/2", page("caliber-ru.html"))
    async with bot_after_first_poll(api, feed_server, db_path, lang="ru"):
        publish(feed_server, "ru", title="Каспий", link=feed_server.url("/ru/post/2"))
        await api.wait_sent(1, CHANNEL, timeout=15)
    assert "Ильгар Велизаде" in api.sent_texts(CHANNEL)[0].split("\n")[1]


async def test_extractive_mode_posts_central_sentences(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    article = corpus_article()
    feed_server.set_page("/en/post/1", caliber_page(feed_server.url("/en/post/1")))
    async with bot_after_first_poll(api, feed_server, db_path, env={"SUMMARY_MODE": "extractive"}):
        publish(feed_server, title=article.title, link=feed_server.url("/en/post/1"))
        await api.wait_sent(1, CHANNEL, timeout=15)
    summary = summary_of(api.sent_texts(CHANNEL)[0])
    body = " ".join(article.paragraphs)
    sentences = [s for line in summary.split("\n") for s in split_sentences(line)]
    assert len(sentences) >= 2 and all(s in body for s in sentences)
    assert [body.index(s) for s in sentences] == sorted(body.index(s) for s in sentences)
    no_chrome(summary, article.chrome_lines)


async def test_feed_text_long_enough_is_used_and_the_page_not_fetched(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    feed_server.set_page("/en/post/1", caliber_page(feed_server.url("/en/post/1")))
    text = "The feed text itself is long enough. " * 8
    async with bot_after_first_poll(api, feed_server, db_path):
        publish(feed_server, link=feed_server.url("/en/post/1"), description=text)
        await api.wait_sent(1, CHANNEL, timeout=15)
    assert summary_of(api.sent_texts(CHANNEL)[0]).startswith("The feed text itself is long")
    assert feed_server.requests_to("/en/post/1") == []


@pytest.mark.parametrize(
    ("env", "link_host", "fetched"),
    [
        ({}, "localhost", False),  # not the feed's host (127.0.0.1)
        ({"ARTICLE_HOSTS": "localhost"}, "localhost", True),
        ({"ALLOW_PRIVATE_ADDRESSES": "false"}, "127.0.0.1", False),  # loopback
        ({"ALLOW_PRIVATE_ADDRESSES": "false", "ARTICLE_HOSTS": "localhost"}, "localhost", False),
    ],
)
async def test_pages_only_from_allowed_hosts_and_public_addresses(
    api: FakeBotApi,
    feed_server: FeedServer,
    db_path: Path,
    env: dict[str, str],
    link_host: str,
    fetched: bool,
) -> None:
    feed_server.set_page("/en/post/1", caliber_page(feed_server.url("/en/post/1")))
    link = feed_server.url("/en/post/1").replace("127.0.0.1", link_host)
    async with bot_after_first_poll(api, feed_server, db_path, env=env):
        publish(feed_server, link=link, description="<p>Teaser line.</p>")
        await api.wait_sent(1, CHANNEL, timeout=15)
    assert len(feed_server.requests_to("/en/post/1")) == int(fetched)
    summary = summary_of(api.sent_texts(CHANNEL)[0])
    assert summary.startswith("The joint military" if fetched else "Teaser line.")


async def test_a_broken_or_slow_page_never_holds_the_post_back(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    feed_server.set_page("/en/post/slow", caliber_page(feed_server.url("/en/post/slow")))
    feed_server.slow("/en/post/slow", 30)
    feed_server.fail("/en/post/broken", 500, times=5)
    async with bot_after_first_poll(api, feed_server, db_path, env={"ARTICLE_TIMEOUT": "1"}):
        publish(feed_server, link=feed_server.url("/en/post/slow"), description="Slow teaser.")
        # The page takes 30 s to answer: a post that waited for it would not come within
        # this bound, and would carry the page's text instead of the feed's teaser.
        await wait_for("the post, the page still loading", lambda: bool(api.sent(CHANNEL)))
        entry = {"title": "Broken", "guid": "new-2", "link": feed_server.url("/en/post/broken"),
                 "description": "Broken teaser.", "pub_date": PUBLISHED}  # fmt: skip
        feed_server.set("/en/rss", make_rss([entry, OLD]))
        await api.wait_sent(2, CHANNEL, timeout=15)
    texts = api.sent_texts(CHANNEL)
    assert summary_of(texts[0]) == "Slow teaser."
    assert summary_of(texts[1]) == "Broken teaser."


# ------------------------------------------------------------------ images


@pytest.mark.parametrize(
    ("feed_image", "expected"),
    [
        ({"enclosure": "https://cdn.caliber.az/enclosure.jpg"}, "https://cdn.caliber.az/enclosure.jpg"),
        ({"media_content": "https://cdn.caliber.az/media.jpg"}, "https://cdn.caliber.az/media.jpg"),
        ({}, "/media/og-image.jpg"),  # the page's og:image, relative to the page
    ],
)  # fmt: skip
async def test_photo_channel_gets_the_feeds_image_else_the_pages(
    api: FakeBotApi,
    feed_server: FeedServer,
    db_path: Path,
    feed_image: dict[str, str],
    expected: str,
) -> None:
    url = feed_server.url("/en/post/1")
    feed_server.set_page("/en/post/1", caliber_page(url, image="/media/og-image.jpg"))
    async with bot_after_first_poll(api, feed_server, db_path, style=PostStyle.PHOTO):
        publish(feed_server, link=url, **feed_image)
        await api.wait_sent(1, CHANNEL, timeout=15)
    (call,) = api.sent(CHANNEL)
    if expected.startswith("/"):
        expected = feed_server.url(expected)
    assert call.method == "sendPhoto" and call.params["photo"] == expected
    assert len(api.sent_texts(CHANNEL)[0]) <= 1024


async def test_refused_image_falls_back_to_text_at_once(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    url = feed_server.url("/en/post/1")
    feed_server.set_page("/en/post/1", caliber_page(url))
    api.bad_photo_urls.add("https://cdn.caliber.az/broken.jpg")
    async with bot_after_first_poll(api, feed_server, db_path, style=PostStyle.PHOTO) as runtime:
        publish(feed_server, link=url, enclosure="https://cdn.caliber.az/broken.jpg")
        await api.wait_sent(1, CHANNEL, timeout=15)
        store = runtime.services.store

        async def recorded() -> bool:
            items = await store.find_items_by_link(url)
            delivery = await store.get_delivery(items[0].id, CHANNEL) if items else None
            return delivery is not None and delivery.state is DeliveryState.SENT

        await wait_for("the delivery recorded as sent", recorded)
        (item,) = await store.find_items_by_link(url)
        delivery = await store.get_delivery(item.id, CHANNEL)
        assert delivery is not None and delivery.attempts == 1  # one attempt, no retry loop
    assert len(api.calls_to("sendPhoto")) == 1 and not api.calls_to("sendPhoto")[0].ok
    (call,) = api.sent(CHANNEL)
    assert call.method == "sendMessage"
    assert summary_of(api.sent_texts(CHANNEL)[0]).startswith("The joint military")


# ------------------------------------------------------------------ the fetcher


def resolver(table: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings({"FEEDS": "en=http://127.0.0.1/rss"}, require_token=False)
    async with make_http_client(settings) as http:
        yield http


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True), ("2a00:1450:4001:80b::200e", True), ("127.0.0.1", False),
        ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
        ("224.0.0.1", False), ("240.0.0.1", False), ("::1", False), ("fe80::1%eth0", False),
        ("fc00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
        ("not-an-ip", False),
    ],
)  # fmt: skip
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_the_checked_address_is_the_one_connected_to(
    client: httpx.AsyncClient, feed_server: FeedServer
) -> None:
    port = feed_server.base_url.rsplit(":", 1)[1]
    feed_server.set_page("/p", "<html><body><p>Text.</p></body></html>")
    fetcher = PageFetcher(
        client, allow_private=True, resolver=resolver({"caliber.test": ["127.0.0.1"]})
    )
    page_ = await fetcher.fetch(f"http://caliber.test:{port}/p", f"http://caliber.test:{port}/rss")
    assert page_.status == "ok" and b"Text." in page_.body
    assert feed_server.requests_to("/p")[0].headers["host"] == f"caliber.test:{port}"


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.5"], ["169.254.169.254"], ["::1"], ["::ffff:127.0.0.1"],
     ["93.184.216.34", "127.0.0.1"]],
)  # fmt: skip
async def test_private_addresses_are_refused_before_any_request(
    client: httpx.AsyncClient, feed_server: FeedServer, addresses: list[str]
) -> None:
    fetcher = PageFetcher(client, resolver=resolver({"caliber.test": addresses}))
    page_ = await fetcher.fetch("http://caliber.test/p", "http://caliber.test/rss")
    assert page_.status == "refused" and "non-public" in (page_.error or "")
    assert feed_server.requests == []


async def test_every_redirect_hop_is_checked(
    client: httpx.AsyncClient, feed_server: FeedServer
) -> None:
    port = feed_server.base_url.rsplit(":", 1)[1]
    table = {"caliber.test": ["127.0.0.1"], "cdn.caliber.test": ["127.0.0.1"]}
    feed_server.set_page("/final", "<html><body><p>Final page.</p></body></html>")
    feed_server.redirect("/same-host", f"http://caliber.test:{port}/final")
    feed_server.redirect("/other-host", f"http://evil.test:{port}/final")
    feed_server.redirect("/listed-host", f"http://cdn.caliber.test:{port}/final", status=301)
    feed_server.redirect("/loop", f"http://caliber.test:{port}/loop")
    fetcher = PageFetcher(
        client, allow_private=True, resolver=resolver(table),
        extra_hosts=frozenset({"cdn.caliber.test"}),
    )  # fmt: skip
    feed = f"http://caliber.test:{port}/rss"
    base = f"http://caliber.test:{port}"
    assert (await fetcher.fetch(f"{base}/same-host", feed)).status == "ok"
    assert (await fetcher.fetch(f"{base}/listed-host", feed)).status == "ok"
    refused = await fetcher.fetch(f"{base}/other-host", feed)
    assert refused.status == "refused" and "evil.test" in (refused.error or "")
    looped = await fetcher.fetch(f"{base}/loop", feed)
    assert looped.status == "error" and looped.error == "too many redirects"
    assert len(feed_server.requests_to("/final")) == 2  # the refused hop was never requested


async def test_a_redirect_to_a_private_address_is_refused() -> None:
    requested: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requested.append(request.headers["host"])
        return httpx.Response(302, headers={"Location": "http://cdn.caliber.test/metadata"})

    table = {"caliber.test": ["93.184.216.34"], "cdn.caliber.test": ["169.254.169.254"]}
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mock:
        fetcher = PageFetcher(
            mock, extra_hosts=frozenset({"cdn.caliber.test"}), resolver=resolver(table)
        )
        result = await fetcher.fetch("http://caliber.test/p", "http://caliber.test/rss")
    assert result.status == "refused" and "169.254.169.254" in (result.error or "")
    assert requested == ["caliber.test"]


async def test_size_cap_and_content_type(
    client: httpx.AsyncClient, feed_server: FeedServer
) -> None:
    feed_server.huge("/huge", 3 * 1024 * 1024)
    feed_server.set("/image", b"\x89PNG....", content_type="image/png")
    fetcher = PageFetcher(client, allow_private=True, max_bytes=1024 * 1024)
    feed = feed_server.url("/rss")
    huge = await fetcher.fetch(feed_server.url("/huge"), feed)
    assert huge.status == "error" and "too large" in (huge.error or "")
    image = await fetcher.fetch(feed_server.url("/image"), feed)
    assert image.status == "error" and "not a web page" in (image.error or "")


class _Streamed(httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body


async def test_at_most_a_few_fetches_at_once_per_host() -> None:
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        host = request.headers["host"]
        in_flight[host] = in_flight.get(host, 0) + 1
        peak[host] = max(peak.get(host, 0), in_flight[host])
        await gate.wait()  # a slow network: every fetch let in overlaps with the others
        in_flight[host] -= 1
        # Streamed, as a network answer is (the body is read raw and decoded under the cap).
        page = _Streamed(b"<html><body><p>Text.</p></body></html>")
        return httpx.Response(200, headers={"Content-Type": "text/html"}, stream=page)

    table = {"a.test": ["93.184.216.34"], "b.test": ["93.184.216.35"]}
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mock:
        fetcher = PageFetcher(mock, per_host=2, resolver=resolver(table))
        fetching = asyncio.gather(
            *(fetcher.fetch(f"http://{h}/{n}", f"http://{h}/rss") for h in table for n in range(6))
        )
        # All twelve start at once and none can finish until the gate opens: once two are in
        # at each host, every fetch that was let in is in (without the cap, all six were).
        await wait_for("two fetches in at each host", lambda: sum(in_flight.values()) >= 4)
        assert peak == {"a.test": 2, "b.test": 2}
        gate.set()
        pages = await fetching
    assert all(p.status == "ok" for p in pages)
    assert peak == {"a.test": 2, "b.test": 2}


# ------------------------------------------------------------------ the enricher


async def _enricher(
    db_path: Path, client: httpx.AsyncClient, feed_server: FeedServer, **kwargs: Any
) -> tuple[Store, ArticleEnricher, Feed]:
    store = await Store.open(db_path)
    feed = await store.ensure_feed(feed_server.url("/en/rss"), "en")
    fetcher = PageFetcher(client, allow_private=True)
    return store, ArticleEnricher(store, fetcher, SystemClock(), **kwargs), feed


async def test_each_page_is_fetched_once_and_identity_is_kept(
    db_path: Path, client: httpx.AsyncClient, feed_server: FeedServer
) -> None:
    url = feed_server.url("/en/post/1")
    feed_server.set_page("/en/post/1", caliber_page(url))
    store, enrich, feed = await _enricher(db_path, client, feed_server)
    try:
        thin = new_item(1, link=url, summary="", image_url="https://cdn.caliber.az/feed.jpg")
        (first,) = await enrich(feed, [thin])
        (again,) = await enrich(feed, [thin])
        assert first == again
        assert len(feed_server.requests_to("/en/post/1")) == 1
        assert (first.identity, first.content_hash, first.link) == (
            thin.identity, thin.content_hash, thin.link,
        )  # fmt: skip
        assert first.summary.startswith("The joint military exercises")
        assert first.image_url == "https://cdn.caliber.az/feed.jpg"  # the feed's image wins
        assert first.categories == ("Analytics",)
        cached = await get_article(store, url)
        assert cached is not None and cached.status == "ok" and cached.page.text
        assert cached.page.image_url == feed_server.url("/media/2025/07/drills.jpg")
    finally:
        await store.close()


async def test_the_whole_batch_is_bounded_in_time(
    db_path: Path, client: httpx.AsyncClient, feed_server: FeedServer
) -> None:
    feed_server.set_page("/slow", "<html><body><p>Late.</p></body></html>")
    feed_server.slow("/slow", 30)
    store, enrich, feed = await _enricher(db_path, client, feed_server, batch_timeout=0.5)
    try:
        items = [
            new_item(n, link=feed_server.url("/slow"), summary=f"Teaser {n}.") for n in range(5)
        ]
        enriching = asyncio.create_task(enrich(feed, items))
        # The pages take 30 s and a fetch gives up after 15 s (HTTP_TIMEOUT): only the batch's
        # own bound (0.5 s) ends it within this one.
        await wait_for("the batch, cut short", enriching.done, within=5)
        result = enriching.result()
        assert [i.summary for i in result] == [f"Teaser {n}." for n in range(5)]
        assert [i.content_hash for i in result] == [i.content_hash for i in items]
    finally:
        await store.close()


async def test_a_page_without_text_leaves_the_feeds_text(
    db_path: Path, client: httpx.AsyncClient, feed_server: FeedServer
) -> None:
    feed_server.set_page("/empty", "<html><head><title>x</title></head><body></body></html>")
    feed_server.set_page(
        "/described",
        '<html><head><meta property="og:description" content="The page describes itself '
        'in one sentence that is longer than the teaser."></head><body><nav>Menu</nav></body>'
        "</html>",
    )
    store, enrich, feed = await _enricher(db_path, client, feed_server)
    try:
        items: list[NewItem] = [
            new_item(1, link=feed_server.url("/empty"), summary="Teaser."),
            new_item(2, link=feed_server.url("/described"), summary="Teaser."),
            new_item(3, link=feed_server.url("/missing"), summary="Teaser."),
        ]
        result = await enrich(feed, items)
        assert [i.summary for i in result] == [
            "Teaser.",
            "The page describes itself in one sentence that is longer than the teaser.",
            "Teaser.",
        ]
        missing = await get_article(store, feed_server.url("/missing"))
        assert missing is not None and missing.status == "error" and missing.error == "HTTP 404"
    finally:
        await store.close()
