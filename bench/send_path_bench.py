"""Benchmark 9's micro-measurement: the CPU of one post's way out, without the outbox.

Posts go from this process to the test Bot API in its own process (bench/api_process.py,
limits raised out of the way) with 100 in flight, and the CPU of this process is divided by
the posts. Three ways:

- `sender`: the bot's own path, `Sender.send_post` through `TelegramRateLimiter` and
  `BotApiRequest` (the keep-alive client for posts), as the publisher calls it;
- `aiohttp`: the same JSON body by a bare `aiohttp.ClientSession.post`, the floor aiohttp gives;
- `keepalive`: the same body by a bare `KeepAliveClient.post_json`.

Run: `python -m bench.send_path_bench` (3,800 timed posts each way, 3 rounds, alternating).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from telegram.ext import ExtBot

from bench.api_process import ApiProcess
from bench.common import TOKEN, machine, markdown_table
from bot.clock import SystemClock
from bot.delivery.keepalive import KeepAliveClient
from bot.delivery.ratelimit import BotApiRequest, Limits, RateLimits, TelegramRateLimiter
from bot.delivery.sender import Sender
from bot.text.render import Post
from storage.models import Chat, ChatType

WAYS = ("sender", "aiohttp", "keepalive")
HTML = (
    '<b><a href="https://caliber.az/en/post/piece-2">Piece 2</a></b>\n<i>1 January</i>\n\n'
    + "A summary of a few sentences, as a post carries it. " * 4
)
WARM_UP = 200
IN_FLIGHT = 100


def _params(chat_id: int) -> dict[str, object]:
    return {
        "chat_id": chat_id,
        "parse_mode": "HTML",
        "disable_notification": False,
        "text": HTML,
        "link_preview_options": {"is_disabled": True},
    }


async def _one_way(way: str, posts: int) -> float:
    """CPU milliseconds of this process a post, `way`, `posts` timed posts."""
    chats = [(10_000_000 + i, ChatType.PRIVATE) for i in range(1, WARM_UP + posts + 1)]
    with tempfile.TemporaryDirectory(prefix="send-path-") as tmp:
        async with ApiProcess(
            chats, Path(tmp), global_per_second=100_000, paid_per_second=100_000,
            private_per_second=100,
        ) as api:  # fmt: skip
            send, close = await _sender(way, api.url)
            try:
                gate = asyncio.Semaphore(IN_FLIGHT)

                async def post(chat_id: int) -> None:
                    async with gate:
                        await send(chat_id)

                await asyncio.gather(*(post(c) for c, _ in chats[:WARM_UP]))
                started = time.process_time()
                await asyncio.gather(*(post(c) for c, _ in chats[WARM_UP:]))
                return 1000 * (time.process_time() - started) / posts
            finally:
                await close()


async def _sender(
    way: str, url: str
) -> tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """A function that posts to one chat the given way, and one that closes what it opened."""
    endpoint = f"{url}/bot{TOKEN}/sendMessage"
    if way == "aiohttp":
        session = aiohttp.ClientSession()

        async def by_aiohttp(chat_id: int) -> None:
            body = json.dumps(_params(chat_id)).encode()
            async with session.post(
                endpoint, data=body, headers={"Content-Type": "application/json"}
            ) as answer:
                assert json.loads(await answer.read())["ok"]

        return by_aiohttp, session.close
    if way == "keepalive":
        client = KeepAliveClient(limit=64, user_agent="bench")

        async def by_keepalive(chat_id: int) -> None:
            body = json.dumps(_params(chat_id)).encode()
            _, answer = await client.post_json(
                endpoint, body, connect_timeout=5, pool_timeout=5, total_timeout=20
            )
            assert json.loads(answer)["ok"]

        return by_keepalive, client.close
    limits = RateLimits(SystemClock(), Limits(global_per_second=100_000, private_per_second=100))
    bot: ExtBot[None] = ExtBot(
        TOKEN, base_url=f"{url}/bot", request=BotApiRequest(),
        rate_limiter=TelegramRateLimiter(limits),
    )  # fmt: skip
    await bot.initialize()
    sender = Sender(bot)
    rendered = Post(html=HTML, text="", link="https://caliber.az/en/post/piece-2",
                    photo_url=None, disable_preview=True)  # fmt: skip

    async def by_sender(chat_id: int) -> None:
        chat = Chat(id=chat_id, type=ChatType.PRIVATE, title=None, username=None, lang="en",
                    languages=("en",), active=True, subscribed=True, paused=False)  # fmt: skip
        result = await sender.send_post(chat, lambda _photo: rendered)
        assert result.outcome.value == "sent", result

    return by_sender, bot.shutdown


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3800, help="timed posts a round and way")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    figures: dict[str, list[float]] = {way: [] for way in WAYS}
    for round_ in range(args.rounds):
        for way in WAYS:
            ms = await _one_way(way, args.posts)
            figures[way].append(ms)
            print(f"round {round_ + 1}: {way}: {ms:.3f} ms of CPU a post", flush=True)
    print()
    print(f"Machine: {machine()}, pid {os.getpid()}")
    rows = [
        [way, f"{min(v):.2f}–{max(v):.2f} ms", f"{sorted(v)[len(v) // 2]:.2f} ms"]
        for way, v in figures.items()
    ]
    print(markdown_table(["way", "CPU a post (range)", "median"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
