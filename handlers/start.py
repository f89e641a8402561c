"""/start: greet the reader in their language, say what the bot does, offer the language buttons.

Also brings back a chat the publisher had deactivated (the user had blocked the bot).
"""

from __future__ import annotations

from telegram import Update

from handlers.context import BotContext
from handlers.views import readers as views


async def start(update: Update, context: BotContext) -> None:
    """Greet the chat and show the language buttons."""
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    svc = context.services
    stored = await svc.readers.reader_chat(chat, update.effective_user, reactivate=True)
    await views.send_reply(message, views.start(svc.renderer, stored.lang))
