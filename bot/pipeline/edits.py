"""Site edits: when the site changes a piece the bot already posted, keep the stored item's
summary consistent and, with EDIT_ON_UPDATE, queue an edit of the messages already sent for it.

The poller calls `Editor.on_updated` after a poll with the items whose feed text changed (the
store has already written the feed's new title and text, and never queues them again). The
summary is rebuilt from the cached article page (no new fetch), and an edit row is queued in
the outbox for each message sent within EDIT_WINDOW. The publisher sends the edits like posts
(rate-limited, retried, kept across restarts), re-rendering the piece for each chat at send
time (bot.delivery.sender: caption or text, "not modified" counts as done).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from bot.clock import Clock
from bot.config import Settings
from bot.pipeline.enrich import apply_article
from bot.text.summary import LEAD
from bot.workers import RunCpu
from storage.articles import get_article, update_item_text
from storage.models import Item
from storage.outbox import enqueue_edits
from storage.store import Store

log = logging.getLogger(__name__)


class Editor:
    """Follows the site's edits of posted items; `on_updated` is the poller's UpdateHook."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        on_queued: Callable[[], None] = lambda: None,
        enabled: bool = False,
        window: float = 48 * 3600.0,
        summary_length: int = 600,
        mode: str = LEAD,
        cpu: RunCpu = asyncio.to_thread,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_queued = on_queued
        self.enabled = enabled
        self.window = window
        self.summary_length = summary_length
        self.mode = mode
        self.cpu = cpu

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        clock: Clock,
        on_queued: Callable[[], None],
        cpu: RunCpu = asyncio.to_thread,
    ) -> Editor:
        return cls(
            store,
            clock,
            on_queued=on_queued,
            enabled=settings.edit_on_update,
            window=settings.edit_window,
            summary_length=settings.summary_length,
            mode=settings.summary_mode,
            cpu=cpu,
        )

    async def on_updated(self, items: Sequence[Item]) -> None:
        """Refresh each edited item's stored summary; edit its recent messages when enabled."""
        for item in items:
            try:
                refreshed = await self.refresh(item)
                if self.enabled:
                    await self.edit_messages(refreshed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the site's edit of item %d failed", item.id)

    async def refresh(self, item: Item) -> Item:
        """Rebuild the summary from the feed's new text and the cached page; store it."""
        article = await get_article(self.store, item.link)
        if self.mode == LEAD:
            better = apply_article(item, article, lang=item.lang, length=self.summary_length)
        else:  # LexRank is CPU work
            better = await self.cpu(
                apply_article,
                item,
                article,
                lang=item.lang,
                length=self.summary_length,
                mode=self.mode,
            )
        if better != item:
            await update_item_text(self.store, better)
        return better

    async def edit_messages(self, item: Item) -> int:
        """Queue an edit of every message sent for `item` within the window; return how many."""
        queued = await enqueue_edits(self.store, item.id, self.clock.now() - self.window,
                                     self.clock.now())  # fmt: skip
        if queued:
            log.info("item %d was edited on the site: %d message edit(s) queued", item.id, queued)
            self.on_queued()
        return queued
