"""Search: safe queries, highlighting, and keeping the index in step with the items.

Index time and query time go through the same analysis (bot.text.analysis: folding and the
stemmer of the piece's language), so a word folds to the same term on both sides.

User text never reaches the index as it is: a query is cut into words of letters and digits
(the same split as FTS5's unicode61 tokenizer), each word is folded, stemmed and tagged with
the language it is looked for in (see tagged()), and the query handed to storage.search is
only those terms, grouped (SearchQuery.match). Storage checks every term is letters and digits
and renders the groups for its back end itself (FTS5 MATCH, PostgreSQL tsquery). Operators,
quotes, `*`, `^`, parentheses and SQL are therefore only separators or plain words.

Items are indexed after the transaction that stored them has committed (index_items, called by
the poller); the start-up catch-up (attach_index) indexes whatever a crash left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.text import analysis
from bot.text.analysis import WORD, term, terms, words
from bot.workers import RunCpu
from storage import search as index_store
from storage.models import Item
from storage.search import SearchDoc, TermGroups
from storage.store import Store

log = logging.getLogger(__name__)

# A query keeps at most this many distinct words; the rest would not change the answer much
# and only cost time (a 5,000-character query is still answered, from its first words).
MAX_QUERY_WORDS = 12
# Longest query text kept for display and for paging.
MAX_QUERY_CHARS = 200


def tagged(term_text: str, lang: str) -> str:
    """Return the index token of a term in language `lang`, e.g. "en0sanction".

    The language code (letters only) and a digit in front keep the languages apart inside one
    index, so a search in one language reads only that language's postings. No term of one
    language can equal a tagged term of another: the first digit ends the code.
    """
    return f"{lang}0{term_text}"


def document(item: Item) -> SearchDoc:
    """Return what the index stores for `item`: the tagged terms of its title and text."""
    body = " ".join([item.summary, *item.categories])
    return SearchDoc(
        item_id=item.id,
        ts=item.published_at or item.first_seen_at,
        title=" ".join(tagged(t, item.lang) for t in terms(item.title, item.lang)),
        body=" ".join(tagged(t, item.lang) for t in terms(body, item.lang)),
    )


def documents(items: Sequence[Item]) -> list[SearchDoc]:
    """Return the index documents of `items` (CPU work: run it in a worker thread)."""
    return [document(item) for item in items]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A reader's query, cleaned: the text to show and the words to look for."""

    text: str
    words: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.words

    def match(self, langs: Iterable[str]) -> TermGroups | None:
        """Return what to look for: every word must occur, in any of `langs`.

        One group per word, holding its tagged term in each language (storage.search renders
        the groups for its back end: any term of a group, every group). Words that give the
        same terms are looked for once. None when there is nothing to look for.
        """
        langs = tuple(dict.fromkeys(langs))
        if not langs:
            return None
        groups = (tuple(tagged(term(word, lang), lang) for lang in langs) for word in self.words)
        return tuple(dict.fromkeys(groups)) or None

    def terms_for(self, lang: str) -> frozenset[str]:
        """Return the terms a piece in `lang` must contain to match (used for highlighting)."""
        return frozenset(term(word, lang) for word in self.words)


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

    A word matches when its term (in the piece's language) is one of `wanted`. The window is
    about `width` characters, starts a little before the first match and is cut at word
    boundaries, with "…" where text was left out.
    """
    text = " ".join(text.split())
    spans = [m.span() for m in WORD.finditer(text)]
    hits = [(s, e) for s, e in spans if _word_term(text[s:e], lang) in wanted]
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


def _word_term(word: str, lang: str) -> str:
    folded = words(word)
    return term(folded[0], lang) if folded else ""


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


async def index_items(store: Store, items: Sequence[Item], cpu: RunCpu = asyncio.to_thread) -> None:
    """Add or replace `items` in the index, in a transaction of its own (after theirs)."""
    if not items:
        return
    docs = await cpu(documents, items)
    await index_store.index_docs(store, docs)


async def attach_index(store: Store, batch_size: int = 500) -> int:
    """Bring the index up to date with the stored items; return how many were indexed.

    A change of ANALYZER_VERSION empties the index first, so every piece is re-analysed.
    Items the index lacks are indexed: those stored just before a crash, and those whose text
    changed (the store drops their rows in the same transaction as the change).
    """
    if await index_store.analyzer_version(store) != analysis.ANALYZER_VERSION:
        log.info("search index: analyser changed; rebuilding the index")
        await index_store.clear(store, analysis.ANALYZER_VERSION)
    done = 0
    after = 0
    while True:
        items = await index_store.unindexed_items(store, after, batch_size)
        if not items:
            break
        docs = await asyncio.to_thread(documents, items)
        await index_store.index_docs(store, docs)
        done += len(items)
        after = items[-1].id
    if done:
        log.info("search index: indexed %d stored piece(s)", done)
    return done
