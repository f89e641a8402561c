"""/follow, /following, /unfollow and the topic buttons: which topics a chat follows.

In a private chat the reader decides; in a group, the chat's admins (bot.services.permissions'
one rule, asked of Telegram at the moment of the change); anyone may list a chat's topics.
"""

from __future__ import annotations

from telegram import Message, Update

from handlers.context import BotContext
from handlers.guards import admin_command, admin_press
from handlers.reply import answer
from handlers.views import readers as reader_views
from handlers.views import topics as views


def _words(message: Message) -> str:
    """What follows the command (its own line breaks included), e.g. "/follow Iran oil"."""
    return (message.text or "").partition(" ")[2].strip()


async def follow(update: Update, context: BotContext) -> None:
    """Follow the topic given after the command."""
    message = update.effective_message
    if message is None or update.effective_chat is None:
        return
    svc = context.services
    words = _words(message)
    if not words:
        stored = await svc.readers.reader_chat(update.effective_chat, update.effective_user)
        await reader_views.send_reply(message, views.usage(svc.renderer, stored.lang))
        return
    allowed = await admin_command(update, context)
    if allowed is None:
        return
    message, stored = allowed
    # Following is asking for posts: a chat that had blocked or removed the bot takes them again.
    stored = await svc.readers.reader_chat(message.chat, update.effective_user, reactivate=True)
    result = await svc.topics.follow(stored.id, words)
    await reader_views.send_reply(message, views.follow_result(svc.renderer, stored, result))


async def following(update: Update, context: BotContext) -> None:
    """List the chat's topics, a row of buttons each."""
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    svc = context.services
    stored = await svc.readers.reader_chat(chat, update.effective_user)
    follows = await svc.topics.following(stored.id)
    await reader_views.send_reply(message, views.following(svc.renderer, stored, follows))


async def unfollow(update: Update, context: BotContext) -> None:
    """Stop following the topic given after the command; without one, list the topics."""
    message = update.effective_message
    if message is None:
        return
    words = _words(message)
    if not words:
        await following(update, context)
        return
    allowed = await admin_command(update, context)
    if allowed is None:
        return
    message, stored = allowed
    svc = context.services
    dropped = await svc.topics.unfollow_text(stored.id, words)
    if dropped is not None:
        reply = reader_views.text(svc.renderer, stored.lang, views.DROPPED, topic=dropped.text)
    else:
        reply = reader_views.text(svc.renderer, stored.lang, views.NOT_FOUND, topic=words[:100])
    await reader_views.send_reply(message, reply)


async def topic_button(update: Update, context: BotContext) -> None:
    """Switch a topic's languages or drop it, then redraw the chat's list of topics."""
    press = await admin_press(update, context, views.parse_topic_data)
    if press is None:
        return
    svc, query, stored = context.services, press.query, press.chat
    action, follow_id = press.choice
    current = await svc.topics.get(stored.id, follow_id)
    if current is None:
        toast = reader_views.plain(svc.renderer, stored.lang, views.GONE)
    elif action == "drop":
        await svc.topics.unfollow(stored.id, follow_id)
        toast = reader_views.plain(svc.renderer, stored.lang, views.DROPPED, topic=current.text)
    else:
        changed = await svc.topics.set_any_lang(stored.id, follow_id, not current.any_lang)
        scope = views.SCOPE_ALL if changed is not None and changed.any_lang else views.SCOPE_CHAT
        toast = reader_views.plain(svc.renderer, stored.lang, scope)
    await answer(query, toast)
    if press.message.is_accessible:
        follows = await svc.topics.following(stored.id)
        await reader_views.edit_reply(query, views.following(svc.renderer, stored, follows))
