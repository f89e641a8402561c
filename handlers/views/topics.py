"""Followed topics' messages and buttons: /follow, /following, /unfollow.

Button data goes through handlers.views.callbacks.TOPIC: "tp:lang:<follow id>" switches a
topic between the chat's languages and every language, "tp:drop:<follow id>" stops following
it. A follow id is only ever acted on for the chat the button sits in (storage.follows checks
the pair), so a forged id reaches nobody else's topics.
"""

from __future__ import annotations

from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.services import readers
from bot.services.topics import MAX_TOPIC_CHARS, MAX_TOPICS, Followed, Refusal
from bot.text.i18n import N_
from bot.text.render import Renderer, bold
from handlers.views.callbacks import TOPIC
from handlers.views.readers import Reply, plain
from storage.follows import Follow
from storage.models import Chat

USAGE = N_(
    "Send /follow with the words of a topic, e.g. {example}: every new piece that mentions "
    "all of them, in any form, will reach this chat."
)
USAGE_EXAMPLE = N_("/follow Iran oil")
FOLLOWING_NOW = N_("Following “{topic}”.")
ALREADY_FOLLOWING = N_("This chat already follows “{topic}”.")
ALSO_EVERYTHING = N_(
    "This chat also receives every new piece; send /unsubscribe to receive only your topics."
)
ONLY_TOPICS = N_("This chat receives only the pieces about its topics (send /subscribe for all).")
TOO_LONG = N_("A topic is at most {limit} characters. Send a shorter one.")
NO_WORDS = N_("A topic needs at least one word of letters or digits.")
TOO_MANY = N_("This chat follows {limit} topics, the most it may. Drop one with /unfollow first.")
LIST_TITLE = N_("Topics this chat follows ({n} of {limit}):")
LIST_EMPTY = N_("This chat follows no topics. Send /follow with some words to follow one.")
LIST_HELP = N_(
    "🌐 takes pieces in every language; 🗣 only in the chat's languages. ✖ drops a topic."
)
LINE_ALL = N_("{number}. {topic} · all languages")
LINE_CHAT = N_("{number}. {topic} · {languages}")
DROPPED = N_("No longer following “{topic}”.")
NOT_FOUND = N_("This chat does not follow “{topic}”. Send /following to see its topics.")
GONE = N_("That topic is no longer followed here.")
SCOPE_ALL = N_("Now in every language.")
SCOPE_CHAT = N_("Now only in this chat's languages.")
ALL_BUTTON = "🌐"
CHAT_BUTTON = "🗣"
DROP_BUTTON = "✖"
BUTTON_TOPIC_CHARS = 24


def _topic(text: str, limit: int = BUTTON_TOPIC_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def refusal(renderer: Renderer, lang: str, why: Refusal) -> str:
    """Why a topic was not followed, as HTML (also the panel's answer)."""
    if why is Refusal.TOO_LONG:
        return renderer.message(lang, TOO_LONG, limit=MAX_TOPIC_CHARS)
    if why is Refusal.NO_WORDS:
        return renderer.message(lang, NO_WORDS)
    return renderer.message(lang, TOO_MANY, limit=MAX_TOPICS)


def follow_result(renderer: Renderer, chat: Chat, result: Followed) -> Reply:
    """The answer to /follow WORDS."""
    lang = chat.lang
    if result.follow is None:
        return Reply(refusal(renderer, lang, result.refusal or Refusal.TOO_MANY))
    follow = result.follow
    head = FOLLOWING_NOW if result.added else ALREADY_FOLLOWING
    tail = ALSO_EVERYTHING if chat.subscribed else ONLY_TOPICS
    html = "\n".join(
        [renderer.message(lang, head, topic=follow.text), "", renderer.message(lang, tail)]
    )
    return Reply(html, InlineKeyboardMarkup([_row(renderer, chat, follow)]))


def usage(renderer: Renderer, lang: str) -> Reply:
    example = plain(renderer, lang, USAGE_EXAMPLE)
    return Reply(renderer.message(lang, USAGE, example=example))


def following(renderer: Renderer, chat: Chat, follows: Sequence[Follow]) -> Reply:
    """The /following (and bare /unfollow) message: the topics with a button row each."""
    lang = chat.lang
    if not follows:
        return Reply(renderer.message(lang, LIST_EMPTY))
    languages = ", ".join(readers.language_name(code) for code in chat.languages)
    lines = [bold(plain(renderer, lang, LIST_TITLE, n=len(follows), limit=MAX_TOPICS)), ""]
    for number, follow in enumerate(follows, 1):
        line = LINE_ALL if follow.any_lang else LINE_CHAT
        lines.append(
            renderer.message(lang, line, number=number, topic=follow.text, languages=languages)
        )
    lines += ["", renderer.message(lang, LIST_HELP)]
    keyboard = [_row(renderer, chat, follow, number) for number, follow in enumerate(follows, 1)]
    return Reply("\n".join(lines), InlineKeyboardMarkup(keyboard))


def _row(
    renderer: Renderer, chat: Chat, follow: Follow, number: int | None = None
) -> list[InlineKeyboardButton]:
    """A topic's buttons: its language scope (press to switch) and ✖ to drop it."""
    label = _topic(follow.text)
    if number is not None:
        label = f"{number}. {label}"
    scope = ALL_BUTTON if follow.any_lang else CHAT_BUTTON
    return [
        InlineKeyboardButton(f"{scope} {label}", callback_data=TOPIC.encode("lang", follow.id)),
        InlineKeyboardButton(DROP_BUTTON, callback_data=TOPIC.encode("drop", follow.id)),
    ]


def parse_topic_data(data: str | None) -> tuple[str, int] | None:
    """("lang" | "drop", follow id) from a topic button, None when not one."""
    fields = TOPIC.decode(data)
    if fields is None:
        return None
    return fields[0], int(fields[1])
