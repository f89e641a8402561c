"""The checks every reader button and settings command runs first: a live message, valid data,
and bot.services.permissions' one rule for changing a chat's settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from telegram import CallbackQuery, MaybeInaccessibleMessage, Message, Update
from telegram.constants import ChatType as TgChatType

from bot.services.permissions import RIGHTS_UNKNOWN, Access, settings_access
from handlers.context import BotContext
from handlers.reply import answer
from handlers.views import readers as views
from storage.models import Chat

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Press(Generic[T]):
    """A button press that passed the checks: the query, its message, the chat and the choice."""

    query: CallbackQuery
    message: MaybeInaccessibleMessage  # inaccessible when too old to edit
    chat: Chat
    choice: T


async def admin_press(
    update: Update, context: BotContext, parse: Callable[[str | None], T | None]
) -> Press[T] | None:
    """Validate a settings button; answer the query and return None when it must not proceed.

    Stale or forged data gets a polite answer; who may change anything is decided by
    bot.services.permissions (asked of Telegram now); when Telegram cannot say, the user is asked to
    try again.
    """
    query = update.callback_query
    if query is None:
        return None
    svc = context.services
    message = query.message
    if message is None:
        lang = svc.translator.resolve(query.from_user.language_code)
        await answer(query, views.plain(svc.renderer, lang, views.STALE_BUTTON))
        return None
    stored = await svc.readers.reader_chat(message.chat, query.from_user)
    choice = parse(query.data)
    if choice is None:
        await answer(query, views.plain(svc.renderer, stored.lang, views.STALE_BUTTON))
        return None
    access = await settings_access(
        context.bot, message.chat.id, query.from_user.id,
        private=message.chat.type == TgChatType.PRIVATE,
        operator=svc.is_operator(query.from_user.id),
    )  # fmt: skip
    if access is not Access.ALLOWED:
        refusal = RIGHTS_UNKNOWN if access is Access.UNKNOWN else views.ADMINS_ONLY
        await answer(query, views.plain(svc.renderer, stored.lang, refusal), alert=True)
        return None
    return Press(query, message, stored, choice)


async def admin_command(update: Update, context: BotContext) -> tuple[Message, Chat] | None:
    """Check a command that changes the chat's settings; return its message and stored chat,
    or send the refusal (or "try again" when Telegram cannot say) and return None."""
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if message is None or chat is None:
        return None
    svc = context.services
    stored = await svc.readers.reader_chat(chat, user)
    access = await settings_access(
        context.bot, chat.id, user.id if user else None,
        private=chat.type == TgChatType.PRIVATE,
        operator=svc.is_operator(user.id if user else None),
        sender_chat_id=message.sender_chat.id if message.sender_chat else None,
    )  # fmt: skip
    if access is not Access.ALLOWED:
        refusal = RIGHTS_UNKNOWN if access is Access.UNKNOWN else views.ADMINS_ONLY
        await views.send_reply(message, views.text(svc.renderer, stored.lang, refusal))
        return None
    return message, stored
