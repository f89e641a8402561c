"""Readers, end to end: the real bot against the fake Bot API and a local feed server.

Language choice (commands and buttons, in English, Russian and Azerbaijani), search (relevance,
paging, scopes, hostile input), inline mode, /latest, subscriptions with delivery of new pieces,
group-admin checks, blocking and coming back, and the command menus.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import Runtime
from bot.services import search as search_service
from bot.services.permissions import RIGHTS_UNKNOWN
from bot.text import analysis
from bot.text.i18n import Translator
from handlers.views.channels import NO_CHATS, cb
from handlers.views.readers import (
    ADMINS_ONLY,
    LANGUAGE_PROMPT,
    NOTHING_FOUND,
    SEARCH_EXPIRED,
    SEARCH_NO_WORDS,
    SEARCH_USAGE,
    STALE_BUTTON,
    SUBSCRIBED,
)
from storage import search as index_store
from storage import search_keys
from storage.models import Chat
from storage.store import Store
from tests.fakes.botapi import ApiCall, FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import bot_env, running_bot, wait_for

BASE = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
GROUP = -1001000000500
EN, RU, AZ, OTHER = 601, 602, 603, 604
ADMIN, MEMBER = 611, 612
LIMITED = 613  # a group admin without the right to change the group's info
ANONYMOUS_ADMIN_BOT = 1087968824
TR = Translator()


def piece(lang: str, n: int, title: str, text: str, hours: float) -> dict[str, Any]:
    return {
        "title": title,
        "link": f"https://caliber.az/{lang}/post/{n}",
        "guid": f"{lang}-{n}",
        "description": f"<p>{text}</p>",
        "pub_date": BASE + timedelta(hours=hours),
    }


ARCHIVE: dict[str, list[dict[str, Any]]] = {
    "en": [
        piece("en", 1, "US tightens sanctions on Iranian oil", "A new sanction package.", 1),
        piece("en", 2, "Caspian drills", "The Russia–Iran alliance shows cracks.", 2),
        piece("en", 3, "Café diplomacy", "Diplomats met in a café & talked <politics>.", 3),
        *[
            piece("en", 100 + n, f"Oil market report {n}", f"Oil and gas prices, week {n}.", 10 + n)
            for n in range(12)
        ],
    ],
    "ru": [
        piece("ru", 1, "Санкции против Ирана", "США ужесточили санкции против Ирана.", 1),
        piece("ru", 2, "Иран и Россия", "Совместные учения на Каспии.", 2),
        piece("ru", 3, "Ёлка в Баку", "На площади установили ёлку.", 3),
    ],
    "az": [
        piece("az", 1, "Iğdır–Naxçıvan qaz kəməri", "Azərbaycanın yeni layihəsi: İĞDIR.", 1),
        piece("az", 2, "Neftin qiyməti", "Neft bazarında gərginlik.", 2),
    ],
}


class Readers:
    """The running bot and the people talking to it."""

    def __init__(self, api: FakeBotApi, feeds: FeedServer, runtime: Runtime) -> None:
        self.api = api
        self.feeds = feeds
        self.runtime = runtime
        self.archive = {lang: list(items) for lang, items in ARCHIVE.items()}

    @property
    def store(self) -> Store:
        return self.runtime.services.store

    async def chat(self, chat_id: int) -> Chat:
        chat = await self.store.get_chat(chat_id)
        assert chat is not None
        return chat

    async def polled(self, lang: str, times: int = 2) -> None:
        path = f"/{lang}/rss"
        seen = len(self.feeds.requests_to(path))
        await self.api.wait_for(lambda _: len(self.feeds.requests_to(path)) >= seen + times, 10)

    async def publish(self, lang: str, item: dict[str, Any]) -> None:
        """The site publishes a new piece; wait until the bot has polled it."""
        self.archive[lang].insert(0, item)
        self.feeds.set(f"/{lang}/rss", make_rss(self.archive[lang], lang=lang))
        await self.polled(lang)

    async def say(self, user: dict[str, Any], text: str, chat: Any = None, **extra: Any) -> ApiCall:
        """`user` sends `text` (in their private chat unless `chat` is given); return the reply."""
        chat = user["id"] if chat is None else chat
        chat_id = chat if isinstance(chat, int) else chat["id"]
        before = len(self.api.sent(chat_id))
        self.api.push_update(self.api.make_message_update(chat, user, text, **extra))
        await self.api.wait_for(lambda a: len(a.sent(chat_id)) > before)
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
        """`user` presses a button; return the callback answer (after the edit, if expected)."""
        chat_id = user["id"] if chat is None else chat
        answers = len(self.api.callback_answers)
        edited = len(self.api.calls_to("editMessageText"))
        self.api.push_update(self.api.make_callback_update(chat_id, user, data, message_id))
        await self.api.wait_for(lambda a: len(a.callback_answers) > answers)
        if edits:
            await self.api.wait_for(lambda a: len(a.calls_to("editMessageText")) > edited)
        return self.api.callback_answers[answers]

    def message(self, chat_id: int, message_id: int) -> tuple[str, dict[str, str]]:
        """A message as the user sees it now: text and {button label: data}."""
        return self.api.shown(chat_id, message_id)

    async def inline(self, user: dict[str, Any], query: str, offset: str = "") -> dict[str, Any]:
        before = len(self.api.inline_answers)
        self.api.push_update(self.api.make_inline_query_update(user, query, offset))
        await self.api.wait_for(lambda a: len(a.inline_answers) > before)
        return self.api.inline_answers[before]


def text_of(call: ApiCall) -> str:
    return str(call.result["text"])


def tr(lang: str, msgid: str, **values: Any) -> str:
    return TR.gettext(lang, msgid, **values)


@pytest.fixture
def people(api: FakeBotApi) -> dict[str, dict[str, Any]]:
    for user_id in (EN, RU, AZ, OTHER, ADMIN, MEMBER):
        api.add_chat(user_id, "private")
    api.add_chat(GROUP, "supergroup", title="Readers' club")
    api.set_member(GROUP, ADMIN, "administrator")
    api.set_member(GROUP, MEMBER, "member")
    return {
        "en": api.user(EN, "Emma", language_code="en"),
        "ru": api.user(RU, "Руслан", language_code="ru-RU"),
        "az": api.user(AZ, "Aysel", language_code="az"),
        "other": api.user(OTHER, "Dieter", language_code="de"),
        "admin": api.user(ADMIN, "Admin", language_code="en"),
        "member": api.user(MEMBER, "Member", language_code="en"),
    }


async def start_bot(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, **env: str
) -> AsyncIterator[Readers]:
    for lang, items in ARCHIVE.items():
        feed_server.set(f"/{lang}/rss", make_rss(items, lang=lang))
    settings = bot_env(
        api.url, {lang: feed_server.url(f"/{lang}/rss") for lang in ARCHIVE}, db_path, **env
    )
    async with running_bot(settings) as runtime:
        readers = Readers(api, feed_server, runtime)
        for lang in ARCHIVE:
            await readers.polled(lang)
        yield readers


@pytest.fixture
async def bot(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, people: dict[str, Any]
) -> AsyncIterator[Readers]:
    """The bot with the archive stored (the first poll's backlog is searchable, not posted)."""
    async for readers in start_bot(api, feed_server, db_path):
        yield readers


# ---------------------------------------------------------------------- language


# What a reader reads, written out here by hand: a catalog that lost or garbled a translation
# fails these, where expectations built from the bot's own catalog would follow it.
WRITTEN = {
    "en": {
        "welcome": "👋 Welcome to the Caliber.az bot!",
        "choose": "Choose your language:",
        "usage": "Send /search and the words to look for, for example: /search oil sanctions",
        "unsubscribed": "🔕 Unsubscribed: this chat will get no more new pieces. Send /subscribe "
        "to start again.",
    },
    "ru": {
        "welcome": "👋 Добро пожаловать в бот Caliber.az!",
        "choose": "Выберите язык:",
        "usage": "Отправьте /search и слова для поиска, например: /search нефть санкции",
        "unsubscribed": "🔕 Подписка отменена: этот чат больше не будет получать новые "
        "материалы. Чтобы подписаться снова, отправьте /subscribe.",
    },
    "az": {
        "welcome": "👋 Caliber.az botuna xoş gəlmisiniz!",
        "choose": "Dilinizi seçin:",
        "usage": "/search və axtarılacaq sözləri göndərin, məsələn: /search neft sanksiyalar",
        "unsubscribed": "🔕 Abunəlik dayandırıldı: bu söhbət daha yeni materiallar almayacaq. "
        "Yenidən başlamaq üçün /subscribe göndərin.",
    },
}


@pytest.mark.parametrize(
    ("who", "lang", "word", "found"),
    [
        ("en", "en", "sanctions", "US tightens sanctions on Iranian oil"),
        ("ru", "ru", "Ирана", "Санкции против Ирана"),
        ("az", "az", "IĞDIR", "Iğdır–Naxçıvan qaz kəməri"),
    ],
)
async def test_every_command_in_each_language(
    bot: Readers, people: dict[str, Any], who: str, lang: str, word: str, found: str
) -> None:
    user = people[who]
    uid = user["id"]

    greeting = await bot.say(user, "/start")
    text = text_of(greeting)
    assert text.startswith(WRITTEN[lang]["welcome"])
    assert WRITTEN[lang]["choose"] in text
    buttons = greeting.params["reply_markup"]["inline_keyboard"][0]
    labels = [b["text"] for b in buttons]
    assert [label.removeprefix("✓ ") for label in labels] == ["English", "Русский", "Azərbaycanca"]
    assert sum(label.startswith("✓ ") for label in labels) == 1
    assert (await bot.chat(uid)).lang == lang

    help_text = text_of(await bot.say(user, "/help"))
    for command, description in (
        ("search", "Search all pieces: /search words"),
        ("subscribe", "Get every new piece in this chat"),
        ("channels", "Manage your channels"),
    ):
        assert f"/{command} — {tr(lang, description)}" in help_text
    assert "/stats" not in help_text  # operators only

    prompt = text_of(await bot.say(user, "/language"))
    language_names = {"en": "English", "ru": "Русский", "az": "Azərbaycanca"}
    assert prompt == tr(lang, LANGUAGE_PROMPT, language=language_names[lang])
    assert text_of(await bot.say(user, "/lang")) == prompt

    results = await bot.say(user, f"/search {word}")
    assert found in text_of(results)
    assert results.params["parse_mode"] == "HTML"
    assert text_of(await bot.say(user, "/search")) == WRITTEN[lang]["usage"]

    latest = text_of(await bot.say(user, "/latest"))
    newest = ARCHIVE[lang][-1]["title"] if lang != "en" else "Oil market report 11"
    assert newest in latest

    subscribed = text_of(await bot.say(user, "/subscribe"))
    assert subscribed == tr(lang, SUBSCRIBED, language=language_names[lang])
    settings_text = text_of(await bot.say(user, "/settings"))
    assert tr(lang, "New pieces: on") in settings_text
    unsubscribed = text_of(await bot.say(user, "/unsubscribe"))
    assert unsubscribed == WRITTEN[lang]["unsubscribed"]
    if lang == "ru":
        assert "Добро пожаловать" in text and "Подписка отменена" in unsubscribed
    if lang == "az":
        assert "xoş gəlmisiniz" in text and "Abunəlik dayandırıldı" in unsubscribed
    assert bot.api.html_errors == []


async def test_unknown_telegram_language_gets_the_default(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, people: dict[str, Any]
) -> None:
    async for readers in start_bot(api, feed_server, db_path, DEFAULT_LANGUAGE="az"):
        greeting = await readers.say(people["other"], "/start")  # language_code "de"
        assert text_of(greeting).startswith(tr("az", "👋 Welcome to the Caliber.az bot!"))
        assert (await readers.chat(OTHER)).lang == "az"
        # A language we have still wins over the default.
        assert text_of(await readers.say(people["en"], "/start")).startswith("👋 Welcome")


async def test_language_button_edits_the_message_and_is_remembered(
    bot: Readers, people: dict[str, Any]
) -> None:
    user = people["en"]
    greeting = await bot.say(user, "/start")
    message_id = greeting.result["message_id"]
    _, buttons = bot.message(EN, message_id)
    answer = await bot.press(user, buttons["Русский"], message_id)
    assert answer["text"] == "Язык: Русский"

    text, buttons = bot.message(EN, message_id)
    assert text.startswith("👋 Добро пожаловать") and "✓ Русский" in buttons
    chat = await bot.chat(EN)
    assert (chat.lang, chat.languages) == ("ru", ("ru",))
    assert text_of(await bot.say(user, "/help")).startswith("Вот что я умею")

    # Pressing the chosen language again is answered; nothing breaks.
    answer = await bot.press(user, buttons["✓ Русский"], message_id, edits=False)
    assert answer["text"] == "Язык: Русский"

    # The /language prompt is redrawn as the prompt.
    prompt = await bot.say(user, "/language")
    prompt_id = prompt.result["message_id"]
    await bot.press(user, "lang:az", prompt_id)
    assert bot.message(EN, prompt_id)[0] == tr("az", LANGUAGE_PROMPT, language="Azərbaycanca")

    # Forged or stale data is answered, and changes nothing.
    for data in ("lang:xx", "lang:", "lang:en:bogus", "lang:en" + "x" * 50):
        answer = await bot.press(user, data, prompt_id, edits=False)
        assert answer["text"] == tr("az", STALE_BUTTON)
    assert (await bot.chat(EN)).lang == "az"


# ---------------------------------------------------------------------- search


async def test_search_pages_by_editing_the_same_message(
    bot: Readers, people: dict[str, Any]
) -> None:
    user = people["en"]
    reply = await bot.say(user, "/search OIL")
    message_id = reply.result["message_id"]
    html = reply.params["text"]
    assert html.count('<a href="https://caliber.az/en/post/') == 5
    assert "<b>Oil</b>" in html  # the matched word, in bold, as written in the piece
    assert reply.params["link_preview_options"]["is_disabled"] is True
    text, buttons = bot.message(EN, message_id)
    assert text.startswith("🔎 Found 13 pieces for OIL")
    assert "Page 1 of 3" in text
    assert set(buttons) == {"▶", "🌐 All languages"}

    await bot.press(user, buttons["▶"], message_id)
    text, buttons = bot.message(EN, message_id)
    assert "Page 2 of 3" in text and set(buttons) == {"◀", "▶", "🌐 All languages"}
    await bot.press(user, buttons["▶"], message_id)
    text, buttons = bot.message(EN, message_id)
    assert "Page 3 of 3" in text and set(buttons) == {"◀", "🌐 All languages"}
    assert text.count("\n\n") == 3  # head + three pieces on the last page
    await bot.press(user, buttons["◀"], message_id)
    assert "Page 2 of 3" in bot.message(EN, message_id)[0]

    seen = set()
    for call in [*bot.api.calls_to("editMessageText")[-3:], reply]:
        seen |= {part.split('"')[0] for part in call.params["text"].split('href="')[1:]}
    assert len(seen) == 13  # every match exactly once over the pages


async def test_search_ranks_titles_first_and_widens_to_all_languages(
    bot: Readers, people: dict[str, Any]
) -> None:
    user = people["en"]
    entries = text_of(await bot.say(user, "/search sanction")).split("\n\n")[1:]
    assert entries[0].startswith("1. US tightens sanctions on Iranian oil")  # in the title
    # Only Russian pieces mention "Баку": an English chat is offered them all the same.
    reply = await bot.say(user, "/search Баку")
    text, buttons = bot.message(EN, reply.result["message_id"])
    assert "Nothing in English, so here are all languages." in text
    assert "Ёлка в Баку" in text and "🌐 All languages" not in buttons

    # "Iran" in English, then every language with the button.
    reply = await bot.say(user, "/search Iran")
    message_id = reply.result["message_id"]
    text, buttons = bot.message(EN, message_id)
    assert "Caspian drills" in text and "Language: English" in text
    await bot.press(user, buttons["🌐 All languages"], message_id)
    text, buttons = bot.message(EN, message_id)
    assert "All languages" in text and "Only English" in buttons


async def test_search_matches_word_forms_and_letters(bot: Readers, people: dict[str, Any]) -> None:
    ru, az = people["ru"], people["az"]
    text = text_of(await bot.say(ru, "/search иран"))
    assert "Санкции против Ирана" in text and "Иран и Россия" in text
    assert "Ёлка в Баку" in text_of(await bot.say(ru, "/search ЕЛКА"))
    for query in ("ığdır", "Igdir", "İĞDIR"):
        assert "Iğdır–Naxçıvan qaz kəməri" in text_of(await bot.say(az, f"/search {query}"))
    assert "Neftin qiyməti" in text_of(await bot.say(az, "/search neft"))
    assert "Café diplomacy" in text_of(await bot.say(people["en"], "/search cafe"))


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"oil',
        "oil AND gas",
        "OR",
        "NOT oil",
        "NEAR(oil gas)",
        "oil*",
        "^oil",
        "(oil))",
        "'; DROP TABLE items; --",
        "1 OR 1=1",
        "🛢️🔥",
        "🛢️ oil 🇦🇿",
        "x" * 5000,
        "   ",
        "<b>oil</b> &amp;",
    ],
)
async def test_hostile_search_input_gets_a_proper_answer(
    bot: Readers,
    people: dict[str, Any],
    query: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    reply = await bot.say(people["en"], f"/search {query}")
    text = text_of(reply)
    answers = (tr("en", SEARCH_USAGE), tr("en", SEARCH_NO_WORDS))
    nothing = tr("en", NOTHING_FOUND, query="")[:12]
    acceptable = text.startswith(("🔎 Found", nothing)) or text in answers
    assert acceptable, text
    assert len(text) < 4096
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await bot.store.count_items() > 0  # the table is still there


async def test_stale_and_forged_search_buttons_are_answered(
    bot: Readers, people: dict[str, Any]
) -> None:
    user = people["en"]
    reply = await bot.say(user, "/search oil")
    message_id = reply.result["message_id"]
    expired = tr("en", SEARCH_EXPIRED)
    for data in ("s:2:l:zzzz", "s:0:l:1", "s:2:x:1", "s:", "s:99999:l:1"):
        answer = await bot.press(user, data, message_id, edits=False)
        assert answer["text"] == expired
    answer = await bot.press(user, "s:2:l:1", 9999, edits=False)  # a message the bot lost
    assert answer["text"] == expired


async def test_search_keys_belong_to_the_chat_that_searched_and_survive_a_restart(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, people: dict[str, Any]
) -> None:
    emma, ruslan = people["en"], people["ru"]
    private_query = "OIL REPORT"
    async for readers in start_bot(api, feed_server, db_path):
        reply = await readers.say(emma, f"/search {private_query}")
        message_id = reply.result["message_id"]
        _, buttons = readers.message(EN, message_id)
        key = buttons["▶"].rsplit(":", 1)[1]

        # Another user copies Emma's buttons (or guesses their shape) onto his own message.
        own = (await readers.say(ruslan, "/start")).result["message_id"]
        edits = len(api.calls_to("editMessageText"))
        for data in (buttons["▶"], buttons["🌐 All languages"], f"s:1:a:{key}", "s:1:a:1"):
            answer = await readers.press(ruslan, data, own, edits=False)
            assert answer["text"] == tr("ru", SEARCH_EXPIRED)
        assert len(api.calls_to("editMessageText")) == edits  # nothing was redrawn
        to_ruslan = [c for c in api.calls if c.chat_id == RU and c.text is not None]
        assert not any(private_query.casefold() in (c.text or "").casefold() for c in to_ruslan)
        assert len(key) >= 12 and len(buttons["▶"].encode()) <= 64  # random, still short

        # Emma's own buttons still page her search.
        await readers.press(emma, buttons["▶"], message_id)
        text, buttons = readers.message(EN, message_id)
        assert "Page 2 of 3" in text and private_query in text

    # Restarted on the same database: the buttons of the search made before still work.
    async for readers in start_bot(api, feed_server, db_path):
        await readers.press(emma, buttons["▶"], message_id)
        assert "Page 3 of 3" in readers.message(EN, message_id)[0]
        answer = await readers.press(ruslan, buttons["◀"], own, edits=False)
        assert answer["text"] == tr("ru", SEARCH_EXPIRED)


async def test_a_new_analysis_reindexes_in_the_background_while_search_answers(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, people: dict[str, Any]
) -> None:
    async for _ in start_bot(api, feed_server, db_path):
        pass
    # As the last release left the store: every piece indexed by the analysis before this one.
    store = await Store.open(db_path)
    try:
        await index_store.record_analyzer_version(store, analysis.LEGACY_VERSION)
        items = await index_store.items_to_index(store, below=None, limit=1000)
        await index_store.index_docs(store, search_service.documents(items, legacy=True))
        assert await index_store.analyzer_version(store) == analysis.LEGACY_VERSION
    finally:
        await store.close()

    async for readers in start_bot(api, feed_server, db_path):
        ru = people["ru"]
        # The old index answers from the first moment; then the new one finds more forms.
        assert "Санкции против Ирана" in text_of(await readers.say(ru, "/search Ирана"))

        async def rebuilt(running: Store = readers.store) -> bool:
            return await index_store.analyzer_version(running) == analysis.ANALYZER_VERSION

        await wait_for("the index re-analysed", rebuilt)
        assert "Санкции против Ирана" in text_of(await readers.say(ru, "/search Ираном"))


async def test_search_keys_expire_and_stay_bounded(db_path: Path) -> None:
    store = await Store.open(db_path)
    try:
        day = 86400.0

        async def save(key: str, chat_id: int, at: float) -> None:
            saved = search_keys.SavedSearch("oil", ("oil",), "en", at)
            await search_keys.save(store, key, chat_id, saved, max_age=day, per_chat=3)

        await save("old", EN, 0.0)
        assert await search_keys.load(store, "old", EN, now=day - 1, max_age=day) is not None
        assert await search_keys.load(store, "old", EN, now=day + 1, max_age=day) is None
        assert await search_keys.load(store, "old", RU, now=1, max_age=day) is None
        for n in range(5):
            await save(f"k{n}", EN, day + n)
        await save("ru", RU, day + 9)
        kept = [
            k for k in ("old", "k0", "k1", "k2", "k3", "k4", "ru")
            if await search_keys.load(store, k, RU if k == "ru" else EN, now=day + 9, max_age=day)
        ]  # fmt: skip
        assert kept == ["k2", "k3", "k4", "ru"]  # the chat's three newest, and the other chat's
    finally:
        await store.close()


async def test_control_characters_in_a_search_are_not_echoed(
    bot: Readers, people: dict[str, Any]
) -> None:
    # NUL (which Telegram refuses in any text), other controls, and a lone surrogate.
    reply = await bot.say(people["en"], "/search oil\x00 \x07report\x1b\ud800")
    text = text_of(reply)
    assert text.startswith("🔎 Found 12 pieces for oil report")
    assert not any(ch in reply.params["text"] for ch in "\x00\x07\x1b\ud800")


# ---------------------------------------------------------------------- inline mode and latest


async def test_inline_queries_page_and_send_the_post(bot: Readers, people: dict[str, Any]) -> None:
    user = people["en"]
    answer = await bot.inline(user, "oil")
    results = answer["results"]
    assert len(results) == 10 and answer["next_offset"] == "l:10"
    assert answer["is_personal"] is True
    first = results[0]
    assert first["type"] == "article" and first["title"].startswith(("Oil", "US tightens"))
    content = first["input_message_content"]
    assert (
        content["parse_mode"] == "HTML" and "https://caliber.az/en/post/" in content["message_text"]
    )
    assert "Read more" in content["message_text"]

    more = await bot.inline(user, "oil", answer["next_offset"])
    assert len(more["results"]) == 3 and not more.get("next_offset")  # the last page
    assert {r["id"] for r in results}.isdisjoint({r["id"] for r in more["results"]})

    # The reader's language first; all languages when it has nothing.
    ru_answer = await bot.inline(people["ru"], "Иран")
    assert {r["title"] for r in ru_answer["results"]} == {"Санкции против Ирана", "Иран и Россия"}
    assert [r["title"] for r in (await bot.inline(user, "Баку"))["results"]] == ["Ёлка в Баку"]

    latest = await bot.inline(people["az"], "")
    assert [r["title"] for r in latest["results"]] == [
        "Neftin qiyməti",
        "Iğdır–Naxçıvan qaz kəməri",
    ]
    for hostile in ('"', "NEAR(", "🛢️", "x" * 300):
        assert "results" in await bot.inline(user, hostile)


async def test_latest_counts(bot: Readers, people: dict[str, Any]) -> None:
    user = people["en"]
    assert (await bot.say(user, "/latest")).params["text"].count("<a href=") == 5
    listing = (await bot.say(user, "/latest 3")).params["text"]
    assert listing.count("<a href=") == 3
    assert listing.index("Oil market report 11") < listing.index("Oil market report 10")
    assert (await bot.say(user, "/latest 500")).params["text"].count("<a href=") == 15
    assert (await bot.say(user, "/latest 0")).params["text"].count("<a href=") == 1
    usage = text_of(await bot.say(user, "/latest many"))
    assert usage == tr("en", "Send /latest, or /latest and a number from 1 to 20.")


# ---------------------------------------------------------------------- subscriptions


async def test_subscribers_get_new_pieces_in_their_language(
    bot: Readers, people: dict[str, Any]
) -> None:
    en, ru = people["en"], people["ru"]
    await bot.say(en, "/subscribe")
    await bot.say(ru, "/subscribe")
    assert text_of(await bot.say(en, "/subscribe")) == tr(
        "en", "This chat already gets every new piece in {language}.", language="English"
    )
    sent_en, sent_ru = len(bot.api.sent(EN)), len(bot.api.sent(RU))

    await bot.publish("en", piece("en", 500, "Breaking analysis", "Brand new.", 500))
    await bot.publish("ru", piece("ru", 500, "Новый анализ", "Совсем новое.", 500))
    await bot.api.wait_sent(sent_en + 1, EN)
    await bot.api.wait_sent(sent_ru + 1, RU)
    post = bot.api.sent(EN)[sent_en]
    assert text_of(post).startswith("Breaking analysis") and "Read more" in text_of(post)
    assert text_of(bot.api.sent(RU)[sent_ru]).startswith("Новый анализ")
    assert "Читать далее" in text_of(bot.api.sent(RU)[sent_ru])

    await bot.say(en, "/unsubscribe")
    assert not (await bot.chat(EN)).subscribed
    count = len(bot.api.sent(EN))
    await bot.publish("en", piece("en", 501, "Another one", "Newer.", 501))
    await bot.polled("en", times=3)
    assert len(bot.api.sent(EN)) == count
    # The new piece is searchable at once.
    assert "Another one" in text_of(await bot.say(en, "/search another"))


async def test_blocked_reader_is_deactivated_and_comes_back_with_start(
    bot: Readers, people: dict[str, Any]
) -> None:
    user = people["en"]
    await bot.say(user, "/subscribe")
    bot.api.forbid(EN)
    await bot.publish("en", piece("en", 600, "While blocked", "…", 600))
    await bot.api.wait_for(lambda a: any(c.error_code == 403 for c in a.calls_to("sendMessage")))

    async def deactivated() -> bool:
        return not (await bot.chat(EN)).active

    await wait_for("the blocked reader deactivated", deactivated)

    bot.api.unforbid(EN)
    await bot.say(user, "/start")
    chat = await bot.chat(EN)
    assert chat.active and chat.subscribed
    count = len(bot.api.sent(EN))
    await bot.publish("en", piece("en", 601, "After unblocking", "Welcome back.", 601))
    await bot.api.wait_sent(count + 1, EN)
    assert text_of(bot.api.sent(EN)[-1]).startswith("After unblocking")


async def test_settings_buttons(bot: Readers, people: dict[str, Any]) -> None:
    user = people["az"]
    reply = await bot.say(user, "/settings")
    message_id = reply.result["message_id"]
    text, buttons = bot.message(AZ, message_id)
    assert "Yeni materiallar: deaktiv" in text
    answer = await bot.press(user, buttons["🔔 Abunə ol"], message_id)
    assert answer["text"] == "Abunə oldunuz"
    text, buttons = bot.message(AZ, message_id)
    assert "Yeni materiallar: aktiv" in text and (await bot.chat(AZ)).subscribed
    await bot.press(user, buttons["English"], message_id)
    text, buttons = bot.message(AZ, message_id)
    assert "New pieces: on" in text and "🔕 Unsubscribe" in buttons
    chat = await bot.chat(AZ)
    assert (chat.lang, chat.languages, chat.subscribed) == ("en", ("en",), True)
    await bot.press(user, buttons["🔕 Unsubscribe"], message_id)
    assert not (await bot.chat(AZ)).subscribed
    answer = await bot.press(user, "set:sub:maybe", message_id, edits=False)
    assert answer["text"] == tr("en", STALE_BUTTON)


# ---------------------------------------------------------------------- groups


async def test_only_group_admins_change_group_settings(
    bot: Readers, people: dict[str, Any], api: FakeBotApi
) -> None:
    admin, member = people["admin"], people["member"]
    group = api.chats[GROUP]
    refused = tr("en", ADMINS_ONLY)

    assert text_of(await bot.say(member, "/subscribe", group)) == refused
    assert not (await bot.chat(GROUP)).subscribed
    assert text_of(await bot.say(admin, "/subscribe@test_bot", group)).startswith("✅ Subscribed")
    assert (await bot.chat(GROUP)).subscribed

    # Everyone may search, list and read help in the group.
    assert "Caspian drills" in text_of(await bot.say(member, "/search@test_bot iran", group))
    assert "<a href=" in (await bot.say(member, "/latest 2", group)).params["text"]
    help_text = text_of(await bot.say(member, "/help", group))
    assert "/search" in help_text and tr("en", "For the group's admins:") in help_text
    assert "/why" in help_text and "/channels" not in help_text

    # Language buttons: a member is refused with an alert, an admin changes it.
    prompt = await bot.say(member, "/language", group)
    message_id = prompt.result["message_id"]
    answer = await bot.press(member, "lang:ru", message_id, GROUP, edits=False)
    assert answer["show_alert"] is True and answer["text"] == refused
    assert (await bot.chat(GROUP)).lang == "en"
    await bot.press(admin, "lang:ru", message_id, GROUP)
    assert (await bot.chat(GROUP)).languages == ("ru",)

    # An admin demoted since loses the right at once.
    api.set_member(GROUP, ADMIN, "member")
    reply = await bot.say(admin, "/unsubscribe", group)
    assert text_of(reply) == tr("ru", ADMINS_ONLY)
    # An anonymous admin writes as the group itself.
    anonymous = api.user(
        ANONYMOUS_ADMIN_BOT, "Group", language_code=None, username="GroupAnonymousBot"
    )
    anonymous["is_bot"] = True
    sender = {"id": GROUP, "type": "supergroup", "title": group["title"]}
    reply = await bot.say(anonymous, "/unsubscribe", group, sender_chat=sender)
    assert text_of(reply).startswith("🔕")
    assert not (await bot.chat(GROUP)).subscribed


async def test_one_rule_for_every_setting_of_a_group(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, people: dict[str, Any]
) -> None:
    api.add_chat(LIMITED, "private")
    api.set_member(GROUP, LIMITED, "administrator", can_change_info=False)
    limited = api.user(LIMITED, "Lim", language_code="en")
    admin, operator = people["admin"], people["other"]  # OTHER: an operator, not even a member
    group = api.chats[GROUP]
    refused = tr("en", ADMINS_ONLY)
    async for readers in start_bot(api, feed_server, db_path, ADMIN_USER_IDS=str(OTHER)):
        # An admin without the right to change the group's info is refused everywhere alike.
        assert text_of(await readers.say(limited, "/subscribe", group)) == refused
        assert not (await readers.chat(GROUP)).subscribed
        assert text_of(await readers.say(admin, "/subscribe", group)).startswith("✅ Subscribed")
        assert text_of(await readers.say(limited, "/unsubscribe", group)) == refused
        assert (await readers.chat(GROUP)).subscribed
        prompt = (await readers.say(limited, "/language", group)).result["message_id"]
        answer = await readers.press(limited, "lang:ru", prompt, GROUP, edits=False)
        assert answer["show_alert"] is True and answer["text"] == refused
        assert (await readers.chat(GROUP)).lang == "en"
        listing = await readers.say(limited, "/channels")
        assert text_of(listing) == tr("en", NO_CHATS)
        # The operator may, anywhere.
        assert text_of(await readers.say(operator, "/unsubscribe", group)).startswith("🔕")

        # The creator's panel chooses two feed languages; a reply language chosen later in
        # the group keeps them, and so does subscribing again.
        listing = await readers.say(admin, "/channels")
        panel = listing.result["message_id"]
        await readers.press(admin, cb(GROUP, "open"), panel)
        await readers.press(admin, cb(GROUP, "lang", "ru"), panel)
        assert (await readers.chat(GROUP)).languages == ("en", "ru")
        await readers.press(admin, "lang:az", prompt, GROUP)
        chat = await readers.chat(GROUP)
        assert (chat.lang, chat.languages) == ("az", ("en", "ru"))
        subscribed = text_of(await readers.say(admin, "/subscribe", group))
        assert subscribed == tr("az", SUBSCRIBED, language="English, Русский")
        assert (await readers.chat(GROUP)).languages == ("en", "ru")


async def test_a_rights_check_telegram_cannot_answer_asks_to_try_again(
    bot: Readers, people: dict[str, Any], api: FakeBotApi
) -> None:
    member, group = people["member"], api.chats[GROUP]
    try_again = tr("en", RIGHTS_UNKNOWN)
    api.server_error("getChatMember")
    assert text_of(await bot.say(member, "/subscribe", group)) == try_again
    prompt = (await bot.say(member, "/language", group)).result["message_id"]
    api.server_error("getChatMember", status=502)
    answer = await bot.press(member, "lang:ru", prompt, GROUP, edits=False)
    assert answer["show_alert"] is True and answer["text"] == try_again
    chat = await bot.chat(GROUP)
    assert (chat.lang, chat.subscribed) == ("en", False)
    # Once Telegram answers again, the member hears the rule itself.
    assert text_of(await bot.say(member, "/subscribe", group)) == tr("en", ADMINS_ONLY)


async def test_commands_for_another_bot_are_ignored(
    bot: Readers, people: dict[str, Any], api: FakeBotApi
) -> None:
    admin = people["admin"]
    group = api.chats[GROUP]
    api.push_update(api.make_message_update(group, admin, "/subscribe@other_bot"))
    reply = await bot.say(admin, "/help", group)  # handled after the first one
    assert text_of(reply).startswith("Here is what I can do")
    assert len(api.sent(GROUP)) == 1
    assert not (await bot.chat(GROUP)).subscribed


# ---------------------------------------------------------------------- menus


async def test_command_menus_in_every_language_and_scope(bot: Readers, api: FakeBotApi) -> None:
    await api.wait_for(lambda a: len(a.commands) >= 12)
    scopes = {
        "all_private_chats": ["start", "help", "search", "latest", "language", "subscribe",
                              "unsubscribe", "settings", "follow", "following", "unfollow",
                              "channels"],
        "all_group_chats": ["start", "help", "search", "latest", "following"],
        "all_chat_administrators": ["start", "help", "search", "latest", "language",
                                    "subscribe", "unsubscribe", "settings", "follow",
                                    "following", "unfollow", "why", "here"],
    }  # fmt: skip
    for scope, names in scopes.items():
        for code in ("en", "ru", "az", ""):
            key = (f'{{"type": "{scope}"}}', code)
            assert [c["command"] for c in api.commands[key]] == names, key
    ru = {
        c["command"]: c["description"]
        for c in api.commands[('{"type": "all_private_chats"}', "ru")]
    }
    assert ru["search"] == "Поиск по всем материалам: /search слова"
    default = api.commands[('{"type": "all_private_chats"}', "")]
    assert default[0]["description"] == "Start the bot and choose the language"
