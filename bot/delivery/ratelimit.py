"""Telegram's send limits as sliding windows, and PTB's BaseRateLimiter built on them.

A leaky or token bucket lets a full bucket burst and then refills, so a window of the server's
size can see more than the limit; here a send is allowed only when the stamps in the trailing
window are fewer than the limit. Every request the bot makes goes through one RateLimits, so
handler replies and the publisher share the budget.

The windows must hold as Telegram sees the requests arrive, so:
- a send is stamped right before its HTTP call, and stamped again (moved later) when its
  request is actually written (BotApiRequest's _StampedRequest), should anything have delayed it in
  between (a busy event loop, a wait for a pooled connection);
- every window is `margin` seconds longer than Telegram's, for the jitter that is left; the
  bot-wide windows' margin grows to the observed spread of round trips (RoundTrips), since a
  send's way there takes no longer than its round trip;
- with paid broadcasts, a send that may pay goes free while the free window has room and paid
  only beyond it, within the day's Stars budget (bot.delivery.paid);
- waiters for the global window queue in FIFO order, one at a time, so a slot freeing up wakes
  one sender rather than all of them; a send first waits for its own chat's windows outside
  that queue, so one chat's wait never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import math
import re
import time
import urllib.request
import warnings
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.connector import Connection

# PTB's own request classes tell "not given" timeouts apart with these.
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import BaseRateLimiter
from telegram.request import BaseRequest, RequestData
from telegram.warnings import PTBDeprecationWarning

from bot.clock import Clock
from bot.delivery.keepalive import HttpError, KeepAliveClient
from bot.delivery.paid import PaidBudget

log = logging.getLogger(__name__)

# Requests that put a message into a chat: these are what Telegram counts.
_EDIT_ENDPOINTS = frozenset(
    {"editMessageText", "editMessageCaption", "editMessageMedia", "editMessageLiveLocation"}
)
_OTHER_COUNTED = frozenset(
    {"copyMessage", "copyMessages", "forwardMessage", "forwardMessages", "sendMediaGroup"}
)
# 429s from this many different chats within a second mean the bot-wide limit, not a chat's.
_GLOBAL_429_CHATS = 3
# A bot-wide 429 despite the windows means more jitter on the way to Telegram than the margin
# allows for: the bot-wide windows grow by a step (up to a cap) until a calm spell has passed.
_MARGIN_STEP = 0.02
_MAX_MARGIN = 0.25
_MARGIN_RESET = 600.0
# Round trips are watched in buckets of this many seconds, the last few of them at a time
# (RoundTrips); a margin raised for their jitter is kept this long after its last rise.
_JITTER_BUCKET = 0.25
_JITTER_BUCKETS = 8
_JITTER_HOLD = 10.0
# How far ahead of its even schedule the bot-wide pacer lets sends go (see Pacer).
_PACE_TOLERANCE = 0.02
# The shortest wait for the bot-wide rate. At 1,000/s a send's turn comes every millisecond,
# and waking for each one was a fifth of a send's CPU; waking every 10 ms lets the sends that
# have come due meanwhile go together (within the pacer's tolerance, so the rate holds), while
# the windows still bound every second. Slower rates wait longer than this anyway.
_GLOBAL_NAP = 0.01
# A stamp moves only when the write came this much later: below it, moving is just churn.
_RESTAMP_AFTER = 0.0005


def counts_as_send(endpoint: str) -> bool:
    """True for the Bot API methods that Telegram's message limits apply to."""
    return (
        (endpoint.startswith("send") and endpoint != "sendChatAction")
        or endpoint in _EDIT_ENDPOINTS
        or endpoint in _OTHER_COUNTED
    )


def is_private_chat(chat: int | str | None) -> bool:
    """Private chats have positive ids; groups and channels negative ids or @usernames."""
    if isinstance(chat, int):
        return chat > 0
    if isinstance(chat, str):
        text = chat.strip()
        return text.lstrip("-").isdigit() and not text.startswith("-")
    return False


class SlidingWindow:
    """At most `limit` events in any window of `period` seconds."""

    __slots__ = ("limit", "period", "stamps")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.stamps: deque[float] = deque()

    def _prune(self, now: float) -> None:
        horizon = now - self.period
        stamps = self.stamps
        while stamps and stamps[0] <= horizon:
            stamps.popleft()

    def available_at(self, now: float) -> float:
        """Return the earliest time (>= now) at which one more event fits."""
        self._prune(now)
        if len(self.stamps) < self.limit:
            return now
        return max(now, self.stamps[len(self.stamps) - self.limit] + self.period)

    def record(self, now: float) -> None:
        self.stamps.append(now)

    def move(self, old: float, new: float) -> None:
        """Move one stamp from `old` to `new` (>= every stamp in the window)."""
        stamps = self.stamps
        # The stamp is nearly always among the newest few: search from the right.
        for offset in range(1, len(stamps) + 1):
            if stamps[-offset] == old:
                del stamps[-offset]
                break
        # Not found: the stamp had already left the window, but the send leaves only now.
        stamps.append(new)

    def idle(self, now: float) -> bool:
        self._prune(now)
        return not self.stamps


@dataclass(frozen=True, slots=True)
class Limits:
    global_per_second: int = 30
    group_per_minute: int = 20
    private_per_second: float = 1.0
    # Extra length given to each window: absorbs the jitter between the moment a send is
    # stamped (when its request is written) and the moment the server sees it arrive.
    margin: float = 0.03
    # With paid broadcasts the global limit is the paid one; sends made without
    # allow_paid_broadcast (handler replies) still keep to this free rate.
    unpaid_per_second: int | None = None


class Stamp:
    """One send's places in the windows, so it can be moved to when the send really left."""

    __slots__ = ("at", "limits", "paid", "windows")

    def __init__(
        self, limits: RateLimits, windows: tuple[SlidingWindow, ...], at: float, paid: bool
    ) -> None:
        self.limits = limits
        self.windows = windows
        self.at = at
        self.paid = paid  # the send goes out with allow_paid_broadcast

    def restamp(self) -> None:
        """Move the stamp to now, if the send leaves noticeably later than it was stamped."""
        now = self.limits.clock.monotonic()
        delay = now - self.at
        if delay <= _RESTAMP_AFTER:
            return
        for window in self.windows:
            window.move(self.at, now)
        self.at = now
        self.limits.note_late_write(delay)


# The stamp of the send this task is making, for the HTTP layer to move (see BotApiRequest).
_CURRENT_STAMP: contextvars.ContextVar[Stamp | None] = contextvars.ContextVar(
    "current_stamp", default=None
)


class RateLimits:
    """The shared budget: the bot-wide window and pacer (and the free rate's, with paid
    broadcasts), one or two windows per chat, and retry_after holds."""

    def __init__(self, clock: Clock, limits: Limits = Limits()) -> None:
        self.clock = clock
        self.limits = limits
        # The bot-wide windows' margin in use: the larger of what 429s taught (`_learned`,
        # widened for a while after bot-wide 429s) and the recent jitter of round trips.
        self.margin = limits.margin
        self._learned = limits.margin
        self.round_trips = RoundTrips()
        self._jitter_raised_at = -math.inf
        self.fraction = 1.0
        self._paid_rates: tuple[_BotWide, ...] = ()
        self._unpaid_rates: tuple[_BotWide, ...] = ()
        self.share(1.0)
        self._chats: dict[str, tuple[SlidingWindow, ...]] = {}
        self._blocked_until: dict[str, float] = {}
        self._all_blocked_until = 0.0
        self._records_since_sweep = 0
        self._recent_429: deque[tuple[float, str]] = deque(maxlen=64)
        self._widened_at = -math.inf
        # One waiter at a time watches the global window; the rest queue here in FIFO order.
        self._turn = asyncio.Lock()
        # Sends written later than stamped (and moved), for the shutdown log.
        self.late_writes = 0
        self.longest_write_delay = 0.0
        # Told how long each acquired send waited for the windows (metrics).
        self.on_wait: Callable[[float], None] | None = None
        # Today's Stars cap on paid sends (bot.delivery.paid); None: no cap.
        self.budget: PaidBudget | None = None

    def share(self, fraction: float) -> None:
        """Take `fraction` of the bot-wide rates (several instances share one bot's budget:
        bot.leadership, README "Several instances"). Per-chat windows are the chat's own."""
        lim = self.limits
        self.fraction = fraction
        everyone = _BotWide(_part(lim.global_per_second, fraction), self.margin)
        self._paid_rates = (everyone,)
        self._unpaid_rates = self._paid_rates
        if lim.unpaid_per_second is not None:
            self._unpaid_rates += (_BotWide(_part(lim.unpaid_per_second, fraction), self.margin),)

    def _windows(self, chat: int | str) -> tuple[SlidingWindow, ...]:
        key = str(chat)
        windows = self._chats.get(key)
        if windows is None:
            lim = self.limits
            if is_private_chat(chat):
                count, period = _rate_to_window(lim.private_per_second)
                windows = (SlidingWindow(count, period + lim.margin),)
            else:
                # Groups and channels: 20 a minute, and never two in the same second.
                windows = (
                    SlidingWindow(lim.group_per_minute, 60.0 + lim.margin),
                    SlidingWindow(max(1, math.ceil(lim.group_per_minute / 20)), 1.0 + lim.margin),
                )
            self._chats[key] = windows
        return windows

    def chat_ready_at(self, chat: int | str, now: float | None = None) -> float:
        """Return when the chat's own windows and any retry_after allow the next send."""
        now = self.clock.monotonic() if now is None else now
        key = str(chat)
        ready = max(now, self._blocked_until.get(key, 0.0))
        # Asked for each row of every sweep: a chat with no recent send has no windows to
        # look at (nor are they made for it until it sends).
        for window in self._chats.get(key, ()):
            available = window.available_at(now)
            if available > ready:
                ready = available
        return ready

    def global_ready_at(self, now: float | None = None, *, paid: bool = False) -> float:
        """Return when the bot-wide window (and, for unpaid sends, the free one) has room."""
        now = self.clock.monotonic() if now is None else now
        ready = max(now, self._all_blocked_until)
        for rate in self._paid_rates if paid else self._unpaid_rates:
            ready = max(ready, rate.available_at(now))
        return ready

    async def acquire(
        self, chat: int | str | None, *, paid: bool = False, may_pay: bool = False
    ) -> Stamp:
        """Wait until a send to `chat` fits every window, then stamp it.

        `paid`: the send carries allow_paid_broadcast. `may_pay`: the limiter decides: the
        send goes free when the free rate has room now, else paid (once the paid window has
        room) while today's budget allows; the stamp says which.
        """
        started = self.clock.monotonic()
        while True:
            if chat is not None:
                # The chat's own wait comes first, outside the global queue.
                while (ready := self.chat_ready_at(chat)) > self.clock.monotonic():
                    await self.clock.sleep(ready - self.clock.monotonic())
            async with self._turn:
                while True:
                    now = self.clock.monotonic()
                    ready, pays = self.global_ready_at(now, paid=paid), paid
                    if ready > now and may_pay and not paid and self._may_pay():
                        paid_ready = self.global_ready_at(now, paid=True)
                        if paid_ready < ready:
                            ready, pays = paid_ready, True
                    if ready <= now:
                        break
                    await self.clock.sleep(max(ready - now, _GLOBAL_NAP))
                # Another request to the same chat may have taken its window meanwhile.
                if chat is None or self.chat_ready_at(chat, now) <= now:
                    if self.on_wait is not None:
                        self.on_wait(now - started)
                    if pays and self.budget is not None:
                        self.budget.charge()
                    return self._record(chat, now, pays)

    def _may_pay(self) -> bool:
        """Paid broadcasts are on and today's cap is not reached."""
        if self.limits.unpaid_per_second is None:
            return False
        return self.budget is None or self.budget.may_pay()

    def _record(self, chat: int | str | None, now: float, paid: bool) -> Stamp:
        rates = self._paid_rates if paid else self._unpaid_rates
        for rate in rates:
            rate.pacer.record(now)
        windows = tuple(rate.window for rate in rates)
        if chat is not None:
            windows += self._windows(chat)
        for window in windows:
            window.record(now)
        self._records_since_sweep += 1
        if self._records_since_sweep >= 5000:
            self._sweep(now)
        return Stamp(self, windows, now, paid)

    def _sweep(self, now: float) -> None:
        """Forget idle chats so the table stays bounded by recent activity."""
        self._records_since_sweep = 0
        if self._learned != self.limits.margin and now - self._widened_at > _MARGIN_RESET:
            self._learned = self.limits.margin
            self._refresh_margin(now)
        idle = [k for k, ws in self._chats.items() if all(w.idle(now) for w in ws)]
        for key in idle:
            del self._chats[key]
        expired = [k for k, until in self._blocked_until.items() if until <= now]
        for key in expired:
            del self._blocked_until[key]

    def block_chat(self, chat: int | str, seconds: float) -> None:
        """Hold sends to one chat for `seconds` (Telegram's retry_after)."""
        until = self.clock.monotonic() + seconds
        key = str(chat)
        self._blocked_until[key] = max(self._blocked_until.get(key, 0.0), until)

    def block_all(self, seconds: float) -> None:
        """Hold every send for `seconds` (a flood wait on the whole bot)."""
        self._all_blocked_until = max(self._all_blocked_until, self.clock.monotonic() + seconds)

    def note_429(self, chat: int | str | None, seconds: float) -> bool:
        """Honour a 429: hold the chat, or everyone when it is the bot-wide limit.

        Telegram does not say which limit it was; refusals for several chats within a
        second can only be the bot-wide one. Return True when every send was held.
        """
        if chat is None:
            self.block_all(seconds)
            return True
        self.block_chat(chat, seconds)
        now = self.clock.monotonic()
        self._recent_429.append((now, str(chat)))
        recent = {c for at, c in self._recent_429 if now - at <= 1.0}
        if len(recent) >= _GLOBAL_429_CHATS:
            log.warning("429 from %d chats within a second: holding all sends %.1f s",
                        len(recent), seconds)  # fmt: skip
            self.block_all(seconds)
            self._widen_margin(now)
            return True
        return False

    def _widen_margin(self, now: float) -> None:
        """Allow for more jitter than RATE_MARGIN: the server saw sends closer than we did."""
        if now - self._widened_at < 1.0:
            return  # refusals of sends already under way at the first one
        self._widened_at = now
        learned = min(_MAX_MARGIN, max(self._learned, self.margin) + _MARGIN_STEP)
        if learned > self._learned:
            self._learned = learned
            log.warning("bot-wide windows now %.0f ms longer than Telegram's, for %.0f s",
                        learned * 1000, _MARGIN_RESET)  # fmt: skip
            self._refresh_margin(now)

    def note_round_trip(self, seconds: float, now: float | None = None) -> None:
        """A send was answered `seconds` after it left: how much that varies is how far
        apart the server may see sends we spaced evenly, so the margin follows it."""
        now = self.clock.monotonic() if now is None else now
        if self.round_trips.note(now, seconds):
            self._refresh_margin(now)

    def _refresh_margin(self, now: float) -> None:
        """Set the margin to the larger of the learned one and the recent jitter; a margin
        the jitter raised is kept for a while, so a calm second does not let a burst out."""
        wanted = max(self._learned, min(_MAX_MARGIN, self.round_trips.spread))
        if wanted > self.margin:
            if wanted > self._learned:
                self._jitter_raised_at = now
            self._set_margin(wanted)
        elif wanted < self.margin and now - self._jitter_raised_at >= _JITTER_HOLD:
            self._set_margin(wanted)

    def _set_margin(self, margin: float) -> None:
        self.margin = margin
        for rate in {*self._paid_rates, *self._unpaid_rates}:
            rate.set_margin(margin)

    def note_late_write(self, delay: float) -> None:
        self.late_writes += 1
        self.longest_write_delay = max(self.longest_write_delay, delay)


class RoundTrips:
    """The spread (slowest minus fastest) of the sends' round trips over the last ~2 s.

    A send's way to the server takes between the fastest and the slowest round trip, so two
    sends spaced `d` apart arrive at least `d - spread` apart: windows `spread` longer than
    the server's hold even as it sees them. O(1) a send: a min and max per bucket.
    """

    __slots__ = ("_hi", "_lo", "_past", "_start", "spread")

    def __init__(self) -> None:
        self._start = -math.inf
        self._lo = math.inf
        self._hi = -math.inf
        self._past: deque[tuple[float, float]] = deque(maxlen=_JITTER_BUCKETS)
        self.spread = 0.0

    def note(self, now: float, seconds: float) -> bool:
        """Take one round trip; return True when the spread changed."""
        before = self.spread
        if now - self._start >= _JITTER_BUCKET:
            if self._hi >= self._lo:
                self._past.append((self._lo, self._hi))
            self._start, self._lo, self._hi = now, seconds, seconds
            buckets = [*self._past, (seconds, seconds)]
            self.spread = max(hi for _, hi in buckets) - min(lo for lo, _ in buckets)
        else:
            self._lo = min(self._lo, seconds)
            self._hi = max(self._hi, seconds)
            # A rise counts at once; a fall waits for the bucket to end.
            self.spread = max(self.spread, self._hi - self._lo)
        return abs(self.spread - before) > 0.001


class Pacer:
    """Spreads sends evenly at one per `interval` (a GCRA virtual schedule).

    A send may go `tolerance` ahead of the schedule, so one that woke a little late is made
    up for by the next; beyond that, sends wait their turn. The sliding windows are the hard
    limit; the pacer keeps a second's sends from leaving in one burst whenever the window
    frees up, since a burst is what a busy server stamps unevenly.
    """

    __slots__ = ("interval", "scheduled", "tolerance")

    def __init__(self, interval: float, tolerance: float) -> None:
        self.interval = interval
        self.tolerance = tolerance
        self.scheduled = -math.inf  # when the schedule's next send is due

    def available_at(self, now: float) -> float:
        return max(now, self.scheduled - self.tolerance)

    def record(self, now: float) -> None:
        self.scheduled = max(self.scheduled, now) + self.interval


class _BotWide:
    """A bot-wide rate: its sliding window and its pacer."""

    __slots__ = ("pacer", "per_second", "window")

    def __init__(self, per_second: int, margin: float) -> None:
        period = 1.0 + margin
        self.per_second = per_second
        self.window = SlidingWindow(per_second, period)
        self.pacer = Pacer(period / per_second, _PACE_TOLERANCE)

    def set_margin(self, margin: float) -> None:
        self.window.period = 1.0 + margin
        self.pacer.interval = (1.0 + margin) / self.per_second

    def available_at(self, now: float) -> float:
        return max(self.window.available_at(now), self.pacer.available_at(now))


def _part(per_second: int, fraction: float) -> int:
    # Rounded down: the parts of several instances never add up to more than the whole.
    return max(1, math.floor(per_second * fraction))


def _rate_to_window(per_second: float) -> tuple[int, float]:
    if per_second >= 1:
        return int(per_second), 1.0
    return 1, 1.0 / per_second


# Told of every HTTP answer of the Bot API (any status): the method, the status, and the
# seconds from the request leaving (its headers written) to the answer read.
ApiAnswerHook = Callable[[str, int, float], None]


# A request's read, write, connect and pool timeouts.
_Timeouts = tuple[float | None, float | None, float | None, float | None]


class _Departure:
    """When a request's headers were written (a real round trip is timed in real time)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = time.monotonic()


# The departure of the request this task is making, for _StampedRequest to set.
_CURRENT_DEPARTURE: contextvars.ContextVar[_Departure | None] = contextvars.ContextVar(
    "current_departure", default=None
)


# The start of an accepted send's answer, up to the message's id.
_LEAN_ANSWER = re.compile(
    rb'\{\s*"ok"\s*:\s*true\s*,\s*"result"\s*:\s*\{\s*"message_id"\s*:\s*(\d+)\s*[,}]'
)


class Accepted:
    """Whether Telegram answered `ok: true` to the request made while this was watched.

    An accepted send is a sent message even when the library cannot make a Message of the
    answer's body: the publisher must record it as sent, never send it again.
    """

    __slots__ = ("lean", "ok", "result")

    def __init__(self, lean: bool = False) -> None:
        self.lean = lean  # only the message's id is read: the rest of the answer is not parsed
        self.ok = False
        self.result: Any = None


_ACCEPTED: contextvars.ContextVar[Accepted | None] = contextvars.ContextVar(
    "accepted", default=None
)


@contextlib.contextmanager
def watch_accepted(*, lean: bool = False) -> Iterator[Accepted]:
    """Note whether the Bot API accepts the requests made inside the block. `lean`: their
    callers read no more of an accepted answer than its message_id."""
    accepted = Accepted(lean)
    token = _ACCEPTED.set(accepted)
    try:
        yield accepted
    finally:
        _ACCEPTED.reset(token)


# One encoder for every body: json.dumps with options builds a new one at each call.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@functools.lru_cache(maxsize=64)
def _encoded(text: str) -> str:
    """`text` as a JSON string (a post's text or caption, sent to many chats)."""
    return _dumps(text)


class JsonBody(RequestData):  # type: ignore[misc]  # final in PTB's types only
    """A request's parameters already encoded as its JSON body (the sender's posts).

    PTB's way turns each parameter into a RequestParameter and the lot back into a dict for
    the body; a post's parameters are plain JSON values, so the body is made in one step.
    """

    def __init__(self, parameters: dict[str, Any]) -> None:
        super().__init__()
        self._values = values = {k: v for k, v in parameters.items() if v is not None}
        # A fan-out sends the same text to every chat of a language: long strings are encoded
        # once (_encoded) and joined to the rest of the body, which is a few small values.
        short = {k: v for k, v in values.items() if not (isinstance(v, str) and len(v) > 200)}
        body = _dumps(short)
        if len(short) < len(values):  # the keys are the Bot API's parameter names
            long = ",".join(f'"{k}":{_encoded(v)}' for k, v in values.items() if k not in short)
            body = f"{body[:-1]}{',' if short else ''}{long}}}"
        self.body = body.encode()

    # Any other request layer (PTB's httpx one) reads the parameters the usual way.
    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def json_parameters(self) -> dict[str, str]:
        return {
            k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in self._values.items()
        }


class BotApiRequest(BaseRequest):
    """PTB's network layer on aiohttp, for the requests that send.

    Two reasons over PTB's httpx default: it costs about a third of the CPU per request (the
    difference between keeping up with a 300/s fan-out on one core or not), and its request class
    says when a request's bytes are written, which is when a send is stamped in the windows.
    """

    def __init__(
        self,
        *,
        connection_pool_size: int = 64,
        read_timeout: float = 5.0,
        write_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        pool_timeout: float = 1.0,
        media_write_timeout: float = 20.0,
        on_answer: ApiAnswerHook | None = None,
    ) -> None:
        self.on_answer = on_answer
        self._pool_size = connection_pool_size
        self._read = read_timeout
        self._write = write_timeout
        self._connect = connect_timeout
        self._pool = pool_timeout
        self._media_write = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        # The posts' JSON calls (JsonBody) go through this lean client when no proxy applies.
        self._lean: KeepAliveClient | None = None
        self._proxies: dict[str, str] = {}
        self._proxy_for_host: dict[tuple[str, str], str | None] = {}
        self._proxy_for_url: dict[str, str | None] = {}
        self._timeouts: dict[_Timeouts, aiohttp.ClientTimeout] = {}

    @property
    def read_timeout(self) -> float:
        return self._read

    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        # PTB declares it static; called on the instance, it tells a watcher (watch_accepted)
        # that Telegram accepted the request, before anything reads the answer's body.
        accepted = _ACCEPTED.get()
        if accepted is not None and accepted.lean:
            # A post's answer is the whole Message; the sender reads its id alone, which the
            # Bot API writes first. Anything else (an error, another layout) is parsed whole.
            lean = _LEAN_ANSWER.match(payload)
            if lean is not None:
                accepted.ok, accepted.result = True, {"message_id": int(lean[1])}
                return {"ok": True, "result": accepted.result}
        data: dict[str, Any] = BaseRequest.parse_json_payload(payload)
        if accepted is not None and isinstance(data, dict) and data.get("ok") is True:
            accepted.ok = True
            accepted.result = data.get("result")
        return data

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300),
                request_class=_StampedRequest,
                headers={"User-Agent": self.USER_AGENT},
            )
            # HTTPS_PROXY / NO_PROXY are honoured as by PTB's httpx client, but read once
            # (aiohttp's trust_env would read them, and ~/.netrc, on every request).
            self._proxies = urllib.request.getproxies()
            self._proxy_for_host.clear()
            self._proxy_for_url.clear()
        if self._lean is None:
            self._lean = KeepAliveClient(limit=self._pool_size, user_agent=self.USER_AGENT)

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._lean is not None:
            await self._lean.close()
            self._lean = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._lean is None:
            raise RuntimeError("BotApiRequest is not initialized")
        files = request_data is not None and request_data.contains_files
        read = _given(read_timeout, self._read)
        write = _given(write_timeout, self._media_write if files else self._write)
        connect = _given(connect_timeout, self._connect)
        pool = _given(pool_timeout, self._pool)
        if isinstance(request_data, JsonBody) and self._proxy(url) is None:
            return await self._post_lean(url, request_data.body, read, write, connect, pool)
        data: aiohttp.FormData | bytes | None = None
        headers: dict[str, str] = {}
        if isinstance(request_data, JsonBody):
            data = request_data.body
            headers["Content-Type"] = "application/json"
        elif request_data is not None and files:
            data = aiohttp.FormData(request_data.json_parameters)
            for name, (filename, content, mime) in request_data.multipart_data.items():
                data.add_field(name, content, filename=filename, content_type=mime)
        elif request_data is not None:
            # A JSON body, as the Bot API documents it: far cheaper to build than a form.
            data = json.dumps(request_data.parameters, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        timeout = self._timeouts.get((read, write, connect, pool))
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=_total(read, write, connect, pool),
                connect=None if connect is None or pool is None else connect + pool,
                sock_connect=connect,
                sock_read=read,
            )
            if len(self._timeouts) < 64:  # a handful of combinations in practice
                self._timeouts[(read, write, connect, pool)] = timeout
        departure = _Departure()
        token = _CURRENT_DEPARTURE.set(departure)
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, timeout=timeout, proxy=self._proxy(url)
            ) as answer:
                status, body = answer.status, await answer.read()
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
        finally:
            _CURRENT_DEPARTURE.reset(token)
        if self.on_answer is not None:
            # The URL ends in the method; the token is in the segment before it.
            self.on_answer(url.rsplit("/", 1)[-1], status, time.monotonic() - departure.at)
        return status, body

    async def _post_lean(
        self,
        url: str,
        body: bytes,
        read: float | None,
        write: float | None,
        connect: float | None,
        pool: float | None,
    ) -> tuple[int, bytes]:
        """A post through the keep-alive client (bot.delivery.keepalive): same timeouts, same
        errors for PTB, and the stamp moved to the moment the request is written."""
        assert self._lean is not None
        departure = _Departure()
        stamp = _CURRENT_STAMP.get()

        def written() -> None:
            if stamp is not None:
                stamp.restamp()
            departure.at = time.monotonic()

        try:
            status, answer = await self._lean.post_json(
                url, body, connect_timeout=connect, pool_timeout=pool,
                total_timeout=_total(read, write, connect, pool), on_write=written,
            )  # fmt: skip
        except TimeoutError as exc:
            raise TimedOut from exc
        except (OSError, HttpError) as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc
        if self.on_answer is not None:
            self.on_answer(url.rsplit("/", 1)[-1], status, time.monotonic() - departure.at)
        if 300 <= status < 400:
            # Never followed: the Bot API does not redirect, and the location would carry the
            # token into error texts. Something between the bot and Telegram is misconfigured.
            raise NetworkError(f"HTTP {status}: a redirect, which the Bot API never answers "
                               "(a proxy or gateway in the way?)")  # fmt: skip
        return status, answer

    def _proxy(self, url: str) -> str | None:
        # A bot calls a few dozen URLs (its base URL and the methods): remembered whole.
        if url in self._proxy_for_url:
            return self._proxy_for_url[url]
        proxy = self._proxy_by_host(url)
        if len(self._proxy_for_url) < 256:
            self._proxy_for_url[url] = proxy
        return proxy

    def _proxy_by_host(self, url: str) -> str | None:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxy_for_host:
            proxy = self._proxies.get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(key[1]):
                proxy = None
            self._proxy_for_host[key] = proxy
        return self._proxy_for_host[key]


def _given(value: ODVInput[float], default: float) -> float | None:
    return default if isinstance(value, DefaultValue) else value


def _total(*parts: float | None) -> float | None:
    """An overall deadline, so that a server dripping bytes cannot hold a send forever."""
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


class _StampedRequest(aiohttp.ClientRequest):
    """aiohttp's request, noting the moment its bytes are written: the send's stamp moves
    there (Stamp.restamp) and its round trip is timed from there. aiohttp writes the headers
    and the body together in write_bytes (a task of its own: it can run later than the
    request was made, behind a busy moment of the event loop)."""

    async def write_bytes(
        self,
        writer: AbstractStreamWriter,
        conn: Connection,
        content_length: int | None = None,
    ) -> None:
        stamp = _CURRENT_STAMP.get()
        if stamp is not None:
            stamp.restamp()
        departure = _CURRENT_DEPARTURE.get()
        if departure is not None:
            departure.at = time.monotonic()
        await super().write_bytes(writer, conn, content_length)


class TelegramRateLimiter(BaseRateLimiter[dict[str, Any]]):
    """PTB's rate-limiter hook: every message-sending request waits for RateLimits first.

    A 429 that still comes holds that chat (or everyone) for retry_after. Requests made with
    rate_limit_args={"retry": False} (the publisher's) get the RetryAfter back to handle,
    others are retried once after waiting. rate_limit_args={"on_stamp": callable} is called
    once the request has its place in the windows and is about to be sent.
    rate_limit_args={"may_pay": True} lets the limiter send it as a paid broadcast when the
    free rate has no room (RateLimits.acquire); it then sets "paid" in that same dict.
    """

    def __init__(self, limits: RateLimits, max_retries: int = 1) -> None:
        self.limits = limits
        self.max_retries = max_retries

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: dict[str, Any] | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if not counts_as_send(endpoint):
            return await callback(*args, **kwargs)
        chat = data.get("chat_id")
        options = rate_limit_args or {}
        may_pay = options.get("may_pay") is True
        paid = not may_pay and bool(data.get("allow_paid_broadcast"))
        retries = 0 if options.get("retry") is False else self.max_retries
        on_stamp = options.get("on_stamp")
        while True:
            stamp = await self.limits.acquire(chat, paid=paid, may_pay=may_pay)
            if may_pay:
                # `data` is the request's own parameters (PTB passes the same dict on), so
                # the flag set here is the one that leaves: only sends beyond the free rate.
                if stamp.paid:
                    data["allow_paid_broadcast"] = True
                else:
                    data.pop("allow_paid_broadcast", None)
                options["paid"] = stamp.paid  # the caller's own dict: how its send went
            if on_stamp is not None:
                on_stamp()
            token = _CURRENT_STAMP.set(stamp)
            try:
                answer = await callback(*args, **kwargs)
                self.limits.note_round_trip(self.limits.clock.monotonic() - stamp.at)
                return answer
            except TelegramError as exc:
                if stamp.paid and self.limits.budget is not None:
                    self.limits.budget.refund()  # not delivered: not charged
                if not isinstance(exc, RetryAfter):
                    raise
                wait = retry_after_seconds(exc)
                self.limits.note_429(chat, wait)
                if retries <= 0:
                    raise
                retries -= 1
                log.warning("429 on %s for chat %s: waiting %.1f s", endpoint, chat, wait)
            finally:
                _CURRENT_STAMP.reset(token)


def retry_after_seconds(exc: RetryAfter) -> float:
    """Return the wait Telegram asked for, in seconds."""
    with warnings.catch_warnings():
        # PTB warns that retry_after will become a timedelta; both forms are handled.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = exc.retry_after
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)
