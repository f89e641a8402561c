"""Benchmark 2: ingesting a feed, beside bare feedparser; and the CPU cost of a poll answered 304.

For a generated RSS document of 1,000 Caliber.az-like pieces (about 1 MB), per run:

- bare: `feedparser.parse` of the bytes, nothing else;
- first sight: what the poller does with it the first time, `bot.feeds.parse_feed` (feedparser
  plus turning entries into items: plain-text summaries, clean links, identities, hashes) and
  `Store.store_poll` (dedupe against the database, store the 1,000 items, feed state), on a
  fresh SQLite file;
- seen: the same document again: parse, dedupe, find nothing new, store the feed state.

Times are CPU seconds of the process (the store's worker thread included), which a busy
machine disturbs less than wall time. The ratio to bare feedparser is the overhead (target
<= 1.3x).

Then the poller polls a feed served by a separate process with ETag/Last-Modified; every
poll is answered 304, and the CPU seconds (this process: event loop plus the store's thread)
per poll are reported.

Run: `python -m bench.ingest_bench` (7 runs; `--runs N`, `--items N`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser

from bench.common import ROOT, machine, markdown_table, median
from bot.clock import SystemClock
from bot.feeds import parse_feed
from bot.poller import Poller, PollerConfig
from storage.store import Store
from tests.fakes.feedserver import make_rss

URL = "https://caliber.az/en/rss"
NOW = 1_767_225_600.0
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def make_feed(count: int) -> bytes:
    """An RSS document of `count` pieces, newest first, like the site's."""
    paragraph = (
        "Energy, trade and security in the South Caucasus, analysed by Caliber's authors: "
        "the Middle Corridor, the Caspian, and what Baku, Ankara and Moscow want from them. "
    )
    items = [
        {
            "title": f"Piece {n}: the corridor, the pipeline and the peace treaty",
            "link": f"https://caliber.az/en/post/{n}-the-corridor?utm_source=rss",
            "guid": f"https://caliber.az/en/post/{n}",
            "guid_is_permalink": True,
            "description": f"<p>{paragraph * 3}</p><p>Read <a href='/en/post/{n}'>on</a>.</p>",
            "pub_date": BASE - timedelta(hours=n),
            "categories": ["Analytics", "Region", "Energy"],
            "author": "Caliber.az",
            "enclosure": f"https://caliber.az/media/{n}.jpg",
        }
        for n in range(count)
    ]
    return make_rss(items).encode()


def _timed(fn: object) -> float:
    _quiet()
    start = time.process_time()
    fn()  # type: ignore[operator]
    elapsed = time.process_time() - start
    gc.enable()
    return elapsed


def _quiet() -> None:
    """Start each timed step from the same heap: collect now, and no collection mid-step.

    Without this, whichever step happens to trigger a full collection of the previous steps'
    garbage pays for it, and the ratios swing by +-30% from run to run.
    """
    gc.collect()
    gc.disable()


async def ingest_once(body: bytes, db_path: Path) -> tuple[float, float, float]:
    """Return CPU seconds (this process, the store's thread included) of each step."""
    bare = _timed(lambda: feedparser.parse(body))
    store = await Store.open(db_path)
    try:
        feed = await store.ensure_feed(URL, "en")
        timings = []
        for _ in range(2):
            _quiet()
            start = time.process_time()
            parsed = parse_feed(body, URL, "application/rss+xml")
            await store.store_poll(
                feed.id, parsed.items, etag='"e"', last_modified=None, now=NOW,
                next_poll_at=NOW + 120, max_age=2 * 86400.0, backfill=0,
            )  # fmt: skip
            timings.append(time.process_time() - start)
            gc.enable()
    finally:
        await store.close()
    return bare, timings[0], timings[1]


_SERVE = """
import asyncio, sys
from tests.fakes.feedserver import FeedServer, make_rss
async def main():
    async with FeedServer() as server:
        body = sys.stdin.buffer.read()
        server.set("/en/rss", body, last_modified="Thu, 01 Jan 2026 00:00:00 GMT")
        print(server.url("/en/rss"), flush=True)
        await asyncio.sleep(600)
asyncio.run(main())
"""


async def not_modified_cpu(body: bytes, db_path: Path, polls: int) -> float:
    """CPU seconds of this process per poll answered 304 (after one full poll)."""
    import httpx

    server = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-c", _SERVE],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdin is not None
        assert server.stdout is not None
        server.stdin.write(body)
        server.stdin.close()
        url = server.stdout.readline().decode().strip()
        store = await Store.open(db_path)
        async with httpx.AsyncClient(timeout=10) as client:
            poller = Poller(store, client, SystemClock(), PollerConfig(interval=120))
            feed = await store.ensure_feed(url, "en")
            first = await poller.poll_once(feed)
            assert first.status == "ok", first
            start = time.process_time()
            for _ in range(polls):
                report = await poller.poll_once(feed)
                assert report.status == "not_modified", report
            cpu = (time.process_time() - start) / polls
        await store.close()
        return cpu
    finally:
        server.kill()
        server.wait()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args(argv)
    body = make_feed(args.items)
    print(f"feed: {args.items} items, {len(body) / 1e6:.2f} MB")
    bare, first, seen = [], [], []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        for index in range(args.runs):
            b, f, s = await ingest_once(body, Path(tmp) / f"run{index}.sqlite3")
            bare.append(b)
            first.append(f)
            seen.append(s)
            print(f"run {index + 1}: feedparser {b * 1000:.0f} ms, first sight {f * 1000:.0f} ms, "
                  f"seen {s * 1000:.0f} ms", flush=True)  # fmt: skip
        cpu = [await not_modified_cpu(body, Path(tmp) / "poll.sqlite3", args.polls)]
        cpu += [await not_modified_cpu(body, Path(tmp) / f"poll{i}.sqlite3", args.polls)
                for i in range(2)]  # fmt: skip
    print()
    print(f"Machine: {machine()}")
    print()
    mb, mf, ms = median(bare), median(first), median(seen)
    print(f"Median of {args.runs} runs, {args.items} items:")
    print(
        markdown_table(
            ["step", "time", "vs bare feedparser"],
            [
                ["bare `feedparser.parse`", f"{mb * 1000:.0f} ms", "1.00x"],
                ["first sight: parse + dedupe + store", f"{mf * 1000:.0f} ms", f"{mf / mb:.2f}x"],
                ["seen again: parse + dedupe", f"{ms * 1000:.0f} ms", f"{ms / mb:.2f}x"],
                ["poll answered 304 (CPU)", f"{median(cpu) * 1000:.2f} ms", "-"],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
