"""The /channels panel's views: its texts and buttons, its callback data, and its screens.

Button data is "ch:list" or "ch:<chat_id>:<action>[:<arg>]" (handlers.views.callbacks), each
action with its own argument grammar checked here; handlers/channels.py re-authorises every press
before acting.
A screen is a message's HTML (made by the renderer) and its keyboard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions

from bot.services.channel_admin import (
    RIGHT_LABELS,
    RULE_KINDS,
    RULE_MAX,
    SIGNATURE_MAX,
    Actor,
    ChannelAdmin,
    InputKind,
    rule_token,
    when,
)  # fmt: skip
from bot.services.topics import MAX_TOPIC_CHARS
from bot.text.i18n import LANGUAGES, N_
from bot.text.plain import truncate
from bot.text.render import Markup, Renderer, bold
from handlers.views.callbacks import PANEL, PANEL_LIST
from handlers.views.schedule import (
    BTN_DELIVERY,
    BTN_DIGEST,
    BTN_IMMEDIATE,
    BTN_QUIET,
    ScheduleView,
    Step,
    panel_arg,
    zone_label,
)
from storage.admin import SettingsChange, Topic
from storage.follows import Follow
from storage.models import Chat, ChatType, DeliveryMode, PostStyle

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
MAX_RULE_BUTTONS = 40  # Telegram allows 100 buttons per keyboard

# --- messages --------------------------------------------------------------------------------
ONLY_PRIVATE = N_("Send /channels to me in a private chat to set up your channels and groups.")
LIST_TITLE = N_("Choose a channel or group to set up:")
LIST_TITLE_OPERATOR = N_("You are an operator: every connected chat is listed. Choose one:")
NO_CHATS = N_(
    "I found no channel or group where you are an administrator and I am present. Add me to "
    "your channel as an administrator with the right to post messages (or to your group), then "
    "send /channels again."
)
NOT_ALLOWED = N_(
    "You cannot change the settings of this chat: only its creator and administrators who may "
    "change its info can."
)
INVALID_BUTTON = N_("This button is not valid any more. Send /channels to start again.")
SAVED = N_("Saved.")
LAST_LANGUAGE = N_("At least one language must stay selected.")
STILL_NO_RIGHT = N_("I still cannot post there: give me the “{right}” right first.")

PANEL_TITLE = N_("⚙️ Settings of {chat}")
STATUS_POSTING = N_("Status: ▶️ posting")
STATUS_PAUSED = N_("Status: ⏸ paused")
STATUS_PAUSED_INCIDENT = N_("Status: ⏸ paused because I could not post there ({reason})")
STATUS_NOT_SUBSCRIBED = N_("Status: not receiving posts yet (press “Resume” to start)")
STATUS_ONLY_ABOUT = N_("Status: ▶️ posting the pieces about its topics (see “Filters”)")
LINE_LANGUAGES = N_("Languages: {value}")
LINE_STYLE = N_("Post style: {value}")
LINE_SILENT = N_("Silent posts: {value}")
LINE_HASHTAGS = N_("Hashtags: {value}")
LINE_SIGNATURE = N_("Signature: {value}")
LINE_FILTERS = N_("Filters: {value}")
LINE_TOPIC = N_("Topic: {value}")
BOT_PROBLEM = N_("⚠️ I cannot post there: give me the “{right}” right.")
ON = N_("on")
OFF = N_("off")
NONE = N_("none")
FILTER_RULES = (N_("{n} rule"), N_("{n} rules"))
TOPIC_MAIN = N_("main chat (General)")
TOPIC_NUMBER = N_("topic #{number}")

STYLE_LABELS = {
    PostStyle.PREVIEW: N_("Text with link preview"),
    PostStyle.TEXT: N_("Text without preview"),
    PostStyle.PHOTO: N_("Photo with caption"),
}
KIND_LABELS = {
    InputKind.INCLUDE_CATEGORY: N_("Include category"),
    InputKind.EXCLUDE_CATEGORY: N_("Exclude category"),
    InputKind.ONLY_ABOUT: N_("Only pieces about …"),
    InputKind.EXCLUDE_KEYWORD: N_("Exclude keyword"),
}

LANGUAGES_TITLE = N_("Which feeds should {chat} take? Choose one language or several.")
STYLE_TITLE = N_(
    "How should posts look in {chat}? A photo post uses the article's image with the text as "
    "its caption, and falls back to text when there is no image."
)
SIGNATURE_TITLE = N_(
    "The signature is a line added at the end of every post in {chat}, e.g. its own link.\n"
    "Now: {value}"
)
SIGNATURE_PROMPT = N_(
    "Send me the signature for {chat}: one line, up to {limit} characters. Or /cancel."
)
SIGNATURE_EMPTY = N_("The signature cannot be empty. Send it again, or /cancel.")
SIGNATURE_TOO_LONG = N_("That is longer than {limit} characters. Send a shorter one, or /cancel.")
FILTERS_TITLE = N_("Filters of {chat}")
FILTERS_HELP = N_(
    "“Only pieces about …”: with topics, the chat takes only the new pieces that mention all "
    "the words of one of its topics, in any form (the same matching as /follow and /search), "
    "plus its included categories. A piece matching an “exclude” rule is never posted. Exclude "
    'keywords match the beginning of words, ignoring case and accents; put one in "quotes" to '
    "match whole words only. Categories match by their full name."
)
FILTERS_LINE = N_("{kind}: {value}")
FILTERS_PROMPT = N_(
    "Send the rules to add to “{kind}” for {chat}, separated by commas (up to {limit} "
    "characters each). Or /cancel."
)
CATEGORIES_HINT = N_("Recent categories: {value}")
TOPIC_TITLE = N_(
    "Posts in {chat} go to: {value}.\nTo choose a topic, send /here inside it, or pick one of the "
    "topics I have seen:"
)
HISTORY_TITLE = N_("Recent changes in {chat}:")
HISTORY_EMPTY = N_("No changes yet.")
HISTORY_LINE = N_("{date} · {who}: {what}: {old} → {new}")
HISTORY_BOT = N_("the bot")
DISCONNECT_CONFIRM = N_(
    "Disconnect {chat}? I will stop posting there and leave it. To connect it again, add me "
    "as an administrator again."
)
DISCONNECTED = N_("{chat} is disconnected.")
CANCELLED = N_("Cancelled.")

PREVIEW_SENT = N_("Preview sent: see the next message.")
TEST_SENT = N_("Test post sent to {chat}.")
NO_PIECE = N_("There is no piece matching these settings yet.")
SEND_REFUSED = N_("Telegram refused the post: {reason}")
SEND_LATER = N_("Telegram asks me to wait {seconds} s. Try again then.")

WHAT_LABELS = {
    "paused": N_("Paused"),
    "languages": N_("Languages"),
    "style": N_("Post style"),
    "silent": N_("Silent posts"),
    "hashtags": N_("Hashtags"),
    "signature": N_("Signature"),
    "include_categories": KIND_LABELS[InputKind.INCLUDE_CATEGORY],
    "exclude_categories": KIND_LABELS[InputKind.EXCLUDE_CATEGORY],
    "include_keywords": N_("Include keyword"),
    "only_about": KIND_LABELS[InputKind.ONLY_ABOUT],
    "exclude_keywords": KIND_LABELS[InputKind.EXCLUDE_KEYWORD],
    "thread_id": N_("Topic"),
    "connected": N_("Connected"),
    "delivery": N_("Delivery"),
    "digest_hour": N_("Digest hour"),
    "timezone": N_("Time zone"),
    "quiet_hours": BTN_QUIET,
}

# --- buttons ---------------------------------------------------------------------------------
BTN_LANGUAGES = N_("🌐 Languages")
BTN_PAUSE = N_("⏸ Pause")
BTN_RESUME = N_("▶️ Resume")
BTN_STYLE = N_("🖼 Post style")
BTN_SILENT = N_("🔕 Silent posts: {value}")
BTN_HASHTAGS = N_("#️⃣ Hashtags: {value}")
BTN_SIGNATURE = N_("✍️ Signature")
BTN_FILTERS = N_("🔎 Filters")
BTN_TOPIC = N_("🧵 Topic")
BTN_PREVIEW = N_("👁 Preview")
BTN_TEST = N_("🧪 Test post")
BTN_HISTORY = N_("📜 Changes")
BTN_DISCONNECT = N_("🔌 Disconnect")
BTN_BACK = N_("⬅️ Back")
BTN_ALL_CHATS = N_("⬅️ All chats")
BTN_SET_SIGNATURE = N_("✏️ Set signature")
BTN_LINK_SIGNATURE = N_("🔗 Use {link}")
BTN_REMOVE_SIGNATURE = N_("🗑 Remove signature")
BTN_ADD_RULE = N_("➕ {kind}")
BTN_REMOVE_RULE = N_("✖️ {kind}: {rule}")
BTN_CLEAR_FILTERS = N_("🗑 Clear all filters")
BTN_MAIN_TOPIC = N_("Main chat (General)")
BTN_CONFIRM_DISCONNECT = N_("🔌 Yes, disconnect")
BTN_CANCEL = N_("✖️ Cancel")

# --- callback data ---------------------------------------------------------------------------
# Telegram's ids have at most 52 significant bits.
MAX_CHAT_ID = 2**52
_ARGS: dict[str, re.Pattern[str]] = {
    "open": re.compile(r"^$"),
    "pause": re.compile(r"^$"),
    "resume": re.compile(r"^$"),
    "langs": re.compile(r"^$"),
    "lang": re.compile("^(" + "|".join(LANGUAGES) + ")$"),
    "style": re.compile("^(" + "|".join(PostStyle) + ")?$"),
    "silent": re.compile(r"^$"),
    "tags": re.compile(r"^$"),
    "sig": re.compile(r"^(set|link|clear)?$"),
    # Rules: add (+kind), remove (-kind.token); topics: remove (-t.<follow id>).
    "flt": re.compile(r"^(clear|\+(ic|xc|ik|xk)|-(ic|xc|xk)\.[0-9a-f]{8}|-t\.[1-9][0-9]{0,18})?$"),
    "topic": re.compile(r"^(\d{1,10})?$"),
    "prev": re.compile(r"^$"),
    "test": re.compile(r"^$"),
    "hist": re.compile(r"^$"),
    "disc": re.compile(r"^(yes)?$"),
    # The delivery schedule (handlers.views.schedule.parse_panel_arg checks the numbers).
    "sched": re.compile(r"^(st|mi|md|h|zd|hs\.\d{1,2}|z\.\d|zn\.\d{1,2}|zo\.-?\d{1,2})?$"),
}

Screen = tuple[str, InlineKeyboardMarkup | None]


@dataclass(frozen=True, slots=True)
class Press:
    """A validated panel button: chat None means the chat list."""

    chat_id: int | None
    action: str
    arg: str


def parse_callback(data: str) -> Press | None:
    """Return the press `data` describes, or None when it is not one the panel makes."""
    if PANEL_LIST.decode(data) is not None:
        return Press(None, "list", "")
    fields = PANEL.decode(data)
    if fields is None:
        return None
    chat, action, arg = fields
    pattern = _ARGS.get(action)
    if pattern is None or not pattern.match(arg):
        return None
    chat_id = int(chat)
    if not -MAX_CHAT_ID < chat_id < MAX_CHAT_ID:
        return None  # no Telegram chat has such an id (and SQLite could not even store it)
    return Press(chat_id, action, arg)


def cb(chat_id: int, action: str, arg: str = "") -> str:
    data = PANEL.encode(chat_id, action, arg)
    assert parse_callback(data) is not None, data
    return data


def list_data() -> str:
    return PANEL_LIST.encode("list")


# --- screens ---------------------------------------------------------------------------------


def chat_list_screen(renderer: Renderer, lang: str, actor: Actor, chats: list[Chat]) -> Screen:
    if not chats:
        return renderer.message(lang, NO_CHATS), None
    title = LIST_TITLE_OPERATOR if actor.operator else LIST_TITLE
    rows = []
    for chat in chats:
        icon = "📢" if chat.type is ChatType.CHANNEL else "👥"
        paused = "⏸ " if chat.paused else ""
        label = f"{paused}{icon} {truncate(chat.display_name, 48)}"
        rows.append([InlineKeyboardButton(label, callback_data=cb(chat.id, "open"))])
    return renderer.message(lang, title), InlineKeyboardMarkup(rows)


async def main_screen(admin: ChannelAdmin, renderer: Renderer, lang: str, chat: Chat) -> Screen:
    tr, msg = renderer.translator.gettext, renderer.message
    state = await admin.panel_state(chat)
    settings = chat.settings
    lines = [msg(lang, PANEL_TITLE, chat=Markup(bold(chat.display_name))), ""]
    if chat.paused and state.incident is not None:
        lines.append(msg(lang, STATUS_PAUSED_INCIDENT, reason=state.incident.reason))
    elif chat.paused:
        lines.append(msg(lang, STATUS_PAUSED))
    elif not chat.subscribed and state.followed:
        lines.append(msg(lang, STATUS_ONLY_ABOUT))
    elif not chat.subscribed:
        lines.append(msg(lang, STATUS_NOT_SUBSCRIBED))
    else:
        lines.append(msg(lang, STATUS_POSTING))
    languages = ", ".join(LANGUAGES.get(code, code) for code in chat.languages)
    lines.append(msg(lang, LINE_LANGUAGES, value=languages or tr(lang, NONE)))
    lines.append(msg(lang, LINE_STYLE, value=tr(lang, STYLE_LABELS[settings.style])))
    lines.append(msg(lang, LINE_SILENT, value=_onoff(renderer, lang, settings.silent)))
    lines.append(msg(lang, LINE_HASHTAGS, value=_onoff(renderer, lang, settings.hashtags)))
    lines.append(msg(lang, LINE_SIGNATURE, value=settings.signature or tr(lang, NONE)))
    count = sum(len(getattr(settings, kind.field)) for kind in RULE_KINDS) + len(state.followed)
    rules = renderer.translator.ngettext(lang, *FILTER_RULES, count) if count else tr(lang, NONE)
    lines.append(msg(lang, LINE_FILTERS, value=rules))
    if chat.type is ChatType.SUPERGROUP:
        lines.append(msg(lang, LINE_TOPIC, value=_topic_name(renderer, lang, chat, state.topic)))
    lines += _schedule(renderer, lang, chat).lines()
    if state.bot_problem is not None:
        right = tr(lang, RIGHT_LABELS[state.bot_problem])
        lines += ["", msg(lang, BOT_PROBLEM, right=right)]

    def button(label: str, action: str, arg: str = "", **values: object) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            tr(lang, label, **values), callback_data=cb(chat.id, action, arg)
        )

    posting = (chat.subscribed or bool(state.followed)) and not chat.paused
    rows = [
        [button(BTN_LANGUAGES, "langs"), button(BTN_PAUSE, "pause") if posting
         else button(BTN_RESUME, "resume")],
        [button(BTN_STYLE, "style")],
        [button(BTN_SILENT, "silent", value=_onoff(renderer, lang, settings.silent)),
         button(BTN_HASHTAGS, "tags", value=_onoff(renderer, lang, settings.hashtags))],
        [button(BTN_SIGNATURE, "sig"), button(BTN_FILTERS, "flt")],
        [button(BTN_DELIVERY, "sched")],
    ]  # fmt: skip
    if chat.type is ChatType.SUPERGROUP:
        rows.append([button(BTN_TOPIC, "topic")])
    rows += [
        [button(BTN_PREVIEW, "prev"), button(BTN_TEST, "test")],
        [button(BTN_HISTORY, "hist"), button(BTN_DISCONNECT, "disc")],
        [InlineKeyboardButton(tr(lang, BTN_ALL_CHATS), callback_data=list_data())],
    ]
    return "\n".join(lines), InlineKeyboardMarkup(rows)


def schedule_screen(renderer: Renderer, lang: str, chat: Chat, step: Step) -> Screen:
    """The delivery screen a "sched" press leads to: the choice between "As they appear" and
    "Daily digest", or the digest's hour or time zone."""
    view = _schedule(renderer, lang, chat)
    screen = view.screen(step)
    if screen is not None:
        return screen
    return view.delivery(_back(renderer, lang, chat))


def _schedule(renderer: Renderer, lang: str, chat: Chat) -> ScheduleView:
    return ScheduleView(renderer, lang, chat, lambda step: cb(chat.id, "sched", panel_arg(step)))


def languages_screen(renderer: Renderer, lang: str, chat: Chat) -> Screen:
    rows = [
        [
            InlineKeyboardButton(
                ("✅ " if code in chat.languages else "▫️ ") + name,
                callback_data=cb(chat.id, "lang", code),
            )
        ]
        for code, name in LANGUAGES.items()
    ]
    rows.append([_back(renderer, lang, chat)])
    text = renderer.message(lang, LANGUAGES_TITLE, chat=Markup(bold(chat.display_name)))
    return text, InlineKeyboardMarkup(rows)


def style_screen(renderer: Renderer, lang: str, chat: Chat) -> Screen:
    tr = renderer.translator.gettext
    rows = [
        [
            InlineKeyboardButton(
                ("✅ " if chat.settings.style is style else "▫️ ") + tr(lang, label),
                callback_data=cb(chat.id, "style", style.value),
            )
        ]
        for style, label in STYLE_LABELS.items()
    ]
    rows.append([_back(renderer, lang, chat)])
    text = renderer.message(lang, STYLE_TITLE, chat=Markup(bold(chat.display_name)))
    return text, InlineKeyboardMarkup(rows)


def signature_screen(renderer: Renderer, lang: str, chat: Chat) -> Screen:
    tr = renderer.translator.gettext
    value = chat.settings.signature or tr(lang, NONE)
    text = renderer.message(
        lang, SIGNATURE_TITLE, chat=Markup(bold(chat.display_name)), value=value
    )
    rows = [
        [InlineKeyboardButton(tr(lang, BTN_SET_SIGNATURE), callback_data=cb(chat.id, "sig", "set"))]
    ]
    if chat.username:
        label = tr(lang, BTN_LINK_SIGNATURE, link="@" + chat.username)
        rows.append([InlineKeyboardButton(label, callback_data=cb(chat.id, "sig", "link"))])
    if chat.settings.signature:
        label = tr(lang, BTN_REMOVE_SIGNATURE)
        rows.append([InlineKeyboardButton(label, callback_data=cb(chat.id, "sig", "clear"))])
    rows.append([_back(renderer, lang, chat)])
    return text, InlineKeyboardMarkup(rows)


def filters_screen(
    renderer: Renderer, lang: str, chat: Chat, followed: Sequence[Follow] = ()
) -> Screen:
    tr, msg = renderer.translator.gettext, renderer.message
    lines = [
        msg(lang, FILTERS_TITLE, chat=Markup(bold(chat.display_name))),
        "",
        msg(lang, FILTERS_HELP),
        "",
    ]
    about = ", ".join(f"“{f.text}”" for f in followed) if followed else tr(lang, NONE)
    lines.append(
        msg(lang, FILTERS_LINE, kind=tr(lang, KIND_LABELS[InputKind.ONLY_ABOUT]), value=about)
    )
    for kind in RULE_KINDS:
        rules = getattr(chat.settings, kind.field)
        value = ", ".join(f"“{r}”" for r in rules) if rules else tr(lang, NONE)
        lines.append(msg(lang, FILTERS_LINE, kind=tr(lang, KIND_LABELS[kind]), value=value))
    rows = []
    for pair in ((InputKind.ONLY_ABOUT, InputKind.EXCLUDE_KEYWORD),
                 (InputKind.INCLUDE_CATEGORY, InputKind.EXCLUDE_CATEGORY)):  # fmt: skip
        rows.append(
            [
                InlineKeyboardButton(
                    tr(lang, BTN_ADD_RULE, kind=tr(lang, KIND_LABELS[kind])),
                    callback_data=cb(chat.id, "flt", "+" + kind.value),
                )
                for kind in pair
            ]
        )
    only_about = tr(lang, KIND_LABELS[InputKind.ONLY_ABOUT])
    for follow in followed:
        label = tr(lang, BTN_REMOVE_RULE, kind=only_about, rule=truncate(follow.text, 32))
        rows.append(
            [InlineKeyboardButton(label, callback_data=cb(chat.id, "flt", f"-t.{follow.id}"))]
        )
    removable = [
        (kind, rule) for kind in RULE_KINDS for rule in getattr(chat.settings, kind.field)
    ][: MAX_RULE_BUTTONS - len(followed)]
    for kind, rule in removable:
        label = tr(lang, BTN_REMOVE_RULE, kind=tr(lang, KIND_LABELS[kind]), rule=truncate(rule, 32))
        data = cb(chat.id, "flt", f"-{kind.value}.{rule_token(rule)}")
        rows.append([InlineKeyboardButton(label, callback_data=data)])
    if removable or followed:
        rows.append(
            [
                InlineKeyboardButton(
                    tr(lang, BTN_CLEAR_FILTERS), callback_data=cb(chat.id, "flt", "clear")
                )
            ]
        )
    rows.append([_back(renderer, lang, chat)])
    return "\n".join(lines), InlineKeyboardMarkup(rows)


async def topic_screen(admin: ChannelAdmin, renderer: Renderer, lang: str, chat: Chat) -> Screen:
    tr = renderer.translator.gettext
    topics = await admin.topics(chat)
    current = next((t for t in topics if t.thread_id == chat.settings.thread_id), None)
    text = renderer.message(
        lang, TOPIC_TITLE, chat=Markup(bold(chat.display_name)),
        value=_topic_name(renderer, lang, chat, current),
    )  # fmt: skip
    rows = [[InlineKeyboardButton(
        ("✅ " if not chat.settings.thread_id else "") + tr(lang, BTN_MAIN_TOPIC),
        callback_data=cb(chat.id, "topic", "0"),
    )]]  # fmt: skip
    for topic in topics:
        mark = "✅ " if topic.thread_id == chat.settings.thread_id else ""
        rows.append([InlineKeyboardButton(
            mark + truncate(topic.name or tr(lang, TOPIC_NUMBER, number=topic.thread_id), 48),
            callback_data=cb(chat.id, "topic", str(topic.thread_id)),
        )])  # fmt: skip
    rows.append([_back(renderer, lang, chat)])
    return text, InlineKeyboardMarkup(rows)


def history_screen(
    renderer: Renderer, lang: str, chat: Chat, changes: list[SettingsChange]
) -> Screen:
    msg = renderer.message
    lines = [msg(lang, HISTORY_TITLE, chat=Markup(bold(chat.display_name))), ""]
    if not changes:
        lines.append(msg(lang, HISTORY_EMPTY))
    for change in changes:
        lines.append(
            msg(
                lang,
                HISTORY_LINE,
                date=when(renderer, lang, change.at),
                who=_who(renderer, lang, change),
                what=renderer.translator.gettext(lang, WHAT_LABELS.get(change.what, change.what)),
                old=_audit_value(renderer, lang, change.what, change.old),
                new=_audit_value(renderer, lang, change.what, change.new),
            )
        )
    return "\n".join(lines), InlineKeyboardMarkup([[_back(renderer, lang, chat)]])


def disconnect_screen(renderer: Renderer, lang: str, chat: Chat) -> Screen:
    tr = renderer.translator.gettext
    text = renderer.message(lang, DISCONNECT_CONFIRM, chat=Markup(bold(chat.display_name)))
    rows = [
        [
            InlineKeyboardButton(
                tr(lang, BTN_CONFIRM_DISCONNECT), callback_data=cb(chat.id, "disc", "yes")
            )
        ],
        [InlineKeyboardButton(tr(lang, BTN_CANCEL), callback_data=cb(chat.id, "open"))],
    ]
    return text, InlineKeyboardMarkup(rows)


def disconnected_screen(renderer: Renderer, lang: str, chat: Chat) -> Screen:
    tr = renderer.translator.gettext
    text = renderer.message(lang, DISCONNECTED, chat=chat.display_name)
    back = [[InlineKeyboardButton(tr(lang, BTN_ALL_CHATS), callback_data=list_data())]]
    return text, InlineKeyboardMarkup(back)


def signature_prompt_screen(renderer: Renderer, lang: str, chat: Chat) -> Screen:
    """The question the admin answers with their next message: the signature."""
    text = renderer.message(lang, SIGNATURE_PROMPT, chat=chat.display_name, limit=SIGNATURE_MAX)
    return text, cancel_keyboard(renderer, lang, chat, "sig")


def rule_prompt_screen(
    renderer: Renderer, lang: str, chat: Chat, kind: InputKind, categories: list[str]
) -> Screen:
    """The question for a new filter rule, with the chat's recent categories as a hint."""
    tr, msg = renderer.translator.gettext, renderer.message
    limit = MAX_TOPIC_CHARS if kind is InputKind.ONLY_ABOUT else RULE_MAX
    lines = [
        msg(lang, FILTERS_PROMPT, kind=tr(lang, KIND_LABELS[kind]), chat=chat.display_name,
            limit=limit)
    ]  # fmt: skip
    if categories:
        lines.append(msg(lang, CATEGORIES_HINT, value=", ".join(categories)))
    return "\n\n".join(lines), cancel_keyboard(renderer, lang, chat, "flt")


def _back(renderer: Renderer, lang: str, chat: Chat) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        renderer.translator.gettext(lang, BTN_BACK), callback_data=cb(chat.id, "open")
    )


def cancel_keyboard(renderer: Renderer, lang: str, chat: Chat, action: str) -> InlineKeyboardMarkup:
    label = renderer.translator.gettext(lang, BTN_CANCEL)
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=cb(chat.id, action))]])


def _onoff(renderer: Renderer, lang: str, value: bool) -> str:
    return renderer.translator.gettext(lang, ON if value else OFF)


def _topic_name(renderer: Renderer, lang: str, chat: Chat, topic: Topic | None) -> str:
    thread_id = chat.settings.thread_id
    if not thread_id:
        return renderer.translator.gettext(lang, TOPIC_MAIN)
    if topic is not None and topic.name:
        return topic.name
    return renderer.translator.gettext(lang, TOPIC_NUMBER, number=thread_id)


def _who(renderer: Renderer, lang: str, change: SettingsChange) -> str:
    if change.user_id is None:
        return renderer.translator.gettext(lang, HISTORY_BOT)
    name = change.user_name or ""
    return f"{name} ({change.user_id})" if name else str(change.user_id)


def _audit_value(renderer: Renderer, lang: str, what: str, value: str | None) -> str:
    tr = renderer.translator.gettext
    if not value:
        return "—"
    if value in ("on", "off") and what in ("paused", "silent", "hashtags", "connected"):
        return tr(lang, ON if value == "on" else OFF)
    if what == "style" and value in {s.value for s in PostStyle}:
        return tr(lang, STYLE_LABELS[PostStyle(value)])
    if what == "languages":
        return ", ".join(LANGUAGES.get(code, code) for code in value.split(","))
    if what == "thread_id":
        return tr(lang, TOPIC_NUMBER, number=value)
    if what == "delivery" and value in {m.value for m in DeliveryMode}:
        return tr(lang, BTN_DIGEST if value == DeliveryMode.DIGEST else BTN_IMMEDIATE)
    if what == "timezone":
        return zone_label(renderer, lang, value)
    return value
