"""Benchmark 4: peak memory (RSS) of the bot holding 100,000 items and 10,000 chats.

The database is seeded through the store with 100,000 pieces (about 1 KB of text each, stored
as the feed's backlog) and then 10,000 subscribed chats. The real bot (`python -m bot`, its own
process) starts on it and polls the feed; its resident memory is read from /proc:

- idle: after start-up and a few polls, nothing to send;
- fan-out: sampled every 50 ms while one new piece goes out to all 10,000 chats (limits x10),
  and the process's high-water mark (VmHWM) at the end.

With `--languages`, the pieces are instead the search benchmark's generated ones, a third in
each language with a 30,000-word vocabulary per language (bench.search_bench.make_pieces), so
the Russian analyser and its word cache fill as they would on a real archive; and since the
bot indexes stored pieces in the background (SearchIndex.attach), sampling goes on after the
fan-out until the whole archive is indexed: the worst case of an upgrade to a new analysis.

Run: `python -m bench.memory_bench` (3 runs; `--items`, `--chats`, `--runs`, `--languages`).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import (
    FEED_PATH,
    NOW,
    Scale,
    SendCounter,
    bot_env,
    chat_ids,
    feed,
    machine,
    markdown_table,
    median,
    register_chats,
    rss_kib,
    seed_chats,
    servers,
    wait_until,
)
from bench.search_bench import make_pieces
from bot.text import analysis
from storage.models import NewItem
from storage.store import Store
from tests.support import BotProcess

BASE = datetime(2020, 1, 1, tzinfo=UTC)
TEXT = (
    "Energy, trade and security in the South Caucasus, analysed by Caliber's authors: the Middle "
    "Corridor, the Caspian, and what Baku, Ankara and Moscow want from them. "
) * 6


async def seed_languages(db_path: Path, feed_url: str, count: int) -> None:
    """Store `count` generated pieces in three languages as backlog (the first poll posts
    nothing); the English ones under the polled feed, the others under feeds of their own."""
    store = await Store.open(db_path)
    try:
        for lang, entries in make_pieces(count).items():
            url = feed_url if lang == "en" else f"{feed_url}-{lang}"
            feed_row = await store.ensure_feed(url, lang)
            await store.store_poll(
                feed_row.id, entries, etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
                max_age=3650 * 86400.0, backfill=0,
            )  # fmt: skip
        assert await store.count_items() == count
    finally:
        await store.close()


def indexed(db_path: Path) -> bool:
    """Whether the bot has indexed every stored piece (it records its analysis at the end)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT analyzer_version FROM search_state WHERE id = 1").fetchone()
        return row is not None and row[0] == analysis.ANALYZER_VERSION
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


async def seed_items(db_path: Path, feed_url: str, count: int) -> None:
    """Store `count` pieces as the feed's backlog (the first poll posts nothing)."""
    store = await Store.open(db_path)
    try:
        feed_row = await store.ensure_feed(feed_url, "en")
        entries = [
            NewItem(
                identity=f"seed-{n}",
                link=f"https://caliber.az/en/post/seed-{n}",
                title=f"Seeded piece {n} on the corridor",
                summary=f"{n}. {TEXT}",
                published_at=(BASE + timedelta(minutes=n)).timestamp(),
                categories=("Analytics", "Region"),
                content_hash=f"hash-{n}",
            )
            for n in range(count)
        ]
        await store.store_poll(
            feed_row.id, entries, etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
            max_age=3650 * 86400.0, backfill=0,
        )  # fmt: skip
        assert await store.count_items() == count
    finally:
        await store.close()


async def run_once(
    items: int, chats: int, scale: Scale, workdir: Path, languages: bool = False
) -> tuple[int, int, int]:
    """Return (idle RSS, largest RSS sampled in the fan-out, high-water mark) in KiB; with
    `languages`, the largest sample runs on until the archive is indexed."""
    db_path = workdir / "bot.sqlite3"
    targets = chat_ids(chats, channels=min(20, chats // 50), groups=min(200, chats // 10))
    async with servers(scale) as (api, feeds):
        register_chats(api, targets)
        seed = seed_languages if languages else seed_items
        await seed(db_path, feeds.url(FEED_PATH), items)
        await seed_chats(db_path, targets)
        feeds.set(FEED_PATH, feed(1))
        bot = BotProcess(bot_env(api, feeds, db_path, scale), workdir / "bot.log")
        bot.start()
        try:
            await wait_until(lambda: len(feeds.requests_to(FEED_PATH)) >= 3, 60, "first polls")
            idle, _ = rss_kib(bot.pid)
            feeds.set(FEED_PATH, feed(1, 2))
            sent = SendCounter(api)
            deadline = time.monotonic() + 60 + 3 * chats / scale.global_per_second
            largest = idle
            while sent() < chats:
                if time.monotonic() > deadline:
                    raise TimeoutError("fan-out did not finish")
                largest = max(largest, rss_kib(bot.pid)[0])
                await asyncio.sleep(0.05)
            while languages and not indexed(db_path):
                if time.monotonic() > deadline + 1800:
                    raise TimeoutError("indexing did not finish")
                largest = max(largest, rss_kib(bot.pid)[0])
                await asyncio.sleep(0.2)
            _, peak = rss_kib(bot.pid)
        except TimeoutError:
            print(bot.log_tail(), file=sys.stderr)
            raise
        finally:
            await bot.stop()
    return idle, largest, peak


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=10.0, help="send limits x this")
    parser.add_argument(
        "--languages", action="store_true",
        help="generated pieces in en/ru/az, sampled until the background indexing ends",
    )  # fmt: skip
    args = parser.parse_args(argv)
    results = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
            idle, largest, peak = await run_once(
                args.items, args.chats, Scale(args.scale), Path(tmp), args.languages
            )
        results.append((idle, largest, peak))
        print(f"run {index + 1}: idle {idle / 1024:.1f} MiB, fan-out {largest / 1024:.1f} MiB, "
              f"high-water mark {peak / 1024:.1f} MiB", flush=True)  # fmt: skip
    print()
    print(f"Machine: {machine()}")
    print()
    print(f"Median of {args.runs} runs, {args.items:,} items and {args.chats:,} chats:")
    print(
        markdown_table(
            ["idle RSS", "RSS during fan-out (largest sample)", "high-water mark", "target"],
            [
                [
                    f"{median([r[0] for r in results]) / 1024:.1f} MiB",
                    f"{median([r[1] for r in results]) / 1024:.1f} MiB",
                    f"{median([r[2] for r in results]) / 1024:.1f} MiB",
                    "<= 150 MB",
                ]
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
