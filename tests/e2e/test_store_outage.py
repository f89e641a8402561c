"""A send Telegram accepted is never sent again while the process lives: not when the store
refuses the write that records it, not when Telegram's answer cannot be read. Every failed
send spends an attempt; outages (the store's included) spend none."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from bot.delivery.publisher import Outcome
from storage.store import Store
from tests.e2e.test_publisher import PRIVATE, _chats, _piece, engine
from tests.fakes.botapi import ApiCall
from tests.support import wait_for


def delivery_states(db_path: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT chat_id, state, attempts FROM deliveries ORDER BY id")
        return [(int(a), str(b), int(c)) for a, b, c in rows]


async def test_an_accepted_send_whose_answer_cannot_be_read_is_sent_once(db_path: Path) -> None:
    chat = PRIVATE[0]
    async with engine(db_path, chats=_chats(private=[chat])) as e:
        e.api.odd_success("sendMessage")
        await e.publish(1)
        await e.until("answered", lambda: e.publisher.stats[Outcome.SENT] >= 1, within=10)
        await e.settled()
        await e.clock.advance(600)  # the old crash path retried every 60 s, forever
        # A chat's pieces go oldest first: were piece 1 still due, it would go again before 2.
        await e.publish(2)
        await e.until("piece 2 sent", lambda: 2 in pieces(e.sends(chat)), within=60)
        await e.settled()
        assert pieces(e.sends(chat)) == [1, 2]
    assert delivery_states(db_path) == [(chat, "sent", 1), (chat, "sent", 1)]


async def test_a_send_that_keeps_crashing_spends_its_attempts(db_path: Path) -> None:
    chat = PRIVATE[0]
    async with engine(db_path, chats=_chats(private=[chat]), max_attempts=3) as e:

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a rendering bug")

        e.publisher.renderer.post = broken  # type: ignore[method-assign]
        await e.publish(1)
        await e.until(
            "given up", lambda: delivery_states(db_path)[0][1] == "failed", within=400, step=1
        )
    [(_, state, attempts)] = delivery_states(db_path)
    assert (state, attempts) == ("failed", 3)


async def test_a_store_that_refuses_writes_holds_the_outcome_and_sends_nothing_twice(
    db_path: Path,
) -> None:
    """The write lock held elsewhere (a stuck backup, another process): the record of a send
    waits out SQLite's busy timeout and fails. Before, the row stayed due and went again."""
    chats = PRIVATE[:2]
    blocker: list[sqlite3.Connection] = []
    locked_once: list[bool] = []

    async with engine(db_path, chats=_chats(private=chats)) as e:

        async def lock_the_store(call: ApiCall) -> None:
            if not locked_once:
                locked_once.append(True)
                # Off the event loop, which the engine shares: a store transaction open at this
                # moment finishes first instead of failing the lock.
                conn = sqlite3.connect(
                    db_path, isolation_level=None, timeout=10, check_same_thread=False
                )
                await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
                blocker.append(conn)

        e.api.before_success = lock_the_store
        writes = count_writes(e.store)
        await e.publish(1)
        # Real seconds, and only here: the write waits out SQLite's busy timeout (5 s) on the
        # store's thread before it fails; virtual time has no part in that.
        await wait_for(
            "the store refused a write", lambda: not e.publisher.store_writable, within=20
        )
        sent_during = len(e.sends())
        assert e.publisher.outcomes_held >= 1
        # Minutes of virtual time in the outage, the held outcome tried again in them (the
        # writer's backoff is virtual): nothing is sent again, nothing new starts.
        tried, outage_ends = len(writes), e.clock.monotonic() + 300
        await e.until(
            "the outage's minutes",
            lambda: len(writes) > tried and e.clock.monotonic() >= outage_ends,
            within=310,
            step=10,
        )
        assert len(e.sends()) == sent_during
        blocker.pop().rollback()
        await e.until("recorded", lambda: e.publisher.store_writable, within=120, step=0.5)
        # Every row recorded as sent: a row sent again would have been sent before that.
        await e.until(
            "all recorded",
            lambda: [state for _, state, _ in delivery_states(db_path)] == ["sent"] * len(chats),
            within=60,
        )
        await e.settled()
        for chat in chats:
            assert len(e.sends(chat)) == 1
    assert sorted(delivery_states(db_path)) == [(c, "sent", 1) for c in sorted(chats)]


def count_writes(store: Store) -> list[int]:
    """Count the store's outcome writes (one entry per try, whatever it came to)."""
    tries: list[int] = []
    record_outcomes = store.record_outcomes

    async def counted(*args: Any, **kwargs: Any) -> bool:
        tries.append(len(tries) + 1)
        return await record_outcomes(*args, **kwargs)

    store.record_outcomes = counted  # type: ignore[method-assign]
    return tries


def pieces(calls: list[ApiCall]) -> list[int]:
    return [_piece(call) for call in calls]
