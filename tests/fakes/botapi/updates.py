"""Updates for the bot: builders of the updates a test plays (a user's message, a button press,
an inline query, the bot's membership changing), a queue that getUpdates long polling delivers
as Telegram does, and the webhook setting under which getUpdates is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.fakes.botapi.calls import ApiCall, ApiError, Handler, JSONDict, bad, json_copy
from tests.fakes.botapi.chats import Chats
from tests.fakes.botapi.messages import Messages
from tests.fakes.botapi.profile import Profile
from tests.fakes.telegram_html import utf16_len

_LEADING_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![A-Za-z0-9_])")
# Updates Telegram does not deliver unless asked for explicitly in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})


class Updates:
    def __init__(self, profile: Profile, chats: Chats, messages: Messages) -> None:
        self._profile = profile
        self._chats = chats
        self._messages = messages
        #: Updates not confirmed yet (by a getUpdates with a higher offset).
        self.queue: list[JSONDict] = []
        #: What the last setWebhook or getUpdates that passed allowed_updates asked for.
        self.allowed_updates: list[str] | None = None
        self.webhook_url = ""
        #: Set while the server stops: pending long polls answer at once.
        self.closing = False
        self._update_ids = itertools.count(1000)
        self._callback_ids = itertools.count(1)
        self._inline_ids = itertools.count(1)
        self._arrived = asyncio.Event()
        self._poll_generation = 0

    def push(self, update: Mapping[str, Any]) -> int:
        update_id = next(self._update_ids)
        self.queue.append({**update, "update_id": update_id})
        self.wake_pollers()
        return update_id

    def wake_pollers(self) -> None:
        self._arrived.set()
        self._arrived = asyncio.Event()

    # -- builders -----------------------------------------------------------------------

    def _chat(self, chat: JSONDict | int) -> JSONDict:
        return dict(self._chats.resolve(chat if isinstance(chat, int) else chat["id"]))

    def message(
        self, chat: JSONDict | int, from_user: JSONDict, text: str, **extra: Any
    ) -> JSONDict:
        chat = self._chat(chat)
        message: JSONDict = {
            "message_id": self._messages.allocate_id(chat["id"]),
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
        self._messages.messages[(chat["id"], message["message_id"])] = message
        kind = "channel_post" if chat["type"] == "channel" else "message"
        return {kind: json_copy(message)}

    def callback(
        self, chat: JSONDict | int, from_user: JSONDict, data: str, message_id: int
    ) -> JSONDict:
        chat = self._chat(chat)
        stored = self._messages.messages.get((chat["id"], message_id))
        # Telegram sends an InaccessibleMessage (date 0) when it can't show the message.
        message = (
            json_copy(stored)
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

    def inline_query(self, from_user: JSONDict, query: str, offset: str) -> JSONDict:
        return {
            "inline_query": {
                "id": str(next(self._inline_ids)),
                "from": dict(from_user),
                "query": query,
                "offset": offset,
                "chat_type": "sender",
            }
        }

    def my_chat_member(
        self,
        chat: JSONDict | int,
        from_user: JSONDict,
        old_status: str,
        new_status: str,
        rights: Mapping[str, Any],
    ) -> JSONDict:
        chat = self._chat(chat)
        bot = self._profile.public_bot_user()
        old = self._chats.member_dict(bot, old_status, {})
        # Recorded, so that later getChatMember calls agree with the update, as on Telegram.
        new = self._chats.set_member(chat["id"], bot["id"], new_status, **rights)
        return {
            "my_chat_member": {
                "chat": dict(chat),
                "from": dict(from_user),
                "date": int(time.time()),
                "old_chat_member": old,
                "new_chat_member": new,
            }
        }

    # -- methods ------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"setWebhook": self._set_webhook, "deleteWebhook": self._delete_webhook}

    def _set_webhook(self, call: ApiCall) -> bool:
        url = call.params.get("url") or ""
        if url and not str(url).startswith("https://"):
            raise bad("bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook_url = str(url)
        if "allowed_updates" in call.params:
            self.allowed_updates = call.params["allowed_updates"] or None
        if call.params.get("drop_pending_updates"):
            self.queue.clear()
        return True

    def _delete_webhook(self, call: ApiCall) -> bool:
        self.webhook_url = ""
        if call.params.get("drop_pending_updates"):
            self.queue.clear()
        return True

    async def get_updates(self, call: ApiCall, request: web.Request) -> list[JSONDict]:
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
                del self.queue[: max(0, len(self.queue) + offset)]
            else:
                self.queue[:] = [u for u in self.queue if u["update_id"] >= offset]
        limit = params.get("limit")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = params.get("timeout")
        timeout = max(timeout, 0) if isinstance(timeout, int | float) else 0

        # A newer getUpdates terminates an older pending one, like on Telegram.
        self._poll_generation += 1
        generation = self._poll_generation
        self.wake_pollers()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ready = self._deliverable(limit)
            if ready or self.closing:
                return ready
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            arrived = self._arrived
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

    def _deliverable(self, limit: int) -> list[JSONDict]:
        # Updates of types the bot didn't subscribe to are never delivered.
        self.queue[:] = [u for u in self.queue if self._allowed(u)]
        return [json_copy(u) for u in self.queue[:limit]]

    def _allowed(self, update: JSONDict) -> bool:
        kinds = set(update) - {"update_id"}
        if self.allowed_updates:
            return bool(kinds & set(self.allowed_updates))
        return not kinds <= _OPT_IN_UPDATES
