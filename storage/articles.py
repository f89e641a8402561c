"""Storage for article summaries: the cache of fetched article pages (migration 4), the stored
item's text after a page improved it, and the sent messages an edit of the item must reach.
Each function is one short transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from storage.models import Item, PageContent
from storage.store import Store

# Every cached page keeps no more than this much text.
_MAX_TEXT = 50_000


@dataclass(frozen=True, slots=True)
class Article:
    """What the bot learned from an article page: status "ok", "empty" or "error"."""

    url: str
    status: str
    fetched_at: float
    page: PageContent = field(default_factory=PageContent)
    error: str | None = None


_ARTICLE_COLUMNS_LIST = (
    "url", "status", "fetched_at", "text", "title", "description", "image_url", "author",
    "published_at", "categories", "error",
)  # fmt: skip
_ARTICLE_COLUMNS = ", ".join(_ARTICLE_COLUMNS_LIST)


async def get_article(store: Store, url: str) -> Article | None:
    """Return the cached page for `url`, if it was fetched before."""
    row = await store.fetchone(f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE url = ?", (url,))
    if row is None:
        return None
    return Article(
        url=row["url"],
        status=row["status"],
        fetched_at=row["fetched_at"],
        page=PageContent(
            text=row["text"],
            title=row["title"],
            description=row["description"],
            image_url=row["image_url"],
            author=row["author"],
            published_at=row["published_at"],
            categories=tuple(json.loads(row["categories"] or "[]")),
        ),
        error=row["error"],
    )


async def save_article(store: Store, article: Article) -> None:
    """Cache `article` (replacing an earlier fetch of the same URL)."""
    async with store.transaction() as conn:
        await conn.execute(
            f"INSERT INTO articles ({_ARTICLE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET "
            + ", ".join(f"{column} = excluded.{column}" for column in _ARTICLE_COLUMNS_LIST[1:]),
            (
                article.url,
                article.status,
                article.fetched_at,
                article.page.text[:_MAX_TEXT],
                article.page.title,
                article.page.description,
                article.page.image_url,
                article.page.author,
                article.page.published_at,
                json.dumps(list(article.page.categories), ensure_ascii=False),
                (article.error or "")[:500] or None,
            ),
        )


async def prune_articles(store: Store, older_than: float) -> int:
    """Forget pages fetched before `older_than`; return how many."""
    async with store.transaction() as conn:
        return await conn.execute("DELETE FROM articles WHERE fetched_at < ?", (older_than,))


async def update_item_text(store: Store, item: Item) -> None:
    """Store `item`'s summary, image, author and categories.

    The search index keeps the item's previous text until the caller indexes it again
    (bot.services.search.index_items); the item stays findable meanwhile.
    """
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE items SET summary = ?, image_url = ?, author = ?, categories = ? WHERE id = ?",
            (
                item.summary,
                item.image_url,
                item.author,
                json.dumps(list(item.categories), ensure_ascii=False),
                item.id,
            ),
        )
