"""Chats, users and members as Telegram knows them: lookups, membership, blocked and migrated chats.

A chat not added with ``add_chat()`` comes into being when a send or an update first names its
id, typed by the id: positive ids are private chats, ``-100…`` ids supergroups, other negative
ids basic groups. Lookups (getChat, getChatMember...) answer only for chats that exist by then,
as Telegram answers only for chats the bot has met. A ``chat_id`` may also be a known
``@username``; an unknown one is "chat not found".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.fakes.botapi.calls import ApiCall, ApiError, Handler, JSONDict, bad, json_copy
from tests.fakes.botapi.profile import Profile

CHAT_NOT_FOUND = "Bad Request: chat not found"
CHAT_TYPES = frozenset({"private", "group", "supergroup", "channel"})
MEMBER_STATUSES = frozenset({"creator", "administrator", "member", "restricted", "left", "kicked"})
# python-telegram-bot refuses a ChatMember without every one of these fields.
_ADMIN_RIGHTS = [
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_post_messages",
    "can_edit_messages",
    "can_pin_messages",
    "can_manage_topics",
]
_RESTRICTED_RIGHTS = [
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
    "can_edit_tag",
    "can_react_to_messages",
]


class Chats:
    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self.chats: dict[int, JSONDict] = {}
        self.members: dict[tuple[int, int], JSONDict] = {}
        self.users: dict[int, JSONDict] = {}
        #: Chats whose sends Telegram refuses with 403, with the description it gives.
        self.blocked: dict[int, str] = {}
        #: Basic groups upgraded to supergroups: old id -> new id.
        self.migrated: dict[int, int] = {}
        self._usernames: dict[str, int] = {}

    # -- seeding ------------------------------------------------------------------------

    def add(
        self,
        chat_id: int,
        type: str,  # the Bot API field name
        title: str | None = None,
        username: str | None = None,
        is_forum: bool = False,
    ) -> JSONDict:
        if type not in CHAT_TYPES:
            raise ValueError(f"unknown chat type {type!r}")
        chat: JSONDict = {"id": chat_id, "type": type}
        if type == "private":
            chat["first_name"] = title or f"User{chat_id}"
        else:
            chat["title"] = title or f"Chat {chat_id}"
        if username:
            chat["username"] = username.lstrip("@")
            self._usernames[chat["username"].lower()] = chat_id
        if is_forum:
            chat["is_forum"] = True
        self.chats[chat_id] = chat
        return dict(chat)

    def add_user(
        self, user_id: int, first_name: str, language_code: str | None, username: str | None
    ) -> JSONDict:
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        self.users[user_id] = user
        return dict(user)

    def set_member(self, chat_id: int, user_id: int, status: str, **rights: Any) -> JSONDict:
        member = self.member_dict(self._user_for(user_id), status, rights)
        self.members[(chat_id, user_id)] = member
        return json_copy(member)

    # -- resolving chat_id parameters ---------------------------------------------------

    def id_of(self, raw: Any) -> int | None:
        """The chat a ``chat_id`` parameter names (None if none); never creates one."""
        if isinstance(raw, bool):
            return None
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            if raw.startswith("@"):
                return self._usernames.get(raw[1:].lower())
            try:
                return int(raw)
            except ValueError:
                return None
        return None

    def resolve(self, raw: Any) -> JSONDict:
        """The chat a send goes to, created on first use if only its id is known."""
        chat_id = self.id_of(raw)
        if chat_id is None or chat_id == 0:
            raise ApiError(400, CHAT_NOT_FOUND)
        if chat_id not in self.chats:
            if chat_id > 0:
                kind = "private"
            elif chat_id <= -1000000000000:
                kind = "supergroup"
            else:
                kind = "group"
            self.add(chat_id, kind)
        return self.chats[chat_id]

    def known(self, raw: Any) -> JSONDict:
        """The chat a lookup names; lookups never create chats."""
        chat_id = self.id_of(raw)
        if chat_id is None or chat_id not in self.chats:
            raise ApiError(400, CHAT_NOT_FOUND)
        return self.chats[chat_id]

    def check_reachable(self, raw: Any, *, sending: bool) -> None:
        """Refuse a call to a migrated group (any method) or a blocked chat (sends)."""
        chat_id = self.id_of(raw)
        if chat_id is None:
            return
        if chat_id in self.migrated:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self.migrated[chat_id]},
            )
        if sending and chat_id in self.blocked:
            raise ApiError(403, self.blocked[chat_id])

    # -- members ------------------------------------------------------------------------

    def member_dict(self, user: JSONDict, status: str, rights: Mapping[str, Any]) -> JSONDict:
        """A ChatMember: administrator rights default to True, restricted ones to False."""
        if status not in MEMBER_STATUSES:
            raise ValueError(f"unknown member status {status!r}")
        member: JSONDict = {"status": status, "user": dict(user)}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(can_be_edited=False, is_anonymous=False)
            member.update(dict.fromkeys(_ADMIN_RIGHTS, True))
        elif status == "restricted":
            member.update(is_member=True, until_date=0)
            member.update(dict.fromkeys(_RESTRICTED_RIGHTS, False))
        elif status == "kicked":
            member["until_date"] = 0
        member.update(rights)
        return member

    def _user_for(self, user_id: int) -> JSONDict:
        if user_id == self._profile.bot_id:
            return self._profile.public_bot_user()
        return dict(
            self.users.get(user_id)
            or {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        )

    def _member(self, chat: JSONDict, user_id: int) -> JSONDict:
        member = self.members.get((chat["id"], user_id))
        if member is not None:
            return json_copy(member)
        # The bot is an all-rights admin wherever the test didn't say otherwise.
        if user_id == self._profile.bot_id and chat["type"] != "private":
            return self.member_dict(self._profile.public_bot_user(), "administrator", {})
        return self.member_dict(self._user_for(user_id), "member", {})

    # -- methods ------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getChatAdministrators": self._get_chat_administrators,
            "leaveChat": self._leave_chat,
        }

    def _get_chat(self, call: ApiCall) -> JSONDict:
        chat = self.known(call.params.get("chat_id"))
        # A ChatFullInfo: python-telegram-bot requires these fields.
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _get_chat_member(self, call: ApiCall) -> JSONDict:
        chat = self.known(call.params.get("chat_id"))
        user_id = call.params.get("user_id")
        if not isinstance(user_id, int) or user_id <= 0:
            raise bad("invalid user_id specified")
        return self._member(chat, user_id)

    def _get_chat_administrators(self, call: ApiCall) -> list[JSONDict]:
        chat = self.known(call.params.get("chat_id"))
        if chat["type"] == "private":
            raise bad("there are no administrators in the private chat")
        admins = [
            json_copy(member)
            for (chat_id, _), member in self.members.items()
            if chat_id == chat["id"] and member["status"] in {"creator", "administrator"}
        ]
        bot_id = self._profile.bot_id
        if (chat["id"], bot_id) not in self.members:
            admins.append(self._member(chat, bot_id))
        return admins

    def _leave_chat(self, call: ApiCall) -> bool:
        """The bot leaves: from now on it is a member who left, and its sends are refused."""
        chat = self.known(call.params.get("chat_id"))
        if chat["type"] == "private":
            raise bad("chat member status can't be changed in private chats")
        self.set_member(chat["id"], self._profile.bot_id, "left")
        self.blocked[chat["id"]] = "Forbidden: bot is not a member of the channel chat"
        return True
