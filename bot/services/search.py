"""Search: safe queries, highlighting, and keeping the index in step with the items.

Index time and query time go through the same analysis (bot.text.analysis: folding, and the
lemmas or stems of the piece's language), so a word gives the same terms on both sides. A word
may give several terms (a Russian form of two words: "стали" is "стать" and "сталь"); a piece
is indexed under all of them and a query word matches any.

User text never reaches the index as it is: a query is cut into words of letters and digits
(the same split as FTS5's unicode61 tokenizer), each word is analysed and its terms tagged with
the language they are looked for in (see tagged()), and the query handed to storage.search is
only those terms, grouped (SearchQuery.match). Storage checks every term is letters and digits
and renders the groups for its back end itself (FTS5 MATCH, PostgreSQL tsquery). Operators,
quotes, `*`, `^`, parentheses and SQL are therefore only separators or plain words.

Items are indexed after the transaction that stored them has committed (index_items, called by
the poller). SearchIndex.attach, run in the background at start, indexes whatever a crash left
out and, after a change of analysis (ANALYZER_VERSION), re-analyses every stored piece while
search goes on answering: until it is done, queries look for each word's terms under the old
analysis too (SearchIndex.match), so a piece is found whether it was re-analysed yet or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.clock import Clock
from bot.text import analysis
from bot.text.analysis import WORD, words
from bot.workers import RunCpu
from storage import search as index_store
from storage.models import Item, NewItem
from storage.search import SearchDoc, TermGroups
from storage.store import Store

log = logging.getLogger(__name__)

# A query keeps at most this many distinct words; the rest would not change the answer much
# and only cost time (a 5,000-character query is still answered, from its first words).
MAX_QUERY_WORDS = 12
# Longest query text kept for display and for paging.
MAX_QUERY_CHARS = 200
# The background re-analysis: pieces per batch (one worker-thread job and one short
# transaction each), and the pause after each batch, leaving the event loop and the store to
# the bot's own work (searches, polls, sends) between batches.
REINDEX_BATCH = 200
REINDEX_PAUSE = 0.05


def tagged(term_text: str, lang: str) -> str:
    """Return the index token of a term in language `lang`, e.g. "en0sanction".

    The language code (letters only) and a digit in front keep the languages apart inside one
    index, so a search in one language reads only that language's postings. No term of one
    language can equal a tagged term of another: the first digit ends the code.
    """
    return f"{lang}0{term_text}"


# A piece's text as the index stores it: the tagged terms of its title and of its text
# (summary and categories), space-separated. The poller makes it once per new entry, before
# storing it, for the index and for matching followed topics (bot.services.topics).
Analysed = tuple[str, str]


class Piece(Protocol):
    """What the analysis reads of a piece: a stored Item or an entry not yet stored (NewItem)."""

    @property
    def identity(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def categories(self) -> tuple[str, ...]: ...


def analysed(piece: Piece, lang: str, *, legacy: bool = False) -> Analysed:
    """Return `piece`'s title and text analysed for the index (CPU work)."""
    text_terms = analysis.legacy_terms if legacy else analysis.terms
    body = " ".join([piece.summary, *piece.categories])
    return (
        " ".join(tagged(t, lang) for t in text_terms(piece.title, lang)),
        " ".join(tagged(t, lang) for t in text_terms(body, lang)),
    )


def analyse(entries: Sequence[NewItem], lang: str) -> dict[str, Analysed]:
    """Return the entries' analysed text by identity (CPU work: run it in a worker thread)."""
    return {entry.identity: analysed(entry, lang) for entry in entries}


def document(item: Item, *, legacy: bool = False, text: Analysed | None = None) -> SearchDoc:
    """Return what the index stores for `item`: the tagged terms of its title and text.

    `text` is the item's analysed text when it was made already (analyse()). `legacy` analyses
    it as analysis LEGACY_VERSION did (tests and measurements of the old analysis use it; the
    bot indexes with the current one only).
    """
    title, body = text if text is not None else analysed(item, item.lang, legacy=legacy)
    return SearchDoc(
        item_id=item.id,
        ts=item.published_at or item.first_seen_at,
        title=title,
        body=body,
        version=analysis.LEGACY_VERSION if legacy else analysis.ANALYZER_VERSION,
    )


def documents(items: Sequence[Item], *, legacy: bool = False) -> list[SearchDoc]:
    """Return the index documents of `items` (CPU work: run it in a worker thread)."""
    return [document(item, legacy=legacy) for item in items]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A reader's query, cleaned: the text to show and the words to look for."""

    text: str
    words: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.words

    def match(
        self, langs: Iterable[str], *, legacy: bool = False, current: bool = True
    ) -> TermGroups | None:
        """Return what to look for: every word must occur, in any of `langs`.

        One group per word, holding every term of the word in each language (storage.search
        renders the groups for its back end: any term of a group, every group). `legacy` adds
        the word's terms under analysis LEGACY_VERSION, for an index still being re-analysed
        (SearchIndex.match); `current=False` leaves out the current analysis's (to measure
        the old one alone). Words that give the same terms are looked for once. None when
        there is nothing to look for.
        """
        langs = tuple(dict.fromkeys(langs))
        term_sets = [
            *([analysis.term_set] if current else []),
            *([analysis.legacy_term_set] if legacy else []),
        ]
        if not langs or not term_sets:
            return None
        groups = (
            tuple(
                dict.fromkeys(
                    tagged(t, lang)
                    for lang in langs
                    for term_set in term_sets
                    for t in term_set(word, lang)
                )
            )
            for word in self.words
        )
        return tuple(dict.fromkeys(groups)) or None

    def terms_for(self, lang: str) -> frozenset[str]:
        """Return the terms of the query's words in `lang` (for highlighting: snippet())."""
        return frozenset(t for word in self.words for t in analysis.term_set(word, lang))


def parse_query(text: str) -> SearchQuery:
    """Clean a reader's query: one line, bounded, at most MAX_QUERY_WORDS distinct words."""
    shown = " ".join(text.split())
    if len(shown) > MAX_QUERY_CHARS:
        shown = shown[: MAX_QUERY_CHARS - 1].rstrip() + "…"
    # Words are taken from the whole text, not the cut one, so a long query still finds its words.
    distinct = list(dict.fromkeys(words(text)))[:MAX_QUERY_WORDS]
    return SearchQuery(text=shown, words=tuple(distinct))


@dataclass(frozen=True, slots=True)
class Fragment:
    """A stretch of original text, and whether it is a matched word to show in bold."""

    text: str
    matched: bool


def snippet(text: str, lang: str, wanted: frozenset[str], width: int = 220) -> tuple[Fragment, ...]:
    """Cut a window of `text` around its first matched word; mark every matched word.

    A word matches when any of its terms (in the piece's language) is one of `wanted`. The
    window is about `width` characters, starts a little before the first match and is cut at
    word boundaries, with "…" where text was left out.
    """
    text = " ".join(text.split())
    spans = [m.span() for m in WORD.finditer(text)]
    hits = [(s, e) for s, e in spans if not wanted.isdisjoint(_word_terms(text[s:e], lang))]
    start = 0
    if hits and hits[0][0] > width // 3:
        start = _word_start_after(spans, hits[0][0] - width // 4)
    end = len(text)
    if end - start > width:
        end = _word_end_before(spans, start + width)
    fragments: list[Fragment] = []
    if start > 0:
        fragments.append(Fragment("…", matched=False))
    cursor = start
    for s, e in hits:
        if s < start or e > end:
            continue
        if s > cursor:
            fragments.append(Fragment(text[cursor:s], matched=False))
        fragments.append(Fragment(text[s:e], matched=True))
        cursor = e
    if cursor < end:
        fragments.append(Fragment(text[cursor:end], matched=False))
    if end < len(text):
        fragments.append(Fragment("…", matched=False))
    return tuple(fragments)


def _word_terms(word: str, lang: str) -> tuple[str, ...]:
    folded = words(word)
    return analysis.term_set(folded[0], lang) if folded else ()


def _word_start_after(spans: Sequence[tuple[int, int]], position: int) -> int:
    for s, _ in spans:
        if s >= position:
            return s
    return max(position, 0)


def _word_end_before(spans: Sequence[tuple[int, int]], position: int) -> int:
    best = 0
    for _, e in spans:
        if e > position:
            break
        best = e
    return best or position


# ---------------------------------------------------------------------- indexing


async def index_items(
    store: Store,
    items: Sequence[Item],
    cpu: RunCpu = asyncio.to_thread,
    texts: Mapping[str, Analysed] | None = None,
) -> None:
    """Add or replace `items` in the index, in a transaction of its own (after theirs).

    `texts`: analysed text by identity, made before the items were stored (analyse()); the
    items it lacks are analysed here.
    """
    if not items:
        return
    texts = texts or {}
    docs = [document(item, text=texts[item.identity]) for item in items if item.identity in texts]
    rest = [item for item in items if item.identity not in texts]
    if rest:
        docs += await cpu(documents, rest)
    await index_store.index_docs(store, docs)


class SearchIndex:
    """The search index of one store as this process uses it: which analyses queries must look
    for, and the background work that brings the index up to date (attach).

    `legacy` is true while pieces indexed by analysis LEGACY_VERSION may remain: queries then
    look for each word under both analyses. Any other process sharing the store (PostgreSQL
    instances) runs its own attach() and sees the same: the store records the new version only
    once every row is the new analysis's.
    """

    def __init__(self, store: Store, *, legacy: bool = False) -> None:
        self.store = store
        self.legacy = legacy

    @classmethod
    async def open(cls, store: Store) -> SearchIndex:
        """Return the index of `store`, knowing from the store which analysis built it."""
        version = await index_store.analyzer_version(store)
        return cls(store, legacy=version == analysis.LEGACY_VERSION)

    def match(self, query: SearchQuery, langs: Iterable[str]) -> TermGroups | None:
        """Return what to look for to find `query` in `langs` (SearchQuery.match) in this index."""
        return query.match(langs, legacy=self.legacy)

    async def attach(
        self,
        *,
        batch_size: int = REINDEX_BATCH,
        pause: float = REINDEX_PAUSE,
        cpu: RunCpu = asyncio.to_thread,
        clock: Clock | None = None,
    ) -> int:
        """Bring the index up to date; return how many pieces were (re)indexed.

        Indexes the pieces the index lacks (stored just before a crash, or edited and not
        indexed again), newest first. When the index was built by another analysis than
        ANALYZER_VERSION, every piece whose row the current analysis did not make is
        re-analysed too, and the new version is recorded at the end; a crash or a stop midway
        loses nothing, as the next run finds the rows still lacking the current mark. Made to
        run as a background task while the bot works: the analysis runs in `cpu` (a worker
        thread), each batch is one short transaction, and the loop pauses `pause` seconds
        between batches (on `clock`, else the event loop's).
        """
        sleep = clock.sleep if clock is not None else asyncio.sleep
        version = await index_store.analyzer_version(self.store)
        rebuild = version != analysis.ANALYZER_VERSION
        if rebuild and version:
            log.info(
                "search index: analysis %d replaces %d; re-analysing the stored pieces",
                analysis.ANALYZER_VERSION,
                version,
            )
        done = 0
        below: int | None = None
        while True:
            items = await index_store.items_to_index(
                self.store,
                below=below,
                limit=batch_size,
                version=analysis.ANALYZER_VERSION if rebuild else None,
            )
            if not items:
                break
            docs = await cpu(documents, items)
            await index_store.index_docs(self.store, docs, keep_current=True)
            done += len(items)
            below = items[-1].id
            await sleep(pause)
        if rebuild:
            await index_store.record_analyzer_version(self.store, analysis.ANALYZER_VERSION)
            self.legacy = False
        if done:
            log.info("search index: indexed %d stored piece(s)", done)
        return done


async def attach_index(store: Store, batch_size: int = REINDEX_BATCH) -> int:
    """Bring `store`'s index up to date at once (SearchIndex.attach, without pauses); return
    how many pieces were indexed. The bot runs SearchIndex.attach in the background instead."""
    index = await SearchIndex.open(store)
    return await index.attach(batch_size=batch_size, pause=0.0)
