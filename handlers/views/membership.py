"""Where a chat's posts go: the texts of /here and of the notes an admin gets when the bot joins,
loses its rights in, or leaves a channel, and the reasons stored when a chat stops receiving
posts.

All HTML comes from bot.text.render (the renderer escapes every value); /here's words are msgids
of the "admin" catalogs, the notices' and reasons' of the "core" catalogs.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.services.permissions import RIGHTS_UNKNOWN, Access
from bot.text.i18n import LANGUAGES, N_
from bot.text.render import Renderer

# ---------------------------------------------------------------------- /here

NOT_FORUM = N_("Send /here inside a topic of a forum group: my posts will then go to that topic.")
UNKNOWN_CHAT = N_("I do not post in this group yet. Add me to it first.")
HERE_NOT_ALLOWED = N_(
    "Only the group's creator and administrators who may change its info can choose where my "
    "posts go."
)
TOPIC_SET = N_("✅ From now on my posts in this group go to this topic.")
MAIN_SET = N_("✅ From now on my posts in this group go to the main chat (General).")

# ---------------------------------------------------------------------- membership changes

CONNECTED = N_(
    "✅ {channel} is connected. It will receive every new piece from the {language} feed "
    "as a summary with a link to the article. Use /channels to change its settings."
)
NEEDS_POST_RIGHT = N_(
    "⚠️ I am an administrator of {channel} but cannot post there. "
    "Please give me the “Post messages” right."
)
DISCONNECTED = N_("{channel} is disconnected: I will not post there any more.")
# Stored as the chat's deactivation reason; /why shows it translated.
REMOVED = N_("the bot was removed")
NO_POST_RIGHT = N_("the bot lost the right to post")


# ---------------------------------------------------------------------- /here answers


def here_refusal(renderer: Renderer, lang: str, access: Access) -> str:
    """Why /here was refused: rights unknown (Telegram did not answer) or not allowed."""
    return renderer.message(lang, RIGHTS_UNKNOWN if access is Access.UNKNOWN else HERE_NOT_ALLOWED)


def here_done(renderer: Renderer, lang: str, thread_id: int | None) -> str:
    """Where the group's posts go from now on: the topic `thread_id`, or the main chat."""
    return renderer.message(lang, TOPIC_SET if thread_id else MAIN_SET)


# ---------------------------------------------------------------------- notices to the admin


def chat_label(title: str | None, username: str | None, chat_id: int) -> str:
    """How the notices name a chat: its title, else @username, else its id."""
    return title or (f"@{username}" if username else str(chat_id))


def connected(renderer: Renderer, lang: str, channel: str, languages: Iterable[str]) -> str:
    """The channel is connected and will receive the feeds of `languages` (codes)."""
    language = ", ".join(LANGUAGES.get(code, code) for code in languages)
    return renderer.message(lang, CONNECTED, channel=channel, language=language)


def needs_post_right(renderer: Renderer, lang: str, channel: str) -> str:
    """The bot is an admin of the channel but may not post there."""
    return renderer.message(lang, NEEDS_POST_RIGHT, channel=channel)


def disconnected(renderer: Renderer, lang: str, channel: str) -> str:
    """The bot will not post in the channel any more."""
    return renderer.message(lang, DISCONNECTED, channel=channel)
