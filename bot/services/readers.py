"""What readers do, as services for the thin handlers: know the chat and its language, change
the language, subscribe, search, list the latest pieces.

A search is remembered under a random, unguessable key stored with the chat that searched
(storage.search_keys), so its page buttons carry the key, never the query (queries can be long
and are private); a key pressed in any other chat is answered as expired.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Literal

from telegram import Chat as TgChat
from telegram import User

from bot.clock import Clock
from bot.delivery.digests import change_schedule
from bot.delivery.schedule import ScheduleUpdate
from bot.services.search import SearchIndex, SearchQuery
from bot.text.i18n import LANGUAGES, Translator
from storage import admin as admin_store
from storage import search as index_store
from storage import search_keys
from storage.admin import ChatChange
from storage.models import Chat, ChatType, Item
from storage.store import Store

PAGE_SIZE = 5
LATEST_DEFAULT = 5
LATEST_MAX = 20
INLINE_PAGE_SIZE = 10
SEARCH_KEY_BYTES = 9  # 72 random bits: 12 characters in callback data
SEARCH_KEY_MAX_AGE = 86400.0  # a search's buttons work for a day
SEARCH_KEYS_PER_CHAT = 50  # and for the chat's 50 latest searches

Scope = Literal["l", "a"]

# Control characters (tab and newline excepted) and lone surrogates: Telegram refuses a text
# that holds them, so a reply echoing one would never arrive.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


# ---------------------------------------------------------------------- chats and languages


def reader_text(text: str) -> str:
    """Return a reader's text without the characters Telegram refuses (newline and tab kept).

    Every text a reader sends that may be shown back to them goes through here first.
    """
    return _CONTROL.sub("", text)


def language_name(lang: str) -> str:
    """Return the language's own name, as on the language buttons."""
    return LANGUAGES.get(lang, lang)


# ---------------------------------------------------------------------- search


@dataclass(frozen=True, slots=True)
class Found:
    """One page of a search, and how it was made."""

    query: SearchQuery
    lang: str  # the chat's language
    scope: Scope
    widened: bool  # nothing in the chat's language, so all languages were searched
    page: int  # from 1
    result: index_store.SearchPage

    @property
    def pages(self) -> int:
        reachable = min(self.result.total, index_store.CANDIDATE_WINDOW)
        return max(1, math.ceil(reachable / PAGE_SIZE))


def _parse_offset(offset: str) -> tuple[Scope, int]:
    match = re.fullmatch(r"([la]):([0-9]{1,5})", offset)
    if match is None:
        return "l", 0
    return ("l" if match.group(1) == "l" else "a"), int(match.group(2))


# ---------------------------------------------------------------------- latest


def latest_count(args: list[str]) -> int | None:
    """Return how many pieces /latest [N] asks for (1..LATEST_MAX), None when N is no number."""
    if not args:
        return LATEST_DEFAULT
    if len(args) > 1 or not re.fullmatch(r"[0-9]+", args[0]):
        return None
    return min(max(int(args[0]), 1), LATEST_MAX)


class Readers:
    """What readers do: their chats and languages, searches and the latest pieces."""

    def __init__(
        self,
        store: Store,
        translator: Translator,
        clock: Clock,
        *,
        default_zone: tzinfo = UTC,
        on_schedule_changed: Callable[[], None] | None = None,
        index: SearchIndex | None = None,
    ) -> None:
        self.store = store
        # Which analyses a query looks for: both while a new one re-analyses the index.
        self.index = index or SearchIndex(store)
        self.translator = translator
        self.clock = clock
        self.default_zone = default_zone  # TIMEZONE: the zone of chats that chose none
        # The digest scheduler's wake (bot.delivery.digests): a change may end a hold now.
        self.on_schedule_changed = on_schedule_changed

    async def reader_chat(
        self, chat: TgChat, user: User | None, *, reactivate: bool = False
    ) -> Chat:
        """Return the stored chat, creating it in the user's Telegram language if it is new.

        With `reactivate` (/start, /subscribe) a chat the publisher deactivated (the user had
        blocked the bot) becomes active again: the user is evidently talking to the bot.
        """
        known = await self.store.get_chat(chat.id)
        if known is not None and (known.active or not reactivate):
            return known
        lang = self.translator.resolve(user.language_code if user else None)
        return await self.store.upsert_chat(
            chat.id,
            ChatType(chat.type),
            title=chat.title,
            username=chat.username,
            default_lang=lang,
            now=self.clock.now(),
            active=True,
        )

    async def user_language(self, user: User) -> str:
        """Return the language to answer `user` in outside a chat (inline mode)."""
        known = await self.store.get_chat(user.id)
        if known is not None:
            return known.lang
        return self.translator.resolve(user.language_code)

    async def set_language(
        self, chat_id: int, lang: str, *, user_id: int | None = None
    ) -> Chat | None:
        """Make `lang` the chat's reply language.

        The feed languages follow only when they were just the old reply language (a reader who
        never opened the panel); feed languages chosen in the /channels panel are kept as chosen.
        Read and written in one transaction, so a panel change at the same moment is not lost.
        """

        def mutate(current: Chat) -> ChatChange | None:
            if current.lang == lang:
                return None
            follows = current.languages == (current.lang,)
            return ChatChange((), lang=lang, languages=(lang,) if follows else None)

        result = await admin_store.change_chat(
            self.store, chat_id, mutate, user_id=user_id, user_name=None, now=self.clock.now()
        )
        return None if result is None else result[0]

    async def set_subscribed(self, chat: Chat, on: bool) -> tuple[Chat, bool]:
        """Subscribe or unsubscribe `chat`; return it and whether anything changed.

        The feed languages are left as they are (the panel may have chosen several).
        """
        if chat.subscribed == on:
            return chat, False
        updated = await self.store.update_chat(chat.id, self.clock.now(), subscribed=on)
        return (updated or chat), True

    async def set_schedule(
        self, chat: Chat, update: ScheduleUpdate, *, user_id: int | None, user_name: str | None
    ) -> Chat:
        """Change when the chat gets its pieces: as they appear or a daily digest (its hour,
        its time zone), and, in a private chat, its quiet hours. Pieces already waiting stay
        until the scheduler releases them."""
        updated = await change_schedule(
            self.store, chat.id, lambda settings: update.applied(settings, chat.type),
            user_id=user_id, user_name=user_name, now=self.clock.now(),
            default_zone=self.default_zone,
        )  # fmt: skip
        if self.on_schedule_changed is not None:
            self.on_schedule_changed()
        return updated or chat

    async def find(self, query: SearchQuery, lang: str, scope: Scope = "l", page: int = 1) -> Found:
        """Search `query` in the chat's language ("l") or all languages ("a").

        A first page with nothing in the chat's language is searched again in all languages.
        """
        now = self.clock.now()

        async def run(langs: list[str]) -> index_store.SearchPage:
            wanted = self.index.match(query, langs)
            if wanted is None:
                return index_store.SearchPage(hits=(), has_more=False, offset=0, total=0)
            return await index_store.search(
                self.store, wanted, now=now, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
            )

        result = await run([lang] if scope == "l" else list(LANGUAGES))
        if scope == "l" and page == 1 and result.total == 0 and not query.empty:
            wider = await run(list(LANGUAGES))
            if wider.total:
                return Found(query, lang, "a", True, page, wider)
        return Found(query, lang, scope, False, page, result)

    async def find_inline(
        self, query: SearchQuery, lang: str, offset: str
    ) -> tuple[list[Item], str]:
        """Return a page of inline results and the next_offset ("" when there is no more).

        An empty query lists the latest pieces. The offset is "<scope>:<n>"; the chat's language
        is searched first and, when it has nothing at all, every language.
        """
        scope, start = _parse_offset(offset)
        if query.empty:
            if start:
                return [], ""
            return await self.store.latest_items([lang], INLINE_PAGE_SIZE), ""
        now = self.clock.now()
        for current in (scope, "a") if scope == "l" and start == 0 else (scope,):
            langs = [lang] if current == "l" else list(LANGUAGES)
            wanted = self.index.match(query, langs)
            if wanted is None:
                return [], ""
            page = await index_store.search(
                self.store, wanted, now=now, offset=start, limit=INLINE_PAGE_SIZE
            )
            if page.hits or current == "a":
                items = [hit.item for hit in page.hits]
                return items, f"{current}:{start + len(items)}" if page.has_more else ""
        return [], ""

    async def remember_search(self, chat_id: int, query: SearchQuery, lang: str) -> str:
        """Store a search made in `chat_id` (in the chat's language `lang`); return its key."""
        key = secrets.token_urlsafe(SEARCH_KEY_BYTES)
        saved = search_keys.SavedSearch(query.text, query.words, lang, self.clock.now())
        await search_keys.save(
            self.store, key, chat_id, saved,
            max_age=SEARCH_KEY_MAX_AGE, per_chat=SEARCH_KEYS_PER_CHAT,
        )  # fmt: skip
        return key

    async def recall_search(self, chat_id: int, key: str) -> tuple[SearchQuery, str] | None:
        """Return the query and language of a search `chat_id` made, None for any other key."""
        saved = await search_keys.load(
            self.store, key, chat_id, now=self.clock.now(), max_age=SEARCH_KEY_MAX_AGE
        )
        if saved is None:
            return None
        return SearchQuery(text=saved.text, words=saved.words), saved.lang

    async def latest(self, lang: str, count: int) -> list[Item]:
        """Return the newest `count` pieces in `lang`."""
        return await self.store.latest_items([lang], count)
