"""The one text analysis: folding and stemming, shared by search, filters and the summariser.

A word folds the same way wherever it is compared: case (Azerbaijani dotted and dotless I
included), diacritics, the Azerbaijani letters (ə ğ ş ç ö ü ı) and ё/е are folded, and each
word is reduced to its stem with the stemmer of the text's language:

- English and Russian: the Snowball stemmers (snowballstemmer), so "Ирана" meets "Иран" and
  "sanctions" meets "sanction".
- Azerbaijani: a light suffix stripper of our own (plural, case and possessive endings). The
  Snowball Turkish stemmer was tried and rejected: it does not know ə and applies Turkish vowel
  harmony, so it splits one Azerbaijani word into several stems ("neft" → "neft" but "neftin" →
  "nef") — worse than no stemming. The stripper works on folded text, is applied identically
  to pieces and queries, and never leaves a stem shorter than three letters.
- Any other language (a fourth one added later): folding only.

Words are runs of letters and digits, the same split as FTS5's unicode61 tokenizer.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import snowballstemmer

# Bump whenever folding or stemming changes what term() returns: the search index is then
# rebuilt at the next start (bot.services.search.attach_index).
ANALYZER_VERSION = 1

# Letters and digits, as FTS5's unicode61 tokenizer sees tokens ("_" separates there too).
WORD = re.compile(r"[^\W_]+")
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
    return WORD.findall(normalise(text))


def fold(text: str) -> str:
    """Return `text`'s words folded (case, diacritics, İ/ı, ə…), single-spaced, unstemmed."""
    return " ".join(strip_marks(word) for word in words(text))


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
    """Return the folded stem of a normalised word (from words()) in a text in `lang`."""
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
    """Return the folded stems of the words of `text`, a text in `lang`."""
    return [term(word, lang) for word in words(text)]
