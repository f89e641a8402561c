"""The bot's Prometheus metrics, on a CollectorRegistry the composition root owns.

Every value here is kept up to date as the bot works (or by the health monitor's periodic
outbox query), so a scrape only formats numbers already in memory. Labels are bounded: `feed`
takes the configured feed URLs, `chat_type` Telegram's four chat kinds, `outcome` the
publisher's outcomes, `code` HTTP status codes. No chat ids, no item links.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "caliberbot"
POLL_RESULTS = ("ok", "not_modified", "error")
CHAT_TYPES = ("private", "group", "supergroup", "channel")
# The publisher's outcomes as operators name them ("retry" is a send that will be tried again).
DELIVERY_OUTCOMES = {
    "sent": "sent",
    "retry": "retried",
    "rate_limited": "rate_limited",
    "unreachable": "unreachable",
    "no_access": "no_access",
    "migrated": "migrated",
    "failed": "failed",
}
READY_CHECKS = ("store", "bot_api", "feeds", "delivery")

# A send is a round trip to Telegram: tens of milliseconds when well, seconds when not.
_SEND_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
# Search is budgeted at 20 ms (README, Search latency); store writes at a few ms.
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# Waits for a slot in Telegram's windows: none, a pacer's step, a group's minute.
_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 15.0, 30.0, 60.0)


class Metrics:
    """The bot's metrics; the methods are called by the health monitor's hooks."""

    def __init__(self, registry: CollectorRegistry, *, feeds: Iterable[str], version: str) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", doc, registry=registry, buckets=buckets)

        self.build_info = gauge("build_info", "Always 1; the bot's version.", ("version", "python"))
        self.ready = gauge("ready", "1 when /readyz is green, else 0.")
        self.ready_check = gauge("ready_check", "1 when the readiness check passes.", ("check",))
        self.instance_role = gauge(
            "instance_role", "1 for this instance's role: leader (publishes) or standby.", ("role",)
        )
        self.loop_lag = gauge(
            "event_loop_lag_seconds", "How late the event loop last ran a timer (seconds)."
        )
        self.polls = counter("polls_total", "Feed polls by result.", ("feed", "result"))
        self.new_pieces = counter(
            "new_pieces_total", "Pieces seen for the first time (stored).", ("feed",)
        )
        self.feed_error_streak = gauge(
            "feed_error_streak", "Failed polls of the feed in a row (0: healthy).", ("feed",)
        )
        self.deliveries = counter(
            "deliveries_total", "Delivery attempts by outcome.", ("outcome", "chat_type")
        )
        self.api_responses = counter(
            "bot_api_responses_total", "HTTP answers of the Bot API by status code.", ("code",)
        )
        self.rate_limited = counter(
            "bot_api_429_total", "429 Too Many Requests answers of the Bot API."
        )
        self.send_duration = histogram(
            "send_duration_seconds",
            "Seconds from a message request leaving to Telegram's answer.",
            _SEND_BUCKETS,
        )
        self.outbox_pending = gauge("outbox_pending", "Deliveries waiting to be sent.")
        self.outbox_held = gauge(
            "outbox_held", "Pending posts held for their chat's daily digest or quiet hours."
        )
        self.outbox_due = gauge(
            "outbox_due", "Pending deliveries whose time has come (not held for a retry)."
        )
        self.outbox_oldest_due_age = gauge(
            "outbox_oldest_due_age_seconds",
            "How long the longest-waiting due delivery has been due.",
        )
        self.limiter_wait = histogram(
            "limiter_wait_seconds",
            "Seconds a message request waited for room in Telegram's rate windows.",
            _WAIT_BUCKETS,
        )
        self.limiter_waits = counter(
            "limiter_waits_total", "Message requests that had to wait for the rate windows."
        )
        self.paid_sends = counter(
            "paid_sends_total",
            "Messages sent as paid broadcasts (allow_paid_broadcast: Telegram charges Stars).",
        )
        self.paid_stars_today = gauge(
            "paid_broadcast_stars_today",
            "Stars spent on paid broadcasts today (the bot's TIMEZONE day), sends in flight "
            "included.",
        )
        self.search_duration = histogram(
            "search_duration_seconds", "Seconds one search query took in the store.", _FAST_BUCKETS
        )
        self.store_write_duration = histogram(
            "store_write_duration_seconds",
            "Seconds one write transaction of the store took.",
            _FAST_BUCKETS,
        )
        self.store_write_errors = counter(
            "store_write_errors_total", "Write transactions the store could not take."
        )

        self.build_info.labels(version, platform.python_version()).set(1)
        # Every series exists from the start, so rates and alerts see zeros, not gaps.
        for feed in feeds:
            for result in POLL_RESULTS:
                self.polls.labels(feed, result)
            self.new_pieces.labels(feed)
            self.feed_error_streak.labels(feed).set(0)
        for outcome in DELIVERY_OUTCOMES.values():
            for chat_type in CHAT_TYPES:
                self.deliveries.labels(outcome, chat_type)
        for check in READY_CHECKS:
            self.ready_check.labels(check)

    def polled(self, feed: str, result: str, new_pieces: int, error_streak: int) -> None:
        self.polls.labels(feed, result).inc()
        if new_pieces:
            self.new_pieces.labels(feed).inc(new_pieces)
        self.feed_error_streak.labels(feed).set(error_streak)

    def delivered(self, outcome: str, chat_type: str) -> None:
        self.deliveries.labels(DELIVERY_OUTCOMES.get(outcome, outcome), chat_type).inc()

    def api_answered(self, status: int, send_seconds: float | None) -> None:
        self.api_responses.labels(str(status)).inc()
        if status == 429:
            self.rate_limited.inc()
        if send_seconds is not None:
            self.send_duration.observe(send_seconds)

    def limiter_waited(self, seconds: float) -> None:
        self.limiter_wait.observe(seconds)
        if seconds > 0:
            self.limiter_waits.inc()

    def store_written(self, seconds: float, ok: bool) -> None:
        self.store_write_duration.observe(seconds)
        if not ok:
            self.store_write_errors.inc()

    def outbox(self, pending: int, due: int, oldest_due_age: float, held: int = 0) -> None:
        self.outbox_pending.set(pending)
        self.outbox_due.set(due)
        self.outbox_held.set(held)
        self.outbox_oldest_due_age.set(oldest_due_age)

    def role(self, role: str) -> None:
        for name in ("leader", "standby"):
            self.instance_role.labels(name).set(int(name == role))

    def readiness(self, checks: Mapping[str, bool]) -> None:
        for name, ok in checks.items():
            self.ready_check.labels(name).set(int(ok))
        self.ready.set(int(all(checks.values())))


def package_version() -> str:
    """Return the installed bot's version ("unknown" when run from a bare source tree)."""
    try:
        return importlib.metadata.version("caliber-telegram-bot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
