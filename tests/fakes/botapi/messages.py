"""What the bot writes, checked as Telegram checks it: sent and edited messages, button answers,
inline answers. HTML is parsed by telegram_html (strictly, by the documented rules), lengths
count UTF-16 code units after entity parsing, and inline keyboards must be well formed.
"""

from __future__ import annotations

import functools
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.botapi.calls import ApiCall, ApiError, Handler, JSONDict, bad, json_copy
from tests.fakes.botapi.chats import Chats
from tests.fakes.botapi.profile import Profile
from tests.fakes.telegram_html import ParsedHtml, TelegramHtmlError, parse_html, utf16_len

#: Methods that deliver a new message; ``FakeBotApi.sent()`` lists their successes.
MESSAGE_METHODS = frozenset({"sendMessage", "sendPhoto"})
MESSAGE_TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
#: Telegram applies only the first 100 entities of a text or caption (bold, links…) and drops
#: the rest without an error: the message arrives with the markup of the rest lost.
MAX_ENTITIES = 100
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
# Buttons that need neither callback_data nor url.
_OTHER_BUTTON_KINDS = [
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "web_app",
    "callback_game",
    "pay",
]


@dataclass(frozen=True, slots=True)
class HtmlErrorRecord:
    """Text the fake refused because its HTML was invalid."""

    method: str
    text: str
    description: str


class Messages:
    def __init__(self, profile: Profile, chats: Chats) -> None:
        self._profile = profile
        self._chats = chats
        #: Every message by (chat id, message id): the bot's and those of update builders.
        self.messages: dict[tuple[int, int], JSONDict] = {}
        self.html_errors: list[HtmlErrorRecord] = []
        #: sendPhoto with one of these URLs fails as if Telegram couldn't fetch it.
        self.bad_photo_urls: set[str] = set()
        self.callback_answers: list[JSONDict] = []
        self.inline_answers: list[JSONDict] = []
        self._next_message_id: dict[int, int] = {}

    def allocate_id(self, chat_id: int) -> int:
        next_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = next_id + 1
        return next_id

    def handlers(self) -> dict[str, Handler]:
        return {
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "answerCallbackQuery": self._answer_callback_query,
            "answerInlineQuery": self._answer_inline_query,
        }

    # -- validation ---------------------------------------------------------------------

    def _format(
        self, method: str, text: Any, parse_mode: Any, entities: Any, *, limit: int, kind: str
    ) -> tuple[str, list[JSONDict]]:
        """Parse text or caption like Telegram; returns (plain text, entities).

        ``kind`` is "text" or "caption" and selects the error descriptions.
        """
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise bad(f"can't parse {kind}: string expected")
        found: list[JSONDict] = []
        mode = parse_mode.lower() if isinstance(parse_mode, str) else ""
        if mode == "html":
            try:
                parsed = _parsed(text)
            except TelegramHtmlError as error:
                self.html_errors.append(HtmlErrorRecord(method, text, error.description))
                raise ApiError(400, error.description) from None
            plain, found = parsed.text, [e.to_dict() for e in parsed.entities]
        elif mode == "":
            plain = text
            if isinstance(entities, list):
                found = [dict(e) for e in entities if isinstance(e, dict)]
        else:
            # Markdown is not emulated (the bot writes HTML): better refused than passed unchecked.
            raise bad(f"unsupported parse_mode {parse_mode!r}")
        plain, found = _strip(plain, found)
        found = found[:MAX_ENTITIES]
        if kind == "text":
            if not plain:
                raise bad("message text is empty")
            if utf16_len(plain) > limit:
                raise bad("message is too long")
        elif utf16_len(plain) > limit:
            raise bad("message caption is too long")
        return plain, found

    def _validate_markup(self, markup: Any) -> JSONDict | None:
        """Validate reply_markup; return it if it's an inline keyboard (kept on messages)."""
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            return None  # reply keyboards, ForceReply, ReplyKeyboardRemove
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise bad(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise bad("can't parse inline keyboard button: Text is not specified")
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                        raise bad("BUTTON_DATA_INVALID")
                elif "url" in button:
                    url = button["url"]
                    if not isinstance(url, str) or not re.match(r"^(https?|tg)://\S+$", url):
                        raise bad("BUTTON_URL_INVALID")
                elif not any(key in button for key in _OTHER_BUTTON_KINDS):
                    raise bad(
                        "can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard"
                    )
        return json_copy(markup)

    def _text_content(self, call: ApiCall) -> JSONDict:
        params = call.params
        text, entities = self._format(
            call.method,
            params.get("text"),
            params.get("parse_mode"),
            params.get("entities"),
            limit=MESSAGE_TEXT_LIMIT,
            kind="text",
        )
        content: JSONDict = {"text": text}
        if entities:
            content["entities"] = entities
        preview = params.get("link_preview_options")
        if preview is not None and not isinstance(preview, dict):
            raise bad("can't parse link preview options JSON object")
        if preview:
            content["link_preview_options"] = dict(preview)
        return content

    def _caption_content(self, call: ApiCall, params: Mapping[str, Any] | None = None) -> JSONDict:
        """The caption of the call, or of one of its parts (an inline result) if given."""
        params = call.params if params is None else params
        if params.get("caption") is None:
            return {}
        caption, entities = self._format(
            call.method,
            params.get("caption"),
            params.get("parse_mode"),
            params.get("caption_entities"),
            limit=CAPTION_LIMIT,
            kind="caption",
        )
        content: JSONDict = {}
        if caption:
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        return content

    def _photo(self, value: Any) -> list[JSONDict]:
        """The PhotoSizes of a photo sent by URL or file_id."""
        if not isinstance(value, str) or not value:
            raise bad("there is no photo in the request")
        if value in self.bad_photo_urls:
            raise bad("wrong type of the web page content")
        ident = f"photo-{zlib.crc32(value.encode())}"
        return [
            {"file_id": f"{ident}-s", "file_unique_id": f"{ident}-s", "width": 90, "height": 60},
            {"file_id": ident, "file_unique_id": ident, "width": 1280, "height": 853},
        ]

    # -- sending ------------------------------------------------------------------------

    def _new_message(self, call: ApiCall, chat: JSONDict, content: JSONDict) -> JSONDict:
        """Store and return a message sent by the bot to ``chat``."""
        markup = self._validate_markup(call.params.get("reply_markup"))
        message: JSONDict = {
            "message_id": self.allocate_id(chat["id"]),
            "date": int(time.time()),
            "chat": dict(chat),
        }
        if chat["type"] == "channel":
            message["sender_chat"] = dict(chat)
        else:
            message["from"] = self._profile.public_bot_user()
        thread_id = call.params.get("message_thread_id")
        if isinstance(thread_id, int) and chat.get("is_forum"):
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        message.update(content)
        if markup is not None:
            message["reply_markup"] = markup
        self.messages[(chat["id"], message["message_id"])] = message
        return json_copy(message)

    def _send_message(self, call: ApiCall) -> JSONDict:
        chat = self._chats.resolve(call.params.get("chat_id"))
        return self._new_message(call, chat, self._text_content(call))

    def _send_photo(self, call: ApiCall) -> JSONDict:
        chat = self._chats.resolve(call.params.get("chat_id"))
        content = self._caption_content(call)
        content["photo"] = self._photo(call.params.get("photo"))
        return self._new_message(call, chat, content)

    # -- editing ------------------------------------------------------------------------

    def _message_to_edit(self, call: ApiCall) -> JSONDict:
        params = call.params
        chat = self._chats.resolve(params.get("chat_id"))
        message = self.messages.get((chat["id"], _message_id(params)))
        if message is None:
            raise bad("message to edit not found")
        sender = message.get("from")
        if sender is not None and sender.get("id") != self._profile.bot_id:
            raise bad("message can't be edited")
        return message

    def _apply_edit(
        self, message: JSONDict, content: JSONDict, markup: Any, keys: tuple[str, ...]
    ) -> JSONDict:
        """Replace ``keys`` with ``content`` and the keyboard; detect no-op edits.

        As on Telegram, an edit without reply_markup removes the inline keyboard.
        """
        new_markup = self._validate_markup(markup)
        if (
            all(message.get(key) == content.get(key) for key in keys)
            and message.get("reply_markup") == new_markup
        ):
            raise ApiError(400, NOT_MODIFIED)
        for key in keys:
            message.pop(key, None)
        message.update(content)
        message.pop("reply_markup", None)
        if new_markup is not None:
            message["reply_markup"] = new_markup
        message["edit_date"] = int(time.time())
        return json_copy(message)

    def _edit_message_text(self, call: ApiCall) -> JSONDict:
        message = self._message_to_edit(call)
        content = self._text_content(call)
        if "text" not in message:
            raise bad("there is no text in the message to edit")
        return self._apply_edit(
            message, content, call.params.get("reply_markup"), ("text", "entities")
        )

    def _edit_message_caption(self, call: ApiCall) -> JSONDict:
        message = self._message_to_edit(call)
        content = self._caption_content(call)
        if "text" in message:
            raise bad("there is no caption in the message to edit")
        return self._apply_edit(
            message, content, call.params.get("reply_markup"), ("caption", "caption_entities")
        )

    # -- answers to updates -------------------------------------------------------------

    def _answer_callback_query(self, call: ApiCall) -> bool:
        if not call.params.get("callback_query_id"):
            raise bad("query is too old and response timeout expired or query ID is invalid")
        text = call.params.get("text")
        if isinstance(text, str) and len(text) > 200:
            raise bad("MESSAGE_TOO_LONG")
        self.callback_answers.append(dict(call.params))
        return True

    def _answer_inline_query(self, call: ApiCall) -> bool:
        results = call.params.get("results")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise bad("can't parse inline query results JSON object")
        if len(results) > 50:
            raise bad("RESULTS_TOO_MUCH")
        seen: set[str] = set()
        for result in results:
            result_id = result.get("id")
            if not isinstance(result_id, str) or not 1 <= len(result_id.encode()) <= 64:
                raise bad("RESULT_ID_INVALID")
            if result_id in seen:
                raise bad("RESULT_ID_DUPLICATE")
            seen.add(result_id)
            content = result.get("input_message_content")
            if result.get("type") == "article" and (
                not isinstance(content, dict) or not result.get("title")
            ):
                raise bad("can't parse InlineQueryResultArticle: title and content required")
            if isinstance(content, dict) and "message_text" in content:
                self._format(
                    call.method,
                    content["message_text"],
                    content.get("parse_mode"),
                    content.get("entities"),
                    limit=MESSAGE_TEXT_LIMIT,
                    kind="text",
                )
            if "caption" in result:
                self._caption_content(call, result)
            self._validate_markup(result.get("reply_markup"))
        self.inline_answers.append(dict(call.params))
        return True


def _message_id(params: Mapping[str, Any]) -> int:
    message_id = params.get("message_id")
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise bad("message identifier is not specified")
    return message_id


def _strip(text: str, entities: list[JSONDict]) -> tuple[str, list[JSONDict]]:
    """Strip surrounding whitespace like Telegram, shifting/clipping entity ranges."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    kept: list[JSONDict] = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, size)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> ParsedHtml:
    """parse_html, remembered: a fan-out sends one text to thousands of chats, and parsing
    it each time made the fake the slower side of a 1,000/s benchmark. A refused text is not
    remembered (the error propagates and is recorded each time)."""
    return parse_html(text)
