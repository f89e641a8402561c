"""Readers' messages and buttons: greeting, language choice, settings, help, search results,
latest pieces and inline results, in the chat's language.

All HTML comes from bot.text.render's helpers (every feed or user string escaped); every word a
reader sees is a msgid of the "readers" catalogs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultArticle,
    InputTextMessageContent,
    LinkPreviewOptions,
    Message,
)
from telegram.constants import ParseMode

from bot.services import readers
from bot.services.commands import COMMANDS, Command, Scope, commands_for
from bot.services.readers import Found
from bot.services.search import SearchQuery, snippet
from bot.text.i18n import LANGUAGES, N_
from bot.text.render import Markup, Renderer, bold, escape
from handlers import reply as answers
from handlers.views.callbacks import LANGUAGE, SEARCH_PAGE, SUBSCRIPTION
from handlers.views.schedule import ScheduleView, Step, reader_data
from storage.models import Chat, Item

# ---------------------------------------------------------------------- messages

GREETING = N_("👋 Welcome to the Caliber.az bot!")
ABOUT_POSTS = N_(
    "I bring you the analytics of Caliber.az: every new piece as a short summary with a link "
    "to the article."
)
ABOUT_COMMANDS = N_(
    "Search the archive with /search, see the newest pieces with /latest, and /subscribe to "
    "get new pieces in this chat."
)
CHOOSE_LANGUAGE = N_("Choose your language:")
LANGUAGE_PROMPT = N_(
    "Choose the language of my messages and of the pieces this chat receives. Now: {language}."
)
LANGUAGE_SET = N_("Language: {language}")
ADMINS_ONLY = N_(
    "Only the group's creator and administrators who may change its info can change this."
)
TOO_MANY_REQUESTS = N_("Too many requests at once; some were skipped.")
STALE_BUTTON = N_("This button no longer works. Please send the command again.")
SEARCH_EXPIRED = N_("This search has expired. Please send it again.")

HELP_TITLE = N_("Here is what I can do:")
HELP_ADMINS = N_("For the group's admins:")
HELP_OPERATORS = N_("For the bot's operators:")
HELP_INLINE = N_("You can also search from any chat: type {mention} and a few words.")

SEARCH_USAGE = N_("Send /search and the words to look for, for example: /search oil sanctions")
SEARCH_NO_WORDS = N_(
    "There are no words to search for in your query. Use letters or numbers, "
    "for example: /search oil sanctions"
)
NOTHING_FOUND = N_("Nothing found for {query}.")
NOTHING_FOUND_HINT = N_("Try fewer or other words, or check the spelling.")
FOUND_ONE = N_("🔎 Found {n} piece for {query}")
FOUND_MANY = N_("🔎 Found {n} pieces for {query}")
SCOPE_LANGUAGE = N_("Language: {language}")
SCOPE_ALL = N_("All languages")
WIDENED = N_("Nothing in {language}, so here are all languages.")
PAGE = N_("Page {page} of {pages}")
ALL_LANGUAGES_BUTTON = N_("🌐 All languages")
ONLY_LANGUAGE_BUTTON = N_("Only {language}")

LATEST_ONE = N_("🗞 The latest piece ({language}):")
LATEST_MANY = N_("🗞 The latest {n} pieces ({language}):")
LATEST_NONE = N_("Nothing has been published in {language} yet.")
LATEST_USAGE = N_("Send /latest, or /latest and a number from 1 to 20.")

SUBSCRIBED = N_(
    "✅ Subscribed: this chat will get every new piece in {language}. Send /unsubscribe to stop."
)
ALREADY_SUBSCRIBED = N_("This chat already gets every new piece in {language}.")
UNSUBSCRIBED = N_(
    "🔕 Unsubscribed: this chat will get no more new pieces. Send /subscribe to start again."
)
NOT_SUBSCRIBED = N_("This chat is not subscribed. Send /subscribe to get every new piece.")
SETTINGS_TITLE = N_("⚙️ Settings of this chat")
SETTINGS_SUBSCRIBED = N_("New pieces: on")
SETTINGS_UNSUBSCRIBED = N_("New pieces: off")
SUBSCRIBE_BUTTON = N_("🔔 Subscribe")
UNSUBSCRIBE_BUTTON = N_("🔕 Unsubscribe")
SUBSCRIBED_TOAST = N_("Subscribed")
UNSUBSCRIBED_TOAST = N_("Unsubscribed")

PREVIOUS = "◀"
NEXT = "▶"
CHECKED = "✓ "
TITLE_LIMIT = 150
SNIPPET_WIDTH = 220


@dataclass(frozen=True, slots=True)
class Reply:
    """A message to send or to edit into: Telegram HTML and an optional inline keyboard."""

    html: str
    keyboard: InlineKeyboardMarkup | None = None
    # Search results and lists link many articles: a preview of the first would mislead.
    link_preview: LinkPreviewOptions = field(
        default_factory=lambda: LinkPreviewOptions(is_disabled=True)
    )


async def send_reply(message: Message, reply: Reply) -> None:
    """Answer `message` in its chat (in groups, as a reply to it)."""
    await answers.reply(message, reply.html, reply.keyboard, preview=reply.link_preview)


async def edit_reply(query: CallbackQuery, reply: Reply) -> None:
    """Turn the message whose button was pressed into `reply`."""
    await answers.edit(query, reply.html, reply.keyboard, preview=reply.link_preview)


def text(renderer: Renderer, lang: str, msgid: str, /, **values: object) -> Reply:
    """Return a one-message reply without buttons."""
    return Reply(renderer.message(lang, msgid, **values))


def plain(renderer: Renderer, lang: str, msgid: str, /, **values: object) -> str:
    """Return a translated plain-text string (button labels, callback answers)."""
    return renderer.translator.gettext(lang, msgid, **values)


# ---------------------------------------------------------------------- button data
# Through handlers.views.callbacks:
# - "lang:<code>[:<view>]": choose a language; <view> says which message to redraw
#   (none: the /language prompt, "start": the greeting, "set": the settings);
# - "s:<page>:<scope>:<key>": a page of search results; <scope> is "l" (the chat's language) or
#   "a" (all languages); <key> names the stored query (bot.services.readers);
# - "set:sub:on" / "set:sub:off": subscribe or unsubscribe from the settings message;
# - "sc:<op>[:<a>[:<b>]]": the delivery schedule from the settings message
#   (handlers.views.schedule).

View = Literal["", "start", "set"]


def language_data(lang: str, view: View = "") -> str:
    return LANGUAGE.encode(lang, view)


def parse_language_data(data: str | None) -> tuple[str, View] | None:
    """Return (language, view) from a language button, None when it is not a valid one."""
    fields = LANGUAGE.decode(data)
    if fields is None or fields[0] not in LANGUAGES:
        return None
    view = fields[1]
    return fields[0], ("start" if view == "start" else "set" if view == "set" else "")


def search_data(page: int, scope: readers.Scope, key: str) -> str:
    return SEARCH_PAGE.encode(page, scope, key)


def parse_search_data(data: str | None) -> tuple[int, readers.Scope, str] | None:
    """Return (page, scope, query key) from a search button, None when it is not a valid one."""
    fields = SEARCH_PAGE.decode(data)
    if fields is None:
        return None
    return int(fields[0]), ("l" if fields[1] == "l" else "a"), fields[2]


def settings_data(subscribe: bool) -> str:
    return SUBSCRIPTION.encode("sub", "on" if subscribe else "off")


def parse_settings_data(data: str | None) -> bool | None:
    """Return True (subscribe) or False (unsubscribe), None when the data is not valid."""
    fields = SUBSCRIPTION.decode(data)
    return None if fields is None else fields[1] == "on"


# ---------------------------------------------------------------------- language and start


def language_keyboard(current: str, view: View = "") -> InlineKeyboardMarkup:
    """Return one row of language buttons, the current one ticked."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    (CHECKED if code == current else "") + name,
                    callback_data=language_data(code, view),
                )
                for code, name in LANGUAGES.items()
            ]
        ]
    )


def start(renderer: Renderer, lang: str) -> Reply:
    """Return the greeting: what the bot does, in two lines, and the language buttons."""
    html = "\n".join(
        [
            bold(plain(renderer, lang, GREETING)),
            renderer.message(lang, ABOUT_POSTS),
            renderer.message(lang, ABOUT_COMMANDS),
            "",
            renderer.message(lang, CHOOSE_LANGUAGE),
        ]
    )
    return Reply(html, language_keyboard(lang, "start"))


def language(renderer: Renderer, lang: str) -> Reply:
    """Return the /language prompt with its buttons."""
    html = renderer.message(lang, LANGUAGE_PROMPT, language=readers.language_name(lang))
    return Reply(html, language_keyboard(lang))


def settings(renderer: Renderer, chat: Chat) -> Reply:
    """Return the /settings message: language, subscription and delivery schedule (as they
    appear or a daily digest; quiet hours in private chats), with buttons to change them."""
    lang = chat.lang
    state = SETTINGS_SUBSCRIBED if chat.subscribed else SETTINGS_UNSUBSCRIBED
    schedule = ScheduleView(renderer, lang, chat, reader_data)
    html = "\n".join(
        [
            bold(plain(renderer, lang, SETTINGS_TITLE)),
            "",
            renderer.message(lang, LANGUAGE_SET, language=readers.language_name(lang)),
            renderer.message(lang, state),
            *schedule.lines(),
        ]
    )
    toggle = InlineKeyboardButton(
        plain(renderer, lang, UNSUBSCRIBE_BUTTON if chat.subscribed else SUBSCRIBE_BUTTON),
        callback_data=settings_data(not chat.subscribed),
    )
    keyboard = [*language_keyboard(lang, "set").inline_keyboard, [toggle], *schedule.choice_rows()]
    if chat.type.is_private:
        keyboard.append(schedule.quiet_row())
    return Reply(html, InlineKeyboardMarkup(keyboard))


def schedule_screen(renderer: Renderer, chat: Chat, step: Step) -> Reply:
    """The message a /settings schedule button leads to: one of the schedule's screens, or the
    settings again."""
    screen = ScheduleView(renderer, chat.lang, chat, reader_data).screen(step)
    if screen is None:
        return settings(renderer, chat)
    return Reply(*screen)


def redraw(renderer: Renderer, chat: Chat, view: View) -> Reply:
    """Return the message a language button belongs to, drawn again in the chat's language."""
    if view == "start":
        return start(renderer, chat.lang)
    if view == "set":
        return settings(renderer, chat)
    return language(renderer, chat.lang)


# ---------------------------------------------------------------------- help


def help_message(
    renderer: Renderer, lang: str, *, private: bool, operator: bool, bot_username: str
) -> Reply:
    """Return /help: the commands of this kind of chat, translated."""
    tr = renderer.translator

    def lines(commands: list[Command]) -> list[str]:
        return [f"/{c.name} — {escape(tr.gettext(lang, c.description))}" for c in commands]

    parts = [bold(tr.gettext(lang, HELP_TITLE))]
    if private:
        parts += lines(commands_for(Scope.PRIVATE))
    else:
        members = commands_for(Scope.GROUPS)
        parts += lines(members)
        admins = [c for c in commands_for(Scope.ADMINS) if c not in members]
        if admins:
            parts += ["", escape(tr.gettext(lang, HELP_ADMINS)), *lines(admins)]
    if operator:
        extra = [c for c in COMMANDS if c.operators_only]
        if extra:
            parts += ["", escape(tr.gettext(lang, HELP_OPERATORS)), *lines(extra)]
    if bot_username:
        parts += ["", renderer.message(lang, HELP_INLINE, mention="@" + bot_username)]
    return Reply("\n".join(parts))


# ---------------------------------------------------------------------- search


def search_results(renderer: Renderer, found: Found, key: str) -> Reply:
    """Return a page of search results with its paging and language buttons."""
    lang, result = found.lang, found.result
    query = Markup(bold(found.query.text))
    if not result.hits:
        html = "\n".join(
            [
                renderer.message(lang, NOTHING_FOUND, query=query),
                renderer.message(lang, NOTHING_FOUND_HINT),
            ]
        )
        keyboard = None
        if found.scope == "l":
            keyboard = InlineKeyboardMarkup([[_scope_button(renderer, found, key, "a")]])
        return Reply(html, keyboard)

    language_name = readers.language_name(lang)
    if found.widened:
        scope_line = renderer.message(lang, WIDENED, language=language_name)
    elif found.scope == "l":
        scope_line = renderer.message(lang, SCOPE_LANGUAGE, language=language_name)
    else:
        scope_line = renderer.message(lang, SCOPE_ALL)
    head = [
        renderer.plural(lang, FOUND_ONE, FOUND_MANY, result.total, query=query),
        scope_line,
        renderer.message(lang, PAGE, page=found.page, pages=found.pages),
    ]
    entries = []
    for number, hit in enumerate(result.hits, start=result.offset + 1):
        entries.append(_entry(renderer, lang, number, hit.item, found.query))
    html = "\n".join(head) + "\n\n" + "\n\n".join(entries)

    paging = []
    if found.page > 1:
        paging.append(
            InlineKeyboardButton(
                PREVIOUS, callback_data=search_data(found.page - 1, found.scope, key)
            )
        )
    if result.has_more:
        paging.append(
            InlineKeyboardButton(NEXT, callback_data=search_data(found.page + 1, found.scope, key))
        )
    rows = [paging] if paging else []
    if found.scope == "l":
        rows.append([_scope_button(renderer, found, key, "a")])
    elif not found.widened:
        rows.append([_scope_button(renderer, found, key, "l")])
    return Reply(html, InlineKeyboardMarkup(rows) if rows else None)


def _scope_button(
    renderer: Renderer, found: Found, key: str, scope: readers.Scope
) -> InlineKeyboardButton:
    label = (
        plain(renderer, found.lang, ALL_LANGUAGES_BUTTON)
        if scope == "a"
        else plain(
            renderer, found.lang, ONLY_LANGUAGE_BUTTON, language=readers.language_name(found.lang)
        )
    )
    return InlineKeyboardButton(label, callback_data=search_data(1, scope, key))


def _entry(renderer: Renderer, lang: str, number: int, item: Item, query: SearchQuery) -> str:
    lines = [renderer.listing(number, item, lang, TITLE_LIMIT)]
    fragments = snippet(item.summary, item.lang, query.terms_for(item.lang), SNIPPET_WIDTH)
    if fragments:
        lines.append("".join(bold(f.text) if f.matched else escape(f.text) for f in fragments))
    return "\n".join(lines)


# ---------------------------------------------------------------------- latest


def latest(renderer: Renderer, lang: str, items: list[Item]) -> Reply:
    """Return the list of the newest pieces: linked title and date."""
    language_name = readers.language_name(lang)
    if not items:
        return text(renderer, lang, LATEST_NONE, language=language_name)
    head = renderer.plural(lang, LATEST_ONE, LATEST_MANY, len(items), language=language_name)
    entries = [
        renderer.listing(number, item, lang, TITLE_LIMIT)
        for number, item in enumerate(items, start=1)
    ]
    return Reply(head + "\n\n" + "\n\n".join(entries))


# ---------------------------------------------------------------------- inline mode


def inline_results(
    renderer: Renderer, items: list[Item], query: SearchQuery
) -> list[InlineQueryResultArticle]:
    """Return inline results: title, snippet, and the post itself as the message to send."""
    results = []
    for item in items:
        post = renderer.post(item, lang=item.lang, allow_photo=False)
        fragments = snippet(item.summary, item.lang, query.terms_for(item.lang), 160)
        description = "".join(f.text for f in fragments) or renderer.date(item, item.lang)
        results.append(
            InlineQueryResultArticle(
                id=str(item.id),
                title=renderer.title(item, item.lang, TITLE_LIMIT),
                description=description,
                url=item.link,
                input_message_content=InputTextMessageContent(
                    post.html,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=LinkPreviewOptions(url=post.link),
                ),
            )
        )
    return results
