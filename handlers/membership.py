"""my_chat_member updates: channels connect themselves when the bot is made an admin, and every
chat stops receiving posts when the bot is removed, loses its rights, or is blocked.

Notes to the admin who acted, and the stored reasons: handlers.views.membership.
"""

from __future__ import annotations

import logging

from telegram import ChatMember, ChatMemberAdministrator, ChatMemberRestricted, Update
from telegram.constants import ChatMemberStatus
from telegram.constants import ChatType as TgChatType

from handlers.context import BotContext
from handlers.views import membership as views
from storage.models import ChatType

log = logging.getLogger(__name__)

_GONE = (ChatMemberStatus.LEFT, ChatMemberStatus.BANNED)


def _can_post(member: ChatMember, chat_type: str) -> bool:
    if member.status == ChatMemberStatus.OWNER:
        return True
    if isinstance(member, ChatMemberAdministrator):
        return chat_type != TgChatType.CHANNEL or bool(member.can_post_messages)
    if isinstance(member, ChatMemberRestricted):
        return member.is_member and member.can_send_messages
    # In groups a plain member may post; in channels only admins can.
    return chat_type != TgChatType.CHANNEL and member.status == ChatMemberStatus.MEMBER


async def on_my_chat_member(update: Update, context: BotContext) -> None:
    """Record what the bot's own membership change means for posting to that chat."""
    change = update.my_chat_member
    if change is None:
        return
    svc = context.services
    chat, actor = change.chat, change.from_user
    new, old = change.new_chat_member, change.old_chat_member
    now = svc.clock.now()
    chat_type = ChatType(chat.type)
    name = views.chat_label(chat.title, chat.username, chat.id)
    # Notes to the admin who acted are queued in their language and sent from the outbox; if
    # they never started the bot, Telegram refuses the note and its row is recorded as failed.
    lang = svc.translator.resolve(actor.language_code)

    if new.status in _GONE or (not chat_type.is_private and not _can_post(new, chat.type)):
        reason = views.REMOVED if new.status in _GONE else views.NO_POST_RIGHT
        known = await svc.store.get_chat(chat.id)
        if known is not None and known.active:
            await svc.store.deactivate_chat(chat.id, reason, now)
            await svc.store.record_event("disconnected", reason, now, chat_id=chat.id)
            log.info("chat %d: %s; posting stopped", chat.id, reason)
        if (
            chat_type is ChatType.CHANNEL
            and new.status == ChatMemberStatus.ADMINISTRATOR
            and actor.id != context.bot.id
        ):
            note = views.needs_post_right(svc.renderer, lang, name)
            await svc.channels.notify(actor.id, lang, note)
        elif known is not None and known.active and chat_type is ChatType.CHANNEL:
            note = views.disconnected(svc.renderer, lang, name)
            await svc.channels.notify(actor.id, lang, note)
        return

    if chat_type is ChatType.CHANNEL:
        was_posting = _can_post(old, chat.type)
        stored = await svc.store.upsert_chat(
            chat.id,
            chat_type,
            title=chat.title,
            username=chat.username,
            default_lang=svc.translator.resolve(None),
            now=now,
            added_by=actor.id,
            subscribed=True,
            active=True,
        )
        await svc.store.record_event("connected", f"by user {actor.id}", now, chat_id=chat.id)
        log.info("channel %d connected by user %d", chat.id, actor.id)
        if not was_posting:
            note = views.connected(svc.renderer, lang, name, stored.languages)
            await svc.channels.notify(actor.id, lang, note)
        return

    # Groups and private chats: the bot is present again; posts only after /subscribe.
    await svc.store.upsert_chat(
        chat.id,
        chat_type,
        title=chat.title,
        username=chat.username or (actor.username if chat_type.is_private else None),
        default_lang=svc.translator.resolve(actor.language_code),
        now=now,
        added_by=actor.id if not chat_type.is_private else None,
        active=True,
    )
