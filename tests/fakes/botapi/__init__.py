"""A fake Telegram Bot API server (aiohttp, 127.0.0.1) for end-to-end tests of the bot.

It keeps chats, messages, members and an update queue in memory, validates what Telegram
validates, enforces Telegram's flood limits, can be scripted to fail, and records every
request in ``api.calls`` so tests can assert on what the bot actually sent. It emulates the
methods the bot and python-telegram-bot call, no others; an unknown method answers 404.

server    FakeBotApi: HTTP, request parsing, the order of checks, the test-facing API
profile   getMe and setMyCommands
chats     chats, users, members, getChat*, leaveChat, blocked and migrated chats
messages  sendMessage, sendPhoto, edits, button and inline answers, and their validation
limits    the flood-control windows and their 429s
faults    scripted errors, nginx pages, garbage, redirect loops, odd successes
updates   update builders, getUpdates long polling, setWebhook/deleteWebhook
calls     ApiCall (one recorded request) and ApiError, shared by all
"""

from tests.fakes.botapi.calls import ApiCall, ApiError
from tests.fakes.botapi.limits import RATE_LIMITED_METHODS
from tests.fakes.botapi.messages import MESSAGE_METHODS, NOT_MODIFIED, HtmlErrorRecord
from tests.fakes.botapi.server import FakeBotApi

__all__ = [
    "MESSAGE_METHODS",
    "NOT_MODIFIED",
    "RATE_LIMITED_METHODS",
    "ApiCall",
    "ApiError",
    "FakeBotApi",
    "HtmlErrorRecord",
]
