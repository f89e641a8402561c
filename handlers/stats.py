"""/stats for operators (ADMIN_USER_IDS): feeds, chats, the last day's deliveries, recent errors."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType as TgChatType

from bot.ops.stats import StatsReport, stats_report
from bot.services.channel_admin import when
from bot.text.i18n import N_
from bot.text.plain import truncate
from bot.text.render import Markup, bold
from handlers.context import BotContext, HandlerServices
from handlers.reply import reply
from storage.models import DeliveryState

log = logging.getLogger(__name__)

NOT_OPERATOR = N_("/stats is only for the bot's operators.")
ONLY_PRIVATE = N_("Send /stats to me in a private chat.")
TITLE = N_("📊 Bot status")
FEEDS = N_("Feeds")
FEED_LINE = N_(
    "• {lang} {url}\n  {status} · last poll: {polled} · errors in a row: {streak} · items: {items}"
)
FEED_ERROR = N_("  last error: {error}")
NEVER = N_("never")
STATUS_LABELS = {"new": N_("not polled yet"), "ok": N_("✅ ok"), "error": N_("❌ failing")}
CHATS = N_("Chats")
CHAT_KINDS = {"channels": N_("channels"), "groups": N_("groups"), "private": N_("private chats")}
CHAT_STATES = {
    "posting": N_("posting"),
    "paused": N_("paused"),
    "idle": N_("not subscribed"),
    "inactive": N_("inactive"),
}
CHATS_LINE = N_("• {kind}: {counts}")
NO_CHATS = N_("none yet")
DELIVERIES = N_("Deliveries in the last 24 h")
DELIVERIES_LINE = N_(
    "sent {sent} · failed {failed} · skipped by settings {skipped} · pending now {pending} · "
    "429 answers {rate_limited}"
)
ERRORS = N_("Recent errors")
ERROR_LINE = N_("• {date} · {kind}{chat}: {detail}")
NO_ERRORS = N_("none")


async def on_stats(update: Update, context: BotContext) -> None:
    """/stats: the bot's health at a glance, for operators in a private chat."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    admin, svc = context.services.channels, context.services
    lang = await admin.language_for(user.id, user.language_code)
    if not svc.is_operator(user.id):
        log.info("/stats refused for user %d (not an operator)", user.id)
        await reply(message, svc.renderer.message(lang, NOT_OPERATOR))
        return
    if message.chat.type != TgChatType.PRIVATE:
        await reply(message, svc.renderer.message(lang, ONLY_PRIVATE))
        return
    report = await stats_report(svc.store, svc.clock.now())
    await reply(message, render_stats(svc, lang, report))


def render_stats(svc: HandlerServices, lang: str, report: StatsReport) -> str:
    """The /stats answer as Telegram HTML."""
    tr, msg = svc.translator.gettext, svc.renderer.message
    lines = [bold(tr(lang, TITLE)), "", bold(tr(lang, FEEDS))]
    for feed in report.feeds:
        polled = (
            when(svc.renderer, lang, feed.last_polled_at)
            if feed.last_polled_at
            else tr(lang, NEVER)
        )
        lines.append(
            msg(
                lang, FEED_LINE, lang=feed.lang, url=feed.url,
                status=tr(lang, STATUS_LABELS.get(feed.status.value, feed.status.value)),
                polled=polled, streak=feed.error_streak, items=feed.item_count,
            )
        )  # fmt: skip
        if feed.last_error:
            lines.append(msg(lang, FEED_ERROR, error=truncate(feed.last_error, 150)))
    lines += ["", bold(tr(lang, CHATS))]
    for kind, label in CHAT_KINDS.items():
        counts = report.chats.get(kind, {})
        parts = [f"{tr(lang, name)} {counts[state]}" for state, name in CHAT_STATES.items()
                 if counts.get(state)]  # fmt: skip
        lines.append(
            msg(
                lang,
                CHATS_LINE,
                kind=tr(lang, label),
                counts=", ".join(parts) or tr(lang, NO_CHATS),
            )
        )
    done = report.deliveries
    lines += [
        "",
        bold(tr(lang, DELIVERIES)),
        msg(
            lang, DELIVERIES_LINE, sent=done[DeliveryState.SENT],
            failed=done[DeliveryState.FAILED], skipped=done[DeliveryState.SKIPPED],
            pending=report.pending_now, rate_limited=report.rate_limited,
        ),
        "",
        bold(tr(lang, ERRORS)),
    ]  # fmt: skip
    if not report.errors:
        lines.append(msg(lang, NO_ERRORS))
    for event in report.errors:
        where = f" · {event.chat_id}" if event.chat_id is not None else ""
        lines.append(
            msg(
                lang, ERROR_LINE, date=when(svc.renderer, lang, event.at), kind=event.kind,
                chat=Markup(where), detail=truncate(event.detail, 150),
            )
        )  # fmt: skip
    return "\n".join(lines)
