"""Storage for the channel-admin feature: audited settings changes, no-right incidents, forum
topics, and the event queries behind /stats. Each function is one short transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.backends import Conn
from storage.db import CHAT_COLUMNS, chat_from_row
from storage.models import Chat, ChatSettings
from storage.store import Store


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One setting as it was and as it became, in plain words ("style", "text", "photo")."""

    what: str
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class ChatChange:
    """What an admin's action changes in a chat; None fields stay as they are."""

    audit: tuple[AuditLine, ...]
    lang: str | None = None  # the reply language
    languages: tuple[str, ...] | None = None
    paused: bool | None = None
    subscribed: bool | None = None
    settings: ChatSettings | None = None


@dataclass(frozen=True, slots=True)
class SettingsChange:
    chat_id: int
    user_id: int | None  # None: the bot itself (e.g. paused for a missing right)
    user_name: str | None
    at: float
    what: str
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class Incident:
    """The bot could not post to a chat and paused it; its admins have been told."""

    chat_id: int
    reason: str
    missing_right: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Topic:
    chat_id: int
    thread_id: int
    name: str


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    kind: str
    chat_id: int | None
    feed_id: int | None
    detail: str


async def _read_chat(conn: Conn, chat_id: int) -> Chat | None:
    row = await conn.fetchone(f"SELECT {CHAT_COLUMNS} FROM chats c WHERE c.id = ?", (chat_id,))
    return chat_from_row(row) if row else None


async def _audit(
    conn: Conn,
    chat_id: int,
    user_id: int | None,
    user_name: str | None,
    now: float,
    lines: Sequence[AuditLine],
) -> None:
    await conn.executemany(
        "INSERT INTO settings_changes (chat_id, user_id, user_name, at, what, old, new) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(chat_id, user_id, user_name, now, a.what, a.old, a.new) for a in lines],
    )


async def _hold_pending(conn: Conn, chat_id: int) -> None:
    # A paused chat gets nothing that was still queued; /why shows these as paused.
    await conn.execute(
        "UPDATE deliveries SET state = 'skipped', last_error = 'paused' "
        "WHERE chat_id = ? AND state = 'pending'",
        (chat_id,),
    )


async def change_chat(
    store: Store,
    chat_id: int,
    mutate: Callable[[Chat], ChatChange | None],
    *,
    user_id: int | None,
    user_name: str | None,
    now: float,
) -> tuple[Chat, ChatChange | None] | None:
    """Apply `mutate(current chat)` and record it in the audit trail, in one transaction.

    Returns the chat after the change and the change (None when `mutate` changed nothing), or
    None when the chat is unknown. Pausing holds the chat's queued posts; resuming closes an
    open no-right incident so that a new one is reported again.
    """
    async with store.transaction() as conn:
        chat = await _read_chat(conn, chat_id)
        if chat is None:
            return None
        change = mutate(chat)
        if change is None:
            return chat, None
        sets: list[str] = []
        params: list[Any] = []
        if change.lang is not None:
            sets.append("lang = ?")
            params.append(change.lang)
        if change.languages is not None:
            sets.append("languages = ?")
            params.append(",".join(change.languages))
        if change.paused is not None:
            sets.append("paused = ?")
            params.append(int(change.paused))
        if change.subscribed is not None:
            sets.append("subscribed = ?")
            params.append(int(change.subscribed))
        if change.settings is not None:
            sets.append("settings = ?")
            params.append(change.settings.to_json())
        sets.append("updated_at = ?")
        params.extend([now, chat_id])
        await conn.execute(f"UPDATE chats SET {', '.join(sets)} WHERE id = ?", params)
        if change.paused:
            await _hold_pending(conn, chat_id)
        elif change.paused is False:
            await conn.execute("DELETE FROM chat_incidents WHERE chat_id = ?", (chat_id,))
        await _audit(conn, chat_id, user_id, user_name, now, change.audit)
        updated = await _read_chat(conn, chat_id)
    assert updated is not None
    return updated, change


async def disconnect_chat(
    store: Store, chat_id: int, *, user_id: int | None, user_name: str | None, now: float
) -> bool:
    """Stop posting to a chat for good (until the bot is added again); False if unknown."""
    async with store.transaction() as conn:
        changed = await conn.execute(
            "UPDATE chats SET active = 0, subscribed = 0, deactivated_reason = 'disconnected', "
            "updated_at = ? WHERE id = ?",
            (now, chat_id),
        )
        if changed == 0:
            return False
        await conn.execute(
            "UPDATE deliveries SET state = 'cancelled', last_error = 'disconnected' "
            "WHERE chat_id = ? AND state = 'pending'",
            (chat_id,),
        )
        await conn.execute("DELETE FROM chat_incidents WHERE chat_id = ?", (chat_id,))
        await _audit(conn, chat_id, user_id, user_name, now, [AuditLine("connected", "on", "off")])
    return True


async def pause_for_incident(
    store: Store, chat_id: int, reason: str, missing_right: str | None, now: float
) -> bool:
    """Pause a chat the bot could not post to; return True when this is a new incident.

    The piece that was refused (the chat's oldest queued one) is marked failed with Telegram's
    reason; the rest of the queue is held as paused. Only a new incident should be reported
    to the admins, so a restart or a second refusal never repeats the message.
    """
    async with store.transaction() as conn:
        chat = await _read_chat(conn, chat_id)
        if chat is None:
            return False
        new = (
            await conn.execute(
                "INSERT INTO chat_incidents (chat_id, reason, missing_right, at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (chat_id) DO NOTHING",
                (chat_id, reason[:500], missing_right, now),
            )
            == 1
        )
        await conn.execute(
            "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = ?, "
            "sent_at = ? WHERE id = (SELECT id FROM deliveries WHERE chat_id = ? "
            "AND state = 'pending' ORDER BY COALESCE(item_id, 0), id LIMIT 1)",
            (reason[:500], now, chat_id),
        )
        await _hold_pending(conn, chat_id)
        await conn.execute(
            "UPDATE chats SET paused = 1, active = 1, deactivated_reason = NULL, updated_at = ? "
            "WHERE id = ?",
            (now, chat_id),
        )
        if new and not chat.paused:
            await _audit(conn, chat_id, None, None, now, [AuditLine("paused", "off", "on")])
    return new


async def get_incident(store: Store, chat_id: int) -> Incident | None:
    row = await store.fetchone(
        "SELECT chat_id, reason, missing_right, at FROM chat_incidents WHERE chat_id = ?",
        (chat_id,),
    )
    return Incident(row[0], row[1], row[2], row[3]) if row else None


async def list_changes(store: Store, chat_id: int, limit: int = 10) -> list[SettingsChange]:
    """Return the chat's most recent settings changes, newest first."""
    rows = await store.fetchall(
        "SELECT chat_id, user_id, user_name, at, what, old, new FROM settings_changes "
        "WHERE chat_id = ? ORDER BY at DESC, id DESC LIMIT ?",
        (chat_id, limit),
    )
    return [SettingsChange(*tuple(r)) for r in rows]


async def remember_topic(store: Store, chat_id: int, thread_id: int, name: str, now: float) -> None:
    """Note a forum topic (created, renamed or used with /here) of a chat the bot knows.

    An empty `name` (unknown) keeps the name already stored.
    """
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO forum_topics (chat_id, thread_id, name, seen_at) "
            "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM chats WHERE id = ?) "
            "ON CONFLICT(chat_id, thread_id) DO UPDATE SET seen_at = excluded.seen_at, "
            "name = CASE WHEN excluded.name = '' THEN name ELSE excluded.name END",
            (chat_id, thread_id, name[:128], now, chat_id),
        )


async def list_topics(store: Store, chat_id: int, limit: int = 20) -> list[Topic]:
    rows = await store.fetchall(
        "SELECT chat_id, thread_id, name FROM forum_topics WHERE chat_id = ? "
        "ORDER BY seen_at DESC LIMIT ?",
        (chat_id, limit),
    )
    return [Topic(r[0], r[1], r[2]) for r in rows]


async def count_events(store: Store, kind: str, since: float) -> int:
    row = await store.fetchone(
        "SELECT COUNT(*) FROM events WHERE kind = ? AND at >= ?", (kind, since)
    )
    return int(row[0]) if row else 0


async def recent_events(store: Store, kinds: Sequence[str], limit: int = 5) -> list[Event]:
    """Return the newest events of the given kinds."""
    rows = await store.fetchall(
        f"SELECT at, kind, chat_id, feed_id, detail FROM events "
        f"WHERE kind IN ({','.join('?' * len(kinds))}) ORDER BY at DESC, id DESC LIMIT ?",
        [*kinds, limit],
    )
    return [Event(*tuple(r)) for r in rows]


# ---------------------------------------------------------------------- the panel's questions


async def expect_input(
    store: Store, user_id: int, chat_id: int, kind: str, *, now: float, ttl: float, keep: int
) -> None:
    """Remember that `user_id` was asked to type `kind` for `chat_id` (replacing any earlier
    question); forget expired questions, and the oldest beyond `keep`."""
    async with store.transaction() as conn:
        await conn.execute("DELETE FROM pending_inputs WHERE expires_at <= ?", (now,))
        await conn.execute(
            "INSERT INTO pending_inputs (user_id, chat_id, kind, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET chat_id = excluded.chat_id, "
            "kind = excluded.kind, expires_at = excluded.expires_at",
            (user_id, chat_id, kind, now + ttl),
        )
        await conn.execute(
            "DELETE FROM pending_inputs WHERE user_id NOT IN (SELECT user_id FROM pending_inputs "
            "ORDER BY expires_at DESC LIMIT ?)",
            (keep,),
        )


async def peek_input(store: Store, user_id: int, now: float) -> tuple[int, str] | None:
    """(chat id, kind) of the question `user_id` has open, None when none (or it expired)."""
    row = await store.fetchone(
        "SELECT chat_id, kind FROM pending_inputs WHERE user_id = ? AND expires_at > ?",
        (user_id, now),
    )
    return None if row is None else (int(row[0]), str(row[1]))


async def pop_input(store: Store, user_id: int, now: float) -> tuple[int, str] | None:
    """Take the question `user_id` has open (it is closed now), None when none."""
    async with store.transaction() as conn:
        row = await conn.fetchone(
            "DELETE FROM pending_inputs WHERE user_id = ? RETURNING chat_id, kind, expires_at",
            (user_id,),
        )
    if row is None or float(row[2]) <= now:
        return None
    return int(row[0]), str(row[1])
