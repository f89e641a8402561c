"""The test server's loop-delay monitor and the stats a benchmark reads from another process."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.fakes.botapi import FakeBotApi
from tests.fakes.loopdelay import LoopMonitor


async def test_a_callback_that_holds_the_loop_shows_as_lateness() -> None:
    monitor = LoopMonitor(0.01)
    monitor.start()
    await asyncio.sleep(0.05)
    # A long callback, as a garbage collection or a descheduled process would hold the loop.
    asyncio.get_running_loop().call_soon(time.sleep, 0.15)
    await asyncio.sleep(0.05)
    await monitor.stop()

    summary = monitor.summary()
    # The ticker was due at most one interval after the stall began, and woke after it ended.
    assert summary["max_ms"] >= 140
    assert summary["samples"] >= 3


def test_the_summary_covers_the_samples_asked_for() -> None:
    monitor = LoopMonitor(0.01)
    monitor.samples = [(1.0, 0.0005), (2.0, 0.001), (3.0, 0.002), (4.0, 0.2)]

    assert monitor.summary(since=1.5, until=3.5) == {
        "interval_ms": 10.0,
        "samples": 2,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "max_ms": 2.0,
    }
    assert monitor.summary()["max_ms"] == 200.0
    assert monitor.summary(since=5.0)["samples"] == 0


async def test_stats_count_sends_and_the_windows_refusals() -> None:
    api = FakeBotApi(private_per_second=1)
    api.loop_monitor = LoopMonitor(0.01)
    async with api, httpx.AsyncClient() as client:
        api.add_chat(42, "private")
        for _ in range(2):  # the second one within the chat's second: 429
            await client.post(
                f"{api.base_url}{api.token}/sendMessage", data={"chat_id": "42", "text": "hi"}
            )
        brief = (await client.get(f"{api.url}/_fake/stats")).json()
        full = (await client.get(f"{api.url}/_fake/stats?since=-inf&detail=1")).json()

    assert brief == {"calls": 2, "sent": 1, "rate_violations": 1}
    assert [(chat, status, paid) for _at, chat, status, paid in full["rate_limited"]] == [
        (42, 200, False),
        (42, 429, False),
    ]
    assert full["loop"]["interval_ms"] == 10.0
    assert len(full["loop_samples"]) == full["loop"]["samples"]
