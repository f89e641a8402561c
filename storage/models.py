"""Typed records the store returns: frozen dataclasses and string enums, never raw rows."""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any


class ChatType(enum.StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    SUPERGROUP = "supergroup"
    CHANNEL = "channel"

    @property
    def is_private(self) -> bool:
        return self is ChatType.PRIVATE


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    # Dropped without a send: the chat went away or the item became moot.
    CANCELLED = "cancelled"
    # Never meant to be sent: the chat was paused or one of its filters excluded the item
    # (last_error says which), kept so that /why can explain it.
    SKIPPED = "skipped"


class ItemOrigin(enum.StrEnum):
    """Why an item was (or was not) queued when it was first seen."""

    NEW = "new"  # queued for delivery
    BACKLOG = "backlog"  # present at the feed's first poll
    TOO_OLD = "too_old"  # dated older than MAX_AGE when first seen


class FeedStatus(enum.StrEnum):
    NEW = "new"
    OK = "ok"
    ERROR = "error"


class PostStyle(enum.StrEnum):
    PREVIEW = "preview"  # text with the article's link preview
    TEXT = "text"  # text without a preview
    PHOTO = "photo"  # photo with the post as caption, text when there is no image


class DeliveryMode(enum.StrEnum):
    """When a chat gets its pieces (bot.delivery.digests)."""

    IMMEDIATE = "immediate"  # every piece as it appears
    DIGEST = "digest"  # one message a day, at the chat's digest hour, with every piece since


@dataclass(frozen=True, slots=True)
class Feed:
    id: int
    url: str
    lang: str
    etag: str | None
    last_modified: str | None
    status: FeedStatus
    error_streak: int
    last_error: str | None
    last_polled_at: float | None
    last_success_at: float | None
    next_poll_at: float | None
    initialized: bool
    item_count: int = 0


@dataclass(frozen=True, slots=True)
class NewItem:
    """An entry as parsed from a feed, before the store has given it an id."""

    identity: str
    link: str
    title: str
    summary: str
    published_at: float | None
    categories: tuple[str, ...] = ()
    author: str | None = None
    image_url: str | None = None
    content_hash: str = ""
    # Identities an earlier version of the bot may have stored this entry under: a stored
    # item with one of them is this entry, so changing how identities are made posts nothing
    # twice.
    aliases: tuple[str, ...] = ()

    def stored(
        self, item_id: int, feed_id: int, lang: str, first_seen_at: float, origin: ItemOrigin
    ) -> Item:
        """Return this entry as the Item the store keeps."""
        return Item(
            id=item_id,
            feed_id=feed_id,
            lang=lang,
            identity=self.identity,
            link=self.link,
            title=self.title,
            summary=self.summary,
            published_at=self.published_at,
            first_seen_at=first_seen_at,
            origin=origin,
            categories=self.categories,
            author=self.author,
            image_url=self.image_url,
            content_hash=self.content_hash,
        )


@dataclass(frozen=True, slots=True)
class PageContent:
    """What an article page says about itself; `text` is the body only, paragraphs one per line."""

    text: str = ""
    title: str | None = None
    description: str | None = None
    image_url: str | None = None
    author: str | None = None
    published_at: float | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    feed_id: int
    lang: str
    identity: str
    link: str
    title: str
    summary: str
    published_at: float | None
    first_seen_at: float
    origin: ItemOrigin
    categories: tuple[str, ...] = ()
    author: str | None = None
    image_url: str | None = None
    content_hash: str = ""


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """Per-chat presentation and filtering choices; stored as JSON so new ones need no migration."""

    style: PostStyle = PostStyle.PREVIEW
    silent: bool = False
    hashtags: bool = True
    signature: str | None = None
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    include_keywords: tuple[str, ...] = ()
    exclude_keywords: tuple[str, ...] = ()
    thread_id: int | None = None
    # Delivery schedule (bot.delivery.schedule). Hours are local wall time in `timezone`: an
    # IANA name or a fixed offset such as "UTC+4"; None is the bot's TIMEZONE.
    delivery: DeliveryMode = DeliveryMode.IMMEDIATE
    digest_hour: int = 9
    timezone: str | None = None
    # Private chats: no posts from quiet_from until quiet_to (may wrap midnight; both or none).
    quiet_from: int | None = None
    quiet_to: int | None = None

    @property
    def quiet_hours(self) -> tuple[int, int] | None:
        """(from, until) when the chat has quiet hours."""
        if self.quiet_from is None or self.quiet_to is None or self.quiet_from == self.quiet_to:
            return None
        return self.quiet_from, self.quiet_to

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps({k: v for k, v in data.items() if v != getattr(_DEFAULT_SETTINGS, k)})

    @classmethod
    def from_json(cls, raw: str | None) -> ChatSettings:
        if not raw or raw == "{}":
            return _DEFAULT_SETTINGS
        return _parsed_settings(raw)

    @classmethod
    def _parse(cls, raw: str) -> ChatSettings:
        data: dict[str, Any] = json.loads(raw)
        known = set(cls.__dataclass_fields__)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue  # a setting from a newer version: ignore rather than crash
            if key == "style":
                value = PostStyle(value)
            elif key == "delivery":
                if value not in {mode.value for mode in DeliveryMode}:
                    continue  # a mode from a newer version: as they appear
                value = DeliveryMode(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)


_DEFAULT_SETTINGS = ChatSettings()


# Read for every chat a fan-out sends to, where most chats share a few settings: the parsed
# (frozen) value is kept per text.
@functools.lru_cache(maxsize=4096)
def _parsed_settings(raw: str) -> ChatSettings:
    return ChatSettings._parse(raw)


@dataclass(frozen=True, slots=True)
class Chat:
    id: int
    type: ChatType
    title: str | None
    username: str | None
    lang: str
    languages: tuple[str, ...]
    active: bool
    subscribed: bool
    paused: bool
    settings: ChatSettings = field(default_factory=ChatSettings)
    added_by: int | None = None
    deactivated_reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def display_name(self) -> str:
        if self.title:
            return self.title
        if self.username:
            return "@" + self.username
        return str(self.id)


@dataclass(frozen=True, slots=True)
class Hold:
    """When a chat's posts wait (a digest, quiet hours): they stay pending and unsent from
    `start` on, until the leader's scheduler ends the hold at `until` (bot.delivery.digests)
    and plans the next. None, None: no hold, posts go out as they appear."""

    start: float | None = None
    until: float | None = None

    def active(self, now: float) -> bool:
        """True while the chat's posts are held."""
        return self.start is not None and self.start <= now


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    item_id: int
    chat_id: int
    state: DeliveryState
    priority: int
    attempts: int
    next_attempt_at: float
    last_error: str | None
    message_id: int | None
    created_at: float
    sent_at: float | None


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """What became of one send, to be written to its delivery row (and the event log).

    `state` is SENT (with the message id), FAILED (given up), or PENDING: a retry at
    `next_attempt_at`, spending an attempt when `count_attempt`. Rows are only ever changed
    while pending, so writing the same record twice changes nothing the second time.
    """

    delivery_id: int
    state: DeliveryState
    at: float
    message_id: int | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    count_attempt: bool = True
    event: str | None = None  # the kind of event to log with `error` as its detail
    chat_id: int | None = None
    # A paid broadcast: the day (YYYY-MM-DD, the bot's time zone) its Stars count against.
    paid_day: str | None = None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A pending delivery joined with what the publisher needs to send it."""

    delivery: Delivery
    item: Item
    chat: Chat


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What a successful poll stored: the new items and how many deliveries it queued."""

    new_items: tuple[Item, ...]
    queued: int
    # Known items whose title or text changed (the site edited them); never queued again.
    updated_items: tuple[Item, ...] = ()


# Channels go first, then groups, then private subscribers (lower sorts first).
CHANNELS_FIRST: Mapping[ChatType, int] = MappingProxyType(
    {ChatType.CHANNEL: 0, ChatType.SUPERGROUP: 1, ChatType.GROUP: 1, ChatType.PRIVATE: 2}
)
# Queue priorities are below this; a held chat's posts set aside by the publisher are moved up
# by it (storage.outbox.park), behind everything it reads, and back down when the hold ends.
PARKED = 1000


@dataclass(frozen=True, slots=True)
class FanOut:
    """Who gets a poll's new items: policy decided in core, applied by storage as data.

    Every reachable, subscribed chat taking the feed's language gets a delivery row for each
    new item (storage.store, one INSERT … SELECT per chunk of chats): pending, or skipped with
    the reason "paused" for a paused chat, or with the reason in `skips` (entry identity →
    {chat id: reason}: the verdicts of core's filters, computed before the poll is stored, for
    the few chats that have filter rules). `priorities` orders the outbox by chat type (each
    below PARKED).
    """

    priorities: Mapping[ChatType, int] = field(default_factory=lambda: CHANNELS_FIRST)
    skips: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    # Entry identity → the followed topics it matches (bot.services.topics.Topics.matching):
    # the new items are also queued for the chats following them (storage.follows). Empty when
    # no chat follows a topic the poll's entries match.
    topics: Mapping[str, Sequence[int]] = field(default_factory=dict)
