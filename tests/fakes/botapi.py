"""A fake Telegram Bot API server (aiohttp) for end-to-end tests of the bot.

Point python-telegram-bot at it with ``Bot(token, base_url=f"{api.url}/bot")``. It keeps
chats, messages, members and an update queue in memory, validates what Telegram
validates (HTML entities, lengths, keyboards), enforces Telegram's flood limits with
sliding windows, and can be scripted to fail. Every request is recorded in
``api.calls`` so tests can assert on what the bot actually sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from aiohttp import web

from tests.fakes.local import LocalServer
from tests.fakes.telegram_html import TelegramHtmlError, parse_html, utf16_len

__all__ = [
    "MESSAGE_METHODS",
    "RATE_LIMITED_METHODS",
    "ApiCall",
    "ApiError",
    "FakeBotApi",
    "FileUpload",
    "HtmlErrorRecord",
]

JSONDict = dict[str, Any]
_T = TypeVar("_T")
ChatRef = int | str

#: Methods that deliver a new message; ``FakeBotApi.sent()`` lists their successes.
MESSAGE_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendMediaGroup",
        "sendDocument",
        "sendVideo",
        "sendAnimation",
        "copyMessage",
        "forwardMessage",
    }
)
#: Methods subject to the flood-control windows.
RATE_LIMITED_METHODS = MESSAGE_METHODS | {"editMessageText", "editMessageCaption"}
# Telegram refuses these for a chat whose user blocked the bot (forbid()).
_FORBIDDEN_METHODS = MESSAGE_METHODS | {"sendChatAction"}

MESSAGE_TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
CHAT_NOT_FOUND = "Bad Request: chat not found"
MEMBER_STATUSES = frozenset({"creator", "administrator", "member", "restricted", "left", "kicked"})

# Form fields arrive as strings; these are converted back to the Bot API types.
_INT_PARAMS = frozenset(
    {
        "chat_id",
        "from_chat_id",
        "message_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "message_thread_id",
        "reply_to_message_id",
        "cache_time",
        "max_connections",
        "until_date",
        "duration",
        "width",
        "height",
    }
)
_BOOL_PARAMS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "allow_paid_broadcast",
        "allow_sending_without_reply",
        "disable_web_page_preview",
        "disable_content_type_detection",
        "show_caption_above_media",
        "has_spoiler",
        "show_alert",
        "is_personal",
        "drop_pending_updates",
    }
)
# Free text that must never be JSON-decoded, even when it looks like "[1]" or "{}".
_TEXT_PARAMS = frozenset(
    {
        "text",
        "caption",
        "query",
        "description",
        "short_description",
        "callback_query_id",
        "inline_query_id",
        "inline_message_id",
        "url",
        "next_offset",
        "parse_mode",
        "language_code",
        "action",
        "secret_token",
        "photo",
        "document",
        "video",
        "animation",
        "title",
        "custom_title",
    }
)

_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_LEADING_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![A-Za-z0-9_])")
# Updates Telegram does not deliver unless asked for explicitly in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_post_messages",
    "can_edit_messages",
    "can_pin_messages",
    "can_manage_topics",
)
_RESTRICTED_RIGHTS = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
    "can_edit_tag",
    "can_react_to_messages",
)


@dataclass(frozen=True, slots=True)
class FileUpload:
    """A file part of a multipart request."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass(slots=True)
class ApiCall:
    """One request to the fake and the answer it got.

    ``status`` stays ``None`` while the answer is pending (a long poll).
    """

    method: str
    params: JSONDict
    at: float
    ok: bool = False
    status: int | None = None
    error_code: int | None = None
    description: str | None = None
    parameters: JSONDict | None = None
    result: Any = None
    files: dict[str, FileUpload] = field(default_factory=dict)

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def text(self) -> str | None:
        """The raw (unparsed) text or caption that was sent."""
        value = self.params.get("text", self.params.get("caption"))
        return value if isinstance(value, str) else None

    @property
    def retry_after(self) -> int | None:
        return (self.parameters or {}).get("retry_after")

    def __str__(self) -> str:
        answer = "pending" if self.status is None else "ok" if self.ok else f"{self.error_code}"
        detail = f" {self.description}" if self.description else ""
        return f"{self.method}(chat_id={self.chat_id!r}) -> {answer}{detail}"


@dataclass(frozen=True, slots=True)
class HtmlErrorRecord:
    """Text the fake refused because its HTML was invalid."""

    method: str
    text: str
    description: str


@dataclass(slots=True)
class _Fault:
    methods: frozenset[str] | None  # None: any rate-limited (sending/editing) method
    chat_id: ChatRef | None
    error_code: int
    description: str
    parameters: JSONDict | None
    times: int
    html_page: bool = False  # answer with nginx's HTML error page instead of JSON
    raw_body: str | None = None  # answer with this body as it is (status error_code)


@dataclass(slots=True)
class _Window:
    """Sliding window of accepted request times."""

    limit: int
    length: float
    times: deque[float] = field(default_factory=deque)

    def wait_needed(self, now: float) -> float:
        """Seconds until one more request fits (0 if it fits now)."""
        while self.times and self.times[0] <= now - self.length:
            self.times.popleft()
        if len(self.times) < self.limit:
            return 0.0
        # The window frees a slot when the (len-limit+1)-th oldest entry expires.
        return self.times[len(self.times) - self.limit] + self.length - now


class ApiError(Exception):
    """Raised inside handlers to produce a Bot API error answer."""

    def __init__(
        self, error_code: int, description: str, parameters: JSONDict | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters


class _RawError(Exception):
    """A non-JSON answer, like the HTML page of a 502 from Telegram's nginx."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


class FakeBotApi(LocalServer):
    """In-memory Telegram Bot API served over HTTP on 127.0.0.1.

    Use as ``async with FakeBotApi() as api:`` (or ``start()``/``stop()``). State
    (``chats``, ``messages``, ``calls``...) is public so tests can inspect and seed it.
    ``clock`` (default ``time.monotonic``) timestamps calls and drives the rate-limit
    windows; tests may replace it with a fake clock.

    Modelling choices where Telegram is vague:

    * a request counts once in the flood windows, an album included;
    * ``private_per_second`` below 1 means one message per ``1/rate`` seconds;
    * chats not added explicitly are created on first send (unless ``strict_chats``):
      positive ids are private chats, ``-100…`` ids supergroups, other negative ids
      basic groups and unknown ``@username`` channels; lookups (getChat,
      getChatMember...) only answer for chats that exist;
    * ``strict_html`` (default) also rejects what Telegram tolerates against its own
      documentation (bare ``&``/``>``, unquoted attributes, ``<a>`` without href).
    """

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        *,
        bot_user: Mapping[str, Any] | None = None,
        enforce_limits: bool = True,
        global_per_second: int = 30,
        group_per_minute: int = 20,
        private_per_second: float = 1.0,
        limit_window_scale: float = 1.0,
        strict_html: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.token = token
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456
        self.bot_user: JSONDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "Test Bot",
            "username": "test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": True,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self.bot_user.update(bot_user or {})
        self.enforce_limits = enforce_limits
        self.global_per_second = global_per_second
        self.group_per_minute = group_per_minute
        self.private_per_second = private_per_second
        self.limit_window_scale = limit_window_scale
        #: Check HTML against the documented rules too (see telegram_html).
        self.strict_html = strict_html
        #: When True only chats added with add_chat() exist.
        self.strict_chats = False
        #: sendPhoto with one of these URLs fails as if Telegram couldn't fetch it.
        self.bad_photo_urls: set[str] = set()
        self.clock = clock

        self.calls: list[ApiCall] = []
        self.html_errors: list[HtmlErrorRecord] = []
        self.rate_violations = 0
        self.chats: dict[int, JSONDict] = {}
        self.messages: dict[tuple[int, int], JSONDict] = {}
        self.members: dict[tuple[int, int], JSONDict] = {}
        self.users: dict[int, JSONDict] = {}
        self.commands: dict[tuple[str, str], list[JSONDict]] = {}
        self.descriptions: dict[str, str] = {}
        self.short_descriptions: dict[str, str] = {}
        self.callback_answers: list[JSONDict] = []
        self.inline_answers: list[JSONDict] = []
        self.allowed_updates: list[str] | None = None
        self.webhook_url = ""
        self.updates: list[JSONDict] = []

        self._usernames: dict[str, int] = {}
        self._next_message_id: dict[int, int] = {}
        self._update_ids = itertools.count(1000)
        self._callback_ids = itertools.count(1)
        self._inline_ids = itertools.count(1)
        self._synthetic_chat_ids = itertools.count(1)
        self._faults: list[_Fault] = []
        self._odd_success: dict[str, int] = {}
        self._redirect_loops: dict[str, int] = {}
        # Awaited after a call succeeded, before it is answered: a test can act "while the
        # request is in flight" (take a lock, limit the bot's files, stop the clock).
        self.before_success: Callable[[ApiCall], Awaitable[None]] | None = None
        self._forbidden: dict[ChatRef, str] = {}
        self._migrated: dict[ChatRef, int] = {}
        self._windows: dict[tuple[str, int | None], _Window] = {}
        self._updates_arrived = asyncio.Event()
        self._poll_generation = 0
        self._closing = False

        self._handlers: dict[str, Callable[[ApiCall], Any]] = {
            "getMe": self._get_me,
            "logOut": self._true,
            "close": self._true,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setWebhook": self._set_webhook,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendVideo": self._send_video,
            "sendAnimation": self._send_animation,
            "sendMediaGroup": self._send_media_group,
            "copyMessage": self._copy_message,
            "forwardMessage": self._forward_message,
            "sendChatAction": self._send_chat_action,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "answerInlineQuery": self._answer_inline_query,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setMyDescription": self._set_my_description,
            "getMyDescription": self._get_my_description,
            "setMyShortDescription": self._set_my_short_description,
            "getMyShortDescription": self._get_my_short_description,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "leaveChat": self._leave_chat,
            "getChatAdministrators": self._get_chat_administrators,
            "getChatMemberCount": self._get_chat_member_count,
            "getForumTopicIconStickers": lambda call: [],
            "getUserProfilePhotos": lambda call: {"total_count": 0, "photos": []},
        }
        # Bot API method names are case-insensitive.
        self._method_names = {name.lower(): name for name in [*self._handlers, "getUpdates"]}

    # -- lifecycle -----------------------------------------------------------------------

    # A short shutdown timeout: pending long polls are released by stop() anyway.
    shutdown_timeout = 1.0

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def start(self) -> None:
        self._closing = False
        await super().start()

    async def stop(self) -> None:
        """Release long polls and shut the server down."""
        self._closing = True
        self._wake_pollers()
        await super().stop()

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:41234``."""
        return self.origin

    @property
    def base_url(self) -> str:
        """What to pass as python-telegram-bot's ``base_url`` (token is appended)."""
        return f"{self.url}/bot"

    # -- inspection helpers -------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        """All calls of ``method`` (any outcome), in arrival order."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def sent(self, chat_id: ChatRef | None = None) -> list[ApiCall]:
        """Successful message-sending calls, optionally only those to ``chat_id``."""
        return [
            c
            for c in self.calls
            if c.ok
            and c.method in MESSAGE_METHODS
            and (chat_id is None or self._call_targets(c, chat_id))
        ]

    def sent_texts(self, chat_id: ChatRef | None = None) -> list[str]:
        """Plain texts/captions (after entity parsing) of the messages sent."""
        texts: list[str] = []
        for call in self.sent(chat_id):
            results = call.result if isinstance(call.result, list) else [call.result]
            for message in results:
                if isinstance(message, dict):
                    text = message.get("text", message.get("caption"))
                    if text is not None:
                        texts.append(text)
        return texts

    async def wait_for(self, predicate: Callable[[FakeBotApi], bool], timeout: float = 5.0) -> None:
        """Poll until ``predicate(self)`` is true, else fail with recent calls listed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            if loop.time() >= deadline:
                recent = "\n  ".join(str(c) for c in self.calls[-15:]) or "(no calls)"
                raise AssertionError(
                    f"condition not met within {timeout} s; last calls:\n  {recent}"
                )
            await asyncio.sleep(0.01)

    async def wait_sent(
        self, n: int, chat_id: ChatRef | None = None, timeout: float = 5.0
    ) -> list[ApiCall]:
        """Wait until at least ``n`` messages were sent (to ``chat_id``); return them."""
        await self.wait_for(lambda api: len(api.sent(chat_id)) >= n, timeout)
        return self.sent(chat_id)

    # -- scripted faults ----------------------------------------------------------------

    def fail(
        self,
        method: str | Iterable[str] | None,
        *,
        chat_id: ChatRef | None = None,
        error_code: int = 400,
        description: str = "Bad Request: scripted failure",
        parameters: JSONDict | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching calls with this error instead of success.

        ``method`` may be one name, several, or None for any rate-limited method
        (sends and edits); ``chat_id`` None matches every chat. Faults are consumed
        in the order they were queued.
        """
        self._faults.append(
            _Fault(_method_set(method), chat_id, error_code, description, parameters, times)
        )

    def clear_faults(self) -> None:
        """Drop every scripted fault not consumed yet (Telegram is healthy again)."""
        self._faults.clear()

    def retry_after(self, chat_id: ChatRef | None, seconds: int, times: int = 1) -> None:
        """Scripted flood-control answer for sends to ``chat_id`` (None: any chat)."""
        self.fail(
            None,
            chat_id=chat_id,
            error_code=429,
            description=f"Too Many Requests: retry after {seconds}",
            parameters={"retry_after": seconds},
            times=times,
        )

    def forbid(
        self, chat_id: ChatRef, description: str = "Forbidden: bot was blocked by the user"
    ) -> None:
        """Refuse every send to ``chat_id`` with 403 until ``unforbid``."""
        self._forbidden[chat_id] = description

    def unforbid(self, chat_id: ChatRef) -> None:
        self._forbidden.pop(chat_id, None)

    def migrate(self, chat_id: int, new_chat_id: int) -> None:
        """Turn ``chat_id`` into a migrated group: calls to it answer migrate_to_chat_id.

        The new supergroup is created (unless known) and takes over the title.
        """
        self._migrated[chat_id] = new_chat_id
        if new_chat_id not in self.chats:
            title = self.chats.get(chat_id, {}).get("title", f"Chat {new_chat_id}")
            self.add_chat(new_chat_id, "supergroup", title=title)

    def server_error(self, method: str | None, times: int = 1, *, status: int = 500) -> None:
        """Make the next ``times`` calls fail like Telegram's backend does.

        500 gives a JSON error; 502/504 give nginx's HTML page, as the real server.
        """
        fault = _Fault(_method_set(method), None, status, "Internal Server Error", None, times)
        fault.html_page = status != 500
        self._faults.append(fault)

    def redirect_loop(self, method: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with a redirect to themselves, as a
        misconfigured proxy might: a client that follows it ends in "too many redirects",
        with the request's URL (the token in it) in its error text."""
        self._redirect_loops[method] = self._redirect_loops.get(method, 0) + times

    def odd_success(self, method: str, times: int = 1) -> None:
        """Accept the next ``times`` calls of ``method`` but answer ``ok: true`` with a result
        that is not the object the method returns (the call still counts as done)."""
        self._odd_success[method] = self._odd_success.get(method, 0) + times

    def garbage(
        self, method: str | None, times: int = 1, *, body: str = "<h1>It works!</h1>"
    ) -> None:
        """Answer the next ``times`` calls with status 200 and ``body`` instead of Bot API JSON.

        What a captive portal or a misconfigured proxy in front of the Bot API answers.
        """
        self._faults.append(_Fault(_method_set(method), None, 200, "", None, times, raw_body=body))

    # -- chats, users, members ----------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        type: str,  # the Bot API field name
        title: str | None = None,
        username: str | None = None,
        is_forum: bool = False,
    ) -> JSONDict:
        """Register a chat (private/group/supergroup/channel) and return its Chat dict."""
        if type not in {"private", "group", "supergroup", "channel"}:
            raise ValueError(f"unknown chat type {type!r}")
        chat: JSONDict = {"id": chat_id, "type": type}
        if type == "private":
            chat["first_name"] = title or f"User{chat_id}"
        else:
            chat["title"] = title or f"Chat {chat_id}"
        if username:
            chat["username"] = username.lstrip("@")
            self._usernames[chat["username"].lower()] = chat_id
        if is_forum:
            chat["is_forum"] = True
        self.chats[chat_id] = chat
        return dict(chat)

    def user(
        self,
        id: int,  # the Bot API field name
        first_name: str = "U",
        language_code: str | None = "en",
        username: str | None = None,
    ) -> JSONDict:
        """Build (and remember, for getChatMember) a User dict."""
        user: JSONDict = {"id": id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        self.users[id] = user
        return dict(user)

    def set_member(self, chat_id: int, user_id: int, status: str, **rights: Any) -> JSONDict:
        """Set a member's status and rights in a chat; returns the ChatMember dict.

        Administrator rights default to True, restricted permissions to False;
        ``rights`` override them (and may add fields such as ``custom_title``).
        """
        member = self._member_dict(self._user_for(user_id), status, rights)
        self.members[(chat_id, user_id)] = member
        return _deepcopy(member)

    # -- updates ------------------------------------------------------------------------

    def push_update(self, update: Mapping[str, Any]) -> int:
        """Queue an update for getUpdates; returns the assigned update_id."""
        update_id = next(self._update_ids)
        self.updates.append({**update, "update_id": update_id})
        self._wake_pollers()
        return update_id

    def make_message_update(
        self, chat: JSONDict | int, from_user: JSONDict, text: str, **extra: Any
    ) -> JSONDict:
        """An incoming text message (a ``channel_post`` in channels).

        A leading ``/command`` gets its bot_command entity. The message is stored in
        ``messages`` (the bot can't edit it: it belongs to the user).
        """
        chat = self._chat_dict(chat)
        message: JSONDict = {
            "message_id": self._allocate_message_id(chat["id"]),
            "date": int(time.time()),
            "chat": dict(chat),
            "text": text,
        }
        if chat["type"] == "channel":
            message["sender_chat"] = dict(chat)
        else:
            message["from"] = dict(from_user)
        command = _LEADING_COMMAND_RE.match(text)
        if command:
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_len(command.group())}
            ]
        message.update(extra)
        self.messages[(chat["id"], message["message_id"])] = message
        kind = "channel_post" if chat["type"] == "channel" else "message"
        return {kind: _deepcopy(message)}

    def make_callback_update(
        self, chat: JSONDict | int, from_user: JSONDict, data: str, message_id: int
    ) -> JSONDict:
        """A callback query pressed on ``message_id`` (inaccessible if unknown)."""
        chat = self._chat_dict(chat)
        stored = self.messages.get((chat["id"], message_id))
        # Telegram sends an InaccessibleMessage (date 0) when it can't show the message.
        message = (
            _deepcopy(stored)
            if stored
            else {"chat": dict(chat), "message_id": message_id, "date": 0}
        )
        return {
            "callback_query": {
                "id": str(next(self._callback_ids)),
                "from": dict(from_user),
                "chat_instance": str(abs(hash(chat["id"])) % 10**12),
                "message": message,
                "data": data,
            }
        }

    def make_inline_query_update(
        self, from_user: JSONDict, query: str, offset: str = ""
    ) -> JSONDict:
        """An inline query typed by ``from_user`` (in the private chat with the bot)."""
        return {
            "inline_query": {
                "id": str(next(self._inline_ids)),
                "from": dict(from_user),
                "query": query,
                "offset": offset,
                "chat_type": "sender",
            }
        }

    def make_my_chat_member_update(
        self,
        chat: JSONDict | int,
        from_user: JSONDict,
        old_status: str,
        new_status: str,
        **rights: Any,
    ) -> JSONDict:
        """The bot's own membership changed in ``chat``.

        Also records the new status (``set_member``), so later getChatMember calls
        agree with the update, as on the real server.
        """
        chat = self._chat_dict(chat)
        bot = self._public_bot_user()
        old = self._member_dict(bot, old_status, {})
        new = self.set_member(chat["id"], bot["id"], new_status, **rights)
        return {
            "my_chat_member": {
                "chat": dict(chat),
                "from": dict(from_user),
                "date": int(time.time()),
                "old_chat_member": old,
                "new_chat_member": new,
            }
        }

    # -- HTTP ---------------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    async def _handle(self, request: web.Request) -> web.Response:
        raw_method = request.match_info["method"]
        params, files = await self._read_params(request)
        method = self._method_names.get(raw_method.lower(), raw_method)
        call = ApiCall(method=method, params=params, at=self.clock(), files=files)
        self.calls.append(call)
        if self._redirect_loops.get(method, 0) > 0:
            self._redirect_loops[method] -= 1
            call.status = 302
            raise web.HTTPFound(location=str(request.url))
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            if raw_method.lower() not in self._method_names:
                raise ApiError(404, "Not Found")
            if method == "getUpdates":
                result = await self._get_updates(call, request)
            else:
                result = self._dispatch(call)
        except ApiError as error:
            call.status = call.error_code = error.error_code
            call.description = error.description
            call.parameters = error.parameters
            body: JSONDict = {
                "ok": False,
                "error_code": error.error_code,
                "description": error.description,
            }
            if error.parameters:
                body["parameters"] = error.parameters
            return web.json_response(body, status=error.error_code)
        except _RawError as error:
            call.status = call.error_code = error.status
            call.description = error.body
            return web.Response(text=error.body, status=error.status, content_type="text/html")
        call.ok, call.status, call.result = True, 200, result
        if self.before_success is not None:
            await self.before_success(call)
        if self._odd_success.get(method, 0) > 0:
            # Accepted (the message exists, as far as the test is concerned), but the body
            # is nothing a client can read as a Message: what a broken proxy or emulator says.
            self._odd_success[method] -= 1
            return web.json_response({"ok": True, "result": {"accepted": True}})
        return web.json_response({"ok": True, "result": result})

    async def _read_params(self, request: web.Request) -> tuple[JSONDict, dict[str, FileUpload]]:
        """Collect parameters from the query string and a form, multipart or JSON body."""
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, FileUpload] = {}
        if request.can_read_body:
            if request.content_type == "application/json":
                with contextlib.suppress(ValueError):
                    body = await request.json()
                    if isinstance(body, dict):
                        raw.update(body)
            else:
                # Handles both application/x-www-form-urlencoded and multipart/form-data.
                for name, value in (await request.post()).items():
                    if isinstance(value, web.FileField):
                        files[name] = FileUpload(
                            name, value.filename, value.content_type, value.file.read()
                        )
                    else:
                        raw[name] = value
        params = {key: _convert_param(key, value) for key, value in raw.items()}
        # A file sent directly (not via attach://) stands in for its parameter.
        for name, upload in files.items():
            params.setdefault(name, upload)
        return params, files

    # -- dispatch pipeline --------------------------------------------------------------

    def _dispatch(self, call: ApiCall) -> Any:
        """Scripted faults, then flood control, then the method itself.

        The rate-limit check and the recording of an accepted request happen without
        an await in between, so concurrent requests can't both take the last slot.
        """
        self._apply_scripted_faults(call)
        windows = self._check_rate_limits(call)
        result = self._handlers[call.method](call)
        for window in windows:
            window.times.append(call.at)
        return result

    def _apply_scripted_faults(self, call: ApiCall) -> None:
        raw_chat = call.params.get("chat_id")
        if raw_chat is not None:
            for old, new in self._migrated.items():
                if self._same_chat(raw_chat, old):
                    raise ApiError(
                        400,
                        "Bad Request: group chat was upgraded to a supergroup chat",
                        {"migrate_to_chat_id": new},
                    )
            if call.method in _FORBIDDEN_METHODS:
                for chat, description in self._forbidden.items():
                    if self._same_chat(raw_chat, chat):
                        raise ApiError(403, description)
        for fault in self._faults:
            if fault.methods is None:
                if call.method not in RATE_LIMITED_METHODS:
                    continue
            elif call.method.lower() not in fault.methods:
                continue
            if fault.chat_id is not None and (
                raw_chat is None or not self._same_chat(raw_chat, fault.chat_id)
            ):
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            if fault.raw_body is not None:
                raise _RawError(fault.error_code, fault.raw_body)
            if fault.html_page:
                raise _RawError(fault.error_code, _nginx_page(fault.error_code))
            raise ApiError(fault.error_code, fault.description, fault.parameters)

    def _check_rate_limits(self, call: ApiCall) -> list[_Window]:
        """Raise 429 if a window is full; else return the windows to record into."""
        if not self.enforce_limits or call.method not in RATE_LIMITED_METHODS:
            return []
        scale = self.limit_window_scale
        windows = [self._window(("global", None), self.global_per_second, 1.0 / scale)]
        raw_chat = call.params.get("chat_id")
        if raw_chat is not None:
            chat = self._resolve_chat(raw_chat)
            if chat["id"] > 0:
                # A fractional rate (0.5/s) becomes 1 message per 2 s.
                rate = self.private_per_second
                limit, length = (int(rate), 1.0) if rate >= 1 else (1, 1.0 / rate)
                windows.append(self._window(("chat", chat["id"]), limit, length / scale))
            else:
                windows.append(
                    self._window(("chat", chat["id"]), self.group_per_minute, 60.0 / scale)
                )
        wait = max(window.wait_needed(call.at) for window in windows)
        if wait > 0:
            self.rate_violations += 1
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds}
            )
        return windows

    def _window(self, key: tuple[str, int | None], limit: int, length: float) -> _Window:
        window = self._windows.get(key)
        if window is None or window.limit != limit or window.length != length:
            # Limits may be changed by a test between calls; keep the history.
            window = _Window(limit, length, window.times if window else deque())
            self._windows[key] = window
        return window

    # -- chat helpers -------------------------------------------------------------------

    def _resolve_chat(self, raw: Any) -> JSONDict:
        """The Chat dict for a chat_id parameter, creating implicit chats if allowed."""
        if isinstance(raw, str):
            if raw.startswith("@"):
                chat_id = self._usernames.get(raw[1:].lower())
                if chat_id is not None:
                    return self.chats[chat_id]
                if self.strict_chats:
                    raise ApiError(400, CHAT_NOT_FOUND)
                # An unknown public username: most likely a channel for a publishing bot.
                new_id = -1001000000000 - next(self._synthetic_chat_ids)
                self.add_chat(new_id, "channel", username=raw[1:])
                return self.chats[new_id]
            try:
                raw = int(raw)
            except ValueError:
                raise ApiError(400, CHAT_NOT_FOUND) from None
        if not isinstance(raw, int) or isinstance(raw, bool) or raw == 0:
            raise ApiError(400, CHAT_NOT_FOUND)
        chat = self.chats.get(raw)
        if chat is not None:
            return chat
        if self.strict_chats:
            raise ApiError(400, CHAT_NOT_FOUND)
        if raw > 0:
            kind = "private"
        elif raw <= -1000000000000:
            kind = "supergroup"
        else:
            kind = "group"
        self.add_chat(raw, kind)
        return self.chats[raw]

    def _chat_dict(self, chat: JSONDict | int) -> JSONDict:
        """Chat for the update builders: a known id, or a dict (registered if new)."""
        if isinstance(chat, int):
            return dict(self._resolve_chat(chat))
        if chat["id"] not in self.chats:
            self.chats[chat["id"]] = dict(chat)
            if chat.get("username"):
                self._usernames[chat["username"].lower()] = chat["id"]
        return dict(chat)

    def _same_chat(self, raw: Any, ref: ChatRef) -> bool:
        """Whether a chat_id parameter and a reference (id or @username) are one chat."""
        a, b = _normalize_chat_ref(raw), _normalize_chat_ref(ref)
        if a is None or b is None:
            return False
        if a == b:
            return True
        ids = {self._lookup_chat_id(a), self._lookup_chat_id(b)}
        return None not in ids and len(ids) == 1

    def _lookup_chat_id(self, ref: ChatRef) -> int | None:
        if isinstance(ref, int):
            return ref
        return self._usernames.get(ref.lstrip("@").lower())

    def _call_targets(self, call: ApiCall, chat_id: ChatRef) -> bool:
        if self._same_chat(call.params.get("chat_id"), chat_id):
            return True
        results = call.result if isinstance(call.result, list) else [call.result]
        return any(
            isinstance(r, dict) and "chat" in r and self._same_chat(r["chat"]["id"], chat_id)
            for r in results
        )

    def _allocate_message_id(self, chat_id: int) -> int:
        next_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = next_id + 1
        return next_id

    def _public_bot_user(self) -> JSONDict:
        # The getMe-only capability flags don't appear on users inside other objects.
        keys = ("id", "is_bot", "first_name", "last_name", "username")
        return {k: self.bot_user[k] for k in keys if k in self.bot_user}

    def _user_for(self, user_id: int) -> JSONDict:
        if user_id == self.bot_user["id"]:
            return self._public_bot_user()
        return dict(
            self.users.get(user_id)
            or {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        )

    def _member_dict(self, user: JSONDict, status: str, rights: Mapping[str, Any]) -> JSONDict:
        """A ChatMember dict with every field python-telegram-bot requires."""
        if status not in MEMBER_STATUSES:
            raise ValueError(f"unknown member status {status!r}")
        member: JSONDict = {"status": status, "user": dict(user)}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(can_be_edited=False, is_anonymous=False)
            member.update(dict.fromkeys(_ADMIN_RIGHTS, True))
        elif status == "restricted":
            member.update(is_member=True, until_date=0)
            member.update(dict.fromkeys(_RESTRICTED_RIGHTS, False))
        elif status == "kicked":
            member["until_date"] = 0
        member.update(rights)
        return member

    def _member(self, chat: JSONDict, user_id: int) -> JSONDict:
        member = self.members.get((chat["id"], user_id))
        if member is not None:
            return _deepcopy(member)
        # The bot is an all-rights admin wherever the test didn't say otherwise.
        if user_id == self.bot_user["id"] and chat["type"] != "private":
            return self._member_dict(self._public_bot_user(), "administrator", {})
        return self._member_dict(self._user_for(user_id), "member", {})

    # -- text and markup validation -----------------------------------------------------

    def _format(
        self, method: str, text: Any, parse_mode: Any, entities: Any, *, limit: int, kind: str
    ) -> tuple[str, list[JSONDict]]:
        """Parse text or caption like Telegram; returns (plain text, entities).

        ``kind`` is "text" or "caption" and selects the error descriptions.
        """
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise _bad(f"can't parse {kind}: string expected")
        found: list[JSONDict] = []
        mode = parse_mode.lower() if isinstance(parse_mode, str) else ""
        if mode == "html":
            try:
                parsed = parse_html(text, strict=self.strict_html)
            except TelegramHtmlError as error:
                self.html_errors.append(HtmlErrorRecord(method, text, error.description))
                raise ApiError(400, error.description) from None
            plain, found = parsed.text, [e.to_dict() for e in parsed.entities]
        elif mode in {"", "markdown", "markdownv2"}:
            plain = text  # Markdown is not validated by this fake.
            if isinstance(entities, list):
                found = [dict(e) for e in entities if isinstance(e, dict)]
        else:
            raise _bad(f"unsupported parse_mode {parse_mode!r}")
        plain, found = _trim(plain, found)
        if kind == "text":
            if not plain:
                raise _bad("message text is empty")
            if utf16_len(plain) > limit:
                raise _bad("message is too long")
        elif utf16_len(plain) > limit:
            raise _bad("message caption is too long")
        return plain, found

    def _validate_markup(self, markup: Any) -> JSONDict | None:
        """Validate reply_markup; return it if it's an inline keyboard (kept on messages)."""
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            return None  # reply keyboards, ForceReply, ReplyKeyboardRemove
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise _bad(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise _bad("can't parse inline keyboard button: Text is not specified")
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                        raise _bad("BUTTON_DATA_INVALID")
                elif "url" in button:
                    url = button["url"]
                    if not isinstance(url, str) or not re.match(r"^(https?|tg)://\S+$", url):
                        raise _bad("BUTTON_URL_INVALID")
                elif not any(
                    key in button
                    for key in (
                        "login_url",
                        "switch_inline_query",
                        "switch_inline_query_current_chat",
                        "switch_inline_query_chosen_chat",
                        "copy_text",
                        "web_app",
                        "callback_game",
                        "pay",
                    )
                ):
                    raise _bad(
                        "can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard"
                    )
        return _deepcopy(markup)

    # -- message creation ---------------------------------------------------------------

    def _new_message(self, call: ApiCall, chat: JSONDict, content: JSONDict) -> JSONDict:
        """Store and return a message sent by the bot to ``chat``."""
        params = call.params
        markup = self._validate_markup(params.get("reply_markup"))
        message: JSONDict = {
            "message_id": self._allocate_message_id(chat["id"]),
            "date": int(time.time()),
            "chat": dict(chat),
        }
        if chat["type"] == "channel":
            message["sender_chat"] = dict(chat)
        else:
            message["from"] = self._public_bot_user()
        thread_id = params.get("message_thread_id")
        if isinstance(thread_id, int) and chat.get("is_forum"):
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        message.update(content)
        if markup is not None:
            message["reply_markup"] = markup
        if params.get("protect_content"):
            message["has_protected_content"] = True
        self.messages[(chat["id"], message["message_id"])] = message
        return _deepcopy(message)

    def _text_content(self, call: ApiCall) -> JSONDict:
        params = call.params
        text, entities = self._format(
            call.method,
            params.get("text"),
            params.get("parse_mode"),
            params.get("entities"),
            limit=MESSAGE_TEXT_LIMIT,
            kind="text",
        )
        content: JSONDict = {"text": text}
        if entities:
            content["entities"] = entities
        preview = params.get("link_preview_options")
        if preview is not None and not isinstance(preview, dict):
            raise _bad("can't parse link preview options JSON object")
        if preview:
            content["link_preview_options"] = dict(preview)
        return content

    def _caption_content(self, call: ApiCall, params: Mapping[str, Any] | None = None) -> JSONDict:
        params = call.params if params is None else params
        if params.get("caption") is None:
            return {}
        caption, entities = self._format(
            call.method,
            params.get("caption"),
            params.get("parse_mode"),
            params.get("caption_entities"),
            limit=CAPTION_LIMIT,
            kind="caption",
        )
        content: JSONDict = {}
        if caption:
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        if params.get("show_caption_above_media"):
            content["show_caption_above_media"] = True
        return content

    def _media_object(
        self, call: ApiCall, kind: str, value: Any, position: int | None = None
    ) -> Any:
        """Validate a file parameter (URL, file_id, upload, attach://) and describe it."""
        if isinstance(value, str) and value.startswith("attach://"):
            value = call.files.get(value.removeprefix("attach://"))
            if value is None:
                raise _bad(f'can\'t find attached file "{kind}"')
        if isinstance(value, FileUpload):
            if not value.data:
                raise _bad("file must be non-empty")
            ident = f"{kind}-upload-{len(value.data)}"
        elif isinstance(value, str) and value:
            if value in self.bad_photo_urls:
                if position is None:
                    raise _bad("wrong type of the web page content")
                raise _bad(
                    f"failed to send message #{position} "
                    'with the error message "WEBPAGE_MEDIA_EMPTY"'
                )
            ident = f"{kind}-{zlib.crc32(value.encode())}"
        else:
            raise _bad(f"there is no {kind} in the request")
        if kind == "photo":
            return [
                {
                    "file_id": f"{ident}-s",
                    "file_unique_id": f"{ident}-s",
                    "width": 90,
                    "height": 60,
                },
                {"file_id": ident, "file_unique_id": ident, "width": 1280, "height": 853},
            ]
        obj: JSONDict = {"file_id": ident, "file_unique_id": ident}
        if kind in {"video", "animation"}:
            obj.update(width=1280, height=720, duration=1)
        return obj

    # -- method handlers ----------------------------------------------------------------

    def _true(self, call: ApiCall) -> bool:
        return True

    def _get_me(self, call: ApiCall) -> JSONDict:
        return dict(self.bot_user)

    def _set_webhook(self, call: ApiCall) -> bool:
        url = call.params.get("url") or ""
        if url and not str(url).startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook_url = str(url)
        if "allowed_updates" in call.params:
            self.allowed_updates = call.params["allowed_updates"] or None
        if call.params.get("drop_pending_updates"):
            self.updates.clear()
        return True

    def _delete_webhook(self, call: ApiCall) -> bool:
        self.webhook_url = ""
        if call.params.get("drop_pending_updates"):
            self.updates.clear()
        return True

    def _get_webhook_info(self, call: ApiCall) -> JSONDict:
        info: JSONDict = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }
        if self.allowed_updates:
            info["allowed_updates"] = list(self.allowed_updates)
        return info

    async def _get_updates(self, call: ApiCall, request: web.Request) -> list[JSONDict]:
        """Long polling: answer at once if updates are pending, else wait for a push."""
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        params = call.params
        if "allowed_updates" in params:
            # Telegram remembers the setting until the next call that passes it.
            allowed = params["allowed_updates"]
            self.allowed_updates = list(allowed) if isinstance(allowed, list) and allowed else None
        offset = params.get("offset")
        if isinstance(offset, int):
            if offset < 0:
                # -N keeps only the last N updates.
                del self.updates[: max(0, len(self.updates) + offset)]
            else:
                self.updates[:] = [u for u in self.updates if u["update_id"] >= offset]
        limit = params.get("limit")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = params.get("timeout")
        timeout = max(timeout, 0) if isinstance(timeout, int | float) else 0

        # A newer getUpdates terminates an older pending one, like on Telegram.
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake_pollers()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ready = self._deliverable_updates(limit)
            if ready or self._closing:
                return ready
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            arrived = self._updates_arrived
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), remaining)
            if generation != self._poll_generation:
                if request.transport is None or request.transport.is_closing():
                    return []  # the client gave up on this poll long ago; nobody listens
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )

    def _deliverable_updates(self, limit: int) -> list[JSONDict]:
        # Updates of types the bot didn't subscribe to are never delivered.
        self.updates[:] = [u for u in self.updates if self._update_allowed(u)]
        return [_deepcopy(u) for u in self.updates[:limit]]

    def _update_allowed(self, update: JSONDict) -> bool:
        kinds = set(update) - {"update_id"}
        if self.allowed_updates:
            return bool(kinds & set(self.allowed_updates))
        return not kinds <= _OPT_IN_UPDATES

    def _wake_pollers(self) -> None:
        self._updates_arrived.set()
        self._updates_arrived = asyncio.Event()

    def _send_message(self, call: ApiCall) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        return self._new_message(call, chat, self._text_content(call))

    def _send_photo(self, call: ApiCall) -> JSONDict:
        return self._send_media(call, "photo")

    def _send_document(self, call: ApiCall) -> JSONDict:
        return self._send_media(call, "document")

    def _send_video(self, call: ApiCall) -> JSONDict:
        return self._send_media(call, "video")

    def _send_animation(self, call: ApiCall) -> JSONDict:
        return self._send_media(call, "animation")

    def _send_media(self, call: ApiCall, kind: str) -> JSONDict:
        chat = self._resolve_chat(call.params.get("chat_id"))
        content = self._caption_content(call)
        content[kind] = self._media_object(call, kind, call.params.get(kind))
        if call.params.get("has_spoiler"):
            content["has_media_spoiler"] = True
        return self._new_message(call, chat, content)

    def _send_media_group(self, call: ApiCall) -> list[JSONDict]:
        chat = self._resolve_chat(call.params.get("chat_id"))
        media = call.params.get("media")
        if not isinstance(media, list) or not all(isinstance(m, dict) for m in media):
            raise _bad("can't parse media JSON object")
        if not 2 <= len(media) <= 10:
            raise _bad("media group must contain 2-10 items")
        # Validate everything before storing anything: an album is all or nothing.
        contents: list[JSONDict] = []
        for position, item in enumerate(media, start=1):
            kind = item.get("type")
            if kind not in {"photo", "video", "document", "audio"}:
                raise _bad(f"unsupported media type {kind!r} in the media group")
            content = self._caption_content(call, item)
            content[kind] = self._media_object(call, kind, item.get("media"), position)
            contents.append(content)
        group_id = str(10**12 + len(self.calls))
        return [
            self._new_message(call, chat, {**content, "media_group_id": group_id})
            for content in contents
        ]

    def _copy_message(self, call: ApiCall) -> JSONDict:
        source = self._source_message(call, "copy")
        chat = self._resolve_chat(call.params.get("chat_id"))
        content = {k: v for k, v in source.items() if k in _CONTENT_KEYS}
        if call.params.get("caption") is not None:
            content.update(self._caption_content(call))
        message = self._new_message(call, chat, content)
        return {"message_id": message["message_id"]}

    def _forward_message(self, call: ApiCall) -> JSONDict:
        source = self._source_message(call, "forward")
        chat = self._resolve_chat(call.params.get("chat_id"))
        content = {k: v for k, v in source.items() if k in _CONTENT_KEYS}
        origin_chat = source["chat"]
        if origin_chat["type"] == "channel":
            content["forward_origin"] = {
                "type": "channel",
                "date": source["date"],
                "chat": dict(origin_chat),
                "message_id": source["message_id"],
            }
        else:
            content["forward_origin"] = {
                "type": "user",
                "date": source["date"],
                "sender_user": dict(source.get("from") or self._public_bot_user()),
            }
        return self._new_message(call, chat, content)

    def _source_message(self, call: ApiCall, verb: str) -> JSONDict:
        from_chat = self._resolve_chat(call.params.get("from_chat_id"))
        message = self.messages.get((from_chat["id"], _message_id(call.params)))
        if message is None:
            raise _bad(f"message to {verb} not found")
        return message

    def _send_chat_action(self, call: ApiCall) -> bool:
        self._resolve_chat(call.params.get("chat_id"))
        if call.params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    def _message_to_edit(self, call: ApiCall) -> JSONDict | None:
        """The stored message an edit targets; None for inline messages."""
        params = call.params
        if params.get("inline_message_id"):
            return None
        chat = self._resolve_chat(params.get("chat_id"))
        message = self.messages.get((chat["id"], _message_id(params)))
        if message is None:
            raise _bad("message to edit not found")
        sender = message.get("from")
        if sender is not None and sender.get("id") != self.bot_user["id"]:
            raise _bad("message can't be edited")
        return message

    def _apply_edit(
        self, message: JSONDict | None, content: JSONDict, markup: Any, keys: tuple[str, ...]
    ) -> Any:
        """Replace ``keys`` with ``content`` and the keyboard; detect no-op edits.

        As on Telegram, an edit without reply_markup removes the inline keyboard.
        """
        new_markup = self._validate_markup(markup)
        if message is None:
            return True  # edits of inline messages answer True
        if (
            all(message.get(key) == content.get(key) for key in keys)
            and message.get("reply_markup") == new_markup
        ):
            raise ApiError(400, NOT_MODIFIED)
        for key in keys:
            message.pop(key, None)
        message.update(content)
        message.pop("reply_markup", None)
        if new_markup is not None:
            message["reply_markup"] = new_markup
        message["edit_date"] = int(time.time())
        return _deepcopy(message)

    def _edit_message_text(self, call: ApiCall) -> Any:
        message = self._message_to_edit(call)
        content = self._text_content(call)
        if message is not None and "text" not in message:
            raise _bad("there is no text in the message to edit")
        return self._apply_edit(
            message, content, call.params.get("reply_markup"), ("text", "entities")
        )

    def _edit_message_caption(self, call: ApiCall) -> Any:
        message = self._message_to_edit(call)
        content = self._caption_content(call)
        if message is not None and "text" in message:
            raise _bad("there is no caption in the message to edit")
        return self._apply_edit(
            message, content, call.params.get("reply_markup"), ("caption", "caption_entities")
        )

    def _edit_message_reply_markup(self, call: ApiCall) -> Any:
        message = self._message_to_edit(call)
        if message is None:
            return True
        new_markup = self._validate_markup(call.params.get("reply_markup"))
        if message.get("reply_markup") == new_markup:
            raise ApiError(400, NOT_MODIFIED)
        message.pop("reply_markup", None)
        if new_markup is not None:
            message["reply_markup"] = new_markup
        message["edit_date"] = int(time.time())
        return _deepcopy(message)

    def _delete_message(self, call: ApiCall) -> bool:
        chat = self._resolve_chat(call.params.get("chat_id"))
        if self.messages.pop((chat["id"], _message_id(call.params)), None) is None:
            raise _bad("message to delete not found")
        return True

    def _answer_callback_query(self, call: ApiCall) -> bool:
        if not call.params.get("callback_query_id"):
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        text = call.params.get("text")
        if isinstance(text, str) and len(text) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        self.callback_answers.append(dict(call.params))
        return True

    def _answer_inline_query(self, call: ApiCall) -> bool:
        results = call.params.get("results")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise _bad("can't parse inline query results JSON object")
        if len(results) > 50:
            raise _bad("RESULTS_TOO_MUCH")
        seen: set[str] = set()
        for result in results:
            result_id = result.get("id")
            if not isinstance(result_id, str) or not 1 <= len(result_id.encode()) <= 64:
                raise _bad("RESULT_ID_INVALID")
            if result_id in seen:
                raise _bad("RESULT_ID_DUPLICATE")
            seen.add(result_id)
            content = result.get("input_message_content")
            if result.get("type") == "article" and (
                not isinstance(content, dict) or not result.get("title")
            ):
                raise _bad("can't parse InlineQueryResultArticle: title and content required")
            if isinstance(content, dict) and "message_text" in content:
                self._format(
                    call.method,
                    content["message_text"],
                    content.get("parse_mode"),
                    content.get("entities"),
                    limit=MESSAGE_TEXT_LIMIT,
                    kind="text",
                )
            if "caption" in result:
                self._caption_content(call, result)
            self._validate_markup(result.get("reply_markup"))
        self.inline_answers.append(dict(call.params))
        return True

    def _commands_key(self, call: ApiCall) -> tuple[str, str]:
        scope = call.params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(call.params.get("language_code") or "")

    def _set_my_commands(self, call: ApiCall) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("can't parse commands JSON object")
        cleaned: list[JSONDict] = []
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.match(
                str(command.get("command", ""))
            ):
                raise _bad("BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": command["command"], "description": description})
        self.commands[self._commands_key(call)] = cleaned
        return True

    def _get_my_commands(self, call: ApiCall) -> list[JSONDict]:
        return _deepcopy(self.commands.get(self._commands_key(call), []))

    def _delete_my_commands(self, call: ApiCall) -> bool:
        self.commands.pop(self._commands_key(call), None)
        return True

    def _set_my_description(self, call: ApiCall) -> bool:
        description = str(call.params.get("description") or "")
        if len(description) > 512:
            raise _bad("BOT_DESCRIPTION_INVALID")
        self.descriptions[str(call.params.get("language_code") or "")] = description
        return True

    def _get_my_description(self, call: ApiCall) -> JSONDict:
        return {
            "description": self.descriptions.get(str(call.params.get("language_code") or ""), "")
        }

    def _set_my_short_description(self, call: ApiCall) -> bool:
        description = str(call.params.get("short_description") or "")
        if len(description) > 120:
            raise _bad("BOT_SHORT_DESCRIPTION_INVALID")
        self.short_descriptions[str(call.params.get("language_code") or "")] = description
        return True

    def _get_my_short_description(self, call: ApiCall) -> JSONDict:
        lang = str(call.params.get("language_code") or "")
        return {"short_description": self.short_descriptions.get(lang, "")}

    def _known_chat(self, raw: Any) -> JSONDict:
        """Like _resolve_chat but never invents a chat: lookups need an existing one.

        Chats exist once added with add_chat, seen in an update builder, or implicitly
        created by an earlier send.
        """
        ref = _normalize_chat_ref(raw)
        chat_id = self._lookup_chat_id(ref) if ref is not None else None
        if chat_id is None or chat_id not in self.chats:
            raise ApiError(400, CHAT_NOT_FOUND)
        return self.chats[chat_id]

    def _get_chat(self, call: ApiCall) -> JSONDict:
        chat = self._known_chat(call.params.get("chat_id"))
        # ChatFullInfo: python-telegram-bot requires these fields.
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _get_chat_member(self, call: ApiCall) -> JSONDict:
        chat = self._known_chat(call.params.get("chat_id"))
        user_id = call.params.get("user_id")
        if not isinstance(user_id, int) or user_id <= 0:
            raise _bad("invalid user_id specified")
        return self._member(chat, user_id)

    def _leave_chat(self, call: ApiCall) -> bool:
        """The bot leaves: from now on it is a member who left (its sends are refused)."""
        chat = self._known_chat(call.params.get("chat_id"))
        if chat["type"] == "private":
            raise _bad("chat member status can't be changed in private chats")
        self.set_member(chat["id"], self.bot_user["id"], "left")
        self._forbidden[chat["id"]] = "Forbidden: bot is not a member of the channel chat"
        return True

    def _get_chat_administrators(self, call: ApiCall) -> list[JSONDict]:
        chat = self._known_chat(call.params.get("chat_id"))
        if chat["type"] == "private":
            raise _bad("there are no administrators in the private chat")
        admins = [
            _deepcopy(member)
            for (chat_id, _), member in self.members.items()
            if chat_id == chat["id"] and member["status"] in {"creator", "administrator"}
        ]
        if (chat["id"], self.bot_user["id"]) not in self.members:
            admins.append(self._member(chat, self.bot_user["id"]))
        return admins

    def _get_chat_member_count(self, call: ApiCall) -> int:
        chat = self._known_chat(call.params.get("chat_id"))
        present = {"creator", "administrator", "member", "restricted"}
        explicit = [m for (cid, _), m in self.members.items() if cid == chat["id"]]
        count = sum(1 for m in explicit if m["status"] in present)
        # The bot counts as present unless a test removed it.
        return count + (0 if (chat["id"], self.bot_user["id"]) in self.members else 1)


# Message keys that make up content (copied by copyMessage/forwardMessage).
_CONTENT_KEYS = frozenset(
    {
        "text",
        "entities",
        "caption",
        "caption_entities",
        "photo",
        "document",
        "video",
        "animation",
        "audio",
        "link_preview_options",
        "show_caption_above_media",
    }
)


def _convert_param(key: str, value: Any) -> Any:
    """Turn a form/JSON value back into the type the Bot API expects for ``key``."""
    if not isinstance(value, str):
        return value
    if key in _INT_PARAMS:
        if key in {"chat_id", "from_chat_id"} and value.startswith("@"):
            return value
        try:
            return int(value)
        except ValueError:
            return value
    if key in _BOOL_PARAMS:
        lowered = value.lower()
        if lowered in {"true", "false"}:
            return lowered == "true"
        return value
    if key in _TEXT_PARAMS:
        return value
    stripped = value.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, dict | list):
            return decoded
    return value


def _method_set(method: str | Iterable[str] | None) -> frozenset[str] | None:
    if method is None:
        return None
    if isinstance(method, str):
        return frozenset({method.lower()})
    return frozenset(m.lower() for m in method)


def _normalize_chat_ref(value: Any) -> ChatRef | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.lstrip("-").isdigit():
            return int(value)
        return "@" + value.lstrip("@").lower()
    return None


def _trim(text: str, entities: list[JSONDict]) -> tuple[str, list[JSONDict]]:
    """Strip surrounding whitespace like Telegram, shifting/clipping entity ranges."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    kept: list[JSONDict] = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, size)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


def _deepcopy(value: _T) -> _T:
    # JSON-shaped data only; a JSON round trip is the cheapest faithful copy.
    return cast(_T, json.loads(json.dumps(value)))


def _message_id(params: Mapping[str, Any]) -> int:
    message_id = params.get("message_id")
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise _bad("message identifier is not specified")
    return message_id


def _nginx_page(status: int) -> str:
    reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}.get(
        status, "Error"
    )
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
