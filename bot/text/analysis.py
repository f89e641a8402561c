"""The one text analysis: folding and reducing words to terms, shared by search, topics, filters
and the summariser.

A word folds the same way wherever it is compared: case (Azerbaijani dotted and dotless I
included), diacritics, the Azerbaijani letters (ə ğ ş ç ö ü ı) and ё/е are folded, and each
word is reduced to its terms by the rules of the text's language:

- Russian: its lemmas, from a dictionary (pymorphy3 with the OpenCorpora dictionary of
  pymorphy3-dicts-ru; offline, loaded on first use). "Иран", "Ирана" and "Ираном" all give
  "иран". A form that belongs to several words gives each of them ("стали": "стать" and
  "сталь"): the index holds them all and a query matches any. A word the dictionary does not
  know (rare surnames and places: "Пашиняном", "Зангезура") is cut at its case ending by a
  stripper of our own ("пашинян", "зангезур"); of pymorphy3's guesses for it, only a lemma the
  dictionary knows is kept ("Шушой", a form the dictionary lacks, still gives "шуша"). Other
  guesses are dropped: they are not stable across one name's forms (the guess for "Пашинян"
  is "пашинянин", for "Пашиняна" "пашинян"), and Snowball's stems for such names are not
  either ("пашиня", "пашинян"); tests/unit/test_wordforms.py measures the rules.
- English: the Snowball stemmer (snowballstemmer), so "sanctions" meets "sanction".
- Azerbaijani: a light suffix stripper of our own (plural, case and possessive endings). The
  Snowball Turkish stemmer was tried and rejected: it does not know ə and applies Turkish vowel
  harmony, so it splits one Azerbaijani word into several stems ("neft" → "neft" but "neftin" →
  "nef") — worse than no stemming. The stripper works on folded text, is applied identically
  to pieces and queries, and never leaves a stem shorter than three letters.
- Any other language (a fourth one added later): folding only.

term_set() gives a word's terms, terms() those of a whole text. The analysis before this one
(LEGACY_VERSION: Snowball for Russian too) stays available as legacy_term_set() and
legacy_terms() while a search index built with it is re-analysed (bot.services.search).

Words are runs of letters and digits, the same split as FTS5's unicode61 tokenizer.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from typing import TYPE_CHECKING

import snowballstemmer

if TYPE_CHECKING:
    from pymorphy3 import MorphAnalyzer

# Bump whenever folding or stemming changes what term_set() returns, and keep the analysis it
# replaces as the legacy one: the search index is then re-analysed in the background while
# queries look for both (bot.services.search.SearchIndex.attach).
ANALYZER_VERSION = 2
# The analysis before ANALYZER_VERSION: legacy_term_set() and legacy_terms().
LEGACY_VERSION = 1

# Letters and digits, as FTS5's unicode61 tokenizer sees tokens ("_" separates there too).
WORD = re.compile(r"[^\W_]+")
# Letters that are not a base letter plus a combining mark, so NFD alone cannot fold them.
_LETTERS = str.maketrans({"ı": "i", "ə": "e", "ә": "е", "ø": "o", "đ": "d", "ł": "l"})
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# Words whose terms are remembered: the frequent words of a news archive in three languages.
# Each costs about 430 bytes (measured: 100,000 Russian words took 43 MiB), so 20,000 keep
# ~9 MiB; with pymorphy3's 26 MiB that keeps the bot within its 150 MB while a whole archive is
# re-analysed. A word met again costs 0.2 µs; analysing one costs ~25-40 µs in Russian
# (~100-160 µs for a word the dictionary does not know; 3-4 times that without DAWG2), a few
# µs in English and Azerbaijani.
_CACHED_WORDS = 20_000
# The legacy analysis serves only query words while an index is re-analysed.
_CACHED_LEGACY_WORDS = 10_000

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

# Russian words the dictionary does not know are mostly names: the case endings of nouns and
# of adjective-like surnames and place names come off (one, the longest that fits), leaving
# at least three letters. "-ов"/"-ев" and "-ин" stay: they end surnames (Алиев, Путин).
_RU_ENDINGS = (
    # Three letters, then two, then one: the longest ending that fits comes off.
    *("ами", "ями", "ого", "его", "ому", "ему", "ыми", "ими"),
    *("ом", "ем", "ой", "ей", "ою", "ею", "ам", "ям", "ах", "ях", "ым", "им", "ых", "их"),
    *("ую", "юю", "ая", "яя", "ое", "ее", "ые", "ие", "ий", "ый"),
    *("а", "я", "у", "ю", "е", "ы", "и", "о", "ь"),
)
_RU_MIN_STEM = 3
# pymorphy3's analyser is built once per process (about 0.1 s and 22 MB) and used under this
# lock: its construction is not safe to run twice at once, and a lookup costs ~0.1 ms, so
# worker threads analysing side by side lose nothing by taking turns (the GIL would make them).
_MORPH_LOCK = threading.Lock()


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
    return WORD.findall(normalise(text))


def fold(text: str) -> str:
    """Return `text`'s words folded (case, diacritics, İ/ı, ə…), single-spaced, unstemmed."""
    return " ".join(strip_marks(word) for word in words(text))


@functools.lru_cache(maxsize=_CACHED_WORDS)
def term_set(word: str, lang: str) -> tuple[str, ...]:
    """Return every term of a normalised word (from words()) in a text in `lang`, likeliest first.

    Most words have one term. A Russian form of several words has one per word ("стали":
    "стать", "сталь"): index all of them, and let a query word match any of its terms. Two
    words are the same word to search and topics when their term sets share a term.
    Remembered per word (the last _CACHED_WORDS); safe to call from several threads.
    """
    if lang == "ru" and _CYRILLIC.search(word):
        # ё and е are one letter to readers; the dictionary restores ё where it belongs.
        return _russian_terms(word.replace("ё", "е"))
    return (_simple_term(word, lang),)


def term(word: str, lang: str) -> str:
    """Return the likeliest term of a normalised word in a text in `lang` (term_set()'s first)."""
    return term_set(word, lang)[0]


def terms(text: str, lang: str) -> list[str]:
    """Return the terms of the words of `text`, a text in `lang`: each word's, in word order."""
    return [t for word in words(text) for t in term_set(word, lang)]


@functools.lru_cache(maxsize=_CACHED_LEGACY_WORDS)
def legacy_term_set(word: str, lang: str) -> tuple[str, ...]:
    """Return a normalised word's terms as analysis LEGACY_VERSION made them (one per word).

    Version 1: Snowball for Russian as for English. Kept while an index built with it may
    still be in use (bot.services.search); the next change of analysis replaces it.
    """
    if lang == "ru" and _CYRILLIC.search(word):
        # The Russian stemmer must see й intact; ё counts as е.
        return (strip_marks(_snowball("russian").stemWord(word.replace("ё", "е"))),)
    return (_simple_term(word, lang),)


def legacy_terms(text: str, lang: str) -> list[str]:
    """Return the terms of the words of `text` as analysis LEGACY_VERSION made them."""
    return [t for word in words(text) for t in legacy_term_set(word, lang)]


def clear_caches() -> None:
    """Forget every word analysed so far (benchmarks time first-time analysis with it)."""
    term_set.cache_clear()
    legacy_term_set.cache_clear()


@functools.cache
def _snowball(name: str) -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer(name)


def _simple_term(word: str, lang: str) -> str:
    # Every language but Russian's Cyrillic words: one term per word, as in version 1.
    if word.isdigit():
        return word
    folded = strip_marks(word)
    if _CYRILLIC.search(word):
        return folded  # a Russian word in an English or Azerbaijani text is only folded
    if lang == "en":
        return strip_marks(_snowball("english").stemWord(word))
    if lang == "az":
        return _az_stem(folded)
    return folded


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


@functools.cache
def _morphology() -> MorphAnalyzer:
    # Imported here, not at the top: nothing is loaded until a Russian word is analysed.
    import pymorphy3

    return pymorphy3.MorphAnalyzer(lang="ru")


def _russian_terms(word: str) -> tuple[str, ...]:
    """A Russian word's lemmas, or, unknown to the dictionary, its stem and any verified guess."""
    with _MORPH_LOCK:
        morph = _morphology()
        lemmas = [parse.normal_form for parse in morph.parse(word)]
        if not morph.word_is_known(word):
            # Guesses are kept only when the dictionary knows the lemma guessed.
            lemmas = [_ru_stem(word), *(lemma for lemma in lemmas if morph.word_is_known(lemma))]
    found = (strip_marks(lemma) for lemma in lemmas)
    # A lemma is letters (the dictionary's are); anything else would not be one index term.
    return tuple(dict.fromkeys(t for t in found if WORD.fullmatch(t))) or (strip_marks(word),)


def _ru_stem(word: str) -> str:
    for ending in _RU_ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= _RU_MIN_STEM:
            return word[: -len(ending)]
    return word
