"""Daily digests and quiet hours, end to end: the real bot against the fake Bot API and a local
feed server, all on one virtual clock (hours pass in a jump, the minutes around an event in
small steps), so no test sleeps.

A chat in digest mode receives nothing as pieces appear, then one message at its hour with the
pieces' linked titles by category, in its language; a big digest is split under Telegram's
limits; quiet hours release three pieces one by one and four as a digest; the settings buttons
work for a reader and a group's admin (a member is refused), and a channel's panel sets a
digest at an hour of a UTC offset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.app import Runtime
from bot.delivery.schedule import ScheduleUpdate
from bot.text.i18n import Translator
from handlers.views.channels import cb
from handlers.views.readers import ADMINS_ONLY
from storage import schedule as schedule_store
from storage.models import Chat, ChatType, DeliveryMode, DeliveryState
from storage.store import Store
from tests.fakes.botapi import ApiCall, FakeBotApi
from tests.fakes.clock import ManualClock
from tests.fakes.feedserver import FeedServer, make_rss
from tests.fakes.telegram_html import parse_html
from tests.support import TOKEN, advance_until, bot_env, running_bot

BAKU = ZoneInfo("Asia/Baku")
READER, RUSSIAN, ADMIN, MEMBER = 701, 702, 711, 712
GROUP = -1001000000700
CHANNEL = -1001000000701
TR = Translator()


def baku(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=BAKU).timestamp()


def piece(lang: str, n: int, title: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "title": title or f"Piece {n}",
        "link": f"https://caliber.az/{lang}/post/{n}",
        "guid": f"{lang}-{n}",
        "description": f"<p>Summary of piece {n}.</p>",
        "pub_date": datetime(2026, 3, 1, tzinfo=BAKU) + timedelta(minutes=n),
        **extra,
    }


@dataclass
class World:
    """The running bot on virtual time, its feeds and the people talking to it."""

    api: FakeBotApi
    feeds: FeedServer
    clock: ManualClock
    runtime: Runtime
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.runtime.services.store

    async def chat(self, chat_id: int) -> Chat:
        chat = await self.store.get_chat(chat_id)
        assert chat is not None
        return chat

    async def until(self, what: str, predicate: Callable[[], bool], within: float = 60) -> None:
        await advance_until(self.clock, what, predicate, within=within, step=0.05)

    async def polled(self, lang: str, times: int = 2) -> None:
        path = f"/{lang}/rss"
        seen = len(self.feeds.requests_to(path))
        await self.until(f"{times} polls of {lang}", lambda: len(self.feeds.requests_to(path))
                         >= seen + times)  # fmt: skip

    async def publish(self, lang: str, *pieces: dict[str, Any]) -> None:
        """New pieces in a feed (the newest first, as sites list them); await the bot's poll."""
        self.items[lang] = [*reversed(pieces), *self.items.get(lang, [])]
        self.feeds.set(f"/{lang}/rss", make_rss(self.items[lang], lang=lang))
        await self.polled(lang)

    async def run_for(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass in small steps, with real time for the I/O."""
        end = self.clock.monotonic() + seconds
        await self.until(f"{seconds} s", lambda: self.clock.monotonic() >= end, within=seconds + 1)

    async def jump_to(self, moment: float) -> None:
        """Let hours pass at once (every sleeper wakes at its own deadline on the way)."""
        assert moment > self.clock.now()
        await self.clock.advance(moment - self.clock.now())

    async def say(self, user: dict[str, Any], text: str, chat: int | None = None) -> ApiCall:
        chat_id = user["id"] if chat is None else chat
        before = len(self.api.sent(chat_id))
        self.api.push_update(self.api.make_message_update(chat_id, user, text))
        await self.until(f"the answer to {text}", lambda: len(self.api.sent(chat_id)) > before)
        return self.api.sent(chat_id)[before]

    async def press(
        self,
        user: dict[str, Any],
        data: str,
        message_id: int,
        chat: int | None = None,
        *,
        edits: bool = True,
    ) -> dict[str, Any]:
        """`user` presses a button; return its answer once the message is redrawn (`edits`)."""
        chat_id = user["id"] if chat is None else chat
        answers = len(self.api.callback_answers)
        edited = len(self.api.calls_to("editMessageText"))
        self.api.push_update(self.api.make_callback_update(chat_id, user, data, message_id))
        await self.until(f"the answer to {data}", lambda: len(self.api.callback_answers) > answers)
        if edits:
            await self.until(
                f"the redraw after {data}",
                lambda: len(self.api.calls_to("editMessageText")) > edited,
            )
        return self.api.callback_answers[answers]

    def message(self, chat_id: int, message_id: int) -> tuple[str, dict[str, str]]:
        """A message as it looks now: its text and {button label: data}."""
        return self.api.shown(chat_id, message_id)

    async def states(self, chat_id: int) -> list[tuple[str, str]]:
        rows = await self.store.fetchall(
            "SELECT kind, state FROM deliveries WHERE chat_id = ? ORDER BY id", (chat_id,)
        )
        return [(str(r[0]), str(r[1])) for r in rows]


@pytest.fixture
async def world_at(feed_server: FeedServer, db_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts the bot at a wall time (Baku) with the given feeds and environment."""
    stack: list[Any] = []

    async def start(moment: float, langs: tuple[str, ...] = ("en",), **env: str) -> World:
        clock = ManualClock(start=moment)
        api = FakeBotApi(
            TOKEN, global_per_second=600, group_per_minute=400, private_per_second=20,
            clock=clock.monotonic,
        )  # fmt: skip
        await api.__aenter__()
        stack.append(api)
        for lang in langs:
            feed_server.set(f"/{lang}/rss", make_rss([piece(lang, 0)], lang=lang))
        settings = bot_env(
            api.url, {lang: feed_server.url(f"/{lang}/rss") for lang in langs}, db_path,
            POLL_INTERVAL="1", ARTICLE_FETCH_THRESHOLD="0", **env,
        )  # fmt: skip
        for user_id in (READER, RUSSIAN, ADMIN, MEMBER):
            api.add_chat(user_id, "private")
        api.add_chat(GROUP, "supergroup", title="Readers' club")
        api.set_member(GROUP, ADMIN, "administrator")
        api.set_member(GROUP, MEMBER, "member")
        api.add_chat(CHANNEL, "channel", title="Caliber <EN>", username="caliber_en_test")
        api.set_member(CHANNEL, ADMIN, "administrator", can_post_messages=True)
        running = running_bot(settings, clock=clock)
        runtime = await running.__aenter__()
        stack.append(running)
        world = World(api, feed_server, clock, runtime)
        world.items = {lang: [piece(lang, 0)] for lang in langs}
        for lang in langs:
            await world.polled(lang)
        return world

    yield start
    for entered in reversed(stack):
        await entered.__aexit__(None, None, None)


def users(api: FakeBotApi) -> dict[str, dict[str, Any]]:
    return {
        "reader": api.user(READER, "Emma", language_code="en"),
        "russian": api.user(RUSSIAN, "Руслан", language_code="ru"),
        "admin": api.user(ADMIN, "Aysel", language_code="en"),
        "member": api.user(MEMBER, "Max", language_code="en"),
    }


def links_of(call: ApiCall) -> list[str]:
    parsed = parse_html(str(call.params["text"]))
    return [str(e.url) for e in parsed.entities if e.type == "text_link"]


# ---------------------------------------------------------------------- digest mode


async def test_a_digest_chat_gets_nothing_then_one_grouped_digest_at_its_hour(
    world_at: Callable[..., Any],
) -> None:
    world: World = await world_at(baku(2026, 3, 2, 8), ("ru",))
    people = users(world.api)
    russian = people["russian"]
    await world.say(russian, "/subscribe")
    settings = await world.say(russian, "/settings")
    message_id = settings.result["message_id"]
    text, buttons = world.message(RUSSIAN, message_id)
    assert "Доставка: каждый материал сразу после выхода" in text
    assert "Тихие часы: выключены" in text
    assert {"По мере выхода", "Ежедневный дайджест", "Тихие часы"} <= set(buttons)

    answer = await world.press(russian, buttons["Ежедневный дайджест"], message_id)
    assert answer["text"] == "Сохранено."
    text, buttons = world.message(RUSSIAN, message_id)
    assert text.startswith("В котором часу присылать ежедневный дайджест?")
    assert "Баку" in text and len([b for b in buttons if b.endswith(":00")]) == 24
    await world.press(russian, buttons["✓ 09:00"], message_id)
    text, buttons = world.message(RUSSIAN, message_id)
    assert "Доставка: ежедневный дайджест в 09:00 (Баку)" in text
    assert "🕘 Час дайджеста: 09:00" in buttons
    chat = await world.chat(RUSSIAN)
    assert chat.settings.delivery is DeliveryMode.DIGEST and chat.settings.digest_hour == 9

    sent_before = len(world.api.sent(RUSSIAN))
    await world.publish(
        "ru",
        piece("ru", 1, "Нефть & газ: 5 < 7 <b>", categories=["Политика"]),
        piece("ru", 2, "Без рубрики"),
        piece("ru", 3, "Выборы", categories=["Политика"]),
        piece("ru", 4, "Рынок", categories=["Экономика"]),
    )
    await world.jump_to(baku(2026, 3, 2, 8, 59, 50))
    assert len(world.api.sent(RUSSIAN)) == sent_before  # nothing as they appear
    depth = await world.store.outbox_depth(world.clock.now())
    assert (depth.held, depth.due) == (4, 0)  # waiting on purpose, not stuck

    await world.until("the digest", lambda: len(world.api.sent(RUSSIAN)) > sent_before)
    await world.run_for(20)
    (digest,) = world.api.sent(RUSSIAN)[sent_before:]
    assert baku(2026, 3, 2, 9) <= world.clock.now() - world.clock.monotonic() + digest.at
    lines = str(digest.result["text"]).split("\n")
    # By category as the feed names it, in the order they first appear; escaped titles as
    # they were; the pieces without a category last, under a translated "Other".
    (first,) = await world.store.find_items_by_link("https://caliber.az/ru/post/1")
    assert "&" in first.title and "<" in first.title
    assert lines == [
        "🗞 Дайджест за 2 марта: 4 новых материала", "", "Политика", f"• {first.title}",
        "• Выборы", "", "Экономика", "• Рынок", "", "Другое", "• Без рубрики",
    ]  # fmt: skip
    bold = [e for e in digest.result["entities"] if e["type"] == "bold"]
    assert len(bold) == 4  # the heading and the three categories
    assert links_of(digest) == [f"https://caliber.az/ru/post/{n}" for n in (1, 3, 4, 2)]
    assert digest.params["link_preview_options"] == {"is_disabled": True}
    assert await world.states(RUSSIAN) == [("post", "skipped")] * 4 + [("notice", "sent")]

    # /why tells where the piece went.
    why = await world.say(russian, "/why https://caliber.az/ru/post/3")
    assert "вошёл в дайджест чата" in str(why.result["text"])

    # The next day: one more piece, one more digest at 9:00, and nothing in between.
    await world.publish("ru", piece("ru", 5, "Завтра"))
    await world.jump_to(baku(2026, 3, 3, 8, 59, 50))
    assert len(world.api.sent(RUSSIAN)) == sent_before + 2  # the digest and the /why answer
    await world.until("the second digest", lambda: len(world.api.sent(RUSSIAN)) > sent_before + 2)
    second = world.api.sent(RUSSIAN)[-1]
    assert str(second.result["text"]).startswith("🗞 Дайджест за 3 марта: 1 новый материал")
    assert links_of(second) == ["https://caliber.az/ru/post/5"]
    hold = await schedule_store.get_hold(world.store, RUSSIAN)
    assert hold.until == baku(2026, 3, 4, 9)
    assert world.api.html_errors == [] and world.api.rate_violations == 0


async def test_a_big_digest_is_split_under_the_limit(world_at: Callable[..., Any]) -> None:
    world: World = await world_at(baku(2026, 3, 2, 8), ("en",), CHANNELS=f"en={CHANNEL}")
    admin = world.runtime.services.channels
    chat = await world.chat(CHANNEL)
    actor = admin.actor(ADMIN, "Aysel")
    await admin.set_schedule(chat, actor, ScheduleUpdate(delivery=DeliveryMode.DIGEST))
    long_title = "Analysis: " + "the South Caucasus corridor and its neighbours " * 5
    pieces = [
        piece("en", n, f"{n}. {long_title}", categories=[f"Section {n % 4}"]) for n in range(1, 121)
    ]
    await world.publish("en", *pieces)
    assert world.api.sent(CHANNEL) == []
    await world.jump_to(baku(2026, 3, 2, 8, 59, 50))
    await world.until("the digest", lambda: len(world.api.sent(CHANNEL)) >= 2)
    await world.run_for(20)
    parts = world.api.sent(CHANNEL)
    assert len(parts) >= 4  # 120 long titles: over 4096 characters and 100 entities
    links: list[str] = []
    for number, part in enumerate(parts, start=1):
        text = str(part.result["text"])
        assert text.startswith(f"🗞 Daily digest, 2 March: 120 new pieces ({number}/{len(parts)})")
        assert len(text.encode("utf-16-le")) // 2 <= 4096
        # Every link survived: none is past the 100 entities Telegram applies.
        received = [e["url"] for e in part.result["entities"] if e["type"] == "text_link"]
        assert received == links_of(part)
        links += received
    first_sections = [1, 2, 3, 0]  # the order the sections first appear in
    expected = [
        p["link"] for s in first_sections for p in pieces if p["categories"] == [f"Section {s}"]
    ]
    assert links == expected
    assert world.api.html_errors == [] and world.api.rate_violations == 0


# ---------------------------------------------------------------------- quiet hours


async def test_quiet_hours_release_three_one_by_one_and_more_as_a_digest(
    world_at: Callable[..., Any],
) -> None:
    world: World = await world_at(baku(2026, 3, 2, 22, 30), ("en",))
    reader = users(world.api)["reader"]
    await world.say(reader, "/subscribe")
    settings = await world.say(reader, "/settings")
    message_id = settings.result["message_id"]
    _, buttons = world.message(READER, message_id)
    assert {"As they appear", "Daily digest", "Quiet hours"} <= set(buttons)
    await world.press(reader, buttons["Quiet hours"], message_id)
    text, buttons = world.message(READER, message_id)
    assert text.startswith("🌙 Quiet hours: no posts between two hours.")
    assert "Quiet hours: off" in text
    await world.press(reader, buttons["23:00"], message_id)
    text, buttons = world.message(READER, message_id)
    assert text == "Quiet from 23:00. Until which hour?" and "23:00" not in buttons
    answer = await world.press(reader, buttons["08:00"], message_id)
    assert answer["text"] == "Saved."
    text, buttons = world.message(READER, message_id)
    assert "Quiet hours: 23:00–08:00 (Baku)" in text and "Turn quiet hours off" in buttons

    # Before 23:00 pieces come as they appear.
    sent = len(world.api.sent(READER))
    await world.publish("en", piece("en", 1))
    await world.until("the evening piece", lambda: len(world.api.sent(READER)) > sent)

    # Three pieces in the night wait, then come one by one at 8:00.
    await world.jump_to(baku(2026, 3, 2, 23, 30))
    sent = len(world.api.sent(READER))
    await world.publish("en", piece("en", 2), piece("en", 3), piece("en", 4))
    await world.jump_to(baku(2026, 3, 3, 7, 59, 50))
    assert len(world.api.sent(READER)) == sent
    await world.until("three posts", lambda: len(world.api.sent(READER)) >= sent + 3)
    posts = world.api.sent(READER)[sent:]
    assert [links_of(p)[0] for p in posts] == [f"https://caliber.az/en/post/{n}" for n in (2, 3, 4)]
    assert all("Read more" in str(p.result["text"]) for p in posts)  # posts, not a digest

    # Four pieces in the next night: one digest at 8:00.
    await world.jump_to(baku(2026, 3, 3, 23, 30))
    sent = len(world.api.sent(READER))
    await world.publish("en", *(piece("en", n) for n in (5, 6, 7, 8)))
    await world.jump_to(baku(2026, 3, 4, 7, 59, 50))
    assert len(world.api.sent(READER)) == sent
    await world.until("the digest", lambda: len(world.api.sent(READER)) > sent)
    await world.run_for(5)
    (digest,) = world.api.sent(READER)[sent:]
    assert str(digest.result["text"]).startswith("🌅 Quiet hours are over: 4 new pieces\n\nOther")
    assert links_of(digest) == [f"https://caliber.az/en/post/{n}" for n in (5, 6, 7, 8)]
    assert world.api.html_errors == []


# ---------------------------------------------------------------------- who may change it


async def test_in_a_group_only_its_admins_choose_the_digest(world_at: Callable[..., Any]) -> None:
    world: World = await world_at(baku(2026, 3, 2, 8), ("en",))
    people = users(world.api)
    member, admin = people["member"], people["admin"]
    settings = await world.say(member, "/settings", chat=GROUP)  # anyone may look
    message_id = settings.result["message_id"]
    text, buttons = world.message(GROUP, message_id)
    assert "Delivery: every piece as it appears" in text
    assert {"As they appear", "Daily digest"} <= set(buttons)
    assert "Quiet hours" not in buttons and "Quiet hours" not in text  # private chats only

    asked = len(world.api.calls_to("getChatMember"))
    answer = await world.press(member, buttons["Daily digest"], message_id, chat=GROUP, edits=False)
    assert answer["show_alert"] is True
    assert answer["text"] == TR.gettext("en", ADMINS_ONLY)
    assert len(world.api.calls_to("getChatMember")) > asked  # asked at the press
    assert (await world.chat(GROUP)).settings.delivery is DeliveryMode.IMMEDIATE

    await world.press(admin, buttons["Daily digest"], message_id, chat=GROUP)
    text, buttons = world.message(GROUP, message_id)
    assert text.startswith("At which hour should the daily digest come?")
    # Demoted meanwhile: the next press is refused, whatever the admin saw before.
    world.api.set_member(GROUP, ADMIN, "member")
    answer = await world.press(admin, buttons["18:00"], message_id, chat=GROUP, edits=False)
    assert answer["show_alert"] is True
    chat = await world.chat(GROUP)
    assert chat.settings.delivery is DeliveryMode.DIGEST and chat.settings.digest_hour == 9
    hold = await schedule_store.get_hold(world.store, GROUP)
    assert hold.until == baku(2026, 3, 2, 9)
    assert chat.type is ChatType.SUPERGROUP


async def test_a_channel_panel_sets_a_digest_at_an_hour_of_a_utc_offset(
    world_at: Callable[..., Any],
) -> None:
    world: World = await world_at(baku(2026, 3, 2, 8), ("en",), CHANNELS=f"en={CHANNEL}")
    people = users(world.api)
    admin, member = people["admin"], people["member"]
    await world.say(admin, "/channels")
    message_id = world.api.sent(ADMIN)[-1].result["message_id"]
    await world.press(admin, cb(CHANNEL, "open"), message_id)
    text, buttons = world.message(ADMIN, message_id)
    assert "Delivery: every piece as it appears" in text
    await world.press(admin, buttons["🗞 Delivery"], message_id)
    text, buttons = world.message(ADMIN, message_id)
    assert text.startswith("🗞 Delivery in Caliber <EN>")
    await world.press(admin, buttons["Daily digest"], message_id)
    _, buttons = world.message(ADMIN, message_id)
    await world.press(admin, buttons["21:00"], message_id)
    text, buttons = world.message(ADMIN, message_id)
    assert "Delivery: a daily digest at 21:00 (Baku)" in text
    await world.press(admin, buttons["🌐 Time zone: Baku"], message_id)
    for _ in range(2):
        _, buttons = world.message(ADMIN, message_id)
        await world.press(admin, buttons["▶"], message_id)
    _, buttons = world.message(ADMIN, message_id)
    assert "UTC−12" not in buttons and "UTC+14" in buttons
    await world.press(admin, buttons["UTC+3"], message_id)
    text, _ = world.message(ADMIN, message_id)
    assert "Delivery: a daily digest at 21:00 (UTC+3)" in text
    chat = await world.chat(CHANNEL)
    assert (chat.settings.delivery, chat.settings.digest_hour, chat.settings.timezone) == (
        DeliveryMode.DIGEST, 21, "UTC+3",
    )  # fmt: skip

    # A stranger's forged press is refused by the live rights check.
    forged = cb(CHANNEL, "sched", "md")
    answer = await world.press(member, forged, message_id, chat=MEMBER, edits=False)
    assert answer["show_alert"] is True

    # 21:00 at UTC+3 is 22:00 in Baku: the channel gets its digest then, not before.
    await world.publish("en", piece("en", 1, categories=["Caucasus"]), piece("en", 2))
    await world.jump_to(baku(2026, 3, 2, 21, 59, 50))
    assert world.api.sent(CHANNEL) == []
    await world.until("the digest", lambda: len(world.api.sent(CHANNEL)) >= 1)
    (digest,) = world.api.sent(CHANNEL)
    assert str(digest.result["text"]).startswith("🗞 Daily digest, 2 March: 2 new pieces")
    assert links_of(digest) == ["https://caliber.az/en/post/1", "https://caliber.az/en/post/2"]

    # The panel's 📜 Changes show who chose it.
    await world.press(admin, cb(CHANNEL, "hist"), message_id)
    text, _ = world.message(ADMIN, message_id)
    assert "Aysel (711): Delivery: As they appear → Daily digest" in text
    assert "Time zone: — → UTC+3" in text
    rows = await world.store.fetchall(
        "SELECT state FROM deliveries WHERE chat_id = ? AND kind = 'post'", (CHANNEL,)
    )
    assert {str(r[0]) for r in rows} == {DeliveryState.SKIPPED.value}
