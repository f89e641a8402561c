"""Composition root: builds the store, the PTB application, the poller and the publisher, runs
them together and shuts them down in order."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
from prometheus_client import CollectorRegistry
from telegram import Bot, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import InvalidToken, TelegramError
from telegram.ext import ApplicationBuilder, ContextTypes, Defaults
from telegram.request import HTTPXRequest

import handlers
from bot import heap
from bot.backoff import backoff
from bot.clock import Clock, SystemClock, unless_stopped
from bot.config import ChannelTarget, Settings
from bot.delivery.digests import DigestScheduler
from bot.delivery.paid import PaidBudget
from bot.delivery.publisher import Publisher
from bot.delivery.ratelimit import (
    ApiAnswerHook,
    BotApiRequest,
    Limits,
    RateLimits,
    TelegramRateLimiter,
)
from bot.delivery.sender import Sender
from bot.leadership import Deposed, Leadership, Role, rate_share
from bot.logs import Redactor, redacted
from bot.ops.health import Monitor, ObservedHTTPXRequest
from bot.ops.metrics import package_version
from bot.pipeline.edits import Editor
from bot.pipeline.enrich import ArticleEnricher
from bot.pipeline.poller import Poller, PollerConfig
from bot.services import filters
from bot.services.channel_admin import ChannelAdmin
from bot.services.commands import publish_menus
from bot.services.readers import Readers
from bot.services.search import SearchIndex, analyse, index_items
from bot.services.topics import Topics
from bot.text.i18n import Translator
from bot.text.render import Renderer
from bot.workers import CpuWorkers
from handlers.context import SERVICES_KEY, BotApplication, BotContext, HandlerServices
from handlers.updates import PerChatUpdateProcessor, TolerantBot
from storage import paid as paid_sends
from storage import search as index_store
from storage.instance_lock import acquire_instance_lock
from storage.models import ChatType, Feed
from storage.store import Store

log = logging.getLogger(__name__)

LONG_POLL_TIMEOUT = 25  # seconds getUpdates waits on Telegram's side
UPDATE_CONCURRENCY = 64  # updates handled at once (across chats)
START_RETRY_MAX = 60.0  # longest wait between attempts to reach the Bot API at start
MAINTENANCE_INTERVAL = 3600.0


def long_poll_timeout(settings: Settings) -> int:
    """getUpdates' wait: with several instances, short enough that a leader's long poll ends
    inside its trusted lease window (bot.leadership), so a successor never overlaps it (else
    Telegram answers 409)."""
    if settings.database_url is None:
        return LONG_POLL_TIMEOUT
    return max(1, min(LONG_POLL_TIMEOUT, int(settings.leader_timeout * 0.4)))


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """The client feeds (and article pages) are fetched with."""
    timeout = httpx.Timeout(settings.http_timeout, connect=min(10.0, settings.http_timeout))
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": settings.user_agent},
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
    )


def build_application(
    settings: Settings, limits: RateLimits, on_answer: ApiAnswerHook | None = None
) -> BotApplication:
    """Build PTB's Application pointed at TELEGRAM_API_URL, with our rate limiter.

    `on_answer` hears of every HTTP answer of the Bot API, on both request layers.
    """
    assert settings.token is not None
    # Sends go through aiohttp (a third of httpx's CPU per request; stamps sends as they leave).
    request = BotApiRequest(
        connection_pool_size=max(64, settings.send_slots * 2),
        connect_timeout=10.0,
        read_timeout=20.0,
        write_timeout=20.0,
        pool_timeout=10.0,
        on_answer=on_answer,
    )
    updates_request: HTTPXRequest = ObservedHTTPXRequest(
        connection_pool_size=2,
        read_timeout=LONG_POLL_TIMEOUT + 10.0,
        connect_timeout=10.0,
        on_answer=on_answer,
    )
    bot = TolerantBot(
        settings.token,
        base_url=f"{settings.api_url}/bot",
        base_file_url=f"{settings.api_url}/file/bot",
        request=request,
        get_updates_request=updates_request,
        rate_limiter=TelegramRateLimiter(limits),
        # Every handler reply is HTML without a link preview unless it says otherwise; posts
        # (bot.delivery.sender) always say so.
        defaults=Defaults(
            parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)
        ),
    )
    builder = (
        ApplicationBuilder()
        .bot(bot)
        .context_types(ContextTypes(context=BotContext))
        # Chats are served concurrently (bounded), each chat's updates one at a time, in order.
        .concurrent_updates(PerChatUpdateProcessor(UPDATE_CONCURRENCY))
    )
    return builder.build()  # type: ignore[return-value]


@dataclass
class Runtime:
    """The running parts, exposed for tests and the shutdown sequence."""

    settings: Settings
    services: HandlerServices
    application: BotApplication
    publisher: Publisher
    poller: Poller
    http: httpx.AsyncClient
    leadership: Leadership | None = None  # PostgreSQL only: several instances, one leader
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    digests: DigestScheduler | None = None  # ends the holds of digest and quiet-hours chats
    # Brings the search index up to date in the background (SearchIndex.attach).
    index_search: Callable[[], Awaitable[int]] | None = None


async def run_bot(
    settings: Settings,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_started: Callable[[Runtime], None] | None = None,
) -> None:
    """Run the bot until `stop` is set, then shut down gracefully."""
    # httpx logs every request URL at INFO, and Bot API URLs carry the token.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    clock = clock or SystemClock()
    rng = rng or random.Random()  # noqa: S311 - jitter, not security
    with redacted(settings.secrets):
        await _run(settings, stop, clock, rng, on_started)


async def _run(
    settings: Settings,
    stop: asyncio.Event,
    clock: Clock,
    rng: random.Random,
    on_started: Callable[[Runtime], None] | None,
) -> None:
    # SQLite: one bot per store (InstanceLocked if another holds it; the OS drops it if we
    # die). PostgreSQL: several instances share the database and the leader lease decides.
    lock = (
        acquire_instance_lock(settings.database_path, started_at=clock.now())
        if settings.database_path is not None
        else None
    )
    try:
        store = await Store.open(settings.store_target)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    leadership = (
        Leadership(store, clock, timeout=settings.leader_timeout)
        if settings.database_url is not None
        else None
    )
    role: Role = "standby" if leadership is not None else "leader"
    http = make_http_client(settings)
    # Parsing, extraction and summaries: daemon threads nothing joins at exit (bot.workers).
    workers = CpuWorkers(threads=2)
    try:
        # Search answers from the start; attach() (a task of _serve) indexes what the last run
        # left out and, after a change of analysis, re-analyses every piece meanwhile.
        search_index = await SearchIndex.open(store)
        topics = Topics(store, clock, workers.run)
        await topics.adopt_include_keywords()  # the panel's old include keywords, once
        await topics.refresh()  # topics an older analysis made: their terms again
        limits = RateLimits(
            clock,
            Limits(
                global_per_second=settings.global_rate,
                group_per_minute=settings.rate_group_per_minute,
                private_per_second=settings.rate_private_per_second,
                margin=settings.rate_margin,
                unpaid_per_second=(
                    settings.rate_global_per_second if settings.paid_broadcast else None
                ),
            ),
        )
        limits.share(rate_share(role, settings.instances))
        if settings.paid_broadcast:
            limits.budget = PaidBudget(
                settings.paid_broadcast_daily_stars, ZoneInfo(settings.timezone), clock.now
            )
            limits.budget.load(*await paid_sends.today(store, limits.budget.today()))
        if leadership is not None:
            leadership.on_elected = lambda _: limits.share(rate_share("leader", settings.instances))
        # Health endpoints and metrics (HEALTH_PORT); their own registry, not the global one.
        monitor = (
            Monitor.from_settings(settings, clock, CollectorRegistry(), package_version())
            if settings.health_port
            else None
        )
        application = build_application(
            settings, limits, monitor.api_answered if monitor is not None else None
        )
        translator = Translator(default_language=settings.default_language)
        renderer = Renderer(translator, settings.timezone, settings.summary_length)
        sender = Sender(
            application.bot,
            paid_broadcast=settings.paid_broadcast,
            scrub=Redactor(settings.secrets),
        )
        publisher = Publisher(
            store,
            sender,
            renderer,
            limits,
            clock,
            concurrency=settings.send_slots,
            max_attempts=settings.max_send_attempts,
            rng=rng,
            fence=leadership,
        )
        # Daily digests and quiet hours: started with the leader's tasks, woken by changes.
        digests = DigestScheduler(
            store, renderer, clock, default_zone=renderer.zone, on_queued=publisher.wake,
            fence=leadership,
        )  # fmt: skip
        channel_admin = ChannelAdmin(
            store,
            application.bot,
            publisher,
            renderer,
            clock,
            operators=frozenset(settings.admin_user_ids),
            on_schedule_changed=digests.wake,
            followed=topics,
        )
        services = HandlerServices(
            store=store,
            renderer=renderer,
            clock=clock,
            readers=Readers(
                store,
                translator,
                clock,
                default_zone=renderer.zone,
                on_schedule_changed=digests.wake,
                index=search_index,
            ),
            channels=channel_admin,
            topics=topics,
            operators=frozenset(settings.admin_user_ids),
            max_age=settings.max_age,
        )
        application.bot_data[SERVICES_KEY] = services
        publisher.on_chat_problem = channel_admin.on_chat_problem
        handlers.register(application)
        poller = Poller(
            store,
            http,
            clock,
            PollerConfig(
                interval=settings.poll_interval,
                jitter=settings.poll_jitter,
                backoff_max=settings.backoff_max,
                max_bytes=settings.feed_max_bytes,
                timeout=settings.http_timeout,
                max_age=settings.max_age,
                backfill=settings.backfill,
                allow_private=settings.allow_private_addresses,
            ),
            on_queued=publisher.wake,
            rng=rng,
            decide=filters.decide,
            enrich=ArticleEnricher.from_settings(settings, store, http, clock, workers.run),
            on_updated=Editor.from_settings(
                settings, store, clock, publisher.wake, workers.run
            ).on_updated,
            index=lambda items, texts: index_items(store, items, workers.run, texts),
            analyse=analyse,
            match_topics=topics.matching,
            cpu=workers.run,
        )
        runtime = Runtime(
            settings, services, application, publisher, poller, http, leadership, digests=digests,
            index_search=lambda: search_index.attach(cpu=workers.run),
        )  # fmt: skip
        if leadership is not None:
            # Only the leader may call getUpdates: a second caller gets 409 Conflict.
            # A long poll must end while the lease is still trusted: a leader cut off from the
            # database (not from Telegram) then never overlaps its successor's first poll.
            poll_window = long_poll_timeout(settings) + 0.5
            assert isinstance(application.bot, TolerantBot)
            application.bot.gate_polling(lambda: leadership.valid(poll_window))
        if monitor is None:
            await _serve(runtime, stop, on_started)
            return
        monitor.attach(store=store, poller=poller, publisher=publisher, limits=limits)
        if leadership is not None:
            monitor.health.role = lambda: leadership.role
        async with monitor.serving(store, application.bot, stop):
            await _serve(runtime, stop, on_started)
    finally:
        workers.shutdown()
        await http.aclose()
        await store.close()
        if lock is not None:
            lock.release()


async def _index_search(attach: Callable[[], Awaitable[int]]) -> None:
    """Run the search index's catch-up; a failure is logged, and the next start resumes it."""
    try:
        await attach()
    except Exception:
        log.exception("search index: catching up failed; the next start resumes it")


async def _serve(
    runtime: Runtime, stop: asyncio.Event, on_started: Callable[[Runtime], None] | None
) -> None:
    settings, application, publisher = runtime.settings, runtime.application, runtime.publisher
    store, clock = runtime.services.store, runtime.services.clock
    leadership = runtime.leadership
    feeds = [await store.ensure_feed(f.url, f.lang) for f in settings.feeds]
    if not await _initialize(application, clock, stop):
        return
    async with application:  # initialize() again is a no-op; shutdown() on the way out
        log.info("bot @%s starting: %d feed(s)", application.bot.username, len(feeds))
        await application.start()
        assert application.updater is not None
        log.debug("%d start-up objects frozen out of the collector's way", heap.settle())
        spawn = runtime.tasks.append
        if runtime.index_search is not None:
            spawn(asyncio.create_task(_index_search(runtime.index_search), name="search-index"))
        # Every instance answers webhooks; with long polling only the leader asks.
        try:
            if leadership is None or settings.webhook_url is not None:
                await _start_updates(application, settings)
        except BaseException:
            await application.stop()  # else shutdown() refuses and the sessions stay open
            raise
        if leadership is None:
            await _lead(runtime, feeds, stop)
        else:
            spawn(asyncio.create_task(leadership.run(stop), name="leadership"))
            spawn(asyncio.create_task(_lead_when_elected(runtime, feeds, stop), name="elect"))
        if on_started is not None:
            on_started(runtime)
        ended: list[asyncio.Task[bool]] = [asyncio.create_task(stop.wait())]
        if leadership is not None:
            ended.append(asyncio.create_task(leadership.deposed.wait()))
        await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
        for waiter in ended:
            waiter.cancel()
        deposed = leadership is not None and leadership.deposed.is_set()

        log.info("stopping: no new polls or updates; letting sends in flight finish")
        # The publisher stops dispatching at once, while the long poll is being wound down.
        # One deadline for the whole stop: sends in flight and updates fetched share it.
        deadline = clock.monotonic() + settings.shutdown_timeout
        publisher_stopped = asyncio.create_task(publisher.stop(settings.shutdown_timeout))
        if application.updater.running:
            await application.updater.stop()
        for task in runtime.tasks:
            if task.get_name() != "publisher":
                task.cancel()
        unfinished = await publisher_stopped
        await asyncio.gather(*runtime.tasks, return_exceptions=True)
        if leadership is not None:
            await leadership.release()  # a standby takes over now, not at the lease's end
        await _drain_updates(application, clock, deadline)
        await application.stop()
        log.info("stopped (%d send(s) left pending for the next start)", unfinished)
    if deposed:
        raise Deposed("another instance holds the leader lease; restart to rejoin as standby")


async def _lead_when_elected(runtime: Runtime, feeds: list[Feed], stop: asyncio.Event) -> None:
    """A standby until the lease is ours; then poll, publish (and, polling, fetch updates)."""
    leadership = runtime.leadership
    assert leadership is not None
    log.info("standby: answering readers; waiting for the leader lease")
    if not await unless_stopped(leadership.elected.wait(), stop):
        return
    if runtime.settings.webhook_url is None:
        await _start_updates(runtime.application, runtime.settings)
    await _lead(runtime, feeds, stop)


async def _lead(runtime: Runtime, feeds: list[Feed], stop: asyncio.Event) -> None:
    """Start what only the leader does: publishing, polling, channels from CHANNELS, upkeep."""
    settings, application, publisher = runtime.settings, runtime.application, runtime.publisher
    store, clock = runtime.services.store, runtime.services.clock
    bot = application.bot
    # Configured channels are registered before the first poll so that nothing new is
    # missed; ones not reachable yet are retried in the background.
    unresolved = [
        t for t in settings.channels if not await _connect_env_channel(store, bot, clock, t)
    ]
    spawn = runtime.tasks.append
    spawn(asyncio.create_task(publisher.run(), name="publisher"))
    if runtime.digests is not None:
        spawn(asyncio.create_task(runtime.digests.run(stop), name="digests"))
    for feed in feeds:
        spawn(asyncio.create_task(runtime.poller.run(feed, stop), name=f"poll-{feed.id}"))
    if unresolved:
        retry = _connect_env_channels(store, bot, clock, unresolved, stop)
        spawn(asyncio.create_task(retry, name="channels"))
    spawn(
        asyncio.create_task(
            _maintenance(store, clock, settings.delivery_retention, stop), name="maintenance"
        )
    )
    menus = publish_menus(application.bot, runtime.services.translator)
    spawn(asyncio.create_task(menus, name="menus"))


async def _start_updates(application: BotApplication, settings: Settings) -> None:
    """Receive updates by webhook when WEBHOOK_URL is set, else by long polling.

    Either way PTB first tells Telegram (setWebhook, or deleteWebhook so that getUpdates works
    after a webhook was used); the updates then take the same way through the application.
    """
    assert application.updater is not None
    if settings.webhook_url is None:
        await application.updater.start_polling(
            allowed_updates=handlers.ALLOWED_UPDATES, timeout=long_poll_timeout(settings)
        )
        return
    # PTB's server answers 403 to a request without the secret header or with a wrong one.
    await application.updater.start_webhook(
        listen=settings.webhook_listen,
        port=settings.webhook_port,
        url_path=urlsplit(settings.webhook_url).path.lstrip("/"),
        webhook_url=settings.webhook_url,
        secret_token=settings.webhook_secret,
        allowed_updates=handlers.ALLOWED_UPDATES,
    )
    log.info(
        "receiving updates by webhook on %s:%d%s",
        settings.webhook_listen, settings.webhook_port, urlsplit(settings.webhook_url).path or "/",
    )  # fmt: skip


# What a getMe answer that is not the Bot API's may raise while PTB parses it.
_MALFORMED_ANSWER = (KeyError, TypeError, ValueError)


async def _initialize(application: BotApplication, clock: Clock, stop: asyncio.Event) -> bool:
    """Reach the Bot API (getMe), retrying until it answers; False if stopped first.

    A rejected token is final (InvalidToken propagates). Anything else (no network, a timeout,
    a 5xx, an answer that is not the Bot API's) is waited out with backoff, 1 s doubling up to
    START_RETRY_MAX, logged when the reason changes. Unless it succeeds, the Bot API request
    objects are shut down here: PTB opens them before getMe and leaves them open when it fails.
    """
    try:
        ready = await _reach_api(application, clock, stop)
    except BaseException:
        await application.bot.shutdown()
        raise
    if not ready:
        await application.bot.shutdown()
    return ready


async def _reach_api(application: BotApplication, clock: Clock, stop: asyncio.Event) -> bool:
    tries = 0
    delay = backoff(tries, 1.0, START_RETRY_MAX)
    last_reason: str | None = None
    while not stop.is_set():
        try:
            if not await unless_stopped(application.initialize(), stop):
                return False
        except InvalidToken:
            raise
        except (TelegramError, *_MALFORMED_ANSWER) as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            if reason != last_reason:
                log.warning("cannot reach the Bot API (%s); retrying in %.0f s", reason, delay)
            else:
                log.debug("still cannot reach the Bot API; retrying in %.0f s", delay)
            last_reason = reason
            if await unless_stopped(clock.sleep(delay), stop):
                tries += 1
                delay = backoff(tries, 1.0, START_RETRY_MAX)
        else:
            if last_reason is not None:
                log.info("reached the Bot API")
            return True
    return False


async def _drain_updates(application: BotApplication, clock: Clock, deadline: float) -> None:
    """Let updates already fetched be handled until `deadline` (monotonic), then drop the rest.

    Telegram counts fetched updates as delivered, so the dropped ones are gone for good: they
    are counted and logged. Replies are paced per chat, so one chat's long backlog could
    otherwise hold the stop far past the container's grace period.
    """
    queue = application.update_queue
    processor = application.update_processor
    waiting = processor.waiting if isinstance(processor, PerChatUpdateProcessor) else lambda: 0
    while (not queue.empty() or waiting()) and clock.monotonic() < deadline:
        await clock.sleep(0.05)
    dropped = 0
    while not queue.empty():
        queue.get_nowait()
        queue.task_done()
        dropped += 1
    if isinstance(processor, PerChatUpdateProcessor):
        dropped += processor.drop_queued()
    if dropped:
        log.warning("stopping: %d update(s) fetched but not handled in time were dropped", dropped)


async def _connect_env_channels(
    store: Store, bot: Bot, clock: Clock, pending: list[ChannelTarget], stop: asyncio.Event
) -> None:
    """Keep trying to register CHANNELS entries that could not be resolved at start."""
    tries = 0
    delay = backoff(tries, 5.0, 600.0)
    await clock.sleep(delay)
    while pending and not stop.is_set():
        retry: list[ChannelTarget] = []
        for target in pending:
            if not await _connect_env_channel(store, bot, clock, target):
                retry.append(target)
        pending = retry
        if pending:
            log.warning("%d configured channel(s) not reachable yet; retrying in %.0f s",
                        len(pending), delay)  # fmt: skip
            await clock.sleep(delay)
            tries += 1
            delay = backoff(tries, 5.0, 600.0)


async def _connect_env_channel(store: Store, bot: Bot, clock: Clock, target: ChannelTarget) -> bool:
    now = clock.now()
    try:
        info = await bot.get_chat(target.chat)
    except TelegramError as exc:
        if target.chat_id is None:
            log.warning("CHANNELS: cannot resolve %s: %s", target.chat, exc)
            return False
        # A numeric id works without getChat; guess the type from the id's sign.
        log.warning("CHANNELS: getChat %s failed (%s); using the id as given", target.chat, exc)
        chat_type = ChatType.PRIVATE if target.chat_id > 0 else ChatType.CHANNEL
        title, username, chat_id = None, None, target.chat_id
    else:
        chat_type, title, username, chat_id = (
            ChatType(info.type),
            info.title,
            info.username,
            info.id,
        )
    known = await store.get_chat(chat_id)
    await store.upsert_chat(
        chat_id,
        chat_type,
        title=title,
        username=username,
        default_lang=target.lang,
        now=now,
        subscribed=True,
        active=True if known is None else known.active or known.deactivated_reason is None,
    )
    if known is None:
        await store.update_chat(chat_id, now, lang=target.lang, languages=[target.lang])
        log.info("CHANNELS: %s (%d) will receive %s posts", target.chat, chat_id, target.lang)
    return True


async def _maintenance(store: Store, clock: Clock, retention: float, stop: asyncio.Event) -> None:
    """Hourly upkeep: prune old delivery rows and tighten search's recency floor."""
    while not stop.is_set():
        try:
            now = clock.now()
            pruned = await store.prune_deliveries(now - retention)
            if pruned:
                log.info("pruned %d delivery rows older than the retention", pruned)
            await index_store.refresh_recency(store, now)
        except Exception:
            log.exception("maintenance failed")
        await clock.sleep(MAINTENANCE_INTERVAL)
