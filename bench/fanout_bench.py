"""Benchmark 1: fan-out of one new piece to many chats at Telegram's limits.

The real bot (`python -m bot`, its own process) polls a local feed; its database holds N
subscribed chats (a few channels and groups, the rest private chats). When a new piece appears
in the feed, the bot sends it to every chat through the fake Bot API, which enforces Telegram's
windows (overall per second, per group per minute, per private chat per second) on the
requests as they arrive and answers 429 with retry_after when one is full.

Reported per run, from the fake server's arrival times: achieved sends/s over the fan-out
(first to last send) divided by the configured global limit, the most sends seen in any one
second, 429 answers, the fan-out's wall time, and the bot's CPU seconds.

`--engine ptb` runs the comparison instead: python-telegram-bot's stock AIORateLimiter
(overall 30/s, 20/min per group, max_retries=5) sending the same post to the same chats with
asyncio.gather, as a bot without an outbox engine would; `--paid` sends with
allow_paid_broadcast at 1,000/s. PTB sends from the benchmark's process, so the test server
runs in a process of its own for it (bench/api_process.py: scheduled ahead, its own loop delay
measured), not in the loop whose burst it judges.

`--compare` prints one table of both engines at Telegram's own limits, free (30/s, 600 chats)
and paid (1,000/s, 20,000 chats; `--compare-chats`), each against the test server in its own
process (the engine's runs as bench/stall_bench.py's quiet condition): rate over the limit,
peak in 1 s, 429s, wall time (from the sender learning of the piece: the poll that found it,
or the start of PTB's gather), CPU seconds of the sending process and CPU ms per send.

`--backend postgresql` gives the bot a PostgreSQL database instead of an SQLite file: the
benchmark starts one throwaway PostgreSQL 15 cluster (tests/pg.py), seeds a fresh database in
it for each run, hands the bot its URL as DATABASE_URL, and stops the cluster at the end. The
server's CPU over the fan-out is reported beside the bot's (its work is in other processes;
on SQLite the database work is part of the bot's CPU).

Run: `python -m bench.fanout_bench` (10,000 chats, limits x10, 5 runs); `--chats 600 --scale 1
--runs 3` reproduces the 600-chat comparison at Telegram's real limits; add `--engine ptb`
for PTB's limiter, `--backend postgresql` for the bot on PostgreSQL; `--compare --runs 3` for
the engines' table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.api_process import ApiProcess, Priority
from bench.common import (
    BACKENDS,
    FEED_PATH,
    TOKEN,
    Databases,
    Scale,
    SendCounter,
    bot_env,
    chat_ids,
    check_exit,
    feed,
    machine,
    markdown_table,
    median,
    print_setup,
    refused_429,
    register_chats,
    seed_chats,
    servers,
    successful_sends,
    wait_until,
)
from bench.stall_bench import (
    MODES,
    PAID_RATE,
    Fanout,
    fan_out_engine,
    fanout_figures,
)
from tests.support import BotProcess, max_in_window


@dataclass(frozen=True, slots=True)
class Run:
    chats: int
    limit: int
    sent: int
    rate: float
    peak_1s: int
    refused: int
    fanout_s: float
    wall_s: float
    cpu_s: float
    server_cpu_s: float | None = None  # PostgreSQL's processes over the fan-out; None on SQLite

    @property
    def ratio(self) -> float:
        return self.rate / self.limit


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    import os

    return ticks / os.sysconf("SC_CLK_TCK")


def _figures(
    api: object,
    chats: int,
    limit: int,
    published_at: float,
    cpu: float,
    server_cpu: float | None = None,
) -> Run:
    sends = sorted(c.at for c in successful_sends(api))  # type: ignore[arg-type]
    fanout = sends[-1] - sends[0] if len(sends) > 1 else 0.0
    rate = (len(sends) - 1) / fanout if fanout > 0 else 0.0
    return Run(
        chats=chats,
        limit=limit,
        sent=len(sends),
        rate=rate,
        peak_1s=max_in_window(sends, 1.0),
        refused=refused_429(api),  # type: ignore[arg-type]
        fanout_s=fanout,
        wall_s=sends[-1] - published_at,
        cpu_s=cpu,
        server_cpu_s=server_cpu,
    )


class BotExited(RuntimeError):
    """The bot's process ended while the benchmark waited for it."""


def _while_running(bot: BotProcess, predicate: Callable[[], bool]) -> Callable[[], bool]:
    """`predicate`, but raising BotExited as soon as the bot's process has ended: a bot that
    fails at start-up is reported at once, not after the wait's whole deadline."""

    def check() -> bool:
        if bot.proc is not None and bot.proc.poll() is not None:
            raise BotExited(f"the bot exited with {bot.proc.returncode}")
        return predicate()

    return check


async def run_engine(
    chats: int,
    scale: Scale,
    workdir: Path,
    extra_env: dict[str, str],
    databases: Databases,
) -> Run:
    """One fan-out by the bot's own engine."""
    with databases.fresh(workdir / "bot.sqlite3", "fanout") as db_path:
        return await _run_engine(chats, scale, workdir, extra_env, databases, db_path)


async def _run_engine(
    chats: int,
    scale: Scale,
    workdir: Path,
    extra_env: dict[str, str],
    databases: Databases,
    db_path: Path | str,
) -> Run:
    targets = chat_ids(chats, channels=min(20, chats // 50), groups=min(200, chats // 10))
    await seed_chats(db_path, targets)
    async with servers(scale) as (api, feeds):
        register_chats(api, targets)
        feeds.set(FEED_PATH, feed(1))
        bot = BotProcess(bot_env(api, feeds, db_path, scale, **extra_env), workdir / "bot.log")
        bot.start()
        try:
            # The first poll marks the backlog as seen; the second one finds nothing new.
            polled = _while_running(bot, lambda: len(feeds.requests_to(FEED_PATH)) >= 2)
            await wait_until(polled, 60, "first polls")
            cpu_before = _cpu_seconds(bot.pid)
            server_before = databases.server_cpu()
            # A collection pass over the fake's 10,000 recorded calls would stall it and bunch
            # its arrival stamps; Telegram's servers have no such pauses (see the docstring).
            gc.collect()
            gc.disable()
            feeds.set(FEED_PATH, feed(1, 2))
            published_at = time.monotonic()
            budget = 60 + 3 * chats / scale.global_per_second
            sent = SendCounter(api)
            done = _while_running(bot, lambda: sent() >= chats)
            await wait_until(done, budget, "fan-out", interval=0.2)
            cpu = _cpu_seconds(bot.pid) - cpu_before
            server_after = databases.server_cpu()
        except (TimeoutError, BotExited):
            print(bot.log_tail(), file=sys.stderr)
            raise
        finally:
            gc.enable()
            code = await bot.stop()
        check_exit(bot, code)
        server_cpu = None
        if server_before is not None and server_after is not None:
            server_cpu = server_after - server_before
        return _figures(api, chats, scale.global_per_second, published_at, cpu, server_cpu)


async def run_ptb(
    chats: int, scale: Scale, workdir: Path, *, paid: bool = False, priority: Priority = "rr"
) -> Fanout:
    """The same fan-out through python-telegram-bot's stock AIORateLimiter, from this process,
    against the test server in a process of its own (bench/api_process.py), as the engine's.

    Free: overall `scale`'s rate per second and 20 a minute per group (x scale). Paid: every
    send with allow_paid_broadcast=True, which AIORateLimiter sends through its own paid bucket
    of 1,000/s (FloodLimit.PAID_MESSAGES_PER_SECOND; its overall and group limits are then not
    applied: overall_max_rate=1000 is set anyway, for the record); the server's paid window is
    1,000/s. CPU: this process's, over the fan-out (the PTB client and its sends are all it runs).
    """
    from telegram import LinkPreviewOptions
    from telegram.constants import ParseMode
    from telegram.error import NetworkError, RetryAfter
    from telegram.ext import AIORateLimiter, ExtBot
    from telegram.request import HTTPXRequest

    limit = PAID_RATE if paid else scale.global_per_second
    targets = chat_ids(chats, channels=min(20, chats // 50), groups=min(200, chats // 10))
    text = (
        '<a href="https://caliber.az/en/post/piece-2">Piece 2</a>\n\n'
        + "Energy, trade and security in the South Caucasus, analysed. " * 6
    )
    api_process = ApiProcess.at_scale(
        targets, workdir, scale, paid_per_second=PAID_RATE, priority=priority
    )
    async with api_process as api:
        limiter = AIORateLimiter(
            overall_max_rate=limit,
            overall_time_period=1,
            group_max_rate=scale.group_per_minute,
            group_time_period=60,
            max_retries=5,
        )
        bot = ExtBot(
            TOKEN,
            base_url=f"{api.url}/bot",
            request=HTTPXRequest(connection_pool_size=256, pool_timeout=30),
            rate_limiter=limiter,
        )
        lost: dict[str, int] = {}
        async with bot:
            start = time.monotonic()
            cpu_before = time.process_time()
            server_before = api.cpu_seconds()

            async def send(chat_id: int) -> None:
                try:
                    await bot.send_message(
                        chat_id,
                        text,
                        parse_mode=ParseMode.HTML,
                        link_preview_options=LinkPreviewOptions(is_disabled=True),
                        allow_paid_broadcast=paid or None,
                    )
                except (RetryAfter, NetworkError) as exc:
                    # RetryAfter: given up after 5 retries; NetworkError: timed out or refused.
                    lost[type(exc).__name__] = lost.get(type(exc).__name__, 0) + 1

            await asyncio.wait_for(
                asyncio.gather(*(send(chat_id) for chat_id, _ in targets)),
                timeout=60 + 5 * chats / limit,
            )
            cpu = time.process_time() - cpu_before
            server_cpu = api.cpu_seconds() - server_before
        if lost:
            print(f"PTB: sends lost: {lost}", file=sys.stderr)
        stats = await api.stats(since=start, detail=True)
        return fanout_figures(
            stats,
            engine="PTB AIORateLimiter",
            condition="quiet",
            chats=chats,
            limit=limit,
            free_limit=scale.global_per_second,
            started_at=start,
            cpu_s=cpu,
            server_cpu_s=server_cpu,
            server_priority=api.priority,
        )


def _as_run(fanout: Fanout) -> Run:
    return Run(
        chats=fanout.chats,
        limit=fanout.limit,
        sent=fanout.sent,
        rate=fanout.rate,
        peak_1s=fanout.peak_1s,
        refused=fanout.violations,
        fanout_s=fanout.fanout_s,
        wall_s=fanout.wall_s,
        cpu_s=fanout.cpu_s,
    )


async def compare(args: argparse.Namespace) -> int:
    """Both engines at Telegram's free 30/s and at the paid 1,000/s: one table."""
    free_chats, paid_chats = (int(n) for n in args.compare_chats.split(","))
    one = Scale(1)
    cases: list[tuple[str, str, int]] = [
        ("bot", "free", free_chats),
        ("ptb", "free", free_chats),
        ("bot", "paid", paid_chats),
        ("ptb", "paid", paid_chats),
    ]
    extra = dict(item.split("=", 1) for item in args.env)
    results: dict[tuple[str, str], list[Fanout]] = {(e, m): [] for e, m, _ in cases}
    for index in range(args.runs):
        for engine, mode, chats in cases:
            with tempfile.TemporaryDirectory(prefix="fanout-compare-") as tmp:
                if engine == "bot":
                    run = await fan_out_engine(MODES[mode], chats, "quiet", Path(tmp), args, extra)
                else:
                    run = await run_ptb(
                        chats, one, Path(tmp), paid=mode == "paid", priority=args.priority
                    )
            results[engine, mode].append(run)
            print(f"run {index + 1}: {run.line()}", flush=True)
    print_setup(r.server_priority for runs in results.values() for r in runs)
    header = [
        "engine",
        "limit",
        "chats",
        "sends",
        "of limit",
        "peak in 1 s",
        "429s",
        "wall s",
        "CPU s",
        "CPU ms per send",
        "server loop delay p99 / max",
    ]
    rows = []
    for (_engine, mode), runs in results.items():
        first = runs[0]
        rows.append(
            [
                first.engine,
                f"{first.limit:,}/s ({mode})",
                f"{first.chats:,}",
                f"{median([r.sent for r in runs]):,.0f}",
                f"{median([r.ratio for r in runs]):.3f}",
                f"{median([r.peak_1s for r in runs]):g}",
                f"{median([r.violations for r in runs]):g} "
                f"({', '.join(str(r.violations) for r in runs)})",
                f"{median([r.wall_s for r in runs]):.1f}",
                f"{median([r.cpu_s for r in runs]):.1f}",
                f"{median([r.cpu_ms_per_send for r in runs]):.2f}",
                f"{median([r.server_loop['p99_ms'] for r in runs]):.1f} / "
                f"{max(r.server_loop['max_ms'] for r in runs):.1f} ms",
            ]
        )
    print(f"Median of {args.runs} run(s):")
    print(markdown_table(header, rows))
    return 0


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--scale", type=float, default=10.0, help="limits x this (default 10)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engine", choices=("bot", "ptb"), default="bot")
    parser.add_argument(
        "--paid",
        action="store_true",
        help="--engine ptb only: send with allow_paid_broadcast at 1,000/s",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="both engines at 30/s and at 1,000/s (paid), Telegram's own limits, one table",
    )
    parser.add_argument(
        "--compare-chats",
        default="600,20000",
        help="--compare's chats at 30/s and at 1,000/s (default 600,20000)",
    )
    parser.add_argument(
        "--priority",
        choices=("rr", "nice", "none"),
        default="rr",
        help="the test server's scheduling, where it runs in its own process (--engine ptb, "
        "--compare): SCHED_RR (default; nice -10 where not allowed), nice -10, or normal",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="sqlite",
        help="the bot's database: an SQLite file (default) or a fresh database in a throwaway "
        "PostgreSQL 15 cluster the benchmark starts",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="extra bot setting NAME=VALUE (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.engine == "ptb" and args.backend != "sqlite":
        parser.error("--backend is the bot engine's database; --engine ptb uses none")
    if args.paid and args.engine != "ptb":
        parser.error("--paid is for --engine ptb; the engine's paid runs: --compare")
    if args.compare:
        if args.backend != "sqlite":
            parser.error("--compare runs the engine on SQLite")
        return await compare(args)
    scale = Scale(args.scale)
    extra = dict(item.split("=", 1) for item in args.env)
    runs: list[Run] = []
    with Databases(args.backend) as databases:
        for index in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
                if args.engine == "ptb":
                    fanout = await run_ptb(
                        args.chats, scale, Path(tmp), paid=args.paid, priority=args.priority
                    )
                    run = _as_run(fanout)
                else:
                    run = await run_engine(args.chats, scale, Path(tmp), extra, databases)
            runs.append(run)
            server = ""
            if run.server_cpu_s is not None:
                server = f", {databases.label} server CPU {run.server_cpu_s:.1f} s"
            print(
                f"run {index + 1}: {run.sent} sent, {run.rate:.1f}/s = {run.ratio:.3f} of "
                f"{run.limit}/s, peak {run.peak_1s} in 1 s, {run.refused} x 429, fan-out "
                f"{run.fanout_s:.1f} s, wall {run.wall_s:.1f} s, bot CPU {run.cpu_s:.1f} s"
                f"{server}",
                flush=True,
            )
        backend = databases.describe() if args.engine == "bot" else "none (PTB sends only)"
        label = databases.label
    print()
    print(f"Machine: {machine()}")
    print(f"Back end: {backend}")
    print()
    header = [
        "engine",
        "back end",
        "chats",
        "limit/s",
        "sends/s",
        "of limit",
        "peak in 1 s",
        "429s",
        "fan-out s",
        "wall s",
        "bot CPU s",
        "db server CPU s",
    ]
    server_cpu = [r.server_cpu_s for r in runs if r.server_cpu_s is not None]
    row = [
        "bot outbox engine" if args.engine == "bot" else "PTB AIORateLimiter",
        label if args.engine == "bot" else "-",
        f"{args.chats:,}",
        runs[0].limit,
        f"{median([r.rate for r in runs]):.1f}",
        f"{median([r.ratio for r in runs]):.3f}",
        f"{median([r.peak_1s for r in runs]):g}",
        f"{median([r.refused for r in runs]):g}",
        f"{median([r.fanout_s for r in runs]):.1f}",
        f"{median([r.wall_s for r in runs]):.1f}",
        f"{median([r.cpu_s for r in runs]):.1f}",
        # On SQLite the database work is inside the bot's CPU: there is no server.
        f"{median(server_cpu):.1f}" if server_cpu else "-",
    ]
    print(f"Median of {len(runs)} run(s):")
    print(markdown_table(header, [row]))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
