"""Rate limits: parsing Celery's notation and a token bucket per task name.

``"100/m"`` is 100 starts per minute, ``"10/s"`` ten per second, ``"5/h"`` five per
hour; a bare number is per second. ``rate_limit`` applies per node (as in Celery): a
node starts a rate-limited task only when its bucket has a token, and a task that must
wait goes back to the node's timers (it never blocks a child or other tasks).
``mesh_rate_limit`` is a total for the whole mesh: each node's bucket gets its share
(``mesh_share``; mesh/node/limits.py keeps the shares up to date).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mesh.exceptions import ConfigError

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(rate: str | float | int | None) -> float | None:
    """Starts per second, or None for no limit (None, 0, "0", "")."""
    if rate is None or rate == "":
        return None
    if isinstance(rate, bool):
        raise ConfigError(f"a rate limit must be like '100/m', '10/s' or a number, got {rate!r}")
    if isinstance(rate, (int, float)):
        per_s = float(rate)
    elif isinstance(rate, str):
        text = rate.strip()
        count, _, unit = text.partition("/")
        try:
            n = float(count)
        except ValueError:
            raise ConfigError(f"a rate limit must be like '100/m', '10/s' or a number, got {rate!r}") from None
        if unit and unit.strip() not in _UNITS:
            raise ConfigError(f"unknown rate limit unit {unit!r} in {rate!r} (use s, m or h)")
        per_s = n / _UNITS[unit.strip()] if unit else n
    else:
        raise ConfigError(f"a rate limit must be like '100/m', '10/s' or a number, got {rate!r}")
    if per_s < 0 or per_s != per_s or per_s == float("inf"):
        raise ConfigError(f"a rate limit must be a finite number >= 0, got {rate!r}")
    return per_s or None


class TokenBucket:
    """Starts at most ``rate`` per second, in bursts of at most ``capacity``."""

    __slots__ = ("rate", "capacity", "tokens", "last")

    def __init__(self, rate: float, capacity: float = 1.0):
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.last: float | None = None

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else reserve the next free one and
        return the seconds until it is due (the caller starts then, without asking
        again). Reservations queue up: n callers at once get 0, 1/rate, 2/rate...,
        so a backlog of n tasks costs n timers, not n timers per start."""
        if self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0 - 1e-9:     # float sums of refills land just under 1.0
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        wait = (1.0 - self.tokens) / self.rate
        self.tokens -= 1.0                # negative: tokens owed to reservations
        return wait


def mesh_share(total: float, peers: Iterable[Any]) -> tuple[float, int]:
    """This node's share of a mesh-wide limit: ``total`` starts per second for the whole
    mesh (this node's view), ``peers`` the totals the other alive nodes running the
    task declare (what is not a finite number > 0 is ignored: a peer's meta is not
    trusted). The smallest total anyone declares, split evenly between this node and
    those peers, so that the shares add up to no more than any node's total. Returns
    (this node's share, how many nodes share it)."""
    smallest, n = total, 1
    for p in peers:
        if isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p < float("inf"):
            smallest = min(smallest, float(p))
            n += 1
    return smallest / n, n
