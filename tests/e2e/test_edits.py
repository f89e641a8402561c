"""Site edits: an edited piece is never posted again; with EDIT_ON_UPDATE the messages already
sent for it are edited (text or caption), within EDIT_WINDOW, once each, as outbox rows the
publisher sends like posts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from telegram import Bot
from telegram.constants import ParseMode
from telegram.ext import ExtBot

from bot.delivery.publisher import Publisher
from bot.delivery.ratelimit import BotApiRequest, RateLimits, TelegramRateLimiter
from bot.delivery.sender import Sender
from bot.pipeline.edits import Editor
from bot.text.i18n import Translator
from bot.text.render import Renderer
from storage.articles import Article, get_article, save_article
from storage.models import ChatSettings, ChatType, Item, NewItem, PageContent, PostStyle
from storage.store import Store
from tests import factories
from tests.data.pages import caliber_page, corpus_article
from tests.e2e.test_article import OLD, PUBLISHED, summary_of
from tests.factories import new_item
from tests.fakes.botapi import FakeBotApi
from tests.fakes.clock import ManualClock
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import TOKEN, advance_until, bot_env, running_bot, wait_for

CHANNEL = -1001000000001
PHOTO_GROUP = -1001000000002
RENDERER = Renderer(Translator(), "Asia/Baku", 600)
IMAGE = "https://cdn.caliber.az/drills.jpg"

# ------------------------------------------------------------------ the editor on its own


@dataclass
class World:
    store: Store
    bot: Bot  # for the test's own setup; the publisher has its own, behind the rate limiter
    clock: ManualClock
    feed_id: int
    sent: dict[int, int]  # chat id -> message id of the post
    publisher: Publisher

    async def answered(self, rows: int) -> None:
        """Let the running publisher answer `rows` more outbox rows (on virtual time)."""
        stats = self.publisher.stats
        target = sum(stats.values()) + rows
        await advance_until(
            self.clock, f"{rows} row(s) answered",
            lambda: sum(stats.values()) >= target and self.publisher.in_flight == 0, within=120,
        )  # fmt: skip


@pytest.fixture
async def world(api: FakeBotApi, db_path: Path) -> AsyncIterator[World]:
    """A piece posted to a channel (text) and a photo-style group (photo)."""
    clock = ManualClock()
    store = await Store.open(db_path)
    feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
    for chat_id, style in ((CHANNEL, PostStyle.PREVIEW), (PHOTO_GROUP, PostStyle.PHOTO)):
        api.add_chat(chat_id, "channel" if chat_id == CHANNEL else "supergroup")
        kind = ChatType.CHANNEL if chat_id == CHANNEL else ChatType.SUPERGROUP
        await store.upsert_chat(chat_id, kind, title=None, username=None, default_lang="en",
                                now=clock.now(), subscribed=True)  # fmt: skip
        await store.update_chat(chat_id, clock.now(), settings=ChatSettings(style=style))
    await _poll(store, feed.id, [], clock)  # the first poll: nothing is backlog
    await _poll(store, feed.id, [_piece()], clock)
    limits = RateLimits(clock)
    limited: ExtBot[None] = ExtBot(
        TOKEN, base_url=api.base_url, request=BotApiRequest(),
        rate_limiter=TelegramRateLimiter(limits),
    )  # fmt: skip
    bot = Bot(TOKEN, base_url=api.base_url)
    async with bot, limited:
        sent = {}
        for chat_id in (CHANNEL, PHOTO_GROUP):
            item = (await store.find_items_by_link("https://caliber.az/en/post/1"))[0]
            chat = await store.get_chat(chat_id)
            assert chat is not None
            post = RENDERER.post(item, chat.settings)
            if post.photo_url:
                message = await bot.send_photo(chat_id, post.photo_url, caption=post.html,
                                               parse_mode=ParseMode.HTML)  # fmt: skip
            else:
                message = await bot.send_message(chat_id, post.html, parse_mode=ParseMode.HTML)
            delivery = await store.get_delivery(item.id, chat_id)
            assert delivery is not None
            await store.record_outcomes(
                [factories.sent(delivery.id, message.message_id, clock.now())]
            )
            sent[chat_id] = message.message_id
        publisher = Publisher(store, Sender(limited), RENDERER, limits, clock)
        runner = asyncio.create_task(publisher.run())
        try:
            yield World(store, bot, clock, feed.id, sent, publisher)
        finally:
            stopping = asyncio.create_task(publisher.stop(5.0))
            # Virtual time goes on while the sends in flight finish (stop's bound is real).
            await advance_until(clock, "the publisher stopped", stopping.done, within=600, step=0.1)
            await runner
    await store.close()


def _piece(**fields: Any) -> NewItem:
    values: dict[str, Any] = {
        "title": "Drills in the Caspian",
        "summary": "The drills began. They ended.",
        "image_url": IMAGE,
    }
    values.update(fields)
    return new_item(1, **values)


async def _poll(store: Store, feed_id: int, items: list[NewItem], clock: ManualClock) -> Any:
    now = clock.now()
    return await store.store_poll(
        feed_id, items, etag=None, last_modified=None, now=now, next_poll_at=now + 60,
        max_age=1e9, backfill=0,
    )  # fmt: skip


def _editor(world: World, *, enabled: bool = True) -> Editor:
    return Editor(world.store, world.clock, on_queued=world.publisher.wake, enabled=enabled)


async def _site_edit(world: World, **fields: Any) -> tuple[Item, ...]:
    outcome = await _poll(world.store, world.feed_id, [_piece(**fields)], world.clock)
    assert outcome.queued == 0 and len(outcome.updated_items) == 1
    return tuple(outcome.updated_items)


async def test_the_sent_messages_are_edited_text_and_caption(world: World, api: FakeBotApi) -> None:
    updated = await _site_edit(world, title="Drills in the Caspian, revised")
    await _editor(world).on_updated(updated)
    await world.answered(2)
    (text_edit,) = [c for c in api.calls_to("editMessageText") if c.ok]
    (caption_edit,) = [c for c in api.calls_to("editMessageCaption") if c.ok]
    assert (text_edit.chat_id, text_edit.params["message_id"]) == (CHANNEL, world.sent[CHANNEL])
    assert (caption_edit.chat_id, caption_edit.params["message_id"]) == (
        PHOTO_GROUP, world.sent[PHOTO_GROUP],
    )  # fmt: skip
    for chat_id in (CHANNEL, PHOTO_GROUP):
        message = api.messages[(chat_id, world.sent[chat_id])]
        shown = message.get("text", message.get("caption"))
        assert isinstance(shown, str) and shown.startswith("Drills in the Caspian, revised\n")
    assert not api.calls_to("sendMessage")[1:] and len(api.calls_to("sendPhoto")) == 1


async def test_an_unchanged_post_counts_as_done(world: World, api: FakeBotApi) -> None:
    (item,) = await _site_edit(world, title="Drills, revised")
    editor = _editor(world)
    assert await editor.edit_messages(item) == 2
    await world.answered(2)
    assert await editor.edit_messages(item) == 2
    await world.answered(2)
    edits = [c for c in api.calls if c.method.startswith("edit")]
    assert [c.ok for c in edits] == [True, True, False, False]
    assert all("not modified" in (c.description or "") for c in edits[2:])
    # Telegram already showed it: the rows are done, not failed or retried.
    assert await _edit_states(world) == {"sent": 4}


async def test_an_edit_still_queued_is_not_queued_twice(world: World, api: FakeBotApi) -> None:
    (item,) = await _site_edit(world, title="Drills, revised")
    editor = _editor(world)
    assert await editor.edit_messages(item) == 2
    assert await editor.edit_messages(item) == 0  # the queued edits will show the newest text
    await world.answered(2)
    assert len([c for c in api.calls if c.method.startswith("edit")]) == 2


async def _edit_states(world: World) -> dict[str, int]:
    rows = await world.store.fetchall(
        "SELECT state, COUNT(*) FROM deliveries WHERE kind = 'edit' GROUP BY state"
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def test_messages_older_than_the_window_are_left_alone(world: World, api: FakeBotApi) -> None:
    await world.clock.advance(48 * 3600 + 1)
    updated = await _site_edit(world, title="Drills, revised two days later")
    await _editor(world).on_updated(updated)
    assert await _edit_states(world) == {}
    assert not api.calls_to("editMessageText") and not api.calls_to("editMessageCaption")


async def test_a_photo_chat_that_got_text_is_edited_as_text(world: World, api: FakeBotApi) -> None:
    # The group's photo was refused at send time, so it holds a text message.
    text_message = await world.bot.send_message(PHOTO_GROUP, "Drills in the Caspian")
    item = (await world.store.find_items_by_link("https://caliber.az/en/post/1"))[0]
    delivery = await world.store.get_delivery(item.id, PHOTO_GROUP)
    assert delivery is not None
    # Point the (already sent) delivery at that text message, as the publisher would have.
    async with world.store.transaction() as conn:
        await conn.execute(
            "UPDATE deliveries SET message_id = ? WHERE id = ?",
            (text_message.message_id, delivery.id),
        )
    updated = await _site_edit(world, title="Drills, revised")
    await _editor(world).on_updated(updated)
    await world.answered(2)
    tried = [c for c in api.calls if c.chat_id == PHOTO_GROUP and c.method.startswith("edit")]
    assert [(c.method, c.ok) for c in tried] == [
        ("editMessageCaption", False),
        ("editMessageText", True),
    ]
    assert tried[1].params["message_id"] == text_message.message_id


async def test_disabled_edits_still_keep_the_stored_summary_from_the_page(
    world: World, api: FakeBotApi
) -> None:
    link = "https://caliber.az/en/post/1"
    await save_article(
        world.store,
        Article(url=link, status="ok", fetched_at=world.clock.now(),
                page=PageContent(text="The page's first sentence is here. And a second one.",
                                 image_url="https://caliber.az/og.jpg")),
    )  # fmt: skip
    # The site's edit empties the feed's text and drops its image: the page still has both.
    updated = await _site_edit(world, title="Drills, revised", summary="", image_url=None)
    await _editor(world, enabled=False).on_updated(updated)
    (item,) = await world.store.find_items_by_link(link)
    assert item.title == "Drills, revised"
    assert item.summary == "The page’s first sentence is here. And a second one."
    assert item.image_url == "https://caliber.az/og.jpg"
    assert not [c for c in api.calls if c.method.startswith("edit")]
    assert await get_article(world.store, link) is not None


# ------------------------------------------------------------------ end to end


async def _post_and_edit(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, **env: str
) -> list[tuple[int, int]]:
    """Post a thin piece to two channels, then let the site change its title."""
    second = CHANNEL - 1
    for chat_id in (CHANNEL, second):
        api.add_chat(chat_id, "channel")
    url = feed_server.url("/en/post/1")
    feed_server.set_page("/en/post/1", caliber_page(url))
    feed_server.set("/en/rss", make_rss([OLD]))
    config = bot_env(
        api.url, {"en": feed_server.url("/en/rss")}, db_path,
        CHANNELS=f"en={CHANNEL},en={second}", ALLOW_PRIVATE_ADDRESSES="true", **env,
    )  # fmt: skip
    entry = {"title": "Old title", "guid": "new-1", "link": url, "description": "",
             "pub_date": PUBLISHED}  # fmt: skip
    async with running_bot(config) as runtime:
        store = runtime.services.store

        async def ready() -> bool:
            feeds = await store.list_feeds()
            chats = [await store.get_chat(c) for c in (CHANNEL, second)]
            return bool(feeds and feeds[0].initialized and all(c and c.subscribed for c in chats))

        await wait_for("both channels connected and the backlog seen", ready)
        feed_server.set("/en/rss", make_rss([entry, OLD]))
        sent = await api.wait_sent(2, timeout=15)
        feed_server.set("/en/rss", make_rss([{**entry, "title": "New title"}, OLD]))

        async def retitled() -> bool:
            items = await store.find_items_by_link(url)
            return bool(items) and items[0].title == "New title"

        await wait_for("the new title stored", retitled)
        if env.get("EDIT_ON_UPDATE") == "true":
            await api.wait_for(lambda a: len(a.calls_to("editMessageText")) >= 2, timeout=10)
        polls = len(feed_server.requests_to("/en/rss"))
        await api.wait_for(lambda _: len(feed_server.requests_to("/en/rss")) >= polls + 2)
    assert len(feed_server.requests_to("/en/post/1")) == 1  # the edit did not refetch
    return [(c.chat_id, c.result["message_id"]) for c in sent]


async def test_a_changed_title_is_not_posted_again(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    await _post_and_edit(api, feed_server, db_path)
    assert len(api.sent()) == 2
    assert not [c for c in api.calls if c.method.startswith("edit")]


async def test_edit_on_update_edits_the_sent_messages(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    sent = await _post_and_edit(api, feed_server, db_path, EDIT_ON_UPDATE="true")
    assert len(api.sent()) == 2  # no repost
    edits = api.calls_to("editMessageText")
    assert sorted((c.chat_id, c.params["message_id"]) for c in edits) == sorted(sent)
    first = corpus_article().paragraphs[0][:60]
    for chat_id, message_id in sent:
        text = api.messages[(chat_id, message_id)]["text"]
        assert text.startswith("New title\n")
        assert summary_of(text).startswith(first)  # still the page's summary
