"""Search text analysis: folding, word forms, safe FTS5 queries, highlighting, and the indexer.

Index time and query time go through the same functions, so a word folds to the same term on
both sides: case (Azerbaijani dotted and dotless I included), diacritics, the Azerbaijani
letters (ə ğ ş ç ö ü ı) and ё/е are folded, and each word is reduced to its stem with the
stemmer of the piece's language:

- English and Russian: the Snowball stemmers (snowballstemmer), so "Ирана" meets "Иран" and
  "sanctions" meets "sanction".
- Azerbaijani: a light suffix stripper of our own (plural, case and possessive endings). The
  Snowball Turkish stemmer was tried and rejected: it does not know ə and applies Turkish vowel
  harmony, so it splits one Azerbaijani word into several stems ("neft" → "neft" but "neftin" →
  "nef") — worse than no stemming. The stripper works on folded text, is applied identically
  to pieces and queries, and never leaves a stem shorter than three letters.
- Any other language (a fourth one added later): folding only.

User text never reaches FTS5 MATCH as it is: a query is cut into words of letters and digits
(the same split as FTS5's unicode61 tokenizer), each word is folded, stemmed and tagged with
the language it is looked for in (see tagged()), and every resulting term is put in double
quotes. Operators, quotes, `*`, `^`, parentheses and SQL are therefore only separators or plain
words.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiosqlite
import snowballstemmer

from storage import search as index_store
from storage.models import Item
from storage.search import SearchDoc
from storage.store import Store

log = logging.getLogger(__name__)

# Bump whenever folding or stemming changes: the index is then rebuilt at the next start.
ANALYZER_VERSION = 1
# A query keeps at most this many distinct words; the rest would not change the answer much
# and only cost time (a 5,000-character query is still answered, from its first words).
MAX_QUERY_WORDS = 12
# Longest query text kept for display and for paging.
MAX_QUERY_CHARS = 200

# Letters and digits, as FTS5's unicode61 tokenizer sees tokens ("_" separates there too).
_WORD = re.compile(r"[^\W_]+")
# Letters that are not a base letter plus a combining mark, so NFD alone cannot fold them.
_LETTERS = str.maketrans({"ı": "i", "ə": "e", "ә": "е", "ø": "o", "đ": "d", "ł": "l"})
_SNOWBALL = {"en": "english", "ru": "russian"}
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")

# The Azerbaijani stripper, on folded text (ı→i, ə→e, ö→o, ü→u, so vowel harmony pairs merge).
# Endings that start with a consonant come off any stem; the vowel endings of case and
# possession (-ın, -ı, -a, …) only after a consonant; and a buffer consonant (n, s, y) that
# joins an ending to a vowel stem comes off after a vowel. "Azərbaycanın", "Azərbaycana",
# "Azərbaycanda" all end as "azerbayc", like "Azərbaycan"; "ölkəsi", "ölkələrin" and "ölkə" as
# "olk". Stems merge a little more than a linguist would like; that only widens a search.
_AZ_ENDINGS = ("lar", "ler", "dan", "den", "dir", "dur", "da", "de", "la", "le")
_AZ_VOWEL_ENDINGS = ("in", "un", "i", "u", "a", "e")
_AZ_BUFFERS = ("n", "s", "y")
_AZ_VOWELS = frozenset("aeiou")
_AZ_MIN_STEM = 3


def normalise(text: str) -> str:
    """Return `text` compatibility-normalised and case-folded, İ and I both becoming i."""
    # casefold() turns İ into "i" plus a combining dot, which would split the word in two.
    text = unicodedata.normalize("NFKC", text).replace("İ", "i")
    return unicodedata.normalize("NFC", text.casefold())


def strip_marks(word: str) -> str:
    """Remove diacritics and fold the letters NFD cannot (ı, ə): "ığdır" → "igdir"."""
    decomposed = unicodedata.normalize("NFD", word)
    bare = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", bare.translate(_LETTERS))


def words(text: str) -> list[str]:
    """Return the normalised words of `text`, in order."""
    return _WORD.findall(normalise(text))


@functools.cache
def _snowball(name: str) -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer(name)


def _az_stem(word: str) -> str:
    # A word may carry several endings (ölkə-lər-in): strip one at a time until none fits.
    while len(word) > _AZ_MIN_STEM:
        for ending in _AZ_ENDINGS:
            if word.endswith(ending) and len(word) - len(ending) >= _AZ_MIN_STEM:
                word = word[: -len(ending)]
                break
        else:
            for ending in _AZ_VOWEL_ENDINGS:
                stem = word[: -len(ending)]
                if (
                    word.endswith(ending)
                    and len(stem) >= _AZ_MIN_STEM
                    and stem[-1] not in _AZ_VOWELS
                ):
                    word = stem
                    break
            else:
                if word[-1] in _AZ_BUFFERS and word[-2] in _AZ_VOWELS:
                    word = word[:-1]
                else:
                    return word
    return word


@functools.lru_cache(maxsize=200_000)
def term(word: str, lang: str) -> str:
    """Return the index term of a normalised word in a piece of language `lang`."""
    if word.isdigit():
        return word
    snowball = _SNOWBALL.get(lang)
    if snowball == "russian":
        # ё and е are one letter to readers; the Russian stemmer must see й intact.
        if _CYRILLIC.search(word):
            word = _snowball(snowball).stemWord(word.replace("ё", "е"))
        return strip_marks(word)
    if snowball is not None:
        return strip_marks(
            _snowball(snowball).stemWord(word) if not _CYRILLIC.search(word) else word
        )
    folded = strip_marks(word)
    if lang == "az" and not _CYRILLIC.search(folded):
        return _az_stem(folded)
    return folded


def terms(text: str, lang: str) -> list[str]:
    """Return the index terms of `text` for a piece in `lang`."""
    return [term(word, lang) for word in words(text)]


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

    def match(self, langs: Iterable[str]) -> str | None:
        """Return the FTS5 MATCH expression: every word must occur, in any of `langs`.

        Each word becomes its quoted, tagged term in each language, OR-ed together; the words
        are AND-ed. None when there is nothing to look for.
        """
        langs = tuple(dict.fromkeys(langs))
        groups = []
        for word in self.words:
            forms = [_quote(tagged(term(word, lang), lang)) for lang in langs]
            if forms:
                groups.append(forms[0] if len(forms) == 1 else "(" + " OR ".join(forms) + ")")
        return " AND ".join(groups) or None

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


def _quote(term_text: str) -> str:
    # Terms hold only letters and digits; doubling quotes keeps this safe even if that changes.
    return '"' + term_text.replace('"', '""') + '"'


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
    spans = [m.span() for m in _WORD.finditer(text)]
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


async def index_hook(conn: aiosqlite.Connection, items: Sequence[Item]) -> None:
    """Keep the index in step with stored items (registered on Store.item_hooks)."""
    if not items:
        return
    docs = await asyncio.to_thread(documents, items)
    await index_store.write_docs(conn, docs)


async def attach_index(store: Store, batch_size: int = 500) -> int:
    """Hook the indexer onto `store` and index what is missing; return how many were indexed.

    A change of ANALYZER_VERSION empties the index first, so every piece is re-analysed.
    """
    if index_hook not in store.item_hooks:
        store.item_hooks.append(index_hook)
    if await index_store.analyzer_version(store) != ANALYZER_VERSION:
        log.info("search index: analyser changed; rebuilding the index")
        await index_store.clear(store, ANALYZER_VERSION)
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


class QueryMemory:
    """Recent search queries by short key, so paging buttons need not carry the query text.

    Bounded (the least recently used go first); keys are never reused within one run, so a
    button of a forgotten query is recognised as stale, never mistaken for another query.
    """

    def __init__(self, capacity: int = 2000) -> None:
        self.capacity = capacity
        self._queries: OrderedDict[str, SearchQuery] = OrderedDict()
        self._counter = 0

    def remember(self, query: SearchQuery) -> str:
        """Store `query` and return its key."""
        self._counter += 1
        key = _base36(self._counter)
        self._queries[key] = query
        while len(self._queries) > self.capacity:
            self._queries.popitem(last=False)
        return key

    def recall(self, key: str) -> SearchQuery | None:
        """Return the query stored under `key`, or None when it was forgotten."""
        query = self._queries.get(key)
        if query is not None:
            self._queries.move_to_end(key)
        return query


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out
