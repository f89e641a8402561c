"""Running a channel or group from a private chat: who may, what they may change, and what the
bot does when it cannot post there.

Every action is authorised by bot.services.permissions' one rule, with a live getChatMember
(operators pass); the chat list may reuse answers a minute old and asks Telegram at most
LOOKUP_BUDGET times per command. Every change is stored with its author (storage.admin), and a
refused send pauses the chat and tells its admins once.
Handlers turn the values returned here into messages.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from telegram import Bot
from telegram.error import TelegramError

from bot.clock import Clock
from bot.delivery.digests import change_schedule
from bot.delivery.publisher import Publisher, SendResult
from bot.delivery.schedule import ScheduleUpdate, planned_hold
from bot.pipeline.feeds import clean_link
from bot.services.admin_rights import (
    MissingRight,
    bot_missing_right,
    bot_problem,
    get_member,
    right_from_error,
)
from bot.services.filters import NOT_INCLUDED, PAUSED, check, fold
from bot.services.permissions import (
    LOOKUP_BUDGET,
    Access,
    MemberCache,
    can_change_settings,
    is_admin,
    member_access,
    settings_access,
)
from bot.services.topics import Followed, Topics, matches
from bot.text.i18n import LANGUAGES, N_, Translator
from bot.text.plain import one_line
from bot.text.render import Renderer
from storage import admin as admin_store
from storage.admin import AuditLine, ChatChange, Incident, SettingsChange, Topic
from storage.follows import Follow
from storage.models import (
    Chat,
    ChatType,
    Delivery,
    DeliveryMode,
    DeliveryState,
    Item,
    ItemOrigin,
    PostStyle,
)
from storage.outbox import enqueue_notice
from storage.schedule import DIGEST_REASON
from storage.store import Store

log = logging.getLogger(__name__)

LIST_CAP = 50  # chats shown by /channels
SCAN_CAP = 200  # chats considered for one /channels (at most LOOKUP_BUDGET of them asked)
CHECK_CONCURRENCY = 8
MAX_NOTIFIED_ADMINS = 10
SIGNATURE_MAX = 200
RULE_MAX = 60  # characters in one keyword or category
RULES_MAX = 30  # rules in one list
PREVIEW_SCAN = 50  # latest pieces searched for one that passes the filters
# Telegram's words for "the bot is not in that chat any more": nothing an admin can grant.
_GONE = (
    "kicked",
    "not a member",
    "chat not found",
    "channel_private",
    "deactivated",
    "was deleted",
    "blocked",
)
_RULE_SPLIT = re.compile(r"[,;\n]+")

RIGHT_LABELS: dict[MissingRight, str] = {
    MissingRight.POST_MESSAGES: N_("Post messages"),
    MissingRight.SEND_MESSAGES: N_("Send messages"),
    MissingRight.SEND_PHOTOS: N_("Send photos"),
    MissingRight.TOPIC: N_("an open topic"),
    MissingRight.MEMBERSHIP: N_("membership"),
}
NO_RIGHT_NOTICE = N_(
    "⚠️ I cannot post in {chat}: I need the “{right}” right there (Telegram said: {reason}). "
    "I have paused posting to {chat} so that nothing piles up. Give me the right, then open "
    "/channels, choose {chat} and press “Resume”."
)
TOPIC_NOTICE = N_(
    "⚠️ I cannot post in {chat}: the topic chosen for my posts is closed or deleted (Telegram "
    "said: {reason}). I have paused posting there. Send /here inside an open topic, then open "
    "/channels, choose {chat} and press “Resume”."
)


class InputKind(enum.StrEnum):
    """Text an admin was asked to type (also the callback argument that asks for it)."""

    SIGNATURE = "sig"
    # "Only pieces about …": topics (bot.services.topics). It keeps the code of the include
    # keyword rules it replaced, so a question asked before an upgrade is answered with topics.
    ONLY_ABOUT = "ik"
    EXCLUDE_KEYWORD = "xk"
    INCLUDE_CATEGORY = "ic"
    EXCLUDE_CATEGORY = "xc"

    @property
    def field(self) -> str:
        return _RULE_FIELDS[self]


_RULE_FIELDS = {
    InputKind.SIGNATURE: "signature",
    InputKind.ONLY_ABOUT: "only_about",
    InputKind.EXCLUDE_KEYWORD: "exclude_keywords",
    InputKind.INCLUDE_CATEGORY: "include_categories",
    InputKind.EXCLUDE_CATEGORY: "exclude_categories",
}
# The rules kept in ChatSettings; "only pieces about" are the chat's followed topics.
RULE_KINDS = (
    InputKind.INCLUDE_CATEGORY,
    InputKind.EXCLUDE_CATEGORY,
    InputKind.EXCLUDE_KEYWORD,
)


@dataclass(frozen=True, slots=True)
class Actor:
    """The person pressing a button or sending a command."""

    user_id: int
    name: str | None
    operator: bool


@dataclass(frozen=True, slots=True)
class PendingInput:
    chat_id: int
    kind: InputKind


class InputStates:
    """Which admin was asked to type what next. Kept in the store, so the answer is taken by
    whichever instance receives it; each question expires after `ttl`, at most `capacity` open."""

    def __init__(self, store: Store, clock: Clock, ttl: float = 600.0, capacity: int = 1000):
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.capacity = capacity

    async def expect(self, user_id: int, chat_id: int, kind: InputKind) -> None:
        await admin_store.expect_input(
            self.store, user_id, chat_id, kind.value,
            now=self.clock.now(), ttl=self.ttl, keep=self.capacity,
        )  # fmt: skip

    async def peek(self, user_id: int) -> PendingInput | None:
        found = await admin_store.peek_input(self.store, user_id, self.clock.now())
        return None if found is None else PendingInput(found[0], InputKind(found[1]))

    async def pop(self, user_id: int) -> PendingInput | None:
        found = await admin_store.pop_input(self.store, user_id, self.clock.now())
        return None if found is None else PendingInput(found[0], InputKind(found[1]))


class Verdict(enum.StrEnum):
    """What happened to one piece for one chat, as /why tells it."""

    SENT = "sent"
    PENDING = "pending"
    RETRYING = "retrying"
    FAILED = "failed"
    PAUSED = "paused"
    FILTERED = "filtered"
    CANCELLED = "cancelled"
    LANGUAGE = "language"  # the chat does not take the piece's language
    CONNECTED_LATER = "connected_later"
    NOT_RECEIVING = "not_receiving"
    IN_DIGEST = "in_digest"  # sent in the chat's digest, not on its own
    WAITING_DIGEST = "waiting_digest"  # held for the chat's next daily digest
    WAITING_QUIET = "waiting_quiet"  # held until the chat's quiet hours end
    NOT_ABOUT = "not_about"  # the chat takes only pieces about its topics; not this one


@dataclass(frozen=True, slots=True)
class ChatVerdict:
    chat: Chat
    verdict: Verdict
    delivery: Delivery | None
    until: float | None = None  # a held piece: when the chat's digest or quiet hours end


@dataclass(frozen=True, slots=True)
class ItemReport:
    item: Item
    chats: tuple[ChatVerdict, ...]  # empty for backlog and too-old pieces


@dataclass(frozen=True, slots=True)
class PanelState:
    """What the panel shows beyond the stored settings."""

    incident: Incident | None
    bot_problem: MissingRight | None
    topic: Topic | None
    followed: tuple[Follow, ...] = ()  # "only pieces about …"


@dataclass(frozen=True, slots=True)
class SendReport:
    item: Item | None  # None: no piece matches the chat's settings yet
    result: SendResult | None


class SignatureResult(enum.StrEnum):
    SAVED = "saved"
    EMPTY = "empty"
    TOO_LONG = "too_long"


def rule_token(rule: str) -> str:
    """A short, stable token naming a rule in callback data (the rule text may be long)."""
    return f"{zlib.crc32(rule.encode()):08x}"


def message_link(chat: Chat, message_id: int) -> str | None:
    """Return the t.me link of a message in a channel or supergroup (None where none exists)."""
    if chat.username:
        return f"https://t.me/{chat.username}/{message_id}"
    text = str(chat.id)
    if text.startswith("-100"):
        return f"https://t.me/c/{text[4:]}/{message_id}"
    return None


def link_variants(link: str) -> list[str]:
    """The stored forms a pasted article link may have: de-tracked, with or without a slash."""
    text = link.strip().strip("<>")
    if "://" not in text:
        text = "https://" + text
    base = clean_link(text)
    variants = [base, base[:-1] if base.endswith("/") else base + "/"]
    for variant in list(variants):
        if variant.startswith("https://"):
            variants.append("http://" + variant[len("https://") :])
        elif variant.startswith("http://"):
            variants.append("https://" + variant[len("http://") :])
    return list(dict.fromkeys(variants))


def split_rules(text: str) -> list[str]:
    """The rules in an admin's message: separated by commas, semicolons or new lines."""
    return [one_line(part) for part in _RULE_SPLIT.split(text) if one_line(part)]


class ChannelAdmin:
    """The channel-admin service; the publisher's on_chat_problem hook lives here too."""

    def __init__(
        self,
        store: Store,
        bot: Bot,
        publisher: Publisher,
        renderer: Renderer,
        clock: Clock,
        *,
        operators: frozenset[int] = frozenset(),
        input_ttl: float = 600.0,
        on_schedule_changed: Callable[[], None] | None = None,
        followed: Topics | None = None,
    ) -> None:
        self.store = store
        # The chat's followed topics: the panel's "only pieces about …".
        self.followed = followed or Topics(store, clock)
        # Reads only (members, admins, leaving); what the bot says goes through the publisher.
        self.bot = bot
        self.publisher = publisher
        self.renderer = renderer
        self.translator: Translator = renderer.translator
        self.clock = clock
        self.operators = operators
        self.inputs = InputStates(store, clock, ttl=input_ttl)
        # Answers reused only to list and explain; every change asks Telegram again.
        self.members = MemberCache(clock.monotonic)
        # The digest scheduler's wake (bot.delivery.digests): a change may end a hold now.
        self.on_schedule_changed = on_schedule_changed

    # ------------------------------------------------------------------ who

    def actor(self, user_id: int, name: str | None) -> Actor:
        return Actor(user_id, name, user_id in self.operators)

    async def language_for(self, user_id: int, language_code: str | None) -> str:
        """The language to talk to a user in: their /language choice, else their app's."""
        known = await self.store.get_chat(user_id)
        if known is not None and known.type.is_private:
            return self.translator.resolve(known.lang)
        return self.translator.resolve(language_code)

    async def manageable_chats(self, actor: Actor) -> list[Chat]:
        """Channels and groups where the bot is present and `actor` may change settings now."""
        chats = [c for c in await self.store.list_chats(active_only=True) if not c.type.is_private]
        chats.sort(key=lambda c: (c.display_name.casefold(), c.id))
        if actor.operator:
            return chats[:LIST_CAP]
        # Chats this user connected are checked first, so the lookup budget never hides them.
        chats.sort(key=lambda c: c.added_by != actor.user_id)
        # Answers still cached cost nothing; at most LOOKUP_BUDGET others are asked, so a
        # stranger's /channels costs Telegram a few calls, not one per chat the bot is in.
        candidates: list[Chat] = []
        asks = 0
        for chat in chats[:SCAN_CAP]:
            if self.members.get(chat.id, actor.user_id) is None:
                if asks == LOOKUP_BUDGET:
                    continue
                asks += 1
            candidates.append(chat)
        if asks == LOOKUP_BUDGET:
            log.info("user %d: chat list checked %d chats live (the budget)", actor.user_id, asks)
        slots = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def allowed(chat: Chat) -> bool:
            async with slots:
                access = await settings_access(
                    self.bot, chat.id, actor.user_id, private=False, operator=False,
                    cache=self.members, live=False,
                )  # fmt: skip
                return access is Access.ALLOWED

        verdicts = await asyncio.gather(*(allowed(c) for c in candidates))
        mine = [c for c, ok in zip(candidates, verdicts, strict=True) if ok]
        mine.sort(key=lambda c: (c.display_name.casefold(), c.id))
        return mine[:LIST_CAP]

    async def authorize(self, actor: Actor, chat_id: int) -> tuple[Access, Chat | None]:
        """May `actor` run the chat right now (asked live)? The chat comes with ALLOWED only."""
        chat = await self.store.get_chat(chat_id)
        if chat is None or chat.type.is_private or not chat.active:
            return Access.REFUSED, None
        access = await self.settings_access(actor, chat)
        return access, (chat if access is Access.ALLOWED else None)

    async def settings_access(
        self, actor: Actor, chat: Chat, sender_chat_id: int | None = None
    ) -> Access:
        """May `actor` change `chat`'s settings now (bot.services.permissions' rule, asked live)?"""
        return await settings_access(
            self.bot, chat.id, actor.user_id, private=chat.type.is_private,
            operator=actor.operator, sender_chat_id=sender_chat_id, cache=self.members,
        )  # fmt: skip

    async def may_explain(
        self, actor: Actor, chat: Chat, sender_chat_id: int | None = None
    ) -> Access:
        """/why in a group: its admins (any rights), an anonymous admin, and operators.

        Only looks, so an answer up to a minute old will do.
        """
        if actor.operator or sender_chat_id == chat.id:
            return Access.ALLOWED
        return await member_access(
            self.bot, chat.id, actor.user_id, is_admin, cache=self.members, live=False
        )

    # ------------------------------------------------------------------ panel

    async def panel_state(self, chat: Chat) -> PanelState:
        store = self.store
        incident = await admin_store.get_incident(store, chat.id)
        problem = await bot_problem(
            self.bot, chat.id, chat.type, photos=chat.settings.style is PostStyle.PHOTO
        )
        topic = None
        if chat.settings.thread_id:
            topic = next(
                (t for t in await self.topics(chat) if t.thread_id == chat.settings.thread_id),
                Topic(chat.id, chat.settings.thread_id, ""),
            )
        return PanelState(incident, problem, topic, tuple(await self.only_about(chat)))

    async def _change(
        self, chat: Chat, actor: Actor, mutate: Callable[[Chat], ChatChange | None]
    ) -> Chat:
        result = await admin_store.change_chat(
            self.store,
            chat.id,
            mutate,
            user_id=actor.user_id,
            user_name=actor.name,
            now=self.clock.now(),
        )
        if result is None:
            return chat
        updated, change = result
        if change is not None:
            log.info(
                "chat %d: user %d changed %s",
                chat.id, actor.user_id, ", ".join(a.what for a in change.audit),
            )  # fmt: skip
        return updated

    async def set_paused(
        self, chat: Chat, actor: Actor, paused: bool
    ) -> tuple[Chat, MissingRight | None]:
        """Pause or resume posting; resuming is refused while the bot still cannot post."""
        only_topics = not chat.subscribed and bool(await self.only_about(chat))
        if not paused:
            problem = await bot_problem(
                self.bot, chat.id, chat.type, photos=chat.settings.style is PostStyle.PHOTO
            )
            if problem is not None:
                return chat, problem

        def mutate(current: Chat) -> ChatChange | None:
            if paused:
                if current.paused:
                    return None
                return ChatChange((AuditLine("paused", "off", "on"),), paused=True)
            if current.paused is False and (current.subscribed or only_topics):
                return None
            # Resuming also starts posting to a group that never subscribed (unless it takes
            # only the pieces about its topics: that is posting already).
            audit = AuditLine("paused", "on", "off")
            return ChatChange((audit,), paused=False, subscribed=None if only_topics else True)

        return await self._change(chat, actor, mutate), None

    async def toggle_language(self, chat: Chat, actor: Actor, code: str) -> Chat | None:
        """Add or remove a feed language; None when it would leave the chat with none."""
        if code not in LANGUAGES:
            return chat
        if chat.languages == (code,):
            return None

        def mutate(current: Chat) -> ChatChange | None:
            if code in current.languages:
                languages = tuple(c for c in current.languages if c != code)
            else:
                languages = tuple(c for c in LANGUAGES if c in (*current.languages, code))
            if not languages:
                return None
            audit = AuditLine("languages", ",".join(current.languages), ",".join(languages))
            return ChatChange((audit,), languages=languages)

        return await self._change(chat, actor, mutate)

    async def set_style(self, chat: Chat, actor: Actor, style: PostStyle) -> Chat:
        return await self._change(chat, actor, _setting("style", style))

    async def toggle_silent(self, chat: Chat, actor: Actor) -> Chat:
        return await self._change(chat, actor, _setting("silent", not chat.settings.silent))

    async def toggle_hashtags(self, chat: Chat, actor: Actor) -> Chat:
        return await self._change(chat, actor, _setting("hashtags", not chat.settings.hashtags))

    async def set_signature(
        self, chat: Chat, actor: Actor, text: str | None
    ) -> tuple[Chat, SignatureResult]:
        """Set (or, with None, remove) the line added under every post."""
        signature = one_line(text) if text is not None else None
        if signature is not None and not signature:
            return chat, SignatureResult.EMPTY
        if signature is not None and len(signature) > SIGNATURE_MAX:
            return chat, SignatureResult.TOO_LONG
        return await self._change(chat, actor, _setting("signature", signature)), (
            SignatureResult.SAVED
        )

    async def add_rules(self, chat: Chat, actor: Actor, kind: InputKind, text: str) -> Chat:
        """Add the comma-separated rules of `text` to one filter list (duplicates ignored)."""
        wanted = [r for r in split_rules(text) if len(r) <= RULE_MAX]

        def mutate(current: Chat) -> ChatChange | None:
            rules = list(getattr(current.settings, kind.field))
            known = {fold(r) for r in rules}
            for rule in wanted:
                if fold(rule) and fold(rule) not in known and len(rules) < RULES_MAX:
                    rules.append(rule)
                    known.add(fold(rule))
            return _setting(kind.field, tuple(rules))(current)

        return await self._takes_again(await self._change(chat, actor, mutate), actor, kind)

    async def remove_rule(self, chat: Chat, actor: Actor, kind: InputKind, token: str) -> Chat:
        def mutate(current: Chat) -> ChatChange | None:
            rules = getattr(current.settings, kind.field)
            kept = tuple(r for r in rules if rule_token(r) != token)
            return _setting(kind.field, kept)(current)

        return await self._takes_again(await self._change(chat, actor, mutate), actor, kind)

    async def _takes_again(self, chat: Chat, actor: Actor, kind: InputKind) -> Chat:
        """After an include category changed: what a chat with topics takes follows again."""
        if kind is not InputKind.INCLUDE_CATEGORY:
            return chat
        topics = [f.text for f in await self.only_about(chat)]
        return await self._topics_changed(chat, actor, topics) if topics else chat

    async def clear_filters(self, chat: Chat, actor: Actor) -> Chat:
        before = await self.only_about(chat)
        for follow in before:
            await self.followed.unfollow(chat.id, follow.id)

        def mutate(current: Chat) -> ChatChange | None:
            settings = replace(
                current.settings,
                include_categories=(),
                exclude_categories=(),
                include_keywords=(),
                exclude_keywords=(),
            )
            audit = tuple(
                AuditLine(k.field, _show(getattr(current.settings, k.field)), "")
                for k in RULE_KINDS
                if getattr(current.settings, k.field)
            )
            if before:
                audit += (AuditLine("only_about", _show(tuple(f.text for f in before)), ""),)
            if not audit:
                return None
            # With its topics gone a chat that took only them takes everything again, as with
            # no include rule; any other chat keeps taking what it took.
            return ChatChange(audit, settings=settings, subscribed=True if before else None)

        return await self._change(chat, actor, mutate)

    # ------------------------------------------------------- only pieces about …

    async def only_about(self, chat: Chat) -> list[Follow]:
        return await self.followed.following(chat.id)

    async def add_topics(self, chat: Chat, actor: Actor, text: str) -> tuple[Chat, list[Followed]]:
        """Follow the comma-separated topics of `text`; the chat then takes only the pieces
        about its topics (plus its include categories, when it has some)."""
        before = [f.text for f in await self.only_about(chat)]
        results = [await self.followed.follow(chat.id, part) for part in split_rules(text)]
        return await self._topics_changed(chat, actor, before), results

    async def remove_topic(self, chat: Chat, actor: Actor, follow_id: int) -> Chat:
        before = [f.text for f in await self.only_about(chat)]
        await self.followed.unfollow(chat.id, follow_id)
        return await self._topics_changed(chat, actor, before)

    async def _topics_changed(self, chat: Chat, actor: Actor, before: list[str]) -> Chat:
        """Record the change of topics, and what the chat takes: everything (narrowed by its
        include categories) when it has no topic or has include categories, else only its
        topics — the two kinds of include rule adding up, as they always did."""
        after = [f.text for f in await self.only_about(chat)]

        def mutate(current: Chat) -> ChatChange | None:
            everything = not after or bool(current.settings.include_categories)
            if after == before and everything == current.subscribed:
                return None
            audit = (AuditLine("only_about", _show(tuple(before)), _show(tuple(after))),)
            return ChatChange(audit, subscribed=everything)

        return await self._change(chat, actor, mutate)

    async def set_thread(
        self, chat: Chat, actor: Actor, thread_id: int | None, name: str | None = None
    ) -> Chat:
        """Send the chat's posts to a forum topic (None: the main chat / General)."""
        if thread_id is not None:
            await admin_store.remember_topic(
                self.store, chat.id, thread_id, name or "", self.clock.now()
            )
        return await self._change(chat, actor, _setting("thread_id", thread_id))

    async def set_schedule(self, chat: Chat, actor: Actor, update: ScheduleUpdate) -> Chat:
        """Change when the chat gets its pieces: as they appear, or a daily digest at an hour
        of its time zone (the default zone is the bot's TIMEZONE). Recorded with its author."""
        updated = await change_schedule(
            self.store, chat.id, lambda settings: update.applied(settings, chat.type),
            user_id=actor.user_id, user_name=actor.name, now=self.clock.now(),
            default_zone=self.renderer.zone,
        )  # fmt: skip
        if self.on_schedule_changed is not None:
            self.on_schedule_changed()
        return updated or chat

    async def disconnect(self, chat: Chat, actor: Actor) -> None:
        """Stop posting to the chat and leave it; adding the bot again reconnects it."""
        await admin_store.disconnect_chat(
            self.store,
            chat.id,
            user_id=actor.user_id,
            user_name=actor.name,
            now=self.clock.now(),
        )
        log.info("chat %d disconnected by user %d", chat.id, actor.user_id)
        try:
            await self.bot.leave_chat(chat.id)
        except TelegramError as exc:
            log.warning("could not leave chat %d after disconnecting it: %s", chat.id, exc)

    async def history(self, chat: Chat, limit: int = 10) -> list[SettingsChange]:
        return await admin_store.list_changes(self.store, chat.id, limit)

    async def topics(self, chat: Chat) -> list[Topic]:
        return await admin_store.list_topics(self.store, chat.id)

    async def remember_topic(self, chat_id: int, thread_id: int, name: str) -> None:
        await admin_store.remember_topic(self.store, chat_id, thread_id, name, self.clock.now())

    async def recent_categories(self, chat: Chat, limit: int = 12) -> list[str]:
        """Categories of the latest pieces in the chat's languages, as hints for a filter."""
        seen: dict[str, str] = {}
        for item in await self.store.latest_items(chat.languages, 100):
            for category in item.categories:
                seen.setdefault(fold(category), category)
        return list(seen.values())[:limit]

    # ------------------------------------------------------------------ preview and test

    async def latest_matching(self, chat: Chat) -> Item | None:
        """The newest piece the chat would take: one its filters let through, in its languages,
        and about one of its topics when it takes only those."""
        followed = await self.only_about(chat)
        only_topics = not chat.subscribed and bool(followed)
        langs = None if only_topics and any(f.any_lang for f in followed) else chat.languages
        items = await self.store.latest_items(langs, PREVIEW_SCAN)
        # Analysing pieces and topics is CPU work: a worker thread's.
        return await asyncio.to_thread(_first_taken, items, chat, followed, only_topics)

    async def preview(self, chat: Chat, actor: Actor) -> SendReport:
        """Send the latest matching piece, rendered with the chat's settings, to the admin."""
        item = await self.latest_matching(chat)
        if item is None:
            return SendReport(None, None)
        target = replace(
            chat,
            id=actor.user_id,
            type=ChatType.PRIVATE,
            settings=replace(chat.settings, thread_id=None),
        )
        return SendReport(item, await self.publisher.send(target, item))

    async def test_post(self, chat: Chat) -> SendReport:
        """Send the latest matching piece to the chat itself, as its next post would look."""
        item = await self.latest_matching(chat)
        if item is None:
            return SendReport(None, None)
        result = await self.publisher.send(chat, item)
        log.info("test post of item %d to chat %d: %s", item.id, chat.id, result.outcome)
        return SendReport(item, result)

    # ------------------------------------------------------------------ /why

    async def chats_to_explain(self, actor: Actor) -> list[Chat]:
        """/why in a private chat: the chats the user runs, and their own subscription."""
        chats = await self.manageable_chats(actor)
        own = await self.store.get_chat(actor.user_id)
        if own is not None and own.type.is_private:
            chats.append(own)
        return chats

    async def why(self, link: str, chats: Sequence[Chat]) -> list[ItemReport]:
        """What happened to the article at `link` for each of `chats` (empty: never seen)."""
        store = self.store
        items: list[Item] = []
        for candidate in link_variants(link):
            items = await store.find_items_by_link(candidate)
            if items:
                break
        reports: list[ItemReport] = []
        now = self.clock.now()
        for item in items:
            verdicts: list[ChatVerdict] = []
            if item.origin is ItemOrigin.NEW:
                for chat in chats:
                    delivery = await store.get_delivery(item.id, chat.id)
                    verdict = _verdict(item, chat, delivery)
                    if verdict in (Verdict.NOT_RECEIVING, Verdict.LANGUAGE) and not chat.subscribed:
                        followed = await self.only_about(chat)
                        if followed and not await asyncio.to_thread(
                            matches, item, item.lang, chat.languages, followed
                        ):
                            verdict = Verdict.NOT_ABOUT
                    until = None
                    if verdict is Verdict.PENDING:
                        hold = planned_hold(chat.settings, chat.type, now, self.renderer.zone)
                        if chat.settings.delivery is DeliveryMode.DIGEST:
                            verdict, until = Verdict.WAITING_DIGEST, hold.until
                        elif hold.active(now):
                            verdict, until = Verdict.WAITING_QUIET, hold.until
                    verdicts.append(ChatVerdict(chat, verdict, delivery, until))
            reports.append(ItemReport(item, tuple(verdicts)))
        return reports

    # ------------------------------------------------------------------ refused sends

    async def on_chat_problem(self, chat: Chat, error: str) -> None:
        """The publisher's hook: a channel or group refused a post (403, or a no-rights 400).

        If the bot is gone from the chat, stop posting there; otherwise pause the chat and
        tell its admins, once per incident, which right the bot needs.
        """
        if chat.type.is_private:
            return
        store, now = self.store, self.clock.now()
        right: MissingRight | None = None
        if not any(word in error.lower() for word in _GONE):
            member = await get_member(self.bot, chat.id, self.bot.id)
            photos = chat.settings.style is PostStyle.PHOTO
            if member is not None:
                right = bot_missing_right(member, chat.type, photos=photos)
            right = right or right_from_error(error, chat.type)
        if right is None or right is MissingRight.MEMBERSHIP:
            log.warning("chat %d refuses the bot (%s); deactivating it", chat.id, error)
            await store.deactivate_chat(chat.id, error, now)
            return
        new = await admin_store.pause_for_incident(store, chat.id, error, right.value, now)
        log.warning(
            "chat %d: cannot post (%s; missing %s): paused%s",
            chat.id, error, right, ", telling its admins" if new else " (admins already told)",
        )  # fmt: skip
        if new:
            await self._tell_admins(chat, right, error)

    async def notify(self, user_id: int, lang: str, html: str) -> None:
        """Queue a private message to a user (an admin): sent from the outbox like a post."""
        await enqueue_notice(self.store, user_id, lang, html, self.clock.now())
        self.publisher.wake()

    async def _tell_admins(self, chat: Chat, right: MissingRight, error: str) -> None:
        """Queue a notice to each admin who could fix it: sent from the outbox like a post."""
        renderer, translator = self.renderer, self.translator
        admins = await self._admins_to_tell(chat)
        now = self.clock.now()
        for user_id in admins:
            lang = await self.language_for(user_id, chat.lang)
            if right is MissingRight.TOPIC:
                text = renderer.message(lang, TOPIC_NOTICE, chat=chat.display_name, reason=error)
            else:
                label = translator.gettext(lang, RIGHT_LABELS[right])
                text = renderer.message(
                    lang, NO_RIGHT_NOTICE, chat=chat.display_name, right=label, reason=error
                )
            await enqueue_notice(self.store, user_id, lang, text, now)
        if admins:
            self.publisher.wake()
        log.info("chat %d: notice queued for %d admin(s) about the missing right", chat.id,
                 len(admins))  # fmt: skip

    async def _admins_to_tell(self, chat: Chat) -> list[int]:
        """The human admins who could fix it; the user who added the bot if none are known."""
        try:
            members = await self.bot.get_chat_administrators(chat.id)
        except TelegramError as exc:
            log.info("getChatAdministrators(%d) failed: %s", chat.id, exc)
            members = ()
        ids = [m.user.id for m in members if not m.user.is_bot and can_change_settings(m)][
            :MAX_NOTIFIED_ADMINS
        ]
        if not ids and chat.added_by is not None:
            ids = [chat.added_by]
        return ids


def _onoff(value: bool) -> str:
    return "on" if value else "off"


def _show(value: object) -> str:
    """A setting as the audit trail stores it."""
    if isinstance(value, bool):
        return _onoff(value)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _setting(name: str, value: Any) -> Callable[[Chat], ChatChange | None]:
    """A mutation setting one field of the chat's settings (nothing when it is already so)."""

    def mutate(chat: Chat) -> ChatChange | None:
        old = getattr(chat.settings, name)
        if old == value:
            return None
        changes: dict[str, Any] = {name: value}
        settings = replace(chat.settings, **changes)
        return ChatChange((AuditLine(name, _show(old), _show(value)),), settings=settings)

    return mutate


def _first_taken(
    items: Sequence[Item], chat: Chat, followed: Sequence[Follow], only_topics: bool
) -> Item | None:
    """The first of `items` the chat takes: its filters let it through, and it is about one of
    the chat's topics when the chat takes only those (a topic also lets in what the chat's
    include rules would not)."""
    for item in items:
        reason = check(item, chat.settings)
        if only_topics:
            if reason in (None, NOT_INCLUDED) and matches(
                item, item.lang, chat.languages, followed
            ):
                return item
        elif reason is None or (
            reason == NOT_INCLUDED and matches(item, item.lang, chat.languages, followed)
        ):
            return item
    return None


def _verdict(item: Item, chat: Chat, delivery: Delivery | None) -> Verdict:
    if delivery is None:
        if item.lang not in chat.languages:
            return Verdict.LANGUAGE
        if chat.created_at > item.first_seen_at:
            return Verdict.CONNECTED_LATER
        return Verdict.NOT_RECEIVING
    match delivery.state:
        case DeliveryState.SENT:
            return Verdict.SENT
        case DeliveryState.PENDING:
            return Verdict.RETRYING if delivery.last_error else Verdict.PENDING
        case DeliveryState.FAILED:
            return Verdict.FAILED
        case DeliveryState.SKIPPED if delivery.last_error == DIGEST_REASON:
            return Verdict.IN_DIGEST
        case DeliveryState.SKIPPED:
            return Verdict.PAUSED if delivery.last_error == PAUSED else Verdict.FILTERED
        case _:
            return Verdict.CANCELLED


def when(renderer: Renderer, lang: str, timestamp: float) -> str:
    """A timestamp in the bot's time zone, the way readers of `lang` write dates."""
    moment = datetime.fromtimestamp(timestamp, UTC).astimezone(renderer.zone)
    return renderer.translator.format_date(lang, moment)
