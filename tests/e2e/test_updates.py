"""The update processor, end to end: the real bot against the fake Bot API.

One chat flooding the bot must never delay another chat's reply; the flood is cut to a bounded
backlog and the flooding chat is told once; the backlog can be dropped at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Runtime
from bot.text.i18n import Translator
from handlers.updates import MAX_BACKLOG, PerChatUpdateProcessor
from handlers.views.readers import LATEST_NONE, TOO_MANY_REQUESTS
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import bot_env, running_bot

FLOODER, OTHER = 701, 702
FLOOD = 90
TR = Translator()


@pytest.fixture
async def bot(api: FakeBotApi, feed_server: FeedServer, db_path: Path) -> AsyncIterator[Runtime]:
    feed_server.set("/en/rss", make_rss([]))
    api.add_chat(FLOODER, "private")
    api.add_chat(OTHER, "private")
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)
    async with running_bot(env) as runtime:
        yield runtime


def processor(runtime: Runtime) -> PerChatUpdateProcessor:
    found = runtime.application.update_processor
    assert isinstance(found, PerChatUpdateProcessor)
    return found


def texts(api: FakeBotApi, chat_id: int) -> list[str]:
    return api.sent_texts(chat_id)


async def test_a_flooding_chat_never_delays_another_chats_reply(
    bot: Runtime, api: FakeBotApi
) -> None:
    flooder, other = api.user(FLOODER, "Flo"), api.user(OTHER, "Bea")
    for _ in range(FLOOD):
        api.push_update(api.make_message_update(FLOODER, flooder, "/latest"))
    api.push_update(api.make_message_update(OTHER, other, "/start"))

    await api.wait_for(lambda a: len(a.sent(OTHER)) == 1, timeout=20)
    sent = api.sent()
    answered_first = sent.index(api.sent(OTHER)[0])
    flooder_before = sum(1 for call in sent[:answered_first] if call.chat_id == FLOODER)
    # The other chat is answered among the flooder's first replies, not after its backlog.
    assert flooder_before <= 5, flooder_before
    assert texts(api, OTHER)[0].startswith("👋 Welcome")

    # The flood is cut: what runs, plus what was dropped, is everything sent.
    nothing = TR.gettext("en", LATEST_NONE, language="English")
    dropped = processor(bot).dropped
    assert dropped >= FLOOD - MAX_BACKLOG - 1
    await api.wait_for(lambda a: texts(a, FLOODER).count(nothing) + dropped == FLOOD, timeout=20)
    # The flooder's backlog was still being worked after the other chat had its reply.
    assert len(api.sent(FLOODER)) > flooder_before + 1
    notices = [t for t in texts(api, FLOODER) if t == TR.gettext("en", TOO_MANY_REQUESTS)]
    assert len(notices) == 1  # told once per flood
    assert processor(bot).dropped == dropped  # nothing more was dropped later


async def test_updates_waiting_behind_their_chat_can_be_dropped_at_shutdown(
    bot: Runtime, api: FakeBotApi
) -> None:
    flooder: dict[str, Any] = api.user(FLOODER, "Flo")
    for _ in range(10):
        api.push_update(api.make_message_update(FLOODER, flooder, "/latest"))
    await api.wait_for(lambda a: len(a.sent(FLOODER)) >= 1, timeout=10)
    dropped = processor(bot).drop_queued()
    assert dropped >= 1 and processor(bot).waiting() == 0
    await api.wait_for(lambda a: len(a.sent(FLOODER)) == 10 - dropped, timeout=10)

    # Nothing dropped runs later: the chat's next command is answered next.
    api.push_update(api.make_message_update(FLOODER, flooder, "/start"))
    await api.wait_for(lambda a: len(a.sent(FLOODER)) == 10 - dropped + 1, timeout=10)
    assert texts(api, FLOODER)[-1].startswith("👋 Welcome")
    assert not any(t == TR.gettext("en", TOO_MANY_REQUESTS) for t in texts(api, FLOODER))
