"""The one rule for who may change a chat's settings, and the getChatMember lookups behind it.

Who may change a chat's settings (every command and button that does: /subscribe,
/unsubscribe, the language and settings buttons, /here, the /channels panel):
- in a private chat, its own user;
- the bot's operators (ADMIN_USER_IDS), in any chat;
- an anonymous admin, who writes as the group itself (only admins can);
- otherwise, in groups, supergroups and channels alike: the chat's creator, or an administrator
  with the right to change the chat's info (can_change_info).

A change is checked with getChatMember at the moment of the action, never from memory, so a
demoted admin loses the right at once. When Telegram cannot answer (5xx, network, timeout) the
verdict is UNKNOWN rather than "no": the user is asked to try again, not told they are no
admin. Looking only (the /channels list, /why) may use answers up to CACHE_TTL seconds old.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Callable

from telegram import Bot, ChatMember, ChatMemberAdministrator
from telegram.constants import ChatMemberStatus
from telegram.error import BadRequest, ChatMigrated, Forbidden, TelegramError

from bot.text.i18n import N_

log = logging.getLogger(__name__)

CACHE_TTL = 60.0  # seconds an answer may be reused for looking (never for changing)
CACHE_CAPACITY = 4096  # (chat, user) answers kept; the least recently used go first
LOOKUP_BUDGET = 10  # getChatMember calls one command of a non-operator may cost

# What a user is told when the verdict is UNKNOWN, wherever they asked.
RIGHTS_UNKNOWN = N_(
    "I could not check your rights in this chat just now: Telegram did not answer. "
    "Please try again in a minute."
)


class Access(enum.StrEnum):
    """The verdict on one user and one chat."""

    ALLOWED = "allowed"
    REFUSED = "refused"
    UNKNOWN = "unknown"  # Telegram could not be asked; try again later


def can_change_settings(member: ChatMember) -> bool:
    """True for the chat's creator, or an administrator who may change the chat's info."""
    if member.status == ChatMemberStatus.OWNER:
        return True
    return isinstance(member, ChatMemberAdministrator) and bool(member.can_change_info)


def is_admin(member: ChatMember) -> bool:
    """True for the creator or any administrator, whatever their rights."""
    return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


class MemberCache:
    """Recent getChatMember answers per (chat, user), for looking only: each kept `ttl`
    seconds, at most `capacity` of them."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        ttl: float = CACHE_TTL,
        capacity: int = CACHE_CAPACITY,
    ) -> None:
        self._monotonic = monotonic
        self.ttl = ttl
        self.capacity = capacity
        self._answers: OrderedDict[tuple[int, int], tuple[float, ChatMember]] = OrderedDict()

    def get(self, chat_id: int, user_id: int) -> ChatMember | None:
        """Return a fresh answer, None when there is none."""
        key = (chat_id, user_id)
        entry = self._answers.get(key)
        if entry is None:
            return None
        if entry[0] <= self._monotonic():
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        return entry[1]

    def put(self, chat_id: int, user_id: int, member: ChatMember) -> None:
        key = (chat_id, user_id)
        self._answers.pop(key, None)
        self._answers[key] = (self._monotonic() + self.ttl, member)
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)


async def ask_member(bot: Bot, chat_id: int, user_id: int) -> ChatMember | Access:
    """Ask Telegram for the user's membership now.

    Returns the member; REFUSED when Telegram refuses to say (no such user or chat, the bot is
    not there: asking again will not help); UNKNOWN when it could not answer at all.
    """
    try:
        return await bot.get_chat_member(chat_id, user_id)
    except (BadRequest, Forbidden, ChatMigrated) as exc:
        log.info("getChatMember(%d, %d) refused: %s", chat_id, user_id, exc)
        return Access.REFUSED
    except TelegramError as exc:
        log.warning("getChatMember(%d, %d) failed: %s", chat_id, user_id, exc)
    except (TypeError, ValueError, KeyError):
        # An answer PTB cannot parse (a field it requires is missing): no proof either way.
        log.warning("getChatMember(%d, %d): unreadable answer", chat_id, user_id, exc_info=True)
    return Access.UNKNOWN


async def member_access(
    bot: Bot,
    chat_id: int,
    user_id: int,
    rule: Callable[[ChatMember], bool],
    *,
    cache: MemberCache | None = None,
    live: bool = True,
) -> Access:
    """Apply `rule` to the user's membership: asked now when `live`, else a cached answer if
    `cache` has a fresh one. A live answer is remembered in `cache`."""
    member = None if live or cache is None else cache.get(chat_id, user_id)
    if member is None:
        answer = await ask_member(bot, chat_id, user_id)
        if isinstance(answer, Access):
            return answer
        member = answer
        if cache is not None:
            cache.put(chat_id, user_id, member)
    return Access.ALLOWED if rule(member) else Access.REFUSED


async def settings_access(
    bot: Bot,
    chat_id: int,
    user_id: int | None,
    *,
    private: bool,
    operator: bool,
    sender_chat_id: int | None = None,
    cache: MemberCache | None = None,
    live: bool = True,
) -> Access:
    """May this sender change the chat's settings (the rule in the module docstring)?

    Every change passes `live=True` (the default); only a listing may pass `live=False` to
    reuse an answer from `cache`.
    """
    if private or operator:
        return Access.ALLOWED
    if sender_chat_id is not None and sender_chat_id == chat_id:
        return Access.ALLOWED
    if user_id is None:
        return Access.REFUSED
    return await member_access(bot, chat_id, user_id, can_change_settings, cache=cache, live=live)
