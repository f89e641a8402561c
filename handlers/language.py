"""/language (/lang) and the language buttons: the chat's language for replies and posts.

Who may change it is bot.services.permissions' one rule; anyone may open the buttons. The
choice sets the chat's reply language; its feed languages follow only while they were just
that language (feed languages chosen in the /channels panel are kept).
"""

from __future__ import annotations

from telegram import Update

from bot.services import readers
from handlers.context import BotContext
from handlers.guards import admin_press
from handlers.reply import answer
from handlers.views import readers as views


async def language(update: Update, context: BotContext) -> None:
    """Show the language buttons."""
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    svc = context.services
    stored = await svc.readers.reader_chat(chat, update.effective_user)
    await views.send_reply(message, views.language(svc.renderer, stored.lang))


async def choose_language(update: Update, context: BotContext) -> None:
    """Store the language pressed, answer, and redraw the message in it."""
    press = await admin_press(update, context, views.parse_language_data)
    if press is None:
        return
    svc, query, message, stored = context.services, press.query, press.message, press.chat
    lang, view = press.choice
    updated = await svc.readers.set_language(stored.id, lang, user_id=query.from_user.id)
    updated = updated or stored
    await answer(
        query,
        views.plain(svc.renderer, lang, views.LANGUAGE_SET, language=readers.language_name(lang)),
    )
    if message.is_accessible:
        await views.edit_reply(query, views.redraw(svc.renderer, updated, view))
