"""The one backoff formula: waits that double from `base` up to `cap`, with jitter."""

from __future__ import annotations

import random


def backoff(
    step: int,
    base: float,
    cap: float,
    rng: random.Random | None = None,
    *,
    spread: tuple[float, float] = (0.75, 1.25),
) -> float:
    """The wait before try number `step + 1`: base × 2^step, at most `cap`.

    With `rng`, times a random factor in `spread` (±25% by default): the jitter spreads the
    tries of many waiters (chats, feeds) that failed together.
    """
    wait = min(cap, base * 2.0 ** min(step, 30))
    if rng is None:
        return float(wait)
    low, high = spread
    return float(wait * rng.uniform(low, high))
