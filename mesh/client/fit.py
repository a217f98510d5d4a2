"""Which of the client's nodes may take a task, and what to say when none may.

Pure functions over what the client knows of each node (``serves``: its mesh, queues
and task names from its gossiped meta, or None before the client has heard; a node it
has not heard about is asked, and refuses if it must). Tested with tables in
tests/unit/test_routing.py.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from mesh.capabilities import Serves, show


class Fits(Protocol):
    @property
    def endpoint(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def serves(self) -> Serves | None: ...


L = TypeVar("L", bound=Fits)


def fits(links: Sequence[L], queue: str, name: str,
         refused: Collection[str] | None = None) -> list[L]:
    """The links that may take a task of ``name`` on ``queue``: not known to refuse it
    (another queue, no such task) and that have not refused it already."""
    return [n for n in links
            if (n.serves is None or n.serves.accepts(queue, name))
            and (not refused or n.endpoint not in refused)]


def unplaceable(links: Sequence[Fits], mesh: str | None, queue: str, name: str,
                refused: Collection[str] | None = None, kind: str = "",
                said: str = "") -> tuple[str, str]:
    """(exception type, message) for a task no alive node takes. ``links`` are the
    alive nodes of the client's mesh; ``kind`` and ``said`` what the last node to
    refuse it answered ("journal", "quota", "queue" or "NotRegistered", and its words)."""
    have = [n for n in links if n.serves is not None and n.serves.has(name)]
    considered = []
    for n in links:
        who = n.node_id or n.endpoint
        why = n.serves.why_not(queue, name) if n.serves is not None else ""
        if why:
            considered.append(f"{who} {why}")
        elif refused and n.endpoint in refused:
            considered.append(f"{who} refused it")
        else:
            considered.append(f"{who} (not heard from)")
    where = f"mesh {mesh!r}" if mesh is not None else "this client's mesh"
    nodes = f"nodes considered: {show(considered)}" if considered else "no alive node is known"
    if kind in ("journal", "quota"):          # the node's own words say why
        return "MeshError", f"{said} ({nodes})"
    if kind != "queue" and not have:
        return "NotRegistered", (f"task {name!r} is not registered on any alive node of "
                                 f"{where} ({nodes})")
    return "MeshError", (f"no alive node of {where} serving queue {queue!r} has task {name!r} "
                         f"({nodes})")
