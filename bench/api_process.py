"""The fake Bot API in a process of its own, scheduled ahead of the bot and of any CPU hog.

A server that judges rate windows on the stamps it takes when its event loop reads a request
blames the client for its own stalls: requests read late look bunched. In the benchmark's process
the server shares a loop (and a CPU's time) with everything else the benchmark does; here it has
its own, at a higher scheduling priority, with its garbage collector off and a loop monitor
(tests/fakes/loopdelay.py) recording how late its loop ran, so a report can show that the stamps
were accurate when it says the bot overran a window.

The parent side is `ApiProcess` (`async with ApiProcess(...) as api`: `api.url` for the bot,
`await api.stats()` for progress, `await api.stats(since=t, detail=True)` for the figures). The
child is `python -m bench.api_process`: it prints one JSON line (its URL and the priority it got)
once it listens, and serves until SIGTERM.

Priority: SCHED_RR (real-time, priority 10: it runs whenever it is ready, ahead of every normal
process; Linux keeps 5% of each second for the rest) when allowed, else nice -10, else normal;
the line it prints says which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp

from bench.common import ROOT, TOKEN, Scale, cpu_seconds
from storage.models import ChatType
from tests.fakes.botapi import FakeBotApi
from tests.fakes.loopdelay import LoopMonitor

Priority = Literal["rr", "nice", "none"]
RT_PRIORITY = 10
NICE = -10


def raise_priority(wanted: Priority) -> str:
    """Schedule this process ahead of normal ones, as far as allowed; say what it got."""
    if wanted == "rr":
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
            return f"SCHED_RR {RT_PRIORITY}"
    if wanted in ("rr", "nice"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
            return f"nice {NICE}"
    return "normal (nice 0)"


class ApiProcess:
    """The parent's handle on a fake Bot API running in its own process (see the module)."""

    def __init__(
        self,
        chats: Iterable[tuple[int, ChatType]],
        workdir: Path,
        *,
        global_per_second: int = 30,
        paid_per_second: int = 1000,
        group_per_minute: int = 20,
        private_per_second: float = 1.0,
        priority: Priority = "rr",
    ) -> None:
        self.chats_file = workdir / "api-chats.json"
        self.chats_file.write_text(json.dumps([[c, t.value] for c, t in chats]))
        self.log_path = workdir / "api.log"
        self.args = [
            f"--global-per-second={global_per_second}",
            f"--paid-per-second={paid_per_second}",
            f"--group-per-minute={group_per_minute}",
            f"--private-per-second={private_per_second:g}",
            f"--priority={priority}",
            f"--chats-file={self.chats_file}",
        ]
        self.url = ""
        self.priority = ""
        self.pid = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def at_scale(
        cls,
        chats: Iterable[tuple[int, ChatType]],
        workdir: Path,
        scale: Scale,
        *,
        paid_per_second: int = 1000,
        priority: Priority = "rr",
    ) -> ApiProcess:
        """A server holding Telegram's limits times `scale` (the paid rate as given)."""
        return cls(
            chats,
            workdir,
            global_per_second=scale.global_per_second,
            paid_per_second=paid_per_second,
            group_per_minute=scale.group_per_minute,
            private_per_second=scale.private_per_second,
            priority=priority,
        )

    async def __aenter__(self) -> Self:
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                # API_PYTHON_ARGS="-m cProfile -o api.prof" profiles the server.
                sys.executable, *os.environ.get("API_PYTHON_ARGS", "").split(),
                "-m", "bench.api_process", *self.args,
                cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )  # fmt: skip
        self.pid = self._proc.pid
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
            ready = json.loads(line)
        except (TimeoutError, ValueError) as exc:
            await self._stop()
            raise RuntimeError(f"the API process did not start: {self.log_tail()}") from exc
        self.url, self.priority = ready["url"], ready["priority"]
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        await self._stop()

    async def _stop(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    async def stats(self, *, since: float | None = None, detail: bool = False) -> dict[str, Any]:
        """The server's FakeBotApi.stats() (see there)."""
        assert self._session is not None
        query = {"detail": "1" if detail else "0"}
        if since is not None:
            query["since"] = repr(since)
        async with self._session.get(f"{self.url}/_fake/stats", params=query) as answer:
            answer.raise_for_status()
            result: dict[str, Any] = await answer.json()
            return result

    def cpu_seconds(self) -> float:
        """The server process's CPU seconds so far."""
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def serve(args: argparse.Namespace) -> None:
    api = FakeBotApi(
        TOKEN,
        global_per_second=args.global_per_second,
        group_per_minute=args.group_per_minute,
        private_per_second=args.private_per_second,
        paid_per_second=args.paid_per_second,
    )
    api.loop_monitor = LoopMonitor(0.01)
    for chat_id, chat_type in args.chats:
        api.add_chat(chat_id, chat_type, title=f"Chat {chat_id}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with api:
        # A collection pass over tens of thousands of recorded calls stalls the loop for tens of
        # milliseconds; the calls live until the process ends, so there is nothing to collect.
        gc.collect()
        gc.freeze()
        gc.disable()
        print(json.dumps({"url": api.url, "priority": args.priority_got}), flush=True)
        await stop.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--global-per-second", type=int, default=30)
    parser.add_argument("--paid-per-second", type=int, default=1000)
    parser.add_argument("--group-per-minute", type=int, default=20)
    parser.add_argument("--private-per-second", type=float, default=1.0)
    parser.add_argument("--priority", choices=("rr", "nice", "none"), default="rr")
    parser.add_argument("--chats-file", required=True, help="JSON [[chat_id, type], ...]")
    args = parser.parse_args(argv)
    args.chats = json.loads(Path(args.chats_file).read_text())
    # Before the loop and its threads exist, so that all of them inherit it.
    args.priority_got = raise_priority(args.priority)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
