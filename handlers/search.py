"""/search WORDS and its paging and language buttons.

The query is stored under a random key bound to this chat (the buttons carry the key, not the
text); a button whose key is unknown, too old, from another chat, or whose data is not ours,
is answered as expired, and nothing of any other chat's search is shown.
"""

from __future__ import annotations

from telegram import Update

from bot.services import readers
from bot.services.search import parse_query
from handlers.context import BotContext
from handlers.reply import answer
from handlers.views import readers as views


async def search(update: Update, context: BotContext) -> None:
    """Answer /search WORDS with the first page of results."""
    message, chat = update.effective_message, update.effective_chat
    if message is None or chat is None:
        return
    svc = context.services
    stored = await svc.readers.reader_chat(chat, update.effective_user)
    words = readers.reader_text(" ".join(context.args or []))
    if not words.strip():
        await views.send_reply(message, views.text(svc.renderer, stored.lang, views.SEARCH_USAGE))
        return
    query = parse_query(words)
    if query.empty:
        await views.send_reply(
            message, views.text(svc.renderer, stored.lang, views.SEARCH_NO_WORDS)
        )
        return
    key = await svc.readers.remember_search(chat.id, query, stored.lang)
    found = await svc.readers.find(query, stored.lang)
    await views.send_reply(message, views.search_results(svc.renderer, found, key))


async def search_page(update: Update, context: BotContext) -> None:
    """Show another page, or another language scope, of a search in the same message."""
    callback = update.callback_query
    if callback is None:
        return
    svc = context.services
    message = callback.message
    lang = svc.translator.resolve(callback.from_user.language_code)
    if message is not None:
        lang = (await svc.readers.reader_chat(message.chat, callback.from_user)).lang
    parsed = views.parse_search_data(callback.data)
    saved = None
    if parsed is not None and message is not None and message.is_accessible:
        saved = await svc.readers.recall_search(message.chat.id, parsed[2])
    if parsed is None or saved is None:
        await answer(callback, views.plain(svc.renderer, lang, views.SEARCH_EXPIRED))
        return
    page, scope, key = parsed
    query, lang = saved  # redrawn in the language the search was made in
    found = await svc.readers.find(query, lang, scope, page)
    if page > 1 and not found.result.hits:
        await answer(callback, views.plain(svc.renderer, lang, views.SEARCH_EXPIRED))
        return
    await answer(callback)
    await views.edit_reply(callback, views.search_results(svc.renderer, found, key))
