"""What handlers receive: the services bundle, reached through a typed PTB context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from telegram.ext import Application, CallbackContext, ExtBot

from bot.clock import Clock
from bot.config import Settings
from bot.delivery.publisher import Publisher
from bot.delivery.ratelimit import RateLimits
from bot.text.i18n import Translator
from bot.text.render import Renderer
from storage.store import Store


@dataclass(slots=True)
class Services:
    """Everything a handler may call into; built once by the composition root."""

    settings: Settings
    store: Store
    translator: Translator
    renderer: Renderer
    limits: RateLimits
    clock: Clock
    publisher: Publisher

    def is_operator(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.settings.admin_user_ids


SERVICES_KEY = "services"


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """PTB's context with typed access to the services."""

    @property
    def services(self) -> Services:
        return cast(Services, self.bot_data[SERVICES_KEY])


BotApplication = Application[
    ExtBot[None], BotContext, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any
]
