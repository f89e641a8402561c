"""Followed topics in the store, on SQLite and PostgreSQL: following, the inverted index, and
the fan-out that queues a piece for the chats following a topic it matches."""

from __future__ import annotations

import pytest

from storage import follows
from storage.follows import TooMany, TopicTerms
from storage.models import ChatSettings, ChatType, FanOut
from storage.store import Store
from tests.factories import new_item

NOW = 1_767_225_600.0

# Topics as the analysis would make them (bot.services.topics), written out so these tests
# depend on the store alone: each word's tagged terms.
IRAN = TopicTerms("iran", (("en0iran", "ru0иран"),))
IRAN_OIL = TopicTerms("iran oil", (("en0iran", "ru0иран"), ("en0oil", "ru0нефт")))
GAS = TopicTerms("gas", (("en0gas", "ru0газ"),))


@pytest.fixture
async def store(store_target: str):  # type: ignore[no-untyped-def]
    s = await Store.open(store_target)
    yield s
    await s.close()


async def _chat(
    store: Store, chat_id: int, *, subscribed: bool = False, lang: str = "en",
    kind: ChatType = ChatType.PRIVATE,
):  # type: ignore[no-untyped-def]  # fmt: skip
    return await store.upsert_chat(
        chat_id, kind, title=None, username=None, default_lang=lang, now=NOW,
        subscribed=subscribed,
    )  # fmt: skip


async def _follow(store: Store, chat_id: int, topic: TopicTerms, *, any_lang: bool = False):  # type: ignore[no-untyped-def]
    follow, _ = await follows.add(
        store, chat_id, topic.words, topic, any_lang=any_lang, analyzer=1, limit=20, now=NOW
    )
    return follow


async def _feed(store: Store, lang: str = "en") -> int:
    feed = await store.ensure_feed(f"https://caliber.az/{lang}/rss", lang)
    # The first poll marks the backlog seen; what comes after is new and queued.
    await store.store_poll(
        feed.id, [], etag=None, last_modified=None, now=NOW, next_poll_at=NOW + 60,
        max_age=86400.0, backfill=0,
    )  # fmt: skip
    return feed.id


async def _matches(store: Store, offered: dict[str, tuple[str, ...]]) -> dict[str, tuple[int, ...]]:
    """What the poller hands the store: each piece's topics, read from the index."""
    index = await follows.postings(store, {t for terms in offered.values() for t in terms})
    return follows.match(offered, index)


async def _poll(store: Store, feed_id: int, pieces: dict[int, tuple[str, ...]], **fan_out):  # type: ignore[no-untyped-def]
    """Store new pieces (number: the terms it offers) and queue them as the poller would."""
    entries = [new_item(n, published_at=NOW) for n in pieces]
    topics = await _matches(store, {f"guid-{n}": t for n, t in pieces.items()})
    return await store.store_poll(
        feed_id, entries, etag=None, last_modified=None, now=NOW + 1, next_poll_at=NOW + 60,
        max_age=86400.0, backfill=0, fan_out=FanOut(topics=topics, **fan_out),
    )  # fmt: skip


async def _rows(store: Store) -> dict[tuple[str, int], tuple[str, str | None]]:
    """(piece identity, chat) → (state, reason) of every post row."""
    rows = await store.fetchall(
        "SELECT i.identity, d.chat_id, d.state, d.last_error FROM deliveries d "
        "JOIN items i ON i.id = d.item_id WHERE d.kind = 'post'"
    )
    return {(str(r[0]), int(r[1])): (str(r[2]), r[3]) for r in rows}


async def test_a_follower_gets_only_the_pieces_its_topic_matches(store: Store) -> None:
    await _chat(store, 1)
    await _follow(store, 1, IRAN_OIL)
    feed = await _feed(store)
    outcome = await _poll(store, feed, {
        1: ("en0iran", "en0oil", "en0price"),  # both words
        2: ("en0iran", "en0talk"),  # one word of two: no
        3: ("en0oil",),
    })  # fmt: skip
    assert outcome.queued == 1
    assert await _rows(store) == {("guid-1", 1): ("pending", None)}


async def test_a_subscribed_follower_gets_each_piece_once(store: Store) -> None:
    await _chat(store, 1, subscribed=True)
    await _follow(store, 1, IRAN)
    await _follow(store, 1, IRAN_OIL)  # two topics matching the same piece
    feed = await _feed(store)
    await _poll(store, feed, {1: ("en0iran", "en0oil"), 2: ("en0weather",)})
    assert await _rows(store) == {
        ("guid-1", 1): ("pending", None),
        ("guid-2", 1): ("pending", None),
    }


async def test_the_follow_takes_the_chats_languages_unless_it_takes_every_one(
    store: Store,
) -> None:
    await _chat(store, 1, lang="en")
    await _chat(store, 2, lang="en")
    await _follow(store, 1, IRAN)
    await _follow(store, 2, IRAN, any_lang=True)
    feed = await _feed(store, "ru")
    await _poll(store, feed, {1: ("ru0иран",)})
    assert await _rows(store) == {("guid-1", 2): ("pending", None)}


async def test_paused_inactive_and_filtered_followers(store: Store) -> None:
    for chat_id in (1, 2, 3, 4):
        await _chat(store, chat_id, kind=ChatType.CHANNEL)
        await _follow(store, chat_id, IRAN)
    await store.update_chat(1, NOW, paused=True)
    await store.deactivate_chat(2, "kicked", NOW)
    # Chat 5 takes everything of one category: its "not included" verdict does not hold
    # against a piece it follows; chat 3's exclude rule does.
    await _chat(store, 5, subscribed=True, kind=ChatType.CHANNEL)
    await store.update_chat(5, NOW, settings=ChatSettings(include_categories=("Sport",)))
    await _follow(store, 5, IRAN)
    feed = await _feed(store)
    await _poll(
        store, feed, {1: ("en0iran",), 2: ("en0gas",)},
        skips={"guid-1": {3: "exclude_keyword:iran", 5: "not_included"},
               "guid-2": {5: "not_included"}},
    )  # fmt: skip
    assert await _rows(store) == {
        ("guid-1", 1): ("skipped", "paused"),
        ("guid-1", 3): ("skipped", "exclude_keyword:iran"),
        ("guid-1", 4): ("pending", None),
        ("guid-1", 5): ("pending", None),
        ("guid-2", 5): ("skipped", "not_included"),
    }


async def test_without_terms_the_fan_out_is_the_subscribers(store: Store) -> None:
    await _chat(store, 1, subscribed=True)
    await _chat(store, 2)
    await _follow(store, 2, IRAN)
    feed = await _feed(store)
    await _poll(store, feed, {1: ()})
    assert await _rows(store) == {("guid-1", 1): ("pending", None)}


async def test_topics_are_shared_and_leave_with_their_last_follower(store: Store) -> None:
    await _chat(store, 1)
    await _chat(store, 2)
    one = await _follow(store, 1, IRAN)
    two = await _follow(store, 2, IRAN)
    assert one.topic_id == two.topic_id
    count = await store.fetchall("SELECT COUNT(*) FROM topic_terms")
    assert int(count[0][0]) == 2  # the terms are stored once for both chats
    assert await follows.remove(store, 1, two.id) is None  # not chat 1's follow
    assert await follows.remove(store, 1, one.id) == one
    assert await follows.version(store) is not None
    await follows.remove(store, 2, two.id)
    assert await follows.version(store) is None
    count = await store.fetchall("SELECT COUNT(*) FROM topic_terms")
    assert int(count[0][0]) == 0


async def test_following_twice_and_the_limit(store: Store) -> None:
    await _chat(store, 1)
    first, added = await follows.add(
        store, 1, "Iran", IRAN, any_lang=False, analyzer=1, limit=2, now=NOW
    )
    again, added_again = await follows.add(
        store, 1, "IRAN", IRAN, any_lang=True, analyzer=1, limit=2, now=NOW
    )
    assert added and not added_again and again == first
    await follows.add(store, 1, "gas", GAS, any_lang=False, analyzer=1, limit=2, now=NOW)
    with pytest.raises(TooMany):
        await follows.add(
            store, 1, "iran oil", IRAN_OIL, any_lang=False, analyzer=1, limit=2, now=NOW
        )
    assert [f.text for f in await follows.of_chat(store, 1)] == ["Iran", "gas"]
    changed = await follows.set_any_lang(store, 1, first.id, True)
    assert changed is not None and changed.any_lang
    assert await follows.set_any_lang(store, 2, first.id, True) is None


async def test_a_migrated_group_keeps_its_topics(store: Store) -> None:
    await _chat(store, -100, kind=ChatType.GROUP)
    await _follow(store, -100, IRAN)
    await store.migrate_chat(-100, -1001, NOW)
    assert [f.text for f in await follows.of_chat(store, -1001)] == ["iran"]
    # Into a chat the bot already knew: the topics it lacks move, the rest go.
    await _chat(store, -200, kind=ChatType.GROUP)
    await _follow(store, -200, IRAN)
    await _follow(store, -200, GAS)
    await _chat(store, -2001, kind=ChatType.SUPERGROUP)
    await _follow(store, -2001, IRAN)
    await store.migrate_chat(-200, -2001, NOW)
    assert sorted(f.text for f in await follows.of_chat(store, -2001)) == ["gas", "iran"]


async def test_matching_reads_the_index_and_follows_reanalysis(store: Store) -> None:
    await _chat(store, 1)
    follow = await _follow(store, 1, IRAN)
    await _follow(store, 1, IRAN_OIL)
    feed = await _feed(store)
    await _poll(store, feed, {1: ()})  # stored, queued for nobody
    item_id = int((await store.fetchall("SELECT id FROM items"))[0][0])
    hits = await _matches(store, {"a": ("en0iran", "en0talk"), "b": ("ru0нефт", "ru0иран")})
    both = sorted([follow.topic_id, follow.topic_id + 1])
    assert hits == {"a": (follow.topic_id,), "b": tuple(both)}
    assert await follows.followers(store, {item_id: both}) == {(item_id, 1)}
    assert await follows.stale_topics(store, analyzer=2) == [
        (follow.topic_id, "iran"),
        (follow.topic_id + 1, "iran oil"),
    ]  # the text a follower typed
    await follows.reanalyse(store, follow.topic_id, TopicTerms("iran", (("en0irn",),)), 2)
    assert [t for t, _ in await follows.stale_topics(store, analyzer=2)] == [follow.topic_id + 1]
    assert await _matches(store, {"a": ("en0iran",)}) == {}
    assert await _matches(store, {"a": ("en0irn",)}) == {"a": (follow.topic_id,)}


async def test_a_follower_with_rules_is_asked_for_its_verdicts(store: Store) -> None:
    await _chat(store, 1, kind=ChatType.CHANNEL)  # follows only, with an exclude rule
    await store.update_chat(1, NOW, settings=ChatSettings(exclude_keywords=("war",)))
    await _chat(store, 2, kind=ChatType.CHANNEL)  # rules, but neither subscribed nor following
    await store.update_chat(2, NOW, settings=ChatSettings(exclude_keywords=("war",)))
    assert [c.id for c in await store.filtering_chats("ru")] == []
    await _follow(store, 1, IRAN)
    assert [c.id for c in await store.filtering_chats("ru")] == [1]


async def test_reconnecting_a_channel_that_takes_only_its_topics_keeps_it_so(store: Store) -> None:
    await _chat(store, -1001, kind=ChatType.CHANNEL)
    await _follow(store, -1001, IRAN)
    again = await store.upsert_chat(
        -1001, ChatType.CHANNEL, title="c", username=None, default_lang="en", now=NOW,
        subscribed=True,
    )  # fmt: skip
    assert not again.subscribed  # the rights changed; what it takes did not
    await _chat(store, -1002, kind=ChatType.CHANNEL)
    plain = await store.upsert_chat(
        -1002, ChatType.CHANNEL, title="c", username=None, default_lang="en", now=NOW,
        subscribed=True,
    )  # fmt: skip
    assert plain.subscribed


async def test_topic_and_follow_ids_are_never_reused(store: Store) -> None:
    await _chat(store, 1)
    first = await _follow(store, 1, IRAN)
    await follows.remove(store, 1, first.id)  # the highest ids, dropped
    second = await _follow(store, 1, GAS)
    assert second.id > first.id and second.topic_id > first.topic_id
