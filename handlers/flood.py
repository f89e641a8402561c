"""The notice a chat gets when it sent more updates at once than the bot keeps waiting.

The update processor (handlers.updates) drops the excess and calls this once per flood.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError

from handlers.context import BotApplication, services_of
from handlers.reply import send
from handlers.views import readers as views

log = logging.getLogger(__name__)


async def tell_flooded(application: BotApplication, update: Update) -> None:
    """Tell the chat that some of its requests were skipped (in the chat's language)."""
    chat, user = update.effective_chat, update.effective_user
    if chat is None:
        return  # an inline query: there is no chat to write to
    services = services_of(application.bot_data)
    known = await services.store.get_chat(chat.id)
    if known is not None:
        lang = known.lang
    else:
        lang = services.translator.resolve(user.language_code if user else None)
    text = services.renderer.message(lang, views.TOO_MANY_REQUESTS)
    message = update.effective_message
    try:
        thread_id = message.message_thread_id if message else None
        await send(application.bot, chat.id, text, thread_id=thread_id)
    except TelegramError as exc:
        log.info("could not tell chat %d about its dropped updates: %s", chat.id, exc)
