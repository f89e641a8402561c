"""What paid broadcasts may spend today: the daily Stars cap and the count of paid sends.

Telegram charges each message sent with `allow_paid_broadcast` (0.1 Star, Bot API docs); the
free rate costs nothing. The rate limiter asks `may_pay()` before it lets a send go beyond the
free rate, and charges a paid slot at once, so sends already in flight count against the cap;
a paid send Telegram refused gives its slot back. Days are the bot's TIMEZONE days. The count
survives restarts: the publisher records each paid send with its outcome (storage.paid), and
the composition root loads the day's count at start.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

# Telegram's price of one paid-broadcast message, in Stars.
STARS_PER_MESSAGE = 0.1


def paid_messages(stars: int) -> int:
    """How many paid messages `stars` Stars buy."""
    # Stars are whole numbers and the price a tenth: no rounding trouble in 10 * stars.
    return math.floor(stars / STARS_PER_MESSAGE + 1e-9)


class PaidBudget:
    """Today's paid sends against the cap (None: no cap)."""

    def __init__(self, daily_stars: int | None, zone: ZoneInfo, now: Callable[[], float]) -> None:
        self.cap = None if daily_stars is None else paid_messages(daily_stars)
        self.zone = zone
        self._now = now
        self._span = (math.inf, -math.inf, "")  # [start, end) of the day last named, and it
        self.day = self.today()
        self.spent = 0  # paid sends charged today, in flight included
        self._warned = False

    def today(self) -> str:
        """The day (YYYY-MM-DD in the bot's time zone) a send made now is counted in."""
        # Asked for every paid send: the day's bounds are worked out once a day.
        now = self._now()
        start, end, day = self._span
        if start <= now < end:
            return day
        date = dt.datetime.fromtimestamp(now, self.zone).date()
        midnight = dt.datetime.combine(date, dt.time(), tzinfo=self.zone)
        following = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=self.zone)
        self._span = (midnight.timestamp(), following.timestamp(), date.isoformat())
        return self._span[2]

    def load(self, day: str, spent: int) -> None:
        """Start from what the store says was spent on `day` (a restart keeps the cap)."""
        if day == self.today():
            self.day, self.spent = day, max(self.spent, spent)

    def _roll(self) -> None:
        day = self.today()
        if day != self.day:
            self.day, self.spent, self._warned = day, 0, False

    def may_pay(self) -> bool:
        """True while a paid send fits under today's cap."""
        if self.cap is None:
            return True
        self._roll()
        if self.spent < self.cap:
            return True
        if not self._warned:
            self._warned = True
            log.warning("paid broadcasts reached today's cap of %d messages "
                        "(PAID_BROADCAST_DAILY_STARS); sending at the free rate until the day "
                        "ends", self.cap)  # fmt: skip
        return False

    def charge(self) -> None:
        """A paid slot was taken (called by the rate limiter)."""
        self._roll()
        self.spent += 1

    def refund(self) -> None:
        """A paid send was not delivered: Telegram charges nothing for it."""
        self.spent = max(0, self.spent - 1)

    @property
    def stars_today(self) -> float:
        return round(self.spent * STARS_PER_MESSAGE, 1)
