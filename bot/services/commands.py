"""The one table of bot commands, used by /help and by the "/" menus set with setMyCommands.

Each command has a translated description and the menus (scopes) it appears in. Telegram shows
a chat's admins the admin menu instead of the group menu, so the admin menu repeats the group
commands. Aliases (/lang) work but stay out of the menus.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from telegram import (
    Bot,
    BotCommand,
    BotCommandScope,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
)
from telegram.error import TelegramError

from bot.text.i18n import LANGUAGES, N_, Translator

log = logging.getLogger(__name__)


class Scope(enum.StrEnum):
    PRIVATE = "private"  # private chats with the bot
    GROUPS = "groups"  # every member of a group
    ADMINS = "admins"  # a group's admins (their menu replaces the group menu)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    description: str  # a msgid
    scopes: frozenset[Scope]
    operators_only: bool = False  # listed in /help for the bot's operators only, in no menu


_ALL = frozenset(Scope)
_PRIVATE = frozenset({Scope.PRIVATE})
_PRIVATE_ADMINS = frozenset({Scope.PRIVATE, Scope.ADMINS})
_ADMINS = frozenset({Scope.ADMINS})

COMMANDS: tuple[Command, ...] = (
    Command("start", N_("Start the bot and choose the language"), _ALL),
    Command("help", N_("What the bot can do"), _ALL),
    Command("search", N_("Search all pieces: /search words"), _ALL),
    Command("latest", N_("The latest pieces: /latest or /latest 10"), _ALL),
    Command("language", N_("Change the language"), _PRIVATE_ADMINS),
    Command("subscribe", N_("Get every new piece in this chat"), _PRIVATE_ADMINS),
    Command("unsubscribe", N_("Stop getting new pieces in this chat"), _PRIVATE_ADMINS),
    Command("settings", N_("Language, subscription and delivery of this chat"), _PRIVATE_ADMINS),
    Command("follow", N_("Follow a topic: /follow words"), _PRIVATE_ADMINS),
    Command("following", N_("The topics this chat follows"), _ALL),
    Command("unfollow", N_("Stop following a topic"), _PRIVATE_ADMINS),
    Command("channels", N_("Manage your channels"), _PRIVATE),
    Command("why", N_("Explain what happened to an article"), _ADMINS),
    Command("here", N_("Choose this forum topic for posts"), _ADMINS),
    Command("stats", N_("Bot statistics"), frozenset(), operators_only=True),
)

# Other names a command answers to (alias -> command); not shown in menus.
ALIASES = {"lang": "language"}

_TELEGRAM_SCOPES: dict[Scope, BotCommandScope] = {
    Scope.PRIVATE: BotCommandScopeAllPrivateChats(),
    Scope.GROUPS: BotCommandScopeAllGroupChats(),
    Scope.ADMINS: BotCommandScopeAllChatAdministrators(),
}


def commands_for(scope: Scope) -> list[Command]:
    """Return the commands of one menu, in table order."""
    return [command for command in COMMANDS if scope in command.scopes]


def menu(translator: Translator, lang: str, scope: Scope) -> list[BotCommand]:
    """Return one menu as BotCommands with descriptions in `lang`."""
    return [
        BotCommand(command.name, translator.gettext(lang, command.description))
        for command in commands_for(scope)
    ]


async def publish_menus(bot: Bot, translator: Translator) -> None:
    """Set every menu in every language, plus one without language_code for everyone else.

    A failed setMyCommands is logged and the rest go on: the bot works without menus.
    """
    failed = 0
    targets: list[tuple[str, str | None]] = [(lang, lang) for lang in LANGUAGES]
    targets.append((translator.default_language, None))
    for scope, telegram_scope in _TELEGRAM_SCOPES.items():
        for lang, language_code in targets:
            try:
                await bot.set_my_commands(
                    menu(translator, lang, scope), scope=telegram_scope, language_code=language_code
                )
            except TelegramError as exc:
                failed += 1
                log.warning("setMyCommands %s/%s failed: %s", scope, language_code, exc)
    if not failed:
        log.info("command menus set for %d language(s)", len(LANGUAGES))
