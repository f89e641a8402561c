"""The last routes: a button no other handler claims still gets its callback answered."""

from __future__ import annotations

import logging

from telegram import Update

from handlers.context import BotContext
from handlers.reply import answer
from handlers.views import readers as views

log = logging.getLogger(__name__)


async def unknown_button(update: Update, context: BotContext) -> None:
    """Answer a callback query with unknown data, so the client's spinner stops."""
    query = update.callback_query
    if query is None:
        return
    svc = context.services
    log.info("unknown callback data from user %d", query.from_user.id)
    lang = svc.translator.resolve(query.from_user.language_code)
    if query.message is not None:
        chat = await svc.store.get_chat(query.message.chat.id)
        lang = chat.lang if chat is not None else lang
    await answer(query, views.plain(svc.renderer, lang, views.STALE_BUTTON))
