"""Followed topics: what a topic is made of, what a piece offers to match, and following.

A topic is what a reader typed (1–100 characters), cut into words exactly as a search query is
(bot.text.analysis): every word must occur in a piece, in any of its forms, so "Ираном нефть"
matches a piece about "нефти Ирана". Each word stands for its terms in every language the bot
speaks, tagged as the search index tags them (bot.services.search.tagged); whether a follow
takes pieces in the chat's languages only or in all of them is the follow's own flag, checked
when a piece is matched, so changing a chat's languages needs no new terms.

A piece offers the distinct tagged terms of its title, summary and categories (the text search
indexes). Matching is the store's (storage.follows), in the poll's own transaction.

The channel panel's old "include keyword" rules are topics too: adopt_include_keywords turns each
into a follow (in the chat's languages, the only pieces keyword rules ever saw), once, at start.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from bot.clock import Clock
from bot.services.search import Analysed, Piece, analysed, tagged
from bot.text import analysis
from bot.text.analysis import strip_marks, words
from bot.text.i18n import LANGUAGES
from bot.workers import RunCpu
from storage import follows
from storage.follows import Follow, TooMany, TopicTerms
from storage.store import Store

log = logging.getLogger(__name__)

MAX_TOPICS = 20  # topics a chat may follow
MAX_TOPIC_CHARS = 100
# Words a topic keeps, as a search query does: more would only make it match nothing.
MAX_TOPIC_WORDS = 12
_QUOTES = "\"“”«»„'‘’"


class Refusal(enum.StrEnum):
    TOO_LONG = "too_long"  # over MAX_TOPIC_CHARS
    NO_WORDS = "no_words"  # nothing but spaces and punctuation
    TOO_MANY = "too_many"  # the chat follows MAX_TOPICS already


@dataclass(frozen=True, slots=True)
class Followed:
    """What /follow did: the follow (new or already there), or why there is none."""

    follow: Follow | None
    added: bool = False
    refusal: Refusal | None = None


def clean(text: str) -> str:
    """A topic as shown: one line, single-spaced, without surrounding quotes."""
    return " ".join(text.split()).strip(_QUOTES + " ")


def _kept_words(text: str) -> list[tuple[str, str]]:
    """A topic's distinct words, (folded, as written), sorted: word order does not matter."""
    by_key: dict[str, str] = {}
    for word in words(text):
        by_key.setdefault(strip_marks(word), word)
    return sorted(by_key.items())[:MAX_TOPIC_WORDS]


def topic_key(text: str) -> str:
    """A topic's identity: its folded words, sorted ("" when it has none)."""
    return " ".join(key for key, _ in _kept_words(text))


def topic_terms(text: str) -> TopicTerms | None:
    """Analyse a topic: its identity (topic_key) and, for each distinct word, its tagged terms
    in every language. None when it has no words."""
    kept = _kept_words(text)
    if not kept:
        return None
    per_word = tuple(
        tuple(sorted({tagged(t, lang) for lang in LANGUAGES for t in analysis.term_set(w, lang)}))
        for _, w in kept
    )
    return TopicTerms(words=" ".join(key for key, _ in kept), terms=per_word)


def piece_terms(entries: Sequence[Piece], lang: str) -> dict[str, tuple[str, ...]]:
    """Each entry's distinct tagged terms (title, summary, categories), by identity (CPU work:
    run it in a worker thread)."""
    return offered({entry.identity: analysed(entry, lang) for entry in entries})


def offered(
    texts: Mapping[str, Analysed], vocabulary: frozenset[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """The distinct terms of each analysed text (search.analyse), by identity: only those in
    `vocabulary` when given, and then only for the texts that have some."""
    found: dict[str, tuple[str, ...]] = {}
    for identity, (title, body) in texts.items():
        terms = set(title.split())
        terms.update(body.split())
        if vocabulary is not None:
            terms &= vocabulary
        if terms or vocabulary is None:
            found[identity] = tuple(sorted(terms))
    return found


def matches(
    piece: Piece, lang: str, chat_languages: Sequence[str], follows_: Sequence[Follow]
) -> bool:
    """Whether `piece` (in `lang`) matches one of `follows_` as the store's matching would:
    for the preview and /why, a few pieces at a time."""
    offered = set(piece_terms([piece], lang).get(piece.identity, ()))
    for follow in follows_:
        if not follow.any_lang and lang not in chat_languages:
            continue
        topic = topic_terms(follow.text)
        if topic is not None and all(offered.intersection(word) for word in topic.terms):
            return True
    return False


class Topics:
    """Follow, list and drop a chat's topics; keep their terms in step with the analysis."""

    def __init__(self, store: Store, clock: Clock, cpu: RunCpu = asyncio.to_thread) -> None:
        self.store = store
        self.clock = clock
        self.cpu = cpu
        # Per language: the index's terms, and the store's change counter they were read at.
        self._vocabulary: dict[str, tuple[int, frozenset[str]]] = {}

    async def follow(self, chat_id: int, text: str, *, any_lang: bool = False) -> Followed:
        """Make the chat follow `text` (the chat must exist); see Followed."""
        shown = clean(text)
        if len(shown) > MAX_TOPIC_CHARS:
            return Followed(None, refusal=Refusal.TOO_LONG)
        topic = topic_terms(shown)
        if topic is None:
            return Followed(None, refusal=Refusal.NO_WORDS)
        try:
            follow, added = await follows.add(
                self.store, chat_id, shown, topic, any_lang=any_lang,
                analyzer=analysis.ANALYZER_VERSION, limit=MAX_TOPICS, now=self.clock.now(),
            )  # fmt: skip
        except TooMany:
            return Followed(None, refusal=Refusal.TOO_MANY)
        if added:
            log.info("chat %d follows topic %d", chat_id, follow.topic_id)
        return Followed(follow, added=added)

    async def following(self, chat_id: int) -> list[Follow]:
        return await follows.of_chat(self.store, chat_id)

    async def get(self, chat_id: int, follow_id: int) -> Follow | None:
        return await follows.get(self.store, chat_id, follow_id)

    async def unfollow(self, chat_id: int, follow_id: int) -> Follow | None:
        return await follows.remove(self.store, chat_id, follow_id)

    async def unfollow_text(self, chat_id: int, text: str) -> Follow | None:
        """Stop the chat following the topic `text` names, however it is spelt (/unfollow)."""
        found = await follows.by_words(self.store, chat_id, topic_key(text))
        return await self.unfollow(chat_id, found.id) if found is not None else None

    async def set_any_lang(self, chat_id: int, follow_id: int, any_lang: bool) -> Follow | None:
        return await follows.set_any_lang(self.store, chat_id, follow_id, any_lang)

    async def matching(
        self, texts: Mapping[str, Analysed], lang: str
    ) -> dict[str, tuple[int, ...]]:
        """The poller's hook: for new entries' analysed texts (search.analyse), the followed
        topics each matches, by identity; nothing when no chat follows a topic.

        The pieces' terms are first cut to the index's vocabulary (read again only when a
        topic changed, see follows.vocabulary), so the store is asked for the postings of the
        few terms topics use, once per poll; the matching itself runs in a worker thread.
        """
        if not texts:
            return {}
        counter = await follows.version(self.store)
        if counter is None:
            return {}
        cached = self._vocabulary.get(lang)
        if cached is None or cached[0] != counter:
            cached = await follows.vocabulary(self.store, lang)
            self._vocabulary[lang] = cached
        if not cached[1]:
            return {}
        terms = await self.cpu(offered, texts, cached[1])
        if not terms:
            return {}
        index = await follows.postings(self.store, {t for found in terms.values() for t in found})
        return await self.cpu(follows.match, terms, index)

    async def refresh(self, batch: int = 500) -> int:
        """Re-analyse topics an older analysis made (ANALYZER_VERSION changed); return how many.

        Cheap (a topic is a few words), so it runs before the poller starts: a new piece is never
        matched against terms of another analysis.
        """
        done = 0
        while stale := await follows.stale_topics(self.store, analysis.ANALYZER_VERSION, batch):
            for topic_id, text in stale:
                topic = topic_terms(text) or TopicTerms(words=text, terms=())
                await follows.reanalyse(self.store, topic_id, topic, analysis.ANALYZER_VERSION)
            done += len(stale)
        if done:
            log.info("topics: %d topic(s) re-analysed for analysis version %d",
                     done, analysis.ANALYZER_VERSION)  # fmt: skip
        return done

    async def adopt_include_keywords(self) -> int:
        """Turn the channel panel's old "include keyword" rules into topics; return how many.

        Each keyword becomes a topic in the chat's languages (the only pieces a keyword rule ever
        saw), matched by word forms instead of as a prefix. A chat whose only "include" rules were
        keywords stops taking everything (it takes its topics); one that also had "include
        category" rules keeps taking those categories, plus its topics: the same pieces as the
        two kinds of include rules added up before. Only chats taking posts are converted (a
        chat's keywords do nothing while it takes none; they are converted the first start
        after it takes posts again), and keywords beyond MAX_TOPICS stay keyword rules.
        """
        adopted = 0
        for chat in await self.store.list_chats(active_only=True):
            keywords = chat.settings.include_keywords
            if not keywords or not chat.subscribed:
                continue
            kept: list[str] = []
            for keyword in keywords:
                result = await self.follow(chat.id, keyword)
                adopted += result.follow is not None
                if result.refusal is Refusal.TOO_MANY:
                    kept.append(keyword)
                elif result.refusal is not None:
                    log.warning("chat %d: include keyword %r dropped: %s",
                                chat.id, keyword, result.refusal)  # fmt: skip
            followed = await self.following(chat.id)
            only_topics = bool(followed) and not chat.settings.include_categories
            await self.store.update_chat(
                chat.id, self.clock.now(),
                settings=replace(chat.settings, include_keywords=tuple(kept)),
                subscribed=False if only_topics and not kept else None,
            )  # fmt: skip
            log.info("chat %d: %d include keyword(s) became topics, %d stay keyword rules",
                     chat.id, len(keywords) - len(kept), len(kept))  # fmt: skip
        return adopted
