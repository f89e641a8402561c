"""Operators' and admins' diagnostics: the texts of /why and /stats and the building of their
answers, from the reports the services return.

All HTML comes from bot.text.render's helpers; every word is a msgid of the "admin" catalogs.
"""

from __future__ import annotations

from bot.ops.stats import StatsReport
from bot.services.channel_admin import ChatVerdict, ItemReport, Verdict, message_link, when
from bot.services.filters import EXCLUDE_CATEGORY, EXCLUDE_KEYWORD, NOT_INCLUDED, parse_reason
from bot.services.permissions import RIGHTS_UNKNOWN, Access
from bot.text.i18n import LANGUAGES, N_
from bot.text.plain import truncate
from bot.text.render import Markup, Renderer, bold, escape, link
from storage.models import DeliveryState, ItemOrigin

# ---------------------------------------------------------------------- /why

MAX_CHATS_SHOWN = 25
BLOCK_BUDGET = 3000  # characters of chat lines, well inside Telegram's 4096

WHY_USAGE = N_("Send /why with the article's link, e.g. /why https://caliber.az/en/…")
WHY_NOT_ALLOWED = N_("/why explains posts to the administrators of this chat; you are not one.")
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
WHY_NO_CHATS = N_("You do not run any chat where I post, so there is nothing more to explain.")
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
NOT_ABOUT = N_("➖ not sent: the chat takes only the pieces about its topics, and this is none")
WHY_NOT_CONNECTED = N_("This chat does not receive posts from me, so there is nothing to explain.")
RULE_EXCLUDE_KEYWORD = N_("“exclude keyword: {value}”")
RULE_EXCLUDE_CATEGORY = N_("“exclude category: {value}”")
RULE_NOT_INCLUDED = N_("“include” (the piece matched none of the include rules)")
IN_DIGEST = N_("🗞 sent in the chat's digest of {date}, not as a post of its own")
WAITING_DIGEST = N_("⏳ waiting for the chat's daily digest ({date})")
WAITING_QUIET = N_("🌙 waiting for the end of the chat's quiet hours ({date})")

# ---------------------------------------------------------------------- /stats

STATS_NOT_OPERATOR = N_("/stats is only for the bot's operators.")
STATS_ONLY_PRIVATE = N_("Send /stats to me in a private chat.")
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
STATS_NO_CHATS = N_("none yet")
DELIVERIES = N_("Deliveries in the last 24 h")
DELIVERIES_LINE = N_(
    "sent {sent} · failed {failed} · skipped by settings {skipped} · pending now {pending} · "
    "429 answers {rate_limited}"
)
ERRORS = N_("Recent errors")
ERROR_LINE = N_("• {date} · {kind}{chat}: {detail}")
NO_ERRORS = N_("none")


# ---------------------------------------------------------------------- /why answers


def why_refusal(renderer: Renderer, lang: str, access: Access) -> str:
    """Why /why in a group was refused: rights unknown (Telegram did not answer) or not an admin."""
    return renderer.message(lang, RIGHTS_UNKNOWN if access is Access.UNKNOWN else WHY_NOT_ALLOWED)


def why_answer(renderer: Renderer, lang: str, reports: list[ItemReport], max_age: float) -> str:
    """The /why answer as Telegram HTML; `max_age` (seconds) is the age past which a piece is
    not posted."""
    msg = renderer.message
    if not reports:
        return msg(lang, NOT_SEEN)
    blocks: list[str] = []
    for report in reports:
        item = report.item
        title = Markup(link(item.link, truncate(item.title or item.link, 120)))
        lines = [
            msg(
                lang, HEADER, title=title, language=LANGUAGES.get(item.lang, item.lang),
                date=when(renderer, lang, item.first_seen_at),
            )
        ]  # fmt: skip
        if item.origin is ItemOrigin.BACKLOG:
            lines.append(msg(lang, BACKLOG))
        elif item.origin is ItemOrigin.TOO_OLD:
            lines.append(msg(lang, TOO_OLD, age=_age(renderer, lang, max_age)))
        elif not report.chats:
            lines.append(msg(lang, WHY_NO_CHATS))
        else:
            budget = BLOCK_BUDGET
            shown = 0
            for verdict in report.chats[:MAX_CHATS_SHOWN]:
                status = Markup(_status(renderer, lang, verdict, item.lang))
                line = msg(lang, CHAT_LINE, chat=verdict.chat.display_name, status=status)
                budget -= len(line) + 1
                if budget < 0:
                    break
                lines.append(line)
                shown += 1
            if len(report.chats) > shown:
                lines.append(renderer.plural(lang, *MORE_CHATS, len(report.chats) - shown))
        blocks.append("\n".join(lines))
    # Whole blocks only (a link seen in several feeds gives several), so no tag is ever cut.
    text = blocks[0]
    for block in blocks[1:]:
        if len(text) + len(block) + 2 > BLOCK_BUDGET + 500:
            break
        text += "\n\n" + block
    return text


def _status(renderer: Renderer, lang: str, verdict: ChatVerdict, item_lang: str) -> str:
    msg = renderer.message
    delivery, chat = verdict.delivery, verdict.chat
    match verdict.verdict:
        case Verdict.SENT:
            assert delivery is not None
            date = when(renderer, lang, delivery.sent_at or delivery.created_at)
            url = message_link(chat, delivery.message_id) if delivery.message_id else None
            if url is None:
                return msg(lang, SENT_NO_LINK, date=date)
            label = renderer.translator.gettext(lang, OPEN_POST)
            return msg(lang, SENT, date=date, link=Markup(link(url, label)))
        case Verdict.PENDING:
            return msg(lang, PENDING)
        case Verdict.RETRYING:
            assert delivery is not None
            return msg(lang, RETRYING, reason=_reason(renderer, lang, delivery.last_error))
        case Verdict.FAILED:
            assert delivery is not None
            return msg(lang, FAILED, reason=_reason(renderer, lang, delivery.last_error))
        case Verdict.PAUSED:
            return msg(lang, PAUSED)
        case Verdict.FILTERED:
            assert delivery is not None
            rule = Markup(_rule(renderer, lang, delivery.last_error or ""))
            return msg(lang, FILTERED, rule=rule)
        case Verdict.CANCELLED:
            assert delivery is not None
            return msg(lang, CANCELLED, reason=_reason(renderer, lang, delivery.last_error))
        case Verdict.IN_DIGEST:
            assert delivery is not None
            date = when(renderer, lang, delivery.sent_at or delivery.created_at)
            return msg(lang, IN_DIGEST, date=date)
        case Verdict.WAITING_DIGEST | Verdict.WAITING_QUIET:
            wait = WAITING_DIGEST if verdict.verdict is Verdict.WAITING_DIGEST else WAITING_QUIET
            until = verdict.until if verdict.until is not None else 0.0
            return msg(lang, wait, date=when(renderer, lang, until))
        case Verdict.LANGUAGE:
            return msg(lang, LANGUAGE, language=LANGUAGES.get(item_lang, item_lang))
        case Verdict.CONNECTED_LATER:
            return msg(lang, CONNECTED_LATER)
        case Verdict.NOT_ABOUT:
            return msg(lang, NOT_ABOUT)
        case _:
            return msg(lang, NOT_RECEIVING)


def _rule(renderer: Renderer, lang: str, reason: str) -> str:
    """A stored filter reason ("exclude_keyword:war") in the reader's words."""
    rule, value = parse_reason(reason)
    msg = renderer.message
    if rule == EXCLUDE_KEYWORD:
        return msg(lang, RULE_EXCLUDE_KEYWORD, value=value)
    if rule == EXCLUDE_CATEGORY:
        return msg(lang, RULE_EXCLUDE_CATEGORY, value=value)
    if rule == NOT_INCLUDED:
        return msg(lang, RULE_NOT_INCLUDED)
    return escape(reason)


def _age(renderer: Renderer, lang: str, seconds: float) -> str:
    if seconds >= 86400:
        return renderer.translator.ngettext(lang, *AGE_DAYS, round(seconds / 86400))
    return renderer.translator.ngettext(lang, *AGE_HOURS, max(1, round(seconds / 3600)))


def _reason(renderer: Renderer, lang: str, error: str | None) -> str:
    # Reasons the bot itself stored are message ids; Telegram's own answers pass unchanged.
    return truncate(renderer.translator.gettext(lang, error) if error else "?", 200)


# ---------------------------------------------------------------------- /stats answer


def stats_answer(renderer: Renderer, lang: str, report: StatsReport) -> str:
    """The /stats answer as Telegram HTML."""
    tr, msg = renderer.translator.gettext, renderer.message
    lines = [bold(tr(lang, TITLE)), "", bold(tr(lang, FEEDS))]
    for feed in report.feeds:
        polled = (
            when(renderer, lang, feed.last_polled_at) if feed.last_polled_at else tr(lang, NEVER)
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
                counts=", ".join(parts) or tr(lang, STATS_NO_CHATS),
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
                lang, ERROR_LINE, date=when(renderer, lang, event.at), kind=event.kind,
                chat=Markup(where), detail=truncate(event.detail, 150),
            )
        )  # fmt: skip
    return "\n".join(lines)
