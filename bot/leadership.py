"""Leadership: which instance polls the feeds and publishes (storage.lease), and the fence that
keeps a deposed leader from sending.

Every instance answers readers and admins; only the lease holder polls, publishes and (in
polling mode) calls getUpdates. The holder renews the lease every third of LEADER_TIMEOUT. It
counts itself leader only until `valid_until`, measured on its own monotonic clock from the
moment it *asked* for the renewal, minus a margin: the database's expiry is always later than
that, so by the time a standby can take the lease the old holder has already stopped trusting
its own. A frozen process (SIGSTOP) wakes with its monotonic clock far past `valid_until`, so
its first send is refused before it leaves (`valid()`), and its next renewal fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import Literal

from bot.clock import Clock, unless_stopped
from storage import lease
from storage.db import Database

log = logging.getLogger(__name__)

Role = Literal["leader", "standby"]
# With several instances (INSTANCES), the standbys' replies together may use this share of the
# bot-wide rates, split evenly; the leader keeps the rest for posts. Each instance's limiter
# takes its part (RateLimits.share), so the sum never exceeds Telegram's limit.
STANDBY_SHARE = 0.2


def rate_share(role: Role, instances: int) -> float:
    """The part of the bot-wide rates an instance in `role` may use."""
    if instances <= 1:
        return 1.0
    return 1.0 - STANDBY_SHARE if role == "leader" else STANDBY_SHARE / (instances - 1)


# The share of LEADER_TIMEOUT the holder trusts its lease for after asking to renew it: the
# rest covers a renewal that is slow to commit and clocks that run at slightly different rates.
TRUST = 0.8


class Deposed(Exception):
    """This instance no longer holds the lease: it must not send."""


class Leadership:
    """The lease as this instance sees it. `run()` until stopped; `valid()` before each send."""

    def __init__(
        self,
        store: Database,
        clock: Clock,
        *,
        timeout: float,
        holder: str | None = None,
        on_elected: Callable[[int], None] | None = None,
        on_deposed: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self.holder = holder or new_holder_id()
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.epoch: int | None = None
        self.valid_until = -1.0  # monotonic
        self.elected = asyncio.Event()
        self.deposed = asyncio.Event()

    @property
    def role(self) -> Role:
        return "leader" if self.epoch is not None and not self.deposed.is_set() else "standby"

    def valid(self, for_seconds: float = 0.0) -> bool:
        """Whether this instance may send now, and still for `for_seconds` (a long poll must
        end inside the trusted window). No database round trip: called per send."""
        return self.role == "leader" and self.clock.monotonic() + for_seconds < self.valid_until

    async def confirm(self) -> bool:
        """Whether the database still names this instance, at its epoch (before a batch).

        False when it does not (then this instance is deposed at once) or when the lease is
        not trusted now; a store that cannot answer raises, and the caller tries again later.
        """
        if self.epoch is None or not self.valid():
            return False
        if await lease.still_holds(self.store, self.holder, self.epoch):
            return True
        self._depose("the database names another holder")
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Wait to be elected, then keep the lease until stopped or deposed."""
        interval = self.timeout / 3
        while not stop.is_set() and not self.deposed.is_set():
            asked = self.clock.monotonic()
            try:
                epoch = await lease.take(self.store, self.holder, self.timeout)
            except Exception as exc:
                # The store is unreachable: a leader stays one until its trust runs out.
                if self.epoch is not None:
                    log.warning("cannot renew the leader lease (%s)", type(exc).__name__)
                    if self.clock.monotonic() >= self.valid_until:
                        self._depose("the lease could not be renewed in time")
                        return
            else:
                if self.epoch is not None and epoch != self.epoch:
                    self._depose("taken by another instance")
                    return
                if epoch is not None:
                    self.valid_until = asked + self.timeout * TRUST
                    if self.epoch is None:
                        self._elect(epoch)
            await unless_stopped(self.clock.sleep(interval), stop)

    def _elect(self, epoch: int) -> None:
        self.epoch = epoch
        log.info("elected leader (epoch %d)", epoch)
        self.elected.set()
        if self.on_elected is not None:
            self.on_elected(epoch)

    def _depose(self, why: str) -> None:
        log.error("lost the leader lease (epoch %s): %s; sending nothing more", self.epoch, why)
        self.deposed.set()
        if self.on_deposed is not None:
            self.on_deposed()

    async def release(self) -> None:
        """At a graceful stop: let a standby take over at once."""
        if self.epoch is not None and not self.deposed.is_set():
            try:
                await lease.release(self.store, self.holder)
            except Exception:
                log.warning("could not release the leader lease; it expires by itself")


def new_holder_id() -> str:
    """host:pid:random, so a restarted process never passes for the one before it."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
