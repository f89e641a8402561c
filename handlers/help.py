"""/help: the commands of this kind of chat, translated (from the one table in
bot.services.commands)."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType

from handlers.context import BotContext
from handlers.views import readers as views


async def help_command(update: Update, context: BotContext) -> None:
    """List the commands."""
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if message is None or chat is None:
        return
    svc = context.services
    stored = await svc.readers.reader_chat(chat, user)
    reply = views.help_message(
        svc.renderer,
        stored.lang,
        private=chat.type == ChatType.PRIVATE,
        operator=svc.is_operator(user.id if user else None),
        bot_username=context.bot.username or "",
    )
    await views.send_reply(message, reply)
