"""/stats for operators (ADMIN_USER_IDS): feeds, chats, the last day's deliveries, recent errors.

Texts and the report: handlers.views.diagnostics.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType as TgChatType

from bot.ops.stats import stats_report
from handlers.context import BotContext
from handlers.reply import reply
from handlers.views import diagnostics as views

log = logging.getLogger(__name__)


async def on_stats(update: Update, context: BotContext) -> None:
    """/stats: the bot's health at a glance, for operators in a private chat."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    admin, svc = context.services.channels, context.services
    lang = await admin.language_for(user.id, user.language_code)
    if not svc.is_operator(user.id):
        log.info("/stats refused for user %d (not an operator)", user.id)
        await reply(message, svc.renderer.message(lang, views.STATS_NOT_OPERATOR))
        return
    if message.chat.type != TgChatType.PRIVATE:
        await reply(message, svc.renderer.message(lang, views.STATS_ONLY_PRIVATE))
        return
    report = await stats_report(svc.store, svc.clock.now())
    await reply(message, views.stats_answer(svc.renderer, lang, report))
