"""Telegram update handlers: thin functions that parse an update, call a service, reply.

register() holds the one routing table of the bot.
"""

from __future__ import annotations

from telegram.ext import BaseHandler, ChatMemberHandler

from bot.context import BotApplication
from handlers.errors import on_error
from handlers.membership import on_my_chat_member

# Update types the bot asks Telegram for (getUpdates allowed_updates).
ALLOWED_UPDATES = ["message", "callback_query", "inline_query", "my_chat_member"]


def register(application: BotApplication) -> None:
    """Install every handler, in routing order."""
    table: list[BaseHandler] = [  # type: ignore[type-arg]
        ChatMemberHandler(on_my_chat_member, ChatMemberHandler.MY_CHAT_MEMBER),
    ]
    for handler in table:
        application.add_handler(handler)
    application.add_error_handler(on_error)
