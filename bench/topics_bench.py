"""Benchmark: matching new pieces against followed topics, beside the ingest it is part of.

A store holds 10,000 private chats (not subscribed), each following 5 topics drawn from a pool
of 200 distinct topics: 150 single words, each in 5-20 % of the pieces, and 50 pairs of words,
each word in 25-45 % of the pieces (a pair matches about 6-20 %). A feed of 1,000 pieces (each
a title and a 90-word summary of filler text plus the topic words drawn for it) arrives after
the feed's first poll, so every piece is new and may be queued.

Per run, on a fresh store, CPU seconds of this process (the store's thread included; on
PostgreSQL the server's CPU seconds are reported beside):

- ingest: what the poller does with the document when no chat follows a topic: parse it
  (bot.pipeline.feeds.parse_feed), analyse the new entries once (bot.services.search.analyse),
  store them (Store.store_poll) and index them for search from that analysis (index_items);
- matching: what following topics adds to that, on the stored pieces (Topics.matching, as the
  poller calls it): the index's vocabulary (storage.follows.vocabulary; read again only when a
  topic changed, so once here, as in the first poll after a change), the pieces' terms that
  some topic has (from the analysis the index uses anyway), the index's postings of those
  terms (one primary-key probe per distinct term) and each piece's (piece, topic) matches;
- expansion: those matches expanded into (piece, chat) pairs for the chats following the
  topics, which is what queueing them as deliveries starts from;
- whole poll with topics: the same document into a store where the chats follow their
  topics: parse, analyse, match, store and queue a delivery for every pair, index.

The target: matching <= 10 % of ingest. Expansion and queueing cost per (piece, chat) pair,
what queueing any delivery costs (the subscribers' fan-out); they are reported beside it.

Run: `python -m bench.topics_bench` (3 runs; `--runs N`, `--chats N`, `--pieces N`,
`--backend postgresql`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import BACKENDS, Databases, Target, machine, markdown_table, median
from bot.clock import SystemClock
from bot.pipeline.feeds import parse_feed
from bot.services import topics as topic_service
from bot.services.search import analyse, index_items
from bot.services.topics import Topics
from bot.text import analysis
from storage import follows
from storage.models import ChatType, FanOut
from storage.store import Store
from tests.fakes.feedserver import make_rss

URL = "https://caliber.az/en/rss"
NOW = 1_767_225_600.0
BASE = datetime(2026, 1, 1, tzinfo=UTC)
SINGLE_TOPICS, PAIR_TOPICS, TOPICS_PER_CHAT = 150, 50, 5
_FILLER = [
    "energy",
    "trade",
    "and",
    "security",
    "in",
    "the",
    "south",
    "caucasus",
    "analysed",
    "by",
    "the",
    "authors",
    "the",
    "middle",
    "corridor",
    "the",
    "caspian",
    "and",
    "what",
    "the",
    "capitals",
    "want",
    "from",
    "them",
    "while",
    "the",
    "region",
    "waits",
    "for",
    "the",
    "next",
    "round",
    "of",
    "talks",
    "on",
    "transit",
    "routes",
    "and",
    "the",
    "prices",
    "of",
    "everything",
    "that",
    "moves",
    "along",
    "them",
    "as",
    "markets",
    "watch",
    "the",
    "summit",
    "and",
    "its",
    "communique",
    "for",
    "signs",
    "of",
    "a",
    "new",
    "balance",
    "between",
    "powers",
]


def _word(rng: random.Random) -> str:
    """A made-up word no filler word stems like (topic words must be their own terms)."""
    syllables = ("ba", "ko", "ri", "zu", "ne", "ta", "mo", "vi", "sa", "lu", "de", "go")
    return "q" + "".join(rng.choice(syllables) for _ in range(3))


@dataclass(frozen=True, slots=True)
class Workload:
    body: bytes  # the RSS document
    topics: list[str]  # the pool of distinct topics
    chats: list[list[int]]  # per chat: the indexes of its topics in the pool


def workload(pieces: int, chats: int, seed: int = 7) -> Workload:
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < SINGLE_TOPICS + 2 * PAIR_TOPICS:
        word = _word(rng)
        if word not in words:
            words.append(word)
    share = {w: rng.uniform(0.05, 0.20) for w in words[:SINGLE_TOPICS]}
    share |= {w: rng.uniform(0.25, 0.45) for w in words[SINGLE_TOPICS:]}
    pairs = words[SINGLE_TOPICS:]
    pool = words[:SINGLE_TOPICS] + [
        f"{a} {b}" for a, b in zip(pairs[::2], pairs[1::2], strict=True)
    ]
    items = []
    for n in range(pieces):
        chosen = [w for w in words if rng.random() < share[w]]
        summary = rng.sample(_FILLER, 60) + rng.sample(_FILLER, 30) + chosen
        rng.shuffle(summary)
        items.append({
            "title": f"Piece {n}: the corridor, the pipeline and the peace treaty",
            "link": f"https://caliber.az/en/post/{n}",
            "guid": f"https://caliber.az/en/post/{n}",
            "description": f"<p>{' '.join(summary).capitalize()}.</p>",
            "pub_date": BASE - timedelta(minutes=n),
            "categories": ["Analytics", "Region"],
        })  # fmt: skip
    follows_of = [rng.sample(range(len(pool)), TOPICS_PER_CHAT) for _ in range(chats)]
    return Workload(make_rss(items).encode(), pool, follows_of)


async def _store(target: Target, load: Workload, *, with_topics: bool) -> tuple[Store, int]:
    store = await Store.open(target)
    feed = await store.ensure_feed(URL, "en")
    await store.store_poll(
        feed.id, [], etag=None, last_modified=None, now=NOW - 60, next_poll_at=NOW,
        max_age=30 * 86400.0, backfill=0,
    )  # fmt: skip
    async with store.transaction() as conn:
        await conn.executemany(
            "INSERT INTO chats (id, type, lang, languages, active, subscribed, created_at, "
            "updated_at) VALUES (?, ?, 'en', 'en', 1, 0, ?, ?)",
            [(10_000_000 + i, ChatType.PRIVATE.value, NOW, NOW) for i in range(len(load.chats))],
        )
    if with_topics:
        await _follow_all(store, load)
    return store, feed.id


async def _ingest(store: Store, feed_id: int, body: bytes, *, with_topics: bool) -> int:
    """Parse, (terms), store and queue, index: what the poller does; return deliveries queued."""
    parsed = parse_feed(body, URL, "application/rss+xml")
    texts = analyse(parsed.items, "en")  # once, for the index and for topics, as the poller
    topics: dict[str, tuple[int, ...]] = {}
    if with_topics:  # as the poller does (the vocabulary read once: the first poll after a change)
        topics = await Topics(store, SystemClock(), _inline).matching(texts, "en")
    outcome = await store.store_poll(
        feed_id, parsed.items, etag='"e"', last_modified=None, now=NOW, next_poll_at=NOW + 120,
        max_age=30 * 86400.0, backfill=0, fan_out=FanOut(topics=topics),
    )  # fmt: skip
    await index_items(store, outcome.new_items, cpu=_inline, texts=texts)
    return outcome.queued


async def _inline(fn, *args):  # type: ignore[no-untyped-def]
    return fn(*args)  # on this thread, so process CPU counts it the same either way


def _start() -> float:
    gc.collect()
    gc.disable()
    return time.process_time()


def _stop(start: float) -> float:
    elapsed = time.process_time() - start
    gc.enable()
    return elapsed


@dataclass(frozen=True, slots=True)
class Run:
    ingest: float
    matching: float
    hits: int  # (piece, topic) matches
    expansion: float
    pairs: int  # (piece, chat) pairs
    server: tuple[float, float, float]  # PostgreSQL's CPU over each step (0 on SQLite)


async def one_run(load: Workload, dbs: Databases, tmp: Path) -> Run:
    """Ingest with nobody following; then, once the chats follow their topics, the matching
    and the expansion into followers, each alone, on the stored pieces."""

    def server() -> float:
        return dbs.server_cpu() or 0.0

    with dbs.fresh(tmp / "plain.sqlite3") as target:
        store, feed_id = await _store(target, load, with_topics=False)
        try:
            s0, t0 = server(), _start()
            await _ingest(store, feed_id, load.body, with_topics=False)
            ingest, s_ingest = _stop(t0), server() - s0
            await _follow_all(store, load)
            items = await store.latest_items(None, limit=100_000)
            by_identity = {item.identity: item.id for item in items}
            parsed = parse_feed(load.body, URL, "application/rss+xml")
            texts = analyse(parsed.items, "en")  # made for the index anyway: not matching's
            s0, t0 = server(), _start()
            hits = await Topics(store, SystemClock(), _inline).matching(texts, "en")
            matching, s_matching = _stop(t0), server() - s0
            by_item = {by_identity[k]: v for k, v in hits.items()}
            s0, t0 = server(), _start()
            pairs = await store.fetchall(
                f"WITH {follows.followed_sql(store.dialect)} SELECT COUNT(*) FROM followed",
                {"hits": follows.hits_parameter(by_item)},
            )
            expansion, s_expansion = _stop(t0), server() - s0
        finally:
            await store.close()
    count = sum(len(v) for v in hits.values())
    return Run(ingest, matching, count, expansion, int(pairs[0][0]),
               (s_ingest, s_matching, s_expansion))  # fmt: skip


async def _follow_all(store: Store, load: Workload) -> None:
    analysed = [topic_service.topic_terms(text) for text in load.topics]
    for i, picks in enumerate(load.chats):
        for pick in picks:
            topic = analysed[pick]
            assert topic is not None
            await follows.add(
                store, 10_000_000 + i, load.topics[pick], topic, any_lang=False,
                analyzer=analysis.ANALYZER_VERSION, limit=20, now=NOW,
            )  # fmt: skip


async def queue_run(load: Workload, dbs: Databases, tmp: Path) -> tuple[float, float, int]:
    """The whole poll with the chats following: (CPU s, server CPU s, deliveries queued)."""
    with dbs.fresh(tmp / "topics.sqlite3") as target:
        store, feed_id = await _store(target, load, with_topics=True)
        try:
            s0 = dbs.server_cpu() or 0.0
            t0 = _start()
            queued = await _ingest(store, feed_id, load.body, with_topics=True)
            return _stop(t0), (dbs.server_cpu() or 0.0) - s0, queued
        finally:
            await store.close()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--queue-runs",
        type=int,
        default=1,
        help="whole polls with queueing (large: every pair is a delivery)",
    )
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--pieces", type=int, default=1_000)
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    args = parser.parse_args(argv)
    load = workload(args.pieces, args.chats)
    print(machine())
    print(f"{args.chats} chats x {TOPICS_PER_CHAT} topics ({len(load.topics)} distinct), "
          f"{args.pieces} pieces, {args.backend}")  # fmt: skip
    runs: list[Run] = []
    queued: list[tuple[float, float, int]] = []
    with Databases(args.backend) as dbs, tempfile.TemporaryDirectory() as tmp:
        for n in range(args.runs):
            run = await one_run(load, dbs, Path(tmp) / f"r{n}")
            runs.append(run)
            print(f"run {n + 1}: ingest {run.ingest:.3f} s, matching {run.matching:.3f} s "
                  f"({run.matching / run.ingest:.1%}, {run.hits} piece-topic hits), expansion "
                  f"{run.expansion:.3f} s ({run.pairs} pairs), server {run.server}")  # fmt: skip
        for n in range(args.queue_runs):
            queued.append(await queue_run(load, dbs, Path(tmp) / f"q{n}"))
            print(f"queue run {n + 1}: {queued[-1]}")

    def cell(values: list[float], fmt: str = ".3f") -> tuple[str, str]:
        return format(median(values), fmt), f"{min(values):{fmt}}-{max(values):{fmt}}"

    rows = [
        ("ingest: parse, store, index (nobody follows)", *cell([r.ingest for r in runs])),
        ("matching: terms + inverted-index query", *cell([r.matching for r in runs])),
        ("matching / ingest", *cell([r.matching / r.ingest for r in runs], ".1%")),
        ("expansion of the hits into followers", *cell([r.expansion for r in runs])),
    ]
    if queued:
        rows.append(
            ("whole poll with topics (+ queueing every pair)", *cell([q[0] for q in queued]))
        )
    counts = f"{runs[0].hits} hits, {runs[0].pairs} pairs"
    if queued:
        counts += f", {queued[0][2]} queued"
    rows.append(("counts", counts, ""))
    if args.backend == "postgresql":
        rows.append(("server CPU: ingest / matching / expansion",
                     " / ".join(f"{median([r.server[i] for r in runs]):.3f}" for i in range(3)),
                     ""))  # fmt: skip
    print(markdown_table(("step", "CPU s (median)", "range"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
