"""The benchmark's app: one no-op task, ``bench.inc(x) -> x + 1``.

The node loads ``bench.tasks`` (``meshnode --app bench.tasks``); the benchmark client
builds its own app with :func:`make_app` and the node's address, so both sides register
the very same function under the same explicit name.
"""
from __future__ import annotations

from collections.abc import Iterable

from mesh import Mesh

TASK_NAME = "bench.inc"


def inc(x: int) -> int:
    return x + 1


def make_app(peers: Iterable[str] | None = None, keys: str | None = None) -> Mesh:
    """A ``bench`` app with ``bench.inc`` registered; ``peers`` (and ``keys``, a keyed
    mesh's key directory) for the client side."""
    a = Mesh("bench", peers=peers, keys=keys) if peers is not None else Mesh("bench")
    a.task(name=TASK_NAME)(inc)
    return a


app = make_app()
