"""Telegram update handlers: thin functions that parse an update, call a service, reply.

register() holds the one routing table of the bot.
"""

from __future__ import annotations

import functools

from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    InlineQueryHandler,
    MessageHandler,
    filters,
)

from handlers import channels, here, stats, topics, why
from handlers.context import BotApplication
from handlers.errors import on_error
from handlers.flood import tell_flooded
from handlers.help import help_command
from handlers.inline import inline_query
from handlers.language import choose_language, language
from handlers.latest import latest
from handlers.membership import on_my_chat_member
from handlers.schedule import schedule_button
from handlers.search import search, search_page
from handlers.start import start
from handlers.subscription import settings, settings_button, subscribe, unsubscribe
from handlers.unknown import unknown_button
from handlers.updates import PerChatUpdateProcessor
from handlers.views import callbacks

# Update types the bot asks Telegram for (getUpdates allowed_updates).
ALLOWED_UPDATES = ["message", "callback_query", "inline_query", "my_chat_member"]


def register(application: BotApplication) -> None:
    """Install every handler, in routing order."""
    table: list[BaseHandler] = [  # type: ignore[type-arg]
        ChatMemberHandler(on_my_chat_member, ChatMemberHandler.MY_CHAT_MEMBER),
        # Channel admins (the panel's text input runs before this table: see below).
        CommandHandler("channels", channels.on_channels),
        CallbackQueryHandler(channels.on_button, pattern=callbacks.PANEL.route),
        CommandHandler("why", why.on_why),
        CommandHandler("stats", stats.on_stats),
        CommandHandler("here", here.on_here),
        MessageHandler(
            filters.StatusUpdate.FORUM_TOPIC_CREATED | filters.StatusUpdate.FORUM_TOPIC_EDITED,
            here.on_topic_seen,
        ),
        # Readers: language, search, latest pieces, subscriptions, help, inline mode.
        CommandHandler("start", start),
        CommandHandler(["language", "lang"], language),
        CallbackQueryHandler(choose_language, pattern=callbacks.LANGUAGE.route),
        CommandHandler("search", search),
        CallbackQueryHandler(search_page, pattern=callbacks.SEARCH_PAGE.route),
        CommandHandler("latest", latest),
        CommandHandler("subscribe", subscribe),
        CommandHandler("unsubscribe", unsubscribe),
        CommandHandler("settings", settings),
        CallbackQueryHandler(settings_button, pattern=callbacks.SUBSCRIPTION.route),
        CallbackQueryHandler(schedule_button, pattern=callbacks.SCHEDULE.route),
        CommandHandler("follow", topics.follow),
        CommandHandler("following", topics.following),
        CommandHandler("unfollow", topics.unfollow),
        CallbackQueryHandler(topics.topic_button, pattern=callbacks.TOPIC.route),
        CommandHandler("help", help_command),
        InlineQueryHandler(inline_query),
        # Last: any other button (old, forged, or a game) is still answered.
        CallbackQueryHandler(unknown_button),
    ]
    # First, in a group of its own: private text while the panel waits for this user's answer
    # (a signature, filter rules) is that answer, or /cancel; it then stops there. The open
    # question is in the store, so whichever instance gets the message takes it.
    application.add_handler(
        MessageHandler(filters.ChatType.PRIVATE & filters.TEXT, channels.before_others), group=-1
    )
    for handler in table:
        application.add_handler(handler)
    application.add_error_handler(on_error)
    # A chat flooding the bot is told once that part of it was skipped (see handlers.updates).
    processor = application.update_processor
    if isinstance(processor, PerChatUpdateProcessor):
        processor.on_flood = functools.partial(tell_flooded, application)
