"""Tests of the test fakes: they must behave like Telegram and like real feed hosts."""

from __future__ import annotations

import asyncio
import gzip
import html
import json
import time
from datetime import UTC, datetime
from typing import Any

import feedparser
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter

from tests.fakes.botapi import NOT_MODIFIED, FakeBotApi
from tests.fakes.feedserver import FeedServer, make_atom, make_rss
from tests.fakes.telegram_html import TelegramHtmlError, check_html, parse_html, utf16_len

# -- helpers ------------------------------------------------------------------------------


# Limits these tests never reach: flood control has tests of its own.
NO_FLOOD: dict[str, Any] = {
    "global_per_second": 1000,
    "group_per_minute": 1000,
    "private_per_second": 1000,
}


class FakeClock:
    """Manually advanced monotonic clock for deterministic rate-limit tests."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def call(
    client: httpx.AsyncClient, api: FakeBotApi, method: str, token: str | None = None, **params: Any
) -> tuple[int, dict[str, Any]]:
    """POST form-encoded like python-telegram-bot: non-strings are JSON-encoded."""
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    response = await client.post(f"{api.url}/bot{token or api.token}/{method}", data=data)
    return response.status_code, response.json()


def error_of(text: str, *, strict: bool = True) -> str:
    with pytest.raises(TelegramHtmlError) as info:
        parse_html(text, strict=strict)
    return info.value.message


# -- telegram_html ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("plain text", "plain text"),
        ("<b>bold <i>and italic</i></b>", "bold and italic"),
        ("<B>upper-case tags</b>", "upper-case tags"),
        ("<strong>s</strong><em>e</em><u>u</u><ins>i</ins><s>s</s><strike>k</strike>", "seuisk"),
        ('<del>d</del><tg-spoiler>x</tg-spoiler><span class="tg-spoiler">y</span>', "dxy"),
        ('<a href="https://caliber.az/en?a=1&amp;b=2">link</a>', "link"),
        ("<a href='https://caliber.az/'>single quotes</a>", "single quotes"),
        ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "👍"),
        ('<pre><code class="language-python">x = 1</code></pre>', "x = 1"),
        ("<code>&lt;tag&gt;</code>", "<tag>"),
        ("<blockquote>quote</blockquote>", "quote"),
        ("<blockquote expandable>long quote</blockquote>", "long quote"),
        ("&lt;&gt;&amp;&quot;", '<>&"'),
        ("&#65;&#x42;&#x1F600;", "AB😀"),
        ("Tom &amp; Jerry&#x27;s", "Tom & Jerry's"),
        ("<b>\n</b>line\n", "\nline\n"),
    ],
)
def test_valid_html(source: str, plain: str) -> None:
    assert check_html(source) == plain


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hello <div>x</div>", 'Unsupported start tag "div" at byte offset 6'),
        ("line<br>break", 'Unsupported start tag "br" at byte offset 4'),
        ("<p>para</p>", 'Unsupported start tag "p" at byte offset 0'),
        # Byte offsets count UTF-8 bytes: "Привет " is 13 bytes.
        ("Привет <div>", 'Unsupported start tag "div" at byte offset 13'),
        ("<b>never closed", "Can't find end tag corresponding to start tag b"),
        (
            "<b><i>crossed</b></i>",
            'Unmatched end tag at byte offset 13, expected "</i>", found "</b>"',
        ),
        ("stray</b>", "Unexpected end tag at byte offset 5"),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("a<b", "Unclosed start tag at byte offset 1"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ('<tg-emoji emoji-id="abc">x</tg-emoji>', "Invalid custom emoji identifier specified"),
        ("&#xD800;", "Text contains invalid Unicode characters after decoding HTML entities"),
        ("nul\0byte", "Text must not contain null bytes"),
    ],
)
def test_invalid_html(source: str, message: str) -> None:
    assert error_of(source).startswith(message)
    assert error_of(source, strict=False).startswith(message)


@pytest.mark.parametrize(
    ("source", "message", "lenient_plain"),
    [
        ("AT&T", "Character '&' is reserved", "AT&T"),
        ("&nbsp;", "Character '&' is reserved", "&nbsp;"),
        ("&lt without semicolon", "Character '&' is reserved", "< without semicolon"),
        ("2 > 1", "Character '>' is reserved", "2 > 1"),
        ('<a href="https://x.y/?a=1&b=2">l</a>', "Character '&' is reserved", "l"),
        ("<a>caliber.az</a>", 'Tag "a" must have an "href" attribute', "caliber.az"),
        (
            "<a href=caliber.az>x</a>",
            'Value of the attribute "href" of the tag "a" must be quoted',
            "x",
        ),
        ("<i lang>x</i>", "Expected equal sign in declaration of an attribute", "x"),
    ],
)
def test_strict_mode_enforces_documented_rules(
    source: str, message: str, lenient_plain: str
) -> None:
    """Real Telegram tolerates these; strict mode (the default) follows the docs."""
    assert error_of(source).startswith(message)
    assert check_html(source, strict=False) == lenient_plain


def test_error_description_is_bot_api_shaped() -> None:
    with pytest.raises(TelegramHtmlError) as info:
        check_html("<div>")
    assert info.value.description == (
        'Bad Request: can\'t parse entities: Unsupported start tag "div" at byte offset 0'
    )
    assert str(info.value) == info.value.description


def test_entities_use_utf16_offsets() -> None:
    parsed = parse_html('😀 <b>bold</b> <a href="https://caliber.az">l</a>')
    assert parsed.text == "😀 bold l"
    assert [e.to_dict() for e in parsed.entities] == [
        {"type": "bold", "offset": 3, "length": 4},
        {"type": "text_link", "offset": 8, "length": 1, "url": "https://caliber.az"},
    ]
    pre = parse_html('<pre><code class="language-py">x</code></pre>').entities
    assert [e.to_dict() for e in pre] == [
        {"type": "pre", "offset": 0, "length": 1, "language": "py"}
    ]
    assert parse_html("<blockquote expandable>q</blockquote>").entities[0].type == (
        "expandable_blockquote"
    )


@pytest.mark.parametrize(
    ("source", "plain"),
    # Vectors from tdlib's own test suite (test/message_entities.cpp).
    [
        ("🏟 🏟<i>🏟 &lt🏟</i>", "🏟 🏟🏟 <🏟"),
        ("🏟 🏟<i>🏟 &gt;<b aba   =   caba>&lt🏟</b></i>", "🏟 🏟🏟 ><🏟"),
        ("🏟 🏟&lt;<i    aba  =  '&lt;&gt;&quot;'>a</>", "🏟 🏟<a"),
        ("🏟 🏟&lt;<i>a</    >", "🏟 🏟<a"),
        ("&lt;&gt;&amp;&quot;&laquo;&raquo;&#12345678;", '<>&"&laquo;&raquo;&#12345678;'),
    ],
)
def test_lenient_mode_matches_tdlib(source: str, plain: str) -> None:
    assert check_html(source, strict=False) == plain


def test_utf16_len() -> None:
    assert utf16_len("") == 0
    assert utf16_len("abc") == 3
    assert utf16_len("Привет") == 6
    assert utf16_len("😀") == 2  # astral plane: a surrogate pair
    assert utf16_len("🇦🇿") == 4  # a flag is two regional indicators


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0")))
def test_escaped_text_round_trips(text: str) -> None:
    assert check_html(html.escape(text)) == text


# -- FakeBotApi: protocol -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_auth_unknown_method_and_param_decoding() -> None:
    async with FakeBotApi() as api, httpx.AsyncClient() as client:
        status, body = await call(client, api, "getMe")
        assert status == 200
        assert body["ok"]
        assert body["result"]["is_bot"] is True

        status, body = await call(client, api, "getMe", token="1:WRONG")
        assert (status, body) == (
            401,
            {"ok": False, "error_code": 401, "description": "Unauthorized"},
        )
        status, body = await call(client, api, "noSuchMethod")
        assert (status, body) == (404, {"ok": False, "error_code": 404, "description": "Not Found"})
        assert (await client.get(f"{api.url}/favicon.ico")).status_code == 404

        markup = {"inline_keyboard": [[{"text": "Open", "callback_data": "open:1"}]]}
        status, body = await call(
            client, api, "sendMessage", chat_id=-1001234567890, text="[1, 2]",
            reply_markup=markup, disable_notification=True, message_thread_id=7,
        )  # fmt: skip
        assert status == 200, body
        params = api.calls[-1].params
        assert params["chat_id"] == -1001234567890
        assert params["text"] == "[1, 2]"  # free text is never JSON-decoded
        assert params["reply_markup"] == markup
        assert params["disable_notification"] is True
        assert params["message_thread_id"] == 7
        assert body["result"]["reply_markup"] == markup

        # JSON bodies work too, and methods are case-insensitive like on Telegram.
        response = await client.post(
            f"{api.url}/bot{api.token}/sendmessage", json={"chat_id": "42", "text": "hi"}
        )
        assert response.json()["result"]["chat"] == {
            "id": 42,
            "type": "private",
            "first_name": "User42",
        }
        assert api.calls[-1].method == "sendMessage"


@pytest.mark.asyncio
async def test_send_message_validation() -> None:
    async with FakeBotApi(**NO_FLOOD) as api, httpx.AsyncClient() as client:

        async def send(text: str, **extra: Any) -> tuple[int, dict[str, Any]]:
            return await call(client, api, "sendMessage", chat_id=5, text=text, **extra)

        status, body = await send("<b>Hi</b> &amp; bye", parse_mode="HTML")
        assert status == 200
        message = body["result"]
        assert message["text"] == "Hi & bye"
        assert message["entities"] == [{"type": "bold", "offset": 0, "length": 2}]
        assert api.messages[(5, message["message_id"])]["text"] == "Hi & bye"

        status, body = await send("<div>x</div>", parse_mode="html")
        assert status == 400
        assert body["description"] == (
            'Bad Request: can\'t parse entities: Unsupported start tag "div" at byte offset 0'
        )
        assert api.html_errors[-1].text == "<div>x</div>"
        # Without parse_mode the same text is fine.
        assert (await send("<div>x</div>"))[0] == 200

        assert (await send("<b> </b>", parse_mode="HTML"))[1]["description"] == (
            "Bad Request: message text is empty"
        )
        assert (await send("😀" * 2048))[0] == 200  # exactly 4096 UTF-16 units
        assert (await send("😀" * 2048 + "a"))[1][
            "description"
        ] == "Bad Request: message is too long"

        big = "x" * 65
        status, body = await send(
            "k", reply_markup={"inline_keyboard": [[{"text": "b", "callback_data": big}]]}
        )
        assert (status, body["description"]) == (400, "Bad Request: BUTTON_DATA_INVALID")
        assert len(api.sent(5)) == 3


@pytest.mark.asyncio
async def test_photos_and_captions() -> None:
    async with FakeBotApi(**NO_FLOOD) as api, httpx.AsyncClient() as client:
        api.bad_photo_urls.add("https://img.example/broken.jpg")
        status, body = await call(
            client, api, "sendPhoto", chat_id=-100500, photo="https://img.example/ok.jpg",
            caption="<i>cap</i>", parse_mode="HTML",
        )  # fmt: skip
        assert status == 200
        assert body["result"]["caption"] == "cap"
        assert body["result"]["photo"]

        status, body = await call(
            client, api, "sendPhoto", chat_id=-100500, photo="https://img.example/broken.jpg"
        )
        assert body["description"] == "Bad Request: wrong type of the web page content"
        status, body = await call(
            client, api, "sendPhoto", chat_id=-100500, photo="https://img.example/ok.jpg",
            caption="c" * 1025,
        )  # fmt: skip
        assert body["description"] == "Bad Request: message caption is too long"

        # The bot sends photos by URL: an upload (multipart, as python-telegram-bot sends local
        # files) is a need the fake doesn't meet, and says so rather than pretend.
        response = await client.post(
            f"{api.url}/bot{api.token}/sendPhoto",
            data={"chat_id": "-100500", "caption": "up"},
            files={"photo": ("p.jpg", b"\xff\xd8jpeg", "image/jpeg")},
        )
        assert response.status_code == 400
        assert "file uploads are not emulated" in response.json()["description"]
        assert len(api.sent(-100500)) == 1


@pytest.mark.asyncio
async def test_edits() -> None:
    async with FakeBotApi(**NO_FLOOD) as api, httpx.AsyncClient() as client:
        _, body = await call(client, api, "sendMessage", chat_id=-100777, text="v1")
        message_id = body["result"]["message_id"]

        _, body = await call(
            client, api, "editMessageText", chat_id=-100777, message_id=message_id,
            text="<b>v2</b>", parse_mode="HTML",
        )  # fmt: skip
        assert body["result"]["text"] == "v2"
        assert "edit_date" in body["result"]
        assert api.messages[(-100777, message_id)]["text"] == "v2"

        status, body = await call(
            client, api, "editMessageText", chat_id=-100777, message_id=message_id,
            text="<b>v2</b>", parse_mode="HTML",
        )  # fmt: skip
        assert (status, body["description"]) == (400, NOT_MODIFIED)
        _, body = await call(
            client, api, "editMessageText", chat_id=-100777, message_id=999, text="x"
        )
        assert body["description"] == "Bad Request: message to edit not found"
        _, body = await call(
            client, api, "editMessageCaption", chat_id=-100777, message_id=message_id, caption="x"
        )
        assert body["description"] == "Bad Request: there is no caption in the message to edit"


@pytest.mark.asyncio
async def test_chats_lookups_and_leaving() -> None:
    async with FakeBotApi() as api, httpx.AsyncClient() as client:
        channel = api.add_chat(-1001111, "channel", title="Caliber", username="caliber_test")
        # Lookups answer only for chats the fake knows; a send by id makes a chat known.
        _, body = await call(client, api, "getChat", chat_id=-1002222)
        assert body["description"] == "Bad Request: chat not found"
        _, body = await call(client, api, "sendMessage", chat_id="@nobody_known", text="x")
        assert body["description"] == "Bad Request: chat not found"
        assert (await call(client, api, "sendMessage", chat_id=-1002222, text="x"))[0] == 200
        _, body = await call(client, api, "getChat", chat_id="-1002222")
        assert body["result"]["type"] == "group"  # typed by its id: not -100…, a basic group

        _, body = await call(client, api, "sendMessage", chat_id="@caliber_test", text="x")
        assert body["result"]["chat"] == channel
        assert "sender_chat" in body["result"]
        assert [c.params["chat_id"] for c in api.sent(-1001111)] == ["@caliber_test"]

        _, body = await call(client, api, "getChat", chat_id="@caliber_test")
        assert body["result"]["title"] == "Caliber"

        api.set_member(-1001111, 99, "creator")
        api.set_member(-1001111, api.bot_user["id"], "administrator", can_post_messages=False)
        _, body = await call(
            client, api, "getChatMember", chat_id=-1001111, user_id=api.bot_user["id"]
        )
        assert body["result"]["status"] == "administrator"
        assert body["result"]["can_post_messages"] is False
        assert body["result"]["can_change_info"] is True
        _, body = await call(client, api, "getChatMember", chat_id=-1001111, user_id=12345)
        assert body["result"]["status"] == "member"
        _, body = await call(client, api, "getChatAdministrators", chat_id=-1001111)
        assert sorted(m["status"] for m in body["result"]) == ["administrator", "creator"]

        assert (await call(client, api, "leaveChat", chat_id=-1001111))[1]["result"] is True
        assert api.members[(-1001111, api.bot_user["id"])]["status"] == "left"
        assert (await call(client, api, "sendMessage", chat_id=-1001111, text="x"))[1] == {
            "ok": False,
            "error_code": 403,
            "description": "Forbidden: bot is not a member of the channel chat",
        }
        _, body = await call(client, api, "leaveChat", chat_id=42)
        assert body["description"] == "Bad Request: chat not found"


# -- FakeBotApi: flood control ------------------------------------------------------------


@pytest.mark.asyncio
async def test_global_limit() -> None:
    clock = FakeClock()
    async with FakeBotApi(global_per_second=3, clock=clock) as api, httpx.AsyncClient() as client:
        for chat_id in (1, 2, 3):
            assert (await call(client, api, "sendMessage", chat_id=chat_id, text="x"))[0] == 200
        status, body = await call(client, api, "sendMessage", chat_id=4, text="x")
        assert status == 429
        assert body == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        }
        assert api.rate_violations == 1
        clock.now += 1.0  # the first three slide out of the window
        assert (await call(client, api, "sendMessage", chat_id=4, text="x"))[0] == 200
        # Non-sending methods are never limited.
        assert (await call(client, api, "getMe"))[0] == 200


@pytest.mark.asyncio
async def test_group_limit_retry_after_and_refusals_not_counted() -> None:
    clock = FakeClock()
    async with (
        FakeBotApi(group_per_minute=2, clock=clock) as api,
        httpx.AsyncClient() as client,
    ):

        async def send() -> tuple[int, dict[str, Any]]:
            return await call(client, api, "sendMessage", chat_id=-100900, text="x")

        assert (await send())[0] == 200  # t=0
        clock.now += 10
        assert (await send())[0] == 200  # t=10
        clock.now += 10
        status, body = await send()  # t=20: the window frees up at t=60
        assert (status, body["parameters"]["retry_after"]) == (429, 40)
        for _ in range(5):  # refused requests must not extend the window
            assert (await send())[0] == 429
        # Another group is not affected.
        assert (await call(client, api, "sendMessage", chat_id=-100901, text="x"))[0] == 200
        clock.now += 40.5  # t=60.5: the first send expired
        assert (await send())[0] == 200
        status, body = await send()
        assert body["parameters"]["retry_after"] == 10  # t=10 expires at t=70
        assert api.rate_violations == 7
        assert len(api.sent(-100900)) == 3


@pytest.mark.asyncio
async def test_private_limit_and_edits_count() -> None:
    clock = FakeClock()
    async with FakeBotApi(clock=clock) as api, httpx.AsyncClient() as client:
        assert (await call(client, api, "sendMessage", chat_id=7, text="a"))[0] == 200
        status, body = await call(client, api, "sendMessage", chat_id=7, text="b")
        assert (status, body["parameters"]["retry_after"]) == (429, 1)
        assert (await call(client, api, "sendMessage", chat_id=8, text="c"))[0] == 200
        clock.now += 1.0  # one message a second in a private chat
        assert (await call(client, api, "sendMessage", chat_id=7, text="d"))[0] == 200
        # Edits count too.
        message_id = api.sent(7)[-1].result["message_id"]
        status, _ = await call(
            client, api, "editMessageText", chat_id=7, message_id=message_id, text="e"
        )
        assert status == 429
        assert [c.text for c in api.sent(7)] == ["a", "d"]


# -- FakeBotApi: scripted faults ----------------------------------------------------------


@pytest.mark.asyncio
async def test_scripted_faults() -> None:
    async with FakeBotApi(**NO_FLOOD) as api, httpx.AsyncClient() as client:

        async def send(chat_id: int) -> tuple[int, dict[str, Any]]:
            return await call(client, api, "sendMessage", chat_id=chat_id, text="x")

        api.fail("sendMessage", chat_id=-1, description="Bad Request: nope", times=2)
        assert (await send(-2))[0] == 200  # other chats unaffected
        assert (await send(-1))[1]["description"] == "Bad Request: nope"
        assert (await send(-1))[0] == 400
        assert (await send(-1))[0] == 200

        api.retry_after(-1, 7)
        status, body = await send(-1)
        assert (status, body["parameters"]) == (429, {"retry_after": 7})
        assert api.rate_violations == 0  # scripted, not a window violation

        api.forbid(10)
        for _ in range(2):
            assert (await send(10))[1] == {
                "ok": False,
                "error_code": 403,
                "description": "Forbidden: bot was blocked by the user",
            }
        api.unforbid(10)
        assert (await send(10))[0] == 200

        api.migrate(-300, -100300)
        status, body = await send(-300)
        assert body["description"] == "Bad Request: group chat was upgraded to a supergroup chat"
        assert body["parameters"] == {"migrate_to_chat_id": -100300}
        assert (await send(-100300))[0] == 200

        api.server_error("sendMessage")
        status, body = await send(1)
        assert (status, body["error_code"]) == (500, 500)
        api.server_error("sendMessage", status=502)
        response = await client.post(
            f"{api.url}/bot{api.token}/sendMessage", data={"chat_id": "1", "text": "x"}
        )
        assert response.status_code == 502
        assert "Bad Gateway" in response.text
        assert (await send(1))[0] == 200


# -- FakeBotApi: updates ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_updates_long_polling() -> None:
    async with FakeBotApi() as api, httpx.AsyncClient(timeout=10) as client:
        user = api.user(42, first_name="Ann")
        chat = api.add_chat(42, "private", title="Ann")

        async def push_while_polling() -> None:
            await api.wait_for(lambda a: [c.status for c in a.calls_to("getUpdates")] == [None])
            api.push_update(api.make_message_update(chat, user, "/start@test_bot hello"))

        started = time.monotonic()
        pusher = asyncio.create_task(push_while_polling())
        status, body = await call(client, api, "getUpdates", timeout=5, offset=0)
        await pusher
        assert status == 200
        assert time.monotonic() - started < 2
        [update] = body["result"]
        message = update["message"]
        assert message["text"] == "/start@test_bot hello"
        assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 15}]

        # Without a new offset the update is delivered again; with it, it's confirmed.
        assert (await call(client, api, "getUpdates", timeout=0))[1]["result"] == [update]
        _, body = await call(client, api, "getUpdates", offset=update["update_id"] + 1, timeout=0)
        assert body["result"] == []
        assert api.updates == []

        started = time.monotonic()
        _, body = await call(client, api, "getUpdates", timeout=1)
        assert body["result"] == []
        assert 0.9 < time.monotonic() - started < 3


@pytest.mark.asyncio
async def test_get_updates_conflict_and_allowed_updates() -> None:
    async with FakeBotApi() as api, httpx.AsyncClient(timeout=10) as client:
        first = asyncio.create_task(call(client, api, "getUpdates", timeout=5))
        await api.wait_for(lambda a: len(a.calls_to("getUpdates")) == 1)
        second = asyncio.create_task(call(client, api, "getUpdates", timeout=0))
        status, body = await first
        assert status == 409
        assert body["description"].startswith("Conflict: terminated by other")
        assert (await second)[0] == 200

        user = api.user(1)
        api.push_update(api.make_inline_query_update(user, "q"))
        api.push_update(api.make_message_update(1, user, "hi"))
        _, body = await call(client, api, "getUpdates", allowed_updates=["message"], timeout=0)
        assert [next(iter(u)) for u in body["result"]] == ["message"]
        assert api.allowed_updates == ["message"]


@pytest.mark.asyncio
async def test_python_telegram_bot_against_fake() -> None:
    """The fake's answers must parse with the library the bot uses."""
    async with FakeBotApi() as api:
        channel = api.add_chat(-1005, "channel", title="News", username="news")
        user = api.user(77, username="ann")
        async with Bot(api.token, base_url=api.base_url) as bot:
            assert bot.username == "test_bot"
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("More", callback_data="m")]])
            message = await bot.send_message(
                -1005, "<b>Title</b>\nBody", parse_mode="HTML", reply_markup=keyboard
            )
            assert message.text == "Title\nBody"
            assert message.entities[0].type == "bold"

            photo = await bot.send_photo(
                -1005, "https://img/1.jpg", caption="<i>one</i>", parse_mode="HTML"
            )
            assert photo.caption == "one"
            assert photo.photo[-1].width == 1280

            with pytest.raises(BadRequest, match=r"(?i)unsupported start tag"):
                await bot.send_message(-1005, "<br>", parse_mode="HTML")
            api.retry_after(-1005, 3)  # scripted for the id, met by a send to the username
            with pytest.raises(RetryAfter):
                await bot.send_message("@news", "x")
            assert api.calls[-1].parameters == {"retry_after": 3}
            api.forbid(77)
            with pytest.raises(Forbidden):
                await bot.send_message(77, "x")
            api.migrate(-9, -1009)
            with pytest.raises(ChatMigrated) as migrated:
                await bot.send_message(-9, "x")
            assert migrated.value.new_chat_id == -1009
            api.server_error("sendMessage", status=502)
            with pytest.raises(NetworkError):
                await bot.send_message(-1005, "x")

            member = await bot.get_chat_member(-1005, bot.id)
            assert member.status == "administrator"
            assert (await bot.get_chat("@news")).title == "News"

            api.push_update(api.make_my_chat_member_update(channel, user, "left", "administrator"))
            api.push_update(api.make_callback_update(channel, user, "m", message.message_id))
            api.push_update(api.make_inline_query_update(user, "query"))
            updates = await bot.get_updates(timeout=1)
            assert [type(u) for u in updates] == [Update] * 3
            assert updates[0].my_chat_member.new_chat_member.status == "administrator"
            assert updates[1].callback_query.message.message_id == message.message_id
            assert updates[2].inline_query.query == "query"
        assert len(await api.wait_sent(2, chat_id=-1005)) == 2


@pytest.mark.asyncio
async def test_wait_for_reports_recent_calls() -> None:
    async with FakeBotApi() as api, httpx.AsyncClient() as client:
        await call(client, api, "sendMessage", chat_id=1, text="<x>", parse_mode="HTML")
        with pytest.raises(AssertionError, match=r"sendMessage\(chat_id=1\) -> 400"):
            await api.wait_sent(1, timeout=0.05)


# -- FeedServer ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_feed_conditional_get_and_gzip() -> None:
    rss = make_rss([{"title": "One", "link": "https://caliber.az/en/post/1", "guid": "1"}])
    async with FeedServer() as server, httpx.AsyncClient() as client:
        server.set("/rss", rss, last_modified="Mon, 01 Jan 2024 10:00:00 GMT")
        response = await client.get(server.url("/rss"))  # httpx asks for gzip by default
        assert response.status_code == 200
        assert response.text == rss
        assert response.headers["content-encoding"] == "gzip"
        assert server.requests[-1].gzipped
        etag = response.headers["etag"]

        response = await client.get(server.url("/rss"), headers={"If-None-Match": etag})
        assert response.status_code == 304
        assert response.content == b""
        response = await client.get(
            server.url("/rss"), headers={"If-Modified-Since": "Mon, 01 Jan 2024 10:00:00 GMT"}
        )
        assert response.status_code == 304

        raw = await client.get(server.url("/rss"), headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers
        assert not server.requests[-1].gzipped

        server.set("/rss", rss.replace("One", "Two"))  # new body, new validator
        response = await client.get(server.url("/rss"), headers={"If-None-Match": etag})
        assert response.status_code == 200
        assert "Two" in response.text
        assert [r.status for r in server.requests_to("/rss")] == [200, 304, 304, 200, 200]
        assert server.requests[1].headers["if-none-match"] == etag

        # The bytes on the wire really are gzip.
        async with client.stream("GET", server.url("/rss")) as response:
            wire = b"".join([chunk async for chunk in response.aiter_raw()])
        assert gzip.decompress(wire).decode() == rss.replace("One", "Two")


@pytest.mark.asyncio
async def test_feed_failure_modes() -> None:
    async with FeedServer() as server, httpx.AsyncClient() as client:
        server.set("/rss", make_rss([]))
        server.fail("/rss", status=503, times=2)
        assert [(await client.get(server.url("/rss"))).status_code for _ in range(3)] == [
            503,
            503,
            200,
        ]
        assert (await client.get(server.url("/missing"))).status_code == 404

        server.garbage("/bad")
        parsed = feedparser.parse((await client.get(server.url("/bad"))).content)
        assert parsed.bozo
        assert not parsed.entries

        server.slow("/rss", 1.0)
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url("/rss"), timeout=0.1)
        server.slow("/rss", 0)

        server.huge("/huge", 5_000_000)
        received = 0
        async with client.stream("GET", server.url("/huge")) as response:
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > 100_000:  # a client-side size cap
                    break
        assert received > 100_000

        server.redirect("/old", "/rss", status=301)
        response = await client.get(server.url("/old"), follow_redirects=True)
        assert response.status_code == 200
        assert response.history[0].status_code == 301

        server.set_page("/en/post/1", "<html><body><article>Text</article></body></html>")
        page = await client.get(server.url("/en/post/1"))
        assert page.headers["content-type"].startswith("text/html")
        assert "Text" in page.text


def test_make_rss_parses_with_feedparser() -> None:
    published = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    rss = make_rss(
        [
            {
                "title": "Baku & Ankara <talks>",
                "link": "https://caliber.az/en/post/1",
                "guid": "https://caliber.az/en/post/1",
                "guid_is_permalink": True,
                "description": "<p>First <b>para</b> ]]> tricky</p>",
                "pub_date": published,
                "categories": ["Analytics", "Politics"],
                "author": "editor@caliber.az (Editor)",
                "enclosure": {"url": "https://caliber.az/img/1.jpg", "type": "image/jpeg"},
                "media_content": "https://caliber.az/img/1-large.jpg",
            },
            {"title": "Second", "link": "https://caliber.az/en/post/2", "guid": "p2"},
        ]
    )
    feed = feedparser.parse(rss)
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.title == "Caliber.az"
    assert feed.feed.language == "en"
    first, second = feed.entries
    assert first.title == "Baku & Ankara <talks>"
    assert first.id == "https://caliber.az/en/post/1"
    assert "<b>para</b> ]]> tricky" in first.summary
    assert datetime(*first.published_parsed[:6], tzinfo=UTC) == published
    assert [t.term for t in first.tags] == ["Analytics", "Politics"]
    assert first.enclosures[0].href == "https://caliber.az/img/1.jpg"
    assert first.media_content[0]["url"] == "https://caliber.az/img/1-large.jpg"
    assert second.id == "p2"


def test_make_atom_parses_with_feedparser() -> None:
    updated = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    atom = make_atom(
        [
            {
                "id": "urn:post:1",
                "title": "Atom & entry",
                "link": "https://caliber.az/en/post/1",
                "summary": "<p>Summary <i>html</i></p>",
                "updated": updated,
            }
        ]
    )
    feed = feedparser.parse(atom)
    assert not feed.bozo, feed.bozo_exception
    [entry] = feed.entries
    assert (entry.id, entry.title, entry.link) == (
        "urn:post:1",
        "Atom & entry",
        "https://caliber.az/en/post/1",
    )
    assert "<i>html</i>" in entry.summary
    assert datetime(*entry.updated_parsed[:6], tzinfo=UTC) == updated
