"""Liveness, readiness and metrics over HTTP (/healthz, /readyz, /metrics on HEALTH_PORT).

The parts of the bot report what they do through small hooks (an answer of the Bot API, a
poll, a delivery's outcome, a store write); `Monitor` passes each to `Health`, which judges
readiness on them, and to `Metrics`. A few background probes keep an idle bot honest: a
write to the store, a look at the outbox, a getMe when Telegram has been quiet. No request
handler waits for the store or the network: each answers from what is already in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from telegram import Bot
from telegram._utils.types import ODVInput
from telegram.request import HTTPXRequest, RequestData

from bot.clock import Clock
from bot.config import Settings
from bot.delivery.publisher import Outcome, Publisher
from bot.delivery.ratelimit import ApiAnswerHook, RateLimits, counts_as_send
from bot.ops.metrics import Metrics
from bot.pipeline.poller import Poller, PollReport
from storage.models import Chat, Feed
from storage.store import OutboxDepth, Store

log = logging.getLogger(__name__)

# A poll is due every POLL_INTERVAL; this many intervals without a good one is an outage.
FEED_GRACE_INTERVALS = 3
# How often an idle store is written to, to find out whether it still can be.
STORE_PROBE_INTERVAL = 30.0
# The longest the outbox gauges (and the delivery check) lag behind the store.
OUTBOX_REFRESH = 5.0
# How often the event loop's lag is measured (and readiness changes logged).
LAG_INTERVAL = 1.0
# The getMe probe's read timeout (seconds); connecting and writing get half of it.
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


class Health:
    """What readiness is judged on, noted by the parts as they work; time from the Clock."""

    def __init__(
        self, clock: Clock, *, api_grace: float, max_lag: float, poll_interval: float
    ) -> None:
        self.clock = clock
        self.api_grace = api_grace
        self.max_lag = max_lag
        self.feed_grace = FEED_GRACE_INTERVALS * poll_interval
        start = clock.monotonic()
        # A bot that has just started gets the same grace as one that just succeeded.
        self.last_api_answer = start
        self.last_poll_ok = start
        self.last_sent = start
        self.last_write = -math.inf
        self.write_failed_at: float | None = None
        self.unreachable_since: float | None = None
        self.outbox: OutboxDepth | None = None
        self._outbox_age = 0.0  # the oldest due row's age when the outbox was read...
        self._outbox_read_at = start  # ...and when that was
        self.loop_lag = 0.0
        # "leader" (polls and publishes) or "standby"; one instance alone is always the leader.
        self.role: Callable[[], str] = lambda: "leader"

    def note_api_answer(self) -> None:
        """The Bot API answered a request (any status below 500)."""
        self.last_api_answer = self.clock.monotonic()

    def note_poll(self, ok: bool) -> None:
        """A feed was polled: ok for a 200 or a 304."""
        if ok:
            self.last_poll_ok = self.clock.monotonic()

    def note_sent(self) -> None:
        """A delivery was sent."""
        self.last_sent = self.clock.monotonic()
        self.unreachable_since = None

    def note_unreachable(self) -> None:
        """A delivery got no answer from Telegram (network, timeout, 5xx); it waits and retries."""
        if self.unreachable_since is None:
            self.unreachable_since = self.clock.monotonic()

    def note_store_write(self, ok: bool) -> None:
        """A write transaction committed (ok) or the store refused it."""
        now = self.clock.monotonic()
        self.last_write = now
        if ok:
            self.write_failed_at = None
        elif self.write_failed_at is None:
            self.write_failed_at = now

    def note_outbox(self, depth: OutboxDepth) -> None:
        """The outbox as just read from the store."""
        self.outbox = depth
        self._outbox_read_at = self.clock.monotonic()
        due_at = depth.oldest_due_at
        self._outbox_age = 0.0 if due_at is None else max(0.0, self.clock.now() - due_at)

    def oldest_due_age(self) -> float:
        """How long the longest-waiting due delivery has waited, as of now (0: none due)."""
        if self.outbox is None or not self.outbox.due:
            return 0.0
        return self._outbox_age + self.clock.monotonic() - self._outbox_read_at

    def checks(self) -> dict[str, Check]:
        """Judge every readiness check now."""
        now = self.clock.monotonic()
        if self.role() == "standby":
            # A standby neither polls nor publishes: it is ready when it can answer readers.
            idle = Check(True, "standby: the leader polls and publishes")
            return {"store": self._store(now), "bot_api": self._bot_api(now),
                    "feeds": idle, "delivery": idle}  # fmt: skip
        return {
            "store": self._store(now),
            "bot_api": self._bot_api(now),
            "feeds": self._feeds(now),
            "delivery": self._delivery(now),
        }

    def _store(self, now: float) -> Check:
        if self.write_failed_at is None:
            return Check(True, "writes succeed")
        return Check(False, f"no write has succeeded for {now - self.write_failed_at:.0f} s")

    def _bot_api(self, now: float) -> Check:
        quiet = now - self.last_api_answer
        if quiet <= self.api_grace:
            return Check(True, f"last answer {quiet:.0f} s ago")
        return Check(
            False,
            f"no answer from the Bot API for {quiet:.0f} s (READY_API_GRACE {self.api_grace:g} s)",
        )

    def _feeds(self, now: float) -> Check:
        quiet = now - self.last_poll_ok
        if quiet <= self.feed_grace:
            return Check(True, f"last good poll {quiet:.0f} s ago")
        return Check(
            False,
            f"no feed polled successfully for {quiet:.0f} s "
            f"({FEED_GRACE_INTERVALS} x POLL_INTERVAL = {self.feed_grace:g} s)",
        )

    def _delivery(self, now: float) -> Check:
        idle = now - self.last_sent
        due_age = self.oldest_due_age()
        # Posts held for a digest or quiet hours wait on purpose: never "due", never stuck.
        held = self.outbox.held if self.outbox is not None else 0
        pending = (self.outbox.pending if self.outbox is not None else 0) - held
        if idle > self.max_lag:
            # Deliveries wait in vain: due for too long, or held back only because Telegram
            # gives no answer (those rows back off, so they are not "due" most of the time).
            if due_age > self.max_lag:
                return Check(
                    False,
                    f"deliveries due for {due_age:.0f} s and none sent for {idle:.0f} s "
                    f"(READY_MAX_LAG {self.max_lag:g} s)",
                )
            since = self.unreachable_since
            if pending and since is not None and now - since > self.max_lag:
                return Check(
                    False,
                    f"{pending} deliveries pending; Telegram has not answered a send for "
                    f"{now - since:.0f} s and none was sent for {idle:.0f} s",
                )
        due = self.outbox.due if self.outbox is not None else 0
        detail = f"{pending} pending, {due} due, oldest due {due_age:.0f} s"
        if held:
            detail += f", {held} held for digests or quiet hours"
        return Check(True, detail)


class ObservedHTTPXRequest(HTTPXRequest):
    """PTB's httpx request layer (getUpdates' long poll), telling `on_answer` of each answer."""

    def __init__(self, *args: Any, on_answer: ApiAnswerHook | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_answer = on_answer

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = HTTPXRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = HTTPXRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = HTTPXRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = HTTPXRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        started = loop.time()  # a real round trip, timed in real time
        status, body = await super().do_request(
            url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
        )
        if self.on_answer is not None:
            self.on_answer(url.rsplit("/", 1)[-1], status, loop.time() - started)
        return status, body


class Monitor:
    """Passes the parts' reports to Health and Metrics, runs the probes, serves the endpoints."""

    def __init__(
        self, settings: Settings, health: Health, metrics: Metrics, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.health = health
        self.metrics = metrics
        self.registry = registry
        self.clock = health.clock
        self._reported: dict[str, bool] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Clock, registry: CollectorRegistry, version: str
    ) -> Monitor:
        health = Health(
            clock,
            api_grace=settings.ready_api_grace,
            max_lag=settings.ready_max_lag,
            poll_interval=settings.poll_interval,
        )
        metrics = Metrics(registry, feeds=[f.url for f in settings.feeds], version=version)
        return cls(settings, health, metrics, registry)

    # ------------------------------------------------------------------ the parts' hooks

    def attach(
        self, *, store: Store, poller: Poller, publisher: Publisher, limits: RateLimits
    ) -> None:
        """Hook into the parts (the request layers get `api_answered` when they are built)."""
        store.on_write = self.store_written
        store.on_search = self.metrics.search_duration.observe
        poller.on_polled = self.polled
        publisher.on_outcome = self.delivered
        publisher.on_paid = self.metrics.paid_sends.inc
        limits.on_wait = self.metrics.limiter_waited
        budget = limits.budget
        if budget is not None:
            self.metrics.paid_stars_today.set_function(lambda: budget.stars_today)

    def api_answered(self, method: str, status: int, seconds: float) -> None:
        # A 5xx comes from a proxy or a front server in trouble: Telegram itself has not
        # answered, so it keeps readiness's bot_api check waiting.
        if status < 500:
            self.health.note_api_answer()
        self.metrics.api_answered(status, seconds if counts_as_send(method) else None)

    def polled(self, feed: Feed, report: PollReport) -> None:
        self.health.note_poll(report.status != "error")
        self.metrics.polled(feed.url, report.status, report.new_items, report.error_streak)

    def delivered(self, chat: Chat, outcome: Outcome) -> None:
        if outcome is Outcome.SENT:
            self.health.note_sent()
        elif outcome is Outcome.UNREACHABLE:
            self.health.note_unreachable()
        self.metrics.delivered(outcome.value, chat.type.value)

    def store_written(self, seconds: float, ok: bool) -> None:
        self.health.note_store_write(ok)
        self.metrics.store_written(seconds, ok)

    # ------------------------------------------------------------------ running

    @contextlib.asynccontextmanager
    async def serving(self, store: Store, bot: Bot, stop: asyncio.Event) -> AsyncIterator[None]:
        """Serve the endpoints and run the probes for the duration of the block."""
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        host, port = self.settings.health_listen, self.settings.health_port
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        log.info("health endpoints on http://%s:%d (/healthz, /readyz, /metrics)", host, port)
        # Short READY_* settings (tests) look more often; never busier than twice a second.
        outbox_every = max(0.5, min(OUTBOX_REFRESH, self.settings.ready_max_lag / 2))
        api_every = max(0.5, self.settings.ready_api_grace / 3)
        probes = [
            self._loop_lag(stop),
            self._every(outbox_every, lambda: self._read_outbox(store), stop),
            self._every(STORE_PROBE_INTERVAL, lambda: self._probe_store(store), stop),
            self._every(api_every, lambda: self._probe_api(bot), stop),
        ]
        tasks = [asyncio.create_task(p, name="health-probe") for p in probes]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        # That this handler runs at all is the proof that the process and its loop answer.
        return web.json_response({"ok": True, "loop_lag_seconds": round(self.health.loop_lag, 4)})

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = self._judge()
        body = {
            "ready": all(c.ok for c in checks.values()),
            "role": self.health.role(),
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
            "failing": [name for name, c in checks.items() if not c.ok],
        }
        return web.Response(
            text=json.dumps(body),
            status=200 if body["ready"] else 503,
            content_type="application/json",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        self._judge()
        self.metrics.outbox_oldest_due_age.set(self.health.oldest_due_age())
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def _judge(self) -> dict[str, Check]:
        """Judge readiness; keep the gauges in step and log each check that changes."""
        checks = self.health.checks()
        self.metrics.role(self.health.role())
        self.metrics.readiness({name: c.ok for name, c in checks.items()})
        for name, check in checks.items():
            was = self._reported.get(name, True)
            if check.ok != was:
                if check.ok:
                    log.info("ready again: %s (%s)", name, check.detail)
                else:
                    log.warning("not ready: %s: %s", name, check.detail)
            self._reported[name] = check.ok
        return checks

    async def _loop_lag(self, stop: asyncio.Event) -> None:
        # The event loop's own timers, in real time: the injected clock may be virtual.
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.health.loop_lag = max(0.0, loop.time() - started - LAG_INTERVAL)
            self.metrics.loop_lag.set(self.health.loop_lag)
            self._judge()

    async def _every(
        self,
        interval: float,
        probe: Callable[[], Coroutine[Any, Any, None]],
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            try:
                await probe()
            except Exception:
                log.exception("health probe failed")
            await self.clock.sleep(interval)

    async def _read_outbox(self, store: Store) -> None:
        try:
            depth = await store.outbox_depth(self.clock.now())
        except Exception as exc:  # the store check reports a store in trouble
            log.debug("reading the outbox depth failed: %s", exc)
            return
        self.health.note_outbox(depth)
        self.metrics.outbox(depth.pending, depth.due, self.health.oldest_due_age(), held=depth.held)

    async def _probe_store(self, store: Store) -> None:
        if self.clock.monotonic() - self.health.last_write < STORE_PROBE_INTERVAL:
            return  # the bot wrote recently: that write's outcome is as good as a probe's
        try:
            await store.probe_write()
        except Exception as exc:  # noted by the store's write hook
            log.debug("store write probe failed: %s", exc)

    async def _probe_api(self, bot: Bot) -> None:
        # Long polling hears from Telegram every LONG_POLL_TIMEOUT at least; a webhook bot
        # with nothing to send does not, so ask when Telegram has been quiet.
        quiet = self.clock.monotonic() - self.health.last_api_answer
        if quiet < self.settings.ready_api_grace / 3:
            return
        try:
            await bot.get_me(
                read_timeout=PROBE_TIMEOUT,
                write_timeout=PROBE_TIMEOUT / 2,
                connect_timeout=PROBE_TIMEOUT / 2,
                pool_timeout=PROBE_TIMEOUT / 2,
            )
        except Exception as exc:  # no answer: the bot_api check turns red by itself
            log.debug("Bot API probe (getMe) failed: %s", exc)
