"""The one error handler: log the failure with the update's ids (never its text), then move on."""

from __future__ import annotations

import logging

from telegram import Update

from handlers.context import BotContext

log = logging.getLogger(__name__)


async def on_error(update: object, context: BotContext) -> None:
    """Log an exception raised while handling an update."""
    if isinstance(update, Update):
        chat_id = update.effective_chat.id if update.effective_chat else None
        user_id = update.effective_user.id if update.effective_user else None
        log.error(
            "error handling update %d (chat %s, user %s)",
            update.update_id, chat_id, user_id, exc_info=context.error,
        )  # fmt: skip
    else:
        log.error("error outside an update", exc_info=context.error)
