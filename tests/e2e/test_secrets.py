"""The token never reaches the store, a log or a message, whatever Telegram's path answers."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from storage.models import DeliveryState
from tests.e2e.test_pipeline_e2e import feed
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer
from tests.support import TOKEN, bot_env, running_bot, wait_for

SECRET_PART = TOKEN.split(":", 1)[1]


def spellings() -> list[str]:
    return [TOKEN, quote(TOKEN, safe=""), SECRET_PART]


async def test_an_error_that_carries_the_token_is_scrubbed_before_it_is_stored(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    """A redirect on sendMessage: aiohttp, following a loop of them, gave up with an error
    naming the URL, /bot<token>/… in it, and that text went to events.detail and
    deliveries.last_error, and /why showed it. Posts now go through the keep-alive client,
    which follows no redirect and says so without the URL; the scrubbing stays as well."""
    channel = -1_001_800_000_001
    api.add_chat(channel, "channel", title="Channel")
    feed_server.set("/en/rss", feed(1))
    env = bot_env(api.url, {"en": feed_server.url("/en/rss")}, db_path, CHANNELS=f"en={channel}")
    async with running_bot(env):
        await api.wait_for(lambda a: len(a.calls_to("getUpdates")) >= 1, timeout=10)
        await wait_for("the first poll", lambda: bool(feed_server.requests_to("/en/rss")))
        # Two redirects: two failed tries (no answer from Telegram: retried with backoff).
        api.redirect_loop("sendMessage", times=2)
        feed_server.set("/en/rss", feed(1, 2))
        await api.wait_for(lambda a: a.calls_to("sendMessage") != [], timeout=10)
        await api.wait_sent(1, channel, timeout=60)  # the retry goes through
    with sqlite3.connect(db_path) as conn:
        errors = [r[0] for r in conn.execute("SELECT detail FROM events")]
        errors += [r[0] or "" for r in conn.execute("SELECT last_error FROM deliveries")]
        states = [r[0] for r in conn.execute("SELECT state FROM deliveries")]
    assert sum("redirect" in e.lower() for e in errors) == 2, errors
    for text in errors:
        for secret in spellings():
            assert secret not in text
    assert states == [DeliveryState.SENT.value]
    # And not a byte of it anywhere in the store's files.
    for path in db_path.parent.glob(db_path.name + "*"):
        data = path.read_bytes()
        for secret in spellings():
            assert secret.encode() not in data, path
