"""Rendezvous (highest random weight) hashing: which node keeps the second copy of
a task and its result.

Every node and every client computes the same answer from the same member list,
with no coordination: each candidate node gets a pseudo-random weight from
(task id, node id), and the highest weight wins. When a node joins or leaves, only
the tasks whose winner it is (or was) move: about 1/N of them.

The holder of a task copies it to ``backup_for(task_id, alive, holder)``; when the
holder dies, that backup runs the task, and a client whose node died sends its task
to the same node (so the task is already there and runs once).
"""
from __future__ import annotations

from collections.abc import Iterable

from mesh.digest import blake2b


def weight(key: str, node: str) -> int:
    """The weight of ``node`` for ``key``: 64 bits of BLAKE2b over both (stable across
    processes, machines and Python versions, unlike ``hash()``)."""
    digest = blake2b(f"{node}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(key: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` from the highest weight for ``key`` to the lowest."""
    return sorted(set(nodes), key=lambda n: (weight(key, n), n), reverse=True)


def backup_for(key: str, nodes: Iterable[str], holder: str) -> str | None:
    """The node that keeps the copy of ``key`` held by ``holder``: the highest
    weight among ``nodes`` other than the holder; None when there is none. With one
    candidate (a two-node mesh) it is that one, without hashing: the same answer, and
    one BLAKE2b less per task on the holder (round 9 of docs/performance.md)."""
    first: str | None = None           # the first candidate, weighed only if another comes
    best: str | None = None
    best_w = -1
    for n in nodes:
        if n == holder:
            continue
        if first is None:
            first = n
            continue
        if best is None:
            best, best_w = first, weight(key, first)
        w = weight(key, n)
        if w > best_w or (w == best_w and n > best):
            best, best_w = n, w
    return best if best is not None else first
