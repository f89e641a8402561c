"""Benchmark 2: ingesting a feed, beside bare feedparser; and the CPU cost of a poll answered 304.

For a generated RSS document of 1,000 Caliber.az-like pieces (about 1 MB), per run:

- bare: `feedparser.parse` of the bytes, nothing else;
- first sight: what the poller does with it the first time,
  `bot.pipeline.feeds.parse_feed` (feedparser
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

On a shared VM the CPU time of one step swings by up to +-40% from run to run, so the same
steps are also counted in machine instructions under valgrind's callgrind (`--instructions`),
which gives the same count on every run: each step runs in its own process, and its count is
that process's total minus the total of a process that does everything up to the step.

Run: `python -m bench.ingest_bench` (7 runs; `--runs N`, `--items N`), and
`python -m bench.ingest_bench --instructions` (needs valgrind; about 4 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser

from bench.common import ROOT, machine, markdown_table, median
from bot.clock import SystemClock
from bot.pipeline.feeds import parse_feed
from bot.pipeline.poller import Poller, PollerConfig
from storage.models import PollOutcome
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


async def ingest(store: Store, feed_id: int, body: bytes) -> PollOutcome:
    """What the poller does with a fetched document: parse it, then dedupe and store."""
    parsed = parse_feed(body, URL, "application/rss+xml")
    return await store.store_poll(
        feed_id, parsed.items, etag='"e"', last_modified=None, now=NOW,
        next_poll_at=NOW + 120, max_age=2 * 86400.0, backfill=0,
    )  # fmt: skip


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
            await ingest(store, feed.id, body)
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


# Cumulative steps: each process under callgrind runs the steps up to and including its own.
STEPS = ("setup", "bare", "first", "seen")


async def run_steps(last: str, items: int, db_path: Path) -> None:
    """Do the steps up to `last` once, untimed (the process that callgrind counts)."""
    body = make_feed(items)
    store = await Store.open(db_path)
    try:
        feed = await store.ensure_feed(URL, "en")
        if last == "bare":
            feedparser.parse(body)
        if last in ("first", "seen"):
            assert len((await ingest(store, feed.id, body)).new_items) == items
        if last == "seen":
            assert (await ingest(store, feed.id, body)).new_items == ()
    finally:
        await store.close()


def count_instructions(last: str, items: int, tmp: Path) -> int:
    """Instructions executed by a process running the steps up to `last` (all its threads)."""
    out = tmp / f"callgrind.{last}.out"
    result = subprocess.run(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, "-m", "bench.ingest_bench", "--step", last,
            "--items", str(items), "--db", str(tmp / f"{last}.sqlite3"),
        ],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every process
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def instructions(items: int) -> int:
    """Count each step in instructions and print the table."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    # Two at a time: the counts do not depend on what else the machine runs.
    with (
        tempfile.TemporaryDirectory(prefix="ingest-instr-") as tmp,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        counts = pool.map(lambda step: count_instructions(step, items, Path(tmp)), STEPS)
        totals = dict(zip(STEPS, counts, strict=True))
    bare = totals["bare"] - totals["setup"]
    first = totals["first"] - totals["setup"]
    seen = totals["seen"] - totals["first"]
    print(f"Machine: {machine()}")
    print()
    print(f"Instructions (callgrind), {items} items:")
    print(
        markdown_table(
            ["step", "instructions", "vs bare feedparser"],
            [
                ["bare `feedparser.parse`", f"{bare / 1e6:,.0f} M", "1.00x"],
                ["first sight: parse + dedupe + store", f"{first / 1e6:,.0f} M",
                 f"{first / bare:.2f}x"],
                ["seen again: parse + dedupe", f"{seen / 1e6:,.0f} M", f"{seen / bare:.2f}x"],
            ],
        )
    )  # fmt: skip
    return 0


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # callgrind's child
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        await run_steps(args.step, args.items, args.db)
        return 0
    if args.instructions:
        return instructions(args.items)
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
