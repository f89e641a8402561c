"""Who may run a chat's settings, and what the bot itself lacks there, asked of Telegram live.

Nothing is cached: a demoted admin loses the panel at their next press. Errors fail closed
(no access), except for the bot's own check, where an unknown answer is no proof of a problem.
"""

from __future__ import annotations

import enum
import logging

from telegram import Bot, ChatMember, ChatMemberAdministrator, ChatMemberRestricted
from telegram.constants import ChatMemberStatus
from telegram.error import TelegramError

from storage.models import ChatType

log = logging.getLogger(__name__)


class MissingRight(enum.StrEnum):
    """What the bot needs in a chat to post there (values are stored with an incident)."""

    POST_MESSAGES = "post_messages"  # channel admin right
    SEND_MESSAGES = "send_messages"  # group member permission
    SEND_PHOTOS = "send_photos"
    TOPIC = "topic"  # the chosen forum topic is closed or gone
    MEMBERSHIP = "membership"  # the bot is not in the chat


def can_manage(member: ChatMember, chat_type: ChatType) -> bool:
    """True for the creator, or an admin who may post (channels) or change the chat's info."""
    if member.status == ChatMemberStatus.OWNER:
        return True
    if isinstance(member, ChatMemberAdministrator):
        if chat_type is ChatType.CHANNEL:
            return bool(member.can_post_messages)
        return bool(member.can_change_info)
    return False


def is_admin(member: ChatMember) -> bool:
    return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


async def get_member(bot: Bot, chat_id: int, user_id: int) -> ChatMember | None:
    """Ask Telegram for the user's membership now; None when it cannot say."""
    try:
        return await bot.get_chat_member(chat_id, user_id)
    except TelegramError as exc:
        log.info("getChatMember(%d, %d) failed: %s", chat_id, user_id, exc)
    except (TypeError, ValueError, KeyError):
        # An answer PTB cannot parse (a field it requires is missing): no proof either way.
        log.warning("getChatMember(%d, %d): unreadable answer", chat_id, user_id, exc_info=True)
    return None


async def may_manage(bot: Bot, chat_id: int, chat_type: ChatType, user_id: int) -> bool:
    """True when the user may change the chat's settings right now (see can_manage)."""
    member = await get_member(bot, chat_id, user_id)
    return member is not None and can_manage(member, chat_type)


async def may_view(bot: Bot, chat_id: int, user_id: int) -> bool:
    """True when the user is an admin of the chat (any rights) right now."""
    member = await get_member(bot, chat_id, user_id)
    return member is not None and is_admin(member)


def bot_missing_right(
    member: ChatMember, chat_type: ChatType, *, photos: bool = False
) -> MissingRight | None:
    """What keeps the bot (as `member`) from posting in a chat of `chat_type`, if anything."""
    if member.status in (ChatMemberStatus.LEFT, ChatMemberStatus.BANNED):
        return MissingRight.MEMBERSHIP
    if chat_type is ChatType.CHANNEL:
        if isinstance(member, ChatMemberAdministrator) and member.can_post_messages:
            return None
        return None if member.status == ChatMemberStatus.OWNER else MissingRight.POST_MESSAGES
    if isinstance(member, ChatMemberRestricted):
        if not member.can_send_messages:
            return MissingRight.SEND_MESSAGES
        if photos and not member.can_send_photos:
            return MissingRight.SEND_PHOTOS
    return None


async def bot_problem(
    bot: Bot, chat_id: int, chat_type: ChatType, *, photos: bool = False
) -> MissingRight | None:
    """What the bot lacks to post in the chat, according to Telegram now (None: fine or unknown)."""
    member = await get_member(bot, chat_id, bot.id)
    return None if member is None else bot_missing_right(member, chat_type, photos=photos)


def right_from_error(error: str, chat_type: ChatType) -> MissingRight:
    """Name the missing right from Telegram's refusal when the member check could not."""
    text = error.lower()
    if "topic" in text or "thread" in text:
        return MissingRight.TOPIC
    if chat_type is ChatType.CHANNEL:
        return MissingRight.POST_MESSAGES
    if "photo" in text:
        return MissingRight.SEND_PHOTOS
    return MissingRight.SEND_MESSAGES
