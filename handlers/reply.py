"""How handlers answer: reply to a message, redraw the message whose button was pressed, answer
a button press, or write to a chat the update came from. The only Bot API sends of handlers/
(tests/test_one_sender.py); parse_mode HTML and no link preview are the application's Defaults
(bot.app.build_application), so no call here repeats them.
"""

from __future__ import annotations

from telegram import Bot, CallbackQuery, InlineKeyboardMarkup, LinkPreviewOptions, Message
from telegram.error import BadRequest

Markup = InlineKeyboardMarkup | None


async def reply(
    message: Message, html: str, markup: Markup = None, *, preview: LinkPreviewOptions | None = None
) -> Message:
    """Answer `message` in its chat (in groups, as a reply to it)."""
    if preview is None:
        return await message.reply_text(html, reply_markup=markup)
    return await message.reply_text(html, reply_markup=markup, link_preview_options=preview)


async def edit(
    target: CallbackQuery | Message,
    html: str,
    markup: Markup = None,
    *,
    preview: LinkPreviewOptions | None = None,
) -> None:
    """Turn the pressed message (or `target` itself) into `html`; what is already shown is done.

    Other refusals (the message is too old or gone) propagate, for callers that send anew.
    """
    try:
        if isinstance(target, CallbackQuery):
            if preview is None:
                await target.edit_message_text(html, reply_markup=markup)
            else:
                await target.edit_message_text(
                    html, reply_markup=markup, link_preview_options=preview
                )
        elif preview is None:
            await target.edit_text(html, reply_markup=markup)
        else:
            await target.edit_text(html, reply_markup=markup, link_preview_options=preview)
    except BadRequest as exc:
        # Pressing the button of what is already shown changes nothing; Telegram says so.
        if "not modified" not in exc.message.lower():
            raise


async def answer(query: CallbackQuery, text: str | None = None, *, alert: bool = False) -> None:
    """Answer a button press (a toast, or an alert the user must dismiss)."""
    await query.answer(text, show_alert=alert)


async def send(
    bot: Bot, chat_id: int, html: str, markup: Markup = None, *, thread_id: int | None = None
) -> Message:
    """Write to the chat an update came from, when there is no message to reply to."""
    return await bot.send_message(chat_id, html, reply_markup=markup, message_thread_id=thread_id)
