"""Benchmark 3: latency from a piece appearing in the feed to its first send.

The real bot (`python -m bot`, its own process) polls a local feed every POLL_INTERVAL seconds
(no jitter) and has N subscribers. At a random moment a new piece is added to the feed; the
latency is the time from that moment to the fake Bot API receiving the piece's first message.
It is at most one poll interval (the wait for the next poll) plus the bot's own work: fetch,
parse, dedupe, store the item and queue a delivery for every subscriber, then send. Each piece's
fan-out finishes before the next piece appears.

Run: `python -m bench.latency_bench` (POLL_INTERVAL 5 s, 2,000 chats, 5 pieces per run, 3 runs).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    FEED_PATH,
    Scale,
    SendCounter,
    bot_env,
    chat_ids,
    feed,
    machine,
    markdown_table,
    median,
    register_chats,
    seed_chats,
    servers,
    wait_until,
)
from tests.fakes.botapi import MESSAGE_METHODS, FakeBotApi
from tests.support import BotProcess


def _first_send_of(api: FakeBotApi, number: int) -> float | None:
    marker = re.compile(rf"\bPiece {number}:")
    for call in api.calls:
        if call.ok and call.method in MESSAGE_METHODS and marker.search(call.text or ""):
            return call.at
    return None


async def run_once(
    chats: int, interval: float, pieces: int, scale: Scale, workdir: Path, rng: random.Random
) -> list[tuple[float, float]]:
    """Return (latency, the bot's own share: from the poll that found the piece) per piece."""
    db_path = workdir / "bot.sqlite3"
    targets = chat_ids(chats, channels=min(20, chats // 50), groups=min(200, chats // 10))
    await seed_chats(db_path, targets)
    latencies: list[tuple[float, float]] = []
    async with servers(scale) as (api, feeds):
        register_chats(api, targets)
        feeds.set(FEED_PATH, feed(1))
        env = bot_env(api, feeds, db_path, scale, POLL_INTERVAL=f"{interval:g}")
        bot = BotProcess(env, workdir / "bot.log")
        bot.start()
        try:
            await wait_until(lambda: len(feeds.requests_to(FEED_PATH)) >= 2, 60, "first polls")
            sent = SendCounter(api)
            for number in range(2, 2 + pieces):
                # A random moment between two polls.
                await asyncio.sleep(rng.uniform(0, interval))
                feeds.set(FEED_PATH, feed(*range(1, number + 1)))
                published = time.monotonic()
                goal = chats * (number - 1)
                await wait_until(lambda g=goal: sent() >= g, 60 + 3 * chats / 300, "fan-out")
                first = _first_send_of(api, number)
                assert first is not None
                poll = min(r.time for r in feeds.requests_to(FEED_PATH) if r.time >= published)
                latencies.append((first - published, first - poll))
                print(
                    f"  piece {number}: first send {first - published:.2f} s after it "
                    f"appeared, {first - poll:.2f} s after the poll that found it",
                    flush=True,
                )
        except TimeoutError:
            print(bot.log_tail(), file=sys.stderr)
            raise
        finally:
            await bot.stop()
    return latencies


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5.0, help="POLL_INTERVAL, seconds")
    parser.add_argument("--pieces", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=10.0, help="send limits x this")
    args = parser.parse_args(argv)
    rng = random.Random(5)
    latencies: list[tuple[float, float]] = []
    for index in range(args.runs):
        print(f"run {index + 1}:", flush=True)
        with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp:
            latencies += await run_once(
                args.chats, args.interval, args.pieces, Scale(args.scale), Path(tmp), rng
            )
    print()
    print(f"Machine: {machine()}")
    print()
    print(f"{len(latencies)} pieces over {args.runs} runs, {args.chats:,} subscribers:")
    total = [t for t, _ in latencies]
    own = [o for _, o in latencies]
    print(
        markdown_table(
            ["POLL_INTERVAL", "appeared → first send: median", "worst",
             "poll → first send: median", "worst", "target"],
            [
                [
                    f"{args.interval:g} s",
                    f"{median(total):.2f} s",
                    f"{max(total):.2f} s",
                    f"{median(own):.2f} s",
                    f"{max(own):.2f} s",
                    f"<= {args.interval + 1:g} s",
                ]
            ],
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
