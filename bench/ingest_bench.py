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

`--backend postgresql` stores into PostgreSQL instead of an SQLite file: the benchmark starts
one throwaway PostgreSQL 15 cluster (tests/pg.py) and gives every run (and every callgrind
child) a fresh database in it. The server does part of the store's work in its own processes,
which neither this process's CPU time nor callgrind's count includes; so the server's CPU
seconds over each step are reported beside them (and, under callgrind, each step's wall time).

Run: `python -m bench.ingest_bench` (7 runs; `--runs N`, `--items N`), and
`python -m bench.ingest_bench --instructions` (needs valgrind; about 4 minutes); either with
`--backend postgresql`.
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
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser

from bench.common import BACKENDS, ROOT, Databases, Target, machine, markdown_table, median
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


ServerCpu = Callable[[], float | None]  # Databases.server_cpu: None on SQLite


def _no_server() -> None:
    return None


async def ingest_once(
    body: bytes, db_path: Target, server_cpu: ServerCpu = _no_server
) -> tuple[float, float, float, list[float]]:
    """Return CPU seconds (this process, the store's thread included) of each step, and the
    database server's CPU seconds over first sight and seen again (none on SQLite)."""
    bare = _timed(lambda: feedparser.parse(body))
    store = await Store.open(db_path)
    server: list[float] = []
    try:
        feed = await store.ensure_feed(URL, "en")
        timings = []
        for _ in range(2):
            _quiet()
            server_before = server_cpu()
            start = time.process_time()
            await ingest(store, feed.id, body)
            timings.append(time.process_time() - start)
            server_after = server_cpu()
            gc.enable()
            if server_before is not None and server_after is not None:
                server.append(server_after - server_before)
    finally:
        await store.close()
    return bare, timings[0], timings[1], server


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


async def not_modified_cpu(
    body: bytes, db_path: Target, polls: int, server_cpu: ServerCpu = _no_server
) -> tuple[float, float | None]:
    """CPU seconds of this process per poll answered 304 (after one full poll), and of the
    database server per poll (None on SQLite)."""
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
            server_before = server_cpu()
            start = time.process_time()
            for _ in range(polls):
                report = await poller.poll_once(feed)
                assert report.status == "not_modified", report
            cpu = (time.process_time() - start) / polls
            server_after = server_cpu()
        await store.close()
        per_poll = None
        if server_before is not None and server_after is not None:
            per_poll = (server_after - server_before) / polls
        return cpu, per_poll
    finally:
        server.kill()
        server.wait()


# Cumulative steps: each process under callgrind runs the steps up to and including its own.
STEPS = ("setup", "bare", "first", "seen")


# What each callgrind child runs after the setup (opening the store, the feed's row); its count
# less the count of the child named beside it is the step's.
RUNS = {"setup": (), "bare": ("bare",), "first": ("first",), "seen": ("first", "seen")}
BASES = {"bare": "setup", "first": "setup", "seen": "first"}
MARK = "mark"


async def run_steps(last: str, items: int, db_path: Target, marked: bool = False) -> None:
    """Do the steps up to `last` once, untimed (the process that callgrind counts).

    `marked` (on PostgreSQL): print MARK just before and just after the last step and wait for
    the parent's answer each time, so that the parent reads the clock and the server's CPU
    around that step alone. Every child does it (the setup around nothing), so its
    instructions cancel out of the differences.
    """
    body = make_feed(items)
    store = await Store.open(db_path)

    def mark() -> None:
        if marked:
            print(MARK, flush=True)
            sys.stdin.readline()

    try:
        feed = await store.ensure_feed(URL, "en")
        steps = RUNS[last]
        if not steps:
            mark()
            mark()
        for index, step in enumerate(steps):
            if index == len(steps) - 1:
                mark()
            if step == "bare":
                feedparser.parse(body)
            elif step == "first":
                assert len((await ingest(store, feed.id, body)).new_items) == items
            else:
                assert (await ingest(store, feed.id, body)).new_items == ()
            if index == len(steps) - 1:
                mark()
    finally:
        await store.close()


@dataclass(frozen=True, slots=True)
class Count:
    """One callgrind child: its instructions; on PostgreSQL also the wall time of its last step
    (under valgrind) and the server's CPU seconds over that step."""

    instructions: int
    wall_s: float = 0.0
    server_cpu_s: float | None = None


def count_instructions(last: str, items: int, tmp: Path, databases: Databases) -> Count:
    """Instructions executed by a process running the steps up to `last` (all its threads).

    Only that process is counted: on PostgreSQL the server's share of the store's work runs
    in the server's own processes, which callgrind never sees (it is not their parent either).
    """
    out = tmp / f"callgrind.{last}.out"
    with databases.fresh(tmp / f"{last}.sqlite3", f"ingest_{last}") as db:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, "-m", "bench.ingest_bench", "--step", last,
            "--items", str(items), "--db", str(db),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every process
        if databases.cluster is not None:
            return _count_marked(
                [*command, "--marked"], env, tmp / f"callgrind.{last}.err", databases
            )
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800, env=env
        )
    return Count(_collected(result.stderr))


def _collected(stderr: str) -> int:
    found = re.search(r"Collected : (\d+)", stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{stderr[-2000:]}")
    return int(found.group(1))


def _count_marked(
    command: list[str], env: dict[str, str], err: Path, databases: Databases
) -> Count:
    """Run a --marked child; at each of its two marks read the clock and the server's CPU."""
    samples: list[tuple[float, float]] = []
    with err.open("w+") as stderr:
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        watchdog = threading.Timer(1800, child.kill)
        watchdog.start()
        try:
            assert child.stdin is not None
            assert child.stdout is not None
            for line in child.stdout:
                if line.strip() == MARK:
                    samples.append((time.monotonic(), databases.server_cpu() or 0.0))
                    child.stdin.write("\n")
                    child.stdin.flush()
            code = child.wait()
        finally:
            watchdog.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr.seek(0)
        text = stderr.read()
    if code != 0 or len(samples) != 2:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{text[-2000:]}")
    (start, server_start), (end, server_end) = samples
    return Count(_collected(text), end - start, server_end - server_start)


def instructions(items: int, databases: Databases) -> int:
    """Count each step in instructions and print the table."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    # Two at a time: the counts do not depend on what else the machine runs. On PostgreSQL one
    # at a time, so that the server's CPU over a child's step is that child's alone.
    workers = 2 if databases.cluster is None else 1
    with (
        tempfile.TemporaryDirectory(prefix="ingest-instr-") as tmp,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        counts = pool.map(lambda step: count_instructions(step, items, Path(tmp), databases), STEPS)
        results = dict(zip(STEPS, counts, strict=True))
    totals = {step: count.instructions for step, count in results.items()}
    bare, first, seen = (totals[step] - totals[BASES[step]] for step in ("bare", "first", "seen"))
    print(f"Machine: {machine()}")
    print(f"Back end: {databases.describe()}")
    print()
    rows = [
        ["bare `feedparser.parse`", f"{bare / 1e6:,.0f} M", "1.00x"],
        ["first sight: parse + dedupe + store", f"{first / 1e6:,.0f} M", f"{first / bare:.2f}x"],
        ["seen again: parse + dedupe", f"{seen / 1e6:,.0f} M", f"{seen / bare:.2f}x"],
    ]
    header = ["step", "instructions", "vs bare feedparser"]
    if databases.cluster is not None:
        print(
            "The instructions are the benchmark process's only: PostgreSQL's server runs in "
            "its own processes, and its work is not in them. Beside them, measured around the "
            "step itself in its own process: the step's wall time (under valgrind, so the "
            "counted process runs many times slower than it would, the server does not) and "
            "the server's CPU seconds meanwhile."
        )
        print()
        header += ["wall (under valgrind)", "PostgreSQL server CPU"]
        for row, step in zip(rows, ("bare", "first", "seen"), strict=True):
            server = results[step].server_cpu_s or 0.0
            row += [f"{results[step].wall_s:.1f} s", f"{server * 1000:.0f} ms"]
    print(f"Instructions (callgrind), {items} items, {databases.label}:")
    print(markdown_table(header, rows))
    return 0


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="sqlite",
        help="store into an SQLite file (default) or a fresh database in a throwaway "
        "PostgreSQL 15 cluster the benchmark starts",
    )
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # callgrind's child
    # callgrind's child: an SQLite path or a postgresql:// URL (a Path would mangle the URL).
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--marked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        await run_steps(args.step, args.items, args.db, args.marked)
        return 0
    with Databases(args.backend) as databases:
        if args.instructions:
            return instructions(args.items, databases)
        return await timed_runs(args, databases)


async def timed_runs(args: argparse.Namespace, databases: Databases) -> int:
    body = make_feed(args.items)
    print(f"feed: {args.items} items, {len(body) / 1e6:.2f} MB")
    bare, first, seen = [], [], []
    server_first, server_seen = [], []
    server_cpu = databases.server_cpu
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        for index in range(args.runs):
            with databases.fresh(Path(tmp) / f"run{index}.sqlite3", "ingest_run") as db:
                b, f, s, server = await ingest_once(body, db, server_cpu)
            bare.append(b)
            first.append(f)
            seen.append(s)
            also = ""
            if server:
                server_first.append(server[0])
                server_seen.append(server[1])
                also = (f"; {databases.label} server CPU: first sight {server[0] * 1000:.0f} ms,"
                        f" seen {server[1] * 1000:.0f} ms")  # fmt: skip
            print(f"run {index + 1}: feedparser {b * 1000:.0f} ms, first sight {f * 1000:.0f} ms, "
                  f"seen {s * 1000:.0f} ms{also}", flush=True)  # fmt: skip
        polls = []
        for name in ("poll", "poll0", "poll1"):
            with databases.fresh(Path(tmp) / f"{name}.sqlite3", "ingest_poll") as db:
                polls.append(await not_modified_cpu(body, db, args.polls, server_cpu))
        cpu = [c for c, _ in polls]
        server_poll = [s for _, s in polls if s is not None]
    print()
    print(f"Machine: {machine()}")
    print(f"Back end: {databases.describe()}")
    print()
    mb, mf, ms = median(bare), median(first), median(seen)
    header = ["step", "time", "vs bare feedparser"]
    rows = [
        ["bare `feedparser.parse`", f"{mb * 1000:.0f} ms", "1.00x"],
        ["first sight: parse + dedupe + store", f"{mf * 1000:.0f} ms", f"{mf / mb:.2f}x"],
        ["seen again: parse + dedupe", f"{ms * 1000:.0f} ms", f"{ms / mb:.2f}x"],
        ["poll answered 304 (CPU)", f"{median(cpu) * 1000:.2f} ms", "-"],
    ]
    if databases.cluster is not None:
        # The times above are this process's CPU only; the server's share runs beside it.
        header.append("PostgreSQL server CPU")
        rows[0].append("-")
        rows[1].append(f"{median(server_first) * 1000:.0f} ms")
        rows[2].append(f"{median(server_seen) * 1000:.0f} ms")
        rows[3].append(f"{median(server_poll) * 1000:.2f} ms")
    print(f"Median of {args.runs} runs, {args.items} items, {databases.label}:")
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
