"""Daily digests and quiet hours: the leader's scheduler that ends the chats' holds.

A chat in digest mode, or a private chat inside its quiet hours, is *held* (storage.schedule):
its posts fan out as usual and wait in the outbox, pending but not due, and the publisher
leaves them alone. When a hold ends, this scheduler, which runs in the leader only, releases
the chat:

- digest mode: every waiting piece goes into one digest (linked titles by category, in the
  chat's language; several messages when it is long), and the chat is held until its next
  digest hour;
- the end of quiet hours (or a change back to "as they appear"): up to three waiting pieces go
  out one by one, more as one digest; the next quiet window is planned.

Each release is one transaction (storage.schedule.release): the digest's notice rows, the
waiting posts it consumed (skipped, reason "digest", which /why explains) and the next hold,
written only if the hold is still the one read. A crash before it commits changes nothing; a
second release of the same hold (another instance, a retry) finds the hold moved on and
writes nothing. So a chat gets each digest once, and no piece is lost or listed twice; the
digest's rows then go out of the outbox like posts: crash-safe, in order, inside the limits.

A paused or deactivated chat gets no digest (its queue was skipped or cancelled when it was
paused or lost); its hold moves on, so it gets the pieces queued after it is resumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from bot.clock import Clock
from bot.delivery.schedule import QUIET_RELEASE_MAX, changed_hold, planned_hold, zone
from bot.leadership import Leadership
from bot.text.i18n import N_
from bot.text.render import Renderer
from storage import schedule as schedule_store
from storage.db import Database
from storage.models import CHANNELS_FIRST, Chat, ChatSettings, DeliveryMode, Hold
from storage.schedule import Held, ReleaseConflict, ScheduleChange

log = logging.getLogger(__name__)

# Chats released per store round trip; the rest wait for the next round (at once).
BATCH = 100
# The longest the scheduler sleeps without reading the holds again: a change made on another
# instance (which cannot wake this one) is seen within it.
MAX_IDLE = 30.0
# A chat whose release failed (a bug) is tried again after this long, not in a tight loop.
RETRY_AFTER = 60.0

DAILY_HEADING = (N_("🗞 Daily digest, {date}: {n} new piece"),
                 N_("🗞 Daily digest, {date}: {n} new pieces"))  # fmt: skip
QUIET_HEADING = (N_("🌅 Quiet hours are over: {n} new piece"),
                 N_("🌅 Quiet hours are over: {n} new pieces"))  # fmt: skip
SINCE_HEADING = (N_("🗞 {n} new piece since {date}"), N_("🗞 {n} new pieces since {date}"))

# What a schedule change is recorded as in the settings trail (the panel's 📜 Changes).
AUDIT_DELIVERY = "delivery"
AUDIT_DIGEST_HOUR = "digest_hour"
AUDIT_TIMEZONE = "timezone"
AUDIT_QUIET_HOURS = "quiet_hours"

Edit = Callable[[ChatSettings], ChatSettings]


async def change_schedule(
    store: Database,
    chat_id: int,
    edit: Edit,
    *,
    user_id: int | None,
    user_name: str | None,
    now: float,
    default_zone: tzinfo,
) -> Chat | None:
    """Apply `edit` to the chat's settings and plan its hold anew, in one transaction (with the
    settings trail); None for an unknown chat. Posts already held stay held until the
    scheduler releases them (bot.delivery.schedule.changed_hold)."""

    def mutate(chat: Chat, hold: Hold) -> ScheduleChange | None:
        settings = edit(chat.settings)
        if settings == chat.settings:
            return None
        planned = planned_hold(settings, chat.type, now, default_zone)
        audit = tuple(
            (what, old, new)
            for what, old, new in _audit_lines(chat.settings, settings)
            if old != new
        )
        return ScheduleChange(settings, changed_hold(hold, planned, now), audit)

    result = await schedule_store.change_schedule(
        store, chat_id, mutate, user_id=user_id, user_name=user_name, now=now
    )
    if result is None:
        return None
    chat, changed = result
    if changed:
        log.info("chat %d: delivery schedule changed by user %s", chat_id, user_id)
    return chat


def _audit_lines(old: ChatSettings, new: ChatSettings) -> list[tuple[str, str, str]]:
    def quiet(settings: ChatSettings) -> str:
        hours = settings.quiet_hours
        return "" if hours is None else f"{hours[0]:02d}:00-{hours[1]:02d}:00"

    return [
        (AUDIT_DELIVERY, old.delivery.value, new.delivery.value),
        (AUDIT_DIGEST_HOUR, f"{old.digest_hour:02d}:00", f"{new.digest_hour:02d}:00"),
        (AUDIT_TIMEZONE, old.timezone or "", new.timezone or ""),
        (AUDIT_QUIET_HOURS, quiet(old), quiet(new)),
    ]


class DigestScheduler:
    """Ends the holds of the chats whose time has come. `run(stop)` in the leader; `wake()`
    after a schedule change so a release it asked for happens at once."""

    def __init__(
        self,
        store: Database,
        renderer: Renderer,
        clock: Clock,
        *,
        default_zone: tzinfo,
        on_queued: Callable[[], None],
        fence: Leadership | None = None,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.renderer = renderer
        self.clock = clock
        self.default_zone = default_zone
        self.on_queued = on_queued  # the publisher's wake
        self.fence = fence
        self.batch = batch
        self.digests = 0  # digests made (each one or more messages), since start
        self._wake = asyncio.Event()
        self._failed: dict[int, float] = {}  # chat id -> monotonic time of the next try

    def wake(self) -> None:
        """Look at the holds now (a schedule changed)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Release holds as they end, until `stop` is set."""
        while not stop.is_set():
            self._wake.clear()
            try:
                wait = await self._round()
            except Exception:
                log.exception("the digest scheduler failed; retrying shortly")
                wait = 5.0
            if wait > 0:
                await self._idle(wait, stop)

    async def _round(self) -> float:
        """Release what is due; return how long to wait before the next round."""
        if self.fence is not None and not await self.fence.confirm():
            return 1.0  # not the trusted leader right now: release nothing
        released, full = await self.release_due()
        if full and released:
            return 0.0  # more may be due behind this batch
        next_end = await schedule_store.next_hold_end(self.store, exclude=list(self._failed))
        wait = MAX_IDLE if next_end is None else next_end - self.clock.now()
        if self._failed:
            wait = min(wait, min(self._failed.values()) - self.clock.monotonic())
        # A hold that changed under a release is read again soon, never in a tight loop.
        return max(0.0 if released else 0.1, min(wait, MAX_IDLE))

    async def _idle(self, seconds: float, stop: asyncio.Event) -> None:
        waiters = {
            asyncio.ensure_future(self.clock.sleep(seconds)),
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(stop.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def release_due(self) -> tuple[int, bool]:
        """Release one batch of the chats whose hold has ended; return how many were released
        and whether the batch was full."""
        now, mono = self.clock.now(), self.clock.monotonic()
        self._failed = {k: v for k, v in self._failed.items() if v > mono}
        ended = await schedule_store.holds_ended(self.store, now, self.batch + len(self._failed))
        ended = [held for held in ended if held.chat.id not in self._failed][: self.batch]
        released = 0
        for held in ended:
            if self.fence is not None and not self.fence.valid():
                break  # the next round confirms the lease first
            try:
                queued = await self.release(held, self.clock.now())
            except ReleaseConflict as exc:
                log.info("release skipped: %s; read again next round", exc)
                continue
            except Exception:
                log.exception("releasing chat %d failed; trying again in %.0f s",
                              held.chat.id, RETRY_AFTER)  # fmt: skip
                self._failed[held.chat.id] = self.clock.monotonic() + RETRY_AFTER
                continue
            released += 1
            if queued:
                self.on_queued()
        return released, len(ended) >= self.batch

    async def release(self, held: Held, now: float) -> bool:
        """End one chat's hold (see the module docstring); True when it queued something to
        send (a digest, or posts released one by one)."""
        chat, hold = held.chat, held.hold
        settings = chat.settings
        tz = zone(settings.timezone, self.default_zone)
        next_hold = planned_hold(settings, chat.type, now, self.default_zone)
        if not chat.active or chat.paused:
            await schedule_store.release(self.store, chat.id, hold, next_hold, now)
            return False
        waiting = await schedule_store.waiting_posts(self.store, chat.id)
        daily = settings.delivery is DeliveryMode.DIGEST
        if not waiting or (not daily and len(waiting) <= QUIET_RELEASE_MAX):
            await schedule_store.release(self.store, chat.id, hold, next_hold, now)
            if waiting:
                log.info("chat %d: %d held piece(s) released", chat.id, len(waiting))
            return bool(waiting) and not next_hold.active(now)
        n = len(waiting)
        plural = self.renderer.translator.ngettext
        if daily:
            day = self.renderer.day(chat.lang, _local(now, tz))
            heading = plural(chat.lang, *DAILY_HEADING, n, date=day)
        elif chat.type.is_private and settings.quiet_hours is not None:
            heading = plural(chat.lang, *QUIET_HEADING, n)
        else:
            since = self.renderer.day(chat.lang, _local(hold.start or now, tz))
            heading = plural(chat.lang, *SINCE_HEADING, n, date=since)
        messages = self.renderer.digest([w.item for w in waiting], chat.lang, heading)
        await schedule_store.release(
            self.store, chat.id, hold, next_hold, now, digest=messages,
            consumed=[w.delivery_id for w in waiting], priority=CHANNELS_FIRST[chat.type],
        )  # fmt: skip
        self.digests += 1
        log.info("chat %d: digest of %d piece(s) in %d message(s) queued", chat.id, n,
                 len(messages))  # fmt: skip
        return True


def _local(moment: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(moment, UTC).astimezone(tz)
