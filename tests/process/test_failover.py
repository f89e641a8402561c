"""Beyond one machine, for real: `python -m bot` processes sharing one PostgreSQL database.

Two instances (INSTANCES=2, long polling against the fake Bot API, LEADER_TIMEOUT=5 s) and a
piece fanned out to 300 chats, paced by the rate limits over about 6 s. The fake has one door
(port) per process, so each call it records says which process made it, and it takes LATENCY
to answer a send, so sends are always in flight.

- The leader is killed (SIGKILL) while the fake is answering its 100th send: the standby takes
  the lease within LEADER_TIMEOUT plus its own retry period, and finishes; every chat has the
  piece, and only the sends in flight at the kill (accepted by Telegram, not recorded in the
  store) arrive twice.
- The leader is frozen (SIGSTOP) instead, once between two transactions and once inside one
  (its connection idle in a transaction, holding row locks): the standby takes over and sends
  on; woken (SIGCONT), the old leader sends nothing more and exits with status 1.
- One leader alone is frozen for longer than LEADER_TIMEOUT: nobody took its lease, so woken
  it renews it and finishes the fan-out, sending each chat the piece once.
- PostgreSQL restarts under a running bot while sends are in flight: the bot holds the
  outcomes, turns not ready, connects again and loses nothing; every chat gets the piece once.

Never a 409 Conflict from getUpdates: only the lease holder polls, briefly enough that a dead
leader's last poll ends before a standby may ask. Real processes and real time: only upper
bounds on time are asserted. What each test measured is printed (pytest -s shows it).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from storage import lease
from storage.backends import store_errors
from storage.models import ChatType
from storage.store import Store
from tests.fakes.botapi import MESSAGE_METHODS, ApiCall, FakeBotApi
from tests.fakes.feedserver import FeedServer, numbered_feed
from tests.pg import PgCluster, free_port
from tests.support import TOKEN, BotProcess, bot_env

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_767_225_600.0
CHATS = [61_000_000 + i for i in range(1, 301)]
LEADER_TIMEOUT = 5.0
# The lease expires LEADER_TIMEOUT after the leader's last renewal, and a standby asks for it
# every LEADER_TIMEOUT/3; the rest is room for a loaded machine.
TAKEOVER_BOUND = LEADER_TIMEOUT + LEADER_TIMEOUT / 3 + 1.5
SEND_CONCURRENCY = 16
# How long Telegram takes to answer a send: some are always in flight.
LATENCY = 0.05
# The leader's send during which it is struck: about a third of the fan-out.
STRIKE_AT = 100
# Telegram's limits x2, on the bots and the fake alike: with two instances the leader's 80 %
# share is 48 sends a second, so the fan-out takes about 6 s.
RATES = {
    "RATE_GLOBAL_PER_SECOND": "60",
    "RATE_GROUP_PER_MINUTE": "40",
    "RATE_PRIVATE_PER_SECOND": "2",
}


# -- the fake Bot API with one door per process ---------------------------------------------

# The port the request being handled came in by.
_DOOR: contextvars.ContextVar[int] = contextvars.ContextVar("door", default=0)


class _DoorLog(list[ApiCall]):
    """FakeBotApi.calls, noting for each call the port it came in by."""

    def __init__(self) -> None:
        super().__init__()
        self.port: dict[int, int] = {}

    def append(self, call: ApiCall) -> None:
        self.port[id(call)] = _DOOR.get()
        super().append(call)


class DoorsApi(FakeBotApi):
    """The fake Bot API, one state behind several ports: each bot process gets its own
    `url_for(door)`, and `door_of(call)` says which one made a call. Answers to sends take
    LATENCY; `unanswered(door)` counts that door's sends accepted but not answered yet."""

    def __init__(self, doors: int) -> None:
        super().__init__(TOKEN, global_per_second=60, group_per_minute=40, private_per_second=2)
        self.doors = doors
        self.ports: list[int] = []
        self.calls = _DoorLog()
        self._answering: dict[int, int] = {}  # id(call) -> door
        self.before_success = self._latency
        # Called with each accepted send before it is answered (a test strikes from here).
        self.on_send: Callable[[ApiCall, int], None] | None = None

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert runner is not None
        for _ in range(self.doors - 1):
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.ports = [address[1] for address in runner.addresses]
        assert len(set(self.ports)) == self.doors

    def url_for(self, door: int) -> str:
        return f"http://127.0.0.1:{self.ports[door]}"

    def door_of(self, call: ApiCall) -> int:
        assert isinstance(self.calls, _DoorLog)
        return self.ports.index(self.calls.port[id(call)])

    async def _handle(self, request: web.Request) -> web.Response:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        _DOOR.set(int(sockname[1]) if sockname else 0)
        return await super()._handle(request)

    async def _latency(self, call: ApiCall) -> None:
        if call.method not in MESSAGE_METHODS:
            return
        door = self.door_of(call)
        self._answering[id(call)] = door
        try:
            if self.on_send is not None:
                self.on_send(call, door)
            await asyncio.sleep(LATENCY)
        finally:
            del self._answering[id(call)]

    def unanswered(self, door: int) -> int:
        return sum(1 for d in self._answering.values() if d == door)

    def sends(self, door: int | None = None, *, after: float = -1.0) -> list[ApiCall]:
        """Accepted sends (through `door`) that arrived after `after` (monotonic)."""
        return [
            c for c in self.sent() if c.at > after and (door is None or self.door_of(c) == door)
        ]

    def received(self) -> Counter[int]:
        """How many times each chat got the piece."""
        return Counter(c.chat_id for c in self.sent())

    def conflicts(self) -> list[str]:
        return [str(c) for c in self.calls_to("getUpdates") if c.status == 409]


def feed(*numbers: int) -> str:
    return numbered_feed(*numbers, slug="failover", guid="failover")


# -- bot processes ----------------------------------------------------------------------------


@dataclass
class Instance:
    """One bot process: its door in the fake, its name in pg_stat_activity, its /readyz."""

    door: int
    bot: BotProcess
    health_port: int
    readiness: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)

    @property
    def app_name(self) -> str:
        return f"bot{self.door}"

    async def readyz(self, session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]] | None:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as answer:
                return answer.status, await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def watch(self, stop: asyncio.Event) -> None:
        """Record /readyz every 50 ms: (monotonic time, status, body)."""
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                seen = await self.readyz(session)
                if seen is not None:
                    self.readiness.append((time.monotonic(), *seen))
                await asyncio.sleep(0.05)

    def leader_since(self, after: float) -> float | None:
        """When /readyz first said "leader" after `after`."""
        return next(
            (t for t, _, body in self.readiness if t > after and body["role"] == "leader"), None
        )


def _instance(
    api: DoorsApi, door: int, feed_server: FeedServer, pg_url: str, tmp_path: Path, **extra: str
) -> Instance:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env |= bot_env(
        api.url_for(door), {"en": feed_server.url("/en/rss")}, tmp_path / "unused.sqlite3",
        # application_name: pg_stat_activity tells the processes' connections apart.
        DATABASE_URL=f"{pg_url}?application_name=bot{door}", LOG_LEVEL="INFO",
        LEADER_TIMEOUT=f"{LEADER_TIMEOUT:g}", SEND_CONCURRENCY=str(SEND_CONCURRENCY),
        SHUTDOWN_TIMEOUT="3", HEALTH_PORT=str(port), **RATES,
    )  # fmt: skip
    env |= extra
    env["PYTHONPATH"] = str(ROOT)
    return Instance(door, BotProcess(env, tmp_path / f"bot{door}.log"), port)


async def _subscribe_all(store: Store) -> None:
    for chat_id in CHATS:
        await store.upsert_chat(
            chat_id, ChatType.PRIVATE, title=None, username=None, default_lang="en", now=NOW,
            subscribed=True,
        )  # fmt: skip


async def _sent_rows(store: Store) -> int:
    row = await store.fetchone("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
    assert row is not None
    return int(row[0])


async def _connection(store: Store, instance: Instance) -> tuple[str, bool] | None:
    """How PostgreSQL sees `instance`'s connection: its state ('idle', 'idle in transaction'...)
    and whether its open transaction has written to deliveries (so holds rows' locks)."""
    row = await store.fetchone(
        "SELECT a.state, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid "
        "AND l.relation = 'deliveries'::regclass AND l.mode = 'RowExclusiveLock') "
        "FROM pg_stat_activity a WHERE a.application_name = ?",
        (instance.app_name,),
    )
    return None if row is None else (str(row[0]), bool(row[1]))


async def _until(
    what: str,
    predicate: Callable[[], Any],
    bots: list[BotProcess],
    timeout: float,
    *,
    alive: list[BotProcess] | None = None,
) -> None:
    """Wait for `predicate()` (a bool, or a coroutine of one); fail with the bots' logs after
    `timeout` s, or at once when a bot of `alive` (default: all of them) exits."""
    deadline = time.monotonic() + timeout
    watched = bots if alive is None else alive
    while True:
        outcome = predicate()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        exited = [b for b in watched if b.proc is not None and b.proc.poll() is not None]
        if exited or time.monotonic() > deadline:
            logs = "\n".join(f"--- bot {b.pid} ---\n{b.log(60)}" for b in bots)
            why = f"bot {exited[0].pid} exited" if exited else f"not within {timeout} s"
            raise AssertionError(f"{what}: {why}\n{logs}")
        await asyncio.sleep(0.02)


def _recorded_all(store: Store) -> Callable[[], Any]:
    async def check() -> bool:
        try:
            return await _sent_rows(store) == len(CHATS)
        except store_errors():  # the test's own connection, through a restart: asked again
            return False

    return check


def _cleanup(*instances: Instance) -> None:
    for instance in instances:
        bot = instance.bot
        if bot.proc is not None and bot.proc.poll() is None:
            bot.signal(signal.SIGCONT)  # a frozen process would not die of SIGTERM
        bot.kill_if_running()


@pytest.fixture
async def api() -> AsyncIterator[DoorsApi]:
    async with DoorsApi(doors=2) as server:
        yield server


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    """The test's own connection to the bots' database (created and migrated here)."""
    opened = await Store.open(pg_url)
    try:
        yield opened
    finally:
        await opened.close()


# -- failover ---------------------------------------------------------------------------------


@dataclass
class Pair:
    leader: Instance
    standby: Instance

    @property
    def bots(self) -> list[BotProcess]:
        return [self.leader.bot, self.standby.bot]


@dataclass
class Strike:
    """What a test measured when it struck the leader."""

    at: float = 0.0  # monotonic
    unanswered: int = 0  # the leader's sends accepted by the fake, not answered yet
    recorded: int = 0  # sends the store had recorded (all of them the old leader's)

    def in_flight(self, api: DoorsApi, leader: Instance) -> int:
        """The old leader's sends Telegram accepted that the store did not record."""
        return len(api.sends(leader.door)) - self.recorded


@asynccontextmanager
async def _pair(
    api: DoorsApi, feed_server: FeedServer, store: Store, pg_url: str, tmp_path: Path
) -> AsyncIterator[Pair]:
    """Two instances on one database, both up, their /readyz watched; yields once the leader
    has polled the feed (its first piece is backlog, not news) and each names its role."""
    await _subscribe_all(store)
    feed_server.set("/en/rss", feed(1))
    instances = [_instance(api, d, feed_server, pg_url, tmp_path, INSTANCES="2") for d in (0, 1)]
    bots = [i.bot for i in instances]
    watching = asyncio.Event()
    watchers = [asyncio.create_task(i.watch(watching)) for i in instances]
    try:
        for bot in bots:
            bot.start()

        async def elected() -> bool:
            return await lease.current(store) is not None

        await _until("a leader elected", elected, bots, 30)
        current = await lease.current(store)
        assert current is not None
        pid = int(current[0].split(":")[-2])  # the holder is host:pid:random
        (leader,) = [i for i in instances if i.bot.pid == pid]
        (standby,) = [i for i in instances if i is not leader]
        await _until("first polls", lambda: len(feed_server.requests_to("/en/rss")) >= 2, bots, 30)

        def roles() -> list[str | None]:
            return [i.readiness[-1][2]["role"] if i.readiness else None for i in (leader, standby)]

        await _until("both up, one of them leader", lambda: roles() == ["leader", "standby"],
                     bots, 30)  # fmt: skip
        yield Pair(leader, standby)
    finally:
        watching.set()
        await asyncio.gather(*watchers)
        _cleanup(*instances)


def _report(name: str, api: DoorsApi, pair: Pair, strike: Strike, **more: Any) -> None:
    old, new = pair.leader, pair.standby
    since = new.leader_since(strike.at)
    took = "never" if since is None else f"{since - strike.at:.2f} s"
    extra = "".join(f"; {key} {value}" for key, value in more.items())
    print(
        f"\n{name}: takeover {took} after the strike (LEADER_TIMEOUT {LEADER_TIMEOUT:g} s); "
        f"old leader: {len(api.sends(old.door))} sends accepted, {strike.recorded} recorded, "
        f"{strike.unanswered} unanswered by the fake at the strike, so in flight "
        f"{strike.in_flight(api, old)}; duplicates {sum(n - 1 for n in api.received().values())}; "
        f"new leader: {len(api.sends(new.door))} sends{extra}"
    )


def _assert_failover(api: DoorsApi, pair: Pair, strike: Strike) -> None:
    """What every failover owes: in time, every chat served, few repeats, no 409."""
    old, new = pair.leader, pair.standby
    since = new.leader_since(strike.at)
    assert since is not None
    assert since - strike.at <= TAKEOVER_BOUND, new.bot.log()
    assert strike.unanswered >= 1  # struck while the fake was answering the leader's sends
    in_flight = strike.in_flight(api, old)
    assert 1 <= in_flight <= SEND_CONCURRENCY, in_flight  # struck while sends were in flight
    received = api.received()
    assert set(received) == set(CHATS)
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= in_flight, f"{duplicates} chats got the piece twice, {in_flight} in flight"
    # Every send after the strike (bar the ones already on their way) came from the new leader.
    assert len(api.sends(old.door, after=strike.at + 1.0)) <= in_flight
    assert not api.conflicts(), api.conflicts()


async def test_the_standby_finishes_a_fan_out_when_the_leader_is_killed(
    api: DoorsApi, feed_server: FeedServer, store: Store, pg_url: str, tmp_path: Path
) -> None:
    async with _pair(api, feed_server, store, pg_url, tmp_path) as pair:
        old, new = pair.leader, pair.standby
        strike = Strike()

        def kill_mid_send(call: ApiCall, door: int) -> None:
            # While the fake answers the leader's STRIKE_AT-th send (so it is in flight).
            if door == old.door and not strike.at and len(api.sends(door)) >= STRIKE_AT:
                os.kill(old.bot.pid, signal.SIGKILL)
                strike.at = time.monotonic()
                strike.unanswered = api.unanswered(door)

        api.on_send = kill_mid_send
        feed_server.set("/en/rss", feed(1, 2))  # piece 2 is new: 300 deliveries
        await _until("the leader killed mid fan-out", lambda: strike.at > 0, pair.bots, 30)
        assert await old.bot.exit_code(10) == -signal.SIGKILL
        strike.recorded = await _sent_rows(store)  # the dead write nothing more
        assert not api.sends(new.door), "the standby sent before it was elected"
        await _until("the standby elected", lambda: new.leader_since(strike.at), [new.bot], 30)
        await _until("every chat served", lambda: set(api.received()) >= set(CHATS),
                     [new.bot], 40)  # fmt: skip
        await _until("every send recorded", _recorded_all(store), [new.bot], 10)
        new.bot.signal(signal.SIGTERM)
        assert await new.bot.exit_code(20) == 0, new.bot.log()

    _report("kill -9", api, pair, strike)
    _assert_failover(api, pair, strike)
    assert "elected leader (epoch 2)" in new.bot.log_path.read_text()


async def _freeze(api: DoorsApi, store: Store, leader: Instance, *, inside: bool) -> Strike:
    """SIGSTOP the leader while sends are in flight and its connection is either between two
    transactions, or (`inside`) inside one that has written to deliveries and so holds the
    locks of rows the new leader will write too. Tried again until such a moment is caught."""
    wanted = ("idle in transaction", True) if inside else ("idle", False)
    seen: Counter[tuple[str, bool] | None] = Counter()
    deadline = time.monotonic() + 20
    while len(api.sends(leader.door)) < 2 * STRIKE_AT and time.monotonic() < deadline:
        # Such a transaction lasts about a millisecond: watch for it, then strike at once.
        if inside and await _connection(store, leader) != wanted:
            continue
        leader.bot.signal(signal.SIGSTOP)
        strike = Strike(at=time.monotonic(), unanswered=api.unanswered(leader.door))
        await asyncio.sleep(0.03)  # for what it had written to reach the server
        state = await _connection(store, leader)
        seen[state] += 1
        if strike.unanswered and state == wanted:
            strike.recorded = await _sent_rows(store)
            return strike
        leader.bot.signal(signal.SIGCONT)
        await asyncio.sleep(0 if inside else random.uniform(0.005, 0.03))
    raise AssertionError(f"never froze the leader {wanted} with sends in flight: {seen}")


@pytest.mark.parametrize("inside", [False, True], ids=["between", "inside_a_transaction"])
async def test_a_frozen_leader_woken_after_the_takeover_sends_nothing_and_exits_1(
    inside: bool, api: DoorsApi, feed_server: FeedServer, store: Store, pg_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    async with _pair(api, feed_server, store, pg_url, tmp_path) as pair:
        old, new = pair.leader, pair.standby
        feed_server.set("/en/rss", feed(1, 2))
        await _until("fan-out under way", lambda: len(api.sends(old.door)) >= STRIKE_AT,
                     pair.bots, 30)  # fmt: skip
        strike = await _freeze(api, store, old, inside=inside)
        assert not api.sends(new.door), "the standby sent before it was elected"
        await _until("the standby elected", lambda: new.leader_since(strike.at), [new.bot], 30)
        # A frozen transaction's row locks must not hold the new leader's writes for long.
        await _until("the new leader sends on", lambda: len(api.sends(new.door)) >= 40,
                     [new.bot], 20)  # fmt: skip
        woken = time.monotonic()
        old.bot.signal(signal.SIGCONT)
        exited = await old.bot.exit_code(10)
        exit_took = time.monotonic() - woken
        await _until("every chat served", lambda: set(api.received()) >= set(CHATS),
                     [new.bot], 40)  # fmt: skip
        await _until("every send recorded", _recorded_all(store), [new.bot], 10)
        new.bot.signal(signal.SIGTERM)
        assert await new.bot.exit_code(20) == 0, new.bot.log()

    late = api.sends(old.door, after=woken)
    polls = api.calls_to("getUpdates")
    late_polls = [c for c in polls if c.at > woken and api.door_of(c) == old.door]
    _report(
        f"SIGSTOP {'inside a transaction' if inside else 'between transactions'}",
        api, pair, strike, **{"old leader's sends after SIGCONT": len(late),
                              "its exit after SIGCONT": f"{exit_took:.2f} s"},
    )  # fmt: skip
    assert exited == 1, old.bot.log()
    assert exit_took < 8.0, old.bot.log()
    assert "lost the leader lease" in old.bot.log_path.read_text()
    _assert_failover(api, pair, strike)
    # Woken, the old leader starts no send (one already on its way may still land) and no poll.
    assert len(late) <= strike.in_flight(api, old), [str(c) for c in late]
    assert not late_polls, [str(c) for c in late_polls]


# -- one instance --------------------------------------------------------------------------


async def _start_fan_out(bot: BotProcess, api: DoorsApi, feed_server: FeedServer) -> None:
    """Start one bot, let it poll the feed twice, then publish piece 2 and wait until its
    fan-out to the subscribers is under way."""
    bot.start()
    await _until("first polls", lambda: len(feed_server.requests_to("/en/rss")) >= 2, [bot], 30)
    feed_server.set("/en/rss", feed(1, 2))
    await _until("fan-out under way", lambda: len(api.sent()) >= STRIKE_AT, [bot], 30)


async def test_a_leader_alone_frozen_past_its_lease_resumes_and_sends_each_piece_once(
    api: DoorsApi, feed_server: FeedServer, store: Store, pg_url: str, tmp_path: Path
) -> None:
    """Nobody took the lease while it was frozen (its trust ran out, and the lease expired):
    woken, it renews the lease and goes on publishing, rather than holding the lease with a
    publisher that has stopped for good."""
    await _subscribe_all(store)
    feed_server.set("/en/rss", feed(1))
    instance = _instance(api, 0, feed_server, pg_url, tmp_path, INSTANCES="1")
    bot = instance.bot
    try:
        await _start_fan_out(bot, api, feed_server)
        bot.signal(signal.SIGSTOP)
        frozen = len(api.sent())
        await asyncio.sleep(1.3 * LEADER_TIMEOUT)
        woken = time.monotonic()
        bot.signal(signal.SIGCONT)
        await _until("every chat served after the pause",
                     lambda: set(api.received()) >= set(CHATS), [bot], 30)  # fmt: skip
        finished = time.monotonic() - woken
        await _until("every send recorded", _recorded_all(store), [bot], 10)
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(20) == 0, bot.log()
    finally:
        _cleanup(instance)

    print(
        f"\nalone, frozen {1.3 * LEADER_TIMEOUT:g} s with {frozen} of {len(CHATS)} sent: "
        f"the rest sent {finished:.2f} s after SIGCONT"
    )
    received = api.received()
    assert set(received) == set(CHATS)
    assert max(received.values()) == 1, sorted(c for c, n in received.items() if n > 1)
    assert finished < 15.0, bot.log()
    log = bot.log_path.read_text()
    assert "lost the leader lease" not in log
    assert "publisher halted" not in log, bot.log()
    assert not api.conflicts(), api.conflicts()


async def test_postgresql_restarted_under_a_running_bot_loses_nothing_and_repeats_nothing(
    api: DoorsApi, feed_server: FeedServer, store: Store, pg_url: str, pg_cluster: PgCluster,
    tmp_path: Path,
) -> None:  # fmt: skip
    await _subscribe_all(store)
    feed_server.set("/en/rss", feed(1))
    # The default LEADER_TIMEOUT: the outage is shorter than the leader's trust in its lease.
    instance = _instance(api, 0, feed_server, pg_url, tmp_path, LEADER_TIMEOUT="15")
    bot = instance.bot
    watching = asyncio.Event()
    watcher = asyncio.create_task(instance.watch(watching))
    try:
        await _start_fan_out(bot, api, feed_server)
        down_at = time.monotonic()
        await pg_cluster.arestart(down_for=2)
        up_at = time.monotonic()
        at_restart = len(api.sent())
        await _until("every chat served", lambda: set(api.received()) >= set(CHATS), [bot], 60)
        await _until("every send recorded", _recorded_all(store), [bot], 20)
        await _until("ready again", lambda: instance.readiness[-1][1] == 200, [bot], 20)
        bot.signal(signal.SIGTERM)
        assert await bot.exit_code(20) == 0, bot.log()
    finally:
        watching.set()
        await watcher
        _cleanup(instance)

    log = bot.log_path.read_text()
    received = api.received()
    red = [
        body["failing"] for t, status, body in instance.readiness if t >= down_at and status != 200
    ]
    print(
        f"\nPostgreSQL restart: down {up_at - down_at:.2f} s, {at_restart} of {len(CHATS)} sent "
        f"when it was back; /readyz red {len(red)} times, failing "
        f"{sorted({name for failing in red for name in failing})}"
    )
    assert set(received) == set(CHATS)
    twice = sorted(chat for chat, n in received.items() if n > 1)
    assert not twice, f"sent twice to {twice}\n{bot.log()}"
    assert at_restart < len(CHATS)  # the restart came with deliveries pending
    assert "the store cannot be written" in log, bot.log(80)
    assert "connected to PostgreSQL again" in log, bot.log(80)
    assert "the store takes writes again" in log, bot.log(80)
    # Readiness went red naming the store, and is green again.
    assert any("store" in failing for failing in red), instance.readiness[-3:]
    assert instance.readiness[-1][1] == 200
    assert not api.conflicts(), api.conflicts()
