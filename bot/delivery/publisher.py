"""The delivery engine: takes due rows from the outbox, sends them within the rate limits, and
records each outcome after Telegram has answered.

Scheduling: a pass reads the head of every chat's pending queue (channels first, then groups,
then private chats; within a class the oldest piece first) and dispatches, in that order, the
heads whose chat is free and whose chat windows allow a send now. Chats that must wait (their
own window, a retry_after, a backoff) are skipped, so one slow or failing chat never holds up
the rest; the pass remembers when the earliest of them is ready and looks again then.

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
import enum
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from telegram import Bot, LinkPreviewOptions, Message
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)

from bot.backoff import backoff
from bot.clock import Clock
from bot.delivery.ratelimit import RateLimits, retry_after_seconds, watch_accepted
from bot.text.render import Post, Renderer
from storage.models import Chat, ChatSettings, DeliveryState, DueDelivery, Item, OutcomeRecord
from storage.store import QueueHead, Store

log = logging.getLogger(__name__)

# Telegram's words for a photo it could not fetch or use: fall back to text at once.
_PHOTO_PROBLEMS = (
    "wrong type of the web page content",
    "failed to get http url content",
    "wrong file identifier",
    "photo_invalid_dimensions",
    "image_process_failed",
    "wrong remote file",
    "webpage_media_empty",
    "photo_save_file_invalid",
    "file is too big",
)
# 400s that mean the bot cannot post there at all: retrying would only repeat the refusal.
_NO_ACCESS = (
    "chat not found",
    "not enough rights",
    "need administrator rights",
    "have no rights to send",
    "chat_write_forbidden",
    "chat_admin_required",
    "topic_closed",
    "message thread not found",
    "topic_deleted",
    "bot is not a member",
    "channel_private",
)
# 400s that are our own fault (a rendering bug): retrying the same text cannot help.
_PERMANENT = ("can't parse entities", "message is too long", "caption is too long", "text is empty")

# Rows loaded per store round trip while dispatching a pass.
_LOAD_CHUNK = 100
# The longest the engine sleeps without reading the queues again.
_MAX_IDLE = 30.0
# How long the first finished send waits for others to share its commit (real seconds).
_RECORD_DELAY = 0.005
# Waits between tries of an outcome write the store refused.
_STORE_RETRY_MIN = 0.5
_STORE_RETRY_MAX = 30.0
# Rendered posts kept: a fan-out renders a piece once per distinct chat setting, not per chat.
_POST_CACHE = 256


UNREACHABLE_BACKOFF_MAX = 300.0  # longest wait between tries while Telegram is unreachable


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"
    NO_ACCESS = "no_access"
    MIGRATED = "migrated"
    # No answer from Telegram (network, timeout, 5xx): an outage, not a verdict on this post.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    message_id: int | None = None
    error: str | None = None
    retry_after: float | None = None
    new_chat_id: int | None = None


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

    def __init__(self, store: Store, clock: Clock, on_down: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self.on_down = on_down
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
        # Shielded: a caller cancelled at shutdown must not cancel the others' commit.
        await asyncio.shield(done)

    async def _write(self) -> None:
        try:
            # Let the sends finishing about now join this transaction: fewer, larger commits.
            await asyncio.sleep(_RECORD_DELAY)
            backoff = _STORE_RETRY_MIN
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self.store.record_outcomes([record for record, _ in batch])
                except Exception as exc:
                    self._queue[:0] = batch  # kept, in order, ahead of anything newer
                    self._went_down(exc)
                    await self.clock.sleep(backoff)
                    backoff = min(backoff * 2, _STORE_RETRY_MAX)
                    continue
                backoff = _STORE_RETRY_MIN
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
        bot: Bot,
        renderer: Renderer,
        limits: RateLimits,
        clock: Clock,
        *,
        concurrency: int = 32,
        max_attempts: int = 6,
        paid_broadcast: bool = False,
        batch_size: int = 1000,
        lookahead: int | None = None,
        rng: random.Random | None = None,
        on_chat_problem: ChatProblemHook | None = None,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self.store = store
        self.bot = bot
        self.renderer = renderer
        self.limits = limits
        self.clock = clock
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.paid_broadcast = paid_broadcast
        self.batch_size = batch_size
        # Enough sends queued in the limiter to cover ~50 ms of the global rate (a store
        # round trip of the dispatcher), few enough that a new channel piece is not kept
        # waiting behind a long queue of private chats.
        rate = limits.limits.global_per_second
        self.lookahead = lookahead or max(4, min(concurrency, math.ceil(rate * 0.05)))
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._unreachable_streak = 0  # failed sends in a row with no answer from Telegram
        self.on_chat_problem = on_chat_problem
        # Applied to every error text before it is stored or logged (the token, any spelling).
        self.scrub = scrub
        # Told each delivery's outcome (health and metrics); a retry that spent the last
        # attempt is reported as FAILED. Set by the composition root.
        self.on_outcome: Callable[[Chat, Outcome], None] | None = None
        self.stats = dict.fromkeys(Outcome, 0)
        self._writer = _OutcomeWriter(store, clock, on_down=self._hold_back)
        self._sends: dict[int, _Send] = {}  # by chat id: one send per chat at a time
        self._unstamped = 0
        self._new_work = asyncio.Event()
        self._capacity = asyncio.Event()
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._freed_ready_at = math.inf
        self._posts: OrderedDict[tuple[Item, ChatSettings, str, bool], Post] = OrderedDict()

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
                await _first(self._writer.up.wait(), self._stopping.wait())
                continue
            try:
                look_again = await self._pass()
            except Exception:
                log.exception("publisher pass failed; retrying shortly")
                look_again = self.clock.monotonic() + 5.0
            if look_again is not None and not self._stopping.is_set():
                await self._idle(look_again)

    async def _pass(self) -> float | None:
        """Dispatch every head that can go now; return when to look again (None: at once)."""
        self._new_work.clear()
        self._freed_ready_at = math.inf
        heads = await self.store.pending_heads()
        wall, now = self.clock.now(), self.clock.monotonic()
        look_again = math.inf
        ready: list[QueueHead] = []
        for head in heads:
            if head.chat_id in self._sends:
                continue
            if head.next_attempt_at > wall:
                look_again = min(look_again, now + head.next_attempt_at - wall)
                continue
            chat_ready = self.limits.chat_ready_at(head.chat_id, now)
            if chat_ready > now:
                look_again = min(look_again, chat_ready)
                continue
            ready.append(head)
            if len(ready) >= self.batch_size:
                look_again = now  # more may be ready behind this batch
                break
        more = {head.delivery_id: head.pending > 1 for head in ready}
        for start in range(0, len(ready), _LOAD_CHUNK):
            chunk = [head.delivery_id for head in ready[start : start + _LOAD_CHUNK]]
            # Rows answered since the heads were read drop out here (sent, or backing off).
            for due in await self.store.due_by_ids(chunk, self.clock.now()):
                if not await self._wait_capacity():
                    return None
                if self._new_work.is_set() or self._writer.down:
                    return None  # something newer may come first, or the store is down
                chat_ready = self.limits.chat_ready_at(due.chat.id)
                if chat_ready > self.clock.monotonic():
                    # A handler's reply took the chat's window meanwhile.
                    look_again = min(look_again, chat_ready)
                    continue
                self._dispatch(due, more[due.delivery.id])
        return None if look_again <= self.clock.monotonic() else look_again

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

    def _dispatch(self, due: DueDelivery, more: bool) -> None:
        send = _Send(due.chat.id, more)
        self._sends[send.chat_id] = send
        self._unstamped += 1
        send.task = asyncio.create_task(self._send_task(due, send), name=f"send-{due.delivery.id}")

    def _hold_back(self) -> None:
        """The store went down: sends still waiting in the limiter have not left; they go back
        to the outbox (pending, no attempt spent) instead of adding to what must be held."""
        for send in list(self._sends.values()):
            if not send.stamped and send.task is not None:
                send.task.cancel()

    def _stamped(self, send: _Send) -> None:
        if not send.stamped:
            send.stamped = True
            self._unstamped -= 1
            self._capacity.set()

    async def _send_task(self, due: DueDelivery, send: _Send) -> None:
        try:
            result = await self.deliver(due, on_stamp=lambda: self._stamped(send))
            if result.outcome is not Outcome.SENT:
                send.more = True  # the row waits for a retry, or the chat's queue changed
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug, not an expected failure: the row waits and the try counts as an attempt,
            # so a send that always crashes ends as failed after MAX_SEND_ATTEMPTS.
            send.more = True
            log.exception("delivery %d to chat %d crashed", due.delivery.id, due.chat.id,
                          extra=_ids(due))  # fmt: skip
            now = self.clock.now()
            error = self.describe(exc, prefix="internal error")
            spent = due.delivery.attempts + 1 >= self.max_attempts
            await self._writer.record(
                OutcomeRecord(
                    due.delivery.id,
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
        delivery, chat = due.delivery, due.chat
        result = await self.send(chat, due.item, on_stamp=on_stamp)
        now = self.clock.now()
        self.stats[result.outcome] += 1
        if self.on_outcome is not None:
            spent = result.outcome is Outcome.RETRY and delivery.attempts + 1 >= self.max_attempts
            self.on_outcome(chat, Outcome.FAILED if spent else result.outcome)
        error = result.error or ""
        record = partial(OutcomeRecord, delivery.id, at=now, error=error, chat_id=chat.id)
        if result.outcome is Outcome.SENT:
            self._unreachable_streak = 0
            await self._writer.record(
                OutcomeRecord(delivery.id, DeliveryState.SENT, now, message_id=result.message_id)
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
        elif result.outcome is Outcome.RATE_LIMITED:
            # Bounded by Telegram's retry_after, not by attempts.
            wait = now + (result.retry_after or 1.0)
            await self._writer.record(
                record(state=DeliveryState.PENDING, next_attempt_at=wait, count_attempt=False,
                       event="429")
            )  # fmt: skip
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
        elif result.outcome is Outcome.UNREACHABLE:
            # However long Telegram is out of reach, the post waits: attempts are not spent;
            # the wait between tries grows to UNREACHABLE_BACKOFF_MAX.
            self._unreachable_streak += 1
            delay = backoff(self._unreachable_streak, 5.0, UNREACHABLE_BACKOFF_MAX, self.rng)
            await self._writer.record(
                record(state=DeliveryState.PENDING, next_attempt_at=now + delay,
                       count_attempt=False, event="send_error")
            )  # fmt: skip
        elif result.outcome is Outcome.FAILED or delivery.attempts + 1 >= self.max_attempts:
            log.error("delivery %d to chat %d failed: %s", delivery.id, chat.id, error,
                      extra=_ids(due))  # fmt: skip
            await self._writer.record(record(state=DeliveryState.FAILED, event="send_failed"))
        else:
            delay = backoff(delivery.attempts, 5.0, 3600.0, self.rng)
            log.warning(
                "delivery %d to chat %d: %s; retry %d in %.0f s",
                delivery.id, chat.id, error, delivery.attempts + 1, delay, extra=_ids(due),
            )  # fmt: skip
            await self._writer.record(
                record(state=DeliveryState.PENDING, next_attempt_at=now + delay,
                       event="send_error")
            )  # fmt: skip
        return result

    async def send(
        self, chat: Chat, item: Item, *, on_stamp: Callable[[], None] | None = None
    ) -> SendResult:
        """Render `item` for `chat` and send it; translate Telegram's answer into a SendResult.

        An answer `ok: true` is a sent message even when its body cannot be read as one.
        """
        post = self._post(item, chat.settings, allow_photo=True)
        with watch_accepted() as accepted:
            try:
                return await self._send_with_fallback(chat, item, post, on_stamp)
            except TelegramError:
                raise
            except Exception:
                if not accepted.ok:
                    raise
                log.warning("Telegram accepted the post to chat %d but its answer could not be "
                            "read; recorded as sent", chat.id, exc_info=True)  # fmt: skip
                result = accepted.result
                message_id = result.get("message_id") if isinstance(result, dict) else None
                return SendResult(Outcome.SENT, message_id if isinstance(message_id, int) else None)

    async def _send_with_fallback(
        self, chat: Chat, item: Item, post: Post, on_stamp: Callable[[], None] | None
    ) -> SendResult:
        try:
            message = await self._send_post(chat, post, on_stamp)
        except BadRequest as exc:
            if post.is_photo and _mentions(exc, _PHOTO_PROBLEMS):
                log.info("photo for item %d refused (%s); sending text", item.id, exc.message,
                         extra={"item_id": item.id, "chat_id": chat.id})  # fmt: skip
                text_post = self._post(item, chat.settings, allow_photo=False)
                try:
                    message = await self._send_post(chat, text_post, on_stamp)
                except TelegramError as retry_exc:
                    return self._classify(chat, retry_exc)
                return SendResult(Outcome.SENT, message.message_id)
            return self._classify(chat, exc)
        except TelegramError as exc:
            return self._classify(chat, exc)
        return SendResult(Outcome.SENT, message.message_id)

    def describe(self, exc: BaseException, *, prefix: str = "") -> str:
        """The one way an error becomes text here: stored, logged, shown in /why; secrets
        (the token, in any spelling) scrubbed."""
        text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        return self.scrub(f"{prefix}: {text}" if prefix else text)

    def _post(self, item: Item, settings: ChatSettings, *, allow_photo: bool) -> Post:
        """Render through a small cache: a fan-out sends one piece to many alike chats."""
        key = (item, settings, item.lang, allow_photo)
        post = self._posts.get(key)
        if post is None:
            post = self.renderer.post(item, settings, lang=item.lang, allow_photo=allow_photo)
            self._posts[key] = post
            if len(self._posts) > _POST_CACHE:
                self._posts.popitem(last=False)
        else:
            self._posts.move_to_end(key)
        return post

    async def _send_post(
        self, chat: Chat, post: Post, on_stamp: Callable[[], None] | None
    ) -> Message:
        limiter_args: dict[str, object] = {"retry": False}
        if on_stamp is not None:
            limiter_args["on_stamp"] = on_stamp
        common: dict[str, object] = {
            "chat_id": chat.id,
            "parse_mode": ParseMode.HTML,
            "disable_notification": chat.settings.silent,
            "rate_limit_args": limiter_args,
        }
        if chat.settings.thread_id:
            common["message_thread_id"] = chat.settings.thread_id
        if self.paid_broadcast:
            common["allow_paid_broadcast"] = True
        if post.photo_url:
            return await self.bot.send_photo(photo=post.photo_url, caption=post.html, **common)  # type: ignore[arg-type]
        preview = (
            LinkPreviewOptions(is_disabled=True)
            if post.disable_preview
            else LinkPreviewOptions(url=post.link, prefer_large_media=True)
        )
        return await self.bot.send_message(text=post.html, link_preview_options=preview, **common)  # type: ignore[arg-type]

    def _classify(self, chat: Chat, exc: TelegramError) -> SendResult:
        text = self.describe(exc)
        if isinstance(exc, ChatMigrated):
            return SendResult(Outcome.MIGRATED, error=text, new_chat_id=int(exc.new_chat_id))
        if isinstance(exc, RetryAfter):
            # The rate limiter has already held the chat (or everyone) for retry_after.
            wait = retry_after_seconds(exc)
            return SendResult(Outcome.RATE_LIMITED, error=text, retry_after=wait)
        if isinstance(exc, Forbidden):
            return SendResult(Outcome.NO_ACCESS, error=text)
        if isinstance(exc, BadRequest):
            if _mentions(exc, _NO_ACCESS):
                return SendResult(Outcome.NO_ACCESS, error=text)
            if _mentions(exc, _PERMANENT):
                return SendResult(Outcome.FAILED, error=text)
            return SendResult(Outcome.RETRY, error=text)
        if isinstance(exc, InvalidToken):
            log.critical("Telegram rejects the bot token; deliveries cannot be sent")
        # Timeouts, network errors and 5xx: the send may or may not have happened; retrying
        # risks a rare duplicate, giving up would risk a lost post.
        return SendResult(Outcome.UNREACHABLE, error=text)

    # ------------------------------------------------------------------ shutdown

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


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of `waits` finishes; cancel the others."""
    tasks = [asyncio.create_task(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _mentions(exc: TelegramError, needles: tuple[str, ...]) -> bool:
    message = exc.message.lower()
    return any(needle in message for needle in needles)


def _ids(due: DueDelivery) -> dict[str, int]:
    """The ids a log line about `due` carries (fields of a JSON log line)."""
    return {"delivery_id": due.delivery.id, "chat_id": due.chat.id, "item_id": due.item.id}
