"""Benchmark 6: exact under stalls: no 429 from Telegram's windows on a loaded or stalling bot.

One piece fanned out at Telegram's real limits while the machine is quiet, while a CPU hog keeps
every core busy, and while the bot is frozen at random.

The real bot (`python -m bot`, its own process) sends one new piece to N chats through the fake
Bot API, which runs in a process of its own (bench/api_process.py) scheduled ahead of everything
else (SCHED_RR where allowed, else nice -10), with its garbage collector off and a monitor of its
own loop's delay. It stamps each request when its loop reads it and answers 429 when a window
(overall, per group, per private chat) is full: every such 429 is a violation. The server's loop
delay over the fan-out is reported beside them: a violation while that delay was small is the
bot's.

Conditions (`--conditions`):
- quiet: nothing else runs (other than whatever the machine is doing anyway);
- hog: one spinning process per CPU (`python -c "while True: pass"`), at the bot's own priority,
  from before the piece appears until the last send;
- stalls: the bot's whole process is frozen (SIGSTOP) for 50-200 ms every 0.5-2 s, at random
  (`--stall-ms`, `--stall-every`, `--seed`), by a separate process at real-time priority, and
  let go (SIGCONT): a superset of an event-loop stall, since every thread stops.

Modes: `--mode free` (the default: 3,000 chats at 30/s, as a bot sends without paying) and
`--mode paid` (PAID_BROADCAST=true, PAID_BROADCAST_RATE=1000: 20,000 chats at 1,000/s; the server
counts sends made with allow_paid_broadcast against its 1,000/s window).

Per run: sends, the achieved rate over the fan-out (first to last send, as the server stamped
them) over the limit, the most accepted sends in any 1 s, the most requests (accepted or
refused) in any 1 s, 429s from the windows, the server's loop delay (p50, p99, max) over the
fan-out, the bot's CPU seconds. Each 429 is listed with what surrounded it: which window it
must have been (the chat's own, the free or the overall one), the server's worst loop delay in
the second before it, and how long before it the bot was last let go from a stall. A 429 with
no server loop delay over BOT_MARGIN (RATE_MARGIN's default, 30 ms) in the second before it is
counted as the bot's: the server's windows are that much shorter than the bot's, so a smaller
delay of its stamps cannot make it see an overrun.

`--stall-target server` freezes the test server instead of the bot: a check of the benchmark,
whose 429s must all come with the server's loop delay beside them.

Run: `python -m bench.stall_bench` (free mode, 3 runs of each condition, about 20 minutes);
`--mode paid`; `--chats 300 --runs 1` for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api_process import ApiProcess, raise_priority
from bench.common import (
    FEED_PATH,
    ROOT,
    Scale,
    bot_env,
    chat_ids,
    check_exit,
    cpu_seconds,
    feed,
    markdown_table,
    median,
    print_setup,
    rss_kib,
    seed_chats,
    wait_until,
)
from tests.fakes.feedserver import FeedServer
from tests.support import BotProcess, max_in_window

CONDITIONS = ("quiet", "hog", "stalls")
TELEGRAM = Scale(1)  # Telegram's own limits
PAID_RATE = 1000
# The bot's windows are this much longer than Telegram's (RATE_MARGIN's default): a server loop
# delay up to this cannot make the server see a window overrun, a longer one can.
BOT_MARGIN = 0.03


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    chats: int  # the default number of chats
    env: dict[str, str]


MODES = {
    "free": Mode("free", 3_000, {}),
    "paid": Mode("paid", 20_000, {"PAID_BROADCAST": "true", "PAID_BROADCAST_RATE": str(PAID_RATE)}),
}


@dataclass(frozen=True, slots=True)
class Overrun:
    """One 429 from the server's windows, and what surrounded it."""

    after_s: float  # from the first send
    chat: int
    window: str  # which window refused it: the chat's, the free or the overall one
    accepted_in_1s: int  # accepted sends in the second before it, as the server stamped them
    server_loop_max_ms: float  # the server's worst loop delay in the second before it
    since_stall_s: float | None  # since the bot was last let go from a stall (None: no stall)

    def __str__(self) -> str:
        stall = "" if self.since_stall_s is None else f", {self.since_stall_s:.3f} s after a stall"
        return (
            f"429 at +{self.after_s:.3f} s, chat {self.chat} ({self.window} window, "
            f"{self.accepted_in_1s} accepted in the second before), server loop delay up to "
            f"{self.server_loop_max_ms:.1f} ms in that second{stall}"
        )


@dataclass(frozen=True, slots=True)
class Fanout:
    """One fan-out's figures, from the server's arrival stamps."""

    engine: str
    condition: str
    chats: int
    limit: int
    sent: int
    paid: int  # sent with allow_paid_broadcast
    rate: float
    peak_1s: int
    free_peak_1s: int  # accepted without allow_paid_broadcast, in any 1 s
    tried_peak_1s: int  # accepted and refused requests in any 1 s
    violations: int
    fanout_s: float  # first send to last
    wall_s: float  # from the sender learning of the piece to its last send
    cpu_s: float
    server_cpu_s: float
    server_loop: dict[str, float]
    server_priority: str
    stalls: list[tuple[float, float]] = field(default_factory=list)
    overruns: list[Overrun] = field(default_factory=list)
    peak_rss_mib: float = 0.0  # the bot's high-water mark (VmHWM) at the end of the fan-out

    @property
    def cpu_ms_per_send(self) -> float:
        return 1000 * self.cpu_s / self.sent if self.sent else float("nan")

    @property
    def ratio(self) -> float:
        return self.rate / self.limit

    @property
    def bots(self) -> int:
        """429s the server's own loop delay cannot explain (at most BOT_MARGIN in the second
        before each): the bot's."""
        return sum(1 for o in self.overruns if o.server_loop_max_ms <= BOT_MARGIN * 1000)

    def line(self) -> str:
        loop = self.server_loop
        paid = ""
        if self.paid:
            paid = f" ({self.paid} paid; free sends peak {self.free_peak_1s} in 1 s)"
        stalls = ""
        if self.stalls:
            lengths = [b - a for a, b in self.stalls]
            stalls = f", {len(lengths)} stalls injected (longest {max(lengths) * 1000:.0f} ms)"
        return (
            f"{self.engine}, {self.condition}: {self.sent}/{self.chats} sent{paid}, "
            f"{self.rate:.1f}/s = {self.ratio:.3f} of {self.limit}/s, "
            f"peak {self.peak_1s} in 1 s (tried {self.tried_peak_1s}), "
            f"{self.violations} x 429 ({self.bots} the bot's), "
            f"fan-out {self.fanout_s:.1f} s, wall {self.wall_s:.1f} s, CPU {self.cpu_s:.1f} s "
            f"({self.cpu_ms_per_send:.3f} ms a send), peak RSS {self.peak_rss_mib:.1f} MiB; "
            f"server CPU {self.server_cpu_s:.1f} s, loop delay p50 {loop['p50_ms']:.2f} / "
            f"p99 {loop['p99_ms']:.2f} / max {loop['max_ms']:.1f} ms{stalls}"
        )


def fanout_figures(
    stats: dict[str, Any],
    *,
    engine: str,
    condition: str,
    chats: int,
    limit: int,
    started_at: float,
    cpu_s: float,
    server_cpu_s: float,
    server_priority: str,
    free_limit: int = 30,
    stalls: Sequence[tuple[float, float]] = (),
    peak_rss_mib: float = 0.0,
) -> Fanout:
    """The figures of one fan-out from the server's detailed stats (FakeBotApi.stats).

    `limit` is the overall rate the sender was held to (the paid one in paid mode);
    `free_limit` the free overall window, which the server holds sends without
    allow_paid_broadcast to in every mode.
    """
    calls = [_Call(*call) for call in stats["rate_limited"]]
    sends = sorted(c.at for c in calls if c.status == 200)
    free = sorted(c.at for c in calls if c.status == 200 and not c.paid)
    fanout = sends[-1] - sends[0] if len(sends) > 1 else 0.0
    windows = _Windows(calls, sends, free, stats["loop_samples"], stalls, limit, free_limit)
    refused = sorted((c for c in calls if c.status == 429), key=lambda c: c.at)
    return Fanout(
        engine=engine,
        condition=condition,
        chats=chats,
        limit=limit,
        sent=len(sends),
        paid=len(sends) - len(free),
        rate=(len(sends) - 1) / fanout if fanout > 0 else 0.0,
        peak_1s=max_in_window(sends, 1.0),
        free_peak_1s=max_in_window(free, 1.0),
        tried_peak_1s=max_in_window(sends + [c.at for c in refused], 1.0),
        violations=stats["rate_violations"],
        fanout_s=fanout,
        wall_s=(sends[-1] - started_at) if sends else float("nan"),
        cpu_s=cpu_s,
        server_cpu_s=server_cpu_s,
        server_loop=stats["loop"],
        server_priority=server_priority,
        stalls=list(stalls),
        overruns=[windows.overrun(call, sends[0] if sends else call.at) for call in refused],
        peak_rss_mib=peak_rss_mib,
    )


@dataclass(frozen=True, slots=True)
class _Call:
    """A rate-limited call as the server's stats list it."""

    at: float
    chat: int
    status: int | None
    paid: bool


@dataclass(frozen=True, slots=True)
class _Windows:
    """What the server saw around each 429: enough to say which window refused it, and
    whether the server's own loop delay or a stall of the bot came just before."""

    calls: list[_Call]
    sends: list[float]  # accepted, sorted
    free: list[float]  # accepted without allow_paid_broadcast, sorted
    loop_samples: list[list[float]]
    stalls: Sequence[tuple[float, float]]
    limit: int
    free_limit: int

    def overrun(self, call: _Call, first: float) -> Overrun:
        at = call.at
        accepted = _in_last_second(self.sends, at)
        free = _in_last_second(self.free, at)
        # A private chat's window is one a second; a group's is 20 a minute: one earlier
        # accepted send to the same chat within the window's length makes the 429 the chat's.
        length = 1.0 if call.chat > 0 else 60.0
        same_chat = any(
            c.chat == call.chat and c.status == 200 and at - length < c.at <= at for c in self.calls
        )
        if same_chat:
            window = "the chat's"
        elif not call.paid and free >= self.free_limit:
            window = f"free {self.free_limit}/s"
        elif accepted >= self.limit:
            window = f"overall {self.limit}/s"
        else:
            window = "unknown"
        # The ticker sample that woke after `at` tells how late the loop was when it read it.
        loop_max = max(
            (late for woke, late in self.loop_samples if at - 1.0 <= woke <= at + 0.02),
            default=0.0,
        )
        ended = [end for _start, end in self.stalls if end <= at]
        return Overrun(
            after_s=at - first,
            chat=call.chat,
            window=window,
            accepted_in_1s=accepted,
            server_loop_max_ms=loop_max * 1000,
            since_stall_s=at - max(ended) if ended else None,
        )


def _in_last_second(ordered: list[float], at: float) -> int:
    """Stamps in (at - 1, at], as the server's window counts them."""
    return bisect.bisect_right(ordered, at) - bisect.bisect_right(ordered, at - 1.0)


# -------------------------------------------------------------------------- conditions


class Condition:
    """One of CONDITIONS, applied between start() and stop() (see the module's docstring)."""

    def __init__(self, name: str, pid: int, workdir: Path, args: argparse.Namespace) -> None:
        """`pid`: the process to freeze (stalls), the bot's."""
        if name not in CONDITIONS:
            raise ValueError(f"unknown condition {name!r}")
        self.name = name
        self.pid = pid
        self.args = args
        self.out = workdir / "stalls.json"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if self.name == "hog":
            count = self.args.hogs or os.cpu_count() or 2
            for _ in range(count):
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                self.processes.append(hog)
        elif self.name == "stalls":
            args = self.args
            injector = subprocess.Popen(
                [
                    sys.executable, "-m", "bench.stall_bench", "inject", str(self.pid),
                    f"--stall-ms={args.stall_ms}", f"--stall-every={args.stall_every}",
                    f"--seed={args.seed}", f"--out={self.out}",
                ],
                cwd=ROOT,
            )  # fmt: skip
            self.processes.append(injector)

    @property
    def settle_s(self) -> float:
        """How long to let it take hold before the piece appears (hogs take the CPUs)."""
        return 0.5 if self.name == "hog" else 0.0

    def stop(self) -> None:
        for process in self.processes:
            # The injector is told to end (it lets the bot go first); hogs are killed.
            process.send_signal(signal.SIGTERM if self.name == "stalls" else signal.SIGKILL)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()
        if self.name == "stalls":
            # Whatever happened to the injector, the bot must not stay frozen.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    def stalls(self) -> list[tuple[float, float]]:
        """The stalls injected so far: (frozen at, let go at), monotonic seconds."""
        with contextlib.suppress(OSError, ValueError):
            return [(a, b) for a, b in json.loads(self.out.read_text())]
        return []


def inject(argv: list[str]) -> int:
    """`python -m bench.stall_bench inject PID`: freeze PID at random until SIGTERM."""
    parser = argparse.ArgumentParser(prog="bench.stall_bench inject")
    parser.add_argument("pid", type=int)
    parser.add_argument("--stall-ms", default="50,200")
    parser.add_argument("--stall-every", default="0.5,2")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    shortest, longest = (float(x) / 1000 for x in args.stall_ms.split(","))
    soonest, latest = (float(x) for x in args.stall_every.split(","))
    # Real-time, so that a stall ends when it should, whatever else is running.
    raise_priority("rr")
    rng = random.Random(args.seed)
    stopping = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    stalls: list[tuple[float, float]] = []
    try:
        while not stopping:
            time.sleep(rng.uniform(soonest, latest))
            if stopping:
                break
            os.kill(args.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(rng.uniform(shortest, longest))
            os.kill(args.pid, signal.SIGCONT)
            stalls.append((stopped, time.monotonic()))
            args.out.write_text(json.dumps(stalls))
    except ProcessLookupError:
        pass  # the bot has gone
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(args.pid, signal.SIGCONT)
        args.out.write_text(json.dumps(stalls))
    return 0


# -------------------------------------------------------------------------- one fan-out


async def fan_out_engine(
    mode: Mode,
    chats: int,
    condition_name: str,
    workdir: Path,
    args: argparse.Namespace,
    extra_env: dict[str, str] | None = None,
    scale: Scale = TELEGRAM,
) -> Fanout:
    """One fan-out of one new piece by the bot's engine, the server in its own process.

    `scale` multiplies the free, group and private limits on both sides (the paid rate stays).
    """
    limit = PAID_RATE if mode.name == "paid" else scale.global_per_second
    targets = chat_ids(chats, channels=min(20, chats // 50), groups=min(200, chats // 10))
    db_path = workdir / "bot.sqlite3"
    await seed_chats(db_path, targets)
    api_process = ApiProcess.at_scale(
        targets, workdir, scale, paid_per_second=PAID_RATE, priority=args.priority
    )
    async with api_process as api, FeedServer() as feeds:
        feeds.set(FEED_PATH, feed(1))
        env = bot_env(api, feeds, db_path, scale, **mode.env, **(extra_env or {}))
        bot = BotProcess(env, workdir / "bot.log")
        bot.start()
        try:
            polled = _while_running(bot, lambda: len(feeds.requests_to(FEED_PATH)) >= 2)
            await wait_until(polled, 60, "first polls")
            # --stall-target server checks the benchmark itself: the server's own stalls must
            # show as its loop delay beside any 429 they cause.
            frozen = api.pid if getattr(args, "stall_target", "bot") == "server" else bot.pid
            applied = Condition(condition_name, frozen, workdir, args)
            applied.start()
            try:
                await asyncio.sleep(applied.settle_s)
                cpu_before = cpu_seconds(bot.pid)
                server_before = api.cpu_seconds()
                published_at = time.monotonic()
                feeds.set(FEED_PATH, feed(1, 2))
                budget = 120 + 5 * chats / limit
                deadline = published_at + budget
                while (await api.stats())["sent"] < chats:
                    if bot.proc is not None and bot.proc.poll() is not None:
                        raise RuntimeError(f"the bot exited with {bot.proc.returncode}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"fan-out: not within {budget:.0f} s")
                    await asyncio.sleep(0.25)
                cpu = cpu_seconds(bot.pid) - cpu_before
                server_cpu = api.cpu_seconds() - server_before
                peak_rss = rss_kib(bot.pid)[1] / 1024
            finally:
                applied.stop()
            injected = applied.stalls()
            stats = await api.stats(since=published_at, detail=True)
        except (TimeoutError, RuntimeError):
            print(bot.log_tail(), file=sys.stderr)
            raise
        finally:
            code = await bot.stop()
        check_exit(bot, code)
        # The sender learns of the piece when the poll after its publication reaches the feed.
        polls = [r.time for r in feeds.requests_to(FEED_PATH) if r.time >= published_at]
        return fanout_figures(
            stats,
            engine="bot outbox engine",
            condition=condition_name,
            chats=chats,
            limit=limit,
            free_limit=scale.global_per_second,
            started_at=polls[0] if polls else published_at,
            cpu_s=cpu,
            server_cpu_s=server_cpu,
            server_priority=api.priority,
            stalls=injected,
            peak_rss_mib=peak_rss,
        )


def _while_running(bot: BotProcess, predicate: Callable[[], bool]) -> Callable[[], bool]:
    def check() -> bool:
        if bot.proc is not None and bot.proc.poll() is not None:
            raise RuntimeError(f"the bot exited with {bot.proc.returncode}")
        return predicate()

    return check


def bot_warnings(log_path: Path) -> list[str]:
    """The limiter's warnings in the bot's log (429s from several chats, a widened margin)."""
    with contextlib.suppress(OSError):
        lines = log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "429" in line or "windows now" in line]
    return []


# -------------------------------------------------------------------------- main


def add_condition_options(parser: argparse.ArgumentParser) -> None:
    """The options Condition and fan_out_engine read."""
    parser.add_argument(
        "--priority",
        choices=("rr", "nice", "none"),
        default="rr",
        help="the test server's scheduling: SCHED_RR (default; nice -10 where not allowed), "
        "nice -10, or normal",
    )
    parser.add_argument("--hogs", type=int, default=0, help="spinning processes (default: CPUs)")
    parser.add_argument("--stall-ms", default="50,200", help="shortest,longest stall (ms)")
    parser.add_argument("--stall-every", default="0.5,2", help="shortest,longest gap (s)")
    parser.add_argument("--seed", type=int, default=1, help="for the stalls' timing")
    parser.add_argument(
        "--stall-target",
        choices=("bot", "server"),
        default="bot",
        help="whose process the stalls freeze: the bot's (default) or, to check the "
        "benchmark's attribution, the test server's",
    )


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=tuple(MODES), default="free")
    parser.add_argument("--chats", type=int, default=0, help="default: 3,000 free, 20,000 paid")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="free, group and private limits x this on both sides (default 1: Telegram's)",
    )
    parser.add_argument(
        "--conditions", default=",".join(CONDITIONS), help="comma-separated: quiet,hog,stalls"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="extra bot setting NAME=VALUE (repeatable)"
    )
    add_condition_options(parser)
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    chats = args.chats or mode.chats
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if unknown := set(conditions) - set(CONDITIONS):
        parser.error(f"unknown condition(s): {', '.join(sorted(unknown))}")
    extra = dict(item.split("=", 1) for item in args.env)
    results: dict[str, list[Fanout]] = {name: [] for name in conditions}
    for index in range(args.runs):
        for name in conditions:
            with tempfile.TemporaryDirectory(prefix="stall-bench-") as tmp:
                run = await fan_out_engine(
                    mode, chats, name, Path(tmp), args, extra, Scale(args.scale)
                )
                warnings = bot_warnings(Path(tmp) / "bot.log")
            results[name].append(run)
            print(f"run {index + 1}: {run.line()}", flush=True)
            for overrun in run.overruns:
                print(f"    {overrun}", flush=True)
            for line in warnings[:10]:
                print(f"    bot: {line}", flush=True)
    print_setup(r.server_priority for runs in results.values() for r in runs)
    print(markdown_table(*stall_table(results)))
    return 0


def stall_table(results: dict[str, list[Fanout]]) -> tuple[list[str], list[list[str]]]:
    header = [
        "condition",
        "limit",
        "chats",
        "sends",
        "of limit",
        "peak in 1 s",
        "429s (per run)",
        "of them the bot's",
        "server loop delay p99 / max",
        "bot CPU s",
        "CPU per send",
        "peak RSS",
    ]
    rows = []
    for name, runs in results.items():
        if not runs:
            continue
        first = runs[0]
        rows.append(
            [
                name,
                f"{first.limit:,}/s",
                f"{first.chats:,}",
                f"{median([r.sent for r in runs]):,.0f}",
                f"{median([r.ratio for r in runs]):.3f}",
                f"{median([r.peak_1s for r in runs]):g}",
                f"**{sum(r.violations for r in runs)}** "
                f"({', '.join(str(r.violations) for r in runs)})",
                f"**{sum(r.bots for r in runs)}**",
                f"{median([r.server_loop['p99_ms'] for r in runs]):.1f} / "
                f"{max(r.server_loop['max_ms'] for r in runs):.1f} ms",
                f"{median([r.cpu_s for r in runs]):.1f}",
                f"{median([r.cpu_ms_per_send for r in runs]):.2f} ms",
                f"{max(r.peak_rss_mib for r in runs):.1f} MiB",
            ]
        )
    return header, rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["inject"]:
        sys.exit(inject(sys.argv[2:]))
    sys.exit(asyncio.run(main(sys.argv[1:])))
