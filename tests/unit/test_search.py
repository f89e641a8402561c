"""Search: text folding and word forms, safe queries, snippets, and ranking on both back ends.

The fixture set holds pieces in English, Russian and Azerbaijani stored through the real store
(store_poll, then indexing as the poller does), so what is tested is what /search and inline mode
run. The relevance tests run once on an SQLite file and once on a fresh PostgreSQL database
(`store_target`); the parity tests open both side by side and compare their answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.services import search as search_service
from bot.services.search import (
    SearchIndex,
    attach_index,
    index_items,
    parse_query,
    snippet,
)
from bot.text import analysis
from bot.text.analysis import term, term_set, words
from storage import search as index_store
from storage.models import NewItem
from storage.search import TermGroups
from storage.store import Store
from tests.factories import new_item

T = TypeVar("T")

NOW = 1_767_225_600.0  # 2026-01-01
DAY = 86400.0

# (title, text, age in days) per language: the fixture set of the relevance tests.
PIECES: Mapping[str, Sequence[tuple[str, str, float]]] = {
    "en": (
        (
            "US tightens sanctions on Iranian oil exports",
            "Washington announced a new sanction package aimed at Tehran's oil trade.",
            3,
        ),
        (
            "Caspian drills show the limits of the Russia–Iran alliance",
            "The joint military exercises in the Caspian Sea were presented as a show of unity.",
            10,
        ),
        (
            "Baku hosts an energy forum",
            "Ministers discussed gas pipelines and the Middle Corridor; sanctions came up once.",
            1,
        ),
        ("Café diplomacy in Tbilisi", "Diplomats met in a small café near the old town.", 20),
    ),
    "ru": (
        (
            "Санкции против Ирана ужесточены",
            "США объявили новый пакет санкций против Ирана и его нефтяного экспорта.",
            2,
        ),
        (
            "Иран и Россия: учения на Каспии",
            "Совместные учения показали пределы союза Москвы и Тегерана.",
            5,
        ),
        ("Новогодняя ёлка в Баку", "На площади у бульвара установили большую ёлку.", 30),
    ),
    "az": (
        (
            "Iğdır–Naxçıvan qaz kəməri",
            "Azərbaycanın enerji layihəsi: İĞDIR istiqamətində yeni boru kəməri çəkilir.",
            4,
        ),
        (
            "Azərbaycan və İran arasında yeni saziş",
            "Ölkələrin nazirləri Bakıda görüşdü və ticarət haqqında danışdı.",
            6,
        ),
        ("Neftin qiyməti düşür", "Neft bazarında gərginlik artır.", 8),
    ),
}


def entries(lang: str, pieces: Sequence[tuple[str, str, float]], start: int = 0) -> list[NewItem]:
    """The pieces as the parser yields them, oldest first."""
    made = [
        new_item(
            start + n,
            title=title,
            summary=text,
            published_at=NOW - age * DAY,
            identity=f"{lang}-{start + n}",
            link=f"https://caliber.az/{lang}/post/{start + n}",
        )
        for n, (title, text, age) in enumerate(pieces, start=1)
    ]
    return sorted(made, key=lambda e: e.published_at or 0.0)


async def poll(store: Store, feed_id: int, items: Sequence[NewItem], *, index: bool = True) -> None:
    """Store a poll as the poller does: the store's transaction, then indexing after its commit.

    `index=False` is a crash between the two (or items stored before the search feature).
    """
    outcome = await store.store_poll(
        feed_id, items, etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
        max_age=3650 * DAY, backfill=0,
    )  # fmt: skip
    if index:
        await index_items(store, [*outcome.new_items, *outcome.updated_items])


async def store_pieces(
    store: Store, pieces: Mapping[str, Sequence[tuple[str, str, float]]], *, index: bool = True
) -> None:
    for lang, items in pieces.items():
        feed = await store.ensure_feed(f"https://caliber.az/{lang}/rss", lang)
        await poll(store, feed.id, entries(lang, items), index=index)


async def open_store(target: str | Path) -> Store:
    """A store with an index, as the bot opens it (attach_index at start)."""
    store = await Store.open(target)
    await attach_index(store)
    return store


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    """The fixture set on one back end (the test runs once per back end)."""
    s = await open_store(store_target)
    await store_pieces(s, PIECES)
    yield s
    await s.close()


@pytest.fixture
async def both(db_path: Path, pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """An SQLite store and a PostgreSQL one, both empty but for their index, side by side."""
    stores = (await open_store(db_path), await open_store(pg_url))
    assert [s.dialect for s in stores] == ["sqlite", "postgresql"]
    yield stores
    for s in stores:
        await s.close()


def wanted(text: str, langs: Sequence[str]) -> TermGroups:
    groups = parse_query(text).match(langs)
    assert groups is not None, text
    return groups


async def titles(store: Store, text: str, langs: Sequence[str], **kwargs: int) -> list[str]:
    groups = parse_query(text).match(langs)
    if groups is None:
        return []
    page = await index_store.search(store, groups, now=NOW, **kwargs)
    return [hit.item.title for hit in page.hits]


# ---------------------------------------------------------------------- folding and word forms


@pytest.mark.parametrize(
    ("a", "b", "lang"),
    [
        ("IĞDIR", "ığdır", "az"),
        ("IĞDIR", "igdir", "az"),
        ("İSTANBUL", "istanbul", "az"),
        ("Azərbaycanın", "Azerbaycan", "az"),
        ("neftin", "Neft", "az"),
        ("ölkələrin", "ÖLKƏ", "az"),
        ("Bakıda", "Bakı", "az"),
        ("Bakının", "Bakıya", "az"),
        ("Azərbaycana", "Azərbaycanda", "az"),
        ("ölkəsi", "ölkələrdən", "az"),
        ("Türkiyədə", "Türkiyə", "az"),
        ("müharibəsi", "müharibə", "az"),
        ("sanksiyalar", "sanksiyası", "az"),
        ("Ermənistanın", "Ermənistan", "az"),
        ("ЁЛКА", "елку", "ru"),
        ("Ирана", "Иран", "ru"),
        ("Ираном", "Ирана", "ru"),
        ("санкций", "Санкции", "ru"),
        ("иранская", "иранский", "ru"),
        ("шли", "идти", "ru"),
        ("стали", "сталь", "ru"),
        ("стали", "стать", "ru"),
        ("Пашиняном", "Пашинян", "ru"),  # a surname the dictionary does not know
        ("Зангезура", "Зангезуром", "ru"),  # nor this region
        ("Шушой", "Шуша", "ru"),  # a form the dictionary lacks of a name it knows
        ("sanctions", "sanction", "en"),
        ("Café", "cafe", "en"),
        ("EXPORTS", "export", "en"),
    ],
)
def test_word_forms_share_a_term(a: str, b: str, lang: str) -> None:
    [first], [second] = words(a), words(b)
    assert set(term_set(first, lang)) & set(term_set(second, lang)), (a, b)


def test_a_form_of_several_words_has_each_lemma() -> None:
    assert term_set("стали", "ru") == ("стать", "сталь")  # the likelier first
    assert term("стали", "ru") == "стать"
    assert analysis.terms("Цены на стали выросли", "ru") == [
        "цена", "на", "стать", "сталь", "вырасти",
    ]  # fmt: skip
    # The analysis it replaced: Snowball's stem, one per word; the same for English.
    assert analysis.legacy_term_set("стали", "ru") == ("стал",)
    assert analysis.legacy_term_set("ирана", "ru") != analysis.legacy_term_set("ираном", "ru")
    assert analysis.legacy_term_set("sanctions", "en") == term_set("sanctions", "en")


def test_unknown_words_are_not_lemmatised_by_guess() -> None:
    # pymorphy3 guesses "пашинянин" for this surname; a guess the dictionary does not know
    # is dropped, and the name keeps the stem its other forms have.
    assert term_set("пашинян", "ru") == ("пашинян",)
    assert {term_set(w, "ru")[0] for w in ("пашиняна", "пашиняну", "пашиняне")} == {"пашинян"}


def test_dotted_capital_i_stays_one_word() -> None:
    # casefold() alone turns İ into i + a combining dot, which would split the word.
    assert words("İstanbul İĞDIR") == ["istanbul", "iğdir"]


def test_different_words_stay_apart() -> None:
    assert term("neft", "az") != term("qaz", "az")
    assert term("iran", "en") != term("irina", "en")
    # The Azerbaijani stripper never leaves fewer than three letters.
    assert term("ilə", "az") == "ile"
    assert term("ilin", "az") == "ili"


# ---------------------------------------------------------------------- queries


HOSTILE = [
    '"',
    '""',
    "oil AND gas",
    "oil OR",
    "NOT sanctions",
    "NEAR(oil gas, 2)",
    "oil*",
    "^oil",
    "(oil",
    "oil)",
    "title:oil",
    "{title body}: oil",
    "'; DROP TABLE items; --",
    "1' OR '1'='1",
    "🛢️🔥 oil 🇦🇿",
    "🛢️🔥",
    "x" * 5000,
    " ".join(["word"] * 1000),
    "",
    "   ",
    "\x00\x01",
    "-",
    "+oil -gas",
]

# What a query may become: groups of tagged terms (a language code, 0, letters and digits).
_TAGGED = re.compile(r"[a-z]+0[^\W_]+")
# Its FTS5 MATCH expression: quoted terms joined by AND/OR, in parentheses.
_FTS5_TERM = r'"[a-z]+0[^\W_]+"'
_FTS5_GROUP = rf"(?:{_FTS5_TERM}|\({_FTS5_TERM}(?: OR {_FTS5_TERM})+\))"
_SAFE_EXPRESSION = re.compile(rf"^{_FTS5_GROUP}(?: AND {_FTS5_GROUP})*$")
# Its tsquery: quoted lexemes joined by & and | (one group: its lexemes OR-ed, unbracketed).
_TS_TERM = r"'[a-z]+0[^\W_]+'"
_TS_GROUP = rf"(?:{_TS_TERM}|\( {_TS_TERM}(?: \| {_TS_TERM})+ \))"
_SAFE_TSQUERY = re.compile(rf"^(?:{_TS_TERM}(?: \| {_TS_TERM})*|{_TS_GROUP}(?: & {_TS_GROUP})+)$")
_SAFE_RANK_TSQUERY = re.compile(rf"^{_TS_TERM}(?: \| {_TS_TERM})*$")


def assert_safe(groups: TermGroups) -> None:
    """Every rendering of `groups` is quoted tagged terms and the renderer's own operators."""
    assert groups and all(groups)
    assert all(_TAGGED.fullmatch(t) for group in groups for t in group), groups
    assert _SAFE_EXPRESSION.match(index_store.fts5_expression(groups)), groups
    assert _SAFE_TSQUERY.match(index_store.tsquery(groups)), groups
    assert _SAFE_RANK_TSQUERY.match(index_store.rank_tsquery(groups)), groups


@pytest.mark.parametrize("text", HOSTILE)
def test_user_text_never_reaches_match_raw(text: str) -> None:
    query = parse_query(text)
    assert len(query.text) <= search_service.MAX_QUERY_CHARS
    assert len(query.words) <= search_service.MAX_QUERY_WORDS
    for langs in (["en"], ["en", "ru", "az"]):
        groups = query.match(langs)
        assert (groups is None) == query.empty
        if groups is not None:
            assert len(groups) <= len(query.words)
            assert all(len(group) >= len(langs) for group in groups)
            assert_safe(groups)
            legacy = query.match(langs, legacy=True)
            assert legacy is not None
            assert_safe(legacy)


@pytest.mark.parametrize(
    "bad",
    [
        '"',
        'en0oil" OR "en0gas',
        "en0oil OR en0gas",
        "en0oil'",
        "en0oil' | 'en0gas",
        "en0oil:*",
        "en0oil & !en0gas",
        "en0oil\\",
        "en0oil)",
        "en0_oil",
        "",
        " ",
    ],
)
def test_storage_refuses_anything_but_terms(bad: str) -> None:
    """The renderers check every term themselves: a term that is not letters and digits is
    refused, never quoted into a query (whatever a future caller passes)."""
    for groups in (((bad,),), (("en0oil",), ("en0gas", bad))):
        for render in (index_store.fts5_expression, index_store.tsquery, index_store.rank_tsquery):
            with pytest.raises(ValueError):
                render(groups)
    for empty in ((), ((),), (("en0oil",), ())):
        with pytest.raises(ValueError):
            index_store.tsquery(empty)
        with pytest.raises(ValueError):
            index_store.fts5_expression(empty)


def test_queries_keep_words_only() -> None:
    assert parse_query("oil AND gas").words == ("oil", "and", "gas")
    assert parse_query("🛢️🔥").empty
    assert parse_query("NEAR(oil*, ^gas)").words == ("near", "oil", "gas")
    assert parse_query("x" * 5000).text.endswith("…")


def test_query_groups() -> None:
    """One group per word, its terms in each language; words with the same terms once."""
    assert parse_query("Sanctions on Iran").match(["en", "ru"]) == (
        ("en0sanction", "ru0sanctions"),
        ("en0on", "ru0on"),
        ("en0iran", "ru0iran"),
    )
    assert parse_query("sanctions sanction").match(["en"]) == (("en0sanction",),)
    assert parse_query("oil").match([]) is None
    # Every lemma of a word, in each language; with `legacy`, its old stems too.
    assert parse_query("стали Ирана").match(["ru", "en"]) == (
        ("ru0стать", "ru0сталь", "en0стали"),
        ("ru0иран", "en0ирана"),
    )
    assert parse_query("стали Ирана").match(["ru"], legacy=True) == (
        ("ru0стать", "ru0сталь", "ru0стал"),
        ("ru0иран", "ru0ира"),
    )
    assert parse_query("Ираном").match(["ru"], legacy=True) == (("ru0иран",),)
    assert parse_query("Ирана").match(["ru"], legacy=True, current=False) == (("ru0ира",),)
    assert parse_query("Ирана").match(["ru"], current=False) is None
    assert index_store.fts5_expression((("en0a",), ("en0b", "ru0b"))) == (
        '"en0a" AND ("en0b" OR "ru0b")'
    )
    assert index_store.tsquery((("en0a",), ("en0b", "ru0b"))) == "'en0a' & ( 'en0b' | 'ru0b' )"
    assert index_store.tsquery((("en0a", "ru0a"),)) == "'en0a' | 'ru0a'"
    assert index_store.rank_tsquery((("en0a",), ("en0b", "en0a"))) == "'en0a' | 'en0b'"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_a_valid_fts5_query(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(title, body, tokenize = 'unicode61 remove_diacritics 2')"
    )
    conn.execute("INSERT INTO t VALUES ('en0oil', 'en0gas')")
    groups = parse_query(text).match(["en", "ru", "az"])
    if groups is not None:
        expression = index_store.fts5_expression(groups)
        conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()
    conn.close()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_a_safe_query(text: str) -> None:
    for legacy in (False, True):
        groups = parse_query(text).match(["en", "ru", "az"], legacy=legacy)
        if groups is not None:
            assert_safe(groups)


_CYRILLIC_TEXT = st.text(
    st.sampled_from([*"абвгдеёжзийклмнопрстуфхцчшщъыьэюяАЁЖЯ", "й", " ", "-", "1"]), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(_CYRILLIC_TEXT)
def test_any_russian_text_gives_index_terms(text: str) -> None:
    """Whatever the dictionary or the stripper make of a word, its terms are letters and
    digits (one index token each), and a query for the text is safe."""
    for word in words(text):
        found = term_set(word, "ru")
        assert found and all(re.fullmatch(r"[^\W_]+", t) for t in found), word
    groups = parse_query(text).match(["ru"], legacy=True)
    if groups is not None:
        assert_safe(groups)


def _random_texts(count: int) -> list[str]:
    """Texts full of what a query language might obey: quotes, operators, escapes, letters."""
    rng = random.Random(13)
    alphabet = [*"'\\\"&|!<->():*^{}[];, -_\t\n\x00AaZzİıƏəĞğЁёЖж0189é", "\u0307", "🛢️"]
    return ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(count)]


async def test_postgresql_reads_the_tsquery_as_written(pg_url: str) -> None:
    """PostgreSQL parses every rendered tsquery back to the same text: the same lexemes and
    only the operators the renderer put there, whatever the reader typed."""
    store = await Store.open(pg_url)
    checked = 0
    for text in [*HOSTILE, *_random_texts(400), "x" * 3000 + " oil"]:
        for langs in (["en"], ["en", "ru", "az"]):
            groups = parse_query(text).match(langs)
            if groups is None:
                continue
            for rendered in (index_store.tsquery(groups), index_store.rank_tsquery(groups)):
                row = await store.fetchone("SELECT CAST(? AS tsquery)::text", (rendered,))
                assert row is not None and row[0] == rendered, text
                checked += 1
    assert checked > 500
    await store.close()


async def test_rows_carry_the_mark_of_their_analysis(pg_url: str) -> None:
    """The mark is one more lexeme after the text, so the title's and text's positions stay."""
    store = await Store.open(pg_url)
    doc = index_store.SearchDoc(item_id=1, ts=NOW, title="en0oil", body="en0gas", version=2)
    rows = await store.fetchall(
        "SELECT lexeme, positions FROM unnest(CAST(? AS tsvector))",
        (index_store.tsvector(doc),),
    )
    assert {r[0]: list(r[1]) for r in rows} == {"en0oil": [1], "en0gas": [2], "0v2": [3]}
    await store.close()


async def test_postgresql_reads_the_tsvector_as_built(pg_url: str) -> None:
    """The tsvector built from the analysed terms is what PostgreSQL stores: the same lexemes
    (no word split at a non-ASCII letter), title words weight A at their positions, text words
    weight D after them; a word too long for a lexeme is stored as its digest form."""
    store = await Store.open(pg_url)
    long_word = "ə" * 1500  # 3,000 bytes: above PostgreSQL's 2,046 per lexeme
    doc = index_store.SearchDoc(
        item_id=1,
        ts=NOW,
        title="az0igdir az0kemer az0igdir",
        body=f"ru0елк en0café az0igdir az0{long_word}",
    )
    rows = await store.fetchall(
        "SELECT lexeme, positions, weights FROM unnest(CAST(? AS tsvector))",
        (index_store.tsvector(doc),),
    )
    got = {r[0]: (list(r[1]), list(r[2])) for r in rows}
    digest = index_store.rank_tsquery(((f"az0{long_word}",),)).strip("'")
    assert len(digest.encode()) <= 2046 and digest.startswith("az0əəə")
    assert got == {
        "az0igdir": ([1, 3, 6], ["A", "A", "D"]),
        "az0kemer": ([2], ["A"]),
        "ru0елк": ([4], ["D"]),
        "en0café": ([5], ["D"]),
        digest: ([7], ["D"]),
    }
    await store.close()


# ---------------------------------------------------------------------- snippets


def test_snippet_marks_every_form_of_the_words() -> None:
    query = parse_query("санкция Иран")
    fragments = snippet(
        "США объявили новый пакет санкций против Ирана.", "ru", query.terms_for("ru")
    )
    assert [f.text for f in fragments if f.matched] == ["санкций", "Ирана"]
    assert "".join(f.text for f in fragments) == "США объявили новый пакет санкций против Ирана."


def test_snippet_marks_forms_of_every_lemma() -> None:
    text = "Сталь подорожала, цены стали выше, Ираном недовольны."
    fragments = snippet(text, "ru", parse_query("стать Ирана").terms_for("ru"))
    assert [f.text for f in fragments if f.matched] == ["стали", "Ираном"]
    fragments = snippet(text, "ru", parse_query("стали").terms_for("ru"))
    assert [f.text for f in fragments if f.matched] == ["Сталь", "стали"]


def test_snippet_is_a_window_around_the_first_match() -> None:
    text = " ".join(["filler"] * 100) + " the sanctions bite " + " ".join(["more"] * 100)
    fragments = snippet(text, "en", parse_query("sanction").terms_for("en"), width=120)
    joined = "".join(f.text for f in fragments)
    assert joined.startswith("…") and joined.endswith("…")
    assert "sanctions" in joined and len(joined) <= 125
    assert [f.text for f in fragments if f.matched] == ["sanctions"]


# ---------------------------------------------------------------------- relevance, on each back end


async def test_russian_word_forms(store: Store) -> None:
    found = await titles(store, "Ирана", ["ru"])
    assert set(found) == {"Санкции против Ирана ужесточены", "Иран и Россия: учения на Каспии"}
    assert set(await titles(store, "Ираном", ["ru"])) == set(found)  # Snowball: "иран" ≠ "ира"
    assert await titles(store, "санкция", ["ru"]) == ["Санкции против Ирана ужесточены"]
    assert await titles(store, "ЕЛКА", ["ru"]) == ["Новогодняя ёлка в Баку"]


async def test_english_word_forms_and_diacritics(store: Store) -> None:
    found = await titles(store, "Sanctions", ["en"])
    assert found[0] == "US tightens sanctions on Iranian oil exports"  # in the title
    assert "Baku hosts an energy forum" in found  # in the text only: ranked lower
    assert await titles(store, "cafe", ["en"]) == ["Café diplomacy in Tbilisi"]


@pytest.mark.parametrize("text", ["IĞDIR", "ığdır", "Igdir", "iğdır"])
async def test_azerbaijani_letters(store: Store, text: str) -> None:
    assert await titles(store, text, ["az"]) == ["Iğdır–Naxçıvan qaz kəməri"]


async def test_azerbaijani_word_forms(store: Store) -> None:
    found = await titles(store, "Azərbaycan", ["az"])
    assert set(found) == {"Iğdır–Naxçıvan qaz kəməri", "Azərbaycan və İran arasında yeni saziş"}
    assert await titles(store, "neft", ["az"]) == ["Neftin qiyməti düşür"]
    assert await titles(store, "ölkə", ["az"]) == ["Azərbaycan və İran arasında yeni saziş"]


async def test_language_scope(store: Store) -> None:
    assert await titles(store, "Baku", ["ru"]) == []
    assert await titles(store, "Баку", ["ru"]) == ["Новогодняя ёлка в Баку"]
    found = await titles(store, "Iran", ["en", "ru", "az"])
    assert set(found) == {
        "Caspian drills show the limits of the Russia–Iran alliance",
        "Azərbaycan və İran arasında yeni saziş",
    }


async def test_every_word_must_match(store: Store) -> None:
    assert await titles(store, "caspian drills", ["en"]) == [
        "Caspian drills show the limits of the Russia–Iran alliance"
    ]
    assert await titles(store, "caspian sanctions", ["en"]) == []


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_queries_are_just_their_words(store: Store, text: str) -> None:
    """Operators, quotes, column filters and SQL are words like any other: a hostile query
    finds exactly what its letters and digits alone find, and the store is left as it was."""
    before = await store.count_items()
    plain = " ".join(re.findall(r"\w+", text))
    for langs in (["en"], ["en", "ru", "az"]):
        assert await titles(store, text, langs) == await titles(store, plain, langs)
    assert await store.count_items() == before


async def test_an_operator_is_not_obeyed(store: Store) -> None:
    # FTS5 would read OR as "either"; to the bot it is a word the pieces must also contain.
    assert await titles(store, "caspian OR sanctions", ["en"]) == []
    assert await titles(store, "caspian", ["en"]) != []


async def test_title_matches_rank_above_text_matches(store_target: str) -> None:
    store = await open_store(store_target)
    await store_pieces(
        store,
        {
            "en": (
                ("Markets today", "The pipeline deal was signed.", 1),
                ("Pipeline deal signed", "Markets today.", 1),
            )
        },
    )
    assert await titles(store, "pipeline", ["en"]) == ["Pipeline deal signed", "Markets today"]
    await store.close()


async def test_recent_pieces_rank_higher_at_equal_relevance(store_target: str) -> None:
    store = await open_store(store_target)
    same = "Gas pipeline talks resume"
    await store_pieces(store, {"en": ((same, "Old news.", 400), (same, "New news.", 1))})
    page = await index_store.search(store, wanted("pipeline", ["en"]), now=NOW)
    assert [hit.item.summary for hit in page.hits] == ["New news.", "Old news."]
    assert page.hits[0].score < page.hits[1].score  # lower is better, on both back ends
    await store.close()


async def test_paging_covers_every_match_once(store_target: str) -> None:
    store = await open_store(store_target)
    many = tuple((f"Oil report {n}", f"Oil and gas, part {n}.", n) for n in range(12))
    await store_pieces(store, {"en": many})
    groups = wanted("oil", ["en"])
    seen: list[int] = []
    offset = 0
    while True:
        page = await index_store.search(store, groups, now=NOW, offset=offset, limit=5)
        assert page.total == 12
        seen += [hit.item.id for hit in page.hits]
        if not page.has_more:
            break
        offset += 5
    assert len(seen) == len(set(seen)) == 12
    assert offset == 10
    await store.close()


VOCABULARY = ["oil", "gas", "pipeline", "sanctions", "iran", "baku", "caspian", "energy"]


def vocabulary_pieces(count: int = 300) -> tuple[tuple[str, str, float], ...]:
    """Pieces made of a few words in many mixes, dated over 900 days (ids rise with dates)."""
    pieces = []
    for n in range(count):
        title = " ".join(VOCABULARY[(n * k) % len(VOCABULARY)] for k in (1, 3, 7))
        text = " ".join(VOCABULARY[(n + k * k) % len(VOCABULARY)] for k in range(n % 9 + 1))
        pieces.append((title, text, (n * 37) % 900))
    return tuple(pieces)


async def score_every_match(store: Store, groups: TermGroups, limit: int) -> list[int]:
    """The best `limit` matches by the documented formula, every match scored with its date."""
    if store.dialect == "postgresql":
        sql = f"""
            SELECT d.id FROM search_docs d WHERE d.doc @@ CAST(:q AS tsquery)
            ORDER BY -ts_rank(CAST(:weights AS real[]), d.doc, CAST(:rq AS tsquery), 1)
                * {index_store.PG_BOOST_SQL}, d.id DESC
            LIMIT :limit
        """
        params: dict[str, object] = {
            "q": index_store.tsquery(groups),
            "rq": index_store.rank_tsquery(groups),
            "weights": index_store.pg_weights(),
        }
    else:
        sql = f"""
            WITH c AS MATERIALIZED (
                SELECT rowid AS id, bm25(search_fts, :title_weight, :body_weight) AS b
                FROM search_fts WHERE search_fts MATCH :q)
            SELECT c.id FROM c JOIN search_dates d ON d.id = c.id
            ORDER BY c.b * {index_store.BOOST_SQL}, c.id DESC LIMIT :limit
        """
        params = {
            "q": index_store.fts5_expression(groups),
            "title_weight": index_store.TITLE_WEIGHT,
            "body_weight": index_store.BODY_WEIGHT,
        }
    params |= {
        "boost": index_store.RECENCY_BOOST,
        "now": NOW,
        "recency": index_store.RECENCY_WINDOW,
        "limit": limit,
    }
    return [int(r[0]) for r in await store.fetchall(sql, params)]


@pytest.mark.parametrize("refreshed", [False, True], ids=["no floor", "recency floor"])
async def test_ranking_matches_scoring_every_match(store_target: str, refreshed: bool) -> None:
    """Same order as boosting every match by its date and sorting, with the recency floor
    skipping old pieces' dates or without it (and, on PostgreSQL, with only the newest matches'
    tsvectors read)."""
    store = await open_store(store_target)
    await store_pieces(store, {"en": vocabulary_pieces()})
    if refreshed:
        floor = await index_store.refresh_recency(store, NOW)
        assert 200 < floor < 300  # ids rise with dates here: about a tenth are recent
    for text in ("oil", "gas pipeline", "caspian", "trade corridor energy"):
        groups = wanted(text, ["en"])
        expected = await score_every_match(store, groups, 30)
        got: list[int] = []
        for offset in range(0, 30, 5):
            page = await index_store.search(store, groups, now=NOW, offset=offset)
            got += [hit.item.id for hit in page.hits]
        assert got == expected[: len(got)] and len(got) == min(30, len(expected)), text
    await store.close()


async def test_recency_floor_follows_new_and_redated_pieces(store_target: str) -> None:
    store = await open_store(store_target)
    same = "Gas pipeline talks resume"
    await store_pieces(store, {"en": tuple((same, f"Old{n}.", 400 + n) for n in range(5))})
    assert await index_store.refresh_recency(store, NOW) == 6  # none recent: above every id
    groups = wanted("pipeline", ["en"])

    async def first() -> str:
        page = await index_store.search(store, groups, now=NOW)
        return page.hits[0].item.summary

    # A new piece (id 6) is boosted, though the floor was computed before it existed.
    # Its longer text scores lower by bm25 alone than the old pieces'.
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await poll(store, feed.id, entries("en", ((same, "Brand new piece.", 2),), start=10))
    assert await first() == "Brand new piece."
    # So is a piece indexed late with a recent date below the floor (the backfill, a rebuild).
    oldest = next(i for i in await store.latest_items(["en"], 10) if i.id == 1)
    recent = search_service.document(dataclasses.replace(oldest, published_at=NOW - DAY))
    await index_store.index_docs(store, [recent])
    assert await first() == oldest.summary == "Old4."  # stored first: the oldest
    # A search made with an earlier clock than the floor's does not trust it.
    assert await index_store.refresh_recency(store, NOW + 200 * DAY) == 7
    page = await index_store.search(store, groups, now=NOW)
    assert page.hits[0].item.summary == "Old4."
    await store.close()


async def test_broad_queries_rank_the_newest_window(
    store_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_store, "CANDIDATE_WINDOW", 4)
    store = await open_store(store_target)
    await store_pieces(store, {"en": tuple((f"Oil {n}", "Oil.", 10 - n) for n in range(10))})
    page = await index_store.search(store, wanted("oil", ["en"]), now=NOW, limit=10)
    assert page.total == 10  # every match is counted
    assert sorted(hit.item.title for hit in page.hits) == ["Oil 6", "Oil 7", "Oil 8", "Oil 9"]
    await store.close()


# ---------------------------------------------------------------------- keeping the index


async def test_index_follows_edits_and_backfills(store_target: str) -> None:
    store = await Store.open(store_target)
    await store_pieces(store, {"en": (("Pipeline politics", "Gas.", 1),)}, index=False)
    assert await index_store.analyzer_version(store) == 0
    assert await titles(store, "pipelines", ["en"]) == []  # stored, never indexed
    assert await attach_index(store) == 1  # the backfill at start
    assert await index_store.analyzer_version(store) == analysis.ANALYZER_VERSION
    assert await titles(store, "pipelines", ["en"]) == ["Pipeline politics"]
    assert await attach_index(store) == 0  # nothing missing: nothing done

    # The site edits the piece (same identity, new content hash) and the process dies right
    # after the poll's commit: the stale text is out of the index, and the next start
    # indexes the new text.
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    await poll(store, feed.id, entries("en", (("Corridor politics", "Trade.", 1),)), index=False)
    assert await titles(store, "pipeline", ["en"]) == []
    assert await attach_index(store) == 1
    assert await titles(store, "corridor", ["en"]) == ["Corridor politics"]

    # Edited again, and indexed after the commit as the poller does: found at once.
    await poll(store, feed.id, entries("en", (("Caspian politics", "Sea.", 1),)))
    assert await titles(store, "caspian", ["en"]) == ["Caspian politics"]
    assert await titles(store, "corridor", ["en"]) == []
    assert await attach_index(store) == 0
    await store.close()


async def test_a_form_of_two_words_finds_both(store_target: str) -> None:
    store = await open_store(store_target)
    pieces = (("Сталь дорожает", "Металл.", 1), ("Цены стали выше", "Рынок.", 2))
    await store_pieces(store, {"ru": pieces})
    assert set(await titles(store, "стали", ["ru"])) == {"Сталь дорожает", "Цены стали выше"}
    assert await titles(store, "сталью", ["ru"]) == ["Сталь дорожает", "Цены стали выше"]
    assert await titles(store, "станут", ["ru"]) == ["Цены стали выше"]
    await store.close()


# ---------------------------------------------------------------------- a change of analysis

TOTAL = sum(len(p) for p in PIECES.values())


async def legacy_store(target: str) -> Store:
    """The fixture set as the last release left it: indexed by analysis LEGACY_VERSION, and
    recorded so."""
    store = await Store.open(target)
    await index_store.record_analyzer_version(store, analysis.LEGACY_VERSION)
    await store_pieces(store, PIECES, index=False)
    items = await index_store.items_to_index(store, below=None, limit=100)
    await index_store.index_docs(store, search_service.documents(items, legacy=True))
    return store


async def found(store: Store, index: SearchIndex, text: str) -> set[str]:
    groups = index.match(parse_query(text), ["ru"])
    assert groups is not None
    page = await index_store.search(store, groups, now=NOW, limit=10)
    return {hit.item.title for hit in page.hits}


class GatedCpu:
    """A RunCpu that runs `open` batches, then holds the next until `release()`."""

    def __init__(self, open: int) -> None:
        self.open = open
        self.calls = 0
        self.waiting = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        self.calls += 1
        if self.calls > self.open:
            self.waiting.set()
            await self.gate.wait()
        return func(*args, **kwargs)

    def release(self) -> None:
        self.gate.set()


IRAN = "Иран и Россия: учения на Каспии"  # id 6: left for a later batch
SANCTIONS = "Санкции против Ирана ужесточены"  # id 7: in the first batch (ids 10 to 7)


async def test_search_answers_during_a_rebuild(store_target: str) -> None:
    store = await legacy_store(store_target)
    index = await SearchIndex.open(store)
    assert index.legacy
    # As the old analysis found them, before anything is re-analysed.
    assert await found(store, index, "Ирана") == {IRAN, SANCTIONS}
    assert await found(store, index, "санкции") == {SANCTIONS}

    cpu = GatedCpu(open=1)
    rebuild = asyncio.create_task(index.attach(batch_size=4, pause=0, cpu=cpu))
    await asyncio.wait_for(cpu.waiting.wait(), 10)
    # Mid-way: the newest four pieces are the new analysis's, the rest the old one's, and a
    # query finds both kinds: each word is looked for under both analyses.
    assert index.legacy
    assert await found(store, index, "Ирана") == {IRAN, SANCTIONS}
    assert await found(store, index, "санкций") == {SANCTIONS}
    assert await found(store, index, "ёлка") == {"Новогодняя ёлка в Баку"}
    # The new analysis alone misses the pieces not re-analysed yet ("санкц" is not "санкция").
    current_only = SearchIndex(store, legacy=False)
    assert await found(store, current_only, "Ирана") == {SANCTIONS}
    assert await found(store, current_only, "ёлка") == set()
    assert await index_store.analyzer_version(store) == analysis.LEGACY_VERSION

    cpu.release()
    assert await asyncio.wait_for(rebuild, 10) == TOTAL
    # Done: the new version is recorded, and queries use the new analysis only.
    assert not index.legacy
    assert await index_store.analyzer_version(store) == analysis.ANALYZER_VERSION
    assert parse_query("Ирана").match(["ru"]) == index.match(parse_query("Ирана"), ["ru"])
    assert await found(store, index, "Ираном") == {IRAN, SANCTIONS}  # the old analysis: none
    assert await found(store, index, "ёлка") == {"Новогодняя ёлка в Баку"}
    # No row holds an old term any more.
    for old_term in ("ru0ира", "ru0санкц", "ru0елк"):
        page = await index_store.search(store, ((old_term,),), now=NOW)
        assert page.total == 0, old_term
    assert not (await SearchIndex.open(store)).legacy
    assert await attach_index(store) == 0  # nothing left to do
    await store.close()


class Crash(Exception):
    pass


async def test_a_rebuild_resumes_after_a_crash(store_target: str) -> None:
    store = await legacy_store(store_target)
    calls = 0

    async def crashing_cpu(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Crash
        return func(*args, **kwargs)

    index = await SearchIndex.open(store)
    with pytest.raises(Crash):
        await index.attach(batch_size=3, pause=0, cpu=crashing_cpu)
    assert index.legacy
    await store.close()

    # The next start: still the old version, still both analyses; the six pieces done before
    # the crash are not done again.
    store = await Store.open(store_target)
    assert await index_store.analyzer_version(store) == analysis.LEGACY_VERSION
    index = await SearchIndex.open(store)
    assert index.legacy
    assert await found(store, index, "Ирана") == {IRAN, SANCTIONS}
    assert await index.attach(batch_size=3, pause=0) == TOTAL - 6
    assert not index.legacy
    assert await index_store.analyzer_version(store) == analysis.ANALYZER_VERSION
    left = await index_store.items_to_index(
        store, below=None, limit=100, version=analysis.ANALYZER_VERSION
    )
    assert left == []
    assert await found(store, index, "Ираном") == {IRAN, SANCTIONS}
    await store.close()


async def test_a_rebuild_keeps_what_the_poller_indexed_meanwhile(store_target: str) -> None:
    """A piece the site edits while the rebuild has it in hand: the rebuild read the old text,
    the poller stores the new one and indexes it; the rebuild must not write the old text over
    it."""
    store = await legacy_store(store_target)
    feed = await store.ensure_feed("https://caliber.az/ru/rss", "ru")
    edited = ("Новогодняя ёлка в Гяндже", "На площади установили ёлку.", 30)

    async def cpu_with_an_edit(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        await poll(store, feed.id, entries("ru", (edited,), start=2))  # the same piece: ru-3
        return func(*args, **kwargs)

    index = await SearchIndex.open(store)
    assert await index.attach(batch_size=100, pause=0, cpu=cpu_with_an_edit) == TOTAL
    assert await found(store, index, "Гяндже") == {"Новогодняя ёлка в Гяндже"}
    assert await found(store, index, "Баку") == set()
    await store.close()


async def test_an_analysis_the_code_does_not_know_is_replaced(store_target: str) -> None:
    """A store indexed by another analysis than the legacy one (a newer release that was rolled
    back): its terms cannot be made, so queries use the current analysis while it is redone."""
    store = await legacy_store(store_target)
    await index_store.record_analyzer_version(store, analysis.ANALYZER_VERSION + 5)
    index = await SearchIndex.open(store)
    assert not index.legacy
    assert await index.attach(batch_size=4, pause=0) == TOTAL
    assert await index_store.analyzer_version(store) == analysis.ANALYZER_VERSION
    assert await found(store, index, "Ираном") == {IRAN, SANCTIONS}
    await store.close()


async def test_deleted_items_leave_the_index(store: Store) -> None:
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM feeds WHERE lang = 'az'")
    assert await titles(store, "neft", ["az"]) == []
    dates = "search_docs" if store.dialect == "postgresql" else "search_dates"
    row = await store.fetchone(f"SELECT COUNT(*) FROM {dates}")
    assert row is not None and row[0] == len(PIECES["en"]) + len(PIECES["ru"])


# ---------------------------------------------------------------------- the two back ends agree


# Pieces whose winners are clear for any ranking that weighs title words above text words,
# counts occurrences, favours short pieces and recent ones: every piece has the same length
# (TITLE_WORDS + TEXT_WORDS words, padded with numbers), and each of a query's five winners has
# at least as many occurrences of every query word, in the title and in the text, as the next
# one, and is newer. Below them come weaker matches (fewer title words, and old). bm25 and
# ts_rank differ in how they weigh these (bm25 has IDF and saturates differently; ts_rank
# counts a word's later occurrences less), so no winner here depends on those details: each
# step down the five is a gap of 4-23% in the score on both back ends.
TITLE_WORDS = 6
TEXT_WORDS = 14


def clear_piece(
    label: str, title: Mapping[str, int], text: Mapping[str, int], age: float
) -> tuple[str, str, float]:
    """A piece holding each word of `title` and `text` that many times; `label` ends its title."""
    head = [word for word, n in title.items() for _ in range(n)]
    body = [word for word, n in text.items() for _ in range(n)]
    head += [str(100 + k) for k in range(TITLE_WORDS - 1 - len(head))] + [label]
    body += [str(200 + k) for k in range(TEXT_WORDS - len(body))]
    return " ".join(head), " ".join(body) + ".", age


def _single(
    word: str, label: str, chain: Sequence[tuple[int, int, float]]
) -> list[tuple[str, str, float]]:
    return [
        clear_piece(f"{label}{n}", {word: t}, {word: b}, age)
        for n, (t, b, age) in enumerate(chain, 1)
    ]


CLEAR_PIECES: Mapping[str, Sequence[tuple[str, str, float]]] = {
    "en": (
        # "pipeline": winners p1…p5, then text-only matches p6…p8.
        *_single("pipeline", "p", [(2, 3, 1), (2, 2, 20), (1, 2, 40), (1, 1, 60), (1, 0, 80)]),
        clear_piece("p6", {}, {"pipeline": 1}, 200),
        clear_piece("p7", {}, {"pipeline": 2}, 300),
        clear_piece("p8", {}, {"pipeline": 1}, 400),
        # "tariff corridor": both words in every match; one word alone does not match.
        clear_piece("t1", {"tariff": 1, "corridor": 1}, {"tariff": 2, "corridor": 2}, 1),
        clear_piece("t2", {"tariff": 1, "corridor": 1}, {"tariff": 1, "corridor": 2}, 20),
        clear_piece("t3", {"tariff": 1, "corridor": 1}, {"tariff": 1, "corridor": 1}, 40),
        clear_piece("t4", {"tariff": 1, "corridor": 1}, {"corridor": 1}, 60),
        clear_piece("t5", {"tariff": 1, "corridor": 1}, {}, 80),
        clear_piece("t6", {}, {"tariff": 1, "corridor": 1}, 200),
        clear_piece("t7", {"tariff": 1}, {"tariff": 1, "corridor": 1}, 250),
        clear_piece("t8", {}, {"tariff": 2, "corridor": 1}, 300),
        clear_piece("t9", {"tariff": 1}, {"tariff": 1}, 1),
        clear_piece("t10", {"corridor": 2}, {"corridor": 2}, 1),
        # "Baku" in every language: as many matches in each (bm25's IDF is per term).
        clear_piece("b1", {"Baku": 2}, {"Baku": 2}, 1),
        clear_piece("b4", {"Baku": 1}, {"Baku": 1}, 40),
        clear_piece("b6", {}, {"Baku": 1}, 300),
    ),
    "az": (
        clear_piece("b2", {"Baku": 2}, {"Baku": 1}, 20),
        clear_piece("b5", {"Baku": 1}, {}, 80),
        clear_piece("b7", {}, {"Baku": 1}, 250),
    ),
    "ru": (
        clear_piece("b3", {"Baku": 1}, {"Baku": 1}, 30),
        clear_piece("b8", {}, {"Baku": 1}, 350),
        clear_piece("b9", {}, {"Baku": 2}, 400),
        # "нефть": winners n1…n5, then n6, n7.
        *_single("нефть", "n", [(2, 2, 1), (2, 1, 20), (1, 1, 40), (1, 0, 50), (1, 0, 80)]),
        clear_piece("n6", {}, {"нефть": 3}, 100),
        clear_piece("n7", {}, {"нефть": 1}, 300),
    ),
}

# (query, languages, the five winners in order)
CLEAR_WINNERS = [
    ("pipeline", ["en"], ["p1", "p2", "p3", "p4", "p5"]),
    ("pipelines", ["en", "ru", "az"], ["p1", "p2", "p3", "p4", "p5"]),
    ("tariff corridor", ["en"], ["t1", "t2", "t3", "t4", "t5"]),
    ("Baku", ["en", "ru", "az"], ["b1", "b2", "b3", "b4", "b5"]),
    ("нефти", ["ru"], ["n1", "n2", "n3", "n4", "n5"]),
]


@pytest.fixture
async def clear_stores(both: tuple[Store, Store]) -> tuple[Store, Store]:
    for store in both:
        await store_pieces(store, CLEAR_PIECES)
    return both


@pytest.mark.parametrize(("text", "langs", "winners"), CLEAR_WINNERS)
async def test_clear_winners_are_the_same_on_both(
    clear_stores: tuple[Store, Store], text: str, langs: list[str], winners: list[str]
) -> None:
    for store in clear_stores:
        page = await index_store.search(store, wanted(text, langs), now=NOW, limit=5)
        assert [hit.item.title.split()[-1] for hit in page.hits] == winners, store.dialect
        assert page.has_more  # weaker matches follow


# The parity set: the fixture set and many mixes of a few English words.
PARITY_PIECES: Mapping[str, Sequence[tuple[str, str, float]]] = {
    **PIECES,
    "en": (*PIECES["en"], *vocabulary_pieces(60)),
}


def parity_queries() -> list[tuple[str, tuple[str, ...]]]:
    """Every word of the parity set, alone and with the next word of its piece, in the piece's
    language and in all; the hostile queries; and words found nowhere."""
    everything = ("en", "ru", "az")
    queries: list[tuple[str, tuple[str, ...]]] = []
    for lang, pieces in PARITY_PIECES.items():
        for title, text, _ in pieces:
            found = words(f"{title} {text}")
            for n, word in enumerate(found):
                queries += [(word, (lang,)), (word, everything)]
                if n + 1 < len(found):
                    queries.append((f"{word} {found[n + 1]}", (lang,)))
    queries += [(text, langs) for text in HOSTILE for langs in (("en",), everything)]
    queries += [("zzqx", everything), ("caspian OR sanctions", ("en",)), ("ёлка", ("az",))]
    return list(dict.fromkeys(queries))


async def every_page(store: Store, groups: TermGroups, limit: int) -> tuple[list[int], list[int]]:
    """Every hit of every page in order, and each page's total."""
    ids: list[int] = []
    totals: list[int] = []
    while True:
        page = await index_store.search(store, groups, now=NOW, offset=len(ids), limit=limit)
        ids += [hit.item.id for hit in page.hits]
        totals.append(page.total)
        if not page.has_more:
            return ids, totals


@pytest.mark.parametrize("window", [None, 6], ids=["every match ranked", "window of 6"])
async def test_both_back_ends_find_the_same(
    both: tuple[Store, Store], window: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For every query: the same matches, the same counts, the same pages (sizes, has_more),
    and with a narrow candidate window the same newest matches ranked."""
    if window is not None:
        monkeypatch.setattr(index_store, "CANDIDATE_WINDOW", window)
    for store in both:
        await store_pieces(store, PARITY_PIECES)
    compared = matched = 0
    for text, langs in parity_queries():
        groups = parse_query(text).match(langs)
        if groups is None:
            continue
        (lite, lite_totals), (pg, pg_totals) = [await every_page(s, groups, 7) for s in both]
        assert len(lite) == len(set(lite)), text
        assert sorted(lite) == sorted(pg), (text, langs)
        assert lite_totals == pg_totals, (text, langs)
        compared += 1
        matched += bool(lite)
    assert compared > 450 and matched > 400, (compared, matched)
