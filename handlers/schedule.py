"""The delivery schedule from /settings: "As they appear" or "Daily digest" (its hour, its time
zone) in private chats and groups, and quiet hours in private chats.

Every press is checked like the other settings buttons (handlers.guards: in groups only the
creator and admins who may change the group's info, asked of Telegram at the press); its
texts and buttons are handlers/views/schedule.py's.
"""

from __future__ import annotations

from telegram import Update

from handlers.context import BotContext
from handlers.guards import admin_press
from handlers.reply import answer
from handlers.views import readers as views
from handlers.views.channels import SAVED
from handlers.views.schedule import parse_reader_data


async def schedule_button(update: Update, context: BotContext) -> None:
    """Change the schedule (or move between its screens), answer, and redraw the message."""
    press = await admin_press(update, context, parse_reader_data)
    if press is None:
        return
    svc, query, message, chat = context.services, press.query, press.message, press.chat
    step = press.choice
    change = step.update
    if change is not None:
        user = query.from_user
        chat = await svc.readers.set_schedule(
            chat, change, user_id=user.id, user_name=user.full_name
        )
    await answer(query, views.plain(svc.renderer, chat.lang, SAVED) if change else None)
    if message.is_accessible:
        await views.edit_reply(query, views.schedule_screen(svc.renderer, chat, step))
