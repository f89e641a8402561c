"""/why LINK: what happened to an article for a chat, so admins never have to guess.

In a group it explains that group (to its admins and operators); in a private chat it explains
every chat the user runs, and their own subscription.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType as TgChatType

from bot.services.channel_admin import (
    ChatVerdict,
    ItemReport,
    Verdict,
    message_link,
    when,
)
from bot.services.filters import EXCLUDE_CATEGORY, EXCLUDE_KEYWORD, NOT_INCLUDED, parse_reason
from bot.services.permissions import RIGHTS_UNKNOWN, Access
from bot.text.i18n import LANGUAGES, N_
from bot.text.plain import truncate
from bot.text.render import Markup, escape, link
from handlers.context import BotContext, HandlerServices
from handlers.reply import reply
from storage.models import ItemOrigin

log = logging.getLogger(__name__)

MAX_CHATS_SHOWN = 25
BLOCK_BUDGET = 3000  # characters of chat lines, well inside Telegram's 4096

USAGE = N_("Send /why with the article's link, e.g. /why https://caliber.az/en/…")
NOT_ALLOWED = N_("/why explains posts to the administrators of this chat; you are not one.")
NOT_SEEN = N_(
    "I have not seen this article in my feeds. Check that the link is the article's own "
    "address; new pieces reach me within minutes of their publication."
)
HEADER = N_("🔎 {title} · {language} feed, first seen {date}")
BACKLOG = N_(
    "It was already in the feed when I first read that feed (the first-run backlog), so it "
    "was not posted anywhere: only pieces that appear later are posted."
)
TOO_OLD = N_("It was already older than {age} when I first saw it, so it was not posted anywhere.")
AGE_DAYS = (N_("{n} day"), N_("{n} days"))
AGE_HOURS = (N_("{n} hour"), N_("{n} hours"))
NO_CHATS = N_("You do not run any chat where I post, so there is nothing more to explain.")
MORE_CHATS = (N_("…and {n} more chat"), N_("…and {n} more chats"))
CHAT_LINE = N_("• {chat}: {status}")

SENT = N_("✅ sent on {date}: {link}")
SENT_NO_LINK = N_("✅ sent on {date}")
OPEN_POST = N_("open the post")
PENDING = N_("⏳ waiting in the queue to be sent")
RETRYING = N_("⏳ waiting to be sent again (the last try failed: {reason})")
FAILED = N_("❌ failed: Telegram answered “{reason}”")
PAUSED = N_("⏸ not sent: posting was paused")
FILTERED = N_("🚫 not sent: filtered out by the rule {rule}")
CANCELLED = N_("🚫 not sent: the chat stopped receiving posts ({reason})")
LANGUAGE = N_("➖ not sent: this chat does not take {language} pieces")
CONNECTED_LATER = N_("➖ not sent: this chat was connected after the piece appeared")
NOT_RECEIVING = N_("➖ not sent: the chat was not receiving posts when the piece appeared")
NOT_CONNECTED = N_("This chat does not receive posts from me, so there is nothing to explain.")
RULE_EXCLUDE_KEYWORD = N_("“exclude keyword: {value}”")
RULE_EXCLUDE_CATEGORY = N_("“exclude category: {value}”")
RULE_NOT_INCLUDED = N_("“include” (the piece matched none of the include rules)")


async def on_why(update: Update, context: BotContext) -> None:
    """/why LINK: explain what happened to that article in this chat (or the user's chats)."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    admin, svc = context.services.channels, context.services
    lang = await admin.language_for(user.id, user.language_code)
    say = svc.renderer.message
    if not context.args:
        await reply(message, say(lang, USAGE))
        return
    actor = admin.actor(user.id, user.full_name)
    if chat.type == TgChatType.PRIVATE:
        chats = await admin.chats_to_explain(actor)
    else:
        known = await svc.store.get_chat(chat.id)
        if known is None:
            await reply(message, say(lang, NOT_CONNECTED))
            return
        sender_chat_id = message.sender_chat.id if message.sender_chat else None
        access = await admin.may_explain(actor, known, sender_chat_id)
        if access is not Access.ALLOWED:
            log.info("/why refused for user %d in chat %d (%s)", user.id, chat.id, access)
            refusal = RIGHTS_UNKNOWN if access is Access.UNKNOWN else NOT_ALLOWED
            await reply(message, say(lang, refusal))
            return
        chats = [known]
    reports = await admin.why(context.args[0], chats)
    await reply(message, render_why(svc, lang, reports))


def render_why(svc: HandlerServices, lang: str, reports: list[ItemReport]) -> str:
    """The /why answer as Telegram HTML."""
    msg = svc.renderer.message
    if not reports:
        return msg(lang, NOT_SEEN)
    blocks: list[str] = []
    for report in reports:
        item = report.item
        title = Markup(link(item.link, truncate(item.title or item.link, 120)))
        lines = [
            msg(
                lang, HEADER, title=title, language=LANGUAGES.get(item.lang, item.lang),
                date=when(svc.renderer, lang, item.first_seen_at),
            )
        ]  # fmt: skip
        if item.origin is ItemOrigin.BACKLOG:
            lines.append(msg(lang, BACKLOG))
        elif item.origin is ItemOrigin.TOO_OLD:
            lines.append(msg(lang, TOO_OLD, age=_age(svc, lang, svc.max_age)))
        elif not report.chats:
            lines.append(msg(lang, NO_CHATS))
        else:
            budget = BLOCK_BUDGET
            shown = 0
            for verdict in report.chats[:MAX_CHATS_SHOWN]:
                status = Markup(_status(svc, lang, verdict, item.lang))
                line = msg(lang, CHAT_LINE, chat=verdict.chat.display_name, status=status)
                budget -= len(line) + 1
                if budget < 0:
                    break
                lines.append(line)
                shown += 1
            if len(report.chats) > shown:
                lines.append(svc.renderer.plural(lang, *MORE_CHATS, len(report.chats) - shown))
        blocks.append("\n".join(lines))
    # Whole blocks only (a link seen in several feeds gives several), so no tag is ever cut.
    text = blocks[0]
    for block in blocks[1:]:
        if len(text) + len(block) + 2 > BLOCK_BUDGET + 500:
            break
        text += "\n\n" + block
    return text


def _status(svc: HandlerServices, lang: str, verdict: ChatVerdict, item_lang: str) -> str:
    msg = svc.renderer.message
    delivery, chat = verdict.delivery, verdict.chat
    match verdict.verdict:
        case Verdict.SENT:
            assert delivery is not None
            date = when(svc.renderer, lang, delivery.sent_at or delivery.created_at)
            url = message_link(chat, delivery.message_id) if delivery.message_id else None
            if url is None:
                return msg(lang, SENT_NO_LINK, date=date)
            label = svc.translator.gettext(lang, OPEN_POST)
            return msg(lang, SENT, date=date, link=Markup(link(url, label)))
        case Verdict.PENDING:
            return msg(lang, PENDING)
        case Verdict.RETRYING:
            assert delivery is not None
            return msg(lang, RETRYING, reason=_reason(svc, lang, delivery.last_error))
        case Verdict.FAILED:
            assert delivery is not None
            return msg(lang, FAILED, reason=_reason(svc, lang, delivery.last_error))
        case Verdict.PAUSED:
            return msg(lang, PAUSED)
        case Verdict.FILTERED:
            assert delivery is not None
            return msg(lang, FILTERED, rule=Markup(_rule(svc, lang, delivery.last_error or "")))
        case Verdict.CANCELLED:
            assert delivery is not None
            return msg(lang, CANCELLED, reason=_reason(svc, lang, delivery.last_error))
        case Verdict.LANGUAGE:
            return msg(lang, LANGUAGE, language=LANGUAGES.get(item_lang, item_lang))
        case Verdict.CONNECTED_LATER:
            return msg(lang, CONNECTED_LATER)
        case _:
            return msg(lang, NOT_RECEIVING)


def _rule(svc: HandlerServices, lang: str, reason: str) -> str:
    """A stored filter reason ("exclude_keyword:war") in the reader's words."""
    rule, value = parse_reason(reason)
    msg = svc.renderer.message
    if rule == EXCLUDE_KEYWORD:
        return msg(lang, RULE_EXCLUDE_KEYWORD, value=value)
    if rule == EXCLUDE_CATEGORY:
        return msg(lang, RULE_EXCLUDE_CATEGORY, value=value)
    if rule == NOT_INCLUDED:
        return msg(lang, RULE_NOT_INCLUDED)
    return escape(reason)


def _age(svc: HandlerServices, lang: str, seconds: float) -> str:
    if seconds >= 86400:
        return svc.translator.ngettext(lang, *AGE_DAYS, round(seconds / 86400))
    return svc.translator.ngettext(lang, *AGE_HOURS, max(1, round(seconds / 3600)))


def _reason(svc: HandlerServices, lang: str, error: str | None) -> str:
    # Reasons the bot itself stored are message ids; Telegram's own answers pass unchanged.
    return truncate(svc.translator.gettext(lang, error) if error else "?", 200)
