"""What handlers receive: the few services they call, reached through a typed PTB context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from telegram.ext import Application, CallbackContext, ExtBot

from bot.clock import Clock
from bot.services.channel_admin import ChannelAdmin
from bot.services.readers import Readers
from bot.services.topics import Topics
from bot.text.i18n import Translator
from bot.text.render import Renderer
from storage.store import Store


@dataclass(frozen=True, slots=True)
class HandlerServices:
    """The services handlers call into; built once by the composition root."""

    store: Store
    renderer: Renderer
    clock: Clock
    readers: Readers
    channels: ChannelAdmin
    topics: Topics
    operators: frozenset[int]
    max_age: float  # MAX_AGE: /why explains a piece too old to post

    @property
    def translator(self) -> Translator:
        return self.renderer.translator

    def is_operator(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.operators


# The one entry of bot_data: PTB builds bot_data itself, so the services sit under this key.
SERVICES_KEY = "services"


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """PTB's context with typed access to the handlers' services."""

    @property
    def services(self) -> HandlerServices:
        return services_of(self.bot_data)


def services_of(bot_data: dict[Any, Any]) -> HandlerServices:
    """The handlers' services as the composition root stored them."""
    return cast(HandlerServices, bot_data[SERVICES_KEY])


BotApplication = Application[
    ExtBot[None], BotContext, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any
]
