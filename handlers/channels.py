"""/channels: the settings panel of a channel or group, run from a private chat with the bot.

Its texts, buttons, callback data and screens are in handlers/views/channels.py; here every press
is parsed strictly and re-authorised with a live getChatMember before anything happens, and
every callback query is answered. Text the panel asks for (a signature, filter
rules) arrives as the admin's next private message; /cancel drops the question.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import (
    CallbackQuery,
    Message,
    Update,
)
from telegram.error import BadRequest
from telegram.ext import ApplicationHandlerStop

from bot.delivery.publisher import Outcome
from bot.services.channel_admin import (
    RIGHT_LABELS,
    SIGNATURE_MAX,
    Actor,
    ChannelAdmin,
    InputKind,
    SendReport,
    SignatureResult,
)
from bot.services.permissions import RIGHTS_UNKNOWN, Access
from bot.text.plain import truncate
from handlers.context import BotContext, HandlerServices
from handlers.reply import answer, edit, reply, send
from handlers.views import topics as topic_views
from handlers.views.channels import (
    CANCELLED,
    INVALID_BUTTON,
    LAST_LANGUAGE,
    NO_PIECE,
    NOT_ALLOWED,
    ONLY_PRIVATE,
    PREVIEW_SENT,
    SAVED,
    SEND_LATER,
    SEND_REFUSED,
    SIGNATURE_EMPTY,
    SIGNATURE_TOO_LONG,
    STILL_NO_RIGHT,
    TEST_SENT,
    Press,
    Screen,
    chat_list_screen,
    disconnect_screen,
    disconnected_screen,
    filters_screen,
    history_screen,
    languages_screen,
    main_screen,
    parse_callback,
    rule_prompt_screen,
    schedule_screen,
    signature_prompt_screen,
    signature_screen,
    style_screen,
    topic_screen,
)
from handlers.views.schedule import parse_panel_arg
from storage.models import Chat, ChatType, PostStyle

log = logging.getLogger(__name__)


async def before_others(update: Update, context: BotContext) -> None:
    """Runs first for private text: while the panel waits for this user's answer (kept in the
    store, so any instance takes it), the text is that answer and /cancel drops the question;
    nothing else sees the message. Otherwise the message goes on to the routing table."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    if await context.services.channels.inputs.peek(user.id) is None:
        return
    words = message.text.split(maxsplit=1)
    command = words[0].split("@", 1)[0] if words else ""
    if command == "/cancel":
        await on_cancel(update, context)
    elif not message.text.startswith("/"):
        await on_input(update, context)
    else:
        return  # another command: its own handler runs (and /channels drops the question)
    raise ApplicationHandlerStop


@dataclass(frozen=True, slots=True)
class PressResult:
    """What a press leads to: a new screen, and a toast (or alert) on the button."""

    screen: Screen | None
    toast: str | None = None
    alert: bool = False


# --- handlers --------------------------------------------------------------------------------


async def on_channels(update: Update, context: BotContext) -> None:
    """/channels: list the chats the user may set up (private chats only)."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    admin, svc = context.services.channels, context.services
    lang = await admin.language_for(user.id, user.language_code)
    if message.chat.type != ChatType.PRIVATE:
        await reply(message, svc.renderer.message(lang, ONLY_PRIVATE))
        return
    await admin.inputs.pop(user.id)
    actor = admin.actor(user.id, user.full_name)
    chats = await admin.manageable_chats(actor)
    text, markup = chat_list_screen(svc.renderer, lang, actor, chats)
    await reply(message, text, markup)


async def on_button(update: Update, context: BotContext) -> None:
    """A press on the panel: validate, re-authorise, act, redraw in place, answer."""
    query = update.callback_query
    if query is None:
        return
    result = PressResult(None)
    try:
        result = await _press(query, context)
        if result.screen is not None:
            await _show(context, query.message, query.from_user.id, result.screen)
    finally:
        # Answered last (and even after an error) so the spinner always stops.
        toast = truncate(result.toast, 200) if result.toast else None
        await answer(query, toast, alert=result.alert)


async def _press(query: CallbackQuery, context: BotContext) -> PressResult:
    user = query.from_user
    admin, svc = context.services.channels, context.services
    tr = svc.translator.gettext
    lang = await admin.language_for(user.id, user.language_code)
    press = parse_callback(query.data or "")
    if press is None:
        log.warning("invalid panel callback from user %d refused", user.id)
        return PressResult(None, tr(lang, INVALID_BUTTON), alert=True)
    await admin.inputs.pop(user.id)  # any press abandons a pending question
    actor = admin.actor(user.id, user.full_name)
    if press.chat_id is None:
        chats = await admin.manageable_chats(actor)
        return PressResult(chat_list_screen(svc.renderer, lang, actor, chats))
    access, chat = await admin.authorize(actor, press.chat_id)
    if chat is None:
        if access is Access.UNKNOWN:
            # Telegram did not answer: the panel stays, the admin may simply press again.
            return PressResult(None, tr(lang, RIGHTS_UNKNOWN), alert=True)
        log.warning(
            "panel callback %r from user %d refused: may not run chat %d",
            press.action, user.id, press.chat_id,
        )  # fmt: skip
        # A demoted admin's panel goes away with the refusal.
        refusal: Screen = (svc.renderer.message(lang, NOT_ALLOWED), None)
        return PressResult(refusal, tr(lang, NOT_ALLOWED), alert=True)
    return await _act(admin, svc, lang, actor, chat, press)


async def on_input(update: Update, context: BotContext) -> None:
    """The admin's answer to a question from the panel (a signature or filter rules)."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    admin, svc = context.services.channels, context.services
    pending = await admin.inputs.pop(user.id)
    if pending is None:
        return
    lang = await admin.language_for(user.id, user.language_code)
    actor = admin.actor(user.id, user.full_name)
    access, chat = await admin.authorize(actor, pending.chat_id)
    if chat is None:
        if access is Access.UNKNOWN:
            # Let them send it again.
            await admin.inputs.expect(user.id, pending.chat_id, pending.kind)
            await reply(message, svc.renderer.message(lang, RIGHTS_UNKNOWN))
            return
        log.warning("panel input from user %d refused: may not run chat %d",
                    user.id, pending.chat_id)  # fmt: skip
        await reply(message, svc.renderer.message(lang, NOT_ALLOWED))
        return
    if pending.kind is InputKind.SIGNATURE:
        chat, result = await admin.set_signature(chat, actor, message.text)
        if result is not SignatureResult.SAVED:
            await admin.inputs.expect(user.id, chat.id, pending.kind)  # let them try again
            msgid = SIGNATURE_EMPTY if result is SignatureResult.EMPTY else SIGNATURE_TOO_LONG
            await reply(message, svc.renderer.message(lang, msgid, limit=SIGNATURE_MAX))
            return
        text, markup = signature_screen(svc.renderer, lang, chat)
    elif pending.kind is InputKind.ONLY_ABOUT:
        chat, results = await admin.add_topics(chat, actor, message.text)
        text, markup = filters_screen(svc.renderer, lang, chat, await admin.only_about(chat))
        refused = [r.refusal for r in results if r.refusal is not None]
        if refused:
            text = "\n\n".join([topic_views.refusal(svc.renderer, lang, refused[0]), text])
    else:
        chat = await admin.add_rules(chat, actor, pending.kind, message.text)
        text, markup = filters_screen(svc.renderer, lang, chat, await admin.only_about(chat))
    await reply(message, text, markup)


async def on_cancel(update: Update, context: BotContext) -> None:
    """/cancel while the panel waits for text: drop the question, show the panel again."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    admin, svc = context.services.channels, context.services
    pending = await admin.inputs.pop(user.id)
    lang = await admin.language_for(user.id, user.language_code)
    chat = None
    if pending is not None:
        _, chat = await admin.authorize(admin.actor(user.id, user.full_name), pending.chat_id)
    if chat is None:
        await reply(message, svc.renderer.message(lang, CANCELLED))
        return
    text, markup = await main_screen(admin, svc.renderer, lang, chat)
    text = svc.renderer.message(lang, CANCELLED) + "\n\n" + text
    await reply(message, text, markup)


async def _show(context: BotContext, message: object, user_id: int, screen: Screen) -> None:
    """Redraw the panel in place; send it anew when the old message cannot be edited."""
    text, markup = screen
    if isinstance(message, Message):
        try:
            await edit(message, text, markup)
            return
        except BadRequest as exc:
            log.info("could not edit the panel for user %d (%s); sending it anew",
                     user_id, exc.message)  # fmt: skip
    await send(context.bot, user_id, text, markup)


# --- actions ---------------------------------------------------------------------------------


async def _act(
    admin: ChannelAdmin, svc: HandlerServices, lang: str, actor: Actor, chat: Chat, press: Press
) -> PressResult:
    tr = svc.translator.gettext
    action, arg = press.action, press.arg
    if action == "open":
        return PressResult(await main_screen(admin, svc.renderer, lang, chat))
    if action in ("pause", "resume"):
        chat, problem = await admin.set_paused(chat, actor, action == "pause")
        screen = await main_screen(admin, svc.renderer, lang, chat)
        if problem is not None:
            right = tr(lang, RIGHT_LABELS[problem])
            return PressResult(screen, tr(lang, STILL_NO_RIGHT, right=right), alert=True)
        return PressResult(screen)
    if action == "langs":
        return PressResult(languages_screen(svc.renderer, lang, chat))
    if action == "lang":
        updated = await admin.toggle_language(chat, actor, arg)
        if updated is None:
            return PressResult(None, tr(lang, LAST_LANGUAGE), alert=True)
        return PressResult(languages_screen(svc.renderer, lang, updated))
    if action == "style":
        if arg:
            chat = await admin.set_style(chat, actor, PostStyle(arg))
        return PressResult(style_screen(svc.renderer, lang, chat), tr(lang, SAVED) if arg else None)
    if action == "silent":
        chat = await admin.toggle_silent(chat, actor)
        return PressResult(await main_screen(admin, svc.renderer, lang, chat))
    if action == "tags":
        chat = await admin.toggle_hashtags(chat, actor)
        return PressResult(await main_screen(admin, svc.renderer, lang, chat))
    if action == "sig":
        return await _signature_action(admin, svc, lang, actor, chat, arg)
    if action == "flt":
        return await _filters_action(admin, svc, lang, actor, chat, arg)
    if action == "topic":
        if arg:
            thread = int(arg) or None
            chat = await admin.set_thread(chat, actor, thread)
        return PressResult(
            await topic_screen(admin, svc.renderer, lang, chat), tr(lang, SAVED) if arg else None
        )
    if action == "sched":
        step = parse_panel_arg(arg)
        if step is None:
            return PressResult(None, tr(lang, INVALID_BUTTON), alert=True)
        change = step.update
        if change is not None:
            chat = await admin.set_schedule(chat, actor, change)
        screen = schedule_screen(svc.renderer, lang, chat, step)
        return PressResult(screen, tr(lang, SAVED) if change else None)
    if action == "prev":
        report = await admin.preview(chat, actor)
        return _sent_outcome(svc, lang, chat, report, tr(lang, PREVIEW_SENT))
    if action == "test":
        report = await admin.test_post(chat)
        return _sent_outcome(svc, lang, chat, report, tr(lang, TEST_SENT, chat=chat.display_name))
    if action == "hist":
        return PressResult(history_screen(svc.renderer, lang, chat, await admin.history(chat)))
    if action == "disc":
        if arg == "yes":
            await admin.disconnect(chat, actor)
            return PressResult(disconnected_screen(svc.renderer, lang, chat))
        return PressResult(disconnect_screen(svc.renderer, lang, chat))
    raise AssertionError(f"unhandled panel action {action}")  # parse_callback lets none through


async def _signature_action(
    admin: ChannelAdmin, svc: HandlerServices, lang: str, actor: Actor, chat: Chat, arg: str
) -> PressResult:
    tr = svc.translator.gettext
    if arg == "set":
        await admin.inputs.expect(actor.user_id, chat.id, InputKind.SIGNATURE)
        return PressResult(signature_prompt_screen(svc.renderer, lang, chat))
    if arg == "link" and chat.username:
        chat, _ = await admin.set_signature(chat, actor, "@" + chat.username)
        return PressResult(signature_screen(svc.renderer, lang, chat), tr(lang, SAVED))
    if arg == "clear":
        chat, _ = await admin.set_signature(chat, actor, None)
        return PressResult(signature_screen(svc.renderer, lang, chat), tr(lang, SAVED))
    return PressResult(signature_screen(svc.renderer, lang, chat))


async def _filters_action(
    admin: ChannelAdmin, svc: HandlerServices, lang: str, actor: Actor, chat: Chat, arg: str
) -> PressResult:
    tr = svc.translator.gettext
    if arg.startswith("+"):
        kind = InputKind(arg[1:])
        await admin.inputs.expect(actor.user_id, chat.id, kind)
        categories: list[str] = []
        if kind in (InputKind.INCLUDE_CATEGORY, InputKind.EXCLUDE_CATEGORY):
            categories = await admin.recent_categories(chat)
        return PressResult(rule_prompt_screen(svc.renderer, lang, chat, kind, categories))
    if arg.startswith("-t."):
        chat = await admin.remove_topic(chat, actor, int(arg[3:]))
    elif arg.startswith("-"):
        kind_code, token = arg[1:].split(".", 1)
        chat = await admin.remove_rule(chat, actor, InputKind(kind_code), token)
    elif arg == "clear":
        chat = await admin.clear_filters(chat, actor)
    screen = filters_screen(svc.renderer, lang, chat, await admin.only_about(chat))
    return PressResult(screen, tr(lang, SAVED) if arg else None)


def _sent_outcome(
    svc: HandlerServices, lang: str, chat: Chat, report: SendReport, success: str
) -> PressResult:
    tr = svc.translator.gettext
    if report.item is None or report.result is None:
        return PressResult(None, tr(lang, NO_PIECE), alert=True)
    result = report.result
    if result.outcome is Outcome.SENT:
        return PressResult(None, success)
    if result.outcome is Outcome.RATE_LIMITED:
        seconds = round(result.retry_after or 1)
        return PressResult(None, tr(lang, SEND_LATER, seconds=seconds), alert=True)
    return PressResult(None, tr(lang, SEND_REFUSED, reason=result.error or "?"), alert=True)
