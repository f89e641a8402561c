"""Delivery schedules in the store (migration 13): a chat's hold (its posts wait for a daily
digest or the end of its quiet hours), the chats whose hold has ended, and ending one.

A held chat's posts fan out as usual (storage.store) and stay pending; the publisher skips
them while `hold_from <= now` (storage.outbox). The leader's scheduler (bot.delivery.digests)
ends a hold in ONE transaction, `release`: it moves the hold on (compare-and-set on the hold
it read), queues the digest as notice rows and consumes the posts it lists. A crash before
the commit changes nothing, after it everything, so a digest is made once, and no piece is
lost or put in two digests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from storage.backends import Conn, Row
from storage.db import CHAT_COLUMNS, ITEM_COLUMNS, Database, chat_from_row, item_from_row
from storage.models import Chat, ChatSettings, DeliveryState, Hold, Item

# Why a post that went out inside a digest was not sent on its own (/why tells it).
DIGEST_REASON = "digest"


@dataclass(frozen=True, slots=True)
class ScheduleChange:
    """A chat's new settings and hold after a change of its schedule, with the audit lines
    (what, old, new) the settings trail keeps."""

    settings: ChatSettings
    hold: Hold
    audit: tuple[tuple[str, str | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class Held:
    """A chat whose hold has ended, as the scheduler reads it."""

    chat: Chat
    hold: Hold


@dataclass(frozen=True, slots=True)
class Waiting:
    """A post waiting in a held chat's queue: its delivery row and its piece."""

    delivery_id: int
    item: Item


class ReleaseConflict(Exception):
    """What the scheduler read changed before its release committed; nothing was written."""


async def get_hold(db: Database, chat_id: int) -> Hold:
    """The chat's hold (no hold for an unknown chat)."""
    row = await db.fetchone("SELECT hold_from, held_until FROM chats WHERE id = ?", (chat_id,))
    return Hold() if row is None else _hold(row, 0)


async def change_schedule(
    db: Database,
    chat_id: int,
    mutate: Callable[[Chat, Hold], ScheduleChange | None],
    *,
    user_id: int | None,
    user_name: str | None,
    now: float,
) -> tuple[Chat, bool] | None:
    """Apply `mutate(chat, hold)` (pure: it runs inside the transaction) and store the new
    settings, hold and audit lines in one transaction; return the chat after it and whether
    anything changed, None for an unknown chat."""
    async with db.transaction() as conn:
        row = await conn.fetchone(
            f"SELECT {CHAT_COLUMNS}, c.hold_from, c.held_until FROM chats c WHERE c.id = ?",
            (chat_id,),
        )
        if row is None:
            return None
        chat = chat_from_row(row)
        change = mutate(chat, _hold(row, 14))
        if change is None:
            return chat, False
        await conn.execute(
            "UPDATE chats SET settings = ?, hold_from = ?, held_until = ?, updated_at = ? "
            "WHERE id = ?",
            (change.settings.to_json(), change.hold.start, change.hold.until, now, chat_id),
        )
        if change.audit:
            await conn.executemany(
                "INSERT INTO settings_changes (chat_id, user_id, user_name, at, what, old, new) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(chat_id, user_id, user_name, now, *line) for line in change.audit],
            )
        updated = await conn.fetchone(
            f"SELECT {CHAT_COLUMNS} FROM chats c WHERE c.id = ?", (chat_id,)
        )
    assert updated is not None
    return chat_from_row(updated), True


async def holds_ended(db: Database, now: float, limit: int) -> list[Held]:
    """The chats whose hold ended at or before `now`, the longest-ended first (at most `limit`)."""
    rows = await db.fetchall(
        f"SELECT {CHAT_COLUMNS}, c.hold_from, c.held_until FROM chats c "
        "WHERE c.held_until <= ? ORDER BY c.held_until, c.id LIMIT ?",
        (now, limit),
    )
    return [Held(chat_from_row(row), _hold(row, 14)) for row in rows]


async def next_hold_end(db: Database, exclude: Sequence[int] = ()) -> float | None:
    """When the next hold ends, of the chats not in `exclude` (None: no hold is planned)."""
    others = f"AND id NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
    row = await db.fetchone(
        f"SELECT MIN(held_until) FROM chats WHERE held_until IS NOT NULL {others}", list(exclude)
    )
    return None if row is None or row[0] is None else float(row[0])


async def waiting_posts(db: Database, chat_id: int) -> list[Waiting]:
    """The chat's pending posts with their pieces, in the order of the pieces."""
    rows = await db.fetchall(
        f"SELECT d.id, {ITEM_COLUMNS} FROM deliveries d JOIN items i ON i.id = d.item_id "
        "WHERE d.chat_id = ? AND d.state = 'pending' AND d.kind = 'post' ORDER BY d.item_id",
        (chat_id,),
    )
    return [Waiting(int(row[0]), item_from_row(row, 1)) for row in rows]


async def release(
    db: Database,
    chat_id: int,
    read: Hold,
    next_hold: Hold,
    now: float,
    *,
    digest: Sequence[str] = (),
    consumed: Sequence[int] = (),
    priority: int = 0,
) -> int:
    """End the chat's hold `read` in one transaction; return how many digest rows it queued.

    The hold becomes `next_hold` only if it is still `read` (else ReleaseConflict: another
    release or a settings change came first). `digest`, the messages of a digest (Telegram
    HTML, in order), is queued as notice rows with the queue `priority` of the chat's posts
    (within the chat, notices go first, in order), and the posts `consumed` (which it lists) are
    marked skipped with the reason "digest" — every one of them still pending, else
    ReleaseConflict. Posts not consumed go out as they are once the hold is over; they became
    due only now, so readiness does not count the hours they waited as lateness.
    """
    same, same_params = _same_hold(read)
    async with db.transaction() as conn:
        moved = await conn.execute(
            f"UPDATE chats SET hold_from = ?, held_until = ? WHERE id = ? AND {same}",
            [next_hold.start, next_hold.until, chat_id, *same_params],
        )
        if moved != 1:
            raise ReleaseConflict(f"chat {chat_id}: its hold changed")
        if consumed:
            taken = await _consume(conn, chat_id, consumed, now)
            if taken != len(consumed):
                raise ReleaseConflict(f"chat {chat_id}: {len(consumed) - taken} post(s) moved on")
        # One statement per message, in order: the rows' ids are the order they go out in.
        for html in digest:
            await conn.execute(
                "INSERT INTO deliveries (item_id, chat_id, kind, payload, state, priority, "
                "next_attempt_at, created_at) VALUES (NULL, ?, 'notice', ?, 'pending', ?, ?, ?)",
                (chat_id, json.dumps({"text": html, "digest": True}, ensure_ascii=False),
                 priority, now, now),
            )  # fmt: skip
        if not next_hold.active(now):
            await conn.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE chat_id = ? AND state = 'pending' "
                "AND kind = 'post' AND next_attempt_at < ?",
                (now, chat_id, now),
            )
    return len(digest)


def _same_hold(hold: Hold) -> tuple[str, list[float]]:
    """The condition that the chat's hold is still `hold`, and its parameters."""
    parts, params = [], []
    for column, value in (("hold_from", hold.start), ("held_until", hold.until)):
        if value is None:
            parts.append(f"{column} IS NULL")
        else:
            parts.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(parts), params


async def _consume(conn: Conn, chat_id: int, ids: Sequence[int], now: float) -> int:
    taken = 0
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        taken += await conn.execute(
            f"UPDATE deliveries SET state = '{DeliveryState.SKIPPED.value}', last_error = ?, "
            f"sent_at = ? WHERE chat_id = ? AND kind = 'post' AND state = 'pending' "
            f"AND id IN ({','.join('?' * len(chunk))})",
            [DIGEST_REASON, now, chat_id, *chunk],
        )
    return taken


def _hold(row: Row, offset: int) -> Hold:
    start, until = row[offset], row[offset + 1]
    return Hold(None if start is None else float(start), None if until is None else float(until))
