"""Inline mode: "@bot words" in any chat lists matching pieces; choosing one sends the post.

Results are paged with next_offset; an empty query lists the latest pieces.
"""

from __future__ import annotations

from telegram import Update

from bot.context import BotContext
from bot.services import readers
from bot.services.search import parse_query
from handlers.views import readers as views

# Results depend on the user's language, so they are cached per user, and briefly: new pieces
# should show up soon.
CACHE_SECONDS = 30


async def inline_query(update: Update, context: BotContext) -> None:
    """Answer an inline query with a page of matching pieces."""
    inline = update.inline_query
    if inline is None:
        return
    svc = context.services
    lang = await readers.user_language(svc, inline.from_user)
    query = parse_query(inline.query)
    items, next_offset = await readers.find_inline(svc, query, lang, inline.offset)
    await inline.answer(
        views.inline_results(svc.renderer, items, query),
        cache_time=CACHE_SECONDS,
        is_personal=True,
        next_offset=next_offset,
    )
