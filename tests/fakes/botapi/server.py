"""The fake Bot API's HTTP side and its face to tests: FakeBotApi composes the parts, parses
requests as Telegram does, runs each call through them in Telegram's order, records it, and
offers tests the knobs and inspection helpers they use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from tests.fakes.botapi.calls import ApiCall, ApiError, JSONDict, bad
from tests.fakes.botapi.chats import Chats
from tests.fakes.botapi.faults import Faults, RawError
from tests.fakes.botapi.limits import RATE_LIMITED_METHODS, Limits
from tests.fakes.botapi.messages import MESSAGE_METHODS, Messages
from tests.fakes.botapi.profile import Profile
from tests.fakes.botapi.updates import Updates
from tests.fakes.local import LocalServer
from tests.fakes.loopdelay import LoopMonitor

# Form fields arrive as strings; these are converted back to the types of the Bot API's
# parameters, for the methods emulated.
_INT_PARAMS = frozenset(
    [
        "chat_id",
        "message_id",
        "message_thread_id",
        "reply_to_message_id",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "cache_time",
        "max_connections",
    ]
)
_BOOL_PARAMS = frozenset(
    [
        "disable_notification",
        "protect_content",
        "allow_paid_broadcast",
        "allow_sending_without_reply",
        "disable_web_page_preview",
        "show_caption_above_media",
        "has_spoiler",
        "show_alert",
        "is_personal",
        "drop_pending_updates",
    ]
)
# Free text that must never be JSON-decoded, even when it looks like "[1]", "{}" or "42".
_TEXT_PARAMS = frozenset(
    [
        "text",
        "caption",
        "parse_mode",
        "photo",
        "url",
        "secret_token",
        "language_code",
        "next_offset",
        "callback_query_id",
        "inline_query_id",
        "inline_message_id",
    ]
)


class FakeBotApi(LocalServer):
    """In-memory Telegram Bot API served over HTTP on 127.0.0.1.

    Use as ``async with FakeBotApi() as api:`` and point python-telegram-bot at
    ``api.base_url``. State (``chats``, ``messages``, ``calls``...) is public so tests can
    inspect and seed it. ``clock`` (default ``time.monotonic``) timestamps calls and drives
    the rate-limit windows; tests may pass a fake clock.
    """

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        *,
        global_per_second: int = 30,
        group_per_minute: int = 20,
        private_per_second: float = 1.0,
        paid_per_second: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.token = token
        self._clock = clock
        #: Every request in arrival order, with its answer.
        self.calls: list[ApiCall] = []
        # Awaited after a call succeeded, before it is answered: a test can act "while the
        # request is in flight" (take a lock, limit the bot's files, stop the clock).
        self.before_success: Callable[[ApiCall], Awaitable[None]] | None = None
        # Set before start() to measure how late this server's own loop runs (its stamps are
        # that late): reported by GET /_fake/stats, for a benchmark running it in a process.
        self.loop_monitor: LoopMonitor | None = None
        self._tallied = 0  # calls counted into _sends so far (stats() counts incrementally)
        self._sends = 0

        self._profile = Profile(token)
        self._chats = Chats(self._profile)
        self._messages = Messages(self._profile, self._chats)
        self._updates = Updates(self._profile, self._chats, self._messages)
        self._limits = Limits(
            global_per_second, group_per_minute, private_per_second, paid_per_second
        )
        self._faults = Faults(self._chats)
        self._handlers = {
            **self._profile.handlers(),
            **self._updates.handlers(),
            **self._messages.handlers(),
            **self._chats.handlers(),
        }
        # Bot API method names are case-insensitive.
        self._method_names = {name.lower(): name for name in [*self._handlers, "getUpdates"]}

        # The parts' own containers, so what a test seeds is what the parts see.
        self.bot_user = self._profile.bot_user
        self.commands = self._profile.commands
        self.chats = self._chats.chats
        self.members = self._chats.members
        self.messages = self._messages.messages
        self.html_errors = self._messages.html_errors
        self.bad_photo_urls = self._messages.bad_photo_urls
        self.callback_answers = self._messages.callback_answers
        self.inline_answers = self._messages.inline_answers
        self.updates = self._updates.queue

    def shown(self, chat_id: int, message_id: int) -> tuple[str, dict[str, str]]:
        """A message as the user sees it now (edits applied): its text and {label: data}."""
        message = self.messages[(chat_id, message_id)]
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        return message["text"], {b["text"]: b["callback_data"] for row in rows for b in row}

    @property
    def rate_violations(self) -> int:
        """429s the flood windows gave (scripted ones not included)."""
        return self._limits.violations

    @property
    def refused_by(self) -> dict[str, int]:
        """Those 429s by the window that was full: "paid", "free" or "chat"."""
        return dict(self._limits.refused_by)

    @property
    def allowed_updates(self) -> list[str] | None:
        return self._updates.allowed_updates

    @property
    def webhook_url(self) -> str:
        return self._updates.webhook_url

    @webhook_url.setter
    def webhook_url(self, url: str) -> None:
        self._updates.webhook_url = url

    @property
    def _closing(self) -> bool:
        return self._updates.closing

    @_closing.setter
    def _closing(self, closing: bool) -> None:
        # Subclasses that restart the server on the same port reset it (tests/e2e/test_health).
        self._updates.closing = closing

    # -- lifecycle -----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/_fake/stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def start(self) -> None:
        self._closing = False
        await super().start()
        if self.loop_monitor is not None:
            self.loop_monitor.start()

    async def stop(self) -> None:
        """Release long polls and shut the server down."""
        if self.loop_monitor is not None:
            await self.loop_monitor.stop()
        self._closing = True
        self._updates.wake_pollers()
        await super().stop()

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:41234``."""
        return self.origin

    @property
    def base_url(self) -> str:
        """What to pass as python-telegram-bot's ``base_url`` (token is appended)."""
        return f"{self.url}/bot"

    # -- inspection -----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        """All calls of ``method`` (any outcome), in arrival order."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def sent(self, chat_id: int | None = None) -> list[ApiCall]:
        """Successful message-sending calls, optionally only those to ``chat_id``."""
        return [
            c
            for c in self.calls
            if c.ok
            and c.method in MESSAGE_METHODS
            and (chat_id is None or c.result["chat"]["id"] == chat_id)
        ]

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        """Plain texts/captions (after entity parsing) of the messages sent."""
        texts = (call.result.get("text", call.result.get("caption")) for call in self.sent(chat_id))
        return [text for text in texts if text is not None]

    def stats(self, *, since: float | None = None, detail: bool = False) -> JSONDict:
        """What a benchmark in another process reads (GET /_fake/stats): calls, successful
        sends and the windows' 429s, counted incrementally so that polling for progress costs
        the server next to nothing.

        With `since` (monotonic seconds; -inf for all), the loop monitor's summary of the
        loop's delay since then; with `detail`, every rate-limited call as [arrival stamp,
        chat_id, status, sent with allow_paid_broadcast] and the monitor's samples as [woke at,
        seconds late].
        """
        calls = self.calls
        end = len(calls)
        for call in calls[self._tallied : end]:
            if call.ok and call.method in MESSAGE_METHODS:
                self._sends += 1
        self._tallied = end
        monitor = self.loop_monitor
        stats: JSONDict = {
            "calls": end,
            "sent": self._sends,
            "rate_violations": self._limits.violations,
        }
        if since is not None:
            stats["loop"] = None if monitor is None else monitor.summary(since)
        if detail:
            stats["rate_limited"] = [
                [c.at, c.chat_id, c.status, c.params.get("allow_paid_broadcast") is True]
                for c in calls
                if c.method in RATE_LIMITED_METHODS
            ]
            stats["loop_samples"] = [] if monitor is None else monitor.samples
        return stats

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
        self, n: int, chat_id: int | None = None, timeout: float = 5.0
    ) -> list[ApiCall]:
        """Wait until at least ``n`` messages were sent (to ``chat_id``); return them."""
        await self.wait_for(lambda api: len(api.sent(chat_id)) >= n, timeout)
        return self.sent(chat_id)

    # -- scripted faults ------------------------------------------------------------------

    def fail(
        self,
        method: str | None,
        *,
        chat_id: int | None = None,
        error_code: int = 400,
        description: str = "Bad Request: scripted failure",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching calls with this error instead of success.

        ``method`` None matches any rate-limited method (sends and edits); ``chat_id`` None
        matches every chat. Faults are consumed in the order they were queued.
        """
        self._faults.add(method, chat_id, error_code, description, times=times)

    def retry_after(self, chat_id: int | None, seconds: int, times: int = 1) -> None:
        """Scripted flood-control answer for sends to ``chat_id`` (None: any chat)."""
        self._faults.add(
            None,
            chat_id,
            429,
            f"Too Many Requests: retry after {seconds}",
            parameters={"retry_after": seconds},
            times=times,
        )

    def server_error(self, method: str, times: int = 1, *, status: int = 500) -> None:
        """Make the next ``times`` calls fail like Telegram's backend does.

        500 gives a JSON error; 502/504 give nginx's HTML page, as the real server.
        """
        self._faults.server_error(method, times, status)

    def garbage(self, method: str, times: int = 1, *, body: str = "<h1>It works!</h1>") -> None:
        """Answer the next ``times`` calls with status 200 and ``body`` instead of Bot API JSON.

        What a captive portal or a misconfigured proxy in front of the Bot API answers.
        """
        self._faults.add(method, None, 200, "", times=times, body=body)

    def redirect_loop(self, method: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with a redirect to themselves, as a
        misconfigured proxy might: a client that follows it ends in "too many redirects",
        with the request's URL (the token in it) in its error text."""
        self._faults.add_redirect(method, times)

    def odd_success(self, method: str, times: int = 1) -> None:
        """Accept the next ``times`` calls of ``method`` but answer ``ok: true`` with a result
        that is not the object the method returns (the call still counts as done)."""
        self._faults.add_odd_success(method, times)

    def clear_faults(self) -> None:
        """Drop every scripted error not consumed yet (Telegram is healthy again)."""
        self._faults.clear()

    # -- chats, users, members ------------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        type: str,  # the Bot API field name
        title: str | None = None,
        username: str | None = None,
        is_forum: bool = False,
    ) -> JSONDict:
        """Register a chat (private/group/supergroup/channel) and return its Chat dict."""
        return self._chats.add(chat_id, type, title, username, is_forum)

    def user(
        self,
        id: int,  # the Bot API field name
        first_name: str = "U",
        language_code: str | None = "en",
        username: str | None = None,
    ) -> JSONDict:
        """Build (and remember, for getChatMember) a User dict."""
        return self._chats.add_user(id, first_name, language_code, username)

    def set_member(self, chat_id: int, user_id: int, status: str, **rights: Any) -> JSONDict:
        """Set a member's status and rights in a chat; returns the ChatMember dict.

        Administrator rights default to True, restricted permissions to False;
        ``rights`` override them (and may add fields such as ``custom_title``).
        """
        return self._chats.set_member(chat_id, user_id, status, **rights)

    def forbid(
        self, chat_id: int, description: str = "Forbidden: bot was blocked by the user"
    ) -> None:
        """Refuse every send to ``chat_id`` with 403 until ``unforbid``."""
        self._chats.blocked[chat_id] = description

    def unforbid(self, chat_id: int) -> None:
        self._chats.blocked.pop(chat_id, None)

    def migrate(self, chat_id: int, new_chat_id: int) -> None:
        """Turn ``chat_id`` into a migrated group: calls to it answer migrate_to_chat_id."""
        self._chats.migrated[chat_id] = new_chat_id

    # -- updates --------------------------------------------------------------------------

    def push_update(self, update: Mapping[str, Any]) -> int:
        """Queue an update for getUpdates; returns the assigned update_id."""
        return self._updates.push(update)

    def make_message_update(
        self, chat: JSONDict | int, from_user: JSONDict, text: str, **extra: Any
    ) -> JSONDict:
        """An incoming text message (a ``channel_post`` in channels).

        A leading ``/command`` gets its bot_command entity. The message is stored in
        ``messages`` (the bot can't edit it: it belongs to the user).
        """
        return self._updates.message(chat, from_user, text, **extra)

    def make_callback_update(
        self, chat: JSONDict | int, from_user: JSONDict, data: str, message_id: int
    ) -> JSONDict:
        """A callback query pressed on ``message_id`` (inaccessible if unknown)."""
        return self._updates.callback(chat, from_user, data, message_id)

    def make_inline_query_update(
        self, from_user: JSONDict, query: str, offset: str = ""
    ) -> JSONDict:
        """An inline query typed by ``from_user`` (in the private chat with the bot)."""
        return self._updates.inline_query(from_user, query, offset)

    def make_my_chat_member_update(
        self,
        chat: JSONDict | int,
        from_user: JSONDict,
        old_status: str,
        new_status: str,
        **rights: Any,
    ) -> JSONDict:
        """The bot's own membership changed in ``chat``; getChatMember agrees from now on."""
        return self._updates.my_chat_member(chat, from_user, old_status, new_status, rights)

    # -- HTTP -----------------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    async def _handle(self, request: web.Request) -> web.Response:
        raw_method = request.match_info["method"]
        params, uploads = await self._read_params(request)
        method = self._method_names.get(raw_method.lower(), raw_method)
        call = ApiCall(method=method, params=params, at=self._clock())
        self.calls.append(call)
        if self._faults.take_redirect(method):
            call.status = 302
            raise web.HTTPFound(location=str(request.url))
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            if raw_method.lower() not in self._method_names:
                raise ApiError(404, "Not Found")
            if uploads:
                # The bot sends photos by URL; an upload would be a new need, not a bot bug.
                raise bad(f"file uploads are not emulated by the fake ({', '.join(uploads)})")
            if method == "getUpdates":
                result = await self._updates.get_updates(call, request)
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
        except RawError as error:
            call.status = call.error_code = error.status
            call.description = error.body
            return web.Response(text=error.body, status=error.status, content_type="text/html")
        call.ok, call.status, call.result = True, 200, result
        if self.before_success is not None:
            await self.before_success(call)
        if self._faults.take_odd_success(method):
            # Accepted (the message exists, as far as the test is concerned), but the body
            # is nothing a client can read as a Message: what a broken proxy or emulator says.
            return web.json_response({"ok": True, "result": {"accepted": True}})
        return web.json_response({"ok": True, "result": result})

    async def _stats(self, request: web.Request) -> web.Response:
        since = request.query.get("since")
        stats = self.stats(
            since=None if since is None else float(since), detail=request.query.get("detail") == "1"
        )
        return web.json_response(stats)

    async def _read_params(self, request: web.Request) -> tuple[JSONDict, list[str]]:
        """Parameters from the query string and a form, multipart or JSON body, and the
        names of the file parts of a multipart body."""
        raw: dict[str, Any] = dict(request.query)
        uploads: list[str] = []
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
                        uploads.append(name)
                    else:
                        raw[name] = value
        return {key: _convert_param(key, value) for key, value in raw.items()}, uploads

    def _dispatch(self, call: ApiCall) -> Any:
        """Unreachable chats first, then scripted faults, flood control, the method itself.

        The rate-limit check and the recording of an accepted request happen without
        an await in between, so concurrent requests can't both take the last slot.
        """
        self._chats.check_reachable(
            call.params.get("chat_id"), sending=call.method in MESSAGE_METHODS
        )
        self._faults.apply(call)
        windows = self._limits.check(call, self._chats)
        result = self._handlers[call.method](call)
        for window in windows:
            window.times.append(call.at)
        return result


def _convert_param(key: str, value: Any) -> Any:
    """Turn a form/JSON value back into the type the Bot API expects for ``key``.

    A ``chat_id`` that is a ``@username`` stays a string.
    """
    if not isinstance(value, str):
        return value
    if key in _INT_PARAMS:
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
