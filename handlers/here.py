"""/here inside a forum topic: an admin sends the group's posts to that topic. Topics the bot
sees being created or renamed are remembered, so the panel can offer them too.

Texts: handlers.views.membership.
"""

from __future__ import annotations

import logging

from telegram import Message, Update

from bot.services.permissions import Access
from handlers.context import BotContext
from handlers.reply import reply
from handlers.views import membership as views

log = logging.getLogger(__name__)


async def on_here(update: Update, context: BotContext) -> None:
    """/here: post this group's pieces into the topic the command was sent in."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    admin, svc = context.services.channels, context.services
    lang = await admin.language_for(user.id, user.language_code)
    if not chat.is_forum:
        await reply(message, svc.renderer.message(lang, views.NOT_FORUM))
        return
    known = await svc.store.get_chat(chat.id)
    if known is None or not known.active:
        await reply(message, svc.renderer.message(lang, views.UNKNOWN_CHAT))
        return
    actor = admin.actor(user.id, user.full_name)
    sender_chat_id = message.sender_chat.id if message.sender_chat else None
    access = await admin.settings_access(actor, known, sender_chat_id)
    if access is not Access.ALLOWED:
        log.warning("/here refused for user %d in chat %d (%s)", user.id, chat.id, access)
        await reply(message, views.here_refusal(svc.renderer, lang, access))
        return
    thread_id = message.message_thread_id if message.is_topic_message else None
    await admin.set_thread(known, actor, thread_id, _topic_name(message))
    await reply(message, views.here_done(svc.renderer, lang, thread_id))


async def on_topic_seen(update: Update, context: BotContext) -> None:
    """A forum topic was created or renamed: remember its name for the panel."""
    message = update.effective_message
    if message is None or message.message_thread_id is None:
        return
    created, edited = message.forum_topic_created, message.forum_topic_edited
    name = created.name if created else edited.name if edited else None
    if name:
        admin = context.services.channels
        await admin.remember_topic(message.chat.id, message.message_thread_id, name)


def _topic_name(message: Message) -> str | None:
    """The topic's name, from the service message Telegram attaches to topic messages."""
    origin = message.reply_to_message
    if origin is not None and origin.forum_topic_created is not None:
        return origin.forum_topic_created.name
    return None
