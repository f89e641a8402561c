"""Benchmark 8: a million subscribers: one piece queued for every chat, the outbox drained, and
retention.

- Seed: N subscribed private chats, generated inside the database by one set-based INSERT, and
  a feed whose backlog is read.
- Enqueue, in a child process of its own (`--enqueue`: its memory is the enqueuing process's):
  `Store.store_poll` of one new piece for every chat, while two small writers each write an
  event row every 50 ms and time it: one through the same store (what the bot's own writes, the
  publisher's outcomes, wait for: its one connection) and one through a second connection (an
  operator's command, another process). Reported: wall time, the process's peak RSS, each
  writer's longest wait, and the outbox's growth per delivery, indexes included (SQLite:
  dbstat over the deliveries table and its indexes, and the file; PostgreSQL:
  pg_total_relation_size).
- A pass's read: what the publisher's store reads cost for one batch (storage.outbox.sweep of
  1,000 rows, then due_heads of 100 of them), on the full outbox and on a nearly drained one;
  beside it the old pass's read of every chat's head (outbox.pending_heads).
- Drain: the real bot (`python -m bot`, its own process) against the fake Bot API on
  127.0.0.1 at `--rate` sends a second (1,000: paid broadcasts' ceiling) and at Telegram's 30,
  sends/s over `--window` seconds once sending has begun: on the full outbox, then, with every
  pending row but the last `--tail` marked sent in SQL (a nearly drained outbox), again; the
  fast drain `--repeat` times at each end, as its rate varies by ±10% from run to run.
- Retention: every row marked sent, then Store.prune_deliveries (by ids); reported: rows, time,
  the bytes given back (SQLite's free pages), and the growth of a second one-piece fan-out to
  every chat, which reuses that space (PostgreSQL: after a VACUUM, as autovacuum would).

Run: `python -m bench.million_bench` (1,000,000 chats, about five minutes; `--chats 100000` for
a quick run, `--backend postgresql`, `--no-drain`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BACKENDS,
    FEED_PATH,
    Databases,
    Scale,
    SendCounter,
    Target,
    bot_env,
    check_exit,
    feed,
    machine,
    markdown_table,
    servers,
    successful_sends,
    wait_until,
)
from bot.pipeline.feeds import parse_feed
from storage import outbox
from storage.db import is_postgresql
from storage.models import CHANNELS_FIRST, FanOut
from storage.store import Store
from tests.support import BotProcess

FIRST_CHAT = 100_000_000  # private chats' ids: positive, as Telegram's users' are
WRITE_EVERY = 0.05  # the small writers' pace (seconds)
# The feed the benchmark stores pieces under. The bot it starts polls a feed of its own (the
# feed server's, read as backlog at its first poll), so it queues nothing more itself.
FEED_URL = "https://caliber.az/en/rss"


# ---------------------------------------------------------------------- the store


async def seed(target: Target, feed_url: str, chats: int) -> None:
    """`chats` subscribed private chats in one set-based statement, and the feed's backlog."""
    store = await Store.open(target)
    try:
        series = (
            "generate_series(1, :count) AS n(x)"
            if store.dialect == "postgresql"
            else "(WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
            "WHERE x < :count) SELECT x FROM n)"
        )
        async with store.transaction() as conn:
            await conn.execute(
                "INSERT INTO chats (id, type, lang, languages, active, subscribed, created_at, "
                f"updated_at) SELECT :first + x, 'private', 'en', 'en', 1, 1, :now, :now "
                f"FROM {series}",
                {"first": FIRST_CHAT, "count": chats, "now": time.time()},
            )
        feed_row = await store.ensure_feed(feed_url, "en")
        await _poll(store, feed_row.id, feed_url, (1,))  # the backlog: seen, not queued
    finally:
        await store.close()


async def _poll(store: Store, feed_id: int, feed_url: str, pieces: tuple[int, ...]) -> int:
    """Store the feed listing `pieces` as the bot's poller would (parsed the same way)."""
    parsed = parse_feed(feed(*pieces).encode(), feed_url, "application/rss+xml")
    # The rows' times are the real clock's: the bot started on the store prunes by it.
    now = time.time()
    outcome = await store.store_poll(
        feed_id, parsed.items, etag=None, last_modified=None, now=now, next_poll_at=now,
        max_age=3650 * 86400.0, backfill=0, fan_out=FanOut(priorities=CHANNELS_FIRST),
    )  # fmt: skip
    return outcome.queued


async def outbox_bytes(store: Store) -> int:
    """The deliveries table's bytes with its indexes."""
    if store.dialect == "postgresql":
        row = await store.fetchone("SELECT pg_total_relation_size('deliveries')")
    else:
        row = await store.fetchone(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = 'deliveries' OR name IN "
            "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries')"
        )
    return int(row[0]) if row is not None and row[0] is not None else 0


async def free_bytes(store: Store) -> int | None:
    """SQLite's free pages, in bytes (None on PostgreSQL, whose free space is the table's)."""
    if store.dialect == "postgresql":
        return None
    pages = await store.fetchone("PRAGMA freelist_count")
    size = await store.fetchone("PRAGMA page_size")
    assert pages is not None
    assert size is not None
    return int(pages[0]) * int(size[0])


def file_bytes(target: Target) -> int | None:
    return None if is_postgresql(target) else os.path.getsize(str(target))


# ---------------------------------------------------------------------- enqueue (child process)


class Writer:
    """Writes an event row every WRITE_EVERY s through `store`, timing each write."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.waits: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await self.store.record_event("bench_write", self.name, time.time())
            self.waits.append(time.perf_counter() - started)
            await asyncio.sleep(WRITE_EVERY)


async def enqueue(target: Target, feed_url: str, pieces: tuple[int, ...]) -> dict[str, Any]:
    """Queue the newest of `pieces` for every chat; return the figures (see the docstring)."""
    store = await Store.open(target)
    other = await Store.open(target)
    try:
        feed_row = await store.get_feed_by_url(feed_url)
        assert feed_row is not None
        before, free_before, file_before = (
            await outbox_bytes(store), await free_bytes(store), file_bytes(target)
        )  # fmt: skip
        rss_before = _rss_kib()
        stop = asyncio.Event()
        writers = [Writer(store, "same connection"), Writer(other, "second connection")]
        tasks = [asyncio.create_task(w.run(stop)) for w in writers]
        await asyncio.sleep(0.5)  # the writers' waits when nothing else writes
        idle = [max(w.waits) for w in writers]
        for writer in writers:
            writer.waits.clear()
        started = time.perf_counter()
        queued = await _poll(store, feed_row.id, feed_url, pieces)
        seconds = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
        figures = {
            "queued": queued,
            "seconds": seconds,
            "rss_before_mib": rss_before / 1024,
            "peak_rss_mib": _peak_rss_kib() / 1024,
            "writes": [len(w.waits) for w in writers],
            "max_wait": [max(w.waits, default=0.0) for w in writers],
            "p99_wait": [_quantile(w.waits, 0.99) for w in writers],
            "idle_max_wait": idle,
            "bytes_per_delivery": (await outbox_bytes(store) - before) / max(queued, 1),
            "free_used_per_delivery": _growth(await free_bytes(store), free_before, queued),
        }
    finally:
        await other.close()
        await store.close()
    # Measured closed: the last connection's close moves the WAL's pages into the file.
    figures["file_per_delivery"] = _growth(file_before, file_bytes(target), queued)
    return figures


def _growth(before: int | None, after: int | None, rows: int) -> float | None:
    return None if before is None or after is None else (after - before) / max(rows, 1)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _rss_kib() -> int:
    return _status("VmRSS")


def _peak_rss_kib() -> int:
    return _status("VmHWM")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def enqueue_in_child(
    target: Target, feed_url: str, pieces: tuple[int, ...]
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.million_bench", "--enqueue", str(target), feed_url,
        ",".join(map(str, pieces)), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the enqueuing process exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- a pass's read


async def pass_read(target: Target, *, old: bool) -> tuple[float, float | None]:
    """(ms for one batch of the sweep: 1,000 rows read, 100 loaded; ms for the old pass's
    read of every chat's head, when `old`), medians of 5 and of 1."""
    store = await Store.open(target)
    try:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            rows = await outbox.sweep(store, None, time.time(), 1000)
            await outbox.due_heads(store, [row.id for row in rows[:100]], time.time())
            times.append((time.perf_counter() - started) * 1000)
        heads = None
        if old:
            started = time.perf_counter()
            await outbox.pending_heads(store, time.time())
            heads = (time.perf_counter() - started) * 1000
        return statistics.median(times), heads
    finally:
        await store.close()


async def mark_sent(target: Target, *, keep: int) -> int:
    """Mark every pending row sent but the last `keep` (a nearly drained outbox); return how
    many are left pending."""
    store = await Store.open(target)
    try:
        async with store.transaction() as conn:
            await conn.execute(
                "UPDATE deliveries SET state = 'sent', sent_at = ?, message_id = 1 "
                "WHERE state = 'pending' AND id < (SELECT MIN(id) FROM (SELECT id FROM "
                "deliveries WHERE state = 'pending' ORDER BY id DESC LIMIT ?) t)",
                (time.time(), keep),
            )
        depth = await store.outbox_depth(time.time())
        return depth.pending
    finally:
        await store.close()


# ---------------------------------------------------------------------- the drain


@dataclass(frozen=True, slots=True)
class Drain:
    limit: int
    pending: int  # at the start of the run
    rate: float  # sends/s over the window
    sent: int


async def drain(target: Target, workdir: Path, limit: int, window: float, warmup: float) -> Drain:
    """Start the bot at `limit` sends/s on the outbox as it is, measure, stop it."""
    store = await Store.open(target)
    pending = (await store.outbox_depth(time.time())).pending
    await store.close()
    scale = Scale(limit / 30)
    async with servers(scale) as (api, feeds):
        feeds.set(FEED_PATH, feed(1, 2, 3))
        env = bot_env(api, feeds, target, scale, POLL_INTERVAL="30")
        bot = BotProcess(env, workdir / f"bot-{limit}.log")
        bot.start()
        counter = SendCounter(api)
        try:
            await wait_until(lambda: counter() > 0, 120, "the first send", interval=0.1)
            await asyncio.sleep(warmup)
            start_count, start_at = counter(), time.monotonic()
            await asyncio.sleep(window)
            sends = [c.at for c in successful_sends(api)]
            elapsed = time.monotonic() - start_at
            rate = (counter() - start_count) / elapsed
        except TimeoutError:
            print(bot.log_tail(), file=sys.stderr)
            raise
        finally:
            code = await bot.stop()
        check_exit(bot, code)
    return Drain(limit, pending, rate, len(sends))


# ---------------------------------------------------------------------- main


async def run(args: argparse.Namespace, databases: Databases, workdir: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    target = databases.new(workdir / "bot.sqlite3", "million")
    try:
        started = time.perf_counter()
        await seed(target, FEED_URL, args.chats)
        print(f"seeded {args.chats:,} chats in {time.perf_counter() - started:.1f} s", flush=True)

        first = await enqueue_in_child(target, FEED_URL, (1, 2))
        print(f"enqueue: {json.dumps(first)}", flush=True)
        full_sweep, full_heads = await pass_read(target, old=args.old_pass)
        rows.append(["queue one piece for every chat", f"{first['seconds']:.2f} s", "≤ 10 s"])
        rows.append(["peak RSS of the enqueuing process",
                     f"{first['peak_rss_mib']:.0f} MiB (before: {first['rss_before_mib']:.0f})",
                     "≤ 150 MB"])  # fmt: skip
        rows.append(["longest wait of a write meanwhile (same connection / second)",
                     f"{first['max_wait'][0] * 1000:.0f} / {first['max_wait'][1] * 1000:.0f} ms "
                     f"(p99 {first['p99_wait'][0] * 1000:.0f} / "
                     f"{first['p99_wait'][1] * 1000:.0f} ms; idle "
                     f"{first['idle_max_wait'][0] * 1000:.0f} / "
                     f"{first['idle_max_wait'][1] * 1000:.0f} ms)", "≤ 1 s"])  # fmt: skip
        per = f"{first['bytes_per_delivery']:.0f} B"
        if first["file_per_delivery"] is not None:
            per += f" (file: {first['file_per_delivery']:.0f} B)"
        rows.append(["outbox bytes per delivery, indexes included", per, "≤ 200 B"])
        heads = f"; old pass (every chat's head): {full_heads:.0f} ms" if full_heads else ""
        rows.append([f"a pass's store reads, {first['queued']:,} pending",
                     f"{full_sweep:.1f} ms{heads}", "flat"])  # fmt: skip

        # The fast drain is bound by the CPUs, and a run's rate varies by ±10% from the next
        # whatever the outbox: it runs `--repeat` times at each end.
        limits = [args.rate] * args.repeat + [30]
        starts: list[Drain] = []
        if args.drain:
            for limit in limits:
                starts.append(await drain(target, workdir, limit, args.window, args.warmup))
                print(f"drain: {starts[-1]}", flush=True)
        left = await mark_sent(target, keep=args.tail)
        tail_sweep, tail_heads = await pass_read(target, old=args.old_pass)
        heads = f"; old pass: {tail_heads:.0f} ms" if tail_heads else ""
        rows.append([f"a pass's store reads, {left:,} pending", f"{tail_sweep:.1f} ms{heads}",
                     "flat"])  # fmt: skip
        if args.drain:
            ends: list[Drain] = []
            for limit in reversed(limits):  # 30/s first: the fast drains may leave no tail
                ends.append(await drain(target, workdir, limit, args.window, args.warmup))
                print(f"drain: {ends[-1]}", flush=True)
            for limit in (args.rate, 30):
                start = [d for d in starts if d.limit == limit]
                end = [d for d in ends if d.limit == limit]
                runs = ""
                if len(start) > 1:
                    runs = (f" (runs: {', '.join(f'{d.rate:.0f}' for d in start)} → "
                            f"{', '.join(f'{d.rate:.0f}' for d in end)})")  # fmt: skip
                rows.append([f"sends/s at {limit}/s: full outbox ({start[0].pending:,}) → "
                             f"nearly drained ({end[0].pending:,})",
                             f"{statistics.median(d.rate for d in start):.1f} → "
                             f"{statistics.median(d.rate for d in end):.1f}{runs}",
                             "flat"])  # fmt: skip

        rows += await retention(target)
    finally:
        databases.drop(target)
    return rows


async def retention(target: Target) -> list[list[str]]:
    """Mark everything sent, prune it, queue a second piece for every chat: the figures."""
    store = await Store.open(target)
    try:
        async with store.transaction() as conn:
            await conn.execute(
                "UPDATE deliveries SET state = 'sent', sent_at = ?, message_id = 1 "
                "WHERE state = 'pending'",
                (time.time(),),
            )
    finally:
        await store.close()
    size_before = await store_bytes(target)
    store = await Store.open(target)
    try:
        used_before = await outbox_bytes(store)
        started = time.perf_counter()
        pruned = await store.prune_deliveries(time.time())
        seconds = time.perf_counter() - started
        if store.dialect == "postgresql":
            async with store.reading() as conn:
                await conn.execute("VACUUM deliveries")  # what autovacuum does after a prune
        used_after = await outbox_bytes(store)
    finally:
        await store.close()
    second = await enqueue_in_child(target, FEED_URL, (1, 2, 3))
    print(f"after retention: {json.dumps(second)}", flush=True)
    grown = (await store_bytes(target) - size_before) / max(second["queued"], 1)
    return [
        [f"retention: {pruned:,} rows pruned",
         f"{seconds:.1f} s; the outbox's pages in use {used_before / 2**20:.0f} → "
         f"{used_after / 2**20:.0f} MiB", "gives it back"],
        ["the next piece for every chat, after retention",
         f"{second['seconds']:.2f} s; the store grew {grown:.1f} B a delivery beyond its size "
         "before pruning", "≈ 0: reused"],
    ]  # fmt: skip


async def store_bytes(target: Target) -> int:
    """The store's size: the SQLite file (closed: no page waits in the WAL), or PostgreSQL's
    deliveries table with its indexes."""
    size = file_bytes(target)
    if size is not None:
        return size
    store = await Store.open(target)
    try:
        return await outbox_bytes(store)
    finally:
        await store.close()


async def main(argv: list[str]) -> int:
    if argv[:1] == ["--enqueue"]:
        target, feed_url, pieces = argv[1], argv[2], tuple(int(p) for p in argv[3].split(","))
        print(json.dumps(await enqueue(target if is_postgresql(target) else Path(target),
                                       feed_url, pieces)))  # fmt: skip
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000, help="the fast drain's sends/s")
    parser.add_argument("--window", type=float, default=15.0, help="seconds each drain counts")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before counting")
    parser.add_argument("--tail", type=int, default=50_000, help="rows left for the end")
    parser.add_argument("--repeat", type=int, default=2, help="fast drains at each end")
    parser.add_argument("--no-drain", dest="drain", action="store_false")
    parser.add_argument(
        "--no-old-pass",
        dest="old_pass",
        action="store_false",
        help="skip timing the old pass's read (seconds at a million rows)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    args = parser.parse_args(argv)
    with (
        Databases(args.backend) as databases,
        tempfile.TemporaryDirectory(prefix="million-bench-") as tmp,
    ):
        rows = await run(args, databases, Path(tmp))
        backend = databases.describe()
    print()
    print(f"Machine: {machine()}")
    print(f"Back end: {backend}")
    print()
    print(f"{args.chats:,} subscribed chats, one new piece:")
    print(markdown_table(["what", "measured", "target"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
