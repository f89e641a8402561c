"""One sender, one way: only bot/delivery/sender.py sends or edits the bot's own messages, and
only handlers/reply.py answers users. Checked over the syntax tree of every module of bot/ and
handlers/, by method name (the receiver's type is not known to the tree): any call of a Bot,
Message or CallbackQuery method that sends or edits a message elsewhere fails this test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SENDER = "bot/delivery/sender.py"
REPLY = "handlers/reply.py"

# Bot methods and their Message/CallbackQuery shortcuts that put text in front of a user.
SENDS = frozenset(
    {
        "send_message",
        "send_photo",
        "edit_message_text",
        "edit_message_caption",
        "reply_text",
        "reply_html",
        "reply_markdown",
        "reply_photo",
        "edit_text",
        "edit_caption",
        "copy_message",
        "forward_message",
        "copy",
        "forward",
    }
)
# PTB's raw calls, by which any method can be called by name, and its request layer's post:
# the sender's alone (it sends posts this way); a subclass passing them on to super()
# (handlers/updates.py) is not a call.
RAW_CALLS = frozenset({"_post", "_do_post", "do_api_request", "process_request"})
# Answering a button press: handlers/reply.py only (CallbackQuery.answer is the shortcut).
ANSWERS = frozenset({"answer_callback_query", "answer"})
# InlineQuery.answer (answerInlineQuery) lists results; it sends no message to a chat.
INLINE_ANSWER = ("handlers/inline.py", "inline")


def offending_calls(source: str, path: str) -> list[str]:
    """The calls in `source` (the module at `path`) that send, edit or answer outside their
    one allowed module, as "path:line name"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        receiver = node.func.value
        typed = name in SENDS and path not in (SENDER, REPLY)
        raw = (name in RAW_CALLS or _is_request_post(node.func)) and path != SENDER
        raw = raw and not _is_super(receiver)
        if typed or raw:
            found.append(f"{path}:{node.lineno} {name}")
        elif name in ANSWERS and path != REPLY:
            inline = isinstance(receiver, ast.Name) and (path, receiver.id) == INLINE_ANSWER
            if not inline:
                found.append(f"{path}:{node.lineno} {name}")
    return found


def _is_request_post(func: ast.Attribute) -> bool:
    """`something.request.post(...)`: a Bot API call through PTB's request layer."""
    receiver = func.value
    return (
        func.attr == "post" and isinstance(receiver, ast.Attribute) and receiver.attr == "request"
    )


def _is_super(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def _modules() -> list[Path]:
    return sorted(p for top in ("bot", "handlers") for p in (ROOT / top).rglob("*.py"))


def test_only_the_sender_and_the_reply_helper_send_or_edit_messages() -> None:
    offending = [
        call
        for path in _modules()
        for call in offending_calls(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert offending == []


def test_the_sender_and_the_reply_helper_are_where_the_sends_are() -> None:
    # Guards the test above against passing on an empty or renamed tree.
    sender = offending_calls((ROOT / SENDER).read_text(), "bot/somewhere.py")
    reply = offending_calls((ROOT / REPLY).read_text(), "handlers/somewhere.py")
    assert {call.split()[1] for call in sender} >= {
        "post", "process_request", "edit_message_text", "edit_message_caption", "send_message",
    }  # fmt: skip
    # Posts go by PTB's raw call, by method name.
    constants = {
        node.value for node in ast.walk(ast.parse((ROOT / SENDER).read_text()))
        if isinstance(node, ast.Constant)
    }  # fmt: skip
    assert {"sendMessage", "sendPhoto"} <= constants
    assert {call.split()[1] for call in reply} >= {"reply_text", "edit_text", "answer"}


@pytest.mark.parametrize(
    ("snippet", "path"),
    [
        ("await context.bot.send_message(chat_id, text)", "handlers/start.py"),
        ("await message.reply_html(text)", "handlers/help.py"),
        ("await self.bot.edit_message_text(text, chat_id=1, message_id=2)", "bot/pipeline/x.py"),
        ("await query.answer('done')", "handlers/language.py"),
        ("await query.answer('done')", SENDER),
        ("await bot._post('sendMessage', {'chat_id': 1, 'text': 'x'})", "bot/pipeline/x.py"),
        ("await bot.do_api_request('send_message', {'chat_id': 1})", "handlers/start.py"),
        ("await self.bot.request.post(url, body)", "bot/pipeline/x.py"),
    ],
)
def test_a_send_anywhere_else_is_caught(snippet: str, path: str) -> None:
    source = f"async def f():\n    {snippet}\n"
    assert len(offending_calls(source, path)) == 1


# Telegram keyboards belong to the views beside the handlers; the core only returns values.
KEYBOARDS = frozenset(
    {"InlineKeyboardMarkup", "InlineKeyboardButton", "ReplyKeyboardMarkup", "KeyboardButton",
     "ForceReply", "ReplyKeyboardRemove"}
)  # fmt: skip


def keyboard_names(source: str) -> list[str]:
    """Telegram keyboard classes the module imports or names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [alias.name for alias in node.names if alias.name in KEYBOARDS]
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in KEYBOARDS:
                found.append(name)
    return found


def test_the_core_builds_no_telegram_keyboards() -> None:
    core = [p for p in (ROOT / "bot").rglob("*.py") if p.name != "app.py"]
    offenders = {
        str(p.relative_to(ROOT)): names
        for p in core
        if (names := keyboard_names(p.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_keyboard_check_sees_a_keyboard() -> None:
    assert keyboard_names("from telegram import InlineKeyboardMarkup\n") == ["InlineKeyboardMarkup"]
