"""Site edits: when the site changes a piece the bot already posted, keep the stored item's
summary consistent and, with EDIT_ON_UPDATE, edit the messages already sent for it.

The poller calls `Editor.on_updated` after a poll with the items whose feed text changed (the
store has already written the feed's new title and text, and never queues them again). The
summary is rebuilt from the cached article page (no new fetch), and each message sent within
EDIT_WINDOW is re-rendered for its chat and edited: editMessageCaption for a photo post,
editMessageText otherwise. The sent message's kind is inferred from the chat's style and the
item's image; when Telegram says the message has no caption (or no text), the other edit is
tried once. Edits go through the bot's shared rate limiter, as sends do.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence

from telegram import Bot, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from bot.clock import Clock
from bot.config import Settings
from bot.pipeline.enrich import apply_article
from bot.text.render import Post, Renderer
from bot.text.summary import LEAD
from bot.workers import RunCpu
from storage.articles import SentMessage, get_article, sent_messages, update_item_text
from storage.models import Item, PostStyle
from storage.store import Store

log = logging.getLogger(__name__)

_NOT_MODIFIED = "message is not modified"
_WRONG_KIND = ("there is no caption in the message", "there is no text in the message")


class EditOutcome(enum.StrEnum):
    EDITED = "edited"
    UNCHANGED = "unchanged"  # Telegram already shows this text
    FAILED = "failed"


class Editor:
    """Follows the site's edits of posted items; `on_updated` is the poller's UpdateHook."""

    def __init__(
        self,
        store: Store,
        bot: Bot,
        renderer: Renderer,
        clock: Clock,
        *,
        enabled: bool = False,
        window: float = 48 * 3600.0,
        summary_length: int = 600,
        mode: str = LEAD,
        concurrency: int = 4,
        cpu: RunCpu = asyncio.to_thread,
    ) -> None:
        self.store = store
        self.bot = bot
        self.renderer = renderer
        self.clock = clock
        self.enabled = enabled
        self.window = window
        self.summary_length = summary_length
        self.mode = mode
        self._slots = asyncio.Semaphore(concurrency)
        self.cpu = cpu

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        bot: Bot,
        renderer: Renderer,
        clock: Clock,
        cpu: RunCpu = asyncio.to_thread,
    ) -> Editor:
        return cls(
            store,
            bot,
            renderer,
            clock,
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

    async def edit_messages(self, item: Item) -> dict[EditOutcome, int]:
        """Edit every message sent for `item` within the window; count the outcomes."""
        since = self.clock.now() - self.window
        messages = await sent_messages(self.store, item.id, since)
        outcomes = await asyncio.gather(*(self._edit_bounded(m, item) for m in messages))
        counts = dict.fromkeys(EditOutcome, 0)
        for outcome in outcomes:
            counts[outcome] += 1
        if messages:
            log.info(
                "item %d was edited on the site: %d message(s) edited, %d unchanged, %d failed",
                item.id,
                counts[EditOutcome.EDITED],
                counts[EditOutcome.UNCHANGED],
                counts[EditOutcome.FAILED],
            )
        return counts

    async def _edit_bounded(self, message: SentMessage, item: Item) -> EditOutcome:
        async with self._slots:
            return await self.edit(message, item)

    async def edit(self, message: SentMessage, item: Item) -> EditOutcome:
        """Edit one sent message to show `item` as it is now."""
        chat = message.chat
        as_photo = chat.settings.style is PostStyle.PHOTO and bool(item.image_url)
        for photo in (as_photo, not as_photo):
            post = self.renderer.post(item, chat.settings, lang=item.lang, allow_photo=photo)
            try:
                await self._send_edit(chat.id, message.message_id, post, caption=photo)
            except BadRequest as exc:
                reason = exc.message.lower()
                if _NOT_MODIFIED in reason:
                    return EditOutcome.UNCHANGED
                if any(kind in reason for kind in _WRONG_KIND):
                    continue  # the message was sent the other way (e.g. the photo failed)
                log.warning("editing message %d in chat %d failed: %s",
                            message.message_id, chat.id, exc.message)  # fmt: skip
                return EditOutcome.FAILED
            except TelegramError as exc:
                log.warning("editing message %d in chat %d failed: %s",
                            message.message_id, chat.id, exc.message)  # fmt: skip
                return EditOutcome.FAILED
            return EditOutcome.EDITED
        return EditOutcome.FAILED

    async def _send_edit(self, chat_id: int, message_id: int, post: Post, *, caption: bool) -> None:
        if caption:
            await self.bot.edit_message_caption(
                chat_id=chat_id, message_id=message_id, caption=post.html, parse_mode=ParseMode.HTML
            )
            return
        preview = (
            LinkPreviewOptions(is_disabled=True)
            if post.disable_preview
            else LinkPreviewOptions(url=post.link, prefer_large_media=True)
        )
        await self.bot.edit_message_text(
            text=post.html,
            chat_id=chat_id,
            message_id=message_id,
            parse_mode=ParseMode.HTML,
            link_preview_options=preview,
        )
