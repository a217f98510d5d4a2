"""Timing maths of membership, as pure functions (table-tested in
tests/unit/test_membership_timing.py).

Names follow hashicorp/memberlist (util.go, suspicion.go, awareness.go), which follow
the SWIM and Lifeguard papers:

* ``n`` is the number of members this node believes are alive or suspect, itself
  included; "log" below is the base-10 logarithm, floored at 1 (so a mesh of up to
  10 nodes uses the base value).
* Suspicion: a suspect member is declared dead after a timeout that starts at
  ``max`` and falls (logarithmically) towards ``min`` as *independent* confirmations
  arrive from other members that suspect it too (Lifeguard's "LHA-Suspicion").
* Awareness: a score 0..(multiplier - 1) of this node's own health. 0 is healthy.
  Probe interval, probe timeout and (in mesh, unlike memberlist) the local suspicion
  timeout are multiplied by ``score + 1``, so an overloaded node slows down instead
  of accusing healthy peers (Lifeguard's "LHA-Probe").
"""
from __future__ import annotations

import math


def node_scale(n: int) -> float:
    """log10(n), but at least 1: the factor by which timeouts and retransmits grow
    with the size of the mesh."""
    return max(1.0, math.log10(max(1, n)))


def suspicion_timeout(mult: float, n: int, interval: float) -> float:
    """The minimum suspicion timeout: ``mult * max(1, log10(n)) * interval`` seconds.

    It gives the suspect time to hear that it is suspected (through gossip, in about
    log(n) gossip rounds) and to refute it."""
    return mult * node_scale(n) * interval


def suspicion_bounds(mult: float, max_mult: float, n: int, interval: float) -> tuple[float, float]:
    """(min, max) suspicion timeouts: ``max = max_mult * min``."""
    lo = suspicion_timeout(mult, n, interval)
    return lo, lo * max_mult


def expected_confirmations(k: int, n: int) -> int:
    """How many independent confirmations a suspicion waits for before its timeout
    reaches its minimum. A mesh too small to produce ``k`` other suspecters (the
    suspect and the first suspecter are not candidates: ``n - 2 < k``) waits for none,
    so a suspicion there runs the minimum timeout at once (memberlist's rule)."""
    return 0 if n - 2 < k else k


def remaining_suspicion_time(confirmations: int, k: int, elapsed: float,
                             lo: float, hi: float) -> float:
    """Seconds left before a suspicion expires (may be negative: already due).

    With ``c`` confirmations out of ``k`` expected, the timeout is
    ``hi - (hi - lo) * log(c + 1) / log(k + 1)``, rounded down to whole milliseconds
    and never below ``lo``; ``elapsed`` is the time since the suspicion started.
    ``k < 1`` means no confirmations are expected: the timeout is ``lo``."""
    if k < 1:
        return lo - elapsed
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = hi - frac * (hi - lo)
    timeout = max(lo, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed


def retransmit_limit(mult: int, n: int) -> int:
    """How many times one update is piggybacked by each member that passes it on:
    ``mult * ceil(log10(n + 1))``. Enough for an update to reach every member with
    high probability (epidemic spread needs O(log n) rounds)."""
    return mult * math.ceil(math.log10(n + 1))


def scale_by_awareness(seconds: float, score: int) -> float:
    """A probe interval or timeout lengthened by this node's health score."""
    return seconds * (score + 1)


def apply_awareness_delta(score: int, delta: int, max_multiplier: int) -> int:
    """The new health score after ``delta``, kept within 0..max_multiplier - 1."""
    return min(max(score + delta, 0), max(max_multiplier - 1, 0))


PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_interval(base: float, n: int) -> float:
    """The push-pull (full state sync) period for a mesh of ``n``.

    A push-pull carries the whole member list, so its size grows with ``n``. Up to
    32 members the base period is used; above it the period grows in proportion to
    ``n``, which keeps the push-pull bytes each node sends per second constant as the
    mesh grows. (memberlist grows it with log2(n), which keeps anti-entropy faster
    but lets the bytes grow as n / log n.) The mesh-wide rate of push-pulls stays at
    about 32 per base period, and piggybacked gossip, not push-pull, is what spreads
    changes; push-pull only repairs what gossip missed."""
    return base * max(1.0, n / PUSH_PULL_SCALE_THRESHOLD)
