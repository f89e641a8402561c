"""What the bot itself lacks to post in a chat, asked of Telegram live.

An unknown answer is no proof of a problem. Who may change a chat's settings is decided in
bot.services.permissions, the one place for that rule.
"""

from __future__ import annotations

import enum

from telegram import Bot, ChatMember, ChatMemberAdministrator, ChatMemberRestricted
from telegram.constants import ChatMemberStatus

from bot.services.permissions import Access, ask_member
from storage.models import ChatType


class MissingRight(enum.StrEnum):
    """What the bot needs in a chat to post there (values are stored with an incident)."""

    POST_MESSAGES = "post_messages"  # channel admin right
    SEND_MESSAGES = "send_messages"  # group member permission
    SEND_PHOTOS = "send_photos"
    TOPIC = "topic"  # the chosen forum topic is closed or gone
    MEMBERSHIP = "membership"  # the bot is not in the chat


async def get_member(bot: Bot, chat_id: int, user_id: int) -> ChatMember | None:
    """Ask Telegram for a membership now; None when it cannot or will not say."""
    answer = await ask_member(bot, chat_id, user_id)
    return None if isinstance(answer, Access) else answer


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
