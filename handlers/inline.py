"""Inline mode: "@bot words" in any chat lists matching pieces; choosing one sends the post.

Results are paged with next_offset; an empty query lists the latest pieces.
"""

from __future__ import annotations

from telegram import Update

from bot.services.search import parse_query
from handlers.context import BotContext
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
    lang = await svc.readers.user_language(inline.from_user)
    query = parse_query(inline.query)
    items, next_offset = await svc.readers.find_inline(query, lang, inline.offset)
    await inline.answer(
        views.inline_results(svc.renderer, items, query),
        cache_time=CACHE_SECONDS,
        is_personal=True,
        # None, not "": with Defaults set, PTB 22 sends an empty string parameter as [] (it
        # takes "" for an empty sequence of poll options). Telegram reads no offset as "".
        next_offset=next_offset or None,
    )
