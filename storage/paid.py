"""Paid broadcasts sent per day (migration 14): what the daily Stars cap is checked against
after a restart. `Store.record_outcomes` adds a batch's paid sends in the batch's own
transaction, so the count is exactly the paid sends recorded as sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from storage.backends import Conn
from storage.db import Database


async def today(db: Database, day: str) -> tuple[str, int]:
    """Return (`day`, the paid sends recorded on it)."""
    row = await db.fetchone("SELECT sends FROM paid_sends WHERE day = ?", (day,))
    return day, int(row[0]) if row is not None else 0


async def add(conn: Conn, days: Iterable[str]) -> None:
    """Count one paid send for each entry of `days` (inside the caller's transaction)."""
    for day, sends in sorted(Counter(days).items()):
        await conn.execute(
            "INSERT INTO paid_sends (day, sends) VALUES (?, ?) "
            "ON CONFLICT (day) DO UPDATE SET sends = paid_sends.sends + excluded.sends",
            (day, sends),
        )
