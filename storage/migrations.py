"""The schema: ordered migrations, each in one transaction, recorded in a history table.

The record of what ran is the table schema_migrations (version, name, applied_at), which every
back end can keep. On SQLite, PRAGMA user_version follows it, so an older bot (which reads only
user_version) still refuses a newer store. Migration 9 writes the history of the migrations
before it: dated when they ran in the same start, undated when an older bot ran them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import aiosqlite

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: its SQLite text, and its PostgreSQL text from version 10 on
    (storage.postgres creates a new database at version 9 in one step)."""

    version: int
    name: str
    sql: str
    postgresql: str | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "core: feeds, items, chats, deliveries",
        """
        CREATE TABLE feeds (
            id              INTEGER PRIMARY KEY,
            url             TEXT NOT NULL UNIQUE,
            lang            TEXT NOT NULL,
            etag            TEXT,
            last_modified   TEXT,
            status          TEXT NOT NULL DEFAULT 'new',
            error_streak    INTEGER NOT NULL DEFAULT 0,
            last_error      TEXT,
            last_polled_at  REAL,
            last_success_at REAL,
            next_poll_at    REAL,
            initialized     INTEGER NOT NULL DEFAULT 0
        );

        -- identity is compared in full: a hash collision would silently drop a post.
        CREATE TABLE items (
            id            INTEGER PRIMARY KEY,
            feed_id       INTEGER NOT NULL REFERENCES feeds(id) ON DELETE CASCADE,
            lang          TEXT NOT NULL,
            identity      TEXT NOT NULL,
            link          TEXT NOT NULL,
            title         TEXT NOT NULL,
            summary       TEXT NOT NULL,
            author        TEXT,
            image_url     TEXT,
            categories    TEXT NOT NULL DEFAULT '[]',
            published_at  REAL,
            first_seen_at REAL NOT NULL,
            origin        TEXT NOT NULL,
            content_hash  TEXT NOT NULL DEFAULT '',
            UNIQUE (feed_id, identity)
        );
        CREATE INDEX items_link ON items(link);
        CREATE INDEX items_lang_published ON items(lang, published_at);

        CREATE TABLE chats (
            id                 INTEGER PRIMARY KEY,
            type               TEXT NOT NULL,
            title              TEXT,
            username           TEXT,
            lang               TEXT NOT NULL,
            languages          TEXT NOT NULL,
            active             INTEGER NOT NULL DEFAULT 1,
            subscribed         INTEGER NOT NULL DEFAULT 0,
            paused             INTEGER NOT NULL DEFAULT 0,
            settings           TEXT NOT NULL DEFAULT '{}',
            added_by           INTEGER,
            deactivated_reason TEXT,
            created_at         REAL NOT NULL,
            updated_at         REAL NOT NULL
        );
        CREATE INDEX chats_username ON chats(username);

        -- The outbox: one row per (item, chat). A row is marked sent only after Telegram's answer.
        CREATE TABLE deliveries (
            id              INTEGER PRIMARY KEY,
            item_id         INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            chat_id         INTEGER NOT NULL
                            REFERENCES chats(id) ON DELETE CASCADE ON UPDATE CASCADE,
            state           TEXT NOT NULL DEFAULT 'pending',
            priority        INTEGER NOT NULL,
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error      TEXT,
            message_id      INTEGER,
            created_at      REAL NOT NULL,
            sent_at         REAL,
            UNIQUE (item_id, chat_id)
        );
        CREATE INDEX deliveries_pending ON deliveries(priority, item_id)
            WHERE state = 'pending';
        CREATE INDEX deliveries_chat ON deliveries(chat_id, state);
        CREATE INDEX deliveries_sent_at ON deliveries(sent_at);

        -- Telegram answers that were errors, kept for /stats and /why.
        CREATE TABLE events (
            id       INTEGER PRIMARY KEY,
            at       REAL NOT NULL,
            kind     TEXT NOT NULL,
            chat_id  INTEGER,
            feed_id  INTEGER,
            detail   TEXT NOT NULL
        );
        CREATE INDEX events_at ON events(at);
        """,
    ),
    Migration(
        2,
        "search: full-text index of items",
        """
        -- Terms folded, stemmed and tagged with the item's language by bot.services.search;
        -- rowid = items.id.
        CREATE VIRTUAL TABLE search_fts USING fts5(
            title, body, tokenize = 'unicode61 remove_diacritics 2'
        );
        -- Which version of the text analysis built the index; the bot rebuilds it on a change
        -- and fills in items the index lacks at every start.
        -- Each indexed item's date (publication, else first sight) in a table small enough to
        -- stay in the page cache: ranking reads it for many rows.
        CREATE TABLE search_dates (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL
        );
        CREATE TABLE search_state (
            id               INTEGER PRIMARY KEY CHECK (id = 1),
            analyzer_version INTEGER NOT NULL
        );
        INSERT INTO search_state (id, analyzer_version) VALUES (1, 0);
        CREATE TRIGGER items_search_delete AFTER DELETE ON items BEGIN
            DELETE FROM search_fts WHERE rowid = old.id;
            DELETE FROM search_dates WHERE id = old.id;
        END;
        """,
    ),
    Migration(
        3,
        "channel admins: settings audit trail, no-right incidents, forum topics",
        """
        -- Who changed which setting of a chat, and when; user_id NULL means the bot itself.
        CREATE TABLE settings_changes (
            id        INTEGER PRIMARY KEY,
            chat_id   INTEGER NOT NULL
                      REFERENCES chats(id) ON DELETE CASCADE ON UPDATE CASCADE,
            user_id   INTEGER,
            user_name TEXT,
            at        REAL NOT NULL,
            what      TEXT NOT NULL,
            old       TEXT,
            new       TEXT
        );
        CREATE INDEX settings_changes_chat ON settings_changes(chat_id, at);

        -- A chat paused because the bot could not post there; its admins were told once.
        CREATE TABLE chat_incidents (
            chat_id       INTEGER PRIMARY KEY
                          REFERENCES chats(id) ON DELETE CASCADE ON UPDATE CASCADE,
            reason        TEXT NOT NULL,
            missing_right TEXT,
            at            REAL NOT NULL
        );

        -- Forum topics the bot has seen, to choose where a supergroup's posts go.
        CREATE TABLE forum_topics (
            chat_id   INTEGER NOT NULL
                      REFERENCES chats(id) ON DELETE CASCADE ON UPDATE CASCADE,
            thread_id INTEGER NOT NULL,
            name      TEXT NOT NULL,
            seen_at   REAL NOT NULL,
            PRIMARY KEY (chat_id, thread_id)
        );
        """,
    ),
    Migration(
        4,
        "summaries: article pages fetched for thin feed items",
        """
        -- One row per article page the bot fetched (keyed by the item's link), so each page
        -- is fetched once. status: ok (text or metadata found), empty, or error.
        CREATE TABLE articles (
            url          TEXT PRIMARY KEY,
            status       TEXT NOT NULL,
            fetched_at   REAL NOT NULL,
            text         TEXT NOT NULL DEFAULT '',
            title        TEXT,
            description  TEXT,
            image_url    TEXT,
            author       TEXT,
            published_at REAL,
            categories   TEXT NOT NULL DEFAULT '[]',
            error        TEXT
        );
        CREATE INDEX articles_fetched_at ON articles(fetched_at);
        """,
    ),
    Migration(
        5,
        "delivery engine: queue heads and retention without scanning the history",
        """
        -- Each chat's oldest pending piece, read on every publisher pass: covers the GROUP BY
        -- over pending rows only, however many sent rows the retention keeps.
        CREATE INDEX deliveries_pending_heads ON deliveries(chat_id, item_id)
            WHERE state = 'pending';
        -- Pruning by age walks this index instead of the whole table.
        CREATE INDEX deliveries_created_at ON deliveries(created_at);
        """,
    ),
    Migration(
        6,
        "search: a lower bound on the ids of recent pieces, so ranking skips old pieces' dates",
        """
        -- Every indexed piece dated at or after fresh_since has an id of at least fresh_from
        -- (storage/search.py keeps this true). 0 and 0 claim nothing, so every date is read.
        ALTER TABLE search_state ADD COLUMN fresh_from INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE search_state ADD COLUMN fresh_since REAL NOT NULL DEFAULT 0;
        """,
    ),
    Migration(
        7,
        "search paging: unguessable keys bound to the chat that searched",
        """
        -- A search's paging buttons carry only `key`; the query lives here, readable only from
        -- the chat that made it, by every instance sharing this file, and across restarts.
        CREATE TABLE search_keys (
            key        TEXT PRIMARY KEY,
            chat_id    INTEGER NOT NULL,
            query      TEXT NOT NULL,
            words      TEXT NOT NULL,
            lang       TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX search_keys_chat ON search_keys(chat_id, created_at);
        CREATE INDEX search_keys_created_at ON search_keys(created_at);
        """,
    ),
    Migration(
        8,
        "outbox kinds: site edits and notices to admins are outbox rows like posts",
        """
        -- kind: 'post' (a piece for a chat), 'edit' (re-render the post whose message id the
        -- payload names), 'notice' (a text for a private chat, in the payload; no item).
        -- SQLite cannot drop the inline UNIQUE (item_id, chat_id), which must now hold for
        -- posts only, so the table is rebuilt: same columns first, the new ones appended.
        CREATE TABLE deliveries_v8 (
            id              INTEGER PRIMARY KEY,
            item_id         INTEGER REFERENCES items(id) ON DELETE CASCADE,
            chat_id         INTEGER NOT NULL
                            REFERENCES chats(id) ON DELETE CASCADE ON UPDATE CASCADE,
            state           TEXT NOT NULL DEFAULT 'pending',
            priority        INTEGER NOT NULL,
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error      TEXT,
            message_id      INTEGER,
            created_at      REAL NOT NULL,
            sent_at         REAL,
            kind            TEXT NOT NULL DEFAULT 'post'
                            CHECK (kind IN ('post', 'edit', 'notice')),
            payload         TEXT,
            CHECK ((kind = 'notice') = (item_id IS NULL))
        );
        INSERT INTO deliveries_v8 (id, item_id, chat_id, state, priority, attempts,
                                   next_attempt_at, last_error, message_id, created_at, sent_at)
            SELECT id, item_id, chat_id, state, priority, attempts, next_attempt_at, last_error,
                   message_id, created_at, sent_at
            FROM deliveries;
        DROP TABLE deliveries;
        ALTER TABLE deliveries_v8 RENAME TO deliveries;
        -- A piece reaches a chat once; edits and notices may repeat.
        CREATE UNIQUE INDEX deliveries_post ON deliveries(item_id, chat_id) WHERE kind = 'post';
        -- What the inline UNIQUE's index used to serve: lookups and cascades by item.
        CREATE INDEX deliveries_item ON deliveries(item_id, chat_id);
        CREATE INDEX deliveries_pending ON deliveries(priority, item_id)
            WHERE state = 'pending';
        CREATE INDEX deliveries_chat ON deliveries(chat_id, state);
        CREATE INDEX deliveries_sent_at ON deliveries(sent_at);
        CREATE INDEX deliveries_pending_heads ON deliveries(chat_id, item_id)
            WHERE state = 'pending';
        CREATE INDEX deliveries_created_at ON deliveries(created_at);
        """,
    ),
    Migration(
        9,
        "migration history in a table, for every back end",
        """
        CREATE TABLE schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at REAL  -- NULL: applied before this table existed
        );
        """,
    ),
    Migration(
        10,
        "the leader lease: which instance polls and publishes, under which epoch",
        """
        CREATE TABLE leader_lease (
            id         INTEGER PRIMARY KEY CHECK (id = 1),
            holder     TEXT NOT NULL,
            epoch      INTEGER NOT NULL,
            expires_at REAL NOT NULL
        );
        """,
        postgresql="""
        CREATE TABLE leader_lease (
            id         INTEGER PRIMARY KEY CHECK (id = 1),
            holder     TEXT NOT NULL,
            epoch      BIGINT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        );
        """,
    ),
    Migration(
        11,
        "the panel's open questions in the store, so any instance takes the answer",
        """
        CREATE TABLE pending_inputs (
            user_id    INTEGER PRIMARY KEY,
            chat_id    INTEGER NOT NULL,
            kind       TEXT NOT NULL,
            expires_at REAL NOT NULL
        );
        """,
        postgresql="""
        CREATE TABLE pending_inputs (
            user_id    BIGINT PRIMARY KEY,
            chat_id    BIGINT NOT NULL,
            kind       TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        );
        """,
    ),
    Migration(
        12,
        "followed topics: one row per distinct topic, its inverted index, and who follows it",
        # topics: a distinct topic (words: its folded words, space-separated; size: how many
        # distinct words must all occur; analyzer: the analysis that made its terms, so a new
        # one can redo them). topic_terms: the inverted index, term -> (topic, which word, and
        # the topic's size again, so matching reads the index alone).
        # follows: a chat's topics, as the reader typed them; any_lang 0 means only pieces in
        # the chat's languages. topics_state.version counts changes of the set of topics and
        # their terms, so a process can keep the index's vocabulary and know when it is stale.
        # Many chats following one topic share its terms, so matching a piece costs the
        # distinct topics it touches, not the chats (storage.follows). Ids are never reused
        # (AUTOINCREMENT, as PostgreSQL's identities): a button or a poll's matches naming a
        # dropped topic or follow must find nothing, never a newer one.
        """
        CREATE TABLE topics (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            words    TEXT NOT NULL UNIQUE,
            size     INTEGER NOT NULL,
            analyzer INTEGER NOT NULL
        );
        CREATE TABLE topic_terms (
            term     TEXT NOT NULL,
            topic_id INTEGER NOT NULL REFERENCES topics(id) ON DELETE CASCADE,
            word     INTEGER NOT NULL,
            size     INTEGER NOT NULL,
            PRIMARY KEY (term, topic_id, word)
        ) WITHOUT ROWID;
        CREATE INDEX topic_terms_topic ON topic_terms(topic_id);
        CREATE TABLE follows (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id    INTEGER NOT NULL
                       REFERENCES chats(id) ON DELETE CASCADE ON UPDATE CASCADE,
            topic_id   INTEGER NOT NULL REFERENCES topics(id),
            text       TEXT NOT NULL,
            any_lang   INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            UNIQUE (chat_id, topic_id)
        );
        CREATE INDEX follows_topic ON follows(topic_id);
        CREATE TABLE topics_state (
            id      INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL
        );
        INSERT INTO topics_state (id, version) VALUES (1, 0);
        """,
        postgresql="""
        CREATE TABLE topics (
            id       BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            words    TEXT NOT NULL UNIQUE,
            size     INTEGER NOT NULL,
            analyzer INTEGER NOT NULL
        );
        CREATE TABLE topic_terms (
            term     TEXT NOT NULL,
            topic_id BIGINT NOT NULL REFERENCES topics(id) ON DELETE CASCADE,
            word     INTEGER NOT NULL,
            size     INTEGER NOT NULL,
            PRIMARY KEY (term, topic_id, word)
        );
        CREATE INDEX topic_terms_topic ON topic_terms(topic_id);
        CREATE TABLE follows (
            id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            chat_id    BIGINT NOT NULL
                       REFERENCES chats(id) ON DELETE CASCADE ON UPDATE CASCADE,
            topic_id   BIGINT NOT NULL REFERENCES topics(id),
            text       TEXT NOT NULL,
            any_lang   INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (chat_id, topic_id)
        );
        CREATE INDEX follows_topic ON follows(topic_id);
        CREATE TABLE topics_state (
            id      INTEGER PRIMARY KEY CHECK (id = 1),
            version BIGINT NOT NULL
        );
        INSERT INTO topics_state (id, version) VALUES (1, 0);
        """,
    ),
    Migration(
        13,
        "delivery schedules: a chat's posts held for its daily digest or its quiet hours",
        # A chat's posts stay pending, unsent, while hold_from <= now (the publisher skips
        # them); the leader's scheduler ends the hold at held_until (a digest, or the posts
        # released) and plans the next one (bot.delivery.digests). NULL: as they appear.
        # The partial index finds a held chat's edits and notices (its digests), which still
        # go out, without reading its held posts. The UPDATE repairs the languages of private
        # chats a notice created before this version (a JSON list, where every reader of the
        # column splits a comma-separated list: such a chat matched no piece's language).
        """
        ALTER TABLE chats ADD COLUMN hold_from REAL;
        ALTER TABLE chats ADD COLUMN held_until REAL;
        UPDATE chats SET languages = lang WHERE languages LIKE '[%';
        CREATE INDEX chats_hold_from ON chats(hold_from) WHERE hold_from IS NOT NULL;
        CREATE INDEX chats_held_until ON chats(held_until) WHERE held_until IS NOT NULL;
        CREATE INDEX deliveries_pending_messages ON deliveries(chat_id, item_id)
            WHERE state = 'pending' AND kind != 'post';
        """,
        postgresql="""
        ALTER TABLE chats ADD COLUMN hold_from DOUBLE PRECISION;
        ALTER TABLE chats ADD COLUMN held_until DOUBLE PRECISION;
        UPDATE chats SET languages = lang WHERE languages LIKE '[%';
        CREATE INDEX chats_hold_from ON chats(hold_from) WHERE hold_from IS NOT NULL;
        CREATE INDEX chats_held_until ON chats(held_until) WHERE held_until IS NOT NULL;
        CREATE INDEX deliveries_pending_messages ON deliveries(chat_id, item_id)
            WHERE state = 'pending' AND kind != 'post';
        """,
    ),
    Migration(
        14,
        "paid broadcasts sent per day, for the daily Stars cap",
        # One row a day (YYYY-MM-DD in the bot's time zone): the paid sends recorded as sent,
        # added in the outcomes' own transaction (storage.paid).
        """
        CREATE TABLE paid_sends (
            day   TEXT PRIMARY KEY,
            sends INTEGER NOT NULL
        );
        """,
        postgresql="""
        CREATE TABLE paid_sends (
            day   TEXT PRIMARY KEY,
            sends BIGINT NOT NULL
        );
        """,
    ),
    Migration(
        15,
        "a million subscribers: fan-out in chunks, slimmer outbox rows, held posts parked",
        # fan_out_jobs: a poll's new items (ids first_item..last_item, origin 'new') still to be
        # queued for the chats with ids above after_chat (NULL: none done yet), with what the
        # expansion needs to resume after a crash: the priorities by chat type (JSON), the
        # poll's time, and (fan_out_skips, fan_out_hits) the filters' verdicts and the followed
        # topics each item matches. storage.store expands a job a chunk of chats per
        # transaction and deletes it with its last chunk.
        # The outbox keeps the indexes its queries use (see storage/store.py, "Indexes"):
        # deliveries_post (fan-out, /why, edits), deliveries_chat (a chat's rows: its queue
        # head, pausing, migrate_chat, cascades) and deliveries_pending (the publisher's sweep
        # in dispatch order; SQLite's rowid is its last column). Dropped: deliveries_item
        # (deliveries_post serves lookups by item), deliveries_pending_heads (replaced by the
        # sweep), deliveries_sent_at (no query) and deliveries_created_at (retention walks ids).
        # chats.parked: the publisher moved the chat's held posts out of its sweep
        # (priority + storage.outbox.PARKED) and brings them back when the hold ends.
        """
        DROP INDEX deliveries_item;
        DROP INDEX deliveries_pending_heads;
        DROP INDEX deliveries_sent_at;
        DROP INDEX deliveries_created_at;
        ALTER TABLE chats ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX chats_parked ON chats(hold_from) WHERE parked = 1;
        CREATE TABLE fan_out_jobs (
            id         INTEGER PRIMARY KEY,
            first_item INTEGER NOT NULL,
            last_item  INTEGER NOT NULL,
            priorities TEXT NOT NULL,
            at         REAL NOT NULL,
            after_chat INTEGER
        );
        CREATE TABLE fan_out_skips (
            job_id  INTEGER NOT NULL REFERENCES fan_out_jobs(id) ON DELETE CASCADE,
            chat_id INTEGER NOT NULL,
            item_id INTEGER NOT NULL,
            reason  TEXT NOT NULL,
            PRIMARY KEY (job_id, chat_id, item_id)
        ) WITHOUT ROWID;
        CREATE TABLE fan_out_hits (
            job_id   INTEGER NOT NULL REFERENCES fan_out_jobs(id) ON DELETE CASCADE,
            topic_id INTEGER NOT NULL,
            item_id  INTEGER NOT NULL,
            PRIMARY KEY (job_id, topic_id, item_id)
        ) WITHOUT ROWID;
        """,
        # PostgreSQL's pending index carries the id (it has no rowid) and sorts notices (no
        # item) first, as SQLite does.
        postgresql="""
        DROP INDEX deliveries_item;
        DROP INDEX deliveries_pending_heads;
        DROP INDEX deliveries_sent_at;
        DROP INDEX deliveries_created_at;
        DROP INDEX deliveries_pending;
        CREATE INDEX deliveries_pending ON deliveries(priority, item_id NULLS FIRST, id)
            WHERE state = 'pending';
        ALTER TABLE chats ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX chats_parked ON chats(hold_from) WHERE parked = 1;
        CREATE TABLE fan_out_jobs (
            id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            first_item BIGINT NOT NULL,
            last_item  BIGINT NOT NULL,
            priorities TEXT NOT NULL,
            at         DOUBLE PRECISION NOT NULL,
            after_chat BIGINT
        );
        CREATE TABLE fan_out_skips (
            job_id  BIGINT NOT NULL REFERENCES fan_out_jobs(id) ON DELETE CASCADE,
            chat_id BIGINT NOT NULL,
            item_id BIGINT NOT NULL,
            reason  TEXT NOT NULL,
            PRIMARY KEY (job_id, chat_id, item_id)
        );
        CREATE TABLE fan_out_hits (
            job_id   BIGINT NOT NULL REFERENCES fan_out_jobs(id) ON DELETE CASCADE,
            topic_id BIGINT NOT NULL,
            item_id  BIGINT NOT NULL,
            PRIMARY KEY (job_id, topic_id, item_id)
        );
        """,
    ),
    Migration(
        16,
        "PostgreSQL: the outbox indexes filled in key order pack their pages",
        # A B-tree leaf that splits at the end of its key range keeps a tenth of itself free
        # (fillfactor 90), room only later keys in between would use. These three are filled
        # in key order: the primary key (new ids), deliveries_post (a fan-out adds its items'
        # rows in chat order, after every older item's) and deliveries_pending (in id order
        # after its priority's older items); what else comes in between, the row versions
        # of sends and retries, arrives in batches that split a page either way. It saves
        # 9 of a queued row's 228 bytes. deliveries_chat keeps its room: a chat's new rows go
        # in beside its older ones. Pages already built keep their fill (no REINDEX: this
        # takes no lock that stops writes). SQLite has no fillfactor: nothing to do there.
        """
        SELECT 1;
        """,
        postgresql="""
        ALTER INDEX deliveries_pkey SET (fillfactor = 100);
        ALTER INDEX deliveries_post SET (fillfactor = 100);
        ALTER INDEX deliveries_pending SET (fillfactor = 100);
        """,
    ),
)


HISTORY_SINCE = 9  # the migration that creates schema_migrations


async def migrate(conn: aiosqlite.Connection, now: float | None = None) -> int:
    """Apply every migration newer than the store's; return the resulting version."""
    current = await schema_version(conn)
    latest = MIGRATIONS[-1].version
    if current > latest:
        raise RuntimeError(
            f"database schema version {current} is newer than this bot knows ({latest}); "
            "refusing to run an older bot against it"
        )
    applied_now: dict[int, float] = {}  # before the history table exists
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        at = time.time() if now is None else now
        log.info("applying migration %d: %s", migration.version, migration.name)
        # executescript would COMMIT on its own; run the statements inside one explicit
        # transaction so a failed migration leaves the file at the previous version.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(migration.sql):
                await conn.execute(statement)
            history: list[tuple[int, str, float | None]] = [(migration.version, migration.name, at)]
            if migration.version == HISTORY_SINCE:
                history[:0] = [
                    (m.version, m.name, applied_now.get(m.version))
                    for m in MIGRATIONS
                    if m.version < HISTORY_SINCE
                ]
            if migration.version >= HISTORY_SINCE:
                await conn.executemany(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    history,
                )
            else:
                applied_now[migration.version] = at
            await conn.execute(f"PRAGMA user_version = {migration.version:d}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()
        current = migration.version
    return current


# The newest migration a store has: its history's, else (stores older than the table)
# user_version. Either query alone is valid SQL on any SQLite store.
HAS_HISTORY = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
HISTORY_VERSION = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
LEGACY_VERSION = "PRAGMA user_version"


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The newest migration the store has (see HAS_HISTORY)."""
    async with conn.execute(HAS_HISTORY) as cursor:
        has_history = await cursor.fetchone() is not None
    async with conn.execute(HISTORY_VERSION if has_history else LEGACY_VERSION) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements, using sqlite3's own notion of completeness."""
    import sqlite3

    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
