"""The leader lease: one row naming the instance that polls the feeds and publishes, until when
(the database's own clock, so hosts' clocks never disagree about it), and under which epoch.

An instance holds the lease by renewing it before it expires; another takes it only once it
has expired, and taking it raises the epoch. The epoch is the fence: a deposed leader that
wakes up (a frozen process, a partitioned host) finds it changed and sends nothing more.
"""

from __future__ import annotations

from storage.backends import Conn
from storage.db import Database

# Seconds since the epoch by the database's clock.
_NOW = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())::double precision",
}

_TAKE = """
INSERT INTO leader_lease (id, holder, epoch, expires_at) VALUES (1, :holder, 1, {now} + :ttl)
ON CONFLICT (id) DO UPDATE SET
    epoch = CASE WHEN leader_lease.holder = excluded.holder THEN leader_lease.epoch
                 ELSE leader_lease.epoch + 1 END,
    holder = excluded.holder,
    expires_at = excluded.expires_at
WHERE leader_lease.holder = excluded.holder OR leader_lease.expires_at < {now}
RETURNING epoch
"""


async def take(db: Database, holder: str, ttl: float) -> int | None:
    """Take the lease, or renew it if `holder` has it; return its epoch, None if another has it."""
    async with db.transaction() as conn:
        epoch = await conn.fetchval(
            _TAKE.format(now=_NOW[conn.dialect]), {"holder": holder, "ttl": float(ttl)}
        )
    return None if epoch is None else int(epoch)


async def holds(conn: Conn, holder: str, epoch: int, *, unexpired: bool = True) -> bool:
    """Whether `holder` still has the lease at `epoch` and (`unexpired`) it has not expired.

    unexpired=False asks only whether nobody else took it since: an expired lease that still
    names `holder` at `epoch` was taken by no one, so what `holder` writes is still safe."""
    expiry = f" AND expires_at >= {_NOW[conn.dialect]}" if unexpired else ""
    row = await conn.fetchone(
        f"SELECT 1 FROM leader_lease WHERE id = 1 AND holder = ? AND epoch = ?{expiry}",
        (holder, epoch),
    )
    return row is not None


async def still_holds(db: Database, holder: str, epoch: int) -> bool:
    async with db.reading() as conn:
        return await holds(conn, holder, epoch)


async def release(db: Database, holder: str) -> None:
    """Give the lease up at a graceful stop, so a standby takes over at once."""
    async with db.transaction() as conn:
        await conn.execute(
            f"UPDATE leader_lease SET expires_at = {_NOW[conn.dialect]} - 1 WHERE holder = ?",
            (holder,),
        )


async def current(db: Database) -> tuple[str, int, float] | None:
    """(holder, epoch, seconds left) of the lease, None if nobody ever took it."""
    row = await db.fetchone(
        f"SELECT holder, epoch, expires_at - {_NOW[db.dialect]} FROM leader_lease WHERE id = 1"
    )
    return None if row is None else (str(row[0]), int(row[1]), float(row[2]))
