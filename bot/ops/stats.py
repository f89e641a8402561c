"""The bot's state at a glance: feeds, chats by kind, the outbox, the last day's deliveries and
recent errors. Gathered once here for both /stats (rendered with the catalogs) and
`python -m bot stats` (plain English); it only reads, so a read-only store will do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from storage import admin as admin_store
from storage.admin import Event
from storage.models import ChatType, DeliveryState, Feed
from storage.store import Store

DAY = 86400.0
ERROR_EVENTS = ("429", "send_error", "send_failed", "no_access", "feed_error")
CHAT_KINDS = ("channels", "groups", "private")
CHAT_STATES = ("posting", "paused", "idle", "inactive")


@dataclass(frozen=True, slots=True)
class StatsReport:
    feeds: tuple[Feed, ...]
    chats: dict[str, dict[str, int]]  # "channels"/"groups"/"private" -> state -> count
    outbox: dict[DeliveryState, int]  # every delivery row kept, by state
    deliveries: dict[DeliveryState, int]  # created in the last 24 h
    rate_limited: int  # 429 answers in the last 24 h
    errors: tuple[Event, ...]

    @property
    def pending_now(self) -> int:
        return self.outbox[DeliveryState.PENDING]


async def stats_report(store: Store, now: float) -> StatsReport:
    """Gather the report as of `now` (epoch seconds)."""
    chats: dict[str, dict[str, int]] = {}
    for chat in await store.list_chats():
        kind = {ChatType.CHANNEL: "channels", ChatType.PRIVATE: "private"}.get(chat.type, "groups")
        if not chat.active:
            state = "inactive"
        elif chat.paused:
            state = "paused"
        elif chat.subscribed:
            state = "posting"
        else:
            state = "idle"
        counts = chats.setdefault(kind, {})
        counts[state] = counts.get(state, 0) + 1
    return StatsReport(
        feeds=tuple(await store.list_feeds()),
        chats=chats,
        outbox=await store.delivery_counts(),
        deliveries=await store.delivery_counts(now - DAY),
        rate_limited=await admin_store.count_events(store, "429", now - DAY),
        errors=tuple(await admin_store.recent_events(store, ERROR_EVENTS, 5)),
    )


def format_stats(report: StatsReport) -> str:
    """The report as plain English text for the operator's terminal (times in UTC)."""
    lines = ["Feeds"]
    for feed in report.feeds:
        polled = _utc(feed.last_polled_at) if feed.last_polled_at else "never"
        lines.append(
            f"  {feed.lang} {feed.url}: {feed.status.value}, last poll {polled}, "
            f"{feed.error_streak} error(s) in a row, {feed.item_count} item(s)"
        )
        if feed.last_error:
            lines.append(f"    last error: {feed.last_error}")
    if not report.feeds:
        lines.append("  none")
    lines.append("Chats")
    for kind in CHAT_KINDS:
        counts = report.chats.get(kind, {})
        parts = [f"{state} {counts[state]}" for state in CHAT_STATES if counts.get(state)]
        lines.append(f"  {kind}: {', '.join(parts) or 'none'}")
    lines.append("Outbox (all kept rows)")
    lines.append("  " + ", ".join(f"{s.value} {n}" for s, n in report.outbox.items()))
    done = report.deliveries
    lines.append("Deliveries created in the last 24 h")
    lines.append(
        f"  sent {done[DeliveryState.SENT]}, failed {done[DeliveryState.FAILED]}, "
        f"skipped {done[DeliveryState.SKIPPED]}, pending now {report.pending_now}, "
        f"429 answers {report.rate_limited}"
    )
    lines.append("Recent errors")
    for event in report.errors:
        chat = f" chat {event.chat_id}" if event.chat_id is not None else ""
        lines.append(f"  {_utc(event.at)} {event.kind}{chat}: {event.detail}")
    if not report.errors:
        lines.append("  none")
    return "\n".join(lines)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
