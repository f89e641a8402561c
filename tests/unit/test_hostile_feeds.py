"""A feed is data from the internet: stacked compression, entity expansion, square-cost shapes,
oversize fields and redirects into the private network, as an attack run tried them."""

from __future__ import annotations

import codecs
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from bot.clock import SystemClock
from bot.pipeline.enrich import PageFetcher
from bot.pipeline.feedguard import MAX_ATTRIBUTES, neutralise_dtd
from bot.pipeline.feeds import (
    CATEGORIES_MAX,
    CATEGORY_MAX,
    SUMMARY_MAX,
    TITLE_MAX,
    URL_MAX,
    FeedError,
    fetch_feed,
    parse_feed,
)
from bot.pipeline.netguard import is_public_address
from bot.pipeline.poller import Poller, PollerConfig
from storage.store import Store
from tests.fakes.feedserver import FeedServer

FEED_URL = "https://caliber.az/en/rss"


def rss(items: str, prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0"><channel>'
        f"<title>Caliber</title>{items}</channel></rss>"
    ).encode()


def item(n: int, extra: str = "", title: str | None = None) -> str:
    return (
        f"<item><title>{title if title is not None else f'Piece {n}'}</title>"
        f"<link>https://caliber.az/en/post/{n}</link><guid>caliber-{n}</guid>{extra}</item>"
    )


def zeros_gzipped(size: int) -> bytes:
    """gzip of `size` zero bytes, made in chunks (the test itself must not hold `size` bytes)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    parts.append(packer.flush())
    return b"".join(parts)


# ------------------------------------------------------------------ compression bombs


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def peak_bytes(work: Callable[[], Awaitable[object]]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = await work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_stacked_gzip_bomb_is_refused_within_the_cap(
    feed_server: FeedServer, http: httpx.AsyncClient
) -> None:
    # 64 MB of zeros, gzipped twice: a few hundred bytes on the wire.
    bomb = gzip.compress(zeros_gzipped(64 << 20))
    assert len(bomb) < 2_000
    feed_server.set("/bomb", bomb, headers={"Content-Encoding": "gzip, gzip"})
    cap = 1 << 20

    async def fetch() -> object:
        return await fetch_feed(http, feed_server.url("/bomb"), max_bytes=cap)

    result, peak = await peak_bytes(fetch)
    assert getattr(result, "status", None) == "error"
    assert "too large" in (getattr(result, "error", "") or "")
    # Inflated layer by layer within the cap: never the 64 MB (or the 64 KB of the middle layer
    # all at once times many); a few times the cap at most.
    assert peak < 4 * cap, peak


async def test_single_gzip_bomb_is_bounded_by_the_cap_for_pages_too(
    feed_server: FeedServer, http: httpx.AsyncClient
) -> None:
    feed_server.set_page(
        "/en/post/1", zeros_gzipped(64 << 20), headers={"Content-Encoding": "gzip"}
    )
    fetcher = PageFetcher(http, allow_private=True, max_bytes=1 << 20)

    async def fetch() -> object:
        return await fetcher.fetch(feed_server.url("/en/post/1"), feed_server.url("/en/rss"))

    page, peak = await peak_bytes(fetch)
    assert getattr(page, "status", None) == "error"
    assert "too large" in (getattr(page, "error", "") or "")
    assert peak < 4 << 20, peak


async def test_honest_compression_still_reads_and_odd_codings_are_refused(
    feed_server: FeedServer, http: httpx.AsyncClient
) -> None:
    body = rss(item(1))
    feed_server.set("/twice", gzip.compress(gzip.compress(body)),
                    headers={"Content-Encoding": "gzip, gzip"})  # fmt: skip
    feed_server.set("/deflate", zlib.compress(body), headers={"Content-Encoding": "deflate"})
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    feed_server.set("/raw-deflate", raw.compress(body) + raw.flush(),
                    headers={"Content-Encoding": "deflate"})  # fmt: skip
    feed_server.set("/members", gzip.compress(body[:40]) + gzip.compress(body[40:]),
                    headers={"Content-Encoding": "gzip"})  # fmt: skip
    feed_server.set("/brotli", b"\x1b\x00", headers={"Content-Encoding": "br"})
    feed_server.set("/thrice", gzip.compress(gzip.compress(gzip.compress(body))),
                    headers={"Content-Encoding": "gzip, gzip, gzip"})  # fmt: skip
    for path in ("/twice", "/deflate", "/raw-deflate", "/members"):
        result = await fetch_feed(http, feed_server.url(path))
        assert result.status == "ok" and result.body == body, path
    for path, why in (("/brotli", "'br'"), ("/thrice", "3 stacked")):
        result = await fetch_feed(http, feed_server.url(path))
        assert result.status == "error" and why in (result.error or ""), (path, result.error)
    # The bot says what it can decode.
    asked = feed_server.requests_to("/twice")[0].headers["accept-encoding"]
    assert asked == "gzip, deflate"


# ------------------------------------------------------------------ entity expansion


def entity_bomb(encoding: str = "utf-8") -> bytes:
    value = "x" * 4000
    body = rss(
        item(1, title="&a;" * 20_000),
        prolog=f'<!DOCTYPE rss [<!ENTITY a "{value}"><!ENTITY b "&a;&a;">]>',
    )
    if encoding == "utf-8":
        return body
    text = body.decode().replace('encoding="utf-8"', f'encoding="{encoding}"')
    return codecs.BOM_UTF16_LE + text.encode("utf-16-le")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_declared_entities_are_never_expanded(encoding: str) -> None:
    parsed = parse_feed(entity_bomb(encoding), FEED_URL)
    [piece] = parsed.items
    assert "xxxx" not in piece.title
    assert len(piece.title) <= TITLE_MAX
    assert piece.link == "https://caliber.az/en/post/1"


def test_a_plain_doctype_stays_readable() -> None:
    netscape = (
        '<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        '"http://my.netscape.com/publish/formats/rss-0.91.dtd">'
    )
    body = rss(item(1), prolog=netscape).replace(b'version="2.0"', b'version="0.91"')
    assert neutralise_dtd(body) == body
    parsed = parse_feed(body, FEED_URL)
    assert [i.title for i in parsed.items] == ["Piece 1"]


def test_the_internal_subset_goes_but_the_doctype_and_the_rest_stay() -> None:
    body = rss(item(1), prolog='<!DOCTYPE rss SYSTEM "x.dtd" [<!ENTITY q "a > b ] c">]>')
    cleaned = neutralise_dtd(body)
    assert b'<!DOCTYPE rss SYSTEM "x.dtd">' in cleaned
    assert b"ENTITY" not in cleaned
    assert cleaned.endswith(b"</channel></rss>")


async def test_an_entity_bomb_stores_a_bounded_title_end_to_end(
    feed_server: FeedServer, db_path: Path
) -> None:
    feed_server.set("/en/rss", entity_bomb())
    store = await Store.open(db_path)
    try:
        feed = await store.ensure_feed(feed_server.url("/en/rss"), "en")
        async with httpx.AsyncClient(timeout=5.0) as http:
            poller = Poller(store, http, SystemClock(), PollerConfig(interval=60, jitter=0))
            report = await poller.poll_once(feed)
        assert report.status == "ok" and report.new_items == 1
        [stored] = await store.latest_items(None, 5)
        assert len(stored.title) <= TITLE_MAX and "xxxx" not in stored.title
    finally:
        await store.close()
    assert sum(len(chunk) for chunk in stored.summary) < 1 << 20


# ------------------------------------------------------------------ square-cost shapes


def test_an_element_with_thousands_of_attributes_is_refused_quickly() -> None:
    attributes = " ".join(f'a{i}="x"' for i in range(30_000))
    with pytest.raises(FeedError, match="attributes"):
        parse_feed(rss(item(1, title=f"<b {attributes}>x</b>")), FEED_URL)
    # A real feed's handful of attributes is nowhere near the cap.
    few = " ".join(f'a{i}="x"' for i in range(MAX_ATTRIBUTES // 2))
    assert parse_feed(rss(item(1, extra=f"<x {few}/>")), FEED_URL).items


def test_an_entry_with_thousands_of_categories_is_refused() -> None:
    categories = "".join(f"<category>c{i}</category>" for i in range(20_000))
    with pytest.raises(FeedError, match="category"):
        parse_feed(rss(item(1, extra=categories)), FEED_URL)


# ------------------------------------------------------------------ bounded fields


def test_every_stored_field_is_bounded_and_identities_are_never_cut() -> None:
    long_guid = "tag:caliber.az," + "g" * 1500
    extra = "".join(f"<category>{i} {'Category ' * 30}</category>" for i in range(80))
    extra += f"<description>{'word ' * 10_000}</description>"
    body = rss(
        item(1, extra=extra, title="Title " * 2000)
        + f"<item><title>A</title><link>https://caliber.az/a</link><guid>{long_guid}1</guid></item>"
        + f"<item><title>B</title><link>https://caliber.az/b</link><guid>{long_guid}2</guid></item>"
        + f"<item><title>C</title><link>https://caliber.az/{'c' * URL_MAX}</link></item>"
    )
    parsed = parse_feed(body, FEED_URL)
    by_link = {i.link.rsplit("/", 1)[1]: i for i in parsed.items}
    first, a, b = by_link["1"], by_link["a"], by_link["b"]
    assert len(first.title) <= TITLE_MAX and first.title.startswith("Title Title")
    assert len(first.summary) <= SUMMARY_MAX
    assert len(first.categories) == CATEGORIES_MAX
    assert all(len(c) <= CATEGORY_MAX for c in first.categories)
    # Two guids alike for 1,500 characters stay two pieces.
    assert a.identity != b.identity and a.identity.startswith("sha256:")
    # A link too long to post is skipped with its reason, not cut.
    assert parsed.skipped == 1 and "link longer than" in parsed.errors[0]


# ------------------------------------------------------------------ redirects and addresses


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("2002:7f00:1::1", False),  # 6to4 around 127.0.0.1
        ("2002:5db8:d822::1", True),  # 6to4 around 93.184.216.34
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::5db8:d822", True),
        ("64:ff9b:1::a00:1", False),  # local-use NAT64
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("::7f00:1", False),  # IPv4-compatible
        ("::ffff:93.184.216.34", True),
    ],
)
def test_ipv6_addresses_that_carry_ipv4_are_judged_by_it(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def table_resolver(table: dict[str, list[list[str]]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """Answers in turn: the second lookup of a name gets its second list (DNS rebinding)."""
    calls: dict[str, int] = {}

    async def resolve(host: str, port: int) -> list[str]:
        answers = table[host]
        index = min(calls.get(host, 0), len(answers) - 1)
        calls[host] = calls.get(host, 0) + 1
        return answers[index]

    return resolve


class Recorder:
    """A mock network: records where each request went and answers by path."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        if request.url.path == "/rss":
            return httpx.Response(302, headers={"Location": "http://intranet.test/secret"})
        return httpx.Response(200, stream=_Body(rss(item(1))))


class _Body(httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body


async def test_a_redirect_from_a_public_feed_into_the_private_network_is_refused() -> None:
    network = Recorder()
    resolve = table_resolver({"feeds.test": [["93.184.216.34"]], "intranet.test": [["10.0.0.7"]]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(network)) as mock:
        refused = await fetch_feed(mock, "http://feeds.test/rss", resolver=resolve)
        allowed = await fetch_feed(
            mock, "http://feeds.test/rss", resolver=resolve, allow_private=True
        )
    assert refused.status == "error" and "non-public 10.0.0.7" in (refused.error or "")
    assert allowed.status == "ok"
    # The refused hop never left the bot; the allowed one went to the address it was judged by.
    assert network.hosts == ["93.184.216.34", "93.184.216.34", "10.0.0.7"]


async def test_an_operators_private_feed_may_redirect_within_the_private_network() -> None:
    network = Recorder()
    resolve = table_resolver({"feeds.test": [["10.0.0.5"]], "intranet.test": [["10.0.0.7"]]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(network)) as mock:
        result = await fetch_feed(mock, "http://feeds.test/rss", resolver=resolve)
    assert result.status == "ok"
    assert network.hosts == ["10.0.0.5", "10.0.0.7"]


async def test_a_second_dns_answer_cannot_move_a_checked_request() -> None:
    network = Recorder()
    # Public when judged, loopback for anyone who asks again.
    resolve = table_resolver({"feeds.test": [["93.184.216.34"], ["127.0.0.1"]],
                              "intranet.test": [["93.184.216.40"], ["127.0.0.1"]]})  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(network)) as mock:
        result = await fetch_feed(mock, "http://feeds.test/rss", resolver=resolve)
    assert result.status == "ok"
    assert network.hosts == ["93.184.216.34", "93.184.216.40"]


# ------------------------------------------------------------------ stopping during a parse
