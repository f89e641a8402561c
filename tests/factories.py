"""Small builders of records for tests."""

from __future__ import annotations

import hashlib

from storage.models import DeliveryState, Item, ItemOrigin, NewItem, OutcomeRecord


def new_item(n: int, *, published_at: float | None = None, **fields: object) -> NewItem:
    """An entry as the parser would produce it, numbered `n`."""
    title = str(fields.pop("title", f"Piece {n}"))
    summary = str(fields.pop("summary", f"Summary of piece {n}."))
    values: dict[str, object] = {
        "identity": f"guid-{n}",
        "link": f"https://caliber.az/en/post/{n}",
        "title": title,
        "summary": summary,
        "published_at": published_at,
        "content_hash": hashlib.sha256(f"{title}\x1f{summary}".encode()).hexdigest(),
    }
    values.update(fields)
    return NewItem(**values)  # type: ignore[arg-type]


def item(n: int = 1, **fields: object) -> Item:
    """A stored item, numbered `n`."""
    values: dict[str, object] = {
        "id": n,
        "feed_id": 1,
        "lang": "en",
        "identity": f"guid-{n}",
        "link": f"https://caliber.az/en/post/{n}",
        "title": f"Piece {n}",
        "summary": f"Summary of piece {n}.",
        "published_at": 1_767_225_600.0,
        "first_seen_at": 1_767_225_600.0,
        "origin": ItemOrigin.NEW,
    }
    values.update(fields)
    return Item(**values)  # type: ignore[arg-type]


def sent(delivery_id: int, message_id: int | None, at: float) -> OutcomeRecord:
    """The outcome the publisher records for an answered send."""
    return OutcomeRecord(delivery_id, DeliveryState.SENT, at, message_id=message_id)


def retry(delivery_id: int, error: str, at: float, next_attempt_at: float) -> OutcomeRecord:
    """The outcome the publisher records for a send to try again later (an attempt spent)."""
    return OutcomeRecord(
        delivery_id, DeliveryState.PENDING, at, error=error, next_attempt_at=next_attempt_at
    )
