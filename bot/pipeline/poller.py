"""Feed polling: one loop per feed, conditional GET, parse in a worker thread, store, back off.

A feed's state (validators, error streak, next poll) lives in the store, so a restart resumes
where the last run left off. Errors are logged when a feed's state changes, not on every poll.

Fan-out policy is decided here and handed to the store as data (storage.models.FanOut): the
priorities by chat type, and the filter verdicts of the few chats that have rules, computed for
the new entries before the poll is stored. Nothing of ours runs inside the store's transaction:
new and edited items are indexed for search right after it commits. The store queues a fan-out
a chunk of chats per transaction and calls `on_queued` after each (the publisher starts on the
first); a fan-out a crash left half queued is finished at the start of the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from bot.backoff import backoff
from bot.clock import Clock, unless_stopped
from bot.pipeline.feeds import FeedError, FetchResult, ParsedFeed, fetch_feed, parse_feed
from bot.workers import RunCpu
from storage.models import (
    CHANNELS_FIRST,
    Chat,
    FanOut,
    Feed,
    FeedStatus,
    Item,
    NewItem,
    PollOutcome,
)
from storage.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollerConfig:
    interval: float = 120.0
    jitter: float = 0.1
    backoff_max: float = 3600.0
    max_bytes: int = 5 * 1024 * 1024
    timeout: float = 15.0
    max_age: float = 2 * 86400.0
    backfill: int = 0
    # A redirect from a public feed address to a private one is refused unless this is set.
    allow_private: bool = False


@dataclass(frozen=True, slots=True)
class PollReport:
    """What one poll did, for logs and tests."""

    status: str  # "ok", "not_modified" or "error"
    new_items: int = 0
    queued: int = 0
    error: str | None = None
    next_delay: float = 0.0
    error_streak: int = 0  # failed polls in a row, this one included


# Replaces thin new items with richer ones (article text, image) before they are stored; must
# keep each item's identity and content_hash (the hash of the feed's own text).
Enricher = Callable[[Feed, list[NewItem]], Awaitable[list[NewItem]]]
# Returns why a chat should not get a new entry (a filter rule), or None to send it; asked
# only for the chats that have filter rules (Store.filtering_chats).
Decider = Callable[[NewItem, Chat], str | None]
# Told about stored items whose text the site changed.
UpdateHook = Callable[[Sequence[Item]], Awaitable[None]]
# A piece's text analysed for the index: its title's and its text's terms (search.Analysed).
Analysed = tuple[str, str]
# Analyses new entries in a language, by identity (search.analyse; CPU work, run in `cpu`).
Analyser = Callable[[Sequence[NewItem], str], Mapping[str, Analysed]]
# Adds stored items to the search index, or replaces them there (search.index_items), with the
# analysed texts of the new ones, by identity, made before they were stored.
Indexer = Callable[[Sequence[Item], Mapping[str, Analysed]], Awaitable[None]]
# Returns the followed topics new entries match, by identity, from their analysed texts in a
# language (bot.services.topics.Topics.matching); empty when they match none.
TopicMatcher = Callable[[Mapping[str, Analysed], str], Awaitable[Mapping[str, Sequence[int]]]]


class Poller:
    """Polls feeds into the store; calls `on_queued()` when deliveries were added."""

    def __init__(
        self,
        store: Store,
        client: httpx.AsyncClient,
        clock: Clock,
        config: PollerConfig,
        *,
        on_queued: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        enrich: Enricher | None = None,
        decide: Decider | None = None,
        on_updated: UpdateHook | None = None,
        index: Indexer | None = None,
        analyse: Analyser | None = None,
        match_topics: TopicMatcher | None = None,
        cpu: RunCpu = asyncio.to_thread,
    ) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.config = config
        self.on_queued = on_queued
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.enrich = enrich
        self.decide = decide
        self.on_updated = on_updated
        self.index = index
        self.analyse = analyse
        self.match_topics = match_topics
        self.cpu = cpu
        # Told what each poll of run() did (health and metrics); set by the composition root.
        self.on_polled: Callable[[Feed, PollReport], None] | None = None
        self._last_error: dict[int, str] = {}
        self._last_bozo: dict[int, str | None] = {}

    async def run(self, feed: Feed, stop: asyncio.Event) -> None:
        """Poll `feed` every interval (backing off on errors) until `stop` is set."""
        delay = 0.0
        if feed.next_poll_at is not None:
            # Resume the schedule across restarts, but never wait longer than one interval.
            delay = min(max(0.0, feed.next_poll_at - self.clock.now()), self.config.interval)
        if feed.status is FeedStatus.ERROR and feed.last_error:
            self._last_error[feed.id] = feed.last_error
        while not stop.is_set():
            if delay > 0 and not await unless_stopped(self.clock.sleep(delay), stop):
                return
            try:
                report = await self.poll_once(feed)
                delay = report.next_delay
                if self.on_polled is not None:
                    self.on_polled(feed, report)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "polling feed %s crashed; retrying after one interval", feed.url,
                    extra={"feed_id": feed.id},
                )  # fmt: skip
                delay = self.config.interval
                if self.on_polled is not None:
                    self.on_polled(feed, PollReport("error", error="crashed", next_delay=delay))

    async def poll_once(self, feed: Feed) -> PollReport:
        """Fetch, parse and store one feed once; return what happened."""
        # A fan-out a crash (or a failed write) left half queued goes on first (a no-op read
        # when none is left); its first rows wake the publisher.
        await self.store.expand_fan_outs(on_queued=self.on_queued)
        current = await self.store.get_feed(feed.id) or feed
        result = await fetch_feed(
            self.client,
            current.url,
            etag=current.etag,
            last_modified=current.last_modified,
            max_bytes=self.config.max_bytes,
            timeout=self.config.timeout,
            allow_private=self.config.allow_private,
        )
        if result.status == "not_modified":
            delay = self._interval()
            await self.store.record_not_modified(current.id, self.clock.now(), self._at(delay))
            self._recovered(current)
            return PollReport("not_modified", next_delay=delay)
        if result.status == "error":
            return await self._failed(current, result.error or "unknown error", result)
        try:
            parsed: ParsedFeed = await self.cpu(
                parse_feed, result.body, result.url or current.url, result.content_type
            )
        except FeedError as exc:
            return await self._failed(current, f"not a feed: {exc}", result)
        self._note_bozo(current, parsed)
        items = parsed.items
        enrich = self.enrich is not None and current.initialized
        unknown = (
            await self.store.unknown_identities(current.id, items)
            if items and (enrich or self.decide is not None or self.analyse is not None)
            else set()
        )
        if enrich and unknown:
            items = await self._enriched(current, items, unknown)
        fresh = [i for i in items if i.identity in unknown]
        skips = await self._skips(current, fresh)
        # Analysed once, before the store: for the topics' matching and for the index.
        texts = await self.cpu(self.analyse, fresh, current.lang) if fresh and self.analyse else {}
        topics = await self._topics(current, texts)
        delay = self._interval()
        now = self.clock.now()
        outcome: PollOutcome = await self.store.store_poll(
            current.id,
            items,
            etag=result.etag,
            last_modified=result.last_modified,
            now=now,
            next_poll_at=now + delay,
            max_age=self.config.max_age,
            backfill=self.config.backfill,
            fan_out=FanOut(priorities=CHANNELS_FIRST, skips=skips, topics=topics),
            # Told after each chunk of the fan-out: sending starts with the first one.
            on_queued=self.on_queued,
        )
        self._recovered(current)
        await self._index([*outcome.new_items, *outcome.updated_items], texts)
        if outcome.updated_items and self.on_updated is not None:
            await self.on_updated(outcome.updated_items)
            if self.index is not None:  # the hook may have rewritten their summaries
                await self._index(
                    await self.store.get_items([item.id for item in outcome.updated_items])
                )
        if outcome.new_items:
            log.info(
                "feed %s: %d new item(s), %d deliveries queued%s",
                current.url,
                len(outcome.new_items),
                outcome.queued,
                " (first poll: backlog marked as seen)" if not current.initialized else "",
                extra={"feed_id": current.id},
            )
        return PollReport(
            "ok", new_items=len(outcome.new_items), queued=outcome.queued, next_delay=delay
        )

    async def _enriched(self, feed: Feed, items: list[NewItem], unknown: set[str]) -> list[NewItem]:
        """Let the enricher improve the items this feed has never stored (only those)."""
        assert self.enrich is not None
        fresh = [i for i in items if i.identity in unknown]
        try:
            better = {i.identity: i for i in await self.enrich(feed, fresh)}
        except Exception:
            log.exception("enriching items of feed %s failed; storing them as the feed has them",
                          feed.url, extra={"feed_id": feed.id})  # fmt: skip
            return items
        return [better.get(i.identity, i) for i in items]

    async def _skips(self, feed: Feed, fresh: Sequence[NewItem]) -> dict[str, dict[int, str]]:
        """Return the filter verdicts for `fresh` entries: identity → {chat id: reason}.

        Only chats with filter rules are asked (few, whatever the number of subscribers); a
        rule changed between this and the store's commit applies from the next piece on.
        """
        if self.decide is None or not fresh or not (feed.initialized or self.config.backfill):
            return {}  # a first poll queues nothing but the backfill
        chats = await self.store.filtering_chats(feed.lang)
        verdicts: dict[str, dict[int, str]] = {}
        for entry in fresh:
            for chat in chats:
                reason = self.decide(entry, chat)
                if reason is not None:
                    verdicts.setdefault(entry.identity, {})[chat.id] = reason
        return verdicts

    async def _topics(
        self, feed: Feed, texts: Mapping[str, Analysed]
    ) -> Mapping[str, Sequence[int]]:
        """The followed topics the new entries that may be queued match."""
        if self.match_topics is None or not texts or not (feed.initialized or self.config.backfill):
            return {}
        return await self.match_topics(texts, feed.lang)

    async def _index(
        self, items: Sequence[Item], texts: Mapping[str, Analysed] | None = None
    ) -> None:
        """Index stored items for search; a failure is logged (start-up catches them up)."""
        if self.index is None or not items:
            return
        try:
            await self.index(items, texts or {})
        except Exception:
            log.exception("indexing %d stored item(s) for search failed", len(items))

    async def _failed(self, feed: Feed, error: str, result: FetchResult) -> PollReport:
        streak = feed.error_streak + 1
        delay = max(backoff(streak, self.config.interval, self.config.backoff_max),
                    self.config.interval)  # fmt: skip
        if result.retry_after:
            delay = min(max(delay, result.retry_after), self.config.backoff_max)
        # The feeds' own jitter, only ever lengthening, as for every poll's interval.
        delay *= 1 + self.rng.uniform(0, self.config.jitter)
        await self.store.record_feed_error(feed.id, error, self.clock.now(), self._at(delay))
        previous = self._last_error.get(feed.id)
        if previous != error:
            log.warning(
                "feed %s failing: %s (attempt %d; next try in %.1f s)",
                feed.url, error, streak, delay, extra={"feed_id": feed.id},
            )  # fmt: skip
        else:
            log.debug("feed %s still failing: %s (attempt %d)", feed.url, error, streak,
                      extra={"feed_id": feed.id})  # fmt: skip
        self._last_error[feed.id] = error
        return PollReport("error", error=error, next_delay=delay, error_streak=streak)

    def _recovered(self, feed: Feed) -> None:
        if self._last_error.pop(feed.id, None) is not None:
            log.info("feed %s recovered", feed.url, extra={"feed_id": feed.id})

    def _note_bozo(self, feed: Feed, parsed: ParsedFeed) -> None:
        if parsed.bozo != self._last_bozo.get(feed.id):
            if parsed.bozo:
                log.warning(
                    "feed %s is malformed (%s); keeping the %d item(s) it yielded",
                    feed.url, parsed.bozo, len(parsed.items),
                )  # fmt: skip
            self._last_bozo[feed.id] = parsed.bozo
        if parsed.skipped:
            log.warning(
                "feed %s: skipped %d unusable entr%s: %s",
                feed.url, parsed.skipped, "y" if parsed.skipped == 1 else "ies",
                "; ".join(parsed.errors[:3]),
            )  # fmt: skip

    def _interval(self) -> float:
        # Jitter only shortens the wait, so a new piece is never seen later than one interval.
        return self.config.interval * (1 - self.rng.uniform(0, self.config.jitter))

    def _at(self, delay: float) -> float:
        return self.clock.now() + delay
