"""Where a client sends a task: power of two choices over nodes that are alive.

Pure functions, so they are tested with tables and a seeded random generator. Two
nodes are sampled and the less loaded one wins; never the global minimum, because
every client holds slightly stale numbers and would all herd onto the same node.
Load is what the node last said (gossip, or piggybacked on ACKs) plus what this
client has sent it since, which the node has not counted yet.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

PLACEABLE_STATES = frozenset({"alive"})


class Placeable(Protocol):
    """What placement reads of a node (NodeView, or the client's own live record)."""
    @property
    def endpoint(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def busy(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def score(self) -> float: ...


P = TypeVar("P", bound=Placeable)


@dataclass(frozen=True)
class NodeView:
    """What a client knows of one node."""
    node_id: str
    endpoint: str
    state: str = "alive"       # alive | suspect | dead | left (from membership)
    busy: int = 0              # children running a task, as last reported
    total: int = 1             # children
    queued: int = 0            # tasks waiting for a child, as last reported
    outstanding: int = 0       # tasks this client sent since that report (not yet counted)

    @property
    def score(self) -> float:
        """Expected wait in units of 'one task per child': lower is better."""
        return (self.busy + self.queued + self.outstanding) / max(self.total, 1)


def candidates(nodes: Sequence[P], avoid: str | None = None) -> list[P]:
    """Nodes a task may go to: alive ones, not ``avoid`` unless it is the only one."""
    alive = [n for n in nodes if n.state in PLACEABLE_STATES]
    if avoid is not None and len(alive) > 1:
        alive = [n for n in alive if n.endpoint != avoid]
    return alive


def choose(nodes: Sequence[P], rng: random.Random, avoid: str | None = None) -> P | None:
    """Power of two choices over the candidates; None when no node may take work."""
    pool = candidates(nodes, avoid)
    return choose_from(pool, rng)


def choose_from(pool: Sequence[P], rng: random.Random) -> P | None:
    """Power of two choices over nodes already known to be candidates."""
    if not pool:
        return None
    if len(pool) == 1:
        return pool[0]
    n = len(pool)                # two distinct nodes, in random order (as
    i = int(rng.random() * n)    # rng.sample(pool, 2), a quarter of its cost: this
    j = int(rng.random() * (n - 1))   # runs for every task the client sends)
    if j >= i:
        j += 1
    a, b = pool[i], pool[j]
    if a.score == b.score:      # free capacity breaks ties: prefer the bigger node
        return a if a.total - a.busy >= b.total - b.busy else b
    return a if a.score < b.score else b
