"""Channel admins, end to end: the real bot against the fake Bot API and a local feed server.

Who may run a chat's panel (admin, non-admin, demoted admin, forged callbacks, operators), how
each setting changes the next post, what happens when the bot loses the right to post, /why,
/stats and /here; plus the storage and parsing pieces underneath, on real SQLite files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import Runtime
from bot.config import ConfigError, load_settings
from bot.services.channel_admin import (
    InputKind,
    InputStates,
    PendingInput,
    link_variants,
    message_link,
)
from bot.services.permissions import LOOKUP_BUDGET
from handlers.views.channels import cb, parse_callback
from storage import admin as admin_store
from storage.admin import AuditLine, ChatChange
from storage.models import Chat, ChatSettings, ChatType, DeliveryState, PostStyle
from storage.store import Store
from tests.factories import new_item
from tests.fakes.botapi import ApiCall, FakeBotApi
from tests.fakes.clock import ManualClock
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import TOKEN, bot_env, running_bot

CHANNEL = -1001000000077
ADMIN = 501
STRANGER = 502
OPERATOR = 900
BOT_ID = 123456
BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
NOW = 1_767_225_600.0


def piece(n: int, lang: str = "en", **extra: Any) -> dict[str, Any]:
    return {
        "title": f"Piece {n}",
        "link": f"https://caliber.az/{lang}/post/piece-{n}",
        "guid": f"caliber-{lang}-{n}",
        "description": f"<p>Summary of piece {n}.</p>",
        "pub_date": BASE + timedelta(hours=n),
        "categories": ["Politics"],
        **extra,
    }


class Harness:
    """The running bot, its feeds and the people talking to it."""

    def __init__(self, api: FakeBotApi, feeds: FeedServer, runtime: Runtime) -> None:
        self.api = api
        self.feeds = feeds
        self.runtime = runtime
        self.items: dict[str, list[dict[str, Any]]] = {"en": [], "ru": []}

    @property
    def store(self) -> Store:
        return self.runtime.services.store

    async def publish(self, lang: str, *pieces: dict[str, Any]) -> None:
        """Put new pieces in a feed (newest first, as the site lists them) and await a poll."""
        self.items[lang] = [*pieces, *self.items[lang]]
        self.feeds.set(f"/{lang}/rss", make_rss(self.items[lang], lang=lang))
        await self.polled(lang)

    async def polled(self, lang: str, times: int = 2) -> None:
        path = f"/{lang}/rss"
        seen = len(self.feeds.requests_to(path))
        await self.api.wait_for(lambda _: len(self.feeds.requests_to(path)) >= seen + times, 10)

    async def say(self, user: dict[str, Any], text: str, chat: Any = None, **extra: Any) -> None:
        """`user` sends `text` (in their private chat unless `chat` is given); await the reply."""
        chat = user["id"] if chat is None else chat
        chat_id = chat if isinstance(chat, int) else chat["id"]
        before = len(self.api.sent(chat_id))
        self.api.push_update(self.api.make_message_update(chat, user, text, **extra))
        await self.api.wait_for(lambda a: len(a.sent(chat_id)) > before)

    def last(self, chat_id: int) -> ApiCall:
        return self.api.sent(chat_id)[-1]

    def last_text(self, chat_id: int) -> str:
        return self.api.sent_texts(chat_id)[-1]

    async def press(self, user: dict[str, Any], data: str, message_id: int) -> dict[str, Any]:
        """`user` presses a button; return the callback answer once the bot has handled it."""
        before = len(self.api.callback_answers)
        update = self.api.make_callback_update(user["id"], user, data, message_id)
        self.api.push_update(update)
        await self.api.wait_for(lambda a: len(a.callback_answers) > before)
        return self.api.callback_answers[before]

    def panel(self, user_id: int, message_id: int) -> tuple[str, dict[str, str]]:
        """The panel message as the user sees it now: text and {button label: data}."""
        return self.api.shown(user_id, message_id)

    async def open_panel(self, user: dict[str, Any], chat_id: int = CHANNEL) -> int:
        """/channels, then pick the chat; return the panel's message id."""
        await self.say(user, "/channels")
        listing = self.last(user["id"])
        message_id = listing.result["message_id"]
        await self.press(user, cb(chat_id, "open"), message_id)
        return int(message_id)

    async def chat(self, chat_id: int = CHANNEL) -> Chat:
        chat = await self.store.get_chat(chat_id)
        assert chat is not None
        return chat


def button(buttons: dict[str, str], word: str) -> str:
    """The data of the one button whose label contains `word`."""
    (data,) = [d for label, d in buttons.items() if word in label]
    return data


@pytest.fixture
def people(api: FakeBotApi) -> dict[str, dict[str, Any]]:
    api.add_chat(CHANNEL, "channel", title="Caliber <EN> & Co", username="caliber_en_test")
    for user_id, name in ((ADMIN, "Aysel"), (STRANGER, "Mallory"), (OPERATOR, "Op")):
        api.add_chat(user_id, "private", title=name)
    api.set_member(CHANNEL, ADMIN, "administrator", can_post_messages=True)
    return {
        "admin": api.user(ADMIN, "Aysel", language_code="en"),
        "stranger": api.user(STRANGER, "Mallory", language_code="en"),
        "operator": api.user(OPERATOR, "Op", language_code="ru"),
    }


@pytest.fixture
async def bot(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path, people: dict[str, Any]
) -> AsyncIterator[Harness]:
    """The bot posting the English feed to CHANNEL, its backlog already read."""
    feed_server.set("/en/rss", make_rss([piece(1)]))
    feed_server.set("/ru/rss", make_rss([piece(1, "ru")], lang="ru"))
    env = bot_env(
        api.url,
        {"en": feed_server.url("/en/rss"), "ru": feed_server.url("/ru/rss")},
        db_path,
        CHANNELS=f"en={CHANNEL}",
        ADMIN_USER_IDS=str(OPERATOR),
    )
    async with running_bot(env) as runtime:
        harness = Harness(api, feed_server, runtime)
        harness.items = {"en": [piece(1)], "ru": [piece(1, "ru")]}
        await harness.polled("en")
        await harness.polled("ru")
        await api.wait_for(lambda _: len(runtime.poller._last_error) == 0)
        assert (await harness.chat()).subscribed
        yield harness


# ---------------------------------------------------------------------------------- access


async def test_admin_lists_and_opens_the_panel(bot: Harness, people: dict[str, Any]) -> None:
    admin = people["admin"]
    await bot.say(admin, "/channels")
    listing = bot.last(ADMIN)
    assert "Choose a channel or group" in bot.last_text(ADMIN)
    rows = listing.params["reply_markup"]["inline_keyboard"]
    assert [b["text"] for row in rows for b in row] == ["📢 Caliber <EN> & Co"]

    message_id = listing.result["message_id"]
    answer = await bot.press(admin, rows[0][0]["callback_data"], message_id)
    assert answer.get("show_alert") is not True
    text, buttons = bot.panel(ADMIN, message_id)  # edited in place
    assert text.startswith("⚙️ Settings of Caliber <EN> & Co")
    assert "Status: ▶️ posting" in text and "Languages: English" in text
    assert "Post style: Text with link preview" in text
    for word in ("Languages", "Pause", "Post style", "Silent posts", "Hashtags", "Signature",
                 "Filters", "Preview", "Test post", "Disconnect"):  # fmt: skip
        assert any(word in label for label in buttons), word
    assert all(len(data.encode()) <= 64 for data in buttons.values())
    assert not any("Topic" in label for label in buttons)  # channels have no topics


async def test_non_admin_sees_nothing_and_forged_callbacks_are_refused(
    bot: Harness, people: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    stranger = people["stranger"]
    await bot.say(stranger, "/channels")
    assert "I found no channel or group" in bot.last_text(STRANGER)
    assert "reply_markup" not in bot.last(STRANGER).params

    caplog.set_level(logging.INFO)
    # A callback the stranger crafted for a chat they do not run (on a message they never got).
    answer = await bot.press(stranger, cb(CHANNEL, "silent"), 4242)
    assert answer["show_alert"] is True and "cannot change the settings" in answer["text"]
    assert not (await bot.chat()).settings.silent
    assert any("user 502" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)

    for junk in ("ch:abc", f"ch:{CHANNEL}:evil", f"ch:{CHANNEL}:lang:xx", f"ch:{CHANNEL}:open:1",
                 "ch:" + "9" * 70):  # fmt: skip
        answer = await bot.press(stranger, junk, 4242)
        assert answer["show_alert"] is True and "not valid" in answer["text"]
    assert len(bot.api.callback_answers) == 6  # every query is answered


async def test_demoted_admin_loses_the_panel_at_once(bot: Harness, people: dict[str, Any]) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    _, buttons = bot.panel(ADMIN, message_id)

    # Still an admin who may post, but no longer one who may change the channel's info.
    bot.api.set_member(CHANNEL, ADMIN, "administrator", can_change_info=False)
    answer = await bot.press(admin, button(buttons, "Silent posts"), message_id)
    assert answer["show_alert"] is True
    text, remaining = bot.panel(ADMIN, message_id)
    assert "cannot change the settings" in text and remaining == {}  # the panel is gone
    assert not (await bot.chat()).settings.silent

    bot.api.set_member(CHANNEL, ADMIN, "member")
    await bot.say(admin, "/channels")
    assert "I found no channel or group" in bot.last_text(ADMIN)


async def test_operator_sees_every_chat_and_pauses_one(
    bot: Harness, people: dict[str, Any]
) -> None:
    operator = people["operator"]  # not even a member of the channel; speaks Russian
    await bot.say(operator, "/channels")
    assert "Вы оператор" in bot.last_text(OPERATOR)
    message_id = await bot.open_panel(operator)
    text, buttons = bot.panel(OPERATOR, message_id)
    assert "Настройки: Caliber <EN> & Co" in text and "публикую" in text

    await bot.press(operator, button(buttons, "Пауза"), message_id)
    text, buttons = bot.panel(OPERATOR, message_id)
    assert "на паузе" in text and any("Возобновить" in label for label in buttons)
    assert (await bot.chat()).paused

    await bot.publish("en", piece(2))
    assert bot.api.sent(CHANNEL) == []
    delivery = await _delivery(bot, "https://caliber.az/en/post/piece-2")
    assert delivery.state is DeliveryState.SKIPPED and delivery.last_error == "paused"

    await bot.press(operator, button(buttons, "Возобновить"), message_id)
    await bot.publish("en", piece(3))
    await bot.api.wait_sent(1, CHANNEL)
    assert bot.api.sent_texts(CHANNEL)[0].startswith("Piece 3")


async def test_rights_lookups_are_cached_for_looking_and_bounded_per_command(
    bot: Harness, people: dict[str, Any]
) -> None:
    admin, stranger = people["admin"], people["stranger"]

    def asked(user_id: int | None = None) -> int:
        calls = bot.api.calls_to("getChatMember")
        return sum(1 for c in calls if user_id is None or c.params.get("user_id") == user_id)

    # Listing again within a minute asks Telegram nothing more ...
    await bot.say(admin, "/channels")
    listing = bot.last(ADMIN).result["message_id"]
    before = asked(ADMIN)
    await bot.say(admin, "/channels")
    assert asked(ADMIN) == before and "Choose a channel or group" in bot.last_text(ADMIN)
    # ... but every press that may change something is checked live.
    await bot.press(admin, cb(CHANNEL, "open"), listing)
    assert asked(ADMIN) == before + 1

    # A stranger's /channels or /why costs a few lookups, however many chats the bot is in.
    for n in range(30):
        group = -1001000002000 - n
        bot.api.add_chat(group, "supergroup", title=f"Group {n}")
        await bot.store.upsert_chat(
            group, ChatType.SUPERGROUP, title=f"Group {n}", username=None, default_lang="en",
            now=NOW,
        )  # fmt: skip
    for command in ("/channels", "/why https://caliber.az/en/post/piece-1", "/channels"):
        before = asked()
        await bot.say(stranger, command)
        assert asked() - before <= LOOKUP_BUDGET, command
    assert "I found no channel or group" in bot.api.sent_texts(STRANGER)[0]


async def test_a_rights_check_telegram_cannot_answer_keeps_the_panel(
    bot: Harness, people: dict[str, Any]
) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    bot.api.server_error("getChatMember", status=502)
    answer = await bot.press(admin, cb(CHANNEL, "silent"), message_id)
    assert answer["show_alert"] is True
    assert answer["text"] == "I could not check your rights in this chat just now: " + (
        "Telegram did not answer. Please try again in a minute."
    )
    text, buttons = bot.panel(ADMIN, message_id)
    assert text.startswith("⚙️ Settings of") and buttons  # not taken away
    assert not (await bot.chat()).settings.silent
    await bot.press(admin, cb(CHANNEL, "silent"), message_id)  # pressed again: it works
    assert (await bot.chat()).settings.silent


async def test_ids_telegram_cannot_have_are_refused(
    bot: Harness, people: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    for data in ("ch:99999999999999999999:open", f"ch:{2**52}:open", f"ch:-{2**52}:silent"):
        answer = await bot.press(people["operator"], data, 4242)
        assert answer["show_alert"] is True and "не действует" in answer["text"], data
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert parse_callback(f"ch:-{2**52 - 1}:open") is not None

    good = {"TELEGRAM_BOT_TOKEN": TOKEN, "FEEDS": "en=https://caliber.az/en/rss"}
    assert load_settings(good | {"CHANNELS": f"en=-1001234567890,ru={2**52 - 1}"}).channels
    for chat in ("-99999999999999999999", str(2**52)):
        with pytest.raises(ConfigError):
            load_settings(good | {"CHANNELS": f"en={chat}"})


# ---------------------------------------------------------------------------------- settings


async def test_post_style_changes_the_next_post(bot: Harness, people: dict[str, Any]) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    _, buttons = bot.panel(ADMIN, message_id)
    await bot.publish("en", piece(2))
    (first,) = await bot.api.wait_sent(1, CHANNEL)
    assert first.params["link_preview_options"]["url"] == "https://caliber.az/en/post/piece-2"

    await bot.press(admin, button(buttons, "Post style"), message_id)
    _, styles = bot.panel(ADMIN, message_id)
    assert list(styles)[:3] == [
        "✅ Text with link preview", "▫️ Text without preview", "▫️ Photo with caption",
    ]  # fmt: skip
    answer = await bot.press(admin, button(styles, "Text without"), message_id)
    assert answer["text"] == "Saved."
    assert (await bot.chat()).settings.style is PostStyle.TEXT
    await bot.publish("en", piece(3))
    await bot.api.wait_sent(2, CHANNEL)
    assert bot.last(CHANNEL).params["link_preview_options"] == {"is_disabled": True}

    await bot.press(admin, button(styles, "Photo"), message_id)
    image, broken = "https://caliber.az/img/4.jpg", "https://caliber.az/img/5.jpg"
    bot.api.bad_photo_urls.add(broken)
    await bot.publish(
        "en", piece(6), piece(5, enclosure=broken), piece(4, enclosure=image)
    )  # newest first
    await bot.api.wait_sent(5, CHANNEL)
    photo, fallback, plain = bot.api.sent(CHANNEL)[2:]
    assert photo.method == "sendPhoto" and photo.params["photo"] == image
    assert photo.params["caption"].startswith('<b><a href="https://caliber.az/en/post/piece-4">')
    assert fallback.method == "sendMessage" and "Piece 5" in fallback.params["text"]
    assert plain.method == "sendMessage" and "Piece 6" in plain.params["text"]  # no image


async def test_silent_hashtags_and_signature_change_the_next_post(
    bot: Harness, people: dict[str, Any]
) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    await bot.publish("en", piece(2))
    (before,) = await bot.api.wait_sent(1, CHANNEL)
    assert before.params["disable_notification"] is False
    assert "#Politics" in bot.api.sent_texts(CHANNEL)[0]

    _, buttons = bot.panel(ADMIN, message_id)
    await bot.press(admin, button(buttons, "Silent posts"), message_id)
    text, buttons = bot.panel(ADMIN, message_id)
    assert "Silent posts: on" in text and "🔕 Silent posts: on" in buttons
    await bot.press(admin, button(buttons, "Hashtags"), message_id)
    text, buttons = bot.panel(ADMIN, message_id)
    assert "Hashtags: off" in text

    # The signature is asked for, then typed as the admin's next private message.
    await bot.press(admin, button(buttons, "Signature"), message_id)
    _, signature_buttons = bot.panel(ADMIN, message_id)
    assert "🔗 Use @caliber_en_test" in signature_buttons
    await bot.press(admin, button(signature_buttons, "Set signature"), message_id)
    prompt, _ = bot.panel(ADMIN, message_id)
    assert "Send me the signature" in prompt
    await bot.say(admin, "— <b>Caliber</b> & friends")
    assert "Now: — <b>Caliber</b> & friends" in bot.last_text(ADMIN)
    assert (await bot.chat()).settings.signature == "— <b>Caliber</b> & friends"

    await bot.publish("en", piece(3))
    await bot.api.wait_sent(2, CHANNEL)
    after = bot.last(CHANNEL)
    assert after.params["disable_notification"] is True
    text = bot.api.sent_texts(CHANNEL)[-1]
    assert "#Politics" not in text
    assert text.endswith("— <b>Caliber</b> & friends")  # shown as typed: escaped, not markup
    assert "— &lt;b&gt;Caliber&lt;/b&gt; &amp; friends" in after.params["text"]

    # The channel's own link, then no signature at all.
    await bot.press(admin, button(signature_buttons, "Use @"), message_id)
    assert (await bot.chat()).settings.signature == "@caliber_en_test"
    _, signature_buttons = bot.panel(ADMIN, message_id)
    await bot.press(admin, button(signature_buttons, "Remove signature"), message_id)
    assert (await bot.chat()).settings.signature is None


async def test_signature_input_is_checked_and_cancel_drops_the_question(
    bot: Harness, people: dict[str, Any]
) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    await bot.press(admin, cb(CHANNEL, "sig", "set"), message_id)
    await bot.say(admin, "x" * 201)
    assert "longer than 200 characters" in bot.last_text(ADMIN)
    await bot.say(admin, " \t ")  # only whitespace: an answer, and an empty one
    assert bot.last_text(ADMIN).startswith("The signature cannot be empty.")
    await bot.say(admin, "/cancel")  # still asked: /cancel drops the question
    assert bot.last_text(ADMIN).startswith("Cancelled.")
    assert "⚙️ Settings of" in bot.last_text(ADMIN)
    inputs = _admin_service(bot).inputs
    assert await inputs.peek(ADMIN) is None and (await bot.chat()).settings.signature is None


async def test_filters_skip_pieces_and_why_names_the_rule(
    bot: Harness, people: dict[str, Any]
) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    await bot.press(admin, cb(CHANNEL, "flt"), message_id)
    text, buttons = bot.panel(ADMIN, message_id)
    assert "Filters of Caliber <EN> & Co" in text
    await bot.press(admin, button(buttons, "Exclude keyword"), message_id)
    await bot.say(admin, "war, Qarabağ ,  ")
    assert "Exclude keyword: “war”, “Qarabağ”" in bot.last_text(ADMIN)
    assert (await bot.chat()).settings.exclude_keywords == ("war", "Qarabağ")
    filters_message = bot.last(ADMIN).result["message_id"]  # the answer shows the filters

    await bot.publish(
        "en",
        piece(4, title="Peace talks"),
        piece(3, title="News from QARABAG"),
        piece(2, title="The War in review"),
    )
    await bot.api.wait_sent(1, CHANNEL)
    await bot.polled("en")
    assert [t.split("\n")[0] for t in bot.api.sent_texts(CHANNEL)] == ["Peace talks"]

    await bot.say(admin, "/why https://caliber.az/en/post/piece-2?utm_source=telegram")
    assert "filtered out by the rule “exclude keyword: war”" in bot.last_text(ADMIN)

    # Remove one rule with its button; include a category by typing it.
    _, buttons = bot.panel(ADMIN, filters_message)
    await bot.press(admin, button(buttons, "✖️ Exclude keyword: war"), filters_message)
    assert (await bot.chat()).settings.exclude_keywords == ("Qarabağ",)
    await bot.press(admin, cb(CHANNEL, "flt", "+ic"), filters_message)
    prompt, _ = bot.panel(ADMIN, filters_message)
    assert "Recent categories: Politics" in prompt
    await bot.say(admin, "economy")
    await bot.publish(
        "en", piece(6, categories=["Economy"]), piece(5, title="War again", categories=["Sport"])
    )
    await bot.api.wait_sent(2, CHANNEL)
    assert bot.api.sent_texts(CHANNEL)[-1].startswith("Piece 6")
    await bot.say(admin, "/why https://caliber.az/en/post/piece-5")
    assert "none of the include rules" in bot.last_text(ADMIN)

    await bot.press(admin, cb(CHANNEL, "flt", "clear"), filters_message)
    assert (await bot.chat()).settings == ChatSettings()


async def test_only_pieces_about_its_topics(bot: Harness, people: dict[str, Any]) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    await bot.press(admin, cb(CHANNEL, "flt"), message_id)
    _, buttons = bot.panel(ADMIN, message_id)
    await bot.press(admin, button(buttons, "Only pieces about"), message_id)
    prompt, _ = bot.panel(ADMIN, message_id)
    assert "up to 100 characters" in prompt
    await bot.say(admin, "Iran oil, sanctions, ***")
    answer = bot.last_text(ADMIN)
    assert answer.startswith("A topic needs at least one word")  # "***" is refused, not fatal
    assert "Only pieces about …: “Iran oil”, “sanctions”" in answer
    assert not (await bot.chat()).subscribed  # only its topics now
    filters_message = bot.last(ADMIN).result["message_id"]

    await bot.publish(
        "en",
        piece(4, title="Weather in Baku"),
        piece(3, title="New sanction on Tehran"),  # a word form of "sanctions"
        piece(2, title="Iran pumps more oil"),
    )
    await bot.api.wait_sent(2, CHANNEL)
    await bot.polled("en")
    titles = [t.split("\n")[0] for t in bot.api.sent_texts(CHANNEL)]
    assert titles == ["Iran pumps more oil", "New sanction on Tehran"]
    await bot.say(admin, "/why https://caliber.az/en/post/piece-4")
    assert "takes only the pieces about its topics" in bot.last_text(ADMIN)

    # The panel says what the channel takes; pausing and resuming keeps it.
    panel_id = await bot.open_panel(admin)
    text, buttons = bot.panel(ADMIN, panel_id)
    assert "Status: ▶️ posting the pieces about its topics" in text
    await bot.press(admin, button(buttons, "Pause"), panel_id)
    _, buttons = bot.panel(ADMIN, panel_id)
    await bot.press(admin, button(buttons, "Resume"), panel_id)
    assert not (await bot.chat()).subscribed and not (await bot.chat()).paused

    # An included category adds its pieces to the topics' (everything, narrowed), and goes.
    await bot.press(admin, cb(CHANNEL, "flt", "+ic"), filters_message)
    await bot.say(admin, "Economy")
    assert (await bot.chat()).subscribed
    filters_message = bot.last(ADMIN).result["message_id"]
    _, buttons = bot.panel(ADMIN, filters_message)
    await bot.press(admin, button(buttons, "✖️ Include category: Economy"), filters_message)
    assert not (await bot.chat()).subscribed

    # Dropping the topics one by one: with none left, the channel takes everything again.
    _, buttons = bot.panel(ADMIN, filters_message)
    await bot.press(admin, button(buttons, "✖️ Only pieces about …: Iran oil"), filters_message)
    text, buttons = bot.panel(ADMIN, filters_message)
    assert "“Iran oil”" not in text and not (await bot.chat()).subscribed
    await bot.press(admin, button(buttons, "✖️ Only pieces about …: sanctions"), filters_message)
    assert (await bot.chat()).subscribed
    await bot.publish("en", piece(5, title="Weather again"))
    await bot.api.wait_sent(3, CHANNEL)
    await bot.say(admin, "/channels")
    history = await bot.open_panel(admin)
    _, buttons = bot.panel(ADMIN, history)
    await bot.press(admin, button(buttons, "Changes"), history)
    text, _ = bot.panel(ADMIN, history)
    assert "Only pieces about …: Iran oil, sanctions → sanctions" in text


async def test_languages_choose_the_feeds(bot: Harness, people: dict[str, Any]) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    await bot.press(admin, cb(CHANNEL, "langs"), message_id)
    _, buttons = bot.panel(ADMIN, message_id)
    assert list(buttons)[:3] == ["✅ English", "▫️ Русский", "▫️ Azərbaycanca"]
    await bot.press(admin, button(buttons, "Русский"), message_id)
    assert (await bot.chat()).languages == ("en", "ru")
    await bot.press(admin, button(buttons, "English"), message_id)
    assert (await bot.chat()).languages == ("ru",)
    answer = await bot.press(admin, button(buttons, "Русский"), message_id)
    assert answer["show_alert"] is True and "At least one language" in answer["text"]

    await bot.publish("en", piece(2))
    await bot.publish("ru", piece(2, "ru", title="Материал 2"))
    await bot.api.wait_sent(1, CHANNEL)
    assert bot.api.sent_texts(CHANNEL)[0].startswith("Материал 2")
    assert "Читать далее" in bot.api.sent_texts(CHANNEL)[0]
    await bot.say(admin, "/why https://caliber.az/en/post/piece-2")
    assert "does not take English pieces" in bot.last_text(ADMIN)


async def test_preview_goes_to_the_admin_and_test_post_to_the_channel(
    bot: Harness, people: dict[str, Any]
) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    await bot.press(admin, cb(CHANNEL, "style", "photo"), message_id)
    await bot.publish("en", piece(2, enclosure="https://caliber.az/img/2.jpg"))
    await bot.api.wait_sent(1, CHANNEL)

    answer = await bot.press(admin, cb(CHANNEL, "prev"), message_id)
    assert answer["text"].startswith("Preview sent")
    preview = bot.last(ADMIN)
    assert preview.method == "sendPhoto" and "Piece 2" in preview.params["caption"]
    assert len(bot.api.sent(CHANNEL)) == 1  # nothing more in the channel

    answer = await bot.press(admin, cb(CHANNEL, "test"), message_id)
    assert answer["text"] == "Test post sent to Caliber <EN> & Co."
    assert len(bot.api.sent(CHANNEL)) == 2 and bot.last(CHANNEL).method == "sendPhoto"

    bot.api.fail(
        "sendPhoto", chat_id=CHANNEL, description="Bad Request: CHAT_SEND_PHOTOS_FORBIDDEN"
    )
    answer = await bot.press(admin, cb(CHANNEL, "test"), message_id)
    assert answer["show_alert"] is True
    assert answer["text"] == "Telegram refused the post: BadRequest: Chat_send_photos_forbidden"


async def test_changes_are_audited_with_who_and_when(bot: Harness, people: dict[str, Any]) -> None:
    admin, operator = people["admin"], people["operator"]
    message_id = await bot.open_panel(admin)
    await bot.press(admin, cb(CHANNEL, "silent"), message_id)
    await bot.press(admin, cb(CHANNEL, "style", "text"), message_id)
    operator_panel = await bot.open_panel(operator)
    await bot.press(operator, cb(CHANNEL, "pause"), operator_panel)

    await bot.press(admin, cb(CHANNEL, "hist"), message_id)
    text, _ = bot.panel(ADMIN, message_id)
    lines = text.split("\n")
    assert lines[0] == "Recent changes in Caliber <EN> & Co:"
    assert lines[2].endswith("Op (900): Paused: off → on")  # newest first
    assert lines[3].endswith(
        "Aysel (501): Post style: Text with link preview → Text without preview"
    )
    assert lines[4].endswith("Aysel (501): Silent posts: off → on")
    assert re.match(r"\d{1,2} \w+ 20\d\d, \d\d:\d\d · ", lines[4])


async def test_disconnect_stops_posting_and_leaves(bot: Harness, people: dict[str, Any]) -> None:
    admin = people["admin"]
    message_id = await bot.open_panel(admin)
    await bot.press(admin, cb(CHANNEL, "disc"), message_id)
    text, buttons = bot.panel(ADMIN, message_id)
    assert text.startswith("Disconnect Caliber <EN> & Co?")
    await bot.press(admin, button(buttons, "Yes, disconnect"), message_id)
    text, _ = bot.panel(ADMIN, message_id)
    assert text == "Caliber <EN> & Co is disconnected."
    chat = await bot.chat()
    assert not chat.active and not chat.subscribed
    (left,) = bot.api.calls_to("leaveChat")
    assert left.ok and left.chat_id == CHANNEL  # and Telegram took it: the bot has left
    assert bot.api.members[(CHANNEL, bot.api.bot_user["id"])]["status"] == "left"
    await bot.publish("en", piece(2))
    assert bot.api.sent(CHANNEL) == []
    await bot.say(admin, "/channels")
    assert "I found no channel or group" in bot.last_text(ADMIN)


# ---------------------------------------------------------------------------------- no right


@pytest.mark.parametrize(
    ("code", "description"),
    [
        (400, "Bad Request: not enough rights to send text messages to the chat"),
        (403, "Forbidden: need administrator rights in the channel chat"),
    ],
)
async def test_missing_post_right_pauses_and_tells_the_admins_once(
    bot: Harness, people: dict[str, Any], code: int, description: str
) -> None:
    admin = people["admin"]
    bot.api.set_member(CHANNEL, BOT_ID, "administrator", can_post_messages=False)
    bot.api.fail("sendMessage", chat_id=CHANNEL, error_code=code, description=description, times=9)
    await bot.publish("en", piece(3), piece(2))
    notice = (await bot.api.wait_sent(1, ADMIN))[0]
    text = bot.api.sent_texts(ADMIN)[0]
    assert "I cannot post in Caliber <EN> & Co" in text and "“Post messages” right" in text
    assert description.split(": ", 1)[1][1:] in text  # Telegram's reason, as PTB words it
    assert "&lt;EN&gt;" in notice.params["text"]
    chat = await bot.chat()
    assert chat.paused and chat.active

    await bot.publish("en", piece(4))
    await bot.polled("en", 3)
    assert len(bot.api.calls_to("sendMessage")) == 2  # one refused post, one notice: no storm
    assert bot.api.sent(STRANGER) == []  # not an admin
    assert (await _delivery(bot, "https://caliber.az/en/post/piece-2")).state is (
        DeliveryState.FAILED
    )
    assert (await _delivery(bot, "https://caliber.az/en/post/piece-3")).last_error == "paused"
    assert (await _delivery(bot, "https://caliber.az/en/post/piece-4")).last_error == "paused"
    await bot.say(admin, "/why https://caliber.az/en/post/piece-2")
    assert f"failed: Telegram answered “{'Forbidden' if code == 403 else 'BadRequest'}: " in (
        bot.last_text(ADMIN)
    )

    # The panel says why; resuming waits until the bot has the right again.
    message_id = await bot.open_panel(admin)
    text, _ = bot.panel(ADMIN, message_id)
    assert "paused because I could not post there" in text
    assert "give me the “Post messages” right" in text
    answer = await bot.press(admin, cb(CHANNEL, "resume"), message_id)
    assert answer["show_alert"] is True and "still cannot post" in answer["text"]
    assert (await bot.chat()).paused

    bot.api.set_member(CHANNEL, BOT_ID, "administrator")
    bot.api._faults.clear()
    await bot.press(admin, cb(CHANNEL, "resume"), message_id)
    assert not (await bot.chat()).paused
    assert await admin_store.get_incident(bot.store, CHANNEL) is None
    await bot.publish("en", piece(5))
    await bot.api.wait_sent(1, CHANNEL)
    assert bot.api.sent_texts(CHANNEL)[0].startswith("Piece 5")
    notices = [t for t in bot.api.sent_texts(ADMIN) if t.startswith("⚠️ I cannot post")]
    assert len(notices) == 1


async def test_a_group_without_the_send_right_is_paused_too(
    bot: Harness, people: dict[str, Any]
) -> None:
    group = -1001000000099
    bot.api.add_chat(group, "supergroup", title="Readers")
    bot.api.set_member(group, ADMIN, "creator")
    bot.api.set_member(
        group, BOT_ID, "restricted", can_send_messages=False, can_react_to_messages=True
    )
    await bot.store.upsert_chat(
        group, ChatType.SUPERGROUP, title="Readers", username=None, default_lang="en",
        now=NOW, added_by=ADMIN, subscribed=True,
    )  # fmt: skip
    bot.api.fail(
        "sendMessage", chat_id=group,
        description="Bad Request: not enough rights to send text messages to the chat",
    )  # fmt: skip
    await bot.publish("en", piece(2))
    await bot.api.wait_sent(1, ADMIN)
    assert "“Send messages” right" in bot.api.sent_texts(ADMIN)[0]
    assert (await bot.chat(group)).paused
    assert len(bot.api.sent(CHANNEL)) == 1  # the channel is not affected


# ---------------------------------------------------------------------------------- /why


async def test_why_explains_each_state(bot: Harness, people: dict[str, Any]) -> None:
    admin = people["admin"]

    async def why(link: str) -> str:
        await bot.say(admin, f"/why {link}")
        return bot.last_text(ADMIN)

    assert "Send /why with the article's link" in (await _say_text(bot, admin, "/why"))
    assert "I have not seen this article" in await why("https://caliber.az/en/post/nope")
    assert "first-run backlog" in await why("https://caliber.az/en/post/piece-1")

    await bot.publish("en", piece(2))
    (sent,) = await bot.api.wait_sent(1, CHANNEL)
    answer = await why("caliber.az/en/post/piece-2/")
    assert "Caliber <EN> & Co: ✅ sent on" in answer and "open the post" in answer
    mid = sent.result["message_id"]
    assert f'href="https://t.me/caliber_en_test/{mid}"' in bot.last(ADMIN).params["text"]

    await bot.publish("en", piece(3, pub_date=datetime(2000, 1, 1, tzinfo=UTC)))
    assert "older than 3650 days" in await why("https://caliber.az/en/post/piece-3")

    bot.api.fail("sendMessage", chat_id=CHANNEL, description="Bad Request: can't parse entities")
    await bot.publish("en", piece(4))
    await bot.api.wait_for(lambda a: any(c.error_code == 400 for c in a.calls_to("sendMessage")))
    await bot.polled("en")
    assert "failed: Telegram answered “BadRequest: Can't parse entities”" in (
        await why("https://caliber.az/en/post/piece-4")
    )

    await bot.store.update_chat(CHANNEL, NOW, paused=True)
    await bot.publish("en", piece(5))
    assert "not sent: posting was paused" in await why("https://caliber.az/en/post/piece-5")

    await bot.store.update_chat(CHANNEL, NOW, paused=False)
    bot.api.server_error("sendMessage")
    await bot.publish("en", piece(6))
    await bot.api.wait_for(lambda _: _pending_errors(bot) == 1)
    assert "waiting to be sent again (the last try failed:" in await why(
        "https://caliber.az/en/post/piece-6"
    )

    # A private channel's posts are linked through t.me/c/.
    chat = await bot.chat()
    private = Chat(**{**_fields(chat), "username": None})
    assert message_link(private, 7) == "https://t.me/c/1000000077/7"


async def test_why_in_a_group_is_for_its_admins(bot: Harness, people: dict[str, Any]) -> None:
    group = -1001000000055
    bot.api.add_chat(group, "supergroup", title="Readers")
    bot.api.set_member(group, ADMIN, "administrator", can_change_info=False)
    await bot.store.upsert_chat(
        group, ChatType.SUPERGROUP, title="Readers", username=None, default_lang="en",
        now=NOW, subscribed=True,
    )  # fmt: skip
    await bot.publish("en", piece(2))
    await bot.api.wait_sent(1, group)
    link = "https://caliber.az/en/post/piece-2"
    await bot.say(people["stranger"], f"/why {link}", chat=group)
    assert "you are not one" in bot.last_text(group)
    await bot.say(people["admin"], f"/why {link}", chat=group)
    answer = bot.last_text(group)
    assert "Readers: ✅ sent on" in answer and "Caliber <EN>" not in answer  # this chat only


# ---------------------------------------------------------------------------------- /stats


async def test_stats_for_operators_only(bot: Harness, people: dict[str, Any]) -> None:
    await bot.say(people["admin"], "/stats")
    assert bot.last_text(ADMIN) == "/stats is only for the bot's operators."

    bot.api.retry_after(CHANNEL, 1)
    await bot.publish("en", piece(2))
    await bot.api.wait_sent(1, CHANNEL, timeout=10)
    # Outcomes are recorded in batches just after Telegram answers.
    await bot.api.wait_for(lambda _: _count(bot, "state = 'sent'") == 1)
    await bot.say(people["operator"], "/stats")
    text = bot.last_text(OPERATOR)  # in the operator's language
    assert text.startswith("📊 Состояние бота")
    assert bot.feeds.url("/en/rss") in text and "✅ в порядке" in text
    assert "ошибок подряд: 0" in text and "материалов: 2" in text
    assert "каналы: активны 1" in text and "личные чаты: пока нет" in text
    assert "отправлено 1" in text and "ответов 429: 1" in text
    assert "Последние ошибки" in text and "· 429 · -1001000000077: RetryAfter" in text


# ---------------------------------------------------------------------------------- /here


async def test_here_sends_the_posts_into_a_forum_topic(
    bot: Harness, people: dict[str, Any]
) -> None:
    forum = bot.api.add_chat(-1001000000088, "supergroup", title="Forum", is_forum=True)
    bot.api.set_member(forum["id"], ADMIN, "administrator", can_change_info=True)
    await bot.store.upsert_chat(
        forum["id"], ChatType.SUPERGROUP, title="Forum", username=None, default_lang="en",
        now=NOW, subscribed=True,
    )  # fmt: skip
    created = {
        "message_id": 77, "date": 1, "chat": forum, "from": people["admin"],
        "message_thread_id": 77, "forum_topic_created": {"name": "News", "icon_color": 7322096},
    }  # fmt: skip
    topic = {"message_thread_id": 77, "is_topic_message": True, "reply_to_message": created}

    await bot.say(people["stranger"], "/here", chat=forum, **topic)
    assert "Only the group's creator and administrators" in bot.last_text(forum["id"])
    await bot.say(people["admin"], "/here", chat=forum, **topic)
    assert bot.last_text(forum["id"]).startswith("✅ From now on my posts in this group go to")
    assert bot.last(forum["id"]).params.get("message_thread_id") == 77  # answered in the topic
    assert (await bot.chat(forum["id"])).settings.thread_id == 77

    await bot.publish("en", piece(2))
    await bot.api.wait_for(lambda a: len(a.sent(forum["id"])) == 3)
    assert bot.last(forum["id"]).params["message_thread_id"] == 77

    # The panel shows the topic by name and offers it (and the main chat) as choices.
    message_id = await bot.open_panel(people["admin"], forum["id"])
    text, buttons = bot.panel(ADMIN, message_id)
    assert "Topic: News" in text
    await bot.press(people["admin"], button(buttons, "Topic"), message_id)
    _, choices = bot.panel(ADMIN, message_id)
    assert "✅ News" in choices
    await bot.press(people["admin"], button(choices, "Main chat"), message_id)
    assert (await bot.chat(forum["id"])).settings.thread_id is None


async def test_topics_the_bot_sees_are_offered(bot: Harness, people: dict[str, Any]) -> None:
    forum = bot.api.add_chat(-1001000000066, "supergroup", title="Forum", is_forum=True)
    await bot.store.upsert_chat(
        forum["id"], ChatType.SUPERGROUP, title="Forum", username=None, default_lang="en",
        now=NOW, subscribed=True,
    )  # fmt: skip
    bot.api.push_update({"message": {
        "message_id": 12, "date": 1, "chat": forum, "from": people["admin"],
        "message_thread_id": 12, "is_topic_message": True,
        "forum_topic_created": {"name": "Analytics", "icon_color": 7322096},
    }})  # fmt: skip
    await bot.api.wait_for(lambda _: _topics_seen(bot) > 0)
    topics = await admin_store.list_topics(bot.store, forum["id"])
    assert [(t.thread_id, t.name) for t in topics] == [(12, "Analytics")]


# ---------------------------------------------------------------------------------- pieces


def test_callback_data_is_short_and_strictly_parsed() -> None:
    assert parse_callback("ch:list") is not None
    press = parse_callback(f"ch:{CHANNEL}:flt:-xk.0a1b2c3d")
    assert press is not None and (press.chat_id, press.action, press.arg) == (
        CHANNEL, "flt", "-xk.0a1b2c3d",
    )  # fmt: skip
    for bad in ("", "ch:", "ch:list:x", f"ch:{CHANNEL}", f"ch:{CHANNEL}:open:x",
                f"ch:{CHANNEL}:style:bold", f"ch:{CHANNEL}:flt:-xk.zz", "x" * 65,
                f"ch:{CHANNEL}:topic:-1", f"ch:{CHANNEL}:lang:en:ru", "ch:1.5:open"):  # fmt: skip
        assert parse_callback(bad) is None, bad
    longest = cb(-1009999999999999, "flt", "-xc.ffffffff")
    assert len(longest.encode()) <= 64


async def test_input_questions_expire_and_stay_bounded(store_target: str) -> None:
    """The panel's open questions live in the store (any instance takes the answer), on both
    back ends: each expires, and only the newest `capacity` stay open."""
    store = await Store.open(store_target)
    try:
        clock = ManualClock()
        states = InputStates(store, clock, ttl=60, capacity=3)
        await states.expect(1, CHANNEL, InputKind.SIGNATURE)
        await clock.advance(59)
        assert await states.peek(1) == PendingInput(CHANNEL, InputKind.SIGNATURE)
        await clock.advance(1)
        assert await states.peek(1) is None
        for user in range(10):
            await states.expect(user, CHANNEL, InputKind.EXCLUDE_KEYWORD)
            await clock.advance(1)
        assert [await states.peek(u) is not None for u in range(10)] == [False] * 7 + [True] * 3
        assert await states.pop(9) is not None and await states.pop(9) is None
    finally:
        await store.close()


def test_links_are_matched_the_way_they_are_stored() -> None:
    variants = link_variants("caliber.az/en/post/1/?utm_source=tg&id=3")
    assert variants[0] == "https://caliber.az/en/post/1/?id=3"
    assert "http://caliber.az/en/post/1/?id=3" in variants
    assert link_variants("https://caliber.az/en/post/1")[1] == "https://caliber.az/en/post/1/"


async def test_settings_changes_are_stored_with_their_author(db_path: Path) -> None:
    store = await Store.open(db_path)
    try:
        await store.upsert_chat(
            CHANNEL, ChatType.CHANNEL, title="c", username=None, default_lang="en", now=NOW,
            subscribed=True,
        )  # fmt: skip
        feed = await store.ensure_feed("https://caliber.az/en/rss", "en")
        await store.store_poll(
            feed.id, [], etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
            max_age=1e9, backfill=0,
        )  # fmt: skip
        await store.store_poll(
            feed.id, [new_item(1)], etag=None, last_modified=None, now=NOW, next_poll_at=NOW,
            max_age=1e9, backfill=0,
        )  # fmt: skip

        def pause(chat: Chat) -> ChatChange:
            return ChatChange((AuditLine("paused", "off", "on"),), paused=True)

        result = await admin_store.change_chat(
            store, CHANNEL, pause, user_id=ADMIN, user_name="Aysel", now=NOW + 1
        )
        assert result is not None and result[0].paused
        assert (
            await admin_store.change_chat(store, 42, pause, user_id=ADMIN, user_name="x", now=NOW)
            is None
        )
        (change,) = await admin_store.list_changes(store, CHANNEL)
        assert change == admin_store.SettingsChange(
            CHANNEL, ADMIN, "Aysel", NOW + 1, "paused", "off", "on"
        )
        # Pausing held what was queued.
        assert (await store.delivery_counts())[DeliveryState.SKIPPED] == 1
        unchanged = await admin_store.change_chat(
            store, CHANNEL, lambda chat: None, user_id=ADMIN, user_name="x", now=NOW
        )
        assert unchanged is not None and unchanged[1] is None
        assert len(await admin_store.list_changes(store, CHANNEL)) == 1
    finally:
        await store.close()


async def test_an_incident_is_reported_once_until_resumed(db_path: Path) -> None:
    store = await Store.open(db_path)
    try:
        await store.upsert_chat(
            CHANNEL, ChatType.CHANNEL, title="c", username=None, default_lang="en", now=NOW,
            subscribed=True,
        )  # fmt: skip
        assert await admin_store.pause_for_incident(store, CHANNEL, "no rights", "post", NOW)
        assert not await admin_store.pause_for_incident(store, CHANNEL, "again", "post", NOW)
        incident = await admin_store.get_incident(store, CHANNEL)
        assert incident == admin_store.Incident(CHANNEL, "no rights", "post", NOW)
        (change,) = await admin_store.list_changes(store, CHANNEL)
        assert change.user_id is None and change.what == "paused"  # the bot did it

        def resume(chat: Chat) -> ChatChange:
            return ChatChange((AuditLine("paused", "on", "off"),), paused=False)

        await admin_store.change_chat(store, CHANNEL, resume, user_id=1, user_name="a", now=NOW)
        assert await admin_store.get_incident(store, CHANNEL) is None
        assert await admin_store.pause_for_incident(store, CHANNEL, "no rights", "post", NOW)
    finally:
        await store.close()


async def test_topics_keep_their_names(db_path: Path) -> None:
    store = await Store.open(db_path)
    try:
        await admin_store.remember_topic(store, CHANNEL, 5, "Unknown chat", NOW)
        assert await admin_store.list_topics(store, CHANNEL) == []  # only chats the bot knows
        await store.upsert_chat(
            CHANNEL, ChatType.SUPERGROUP, title="f", username=None, default_lang="en", now=NOW
        )
        await admin_store.remember_topic(store, CHANNEL, 5, "News", NOW)
        await admin_store.remember_topic(store, CHANNEL, 5, "", NOW + 1)  # name unknown
        (topic,) = await admin_store.list_topics(store, CHANNEL)
        assert topic.name == "News"
    finally:
        await store.close()


# ---------------------------------------------------------------------------------- helpers


def _admin_service(bot: Harness) -> Any:
    return bot.runtime.services.channels


async def _delivery(bot: Harness, link: str) -> Any:
    (item,) = await bot.store.find_items_by_link(link)
    delivery = await bot.store.get_delivery(item.id, CHANNEL)
    assert delivery is not None
    return delivery


async def _say_text(bot: Harness, user: dict[str, Any], text: str) -> str:
    await bot.say(user, text)
    return bot.last_text(user["id"])


def _count(bot: Harness, where: str) -> int:
    """Count delivery rows matching `where` (read straight from the database file)."""
    import sqlite3

    conn = sqlite3.connect(bot.runtime.settings.database_path)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM deliveries WHERE {where}").fetchone()[0])
    finally:
        conn.close()


def _pending_errors(bot: Harness) -> int:
    """Pending deliveries whose last try failed (a 5xx spends no attempt, but is recorded)."""
    import sqlite3

    conn = sqlite3.connect(bot.runtime.settings.database_path)
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND last_error IS NOT NULL"
        ).fetchone()
        return int(row[0] or 0)
    finally:
        conn.close()


def _topics_seen(bot: Harness) -> int:
    import sqlite3

    conn = sqlite3.connect(bot.runtime.settings.database_path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM forum_topics").fetchone()[0])
    finally:
        conn.close()


def _fields(chat: Chat) -> dict[str, Any]:
    return {name: getattr(chat, name) for name in Chat.__dataclass_fields__}
