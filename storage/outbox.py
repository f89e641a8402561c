"""The outbox's kinds (migration 8): besides posts, the site's edits of posted pieces and notices
to admins are delivery rows, so they are durable, rate-limited, retried and crash-safe like
posts. Here: queue an edit or a notice, and read the outbox as the publisher does.

The publisher sweeps the pending rows in dispatch order (`sweep`, a bounded read of the pending
index that continues after the last row read), so what a send costs does not grow with the
outbox; `due_heads` loads the rows it picked that are still due and still first in their
chat's queue. A held chat's posts (a digest, quiet hours) are parked out of the sweep's range
(`park`) when the sweep meets them and come back when the hold has ended (`unpark`), so a long
hold is not read again on every sweep. `pending_heads` (every chat's head at once, a read of
the whole outbox) is for tests and the operator's tools.

Outcomes of every kind are written by `Store.record_outcomes`; an edit or notice is recorded
without a message id, so only posts name the messages a later edit must reach.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from storage.backends import Conn, Row
from storage.db import (
    CHAT_COLUMNS,
    DELIVERY_COLUMNS,
    ITEM_COLUMNS,
    Database,
    chat_from_row,
    delivery_from_row,
    item_from_row,
)
from storage.models import PARKED, Chat, ChatType, DueDelivery, Item
from storage.store import QueueHead

# A notice's place in the queue order: that of a post to a private chat (channels go first).
_NOTICE_PRIORITY = 2


class Kind(enum.StrEnum):
    POST = "post"
    EDIT = "edit"  # payload: {"message_id": the post's message}
    NOTICE = "notice"  # payload: {"text": Telegram HTML}; no item


@dataclass(frozen=True, slots=True)
class DueMessage:
    """A due edit or notice, with what the publisher needs to send it."""

    id: int
    kind: Kind
    chat: Chat
    attempts: int
    item: Item | None = None  # an edit: the piece as it is now
    message_id: int | None = None  # an edit: the message to edit
    text: str = ""  # a notice: its HTML
    # A notice that is (part of) a chat's digest: it goes out the way the chat's posts do
    # (its topic, silent or not) and the chat's refusals count as its posts' would.
    digest: bool = False


Due = DueDelivery | DueMessage


async def enqueue_edits(db: Database, item_id: int, since: float, now: float) -> int:
    """Queue an edit of every message sent for `item_id` at or after `since` to a chat still
    active; return how many. A message whose edit is still pending gets no second one: the
    pending edit renders the piece as it is when it is sent."""
    async with db.transaction() as conn:
        return await conn.execute(
            _ENQUEUE_EDITS.format(**_EDIT_JSON[conn.dialect]), (now, now, item_id, since)
        )


# An edit's payload names the message it re-renders: {"message_id": n}.
_EDIT_JSON = {
    "sqlite": {
        "payload": "json_object('message_id', d.message_id)",
        "message_id": "json_extract(e.payload, '$.message_id')",
    },
    "postgresql": {
        "payload": "json_build_object('message_id', d.message_id)::text",
        "message_id": "(e.payload::jsonb ->> 'message_id')::bigint",
    },
}
_ENQUEUE_EDITS = """
            INSERT INTO deliveries (item_id, chat_id, kind, payload, state, priority,
                                    next_attempt_at, created_at)
            SELECT d.item_id, d.chat_id, 'edit', {payload},
                   'pending', d.priority, ?, ?
            FROM deliveries d JOIN chats c ON c.id = d.chat_id
            WHERE d.item_id = ? AND d.kind = 'post' AND d.state = 'sent'
              AND d.message_id IS NOT NULL AND d.sent_at >= ? AND c.active = 1
              AND NOT EXISTS (
                  SELECT 1 FROM deliveries e
                  WHERE e.item_id = d.item_id AND e.chat_id = d.chat_id AND e.kind = 'edit'
                    AND e.state = 'pending'
                    AND {message_id} = d.message_id
              )
            ORDER BY d.priority, d.id
"""


async def enqueue_notice(db: Database, user_id: int, lang: str, text: str, now: float) -> int:
    """Queue the HTML `text` for the private chat of `user_id`; return the row's id.

    A user the bot has no chat with yet gets one (unsubscribed: it receives no pieces), so the
    row has a chat to belong to; if they never started the bot, Telegram refuses the notice.
    """
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO chats (id, type, lang, languages, active, subscribed, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, 1, 0, ?, ?) ON CONFLICT (id) DO NOTHING",
            (user_id, ChatType.PRIVATE.value, lang, lang, now, now),
        )
        notice_id = await conn.insert(
            "INSERT INTO deliveries (item_id, chat_id, kind, payload, state, priority, "
            "next_attempt_at, created_at) VALUES (NULL, ?, 'notice', ?, 'pending', ?, ?, ?)",
            (user_id, json.dumps({"text": text}, ensure_ascii=False),
             _NOTICE_PRIORITY, now, now),
        )  # fmt: skip
        return int(notice_id)


async def pending_heads(db: Database, now: float = math.inf) -> list[QueueHead]:
    """Return every chat's next pending row of any kind, channels first, then the oldest piece.

    Within a chat, notices come first, then rows in the order of their pieces. The posts of a
    chat held at `now` (a digest, quiet hours: storage.schedule) are left out; its edits and
    notices (its digests) are not. Without `now`, every chat with a hold start counts as held.
    """
    rows = await db.fetchall(_PENDING_HEADS[db.dialect], {"now": now})
    return [QueueHead(*row) for row in rows]


# The chats whose posts are held at :now.
_HELD = "SELECT id FROM chats WHERE hold_from <= :now"
_PENDING_HEADS = {
    # SQLite: the row of MIN(d.id) lends the group its other columns (its "bare columns").
    # Unheld chats are read from the pending index alone, as before holds existed; a held
    # chat's edits and notices from their own small index, never touching its held posts.
    "sqlite": f"""
        WITH held(id) AS ({_HELD}),
        heads AS (
            SELECT chat_id, MIN(IFNULL(item_id, 0)) AS item_key, COUNT(*) AS pending
            FROM deliveries WHERE state = 'pending' AND chat_id NOT IN held GROUP BY chat_id
            UNION ALL
            SELECT chat_id, MIN(IFNULL(item_id, 0)), COUNT(*)
            FROM deliveries INDEXED BY deliveries_pending_messages
            WHERE state = 'pending' AND kind != 'post' AND chat_id IN held
            GROUP BY chat_id
        )
        SELECT MIN(d.id), d.chat_id, d.priority, h.item_key, d.next_attempt_at, h.pending
        FROM heads h
        JOIN deliveries d ON d.chat_id = h.chat_id AND d.state = 'pending'
             AND IFNULL(d.item_id, 0) = h.item_key
             AND (d.kind != 'post' OR d.chat_id NOT IN held)
        GROUP BY d.chat_id
        ORDER BY d.priority, h.item_key, MIN(d.id)
        """,
    # PostgreSQL has no bare columns: DISTINCT ON picks each chat's first row instead.
    "postgresql": f"""
        SELECT id, chat_id, priority, item_key, next_attempt_at, pending FROM (
            SELECT DISTINCT ON (chat_id) id, chat_id, priority,
                   COALESCE(item_id, 0) AS item_key, next_attempt_at,
                   COUNT(*) OVER (PARTITION BY chat_id) AS pending
            FROM deliveries WHERE state = 'pending'
              AND (kind != 'post' OR chat_id NOT IN ({_HELD}))
            ORDER BY chat_id, COALESCE(item_id, 0), id
        ) heads
        ORDER BY priority, item_key, id
        """,
}


@dataclass(frozen=True, slots=True)
class Pending:
    """A pending row as the publisher's sweep reads it (no bodies)."""

    id: int
    chat_id: int
    priority: int
    item_id: int | None  # None: a notice, first in its chat's queue
    next_attempt_at: float
    held: bool  # a post of a chat held at the sweep's `now` (a digest, quiet hours)


async def sweep(db: Database, after: Pending | None, now: float, limit: int) -> list[Pending]:
    """Return up to `limit` pending rows after `after` (None: from the first) in dispatch
    order: by priority (channels, groups, private chats), then notices, then the oldest piece
    first, then by id. Parked rows (priority PARKED and up) are not read.

    A chat's own rows come in its queue's order (due_heads checks that a row is its chat's head
    before it goes, as rows may be queued behind a sweep). Each call reads the pending index
    from `after` on (at most three ranges of it): its cost is the rows it returns, however
    long the outbox.
    """
    if after is None:
        ranges: list[tuple[str, list[object]]] = [("d.priority < ?", [PARKED])]
    elif after.item_id is None:
        ranges = [
            ("d.priority = ? AND d.item_id IS NULL AND d.id > ?", [after.priority, after.id]),
            ("d.priority = ? AND d.item_id IS NOT NULL", [after.priority]),
        ]
    else:
        ranges = [
            ("d.priority = ? AND d.item_id = ? AND d.id > ?",
             [after.priority, after.item_id, after.id]),
            ("d.priority = ? AND d.item_id > ?", [after.priority, after.item_id]),
        ]  # fmt: skip
    if after is not None:
        ranges.append(("d.priority > ? AND d.priority < ?", [after.priority, PARKED]))
    found: list[Pending] = []
    for where, params in ranges:
        rows = await db.fetchall(
            _SWEEP.format(where=where, order=_SWEEP_ORDER[db.dialect]),
            [now, *params, limit - len(found)],
        )
        found += [
            Pending(int(r[0]), int(r[1]), int(r[2]), r[3], float(r[4]), bool(r[5])) for r in rows
        ]
        if len(found) >= limit:
            break
    return found


_SWEEP = """
SELECT d.id, d.chat_id, d.priority, d.item_id, d.next_attempt_at,
       CASE WHEN d.kind = 'post' AND c.hold_from <= ? THEN 1 ELSE 0 END
FROM deliveries d JOIN chats c ON c.id = d.chat_id
WHERE d.state = 'pending' AND {where}
ORDER BY {order} LIMIT ?
"""
# The pending index's order: SQLite sorts NULL first and keeps the rowid last on its own.
_SWEEP_ORDER = {
    "sqlite": "d.priority, d.item_id, d.id",
    "postgresql": "d.priority, d.item_id NULLS FIRST, d.id",
}


async def park(db: Database, chat_ids: Sequence[int], now: float) -> int:
    """Move the pending posts of those of `chat_ids` still held at `now` out of the sweep's
    range (priority + PARKED) and mark the chats parked; return how many rows moved.

    A chat with a send in flight must not be given: its row would be recorded sent with the
    parked priority.
    """
    async with db.transaction() as conn:
        return await _shift(conn, list(chat_ids), now, park=True)


async def unpark(db: Database, now: float) -> int:
    """Bring the parked posts of the chats no longer held at `now` back into the sweep's range;
    return how many rows came back. Reads only the parked chats whose hold has ended."""
    rows = await db.fetchall(
        "SELECT id FROM chats WHERE parked = 1 AND hold_from IS NULL "
        "UNION ALL SELECT id FROM chats WHERE parked = 1 AND hold_from > ?",
        (now,),
    )
    chat_ids = [int(row[0]) for row in rows]
    if not chat_ids:
        return 0  # the usual case: no write at all
    async with db.transaction() as conn:
        return await _shift(conn, chat_ids, now, park=False)


async def _shift(conn: Conn, chat_ids: list[int], now: float, *, park: bool) -> int:
    """Park (or bring back) the pending posts of those of `chat_ids` held (or no longer held)
    at `now`, as the write lock sees them, and mark the chats; return how many rows moved."""
    if park:
        which, priority, rows = "hold_from <= ?", "priority + ?", "kind = 'post' AND priority < ?"
    else:
        which, priority, rows = (
            "(hold_from IS NULL OR hold_from > ?)",
            "priority - ?",
            "priority >= ?",
        )
    moved = 0
    for start in range(0, len(chat_ids), 500):
        chunk = chat_ids[start : start + 500]
        chats = f"SELECT id FROM chats WHERE id IN ({','.join('?' * len(chunk))}) AND {which}"
        moved += await conn.execute(
            f"UPDATE deliveries SET priority = {priority} WHERE chat_id IN ({chats}) "
            f"AND state = 'pending' AND {rows}",
            [PARKED, *chunk, now, PARKED],
        )
        await conn.execute(
            f"UPDATE chats SET parked = {int(park)} WHERE id IN ({chats})", [*chunk, now]
        )
    return moved


async def due_heads(
    db: Database, delivery_ids: Sequence[int], now: float
) -> list[tuple[Due, bool]]:
    """Load those of `delivery_ids` still pending, due and first in their chat's queue, in the
    order given, each with whether its chat has more pending rows behind it. A post whose
    chat became held meanwhile is not due; nor is a row behind one of its chat's that waits
    (a retry, a held post) or was queued ahead of it meanwhile (a notice)."""
    found: dict[int, tuple[Due, bool]] = {}
    items: dict[int, Item] = {}  # a fan-out's rows share a few pieces: each is read once
    for start in range(0, len(delivery_ids), 500):
        chunk = delivery_ids[start : start + 500]
        rows = await db.fetchall(
            _DUE_HEADS.format(ids=",".join("?" * len(chunk))), [now, now, *chunk]
        )
        for row in rows:
            due = _due(row, items)
            found[due.delivery.id if isinstance(due, DueDelivery) else due.id] = (
                due,
                bool(row[_MORE]),
            )
    return [found[i] for i in delivery_ids if i in found]


async def due_by_ids(db: Database, delivery_ids: Sequence[int], now: float) -> list[Due]:
    """Load those of `delivery_ids` still pending, due and first in their chat's queue, in the
    order given (see due_heads)."""
    return [due for due, _ in await due_heads(db, delivery_ids, now)]


# A chat's queue order: notices (no item) first, then by piece, then by id.
_DUE_HEADS = f"""
SELECT d.kind, d.payload, {DELIVERY_COLUMNS}, {ITEM_COLUMNS}, {CHAT_COLUMNS},
       EXISTS (SELECT 1 FROM deliveries m
               WHERE m.chat_id = d.chat_id AND m.state = 'pending' AND m.id != d.id)
FROM deliveries d LEFT JOIN items i ON i.id = d.item_id
JOIN chats c ON c.id = d.chat_id
WHERE d.state = 'pending' AND d.next_attempt_at <= ?
  AND (d.kind != 'post' OR c.hold_from IS NULL OR c.hold_from > ?)
  AND NOT EXISTS (SELECT 1 FROM deliveries e
                  WHERE e.chat_id = d.chat_id AND e.state = 'pending'
                    AND (COALESCE(e.item_id, 0) < COALESCE(d.item_id, 0)
                         OR (COALESCE(e.item_id, 0) = COALESCE(d.item_id, 0) AND e.id < d.id)))
  AND d.id IN ({{ids}})
"""
_MORE = 2 + 11 + 14 + 14  # the column after the chat's


def _due(row: Row, items: dict[int, Item]) -> Due:
    kind = Kind(row[0])
    payload = json.loads(row[1]) if row[1] else {}
    chat = chat_from_row(row, 2 + 11 + 14)
    if kind is Kind.NOTICE:
        delivery_id, attempts = int(row[2]), int(row[2 + 5])
        return DueMessage(
            delivery_id, kind, chat, attempts, text=str(payload.get("text", "")),
            digest=payload.get("digest") is True,
        )  # fmt: skip
    delivery = delivery_from_row(row, 2)
    item = items.get(delivery.item_id)
    if item is None:
        item = items[delivery.item_id] = item_from_row(row, 2 + 11)
    if kind is Kind.POST:
        return DueDelivery(delivery=delivery, item=item, chat=chat)
    message_id = payload.get("message_id")
    return DueMessage(
        delivery.id, kind, chat, delivery.attempts, item=item,
        message_id=int(message_id) if message_id is not None else None,
    )  # fmt: skip
