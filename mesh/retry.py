"""Retry timing, as pure functions (Celery's semantics, so Celery users get what
they expect).

With ``retry_backoff`` the n-th retry (retries = 0 for the first) waits
``factor * 2**retries`` seconds, where factor is 1 for ``True`` or the number given;
capped at ``retry_backoff_max``; with ``retry_jitter`` a uniformly random whole
number of seconds in [0, that]. Without backoff it waits ``default_retry_delay``.
"""
from __future__ import annotations

import random


def backoff_delay(retries: int, *, backoff: bool | float = False, backoff_max: float = 600.0,
                  jitter: bool = True, default_delay: float = 180.0,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retries + 1``."""
    if retries < 0:
        raise ValueError("retries must be >= 0")
    if backoff is False or backoff == 0:
        return float(default_delay)
    factor = 1.0 if backoff is True else float(backoff)
    delay = min(factor * (2 ** min(retries, 64)), backoff_max)
    if jitter:
        delay = float((rng or random).randrange(int(delay) + 1))
    return float(delay)
