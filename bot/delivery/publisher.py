"""The delivery engine: takes due rows from the outbox, sends them within the rate limits, and
records each outcome after Telegram has answered. Rows are posts, edits of sent posts (the
site changed the piece) and notices to admins (storage/outbox.py); all of them go out through
bot/delivery/sender.py, which also says what Telegram's answer means.

Scheduling: the engine sweeps the pending rows in dispatch order (channels first, then groups,
then private chats; within a class notices, then the oldest piece first), a bounded batch per
pass continuing after the last row read (storage.outbox.sweep), so a send costs the same
whether a million rows wait or a hundred. It dispatches the rows that are their chat's head
(checked in the store as they are loaded) and whose chat is free and whose chat windows allow
a send now. A chat that must wait (its own window, a retry_after, a backoff) is skipped for the
rest of the sweep, so one slow or failing chat never holds up the others and none of its later
rows goes before its head. The sweep starts again from the top when new rows are queued, when
it ends, and (at most once a second) when a row it skipped is ready, or every _MAX_IDLE at the
latest. A held chat's posts (a digest, quiet hours) met by the sweep are parked out of its
range until the hold ends (storage.outbox.park), so a long hold is not read on every sweep.

Flow control: at most `concurrency` sends are in flight (HTTP under way, or answered but not
yet recorded), and at most `lookahead` of them are still queued in the limiter waiting for a
slot of the global window, so the pipe stays full while the order stays the pass's order.

Crash safety: a row stays pending until Telegram's answer is recorded (in batches, one
transaction for all the sends that finished meanwhile), and a send keeps its in-flight slot
until then; so a crash repeats at most the sends that were in flight, never loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from bot.backoff import backoff
from bot.clock import Clock, unless_stopped
from bot.delivery.ratelimit import RateLimits
from bot.delivery.sender import Outcome, Sender, SendResult
from bot.leadership import Deposed, Leadership
from bot.text.render import Post, Renderer
from storage import outbox
from storage.models import (
    Chat,
    ChatSettings,
    DeliveryState,
    DueDelivery,
    Item,
    OutcomeRecord,
    PostStyle,
)
from storage.outbox import Due, DueMessage, Kind
from storage.store import Store

__all__ = ["Outcome", "Publisher", "SendResult"]

log = logging.getLogger(__name__)

# Rows loaded per store round trip while dispatching a pass.
_LOAD_CHUNK = 100
# The longest the engine sleeps without reading the queues again, and the longest a sweep
# runs before it starts again from the top (bringing back what it passed: chats whose hold
# ended, rows queued behind it that nobody announced).
_MAX_IDLE = 30.0
# A sweep starts again for a row it skipped that is ready now (a retry, a chat's window) at
# most this often (seconds): each start reads again the rows still waiting at the top.
_RESTART_MIN = 1.0
# Chats a sweep remembers as waiting (their later rows are skipped without asking the store);
# beyond it the store's check of each chat's head still keeps the order.
_WAITING_MAX = 20_000
# How long the first finished send waits for others to share its commit (real seconds); above
# _FAST_RATE sends a second, longer: at 1,000/s a commit every 5 ms cost a tenth of a send's
# CPU, while one every 20 ms takes ~20 sends at once.
_RECORD_DELAY = 0.005
_FAST_RATE = 200
_RECORD_DELAY_FAST = 0.02
# Waits between tries of an outcome write the store refused.
_STORE_RETRY_MIN = 0.5
_STORE_RETRY_MAX = 30.0
# Rendered posts kept: a fan-out renders a piece once per post style (Renderer.post_style) and
# language, not per chat.
_POST_CACHE = 256


UNREACHABLE_BACKOFF_MAX = 300.0  # longest wait between tries while Telegram is unreachable


# Called when a chat refuses the bot (403, or a 400 that means no rights); issue-specific
# behaviour (pausing a channel and telling its admins) plugs in here.
ChatProblemHook = Callable[[Chat, str], Awaitable[None]]


class _Send:
    """One dispatched delivery: its chat, its task, and whether it has left the limiter."""

    __slots__ = ("chat_id", "more", "stamped", "task")

    def __init__(self, chat_id: int, more: bool) -> None:
        self.chat_id = chat_id
        self.more = more  # the chat has further pending pieces behind this one
        self.stamped = False
        self.task: asyncio.Task[None] | None = None


class _Sweep:
    """One walk of the pending rows in dispatch order (see Publisher._pass)."""

    __slots__ = ("after", "dispatched", "in_flight", "ready_at", "started", "waiting")

    def __init__(self, started: float) -> None:
        self.started = started  # monotonic
        self.after: outbox.Pending | None = None  # the last row read
        self.dispatched = 0
        # Chats whose head this sweep skipped: their later rows wait too.
        self.waiting: set[int] = set()
        self.ready_at = math.inf  # when the earliest skipped row (behind the sweep) is ready
        self.in_flight = False  # a row was skipped because its chat had a send under way

    def wait(self, chat_id: int, ready_at: float = math.inf) -> None:
        """Skip the chat for the rest of the sweep; its head is ready at `ready_at`."""
        if len(self.waiting) < _WAITING_MAX:
            self.waiting.add(chat_id)
        self.ready_at = min(self.ready_at, ready_at)


class _OutcomeWriter:
    """Writes delivery outcomes in batches, and keeps them until the store takes them.

    Whatever finished while one write ran goes into the next (group commit). A caller's await
    returns once its record is committed, so the in-flight slot it holds until then bounds what
    a crash can repeat. A write the store refuses (disk full, database locked, I/O error) is
    not dropped: the records stay in memory, in order, and the write is tried again with
    backoff for as long as it takes, while `down` tells the publisher to start nothing new.
    So while the process lives, a send Telegram accepted is never sent again; only a kill
    during an outage can lose what was still held, and then only those sends can repeat.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        on_down: Callable[[], None],
        fence: Leadership | None = None,
        on_deposed: Callable[[], None] | None = None,
        delay: float = _RECORD_DELAY,
    ) -> None:
        self.store = store
        self.clock = clock
        self.delay = delay
        self.on_down = on_down
        self.fence = fence
        self.on_deposed = on_deposed
        self.down = False
        self.up = asyncio.Event()
        self.up.set()
        self._queue: list[tuple[OutcomeRecord, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """Records not written yet."""
        return len(self._queue)

    async def record(self, record: OutcomeRecord) -> None:
        """Queue `record` for the next commit and wait until it is committed."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((record, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="record-outcomes")
        # The commit is the writer task's, one for everybody: a caller cancelled at shutdown
        # cancels only its own future (which the writer then leaves alone), never the commit.
        await done

    async def _write(self) -> None:
        try:
            # Let the sends finishing about now join this transaction: fewer, larger commits.
            await asyncio.sleep(self.delay)
            tries = 0
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    leader = (
                        (self.fence.holder, self.fence.epoch)
                        if self.fence is not None and self.fence.epoch is not None
                        else None
                    )
                    held = await self.store.record_outcomes(
                        [record for record, _ in batch], leader=leader
                    )
                    if not held and self.on_deposed is not None:
                        self.on_deposed()
                except Exception as exc:
                    self._queue[:0] = batch  # kept, in order, ahead of anything newer
                    self._went_down(exc)
                    await self.clock.sleep(backoff(tries, _STORE_RETRY_MIN, _STORE_RETRY_MAX))
                    tries += 1
                    continue
                tries = 0
                self._came_up(len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._writer = None

    def _went_down(self, exc: Exception) -> None:
        if not self.down:
            self.down = True
            self.up.clear()
            log.error(
                "the store cannot be written (%s: %s): %d outcome(s) held in memory and retried; "
                "nothing new is sent until the store takes writes again",
                type(exc).__name__, exc, len(self._queue),
            )  # fmt: skip
            self.on_down()

    def _came_up(self, written: int) -> None:
        if self.down:
            self.down = False
            self.up.set()
            log.warning("the store takes writes again: %d held outcome(s) recorded; sending "
                        "resumes", written)  # fmt: skip

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` s for every record to be written; return how many were not."""
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), timeout)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        left = self._queue
        sent = sum(1 for record, _ in left if record.state is DeliveryState.SENT)
        if left:
            log.error(
                "stopping with %d outcome(s) the store would not take (%d of them sends): "
                "those pieces may be sent again at the next start", len(left), sent,
            )  # fmt: skip
        for _, done in left:
            if not done.done():
                done.cancel()
        self._queue = []
        return len(left)


class Publisher:
    """Sends the outbox. Start `run()` as a task; `wake()` when new rows are queued."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        renderer: Renderer,
        limits: RateLimits,
        clock: Clock,
        *,
        concurrency: int = 32,
        max_attempts: int = 6,
        batch_size: int = 1000,
        lookahead: int | None = None,
        rng: random.Random | None = None,
        on_chat_problem: ChatProblemHook | None = None,
        fence: Leadership | None = None,
    ) -> None:
        self.store = store
        # Several instances: only the lease holder sends, and checks it still is (bot.leadership).
        self.fence = fence
        self.sender = sender
        self.renderer = renderer
        self.limits = limits
        self.clock = clock
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        # Enough sends queued in the limiter to cover ~100 ms of the global rate (the store
        # round trips of the dispatcher loading a batch: at 1,000/s, 50 ms left gaps and
        # 0.85-0.90 of the rate), few enough that a new channel piece is not kept waiting
        # behind a long queue of private chats.
        rate = limits.limits.global_per_second
        self.lookahead = lookahead or max(4, min(concurrency, math.ceil(rate * 0.1)))
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._unreachable_streak = 0  # failed sends in a row with no answer from Telegram
        self.on_chat_problem = on_chat_problem
        # Told each delivery's outcome (health and metrics); a retry that spent the last
        # attempt is reported as FAILED. Set by the composition root.
        self.on_outcome: Callable[[Chat, Outcome], None] | None = None
        # Told of each send Telegram accepted as a paid broadcast (metrics, the day's count).
        self.on_paid: Callable[[], None] | None = None
        self.stats = dict.fromkeys(Outcome, 0)
        self._writer = _OutcomeWriter(
            store, clock, on_down=self._hold_back, fence=fence, on_deposed=self.halt,
            delay=_RECORD_DELAY if rate <= _FAST_RATE else _RECORD_DELAY_FAST,
        )  # fmt: skip
        self._sends: dict[int, _Send] = {}  # by chat id: one send per chat at a time
        self._unstamped = 0
        self._new_work = asyncio.Event()
        self._capacity = asyncio.Event()
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._freed_ready_at = math.inf
        self._posts: OrderedDict[tuple[Item, tuple[object, ...], bool], Post] = OrderedDict()

    def wake(self) -> None:
        """Tell the engine the outbox has new rows."""
        self._new_work.set()

    @property
    def in_flight(self) -> int:
        return len(self._sends)

    @property
    def store_writable(self) -> bool:
        """False while the store refuses the outcome writes (nothing new is sent meanwhile)."""
        return not self._writer.down

    @property
    def outcomes_held(self) -> int:
        """Outcomes known in memory but not yet written to the store."""
        return self._writer.held

    # ------------------------------------------------------------------ scheduling

    async def run(self) -> None:
        """Send due deliveries until stop() is called."""
        while not self._stopping.is_set():
            if self._writer.down:
                # The store refuses writes: start nothing new until it takes them again.
                await unless_stopped(self._writer.up.wait(), self._stopping)
                continue
            try:
                look_again = await self._pass()
            except Exception:
                log.exception("publisher pass failed; retrying shortly")
                look_again = self.clock.monotonic() + 5.0
            if look_again is not None and not self._stopping.is_set():
                await self._idle(look_again)

    # The sweep under way (None: the next pass starts one).
    _sweep: _Sweep | None = None

    async def _pass(self) -> float | None:
        """Dispatch what can go now of the sweep's next batch of rows; return when to look again
        (None: at once)."""
        if self.fence is not None and not await self.fence.confirm():
            if self.fence.deposed.is_set():
                self.halt()
                return None
            # The lease is not trusted now: claim nothing, and wait here, since _idle returns at
            # once while a freed chat or new work is pending, and confirm() may not yield.
            await unless_stopped(self.clock.sleep(1.0), self._stopping)
            return None
        sweep = await self._sweep_from_here()
        wall, now = self.clock.now(), self.clock.monotonic()
        rows = await outbox.sweep(self.store, sweep.after, wall, self.batch_size)
        ready: list[outbox.Pending] = []
        picked: set[int] = set()  # one row per chat a batch: the next waits for its send
        held: list[int] = []
        for row in rows:
            chat_id = row.chat_id
            if chat_id in sweep.waiting or chat_id in picked:
                continue  # its head waits, or goes now: the rest of its queue waits
            if row.held:
                if chat_id not in self._sends:
                    held.append(chat_id)
                continue
            if chat_id in self._sends:
                sweep.wait(chat_id)  # one send per chat at a time; its end frees the chat
                sweep.in_flight = True
            elif row.next_attempt_at > wall:
                sweep.wait(chat_id, now + row.next_attempt_at - wall)
            elif (chat_ready := self.limits.chat_ready_at(chat_id, now)) > now:
                sweep.wait(chat_id, chat_ready)
            else:
                ready.append(row)
                picked.add(chat_id)
        if held:
            await self._park(held, wall)
        for start in range(0, len(ready), _LOAD_CHUNK):
            chunk = [row.id for row in ready[start : start + _LOAD_CHUNK]]
            # Rows answered since the sweep read them drop out here (sent, or backing off), and
            # so does a row that is not its chat's head (the head waits, or a notice came first).
            for due, more in await outbox.due_heads(self.store, chunk, self.clock.now()):
                if not await self._wait_capacity():
                    return None
                if (
                    self._new_work.is_set()
                    or self._writer.down
                    or (self.fence is not None and not self.fence.valid())
                ):
                    # Newer rows may come first, or the store is down, or the lease must be
                    # confirmed before claiming more: the next pass sweeps from the top again.
                    self._sweep = None
                    return None
                chat_ready = self.limits.chat_ready_at(due.chat.id)
                if chat_ready > self.clock.monotonic():
                    # A handler's reply took the chat's window meanwhile.
                    sweep.wait(due.chat.id, chat_ready)
                    continue
                self._dispatch(due, more)
                sweep.dispatched += 1
        if len(rows) == self.batch_size:
            sweep.after = rows[-1]
            return None  # the sweep goes on
        # The sweep has ended: the next pass starts another, at once if this one sent anything
        # (the chats it sent to may have more), else when a row it skipped is ready.
        self._sweep = None
        if sweep.dispatched or sweep.ready_at <= self.clock.monotonic():
            return None
        return sweep.ready_at

    async def _sweep_from_here(self) -> _Sweep:
        """The sweep to go on with, or a new one from the top: when rows were queued (they may
        go first), when one that was skipped is ready (at most every _RESTART_MIN), and after
        _MAX_IDLE at the latest. A new sweep first brings back the parked posts of chats whose
        hold has ended."""
        sweep, now = self._sweep, self.clock.monotonic()
        if sweep is not None and not self._new_work.is_set():
            age = now - sweep.started
            freed = self._freed_ready_at if sweep.in_flight else math.inf
            if age < _MAX_IDLE and (age < _RESTART_MIN or min(sweep.ready_at, freed) > now):
                return sweep
        self._new_work.clear()
        self._freed_ready_at = math.inf
        try:
            await outbox.unpark(self.store, self.clock.now())
        except Exception as exc:  # the posts stay parked until a later sweep can move them
            log.warning("could not bring back the posts of chats whose hold ended: %s", exc)
        self._sweep = _Sweep(now)
        return self._sweep

    async def _park(self, chat_ids: Sequence[int], now: float) -> None:
        """Set the held chats' posts aside (they would be read again on every sweep)."""
        try:
            await outbox.park(self.store, sorted(set(chat_ids)), now)
        except Exception as exc:  # they stay where they are: read again, still not sent
            log.warning("could not park the posts of %d held chat(s): %s", len(chat_ids), exc)

    async def _wait_capacity(self) -> bool:
        """Wait for a free in-flight slot and room in the limiter's queue; False on stop."""
        while not self._stopping.is_set() and (
            len(self._sends) >= self.concurrency or self._unstamped >= self.lookahead
        ):
            self._capacity.clear()
            await self._capacity.wait()
        return not self._stopping.is_set()

    async def _idle(self, look_again: float) -> None:
        """Wait for new work, stop, or the time to look again (a due row or a freed chat)."""
        while not (self._new_work.is_set() or self._stopping.is_set()):
            now = self.clock.monotonic()
            # A periodic look as well: a row may become due without anyone calling wake().
            until = min(look_again, self._freed_ready_at, now + _MAX_IDLE)
            if until <= now:
                return
            self._freed.clear()
            waiters: list[asyncio.Task[Any]] = [
                asyncio.create_task(self._new_work.wait()),
                asyncio.create_task(self._stopping.wait()),
                asyncio.create_task(self._freed.wait()),
            ]
            sleeper = asyncio.create_task(self.clock.sleep(until - now))
            waiters.append(sleeper)
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if sleeper.done() and not sleeper.cancelled():
                return

    def _dispatch(self, due: Due, more: bool) -> None:
        send = _Send(due.chat.id, more)
        self._sends[send.chat_id] = send
        self._unstamped += 1
        send.task = asyncio.create_task(self._send_task(due, send), name=f"send-{_row_id(due)}")

    def _hold_back(self) -> None:
        """The store went down: sends still waiting in the limiter have not left; they go back
        to the outbox (pending, no attempt spent) instead of adding to what must be held."""
        for send in list(self._sends.values()):
            if not send.stamped and send.task is not None:
                send.task.cancel()

    def _stamped(self, send: _Send) -> None:
        # The last moment before the request leaves: a leader whose lease it no longer
        # trusts (it was frozen, or could not renew) sends nothing.
        if self.fence is not None and not self.fence.valid():
            raise Deposed("the leader lease is no longer held")
        if not send.stamped:
            send.stamped = True
            self._unstamped -= 1
            self._capacity.set()

    async def _send_task(self, due: Due, send: _Send) -> None:
        try:
            on_stamp = partial(self._stamped, send)
            if isinstance(due, DueMessage):
                result = await self.deliver_message(due, on_stamp=on_stamp)
            else:
                result = await self.deliver(due, on_stamp=on_stamp)
            if result.outcome is not Outcome.SENT:
                send.more = True  # the row waits for a retry, or the chat's queue changed
        except asyncio.CancelledError:
            raise
        except Deposed:
            # Not sent: the row stays pending. Deposed for good: stop; the lease merely not
            # trusted now (a late renewal, a pause): the next pass confirms it first.
            send.more = True
            if self.fence is not None and self.fence.deposed.is_set():
                self.halt()
        except Exception as exc:
            # A bug, not an expected failure: the row waits and the try counts as an attempt,
            # so a send that always crashes ends as failed after MAX_SEND_ATTEMPTS.
            send.more = True
            log.exception("delivery %d to chat %d crashed", _row_id(due), due.chat.id,
                          extra=_ids(due))  # fmt: skip
            now = self.clock.now()
            error = self.describe(exc, prefix="internal error")
            spent = _attempts(due) + 1 >= self.max_attempts
            await self._writer.record(
                OutcomeRecord(
                    _row_id(due),
                    DeliveryState.FAILED if spent else DeliveryState.PENDING,
                    now,
                    error=error,
                    next_attempt_at=now + 60.0,
                    event="send_failed" if spent else "send_error",
                    chat_id=due.chat.id,
                )
            )
        finally:
            if not send.stamped:
                self._unstamped -= 1
            if self._sends.get(send.chat_id) is send:
                del self._sends[send.chat_id]
            if send.more:
                # The chat's next piece can go once its window allows.
                ready = self.limits.chat_ready_at(send.chat_id)
                if ready < self._freed_ready_at:
                    self._freed_ready_at = ready
                    self._freed.set()
            self._capacity.set()

    # ------------------------------------------------------------------ one delivery

    async def deliver(
        self, due: DueDelivery, *, on_stamp: Callable[[], None] | None = None
    ) -> SendResult:
        """Send one delivery, record the outcome in the store, and return it.

        The outcome goes through the writer, which keeps it until the store takes it: a send
        Telegram accepted stays marked as sent in memory (its chat held) through any outage.
        """
        result = await self.send(due.chat, due.item, on_stamp=on_stamp)
        await self._settle(due, result)
        return result

    async def _settle(self, due: Due, result: SendResult) -> None:
        """Record what became of a post (or a digest, the chat's posts of a day) and act on
        it: a migrated chat is moved, a chat that refuses the bot is paused or deactivated."""
        row_id, attempts, chat = _row_id(due), _attempts(due), due.chat
        now = self.clock.now()
        self.stats[result.outcome] += 1
        if self.on_outcome is not None:
            spent = result.outcome is Outcome.RETRY and attempts + 1 >= self.max_attempts
            self.on_outcome(chat, Outcome.FAILED if spent else result.outcome)
        error = result.error or ""
        record = partial(OutcomeRecord, row_id, at=now, error=error, chat_id=chat.id)
        if result.outcome is Outcome.SENT:
            self._unreachable_streak = 0
            paid_day = None
            if result.paid:
                budget = self.limits.budget
                paid_day = budget.today() if budget is not None else None
                if self.on_paid is not None:
                    self.on_paid()
            # Only posts name their message: the one a later edit of the piece must reach.
            message_id = result.message_id if isinstance(due, DueDelivery) else None
            await self._writer.record(
                OutcomeRecord(
                    row_id, DeliveryState.SENT, now, message_id=message_id, paid_day=paid_day
                )
            )
        elif result.outcome is Outcome.MIGRATED:
            new_id = result.new_chat_id
            assert new_id is not None
            log.info("chat %d migrated to %d; resending there", chat.id, new_id, extra=_ids(due))
            moved = await self.store.migrate_chat(chat.id, new_id, now)
            await self.store.record_event("migrated", f"{chat.id} -> {new_id}", now, chat_id=new_id)
            if moved is not None:
                # The outbox row moved with the chat; the next pass sends it to the new id.
                self._new_work.set()
        elif (later := self._try_again(result, attempts, record, now)) is not None:
            if result.outcome is Outcome.RETRY:
                log.warning(
                    "delivery %d to chat %d: %s; retry %d in %.0f s", row_id, chat.id,
                    error, attempts + 1, (later.next_attempt_at or now) - now, extra=_ids(due),
                )  # fmt: skip
            await self._writer.record(later)
        elif result.outcome is Outcome.NO_ACCESS:
            await self._writer.record(
                record(state=DeliveryState.PENDING, next_attempt_at=now, count_attempt=False,
                       event="no_access")
            )  # fmt: skip
            if self.on_chat_problem is not None and not chat.type.is_private:
                # The hook owns channels and groups: it deactivates one the bot has left and
                # pauses one where it lacks a right (marking this row failed, telling admins).
                await self.on_chat_problem(chat, error)
            else:
                log.warning("chat %d refuses the bot (%s); deactivating it", chat.id, error,
                            extra=_ids(due))  # fmt: skip
                await self.store.deactivate_chat(chat.id, error, now)
                if self.on_chat_problem is not None:
                    await self.on_chat_problem(chat, error)
        else:  # FAILED, or a RETRY that spent the last attempt
            log.error("delivery %d to chat %d failed: %s", row_id, chat.id, error,
                      extra=_ids(due))  # fmt: skip
            await self._writer.record(record(state=DeliveryState.FAILED, event="send_failed"))

    def _try_again(
        self,
        result: SendResult,
        attempts: int,
        record: Callable[..., OutcomeRecord],
        now: float,
    ) -> OutcomeRecord | None:
        """The record of a send that waits and goes again, or None when it does not.

        One rule for posts, edits and notices: a 429 waits Telegram's retry_after and no
        answer at all (network, timeouts, 5xx) waits with growing backoff, neither spending an
        attempt; another refusal is retried with backoff while attempts are left.
        """
        if result.outcome is Outcome.RATE_LIMITED:
            wait = now + (result.retry_after or 1.0)
            return record(state=DeliveryState.PENDING, next_attempt_at=wait,
                          count_attempt=False, event="429")  # fmt: skip
        if result.outcome is Outcome.UNREACHABLE:
            self._unreachable_streak += 1
            delay = backoff(self._unreachable_streak, 5.0, UNREACHABLE_BACKOFF_MAX, self.rng)
            return record(state=DeliveryState.PENDING, next_attempt_at=now + delay,
                          count_attempt=False, event="send_error")  # fmt: skip
        if result.outcome is Outcome.RETRY and attempts + 1 < self.max_attempts:
            delay = backoff(attempts, 5.0, 3600.0, self.rng)
            return record(state=DeliveryState.PENDING, next_attempt_at=now + delay,
                          event="send_error")  # fmt: skip
        return None

    async def deliver_message(
        self, due: DueMessage, *, on_stamp: Callable[[], None] | None = None
    ) -> SendResult:
        """Send one edit or notice and record its outcome, with the windows, retries and
        backoff of posts. A chat's refusal fails the row (it pauses or deactivates nothing:
        the posts' own refusals do that), and so does a refused edit. A digest is the chat's
        posts: sent as they are (topic, silence) and settled as they are."""
        chat = due.chat
        if due.kind is Kind.NOTICE and due.digest:
            digest = Post(html=due.text, text="", link="", photo_url=None, disable_preview=True)
            result = await self.sender.send_post(chat, lambda _photo: digest, on_stamp=on_stamp)
            await self._settle(due, result)
            return result
        if due.kind is Kind.EDIT and due.item is not None and due.message_id is not None:
            item = due.item
            as_photo = bool(item.image_url) and chat.settings.style is PostStyle.PHOTO
            result = await self.sender.edit_post(
                chat, due.message_id,
                lambda photo: self._rendered(item, chat.settings, allow_photo=photo),
                as_photo=as_photo, on_stamp=on_stamp,
            )  # fmt: skip
        elif due.kind is Kind.NOTICE:
            result = await self.sender.send_notice(chat.id, due.text, on_stamp=on_stamp)
        else:
            result = SendResult(Outcome.FAILED, error=f"malformed {due.kind} row")
        now = self.clock.now()
        self.stats[result.outcome] += 1
        error = result.error or ""
        record = partial(OutcomeRecord, due.id, at=now, error=error, chat_id=chat.id)
        ids = {"delivery_id": due.id, "chat_id": chat.id}
        if result.outcome is Outcome.SENT:
            self._unreachable_streak = 0
            # No message id: only posts name the messages a later edit must reach.
            await self._writer.record(OutcomeRecord(due.id, DeliveryState.SENT, now))
        elif (later := self._try_again(result, due.attempts, record, now)) is not None:
            if result.outcome is Outcome.RETRY:
                log.warning("%s %d to chat %d: %s; retry %d in %.0f s", due.kind, due.id,
                            chat.id, error, due.attempts + 1,
                            (later.next_attempt_at or now) - now, extra=ids)  # fmt: skip
            await self._writer.record(later)
        else:
            log.warning("%s %d to chat %d failed: %s", due.kind, due.id, chat.id, error,
                        extra=ids)  # fmt: skip
            failed = record(state=DeliveryState.FAILED, event=f"{due.kind}_failed")
            await self._writer.record(failed)
        return result

    async def send(
        self, chat: Chat, item: Item, *, on_stamp: Callable[[], None] | None = None
    ) -> SendResult:
        """Render `item` for `chat` and send it; translate Telegram's answer into a SendResult."""
        return await self.sender.send_post(
            chat, lambda photo: self._rendered(item, chat.settings, allow_photo=photo),
            on_stamp=on_stamp,
        )  # fmt: skip

    def describe(self, exc: BaseException, *, prefix: str = "") -> str:
        """An error as stored, logged and shown in /why, secrets scrubbed (the sender's way)."""
        return self.sender.describe(exc, prefix=prefix)

    def _rendered(self, item: Item, settings: ChatSettings, *, allow_photo: bool) -> Post:
        """Render through a small cache: a fan-out sends one piece to many alike chats."""
        key = (item, self.renderer.post_style(settings), allow_photo)
        post = self._posts.get(key)
        if post is None:
            post = self.renderer.post(item, settings, lang=item.lang, allow_photo=allow_photo)
            self._posts[key] = post
            if len(self._posts) > _POST_CACHE:
                self._posts.popitem(last=False)
        else:
            self._posts.move_to_end(key)
        return post

    # ------------------------------------------------------------------ shutdown

    def halt(self) -> None:
        """Stop dispatching at once (deposed): sends not yet stamped are cancelled and stay
        pending; ones already on their way finish and are recorded."""
        if not self._stopping.is_set():
            log.warning("publisher halted: this instance is not the leader")
        self._stopping.set()
        self._capacity.set()
        for send in list(self._sends.values()):
            if not send.stamped and send.task is not None:
                send.task.cancel()

    async def stop(self, timeout: float) -> int:
        """Stop dispatching, let in-flight sends finish for up to `timeout` s; return unfinished.

        Sends still queued in the limiter have not left: they are cancelled at once and stay
        pending for the next start. Every answered send is recorded before this returns.
        """
        self._stopping.set()
        self._capacity.set()
        for send in list(self._sends.values()):
            if not send.stamped and send.task is not None:
                send.task.cancel()
        tasks: Sequence[asyncio.Task[None]] = [
            s.task for s in self._sends.values() if s.task is not None
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # What was answered is written now; a store that still refuses gets what time is left.
        await self._writer.drain(max(deadline - loop.time(), 0.5))
        log.info(
            "publisher stopped: %s; %d send(s) written later than stamped (longest %.3f s)",
            ", ".join(f"{n} {outcome}" for outcome, n in self.stats.items() if n) or "no sends",
            self.limits.late_writes, self.limits.longest_write_delay,
        )  # fmt: skip
        if pending:
            log.warning("%d sends still in flight at shutdown stay pending", len(pending))
        return len(pending)


def _row_id(due: Due) -> int:
    return due.id if isinstance(due, DueMessage) else due.delivery.id


def _attempts(due: Due) -> int:
    return due.attempts if isinstance(due, DueMessage) else due.delivery.attempts


def _ids(due: Due) -> dict[str, int]:
    """The ids a log line about `due` carries (fields of a JSON log line)."""
    ids = {"delivery_id": _row_id(due), "chat_id": due.chat.id}
    if due.item is not None:
        ids["item_id"] = due.item.id
    return ids
