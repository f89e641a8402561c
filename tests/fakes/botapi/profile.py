"""Who the bot is: getMe, and the command menus setMyCommands stores per scope and language."""

from __future__ import annotations

import json
import re

from tests.fakes.botapi.calls import ApiCall, Handler, JSONDict, bad

_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")


class Profile:
    def __init__(self, token: str) -> None:
        bot_id = token.split(":", 1)[0]
        #: What getMe answers.
        self.bot_user: JSONDict = {
            "id": int(bot_id) if bot_id.isdigit() else 123456,
            "is_bot": True,
            "first_name": "Test Bot",
            "username": "test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": True,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        #: Menus by (scope as sorted JSON, language_code or "").
        self.commands: dict[tuple[str, str], list[JSONDict]] = {}

    @property
    def bot_id(self) -> int:
        return int(self.bot_user["id"])

    def public_bot_user(self) -> JSONDict:
        # The getMe-only capability flags don't appear on users inside other objects.
        keys = ("id", "is_bot", "first_name", "last_name", "username")
        return {k: self.bot_user[k] for k in keys if k in self.bot_user}

    def handlers(self) -> dict[str, Handler]:
        return {"getMe": self._get_me, "setMyCommands": self._set_my_commands}

    def _get_me(self, call: ApiCall) -> JSONDict:
        return dict(self.bot_user)

    def _set_my_commands(self, call: ApiCall) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad("can't parse commands JSON object")
        cleaned: list[JSONDict] = []
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.match(
                str(command.get("command", ""))
            ):
                raise bad("BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise bad("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": command["command"], "description": description})
        scope = call.params.get("scope") or {"type": "default"}
        key = json.dumps(scope, sort_keys=True), str(call.params.get("language_code") or "")
        self.commands[key] = cleaned
        return True
