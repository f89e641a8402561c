"""Per-chat include/exclude rules: folding, keyword and category matching, the stored reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.services.filters import check, decide, fold, matches_keyword, parse_reason
from storage.models import Chat, ChatSettings, ChatType
from tests.factories import item


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("İLHAM ƏLİYEV", "ilham eliyev"),  # Azerbaijani capital İ and Ə
        ("Bakı, Qarabağ!", "baki qarabag"),  # dotless ı, ğ, punctuation
        ("IRAQ", "iraq"),  # plain I folds to i, whatever the language
        ("Ёлка и ёж", "елка и еж"),  # ё reads as е
        ("Şuşa – Gəncə", "susa gence"),
        ("Straße", "strasse"),
        ("  spaced\n\tout  ", "spaced out"),
    ],
)
def test_fold_ignores_case_and_diacritics_as_readers_do(text: str, folded: str) -> None:
    assert fold(text) == folded


@given(st.text())
def test_fold_is_idempotent(text: str) -> None:
    assert fold(fold(text)) == fold(text)


@pytest.mark.parametrize(
    ("keyword", "text", "expected"),
    [
        ("Armenia", "Armenian forces moved", True),  # a keyword matches the start of words
        ("armeni", "ARMENIA and Azerbaijan", True),
        ("war", "an award ceremony", False),  # never inside a word
        ("war", "Warsaw summit", True),  # prefix: documented
        ('"war"', "Warsaw summit", False),  # quotes: whole words only
        ('"war"', "the war, again", True),
        ("«война»", "Война и мир", True),  # any quote style
        ("Qarabag", "Qarabağda yeni layihə", True),  # diacritics either way
        ("qarabağ", "QARABAG", True),
        ("ёлка", "Новогодняя елка", True),
        ("south caucasus", "In the South  Caucasus, today", True),  # phrases, spacing folded
        ("south caucasus", "South of the Caucasus", False),
        ("   ", "anything", False),  # an empty rule matches nothing
    ],
)
def test_keywords(keyword: str, text: str, expected: bool) -> None:
    assert matches_keyword(fold(text), keyword) is expected


def test_no_rules_posts_everything() -> None:
    assert check(item(1), ChatSettings()) is None


def test_exclude_keyword_names_the_rule() -> None:
    piece = item(1, title="Armenia and the war", summary="")
    settings = ChatSettings(exclude_keywords=("peace", "War"))
    assert check(piece, settings) == "exclude_keyword:War"
    assert parse_reason("exclude_keyword:War") == ("exclude_keyword", "War")


def test_keywords_look_at_the_summary_too() -> None:
    piece = item(1, title="Weekly review", summary="Talks on Zəngəzur corridor")
    assert check(piece, ChatSettings(exclude_keywords=("zengezur",))) is not None


def test_exclude_category_is_case_and_accent_insensitive_and_whole() -> None:
    piece = item(1, categories=("Sport", "Müdafiə"))
    assert check(piece, ChatSettings(exclude_categories=("sport",))) == "exclude_category:sport"
    assert check(piece, ChatSettings(exclude_categories=("mudafie",))) == (
        "exclude_category:mudafie"
    )
    assert check(piece, ChatSettings(exclude_categories=("Spo",))) is None


def test_include_rules_let_through_only_matching_pieces() -> None:
    politics = item(1, title="Elections", categories=("Politics",))
    energy = item(2, title="Gas exports to Europe", categories=("Economy",))
    other = item(3, title="Football", categories=("Sport",))
    settings = ChatSettings(include_categories=("politics",), include_keywords=("gas",))
    assert check(politics, settings) is None  # by category
    assert check(energy, settings) is None  # by keyword: include rules add up
    assert check(other, settings) == "not_included"


def test_exclude_wins_over_include() -> None:
    piece = item(1, title="Gas and war", categories=("Politics",))
    settings = ChatSettings(include_categories=("Politics",), exclude_keywords=("war",))
    assert check(piece, settings) == "exclude_keyword:war"


def test_decide_uses_the_chats_settings() -> None:
    chat = Chat(
        id=-100,
        type=ChatType.CHANNEL,
        title="c",
        username=None,
        lang="en",
        languages=("en",),
        active=True,
        subscribed=True,
        paused=False,
        settings=ChatSettings(exclude_categories=("Sport",)),
    )
    assert decide(item(1, categories=("sport",)), chat) == "exclude_category:Sport"
    assert decide(item(2, categories=("Politics",)), chat) is None
