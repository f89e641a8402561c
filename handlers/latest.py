"""/latest [N]: the newest N pieces (5 by default, at most 20) in the chat's language."""

from __future__ import annotations

from telegram import Update

from bot.services import readers
from handlers.context import BotContext
from handlers.views import readers as views


async def latest(update: Update, context: BotContext) -> None:
    """List the newest pieces."""
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    svc = context.services
    stored = await svc.readers.reader_chat(chat, update.effective_user)
    count = readers.latest_count(context.args or [])
    if count is None:
        await views.send_reply(message, views.text(svc.renderer, stored.lang, views.LATEST_USAGE))
        return
    items = await svc.readers.latest(stored.lang, count)
    await views.send_reply(message, views.latest(svc.renderer, stored.lang, items))
