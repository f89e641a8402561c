"""/why LINK: what happened to an article for a chat, so admins never have to guess.

In a group it explains that group (to its admins and operators); in a private chat it explains
every chat the user runs, and their own subscription. Texts and the answer: handlers.views.
diagnostics.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType as TgChatType

from bot.services.permissions import Access
from handlers.context import BotContext
from handlers.reply import reply
from handlers.views import diagnostics as views

log = logging.getLogger(__name__)


async def on_why(update: Update, context: BotContext) -> None:
    """/why LINK: explain what happened to that article in this chat (or the user's chats)."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    admin, svc = context.services.channels, context.services
    lang = await admin.language_for(user.id, user.language_code)
    if not context.args:
        await reply(message, svc.renderer.message(lang, views.WHY_USAGE))
        return
    actor = admin.actor(user.id, user.full_name)
    if chat.type == TgChatType.PRIVATE:
        chats = await admin.chats_to_explain(actor)
    else:
        known = await svc.store.get_chat(chat.id)
        if known is None:
            await reply(message, svc.renderer.message(lang, views.WHY_NOT_CONNECTED))
            return
        sender_chat_id = message.sender_chat.id if message.sender_chat else None
        access = await admin.may_explain(actor, known, sender_chat_id)
        if access is not Access.ALLOWED:
            log.info("/why refused for user %d in chat %d (%s)", user.id, chat.id, access)
            await reply(message, views.why_refusal(svc.renderer, lang, access))
            return
        chats = [known]
    reports = await admin.why(context.args[0], chats)
    await reply(message, views.why_answer(svc.renderer, lang, reports, svc.max_age))
