"""The one module that sends and edits the bot's own messages (posts, edits of posts, notices)
and turns Telegram's answer into a SendResult: the outcome the publisher records.

Handlers answer users through handlers/reply.py; everything the bot says on its own goes out
of the outbox through here (tests/test_one_sender.py holds both to that).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from telegram import LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.ext import ExtBot

from bot.delivery.ratelimit import JsonBody, retry_after_seconds, watch_accepted
from bot.text.render import Post
from storage.models import Chat

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
# An edit Telegram answers with this has nothing left to do: the message already shows it.
_NOT_MODIFIED = "message is not modified"
# The message was sent the other way (a photo post that fell back to text, or the reverse).
_WRONG_KIND = ("there is no caption in the message", "there is no text in the message")

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


class _Request:
    """One raw Bot API call: its method and JSON parameters, and whether it went as paid."""

    __slots__ = ("endpoint", "paid", "params")

    def __init__(self, endpoint: str, params: dict[str, Any]) -> None:
        self.endpoint = endpoint
        self.params = params
        self.paid = False


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
    paid: bool = False  # sent with allow_paid_broadcast (Telegram charged Stars for it)


# Told when a request has left the rate limiter (its slot in Telegram's windows is taken).
OnStamp = Callable[[], None]
# Renders the item for the chat, as a photo post when allowed.
RenderPost = Callable[[bool], Post]


class Sender:
    """Sends and edits through one Bot; every method returns a SendResult, never raises a
    TelegramError."""

    def __init__(
        self, bot: ExtBot[Any], *, paid_broadcast: bool = False, scrub: Callable[[str], str] = str
    ) -> None:
        self.bot = bot
        self.paid_broadcast = paid_broadcast
        # Applied to every error text before it is stored or logged (the token, any spelling).
        self.scrub = scrub

    def describe(self, exc: BaseException, *, prefix: str = "") -> str:
        """The one way an error becomes text here: stored, logged, shown in /why; secrets
        (the token, in any spelling) scrubbed."""
        text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        return self.scrub(f"{prefix}: {text}" if prefix else text)

    # ------------------------------------------------------------------ posts

    async def send_post(
        self, chat: Chat, render: RenderPost, *, on_stamp: OnStamp | None = None
    ) -> SendResult:
        """Send the post `render` makes for `chat`; a photo Telegram cannot use falls back to
        text at once. An answer `ok: true` is a sent message even when its body is odd."""
        post = render(True)

        async def attempt() -> SendResult:
            request = self._post_request(chat, post)
            try:
                answer = await self._call(request, on_stamp)
            except BadRequest as exc:
                if not (post.is_photo and _mentions(exc, _PHOTO_PROBLEMS)):
                    return self.classify(exc)
                log.info("photo for chat %d refused (%s); sending text", chat.id, exc.message,
                         extra={"chat_id": chat.id})  # fmt: skip
                request = self._post_request(chat, render(False))
                try:
                    answer = await self._call(request, on_stamp)
                except TelegramError as retry_exc:
                    return self.classify(retry_exc)
            except TelegramError as exc:
                return self.classify(exc)
            return SendResult(Outcome.SENT, _message_id(answer), paid=request.paid)

        return await self._accepted(chat.id, attempt, lean=True)

    def _post_request(self, chat: Chat, post: Post) -> _Request:
        """The Bot API call that sends `post` to `chat`, as its JSON parameters."""
        params: dict[str, Any] = {
            "chat_id": chat.id,
            "parse_mode": ParseMode.HTML.value,
            "disable_notification": chat.settings.silent,
        }
        if chat.settings.thread_id:
            params["message_thread_id"] = chat.settings.thread_id
        if post.photo_url:
            params["photo"], params["caption"] = post.photo_url, post.html
            return _Request("sendPhoto", params)
        params["text"] = post.html
        params["link_preview_options"] = _preview_fields(post)
        return _Request("sendMessage", params)

    async def _call(self, request: _Request, on_stamp: OnStamp | None) -> Any:
        """Make `request` through the bot's limiter and HTTP layer; return the raw result.

        Posts skip PTB's typed methods and its parameter plumbing: building a Message out of
        every answer, the defaults and each parameter's conversion on the way in were a third
        of the CPU of a send at 1,000 a second, for one field (message_id) read back. The
        limiter, the HTTP layer and PTB's reading of errors are the same as for every call.
        """
        limiter = _limiter_args(on_stamp)
        if self.paid_broadcast:
            limiter["may_pay"] = True  # the limiter pays only beyond the free rate
        params = request.params
        url = f"{self.bot.base_url}/{request.endpoint}"

        async def post() -> Any:
            # The body is made only now: the limiter has just set or dropped the paid flag.
            return await self.bot.request.post(url, JsonBody(params))

        rate_limiter = self.bot.rate_limiter
        try:
            if rate_limiter is None:
                return await post()
            return await rate_limiter.process_request(
                callback=post, args=(), kwargs={}, endpoint=request.endpoint, data=params,
                rate_limit_args=limiter,
            )  # fmt: skip
        finally:
            # The limiter says in our own dict whether the send left as a paid broadcast.
            request.paid = limiter.get("paid") is True

    # ------------------------------------------------------------------ edits

    async def edit_post(
        self,
        chat: Chat,
        message_id: int,
        render: RenderPost,
        *,
        as_photo: bool,
        on_stamp: OnStamp | None = None,
    ) -> SendResult:
        """Edit a sent post to show what `render` makes now: its caption when it was sent as a
        photo, else its text; when Telegram says it is the other kind, the other edit is tried
        once. "Not modified" is done. Other refusals are final (FAILED), not retried."""
        for photo in (as_photo, not as_photo):
            post = render(photo)
            try:
                await self._accepted(
                    chat.id, partial(self._edit, chat.id, message_id, post, photo, on_stamp)
                )
            except BadRequest as exc:
                if _mentions(exc, (_NOT_MODIFIED,)):
                    return SendResult(Outcome.SENT, message_id)
                if _mentions(exc, _WRONG_KIND):
                    continue
                result = self.classify(exc)
                if result.outcome is Outcome.RETRY:
                    return SendResult(Outcome.FAILED, error=result.error)
                return result
            except TelegramError as exc:
                return self.classify(exc)
            return SendResult(Outcome.SENT, message_id)
        return SendResult(Outcome.FAILED, error="the message is neither text nor a caption")

    async def _edit(
        self, chat_id: int, message_id: int, post: Post, caption: bool, on_stamp: OnStamp | None
    ) -> SendResult:
        limiter = _limiter_args(on_stamp)
        if caption:
            await self.bot.edit_message_caption(
                chat_id=chat_id, message_id=message_id, caption=post.html,
                parse_mode=ParseMode.HTML, rate_limit_args=limiter,
            )  # fmt: skip
        else:
            await self.bot.edit_message_text(
                text=post.html, chat_id=chat_id, message_id=message_id,
                parse_mode=ParseMode.HTML, link_preview_options=_preview(post),
                rate_limit_args=limiter,
            )  # fmt: skip
        return SendResult(Outcome.SENT, message_id)

    # ------------------------------------------------------------------ notices

    async def send_notice(
        self, chat_id: int, html: str, *, on_stamp: OnStamp | None = None
    ) -> SendResult:
        """Send a plain HTML message (no preview) to a chat, e.g. an admin's private chat."""

        async def attempt() -> SendResult:
            try:
                message = await self.bot.send_message(
                    chat_id, html, parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW,
                    rate_limit_args=_limiter_args(on_stamp),
                )  # fmt: skip
            except TelegramError as exc:
                return self.classify(exc)
            return SendResult(Outcome.SENT, message.message_id)

        return await self._accepted(chat_id, attempt)

    # ------------------------------------------------------------------ answers

    async def _accepted(
        self, chat_id: int, attempt: Callable[[], Awaitable[SendResult]], *, lean: bool = False
    ) -> SendResult:
        """Run `attempt`; when Telegram said ok but its answer could not be read, it is SENT.
        `lean`: `attempt` reads nothing of the answer but the message's id."""
        with watch_accepted(lean=lean) as accepted:
            try:
                return await attempt()
            except TelegramError:
                raise
            except Exception:
                if not accepted.ok:
                    raise
                log.warning("Telegram accepted a message to chat %d but its answer could not be "
                            "read; recorded as sent", chat_id, exc_info=True)  # fmt: skip
                result = accepted.result
                message_id = result.get("message_id") if isinstance(result, dict) else None
                return SendResult(Outcome.SENT, message_id if isinstance(message_id, int) else None)

    def classify(self, exc: TelegramError) -> SendResult:
        """What a refusal or a failure to reach Telegram means for the outbox row."""
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


def _preview_fields(post: Post) -> dict[str, Any]:
    """The preview card pinned to the article, unless the chat's style has none, as the Bot
    API's LinkPreviewOptions fields (the raw post's JSON)."""
    if post.disable_preview:
        return {"is_disabled": True}
    return {"url": post.link, "prefer_large_media": True}


def _preview(post: Post) -> LinkPreviewOptions:
    """The same preview for PTB's typed calls (edits)."""
    return LinkPreviewOptions(**_preview_fields(post))


def _limiter_args(on_stamp: OnStamp | None) -> dict[str, object]:
    # retry=False: a 429 is the outbox's to wait out (the row is rescheduled), not the limiter's.
    args: dict[str, object] = {"retry": False}
    if on_stamp is not None:
        args["on_stamp"] = on_stamp
    return args


def _message_id(answer: Any) -> int | None:
    message_id = answer.get("message_id") if isinstance(answer, dict) else None
    return message_id if isinstance(message_id, int) else None


def _mentions(exc: TelegramError, needles: tuple[str, ...]) -> bool:
    message = exc.message.lower()
    return any(needle in message for needle in needles)
