"""Who may change a chat's settings: a private chat's own user; in groups, the group's admins.

Admin status is asked of Telegram (getChatMember) at the moment of the action, never cached,
so a demoted admin loses the right at once.
"""

from __future__ import annotations

import logging

from telegram import Bot, Chat, User
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError

log = logging.getLogger(__name__)

ADMIN_STATUSES = frozenset({ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR})


async def is_chat_admin(bot: Bot, chat_id: int, user_id: int) -> bool:
    """Return True when `user_id` is the creator or an administrator of `chat_id`.

    Any failure to find out (the chat is gone, Telegram is down) counts as "no": a settings
    change is refused rather than allowed on a guess.
    """
    try:
        member = await bot.get_chat_member(chat_id, user_id)
    except TelegramError as exc:
        log.warning("getChatMember(%d, %d) failed: %s", chat_id, user_id, exc)
        return False
    return member.status in ADMIN_STATUSES


async def may_configure(
    bot: Bot, chat: Chat, user: User | None, sender_chat: Chat | None = None
) -> bool:
    """Return True when this sender may change `chat`'s settings.

    Private chats belong to their user. In groups the sender must be an admin; an anonymous
    admin writes as the group itself (`sender_chat` is the chat), which only admins can do.
    """
    if chat.type == ChatType.PRIVATE:
        return True
    if sender_chat is not None and sender_chat.id == chat.id:
        return True
    if user is None:
        return False
    return await is_chat_admin(bot, chat.id, user.id)
