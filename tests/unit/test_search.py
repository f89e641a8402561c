"""Search: text folding and word forms, safe queries, snippets, and ranking on a real SQLite file.

The fixture set holds pieces in English, Russian and Azerbaijani stored through the real store
(store_poll, then indexing as the poller does), so what is tested is what /search and inline mode
run.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.services import search as search_service
from bot.services.search import (
    attach_index,
    index_items,
    parse_query,
    snippet,
)
from bot.text import analysis
from bot.text.analysis import term, words
from storage import search as index_store
from storage.models import NewItem
from storage.store import Store
from tests.factories import new_item

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


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_path)
    await attach_index(s)
    await store_pieces(s, PIECES)
    yield s
    await s.close()


async def titles(store: Store, text: str, langs: Sequence[str], **kwargs: int) -> list[str]:
    expression = parse_query(text).match(langs)
    if expression is None:
        return []
    page = await index_store.search(store, expression, now=NOW, **kwargs)
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
        ("санкций", "Санкции", "ru"),
        ("иранская", "иранский", "ru"),
        ("sanctions", "sanction", "en"),
        ("Café", "cafe", "en"),
        ("EXPORTS", "export", "en"),
    ],
)
def test_word_forms_fold_to_one_term(a: str, b: str, lang: str) -> None:
    assert [term(w, lang) for w in words(a)] == [term(w, lang) for w in words(b)]


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

# A MATCH expression built from a query: quoted terms joined by AND/OR, in parentheses.
_SAFE_EXPRESSION = re.compile(
    r'^(?:"[0-9a-z]+0[^\W_]+"|\("[0-9a-z]+0[^\W_]+"(?: OR "[0-9a-z]+0[^\W_]+")+\))'
    r'(?: AND (?:"[0-9a-z]+0[^\W_]+"|\("[0-9a-z]+0[^\W_]+"(?: OR "[0-9a-z]+0[^\W_]+")+\)))*$'
)


@pytest.mark.parametrize("text", HOSTILE)
def test_user_text_never_reaches_match_raw(text: str) -> None:
    query = parse_query(text)
    assert len(query.text) <= search_service.MAX_QUERY_CHARS
    assert len(query.words) <= search_service.MAX_QUERY_WORDS
    for langs in (["en"], ["en", "ru", "az"]):
        expression = query.match(langs)
        assert (expression is None) == query.empty
        if expression is not None:
            assert _SAFE_EXPRESSION.match(expression), expression


def test_queries_keep_words_only() -> None:
    assert parse_query("oil AND gas").words == ("oil", "and", "gas")
    assert parse_query("🛢️🔥").empty
    assert parse_query("NEAR(oil*, ^gas)").words == ("near", "oil", "gas")
    assert parse_query("x" * 5000).text.endswith("…")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_a_valid_fts5_query(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(title, body, tokenize = 'unicode61 remove_diacritics 2')"
    )
    conn.execute("INSERT INTO t VALUES ('en0oil', 'en0gas')")
    expression = parse_query(text).match(["en", "ru", "az"])
    if expression is not None:
        conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()
    conn.close()


# ---------------------------------------------------------------------- snippets


def test_snippet_marks_every_form_of_the_words() -> None:
    query = parse_query("санкция Иран")
    fragments = snippet(
        "США объявили новый пакет санкций против Ирана.", "ru", query.terms_for("ru")
    )
    assert [f.text for f in fragments if f.matched] == ["санкций", "Ирана"]
    assert "".join(f.text for f in fragments) == "США объявили новый пакет санкций против Ирана."


def test_snippet_is_a_window_around_the_first_match() -> None:
    text = " ".join(["filler"] * 100) + " the sanctions bite " + " ".join(["more"] * 100)
    fragments = snippet(text, "en", parse_query("sanction").terms_for("en"), width=120)
    joined = "".join(f.text for f in fragments)
    assert joined.startswith("…") and joined.endswith("…")
    assert "sanctions" in joined and len(joined) <= 125
    assert [f.text for f in fragments if f.matched] == ["sanctions"]


# ---------------------------------------------------------------------- relevance on SQLite


async def test_russian_word_forms(store: Store) -> None:
    found = await titles(store, "Ирана", ["ru"])
    assert set(found) == {"Санкции против Ирана ужесточены", "Иран и Россия: учения на Каспии"}
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


async def test_title_matches_rank_above_text_matches(db_path: Path) -> None:
    store = await Store.open(db_path)
    await attach_index(store)
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


async def test_recent_pieces_rank_higher_at_equal_relevance(db_path: Path) -> None:
    store = await Store.open(db_path)
    await attach_index(store)
    same = "Gas pipeline talks resume"
    await store_pieces(store, {"en": ((same, "Old news.", 400), (same, "New news.", 1))})
    expression = parse_query("pipeline").match(["en"])
    assert expression is not None
    page = await index_store.search(store, expression, now=NOW)
    assert [hit.item.summary for hit in page.hits] == ["New news.", "Old news."]
    assert page.hits[0].score < page.hits[1].score  # lower is better, as bm25
    await store.close()


async def test_paging_covers_every_match_once(db_path: Path) -> None:
    store = await Store.open(db_path)
    await attach_index(store)
    many = tuple((f"Oil report {n}", f"Oil and gas, part {n}.", n) for n in range(12))
    await store_pieces(store, {"en": many})
    expression = parse_query("oil").match(["en"])
    assert expression is not None
    seen: list[int] = []
    offset = 0
    while True:
        page = await index_store.search(store, expression, now=NOW, offset=offset, limit=5)
        assert page.total == 12
        seen += [hit.item.id for hit in page.hits]
        if not page.has_more:
            break
        offset += 5
    assert len(seen) == len(set(seen)) == 12
    assert offset == 10
    await store.close()


@pytest.mark.parametrize("refreshed", [False, True], ids=["no floor", "recency floor"])
async def test_ranking_matches_scoring_every_match(db_path: Path, refreshed: bool) -> None:
    """Same order as boosting every match by its date and sorting, with the recency floor
    skipping old pieces' dates or without it."""
    store = await Store.open(db_path)
    await attach_index(store)
    vocabulary = ["oil", "gas", "pipeline", "sanctions", "iran", "baku", "caspian", "energy"]
    pieces = []
    for n in range(300):
        title = " ".join(vocabulary[(n * k) % len(vocabulary)] for k in (1, 3, 7))
        text = " ".join(vocabulary[(n + k * k) % len(vocabulary)] for k in range(n % 9 + 1))
        pieces.append((title, text, (n * 37) % 900))
    await store_pieces(store, {"en": tuple(pieces)})
    if refreshed:
        floor = await index_store.refresh_recency(store, NOW)
        assert 200 < floor < 300  # ids rise with dates here: about a tenth are recent
    for text in ("oil", "gas pipeline", "caspian", "trade corridor energy"):
        expression = parse_query(text).match(["en"])
        assert expression is not None
        rows = await store.fetchall(
            f"""
            WITH c AS MATERIALIZED (
                SELECT rowid AS id, bm25(search_fts, ?, ?) AS b FROM search_fts
                WHERE search_fts MATCH ?)
            SELECT c.id FROM c JOIN search_dates d ON d.id = c.id
            ORDER BY c.b * {index_store.BOOST_SQL}, c.id DESC LIMIT 30
            """.replace(":boost", "?").replace(":now", "?").replace(":recency", "?"),
            (
                index_store.TITLE_WEIGHT, index_store.BODY_WEIGHT, expression,
                index_store.RECENCY_BOOST, NOW, index_store.RECENCY_WINDOW,
            ),
        )  # fmt: skip
        expected = [int(r[0]) for r in rows]
        got: list[int] = []
        for offset in range(0, 30, 5):
            page = await index_store.search(store, expression, now=NOW, offset=offset)
            got += [hit.item.id for hit in page.hits]
        assert got == expected[: len(got)] and len(got) == min(30, len(expected)), text
    await store.close()


async def test_recency_floor_follows_new_and_redated_pieces(db_path: Path) -> None:
    store = await Store.open(db_path)
    await attach_index(store)
    same = "Gas pipeline talks resume"
    await store_pieces(store, {"en": tuple((same, f"Old{n}.", 400 + n) for n in range(5))})
    assert await index_store.refresh_recency(store, NOW) == 6  # none recent: above every id
    expression = parse_query("pipeline").match(["en"])
    assert expression is not None

    async def first() -> str:
        page = await index_store.search(store, expression, now=NOW)
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
    page = await index_store.search(store, expression, now=NOW)
    assert page.hits[0].item.summary == "Old4."
    await store.close()


async def test_broad_queries_rank_the_newest_window(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_store, "CANDIDATE_WINDOW", 4)
    store = await Store.open(db_path)
    await attach_index(store)
    await store_pieces(store, {"en": tuple((f"Oil {n}", "Oil.", 10 - n) for n in range(10))})
    expression = parse_query("oil").match(["en"])
    assert expression is not None
    page = await index_store.search(store, expression, now=NOW, limit=10)
    assert page.total == 10  # every match is counted
    assert sorted(hit.item.title for hit in page.hits) == ["Oil 6", "Oil 7", "Oil 8", "Oil 9"]
    await store.close()


# ---------------------------------------------------------------------- keeping the index


async def test_index_follows_edits_and_backfills(db_path: Path) -> None:
    store = await Store.open(db_path)
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


async def test_new_analysis_rebuilds_the_index(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(db_path)
    await attach_index(store)
    await store_pieces(store, PIECES)
    monkeypatch.setattr(analysis, "ANALYZER_VERSION", analysis.ANALYZER_VERSION + 1)
    assert await attach_index(store) == sum(len(p) for p in PIECES.values())
    assert await titles(store, "Ирана", ["ru"])
    await store.close()


async def test_deleted_items_leave_the_index(store: Store) -> None:
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM feeds WHERE lang = 'az'")
    assert await titles(store, "neft", ["az"]) == []
    row = await store.fetchone("SELECT COUNT(*) FROM search_dates")
    assert row is not None and row[0] == len(PIECES["en"]) + len(PIECES["ru"])
