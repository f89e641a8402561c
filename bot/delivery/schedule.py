"""Delivery schedules as time: a chat's time zone, its next digest, its quiet hours, and the hold
its settings ask for. Pure functions of the settings and a moment: no clock, no I/O.

Hours are local wall time in the chat's zone (its own, else the bot's TIMEZONE): a digest at 9
goes at 9:00 on the zone's clocks in summer and in winter. On a day the clocks skip that hour
(spring forward) it goes at the moment they jump; on a day they show it twice (fall back), at
the first. Fixed offsets (UTC+4) have no such days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.models import ChatSettings, ChatType, DeliveryMode, Hold

# The named zones the settings offer, besides the fixed offsets: where the site's readers
# mostly live (Azerbaijan, its neighbours, the Turkic states, Russia) and the diaspora's big
# cities, first of all the zones that change their clocks (a fixed offset would be an hour off
# half of the year there) or have a half-hour offset (Tehran). Append only: buttons carry the
# index.
NAMED_ZONES = (
    "Asia/Baku",
    "Europe/Istanbul",
    "Asia/Tbilisi",
    "Europe/Moscow",
    "Asia/Tehran",
    "Asia/Tashkent",
    "Asia/Almaty",
    "Europe/Kyiv",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "Asia/Dubai",
)
# Whole-hour offsets from UTC, as fixed zones: every zone on Earth is within UTC−12…UTC+14.
OFFSETS = tuple(range(-12, 15))
# At the end of quiet hours, up to this many pieces go out one by one; more, as one digest.
QUIET_RELEASE_MAX = 3

_OFFSET_NAME = re.compile(r"UTC([+-])(1[0-4]|[1-9])")


def offset_name(hours: int) -> str:
    """The settings' name of a fixed offset: "UTC", "UTC+4", "UTC-3"."""
    return "UTC" if hours == 0 else f"UTC{hours:+d}"


def zone(name: str | None, default: tzinfo) -> tzinfo:
    """The time zone `name` stands for: a named zone or a fixed offset; `default` for None and
    for a name this bot cannot resolve (a zone its time-zone data no longer has)."""
    if name is None:
        return default
    if name == "UTC":
        return UTC
    if match := _OFFSET_NAME.fullmatch(name):
        hours = int(match.group(2)) * (1 if match.group(1) == "+" else -1)
        return timezone(timedelta(hours=hours), name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return default


def is_zone_name(name: str) -> bool:
    """True for a name the settings may store: a named zone of the list or a fixed offset."""
    return name in NAMED_ZONES or name in {offset_name(h) for h in OFFSETS}


def utc_offset(tz: tzinfo, at: float) -> timedelta:
    """The zone's offset from UTC at the moment `at`."""
    return datetime.fromtimestamp(at, UTC).astimezone(tz).utcoffset() or timedelta(0)


def wall_time(day: date, hour: int, tz: tzinfo) -> float:
    """The moment the clocks of `tz` show `hour`:00 on `day` (the first, if twice; the jump to
    summer time, if never)."""
    # fold=0 resolves an hour shown twice to its first time, and an hour skipped with the
    # offset from before the jump: the moment of the jump (zones change at whole hours).
    return datetime(day.year, day.month, day.day, hour, tzinfo=tz).timestamp()


def next_digest_at(hour: int, tz: tzinfo, after: float) -> float:
    """The first moment after `after` when the clocks of `tz` show `hour`:00."""
    today = datetime.fromtimestamp(after, UTC).astimezone(tz).date()
    candidates = (wall_time(today + timedelta(days=d), hour, tz) for d in range(-1, 3))
    return min(t for t in candidates if t > after)


def quiet_window(quiet: tuple[int, int], tz: tzinfo, now: float) -> Hold:
    """The quiet window that holds `now`, else the next one: from quiet[0]:00 until quiet[1]:00
    (the next day's, when it wraps midnight)."""
    start_hour, end_hour = quiet
    today = datetime.fromtimestamp(now, UTC).astimezone(tz).date()
    windows = []
    for d in range(-1, 3):
        day = today + timedelta(days=d)
        end_day = day if end_hour > start_hour else day + timedelta(days=1)
        start, end = wall_time(day, start_hour, tz), wall_time(end_day, end_hour, tz)
        if end > now and end > start:  # a window the clocks' jump swallowed has no length
            windows.append(Hold(start, end))
    return min(windows, key=lambda w: w.start or 0.0)


def planned_hold(settings: ChatSettings, chat_type: ChatType, now: float, default: tzinfo) -> Hold:
    """The hold the chat's settings ask for from `now` on: in digest mode its posts wait from
    now until the next digest; with quiet hours (private chats), in the current or next quiet
    window; else none."""
    tz = zone(settings.timezone, default)
    if settings.delivery is DeliveryMode.DIGEST:
        return Hold(now, next_digest_at(settings.digest_hour, tz, now))
    if chat_type.is_private and settings.quiet_hours is not None:
        return quiet_window(settings.quiet_hours, tz, now)
    return Hold()


def changed_hold(current: Hold, planned: Hold, now: float) -> Hold:
    """The hold after a change of the schedule: the planned one; but posts already held stay
    held (they are released by the scheduler, not by a change of mind), until the planned end
    if the plan holds them too, else at once (the scheduler then releases them by the quiet
    hours' rule: a few one by one, many as a digest)."""
    if not current.active(now):
        return planned
    return Hold(current.start, planned.until if planned.active(now) else now)


@dataclass(frozen=True, slots=True)
class ScheduleUpdate:
    """A change of a chat's delivery schedule, as a button asks it; None fields stay as they
    are. `timezone` "" is the bot's TIMEZONE; `quiet` (0, 0) turns quiet hours off."""

    delivery: DeliveryMode | None = None
    digest_hour: int | None = None
    timezone: str | None = None
    quiet: tuple[int, int] | None = None

    def applied(self, settings: ChatSettings, chat_type: ChatType) -> ChatSettings:
        """`settings` with this change; values out of range, zones the settings do not offer
        and quiet hours outside a private chat are ignored."""
        changes: dict[str, object] = {}
        if self.delivery is not None:
            changes["delivery"] = self.delivery
        if self.digest_hour is not None and 0 <= self.digest_hour < 24:
            changes["digest_hour"] = self.digest_hour
        if self.timezone == "":
            changes["timezone"] = None
        elif self.timezone is not None and is_zone_name(self.timezone):
            changes["timezone"] = self.timezone
        if self.quiet is not None and chat_type.is_private:
            start, end = self.quiet
            if start == end:
                changes["quiet_from"], changes["quiet_to"] = None, None
            elif 0 <= start < 24 and 0 <= end < 24:
                changes["quiet_from"], changes["quiet_to"] = start, end
        return replace(settings, **changes)  # type: ignore[arg-type]
