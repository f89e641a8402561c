"""The delivery engine: takes due rows from the outbox, sends them within the rate limits, and
records each outcome after Telegram has answered.

Ordering: each chat has at most one send in flight and always gets its oldest pending piece
first; channels go before groups, groups before private chats. A delivery is marked sent only
after Telegram's answer, so a crash can repeat at most the sends that were in flight.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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
from telegram.warnings import PTBDeprecationWarning

from bot.clock import Clock
from bot.ratelimit import RateLimits, _seconds
from bot.render import Post, Renderer
from storage.models import Chat, DueDelivery, Item
from storage.store import Store

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


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"
    NO_ACCESS = "no_access"
    MIGRATED = "migrated"


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
        batch_size: int = 500,
        rng: random.Random | None = None,
        on_chat_problem: ChatProblemHook | None = None,
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
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.on_chat_problem = on_chat_problem
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._recent_429: deque[tuple[float, int]] = deque(maxlen=64)
        self.stats = dict.fromkeys(Outcome, 0)

    def wake(self) -> None:
        """Tell the engine the outbox has new rows."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self) -> None:
        """Send due deliveries until stop() is called."""
        while not self._stopping.is_set():
            try:
                dispatched, next_ready = await self._pass()
            except Exception:
                log.exception("publisher pass failed; retrying shortly")
                dispatched, next_ready = 0, self.clock.monotonic() + 5.0
            if self._stopping.is_set():
                break
            if not dispatched:
                await self._idle(next_ready)

    async def _pass(self) -> tuple[int, float | None]:
        """Dispatch every due head whose chat is ready; return (count, when to look again)."""
        self._wake.clear()
        batch = await self.store.due_deliveries(
            self.clock.now(), self.batch_size, exclude_chats=list(self._in_flight)
        )
        dispatched = 0
        next_ready: float | None = None
        for due in batch:
            if self._stopping.is_set():
                break
            chat_id = due.chat.id
            if chat_id in self._in_flight:
                continue
            ready = self.limits.chat_ready_at(chat_id)
            if ready > self.clock.monotonic():
                next_ready = ready if next_ready is None else min(next_ready, ready)
                continue
            await self._slots.acquire()
            if self._stopping.is_set():
                self._slots.release()
                break
            task = asyncio.create_task(self._send_task(due), name=f"send-{due.delivery.id}")
            self._in_flight[chat_id] = task
            dispatched += 1
        if not batch:
            due_at = await self.store.next_due_at()
            if due_at is not None:
                wall_wait = max(0.0, due_at - self.clock.now())
                candidate = self.clock.monotonic() + wall_wait
                next_ready = candidate if next_ready is None else min(next_ready, candidate)
        return dispatched, next_ready

    async def _idle(self, next_ready: float | None) -> None:
        """Wait for new work, the next due time, or a send slot freeing a chat."""
        timeout = 30.0
        if next_ready is not None:
            timeout = min(timeout, max(0.0, next_ready - self.clock.monotonic()))
        if self._in_flight:
            # A finishing send may unblock its chat's next piece.
            timeout = min(timeout, 0.5)
        waiters = [
            asyncio.create_task(self._wake.wait()),
            asyncio.create_task(self._stopping.wait()),
            asyncio.create_task(self.clock.sleep(timeout)),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _send_task(self, due: DueDelivery) -> None:
        try:
            await self.deliver(due)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug, not an expected failure: keep the row pending and try again later.
            log.exception("delivery %d to chat %d crashed", due.delivery.id, due.chat.id)
            await self.store.mark_retry(due.delivery.id, "internal error", self.clock.now() + 60.0)
        finally:
            self._in_flight.pop(due.chat.id, None)
            self._slots.release()
            self._wake.set()

    async def deliver(self, due: DueDelivery) -> SendResult:
        """Send one delivery, record the outcome in the store, and return it."""
        delivery, chat = due.delivery, due.chat
        result = await self.send(chat, due.item)
        now = self.clock.now()
        self.stats[result.outcome] += 1
        error = result.error or ""
        if result.outcome is Outcome.MIGRATED:
            new_id = result.new_chat_id
            assert new_id is not None
            log.info("chat %d migrated to %d; resending there", chat.id, new_id)
            moved = await self.store.migrate_chat(chat.id, new_id, now)
            await self.store.record_event("migrated", f"{chat.id} -> {new_id}", now, chat_id=new_id)
            if moved is not None:
                # The outbox row moved with the chat; the next pass sends it to the new id.
                self._wake.set()
            return result
        if result.outcome is Outcome.SENT:
            await self.store.mark_sent(delivery.id, result.message_id, now)
        elif result.outcome is Outcome.RATE_LIMITED:
            await self.store.mark_retry(
                delivery.id, error, now + (result.retry_after or 1.0), count_attempt=False
            )
            await self.store.record_event("429", error, now, chat_id=chat.id)
        elif result.outcome is Outcome.NO_ACCESS:
            log.warning("chat %d refuses the bot (%s); deactivating it", chat.id, error)
            await self.store.deactivate_chat(chat.id, error, now)
            await self.store.record_event("no_access", error, now, chat_id=chat.id)
            if self.on_chat_problem is not None:
                await self.on_chat_problem(chat, error)
        elif result.outcome is Outcome.FAILED or delivery.attempts + 1 >= self.max_attempts:
            log.error("delivery %d to chat %d failed: %s", delivery.id, chat.id, error)
            await self.store.mark_failed(delivery.id, error, now)
            await self.store.record_event("send_failed", error, now, chat_id=chat.id)
        else:
            delay = min(3600.0, 5.0 * 2**delivery.attempts) * (0.75 + self.rng.random() / 2)
            log.warning(
                "delivery %d to chat %d: %s; retry %d in %.0f s",
                delivery.id, chat.id, error, delivery.attempts + 1, delay,
            )  # fmt: skip
            await self.store.mark_retry(delivery.id, error, now + delay)
            await self.store.record_event("send_error", error, now, chat_id=chat.id)
        return result

    async def send(self, chat: Chat, item: Item) -> SendResult:
        """Render `item` for `chat` and send it; translate Telegram's answer into a SendResult."""
        post = self.renderer.post(item, chat.settings, lang=item.lang)
        try:
            message = await self._send_post(chat, post)
        except BadRequest as exc:
            if post.is_photo and _mentions(exc, _PHOTO_PROBLEMS):
                log.info("photo for item %d refused (%s); sending text", item.id, exc.message)
                text_post = self.renderer.post(
                    item, chat.settings, lang=item.lang, allow_photo=False
                )
                try:
                    message = await self._send_post(chat, text_post)
                except TelegramError as retry_exc:
                    return self._classify(chat, retry_exc)
                return SendResult(Outcome.SENT, message.message_id)
            return self._classify(chat, exc)
        except TelegramError as exc:
            return self._classify(chat, exc)
        return SendResult(Outcome.SENT, message.message_id)

    async def _send_post(self, chat: Chat, post: Post) -> Message:
        common: dict[str, object] = {
            "chat_id": chat.id,
            "parse_mode": ParseMode.HTML,
            "disable_notification": chat.settings.silent,
            "rate_limit_args": {"retry": False},
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
        text = f"{type(exc).__name__}: {exc.message}"
        if isinstance(exc, ChatMigrated):
            return SendResult(Outcome.MIGRATED, error=text, new_chat_id=int(exc.new_chat_id))
        if isinstance(exc, RetryAfter):
            wait = _retry_after_seconds(exc)
            self._note_429(chat.id, wait)
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
        return SendResult(Outcome.RETRY, error=text)

    def _note_429(self, chat_id: int, wait: float) -> None:
        """Hold the chat; when several chats are refused at once, it is the bot-wide limit."""
        self.limits.block_chat(chat_id, wait)
        now = self.clock.monotonic()
        self._recent_429.append((now, chat_id))
        recent_chats = {c for t, c in self._recent_429 if now - t <= 1.0}
        if len(recent_chats) >= 3:
            log.warning("429 from %d chats within a second: pausing all sends %.1f s",
                        len(recent_chats), wait)  # fmt: skip
            self.limits.block_all(wait)

    async def stop(self, timeout: float) -> int:
        """Stop dispatching, let in-flight sends finish for up to `timeout` s; return unfinished."""
        self._stopping.set()
        tasks = list(self._in_flight.values())
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("%d sends still in flight at shutdown stay pending", len(pending))
        return len(pending)


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        # PTB warns that retry_after will become a timedelta; _seconds accepts both.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        return _seconds(exc.retry_after)


def _mentions(exc: TelegramError, needles: tuple[str, ...]) -> bool:
    message = exc.message.lower()
    return any(needle in message for needle in needles)
