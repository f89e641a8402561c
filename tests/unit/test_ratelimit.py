"""The sliding-window limiter on virtual time: no window ever holds more than its limit."""

from __future__ import annotations

import asyncio

from bot.delivery.ratelimit import (
    Limits,
    RateLimits,
    SlidingWindow,
    counts_as_send,
    is_private_chat,
)
from tests.fakes.clock import ManualClock
from tests.support import max_in_window


def test_window_refuses_the_burst_a_bucket_would_allow() -> None:
    window = SlidingWindow(3, 1.0)
    for t in (0.0, 0.1, 0.2):
        assert window.available_at(t) == t
        window.record(t)
    assert window.available_at(0.3) == 1.0  # the oldest stamp must leave the window first
    assert window.available_at(1.05) == 1.05


def test_chat_kinds_and_counted_methods() -> None:
    assert is_private_chat(5) and is_private_chat("5")
    assert not is_private_chat(-100) and not is_private_chat("@channel")
    assert counts_as_send("sendMessage") and counts_as_send("editMessageText")
    assert not counts_as_send("getUpdates") and not counts_as_send("sendChatAction")


async def test_global_and_per_chat_windows_hold_under_contention() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, Limits(global_per_second=30, group_per_minute=20, margin=0.0))
    stamps: dict[int, list[float]] = {}
    everything: list[float] = []

    async def sender(chat: int, count: int) -> None:
        for _ in range(count):
            await limits.acquire(chat)
            stamps.setdefault(chat, []).append(clock.monotonic())
            everything.append(clock.monotonic())

    tasks = [asyncio.create_task(sender(c, 3)) for c in range(1, 41)]  # 40 private chats
    tasks += [asyncio.create_task(sender(-c, 25)) for c in range(1, 3)]  # 2 channels
    for _ in range(2000):
        if all(t.done() for t in tasks):
            break
        await clock.advance(0.05)
    assert all(t.done() for t in tasks)
    everything.sort()
    assert len(everything) == 40 * 3 + 2 * 25
    assert max_in_window(everything, 1.0) <= 30
    for chat, times in stamps.items():
        if chat > 0:
            assert max_in_window(times, 1.0) <= 1
        else:
            assert max_in_window(times, 60.0) <= 20
            assert max_in_window(times, 1.0) <= 1
    # The channels send one a second; their 21st..25th posts wait for the minute to pass.
    assert 60.0 <= max(everything) <= 70.0


async def test_block_chat_and_block_all() -> None:
    clock = ManualClock()
    limits = RateLimits(clock, Limits(margin=0.0))
    limits.block_chat(7, 5.0)
    assert limits.chat_ready_at(7) == 5.0
    assert limits.chat_ready_at(8) == 0.0
    limits.block_all(2.0)
    assert limits.global_ready_at() == 2.0
    sender = asyncio.create_task(limits.acquire(8))
    await clock.settle()
    assert not sender.done()  # held by the bot-wide block, though chat 8 itself is free
    await clock.advance(2.0)
    assert sender.done()
    assert limits.chat_ready_at(8) > clock.monotonic()  # the send was stamped in its window
