"""What a node serves, as it tells the mesh: its mesh, its queues, its task names.

Every node puts these in the member meta it gossips (mesh/node/gossip.py), next to its
load; clients read them from the ``members`` answer, and nodes from their membership
table. Placement (the client), shedding and the beat (nodes) send a task only to a
node that ``accepts`` it: same mesh, serving the task's queue, with the task's name
registered.

Meta keys (docs/routing.md):

==========  ================================================================================
``mesh``    the mesh's name (the app's name: ``Mesh("billing")``); absent: ``""``
``queues``  the queues the node takes (``meshnode --queues``), sorted; absent or nil:
            every queue
``xq``      with ``queues`` nil: the queues it does not take (``meshnode -X``,
            ``cancel_consumer``), sorted; empty or absent: none
``names``   the task names it registered, as a set one can test: base64 of the sorted
            4-byte BLAKE2b hashes of the names (100 tasks: 536 characters); absent: not
            told (a node that does not say is asked, and refuses if it must)
==========  ================================================================================

A hash set is compact enough to gossip with the load every second. Two names share a
hash with odds of about 1 in 4 billion per pair; then a node without the task may be
chosen, and it refuses (``NotRegistered``), and the client tries another.
"""
from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.digest import blake2b

NAME_HASH_BYTES = 4
MAX_SHOWN = 8               # queues or nodes named in one message at most


@functools.lru_cache(maxsize=4096)
def name_hash(name: str) -> bytes:
    return blake2b(name.encode("utf-8", "surrogatepass"),
                   digest_size=NAME_HASH_BYTES).digest()


def encode_names(names: Iterable[str]) -> str:
    """The ``names`` meta value for these task names."""
    return base64.b64encode(b"".join(sorted({name_hash(n) for n in names}))).decode("ascii")


@functools.lru_cache(maxsize=1024)
def decode_names(text: str) -> frozenset[bytes] | None:
    """The hash set a ``names`` meta value holds; None when it is malformed (then the
    node is treated as one that did not say)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if len(raw) % NAME_HASH_BYTES:
        return None
    return frozenset(raw[i:i + NAME_HASH_BYTES] for i in range(0, len(raw), NAME_HASH_BYTES))


def show(items: Iterable[str]) -> str:
    """A short list for messages: the first few, then how many more."""
    items = list(items)
    text = ", ".join(items[:MAX_SHOWN])
    return text + (f" and {len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else "")


@dataclass(frozen=True)
class Serves:
    """What one node serves. ``queues`` None: every queue but ``excluded``; ``names``
    None: not told."""
    mesh: str = ""
    queues: frozenset[str] | None = None
    names: frozenset[bytes] | None = None
    excluded: frozenset[str] = frozenset()

    @property
    def every(self) -> bool:
        """Whether it takes every queue (its queue never keeps a task from it)."""
        return self.queues is None and not self.excluded

    def serves_queue(self, queue: str) -> bool:
        return queue not in self.excluded if self.queues is None else queue in self.queues

    def has(self, name: str) -> bool | None:
        """Whether the node registered ``name``: True, False, or None (it did not say)."""
        return None if self.names is None else name_hash(name) in self.names

    def accepts(self, queue: str, name: str) -> bool:
        """May a task of ``name`` routed to ``queue`` go there? (A node that did not
        say what it registered may: it refuses if it must.)"""
        return self.serves_queue(queue) and \
            (self.names is None or name_hash(name) in self.names)

    def why_not(self, queue: str, name: str) -> str:
        """Why it does not accept the task, in words ("" when it does)."""
        reasons = []
        if not self.serves_queue(queue):
            reasons.append(f"serves every queue but {show(sorted(self.excluded))}"
                           if self.queues is None else
                           f"serves queue(s) {show(sorted(self.queues))}, not {queue!r}"
                           if self.queues else "serves no queue")
        if self.has(name) is False:
            reasons.append(f"has no task {name!r}")
        return " and ".join(reasons)

    def describe_queues(self) -> str:
        if self.queues is None:
            return "*" + "".join(f",-{q}" for q in sorted(self.excluded))
        return ",".join(sorted(self.queues))


def meta(mesh: str, queues: Iterable[str] | None, names: Iterable[str],
         excluded: Iterable[str] = ()) -> dict[str, Any]:
    """The meta keys a node gossips (merged into its load meta)."""
    return {"mesh": mesh, "queues": None if queues is None else sorted(set(queues)),
            "xq": [] if queues is not None else sorted(set(excluded)),
            "names": encode_names(names)}


def _strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(q, str) for q in value):
        return tuple(value)
    return None


@functools.lru_cache(maxsize=1024)
def _serves(mesh: str, queues: tuple[str, ...] | None, names: str | None,
            excluded: tuple[str, ...] = ()) -> Serves:
    return Serves(mesh, None if queues is None else frozenset(queues),
                  None if names is None else decode_names(names), frozenset(excluded))


def from_meta(meta: Mapping[str, Any] | None) -> Serves:
    """What a member's meta says it serves; values of the wrong type count as not said
    (a node never trusts a peer's meta to be well formed)."""
    if not meta:
        return _serves("", None, None)
    mesh = meta.get("mesh", "")
    queues = meta.get("queues")
    names = meta.get("names")
    qs = _strings(queues)
    return _serves(mesh if isinstance(mesh, str) else "", qs,
                   names if isinstance(names, str) else None,
                   (_strings(meta.get("xq")) or ()) if qs is None else ())
