"""All SQL of the bot: one aiosqlite connection, one short transaction per call, typed results."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage import follows, lease
from storage import paid as paid_sends
from storage.backends import Conn, Row
from storage.db import (
    CHAT_COLUMNS,
    DELIVERY_COLUMNS,
    ITEM_COLUMNS,
    Database,
    SchemaMismatchError,
    SearchHook,
    WriteHook,
    chat_from_row,
    delivery_from_row,
    item_from_row,
)
from storage.models import (
    PARKED,
    Chat,
    ChatSettings,
    ChatType,
    Delivery,
    DeliveryState,
    DueDelivery,
    FanOut,
    Feed,
    FeedStatus,
    Item,
    ItemOrigin,
    NewItem,
    OutcomeRecord,
    PollOutcome,
)
from storage.search import forget_docs

__all__ = ["OutboxDepth", "QueueHead", "SchemaMismatchError", "SearchHook", "Store", "WriteHook"]

log = logging.getLogger(__name__)

# Rows one chunk of a fan-out inserts at most (chats per chunk: this / the job's items). About
# 0.1 s of work on SQLite: what any other write may wait for while a million rows are queued.
FAN_OUT_CHUNK = 10_000
# The chunk's size follows its time: the same rows cost more on a busy disk or in the pages a
# retention freed all over the file (a million took 11.9 s there against 7.5 s fresh, and
# another process's write waited 1.33 s), and it is the time that other writers wait for.
# Each chunk is sized from the last one's pace, changing by at most half or double a step,
# never below _MIN_CHUNK rows.
_CHUNK_SECONDS = 0.1
_MIN_CHUNK = 500
# SQLite: after this long of back-to-back chunks (seconds) the fan-out pauses for longer than
# SQLite's busy handler sleeps between its tries (100 ms), so a write of another process waiting
# for the file gets in; between two chunks alone it would almost never catch the lock free.
_SQLITE_BUSY_FOR = 0.5
_SQLITE_PAUSE = 0.12


@dataclass(frozen=True, slots=True)
class QueueHead:
    """A chat's oldest pending delivery, as the publisher's scheduler sees it (no row bodies)."""

    delivery_id: int
    chat_id: int
    priority: int
    item_id: int
    next_attempt_at: float
    pending: int  # how many deliveries the chat has pending, this one included


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """The outbox at a glance, for readiness and metrics."""

    pending: int  # every pending row, held ones included
    due: int  # pending and next_attempt_at <= now: not held for a retry, a digest or quiet hours
    oldest_due_at: float | None  # when the longest-waiting due row became due
    held: int = 0  # posts of chats held for their digest or quiet hours (storage.schedule)


class Store(Database):
    """The bot's persistence: `await Store.open(path)`, then `await store.close()`.

    Feeds, items, chats and the outbox; the other storage modules (admin, articles, search,
    search_keys) are functions over a Store through the public API of storage.db.
    """

    # Rows one transaction of a fan-out inserts at most (see expand_fan_outs); tests lower it.
    fan_out_chunk: int = FAN_OUT_CHUNK

    def __init__(self, conn: Conn) -> None:
        super().__init__(conn)
        # One expansion at a time in this process: jobs are expanded oldest first, so a chat
        # gets the rows of its pieces in the order of the pieces.
        self._expanding = asyncio.Lock()
        self._chunk_rows = FAN_OUT_CHUNK  # the next chunk's rows, learnt from the last's pace

    # ------------------------------------------------------------------ feeds

    async def ensure_feed(self, url: str, lang: str) -> Feed:
        """Register a configured feed (keeping its state if known) and return it."""
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO feeds (url, lang) VALUES (?, ?) "
                "ON CONFLICT(url) DO UPDATE SET lang = excluded.lang",
                (url, lang),
            )
        feed = await self.get_feed_by_url(url)
        assert feed is not None
        return feed

    async def get_feed_by_url(self, url: str) -> Feed | None:
        row = await self.fetchone(_FEED_SELECT + " WHERE f.url = ?", (url,))
        return _feed(row) if row else None

    async def get_feed(self, feed_id: int) -> Feed | None:
        row = await self.fetchone(_FEED_SELECT + " WHERE f.id = ?", (feed_id,))
        return _feed(row) if row else None

    async def list_feeds(self) -> list[Feed]:
        rows = await self.fetchall(_FEED_SELECT + " ORDER BY f.id")
        return [_feed(r) for r in rows]

    async def record_not_modified(self, feed_id: int, now: float, next_poll_at: float) -> None:
        """Note a 304 answer: the feed is healthy and nothing changed."""
        async with self.transaction() as conn:
            await conn.execute(
                "UPDATE feeds SET status = 'ok', error_streak = 0, last_error = NULL, "
                "last_polled_at = ?, last_success_at = ?, next_poll_at = ? WHERE id = ?",
                (now, now, next_poll_at, feed_id),
            )

    async def record_feed_error(
        self, feed_id: int, error: str, now: float, next_poll_at: float
    ) -> int:
        """Note a failed poll; return the new error streak."""
        async with self.transaction() as conn:
            await conn.execute(
                "UPDATE feeds SET status = 'error', error_streak = error_streak + 1, "
                "last_error = ?, last_polled_at = ?, next_poll_at = ? WHERE id = ?",
                (error[:500], now, next_poll_at, feed_id),
            )
            await conn.execute(
                "INSERT INTO events (at, kind, feed_id, detail) VALUES (?, 'feed_error', ?, ?)",
                (now, feed_id, error[:500]),
            )
            streak = await conn.fetchval("SELECT error_streak FROM feeds WHERE id = ?", (feed_id,))
        return int(streak or 0)

    async def store_poll(
        self,
        feed_id: int,
        entries: Sequence[NewItem],
        *,
        etag: str | None,
        last_modified: str | None,
        now: float,
        next_poll_at: float,
        max_age: float,
        backfill: int,
        fan_out: FanOut | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> PollOutcome:
        """Store a successful poll: new items, feed state and the fan-out's job in one
        transaction, then the job's outbox rows a chunk of chats at a time.

        `entries` come oldest first. On the feed's first successful poll every entry is backlog
        (except the newest `backfill`); later, an entry dated older than `max_age` is kept
        but not queued. Entries already known are never queued again; a known entry whose
        text changed is updated, and its search index row dropped (the caller indexes it
        again after this commit; until then the start-up catch-up would). The new items are
        queued for chats by `fan_out` (see FanOut; channels first and no filters by default)
        through expand_fan_outs, which calls `on_queued` after each chunk that queued rows:
        the publisher starts on the first chunk while the rest is being queued. A crash
        between chunks leaves the job to the next expansion, which resumes it where it
        stopped.
        """
        fan_out = fan_out or FanOut()
        async with self.transaction() as conn:
            feed_row = await conn.fetchone(
                "SELECT lang, initialized FROM feeds WHERE id = ?", (feed_id,)
            )
            if feed_row is None:
                raise LookupError(f"feed {feed_id} does not exist")
            lang = str(feed_row["lang"])
            first_poll = not feed_row["initialized"]

            known = await _known_identities(conn, feed_id, _all_identities(entries))
            fresh: list[NewItem] = []
            seen_now: set[str] = set()
            updated_identities: list[str] = []
            for entry in entries:
                stored_as = _stored_identity(entry, known)
                if stored_as is not None:
                    old_hash = known[stored_as]
                    if entry.content_hash and old_hash != entry.content_hash:
                        await _update_item_content(conn, feed_id, stored_as, entry)
                        updated_identities.append(stored_as)
                    continue
                if entry.identity in seen_now:
                    continue  # the same entry twice in one document
                seen_now.add(entry.identity)
                fresh.append(entry)

            new_items: list[Item] = []
            queued_ids: list[int] = []
            backfill_from = len(fresh) - max(backfill, 0)
            for index, entry in enumerate(fresh):
                if first_poll and index < backfill_from:
                    origin = ItemOrigin.BACKLOG
                elif entry.published_at is not None and now - entry.published_at > max_age:
                    origin = ItemOrigin.TOO_OLD
                else:
                    origin = ItemOrigin.NEW
                item_id = await conn.insert(
                    "INSERT INTO items (feed_id, lang, identity, link, title, summary, author, "
                    "image_url, categories, published_at, first_seen_at, origin, content_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        feed_id,
                        lang,
                        entry.identity,
                        entry.link,
                        entry.title,
                        entry.summary,
                        entry.author,
                        entry.image_url,
                        json.dumps(list(entry.categories), ensure_ascii=False),
                        entry.published_at,
                        now,
                        origin.value,
                        entry.content_hash,
                    ),
                )
                new_items.append(entry.stored(item_id, feed_id, lang, now, origin))
                if origin is ItemOrigin.NEW:
                    queued_ids.append(item_id)

            job = await _new_fan_out(conn, new_items, fan_out, now) if queued_ids else None
            await conn.execute(
                "UPDATE feeds SET etag = ?, last_modified = ?, status = 'ok', error_streak = 0, "
                "last_error = NULL, last_polled_at = ?, last_success_at = ?, next_poll_at = ?, "
                "initialized = 1 WHERE id = ?",
                (etag, last_modified, now, now, next_poll_at, feed_id),
            )
            updated = await _items_by_identity(conn, feed_id, updated_identities)
            await forget_docs(conn, [item.id for item in updated])
        # Without a job of its own, the poll still resumes a job an earlier one left.
        queued = await self.expand_fan_outs(upto=job, on_queued=on_queued)
        return PollOutcome(
            new_items=tuple(new_items),
            queued=queued.get(job, 0) if job is not None else 0,
            updated_items=updated,
        )

    async def expand_fan_outs(
        self, *, upto: int | None = None, on_queued: Callable[[], None] | None = None
    ) -> dict[int, int]:
        """Queue the outbox rows of the fan-out jobs still open, oldest first: those up to job
        `upto`, else those open when this call starts. Return the pending rows queued, by job.

        Each transaction inserts one chunk of chats (at most `fan_out_chunk` rows, set-based,
        as one INSERT … SELECT over that range of chat ids) and moves the job's cursor past it,
        so every other write waits at most one chunk (about _CHUNK_SECONDS: its size follows
        its pace), and a crash resumes exactly where the last commit left the job; the unique
        index on (item, chat) keeps any pair from being queued twice. The cursor moves by
        compare-and-set, so two expanders (one instance deposed mid-job, its successor
        resuming) never insert the same chunk. `on_queued` is called after each chunk that
        queued pending rows. A call without `upto` while another expansion runs returns at
        once: that one covers every older job. On SQLite the chunks pause now and then
        (_SQLITE_PAUSE), so other processes' writes get the file too.
        """
        if upto is None:
            if self._expanding.locked():
                return {}
            row = await self.fetchone("SELECT MAX(id) FROM fan_out_jobs")
            if row is None or row[0] is None:
                return {}
            upto = int(row[0])
        queued: dict[int, int] = {}
        async with self._expanding:
            busy_since = time.perf_counter()
            while True:
                rows = min(self._chunk_rows, self.fan_out_chunk)
                async with self.transaction() as conn:
                    started = time.perf_counter()  # the write lock's hold, commit included
                    step = await _expand_chunk(conn, upto, rows)
                if step is None:
                    return queued
                if step.pending:
                    pace = _CHUNK_SECONDS / max(time.perf_counter() - started, 1e-3)
                    self._chunk_rows = max(_MIN_CHUNK, int(rows * min(2.0, max(0.5, pace))))
                queued[step.job] = queued.get(step.job, 0) + step.pending
                if step.pending and on_queued is not None:
                    on_queued()
                if self.dialect == "postgresql" and step.first != step.last:
                    # PostgreSQL plans the publisher's reads from statistics of the outbox,
                    # which a big fan-out turns over (pending rows from rare to most) long
                    # before autovacuum, which waits for a tenth of the table to change, looks
                    # again: without them it sorts every pending row on each read. Skipped
                    # while autovacuum holds the table (waiting would stall every write here).
                    async with self.transaction() as conn:
                        await conn.execute("ANALYZE (SKIP_LOCKED) deliveries")
                if self.dialect == "sqlite" and time.perf_counter() - busy_since > _SQLITE_BUSY_FOR:
                    await asyncio.sleep(_SQLITE_PAUSE)
                    busy_since = time.perf_counter()

    async def filtering_chats(self, lang: str) -> list[Chat]:
        """Return the chats a new piece in `lang` could be queued for that have filter rules.

        Active, not paused, subscribed and taking `lang` or following a topic (a follow may take
        every language), with at least one include or exclude rule: the few chats whose
        verdicts core computes before a poll is stored.
        """
        if self.dialect == "postgresql":
            has_rule = "jsonb_array_length(COALESCE(c.settings::jsonb -> '{rule}', '[]'))"
        else:
            has_rule = "json_array_length(c.settings, '$.{rule}')"
        rows = await self.fetchall(
            f"SELECT {CHAT_COLUMNS} FROM chats c WHERE ({_TAKES_LANG} OR (c.active = 1 AND "
            "EXISTS (SELECT 1 FROM follows f WHERE f.chat_id = c.id))) AND c.paused = 0 "
            "AND c.settings != '{}' AND ("
            + " OR ".join(has_rule.format(rule=rule) + " > 0" for rule in _RULES)
            + ") ORDER BY c.id",
            {"lang": lang},
        )
        return [chat_from_row(r) for r in rows]

    async def unknown_identities(self, feed_id: int, entries: Sequence[NewItem]) -> set[str]:
        """Return the identities of the entries the feed has never stored (under any alias)."""
        async with self.reading() as conn:
            known = await _known_identities(conn, feed_id, _all_identities(entries))
        return {e.identity for e in entries if _stored_identity(e, known) is None}

    # ------------------------------------------------------------------ items

    async def get_items(self, item_ids: Sequence[int]) -> list[Item]:
        """Return the items with these ids (those that exist), in id order."""
        items: list[Item] = []
        for start in range(0, len(item_ids), 500):
            chunk = item_ids[start : start + 500]
            rows = await self.fetchall(
                f"SELECT {ITEM_COLUMNS} FROM items i "
                f"WHERE i.id IN ({','.join('?' * len(chunk))}) ORDER BY i.id",
                chunk,
            )
            items.extend(item_from_row(r) for r in rows)
        return sorted(items, key=lambda item: item.id)

    async def find_items_by_link(self, link: str) -> list[Item]:
        rows = await self.fetchall(
            f"SELECT {ITEM_COLUMNS} FROM items i WHERE i.link = ? ORDER BY i.id", (link,)
        )
        return [item_from_row(r) for r in rows]

    async def latest_items(self, langs: Iterable[str] | None, limit: int) -> list[Item]:
        """Return the newest items (by publication, else first sight), optionally by language."""
        params: list[Any] = []
        where = ""
        lang_list = list(langs) if langs is not None else None
        if lang_list is not None:
            where = f"WHERE i.lang IN ({','.join('?' * len(lang_list))})"
            params.extend(lang_list)
        params.append(limit)
        rows = await self.fetchall(
            f"SELECT {ITEM_COLUMNS} FROM items i {where} "
            "ORDER BY COALESCE(i.published_at, i.first_seen_at) DESC, i.id DESC LIMIT ?",
            params,
        )
        return [item_from_row(r) for r in rows]

    async def count_items(self) -> int:
        row = await self.fetchone("SELECT COUNT(*) FROM items")
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ chats

    async def upsert_chat(
        self,
        chat_id: int,
        chat_type: ChatType,
        *,
        title: str | None,
        username: str | None,
        default_lang: str,
        now: float,
        added_by: int | None = None,
        subscribed: bool | None = None,
        active: bool = True,
    ) -> Chat:
        """Create or refresh a chat; an existing chat keeps its language and settings."""
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO chats (id, type, title, username, lang, languages, active, "
                "subscribed, added_by, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET type = excluded.type, title = excluded.title, "
                "username = excluded.username, active = excluded.active, "
                "deactivated_reason = CASE WHEN excluded.active = 1 THEN NULL "
                "ELSE chats.deactivated_reason END, "
                "added_by = COALESCE(excluded.added_by, chats.added_by), "
                # A chat that takes only its followed topics keeps doing so: (re)connecting
                # asks for posts, and it was taking them.
                "subscribed = CASE WHEN CAST(? AS INTEGER) IS NULL THEN chats.subscribed "
                "WHEN chats.subscribed = 0 AND excluded.subscribed = 1 AND EXISTS "
                "(SELECT 1 FROM follows f WHERE f.chat_id = chats.id) THEN 0 "
                "ELSE excluded.subscribed END, "
                "updated_at = excluded.updated_at",
                (
                    chat_id,
                    chat_type.value,
                    title,
                    username,
                    default_lang,
                    default_lang,
                    int(active),
                    int(bool(subscribed)),
                    added_by,
                    now,
                    now,
                    None if subscribed is None else int(subscribed),
                ),
            )
        chat = await self.get_chat(chat_id)
        assert chat is not None
        return chat

    async def get_chat(self, chat_id: int) -> Chat | None:
        row = await self.fetchone(f"SELECT {CHAT_COLUMNS} FROM chats c WHERE c.id = ?", (chat_id,))
        return chat_from_row(row) if row else None

    async def list_chats(self, *, active_only: bool = False) -> list[Chat]:
        where = "WHERE c.active = 1" if active_only else ""
        rows = await self.fetchall(f"SELECT {CHAT_COLUMNS} FROM chats c {where} ORDER BY c.id")
        return [chat_from_row(r) for r in rows]

    async def update_chat(
        self,
        chat_id: int,
        now: float,
        *,
        lang: str | None = None,
        languages: Sequence[str] | None = None,
        subscribed: bool | None = None,
        paused: bool | None = None,
        settings: ChatSettings | None = None,
    ) -> Chat | None:
        """Change the given fields of a chat; return the updated chat (None if unknown)."""
        sets: list[str] = []
        params: list[Any] = []
        if lang is not None:
            sets.append("lang = ?")
            params.append(lang)
        if languages is not None:
            sets.append("languages = ?")
            params.append(",".join(languages))
        if subscribed is not None:
            sets.append("subscribed = ?")
            params.append(int(subscribed))
        if paused is not None:
            sets.append("paused = ?")
            params.append(int(paused))
        if settings is not None:
            sets.append("settings = ?")
            params.append(settings.to_json())
        if sets:
            sets.append("updated_at = ?")
            params.extend([now, chat_id])
            async with self.transaction() as conn:
                await conn.execute(f"UPDATE chats SET {', '.join(sets)} WHERE id = ?", params)
        return await self.get_chat(chat_id)

    async def deactivate_chat(self, chat_id: int, reason: str, now: float) -> int:
        """Stop posting to a chat (blocked, kicked, gone); cancel its pending deliveries."""
        async with self.transaction() as conn:
            await conn.execute(
                "UPDATE chats SET active = 0, deactivated_reason = ?, updated_at = ? WHERE id = ?",
                (reason[:300], now, chat_id),
            )
            return await conn.execute(
                "UPDATE deliveries SET state = 'cancelled', last_error = ? "
                "WHERE chat_id = ? AND state = 'pending'",
                (reason[:300], chat_id),
            )

    async def migrate_chat(self, old_id: int, new_id: int, now: float) -> Chat | None:
        """Move a chat to the id Telegram gave it when a group became a supergroup."""
        async with self.transaction() as conn:
            exists = await conn.fetchone("SELECT 1 FROM chats WHERE id = ?", (new_id,))
            if exists:
                # The new chat is already known: move its deliveries to it (a post it already
                # has stays the new chat's), then drop the old. Posts the publisher parked for
                # the old chat's hold come back first: the new chat's hold is its own.
                await conn.execute(
                    "UPDATE deliveries SET priority = priority - ? WHERE chat_id = ? "
                    "AND state = 'pending' AND priority >= ?",
                    (PARKED, old_id, PARKED),
                )
                await conn.execute(
                    "UPDATE deliveries SET chat_id = ? WHERE chat_id = ? AND NOT (kind = 'post' "
                    "AND item_id IN (SELECT item_id FROM deliveries "
                    "WHERE chat_id = ? AND kind = 'post'))",
                    (new_id, old_id, new_id),
                )
                await conn.execute(
                    "UPDATE chats SET subscribed = CASE WHEN (SELECT subscribed FROM chats "
                    "WHERE id = ?) = 1 THEN 1 ELSE subscribed END, updated_at = ? WHERE id = ?",
                    (old_id, now, new_id),
                )
                # Its followed topics too (the ones the new chat does not follow already).
                await conn.execute(
                    "UPDATE follows SET chat_id = ? WHERE chat_id = ? AND topic_id NOT IN "
                    "(SELECT topic_id FROM follows WHERE chat_id = ?)",
                    (new_id, old_id, new_id),
                )
                await conn.execute("DELETE FROM chats WHERE id = ?", (old_id,))
                await follows.drop_orphans(conn)
            else:
                # ON UPDATE CASCADE carries the deliveries and followed topics along.
                await conn.execute(
                    "UPDATE chats SET id = ?, type = 'supergroup', updated_at = ? WHERE id = ?",
                    (new_id, now, old_id),
                )
        return await self.get_chat(new_id)

    # ------------------------------------------------------------------ deliveries

    async def record_outcomes(
        self,
        records: Sequence[OutcomeRecord],
        *,
        durable: bool = True,
        leader: tuple[str, int] | None = None,
    ) -> bool:
        """Write the outcomes of several sends in one transaction.

        A batch that records a send is committed with synchronous=FULL: once this returns,
        a power loss cannot take the record back and let the piece be sent again. (Other
        commits run with NORMAL, which in WAL mode may lose the last ones on a power loss
        but never corrupts the file: a lost retry or poll is simply done again.)
        `durable=False` exists only to measure what FULL costs (bench/durability_bench.py).

        `leader` (holder, epoch) fences the write: when the lease has moved on, only the sends
        are recorded (they did reach Telegram: recording them keeps the new leader from
        sending them again) and False is returned, telling the caller it was deposed.
        """
        sent = [r for r in records if r.state is DeliveryState.SENT]
        async with self.transaction(durable=durable and bool(sent)) as conn:
            if leader is not None and not await lease.holds(conn, *leader, unexpired=False):
                records = sent
                held = False
            else:
                held = True
            if sent:
                await conn.executemany(
                    "UPDATE deliveries SET state = 'sent', message_id = ?, sent_at = ?, "
                    "attempts = attempts + 1, last_error = NULL "
                    "WHERE id = ? AND state = 'pending'",
                    [(r.message_id, r.at, r.delivery_id) for r in sent],
                )
            retries = [r for r in records if r.state is DeliveryState.PENDING]
            if retries:
                await conn.executemany(
                    "UPDATE deliveries SET attempts = attempts + ?, last_error = ?, "
                    "next_attempt_at = ? WHERE id = ? AND state = 'pending'",
                    [
                        (int(r.count_attempt), (r.error or "")[:500], r.next_attempt_at,
                         r.delivery_id)
                        for r in retries
                    ],
                )  # fmt: skip
            failed = [r for r in records if r.state is DeliveryState.FAILED]
            if failed:
                await conn.executemany(
                    "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, "
                    "last_error = ?, sent_at = ? WHERE id = ? AND state = 'pending'",
                    [((r.error or "")[:500], r.at, r.delivery_id) for r in failed],
                )
            events = [r for r in records if r.event]
            if events:
                await conn.executemany(
                    "INSERT INTO events (at, kind, chat_id, detail) VALUES (?, ?, ?, ?)",
                    [(r.at, r.event, r.chat_id, (r.error or "")[:500]) for r in events],
                )
            paid = [r.paid_day for r in sent if r.paid_day is not None]
            if paid:
                await paid_sends.add(conn, paid)
        return held

    async def get_delivery(self, item_id: int, chat_id: int) -> Delivery | None:
        row = await self.fetchone(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries d "
            "WHERE d.item_id = ? AND d.chat_id = ? AND d.kind = 'post'",
            (item_id, chat_id),
        )
        return delivery_from_row(row) if row else None

    async def delivery_counts(self, since: float | None = None) -> dict[DeliveryState, int]:
        """Count the posts of the outbox by state (created since `since` when given); edits and
        notices are not pieces delivered, so /stats leaves them out."""
        where, params = "", []
        if since is not None:
            # The rows since then, by their ids: no index holds the rows' time.
            where, params = (
                "AND id >= ? AND created_at >= ?",
                [await self._first_since(since), since],
            )
        rows = await self.fetchall(
            f"SELECT state, COUNT(*) FROM deliveries WHERE kind = 'post' {where} GROUP BY state",
            params,
        )
        counts = dict.fromkeys(DeliveryState, 0)
        for row in rows:
            counts[DeliveryState(row[0])] = int(row[1])
        return counts

    async def outbox_depth(self, now: float) -> OutboxDepth:
        """Count pending deliveries, those due at `now`, and the posts held at `now` for a
        digest or quiet hours, which are never due (pending rows only, by their index).

        The held chats are read once (a handful, by their index), not joined to each pending
        row: at a million pending rows that join was two thirds of the read.
        """
        async with self.reading() as conn:
            free = await conn.fetchone(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN next_attempt_at <= :now THEN 1 ELSE 0 "
                "END), 0), MIN(CASE WHEN next_attempt_at <= :now THEN next_attempt_at END) "
                "FROM deliveries WHERE state = 'pending' AND (kind != 'post' "
                "OR chat_id NOT IN (SELECT id FROM chats WHERE hold_from <= :now))",
                {"now": now},
            )
            # CROSS JOIN keeps SQLite to the held chats first, then each one's pending rows.
            held = await conn.fetchval(
                "SELECT COUNT(*) FROM chats h CROSS JOIN deliveries d WHERE h.hold_from <= ? "
                "AND d.chat_id = h.id AND d.state = 'pending' AND d.kind = 'post'",
                (now,),
            )
        if free is None:
            return OutboxDepth(0, 0, None)
        oldest = None if free[2] is None else float(free[2])
        return OutboxDepth(int(free[0]) + int(held or 0), int(free[1]), oldest, int(held or 0))

    async def prune_deliveries(self, older_than: float, *, chunk: int = 10_000) -> int:
        """Delete finished delivery rows created before `older_than`; items are kept for search.

        Rows are created in the order of their ids, so retention walks up the ids (no index on
        the rows' time: one less per row) a chunk at a time and stops at the first row created
        at or after `older_than`; pending rows stay wherever they are, and a row created out
        of order (a fan-out resumed late) waits for a later prune. The space freed is reused
        by the rows queued next (SQLite's free pages, PostgreSQL's vacuumed ones).
        """
        total, after = 0, 0
        while True:
            # A chunk per transaction: the publisher's writes never wait for a long delete.
            async with self.transaction() as conn:
                row = await conn.fetchone(
                    "SELECT MAX(id), MIN(CASE WHEN created_at >= ? THEN id END) FROM ("
                    "SELECT id, created_at FROM deliveries WHERE id > ? ORDER BY id LIMIT ?) w",
                    (older_than, after, chunk),
                )
                last, newer = (None, None) if row is None else (row[0], row[1])
                if last is not None:
                    upto = int(last) if newer is None else int(newer) - 1
                    total += await conn.execute(
                        "DELETE FROM deliveries WHERE id > ? AND id <= ? AND state != 'pending'",
                        (after, upto),
                    )
            if last is None or newer is not None:
                break
            after = int(last)
        async with self.transaction() as conn:
            await conn.execute("DELETE FROM events WHERE at < ?", (older_than,))
        return total

    async def _first_since(self, at: float) -> int:
        """The first id of the outbox rows created at or after `at` (0 when there are none).

        Rows are created in the order of their ids, so a binary search over the ids finds it
        in a few dozen lookups of the primary key.
        """
        async with self.reading() as conn:
            row = await conn.fetchone("SELECT MIN(id), MAX(id) FROM deliveries")
            if row is None or row[0] is None:
                return 0
            low, high = int(row[0]), int(row[1]) + 1
            while low < high:
                mid = (low + high) // 2
                found = await conn.fetchone(
                    "SELECT id, created_at FROM deliveries WHERE id >= ? ORDER BY id LIMIT 1",
                    (mid,),
                )
                assert found is not None  # mid <= MAX(id)
                if float(found[1]) >= at:
                    high = mid
                else:
                    low = int(found[0]) + 1
            return low

    # ------------------------------------------------------------------ events

    async def record_event(
        self,
        kind: str,
        detail: str,
        now: float,
        *,
        chat_id: int | None = None,
        feed_id: int | None = None,
    ) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO events (at, kind, chat_id, feed_id, detail) VALUES (?, ?, ?, ?, ?)",
                (now, kind, chat_id, feed_id, detail[:500]),
            )

    async def recent_events(self, limit: int = 5) -> list[tuple[float, str, int | None, str]]:
        rows = await self.fetchall(
            "SELECT at, kind, chat_id, detail FROM events ORDER BY at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [(float(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]


# ---------------------------------------------------------------------- helpers

_FEED_SELECT = (
    "SELECT f.id, f.url, f.lang, f.etag, f.last_modified, f.status, f.error_streak, "
    "f.last_error, f.last_polled_at, f.last_success_at, f.next_poll_at, f.initialized, "
    "(SELECT COUNT(*) FROM items WHERE feed_id = f.id) AS item_count FROM feeds f"
)


async def _known_identities(conn: Conn, feed_id: int, identities: Sequence[str]) -> dict[str, str]:
    known: dict[str, str] = {}
    # SQLite caps bound parameters; 500 at a time stays far below any build's limit.
    for start in range(0, len(identities), 500):
        chunk = identities[start : start + 500]
        rows = await conn.fetchall(
            f"SELECT identity, content_hash FROM items WHERE feed_id = ? "
            f"AND identity IN ({','.join('?' * len(chunk))})",
            [feed_id, *chunk],
        )
        for row in rows:
            known[str(row[0])] = str(row[1])
    return known


def _all_identities(entries: Sequence[NewItem]) -> list[str]:
    return [identity for e in entries for identity in (e.identity, *e.aliases)]


def _stored_identity(entry: NewItem, known: Mapping[str, str]) -> str | None:
    """Return the identity `entry` is stored under (its own or an alias), or None if new."""
    if entry.identity in known:
        return entry.identity
    return next((alias for alias in entry.aliases if alias in known), None)


async def _update_item_content(conn: Conn, feed_id: int, identity: str, entry: NewItem) -> None:
    """Keep the stored text current when the site edits a piece (it is not posted again)."""
    await conn.execute(
        "UPDATE items SET title = ?, summary = ?, author = ?, image_url = ?, categories = ?, "
        "content_hash = ? WHERE feed_id = ? AND identity = ?",
        (
            entry.title,
            entry.summary,
            entry.author,
            entry.image_url,
            json.dumps(list(entry.categories), ensure_ascii=False),
            entry.content_hash,
            feed_id,
            identity,
        ),
    )


# The chat takes posts in :lang (its languages are a comma-separated list) and is reachable.
# The unary plus keeps SQLite from indexing the flags on the fly (a throwaway index over every
# chat) where the chats' primary key should walk a range of ids (a fan-out's chunk).
_TAKES_LANG = (
    "+c.active = 1 AND +c.subscribed = 1 AND ',' || c.languages || ',' LIKE '%,' || :lang || ',%'"
)
# The include/exclude lists of ChatSettings (a chat with none of them is never filtered).
_RULES = ("include_categories", "exclude_categories", "include_keywords", "exclude_keywords")

# ---------------------------------------------------------------------- fan-out

# Below and above every chat id (channels and groups have negative ids): a job's first cursor
# and the last chunk's end.
_FIRST_CHAT = -(2**63)
_LAST_CHAT = 2**63 - 1

# Every (new item, chat) pair of one chunk of chats (ids in (:after, :upto]) gets a row, in one
# statement:
# - chats: reachable, subscribed, taking the item's language; paused ones get a skipped row;
# - followers ({pairs}): chats that follow a topic the item matches (fan_out_hits), in the
#   same statement, so a chat subscribed and following gets the piece once;
# - skips: core's filter verdicts (fan_out_skips): a skipped row with the reason; a chat's
#   "not included" verdict (its include rules narrow what it takes of everything) does not
#   hold against a piece it follows;
# - the same piece listed in two feeds (the same link) reaches a chat once ({same_link}, left
#   out when no other item has the link of one of the job's: the usual case);
# - priority by chat type, from the policy's table ({cases}).
_FAN_OUT = """
INSERT INTO deliveries (item_id, chat_id, state, priority, next_attempt_at,
                        last_error, created_at)
SELECT i.id, c.id,
       CASE WHEN c.paused = 1 OR ({skipped}) THEN 'skipped' ELSE 'pending' END,
       CASE c.type {cases} END,
       :now,
       CASE WHEN c.paused = 1 THEN 'paused' WHEN {skipped} THEN s.reason END,
       :now
FROM {pairs}
LEFT JOIN fan_out_skips s ON s.job_id = :job AND s.chat_id = c.id AND s.item_id = i.id
WHERE {same_link}
ORDER BY i.id, c.id
ON CONFLICT (item_id, chat_id) WHERE kind = 'post' DO NOTHING"""
# Not for a chat that has (or had) a post of another item with that link (each such item's
# post to the chat is one probe of deliveries_post), nor for any chat when an earlier new item
# of this poll has that link (its rows go in with the same chunk).
_SAME_LINK = """NOT EXISTS (SELECT 1 FROM items o WHERE o.link = i.link AND o.id != i.id
                  AND EXISTS (SELECT 1 FROM deliveries d WHERE d.item_id = o.id
                              AND d.chat_id = c.id AND d.kind = 'post'))
  AND NOT EXISTS (SELECT 1 FROM items o
                  WHERE o.link = i.link AND o.id >= :first AND o.id < i.id AND o.origin = 'new')"""
# The subscribed pairs of the chunk, straight from the join (the statement's usual, and
# largest, source): the primary keys walk the job's items and the chunk's chats (the `|| ''`,
# like _TAKES_LANG's unary plus, keeps SQLite from indexing every item's origin instead).
_SUBSCRIBED = """items i JOIN chats c ON {takes_lang}
     AND i.id BETWEEN :first AND :last AND i.origin || '' = 'new'
     AND c.id > :after AND c.id <= :upto"""
# The chunk's followers of the topics the job's items match: the rule of
# storage.follows.FOLLOWED_SQL (an active chat; a follow in any language, or in one of the
# chat's), with the matches read from fan_out_hits and the follows from the chunk's range of
# chats first (CROSS JOIN keeps SQLite to that order), so a chunk costs its own chats' follows.
_FOLLOWED = """followed(item_id, chat_id) AS MATERIALIZED (
    SELECT DISTINCT h.item_id, f.chat_id
    FROM follows f CROSS JOIN fan_out_hits h CROSS JOIN items i CROSS JOIN chats c
    WHERE f.chat_id > :after AND f.chat_id <= :upto
      AND h.job_id = :job AND h.topic_id = f.topic_id AND i.id = h.item_id
      AND c.id = f.chat_id AND c.active = 1
      AND (f.any_lang = 1 OR ',' || c.languages || ',' LIKE '%,' || i.lang || ',%')
)"""
# With followers: those pairs and the pairs of `followed`, each once.
_WITH_FOLLOWERS = """(
    SELECT i.id AS item_id, c.id AS chat_id FROM {subscribed}
    UNION
    SELECT f.item_id, f.chat_id FROM followed f
) p
JOIN items i ON i.id = p.item_id
JOIN chats c ON c.id = p.chat_id"""
_NOT_FOLLOWED = (
    "s.reason IS NOT NULL AND NOT (s.reason = 'not_included' AND EXISTS "
    "(SELECT 1 FROM followed f WHERE f.item_id = i.id AND f.chat_id = c.id))"
)


async def _new_fan_out(
    conn: Conn, new_items: Sequence[Item], fan_out: FanOut, now: float
) -> int | None:
    """Record the fan-out of the poll's new items as a job (expanded after the commit) with
    what it needs to resume: the priorities, the filters' verdicts and the topics matched."""
    ids = {item.identity: item.id for item in new_items if item.origin is ItemOrigin.NEW}
    if not ids:
        return None
    priorities = {chat_type.value: int(p) for chat_type, p in fan_out.priorities.items()}
    if any(not 0 <= p < PARKED for p in priorities.values()):
        raise ValueError(f"queue priorities must be in 0..{PARKED - 1}: {priorities}")
    job = await conn.insert(
        "INSERT INTO fan_out_jobs (first_item, last_item, priorities, at, after_chat) "
        "VALUES (?, ?, ?, ?, ?)",
        (min(ids.values()), max(ids.values()), json.dumps(priorities), now, _FIRST_CHAT),
    )
    await conn.executemany(
        "INSERT INTO fan_out_skips (job_id, chat_id, item_id, reason) VALUES (?, ?, ?, ?)",
        [
            (job, chat_id, ids[identity], reason)
            for identity, verdicts in fan_out.skips.items()
            if identity in ids
            for chat_id, reason in verdicts.items()
        ],
    )
    await conn.executemany(
        "INSERT INTO fan_out_hits (job_id, topic_id, item_id) VALUES (?, ?, ?)",
        [
            (job, topic_id, ids[identity])
            for identity, topics in fan_out.topics.items()
            if identity in ids
            for topic_id in sorted(set(topics))
        ],
    )
    return job


@dataclass(frozen=True, slots=True)
class _Chunk:
    """What one chunk of a fan-out did."""

    job: int
    pending: int  # rows queued pending (the others: skipped)
    first: bool  # the job's first chunk
    last: bool  # its last: the job is done


async def _expand_chunk(conn: Conn, upto: int, chunk: int) -> _Chunk | None:
    """Queue the next chunk of chats of the oldest job up to `upto`; None when there is no
    such job."""
    row = await conn.fetchone(
        "SELECT id, first_item, last_item, priorities, at, after_chat FROM fan_out_jobs "
        "WHERE id <= ? ORDER BY id LIMIT 1",
        (upto,),
    )
    if row is None:
        return None
    job, first, last, priorities, at, after = (
        int(row[0]), int(row[1]), int(row[2]), json.loads(row[3]), float(row[4]), int(row[5]),
    )  # fmt: skip
    chats = max(1, chunk // (last - first + 1))
    end = await conn.fetchval(
        "SELECT id FROM chats WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?", (after, chats - 1)
    )
    upper = _LAST_CHAT if end is None else int(end)
    # Claim the chunk; another expander that moved the cursor first wins, and this one reads
    # the job again.
    claimed = await conn.execute(
        "UPDATE fan_out_jobs SET after_chat = ? WHERE id = ? AND after_chat = ?",
        (upper, job, after),
    )
    if claimed != 1:
        return _Chunk(job, 0, first=False, last=False)
    followers = bool(
        await conn.fetchone("SELECT 1 FROM fan_out_hits WHERE job_id = ? LIMIT 1", (job,))
    )
    shared = bool(
        await conn.fetchone(
            "SELECT 1 FROM items i JOIN items o ON o.link = i.link AND o.id != i.id "
            "WHERE i.id BETWEEN ? AND ? AND i.origin = 'new' LIMIT 1",
            (first, last),
        )
    )
    cases = " ".join(f"WHEN '{t}' THEN {int(p):d}" for t, p in priorities.items())
    cases += f" ELSE {max(priorities.values(), default=0):d}"
    subscribed = _SUBSCRIBED.format(takes_lang=_TAKES_LANG.replace(":lang", "i.lang"))
    params = {"job": job, "first": first, "last": last, "now": at, "after": after, "upto": upper}
    insert = _FAN_OUT.format(
        pairs=_WITH_FOLLOWERS.format(subscribed=subscribed) if followers else subscribed,
        skipped=_NOT_FOLLOWED if followers else "s.reason IS NOT NULL",
        cases=cases,
        same_link=_SAME_LINK if shared else "true",
    )
    ctes = [_FOLLOWED] if followers else []
    if conn.dialect == "postgresql":
        # Counted by the insert itself: a second read of the outbox would be planned from
        # statistics that predate the fan-out.
        ctes.append(f"ins AS ({insert} RETURNING state)")
        pending = await conn.fetchval(
            f"WITH {', '.join(ctes)} SELECT COUNT(*) FROM ins WHERE state = 'pending'", params
        )
    else:
        # SQLite gives the chunk's rows the ids after the largest (this connection holds the
        # write lock): counting them walks those rows alone.
        before = await conn.fetchval("SELECT COALESCE(MAX(id), 0) FROM deliveries")
        await conn.execute(f"WITH {ctes[0]} {insert}" if ctes else insert, params)
        pending = await conn.fetchval(
            "SELECT COUNT(*) FROM deliveries NOT INDEXED WHERE id > ? AND state = 'pending'",
            (before,),
        )
    if end is None:  # the last chunk: the job is done (its skips and hits go with it)
        await conn.execute("DELETE FROM fan_out_jobs WHERE id = ?", (job,))
    return _Chunk(job, int(pending or 0), first=after == _FIRST_CHAT, last=end is None)


async def _items_by_identity(
    conn: Conn, feed_id: int, identities: Sequence[str]
) -> tuple[Item, ...]:
    items: list[Item] = []
    for identity in identities:
        row = await conn.fetchone(
            f"SELECT {ITEM_COLUMNS} FROM items i WHERE i.feed_id = ? AND i.identity = ?",
            (feed_id, identity),
        )
        if row is not None:
            items.append(item_from_row(row))
    return tuple(items)


def _feed(row: Row) -> Feed:
    return Feed(
        id=row["id"],
        url=row["url"],
        lang=row["lang"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        status=FeedStatus(row["status"]),
        error_streak=row["error_streak"],
        last_error=row["last_error"],
        last_polled_at=row["last_polled_at"],
        last_success_at=row["last_success_at"],
        next_poll_at=row["next_poll_at"],
        initialized=bool(row["initialized"]),
        item_count=row["item_count"],
    )


def _due(row: Row) -> DueDelivery:
    return DueDelivery(
        delivery=delivery_from_row(row, 0), item=item_from_row(row, 11), chat=chat_from_row(row, 25)
    )
