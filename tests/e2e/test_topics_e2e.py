"""Followed topics, end to end: /follow, /following, /unfollow and their buttons, and new
pieces reaching the chats whose topics they match, through the fake Bot API."""

from __future__ import annotations

from typing import Any

from handlers.views import topics as views
from handlers.views.readers import ADMINS_ONLY
from storage import follows
from tests.e2e.test_readers_e2e import EN, GROUP, RU, Readers, piece, text_of, tr


async def _nothing_new(bot: Readers, chat_id: int, count: int, lang: str = "en") -> None:
    """Two more polls of the feed went by and the chat got nothing more."""
    await bot.polled(lang, times=3)
    assert len(bot.api.sent(chat_id)) == count


async def test_a_reader_follows_a_topic_and_gets_only_its_pieces(
    bot: Readers, people: dict[str, Any]
) -> None:
    en = people["en"]
    reply = await bot.say(en, "/follow  Iran   oil ")
    assert text_of(reply) == "\n".join(
        [
            "Following “Iran oil”.",
            "",
            "This chat receives only the pieces about its topics (send /subscribe for all).",
        ]
    )
    buttons = [b["text"] for row in reply.params["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == ["🗣 Iran oil", "✖"]
    again = await bot.say(en, "/follow OIL iran")  # the same words: the same topic
    assert text_of(again).startswith("This chat already follows “Iran oil”.")

    count = len(bot.api.sent(EN))
    await bot.publish("en", piece("en", 700, "Iran raises its oil output", "Exports grow.", 700))
    await bot.api.wait_sent(count + 1, EN)
    assert text_of(bot.api.sent(EN)[count]).startswith("Iran raises its oil output")
    count += 1
    # One of the two words is not enough; nor is a piece in another language.
    await bot.publish("en", piece("en", 701, "Iran holds talks", "Diplomacy.", 701))
    await bot.publish("ru", piece("ru", 701, "Iran oil", "Нефть Ирана.", 701))
    await _nothing_new(bot, EN, count)


async def test_word_forms_meet_in_russian(bot: Readers, people: dict[str, Any]) -> None:
    ru = people["ru"]
    await bot.say(ru, "/start")
    await bot.say(ru, "/follow Ираном")
    count = len(bot.api.sent(RU))
    await bot.publish("ru", piece("ru", 710, "Переговоры с Ираном", "Делегации встретились.", 710))
    await bot.publish("ru", piece("ru", 711, "Нефть Ирана дорожает", "Цены растут.", 711))
    await bot.api.wait_sent(count + 2, RU)
    titles = [text_of(call) for call in bot.api.sent(RU)[count:]]
    assert titles[0].startswith("Переговоры с Ираном")
    assert titles[1].startswith("Нефть Ирана дорожает")


async def test_a_subscriber_gets_a_followed_piece_once(
    bot: Readers, people: dict[str, Any]
) -> None:
    en = people["en"]
    await bot.say(en, "/subscribe")
    reply = await bot.say(en, "/follow sanctions")
    assert "also receives every new piece" in text_of(reply)
    await bot.say(en, "/follow Iran")
    count = len(bot.api.sent(EN))
    await bot.publish("en", piece("en", 720, "New sanctions on Iran", "Both topics.", 720))
    await bot.api.wait_sent(count + 1, EN)
    await _nothing_new(bot, EN, count + 1)


async def test_following_lists_and_buttons_switch_and_drop(
    bot: Readers, people: dict[str, Any]
) -> None:
    en = people["en"]
    await bot.say(en, "/follow Iran")
    await bot.say(en, "/follow Baku")
    listing = await bot.say(en, "/following")
    message_id = listing.result["message_id"]
    text, buttons = bot.message(EN, message_id)
    assert text.splitlines()[:4] == [
        "Topics this chat follows (2 of 20):",
        "",
        "1. Iran · English",
        "2. Baku · English",
    ]
    answer = await bot.press(en, buttons["🗣 1. Iran"], message_id)
    assert answer["text"] == "Now in every language."
    text, buttons = bot.message(EN, message_id)
    assert "1. Iran · all languages" in text and "🌐 1. Iran" in buttons
    # Every language: a Russian piece that writes the name in Latin letters reaches the chat.
    count = len(bot.api.sent(EN))
    await bot.publish("ru", piece("ru", 730, "Iran и Россия", "Встреча в Тегеране.", 730))
    await bot.api.wait_sent(count + 1, EN)

    drop = [data for label, data in buttons.items() if label == "✖"]
    assert len(drop) == 1  # the labels repeat: one dict entry, the last row's (Baku)
    answer = await bot.press(en, drop[0], message_id)
    assert answer["text"] == "No longer following “Baku”."
    text, _ = bot.message(EN, message_id)
    assert "Baku" not in text and "(1 of 20)" in text

    dropped = await bot.say(en, "/unfollow IRAN")
    assert text_of(dropped) == "No longer following “Iran”."
    assert text_of(await bot.say(en, "/unfollow Iran")).startswith("This chat does not follow")
    assert text_of(await bot.say(en, "/following")) == tr("en", views.LIST_EMPTY)
    assert await follows.version(bot.store) is None  # the last follower took the topic along


async def test_odd_topics_get_an_answer(bot: Readers, people: dict[str, Any]) -> None:
    en = people["en"]
    assert text_of(await bot.say(en, "/follow")).startswith("Send /follow with the words")
    assert text_of(await bot.say(en, "/follow ((( *** ")) == tr("en", views.NO_WORDS)
    too_long = "word " * 21
    assert text_of(await bot.say(en, f"/follow {too_long}")) == tr("en", views.TOO_LONG, limit=100)
    hostile = '"; DROP TABLE follows; -- <b>x</b> NEAR(a b) OR *'
    reply = await bot.say(en, f"/follow {hostile}")
    assert text_of(reply).startswith("Following “")
    for n in range(19):
        await bot.say(en, f"/follow topic{n}")
    assert text_of(await bot.say(en, "/follow one more")) == tr("en", views.TOO_MANY, limit=20)
    assert len(await follows.of_chat(bot.store, EN)) == 20


async def test_in_a_group_only_admins_change_topics(bot: Readers, people: dict[str, Any]) -> None:
    group = {"id": GROUP, "type": "supergroup", "title": "Readers' club"}
    refused = await bot.say(people["member"], "/follow Iran", chat=group)
    assert text_of(refused) == tr("en", ADMINS_ONLY)
    assert await follows.of_chat(bot.store, GROUP) == []
    done = await bot.say(people["admin"], "/follow Iran", chat=group)
    assert text_of(done).startswith("Following “Iran”.")
    listing = await bot.say(people["member"], "/following", chat=group)  # anyone may look
    message_id = listing.result["message_id"]
    _, buttons = bot.message(GROUP, message_id)
    answer = await bot.press(people["member"], buttons["✖"], message_id, GROUP, edits=False)
    assert answer["text"] == tr("en", ADMINS_ONLY)
    assert len(await follows.of_chat(bot.store, GROUP)) == 1
