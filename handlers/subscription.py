"""/subscribe, /unsubscribe and /settings: whether a chat receives every new piece.

A subscribed chat gets each new piece in its feed languages through the same outbox and limits
as channels. Who may change this is bot.services.permissions' one rule; anyone may look at
/settings.
"""

from __future__ import annotations

from telegram import Update

from bot.services import readers
from handlers.context import BotContext
from handlers.guards import admin_command, admin_press
from handlers.reply import answer
from handlers.views import readers as views


async def subscribe(update: Update, context: BotContext) -> None:
    """Subscribe the chat to new pieces."""
    await _switch(update, context, on=True)


async def unsubscribe(update: Update, context: BotContext) -> None:
    """Stop sending new pieces to the chat."""
    await _switch(update, context, on=False)


async def _switch(update: Update, context: BotContext, *, on: bool) -> None:
    allowed = await admin_command(update, context)
    if allowed is None:
        return
    message, stored = allowed
    svc = context.services
    if on:
        stored = await svc.readers.reader_chat(message.chat, update.effective_user, reactivate=True)
    updated, changed = await svc.readers.set_subscribed(stored, on)
    if on:
        msgid = views.SUBSCRIBED if changed else views.ALREADY_SUBSCRIBED
    else:
        msgid = views.UNSUBSCRIBED if changed else views.NOT_SUBSCRIBED
    # The feed languages the chat takes (the panel may have chosen others than its own).
    languages = ", ".join(readers.language_name(code) for code in updated.languages)
    reply = views.text(svc.renderer, updated.lang, msgid, language=languages)
    await views.send_reply(message, reply)


async def settings(update: Update, context: BotContext) -> None:
    """Show the chat's language and subscription with buttons to change them."""
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    svc = context.services
    stored = await svc.readers.reader_chat(chat, update.effective_user)
    await views.send_reply(message, views.settings(svc.renderer, stored))


async def settings_button(update: Update, context: BotContext) -> None:
    """Subscribe or unsubscribe from the settings message, then redraw it."""
    press = await admin_press(update, context, views.parse_settings_data)
    if press is None:
        return
    svc, query, message, stored = context.services, press.query, press.message, press.chat
    on = press.choice
    if on:
        stored = await svc.readers.reader_chat(message.chat, query.from_user, reactivate=True)
    updated, _ = await svc.readers.set_subscribed(stored, on)
    toast = views.SUBSCRIBED_TOAST if on else views.UNSUBSCRIBED_TOAST
    await answer(query, views.plain(svc.renderer, updated.lang, toast))
    if message.is_accessible:
        await views.edit_reply(query, views.settings(svc.renderer, updated))
