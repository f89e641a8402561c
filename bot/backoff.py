"""The one backoff formula: waits that double from `base` up to `cap`, with jitter."""

from __future__ import annotations

import random


def backoff(step: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait before try number `step + 1`: base × 2^step, at most `cap`, ±25% jitter.

    The jitter spreads the tries of many waiters (chats, feeds) that failed together.
    """
    return float(min(cap, base * 2.0 ** min(step, 30)) * (0.75 + rng.random() / 2))
