"""What synchronous=FULL costs for the commits that record sends (issue: durability promise).

A store holds one piece queued for N private chats; the outcomes are recorded through the
store's real `record_outcomes` in batches of B sends (the publisher's group commit: at 30/s a
batch holds one or two sends, at 300/s a handful), once with the commit synchronous=NORMAL (as
before) and once FULL (now). Prints the wall time per commit and per send, and the ratio.

    python -m bench.durability_bench              # 3 runs, 2,000 sends, batches of 1 and 8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from storage import outbox
from storage.models import ChatType, DeliveryState, OutcomeRecord
from storage.store import Store
from tests.factories import new_item

NOW = 1_767_225_600.0


async def _store_with_deliveries(path: Path, chats: int) -> tuple[Store, list[int]]:
    store = await Store.open(path)
    for chat_id in range(1, chats + 1):
        await store.upsert_chat(
            chat_id, ChatType.PRIVATE, title=None, username=None, default_lang="en", now=NOW,
            subscribed=True,
        )  # fmt: skip
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    for entries in ([new_item(0)], [new_item(1)]):  # the backlog, then one new piece
        await store.store_poll(
            feed.id, entries, etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
            max_age=1e9, backfill=0,
        )  # fmt: skip
    heads = await outbox.pending_heads(store)
    return store, [head.delivery_id for head in heads]


async def _run(chats: int, batch: int, durable: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store, ids = await _store_with_deliveries(Path(tmp) / "bench.sqlite3", chats)
        try:
            records = [
                OutcomeRecord(delivery_id, DeliveryState.SENT, NOW, message_id=delivery_id)
                for delivery_id in ids
            ]
            started = time.perf_counter()
            for start in range(0, len(records), batch):
                chunk = records[start : start + batch]
                await store.record_outcomes(chunk, durable=durable)
            return (time.perf_counter() - started) / len(records)
        finally:
            await store.close()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print("| sends per commit | NORMAL ms/send | FULL ms/send | FULL / NORMAL |")
    print("|---:|---:|---:|---:|")
    for batch in (1, 8):
        normal = [await _run(args.chats, batch, durable=False) for _ in range(args.runs)]
        full = [await _run(args.chats, batch, durable=True) for _ in range(args.runs)]
        n, f = statistics.median(normal) * 1000, statistics.median(full) * 1000
        print(f"| {batch} | {n:.3f} | {f:.3f} | {f / n:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
