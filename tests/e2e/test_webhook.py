"""Webhook mode, end to end: the real bot serves WEBHOOK_URL's path on 127.0.0.1, tells the fake
Bot API where Telegram should send updates, and handles real Update JSON posted over HTTP.

A request without X-Telegram-Bot-Api-Secret-Token, or with a wrong one, is refused with 403 and
never handled. Polling mode, in turn, drops a webhook a previous run left set.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp

import handlers
from bot.text.i18n import Translator
from handlers.views.readers import GREETING, NOTHING_FOUND
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, make_rss
from tests.support import bot_env, running_bot

SECRET = "hook-secret_0123456789abcdefABCDEF"
HOOK_URL = "https://example.invalid/tg/hook"
READER = 7001
TR = Translator()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def webhook_env(api: FakeBotApi, feeds: FeedServer, db_path: Path, port: int) -> dict[str, str]:
    feeds.set("/en/rss", make_rss([]))
    return bot_env(
        api.url,
        {"en": feeds.url("/en/rss")},
        db_path,
        WEBHOOK_URL=HOOK_URL,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(port),
    )


class Telegram:
    """Posts updates to the bot's webhook as Telegram's servers do."""

    def __init__(self, api: FakeBotApi, session: aiohttp.ClientSession, port: int) -> None:
        self.api = api
        self.session = session
        self.url = f"http://127.0.0.1:{port}/tg/hook"
        self.reader = api.user(READER, first_name="Reader", language_code="en")
        self.update_ids = iter(range(500_000, 600_000))

    async def post(self, text: str, secret: str | None = SECRET) -> int:
        """Post `text` from the reader's private chat; return the HTTP status."""
        update: dict[str, Any] = self.api.make_message_update(READER, self.reader, text)
        update["update_id"] = next(self.update_ids)
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        timeout = aiohttp.ClientTimeout(total=10)
        async with self.session.post(
            self.url, json=update, headers=headers, timeout=timeout
        ) as answer:
            return answer.status


async def test_webhook_mode_serves_updates_with_the_secret_and_refuses_others(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    api.add_chat(READER, "private", title="Reader")
    port = free_port()
    async with (
        running_bot(webhook_env(api, feed_server, db_path, port)),
        aiohttp.ClientSession() as session,
    ):
        telegram = Telegram(api, session, port)
        # Telegram was told the public URL, the secret and the update kinds the bot handles.
        [set_webhook] = api.calls_to("setWebhook")
        assert set_webhook.params["url"] == HOOK_URL
        assert set_webhook.params["secret_token"] == SECRET
        assert api.webhook_url == HOOK_URL
        assert api.allowed_updates == handlers.ALLOWED_UPDATES

        assert await telegram.post("/start") == 200
        await api.wait_sent(1, READER)
        assert api.sent_texts(READER)[0].startswith(TR.gettext("en", GREETING))

        # Neither a missing nor a wrong secret gets an update handled.
        assert await telegram.post("/start", secret=None) == 403
        assert await telegram.post("/start", secret=SECRET[:-1] + "X") == 403
        assert await telegram.post("/start", secret="") == 403

        # Updates of one chat are handled in order: once this reply is there, anything the
        # refused requests had let in would have been answered before it.
        assert await telegram.post("/search zebra") == 200
        await api.wait_sent(2, READER)
        texts = api.sent_texts(READER)
        assert len(texts) == 2
        nothing_found = TR.gettext("en", NOTHING_FOUND).format(query="zebra")
        assert nothing_found in texts[1]

    assert api.calls_to("getUpdates") == []
    assert api.calls_to("deleteWebhook") == []  # pending updates stay queued for the next start


async def test_polling_mode_drops_a_webhook_left_from_an_earlier_run(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    api.webhook_url = HOOK_URL  # as a webhook-mode run leaves it; getUpdates would get 409
    api.add_chat(READER, "private", title="Reader")
    reader = api.user(READER, first_name="Reader", language_code="en")
    feed_server.set("/en/rss", make_rss([]))
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path)
    async with running_bot(env):
        api.push_update(api.make_message_update(READER, reader, "/start"))
        await api.wait_sent(1, READER)

    assert api.calls_to("deleteWebhook")
    assert api.webhook_url == ""
    assert api.calls_to("setWebhook") == []
    assert all(call.ok for call in api.calls_to("getUpdates"))
