"""The topics service on a real store (both back ends): what a topic is, refusals, the panel's
old include keywords becoming topics, and re-analysis when the analysis changes."""

from __future__ import annotations

import pytest

from bot.services import topics as service
from bot.services.search import analyse
from bot.services.topics import MAX_TOPICS, Refusal, Topics, piece_terms, topic_terms
from bot.text import analysis
from storage import follows
from storage.models import ChatSettings, ChatType
from storage.store import Store
from tests.factories import new_item
from tests.fakes.clock import ManualClock

NOW = 1_767_225_600.0


@pytest.fixture
async def store(store_target: str):  # type: ignore[no-untyped-def]
    s = await Store.open(store_target)
    yield s
    await s.close()


async def _run_inline(fn, *args):  # type: ignore[no-untyped-def]
    return fn(*args)


def _topics(store: Store) -> Topics:
    return Topics(store, ManualClock(NOW), _run_inline)


def test_a_topic_is_its_words_in_any_order_and_spelling() -> None:
    one = topic_terms("Iran  OIL")
    two = topic_terms("«oil», iran!")
    assert one is not None and one == two
    assert one.words == "iran oil"
    # Each word stands for its terms in every language the bot speaks.
    assert all({t.split("0", 1)[0] for t in word} == {"en", "ru", "az"} for word in one.terms)
    assert topic_terms("((( *** ---") is None
    assert topic_terms("İĞDIR").words == "igdir"  # type: ignore[union-attr]
    many = topic_terms(" ".join(f"w{n}" for n in range(30)))
    assert many is not None and len(many.terms) == service.MAX_TOPIC_WORDS


def test_a_piece_offers_the_terms_of_its_title_summary_and_categories() -> None:
    entry = new_item(1, title="Sanctions on Iran", summary="Oil prices.", categories=("Energy",))
    terms = set(piece_terms([entry], "en")["guid-1"])
    assert {"en0sanction", "en0iran", "en0oil", "en0energi"} <= terms
    iran_oil = topic_terms("iran oil")
    assert iran_oil is not None
    assert all(set(word) & terms for word in iran_oil.terms)  # the piece matches the topic


async def test_refusals(store: Store) -> None:
    await store.upsert_chat(1, ChatType.PRIVATE, title=None, username=None, default_lang="en",
                            now=NOW)  # fmt: skip
    topics = _topics(store)
    assert (await topics.follow(1, "x" * 101)).refusal is Refusal.TOO_LONG
    assert (await topics.follow(1, "!!! ???")).refusal is Refusal.NO_WORDS
    assert (await topics.follow(1, "  «" + "x" * 100 + "»  ")).follow is not None  # quotes go
    for n in range(MAX_TOPICS - 1):
        assert (await topics.follow(1, f"topic {n}")).added
    assert (await topics.follow(1, "one more")).refusal is Refusal.TOO_MANY
    assert not (await topics.follow(1, "TOPIC 3")).added  # already followed: no refusal


async def test_include_keywords_become_topics(store: Store) -> None:
    for chat_id in (-1001, -1002):
        await store.upsert_chat(chat_id, ChatType.CHANNEL, title=None, username=None,
                                default_lang="en", now=NOW, subscribed=True)  # fmt: skip
    await store.update_chat(-1001, NOW, settings=ChatSettings(
        include_keywords=("Iran", '"war"'), exclude_keywords=("sport",)))  # fmt: skip
    await store.update_chat(-1002, NOW, settings=ChatSettings(
        include_keywords=("oil",), include_categories=("Energy",)))  # fmt: skip
    topics = _topics(store)
    assert await topics.adopt_include_keywords() == 3
    only = await store.get_chat(-1001)
    assert only is not None and not only.subscribed  # its topics only, as before
    assert only.settings.include_keywords == () and only.settings.exclude_keywords == ("sport",)
    listed = await follows.of_chat(store, -1001)
    assert [(f.text, f.any_lang) for f in listed] == [("Iran", False), ("war", False)]
    both = await store.get_chat(-1002)
    assert both is not None and both.subscribed  # keeps its category, plus the topic
    assert both.settings.include_categories == ("Energy",)
    assert await topics.adopt_include_keywords() == 0  # once


async def test_include_keywords_of_a_chat_taking_no_posts_wait(store: Store) -> None:
    await store.upsert_chat(-1003, ChatType.CHANNEL, title=None, username=None,
                            default_lang="en", now=NOW, subscribed=False)  # fmt: skip
    await store.update_chat(-1003, NOW, settings=ChatSettings(include_keywords=("Iran",)))
    topics = _topics(store)
    assert await topics.adopt_include_keywords() == 0  # it would start taking pieces
    waiting = await store.get_chat(-1003)
    assert waiting is not None and waiting.settings.include_keywords == ("Iran",)
    await store.update_chat(-1003, NOW, subscribed=True)  # Resume; the next start converts
    assert await topics.adopt_include_keywords() == 1


async def test_a_new_analysis_redoes_the_topics_terms(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.upsert_chat(1, ChatType.PRIVATE, title=None, username=None, default_lang="en",
                            now=NOW)  # fmt: skip
    topics = _topics(store)
    await topics.follow(1, "sanctions")
    assert await topics.refresh() == 0
    monkeypatch.setattr(analysis, "ANALYZER_VERSION", analysis.ANALYZER_VERSION + 1)
    monkeypatch.setattr(analysis, "term_set", lambda word, lang: (f"{word}x",))
    assert await topics.refresh() == 1
    rows = await store.fetchall("SELECT term FROM topic_terms ORDER BY term")
    assert [r[0] for r in rows] == ["az0sanctionsx", "en0sanctionsx", "ru0sanctionsx"]
    assert await topics.refresh() == 0


async def test_matching_follows_every_change_of_topics(store: Store) -> None:
    for chat_id in (1, 2):
        await store.upsert_chat(chat_id, ChatType.PRIVATE, title=None, username=None,
                                default_lang="en", now=NOW)  # fmt: skip
    topics = _topics(store)
    texts = analyse([new_item(1, title="Oil and gas", summary="Iran sells gas.")], "en")
    assert await topics.matching(texts, "en") == {}  # nobody follows anything
    gas = (await topics.follow(1, "gas")).follow
    assert gas is not None
    assert await topics.matching(texts, "en") == {"guid-1": (gas.topic_id,)}
    iran = (await topics.follow(2, "Iran sells")).follow  # the vocabulary is read again
    assert iran is not None
    assert await topics.matching(texts, "en") == {"guid-1": (gas.topic_id, iran.topic_id)}
    await topics.unfollow(1, gas.id)
    assert await topics.matching(texts, "en") == {"guid-1": (iran.topic_id,)}
    assert await topics.matching(analyse([new_item(2, title="Weather")], "en"), "en") == {}
    assert await topics.matching(analyse([new_item(3, title="Iran")], "en"), "en") == {}
