"""Which node is a task's backup (mesh/node/replicas.py sends it the copy): rendezvous
hashing (mesh/rendezvous.py) over the alive peers that would take the task (its
backup may have to run it: the same mesh, queue and task name, docs/routing.md), or
over every alive peer for a result. The alive peers and who takes what are read
from membership at most every ``ALIVE_TTL`` seconds, not once per task."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from mesh.exceptions import DecodeError
from mesh.membership import Member
from mesh.node.ledger import Entry
from mesh.rendezvous import backup_for
from mesh.wire.protocol import Submit, decode

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.replicas import Replicas

ALIVE_TTL = 0.05         # s the list of alive peers is reused for choosing backups


class BackupChoice:
    """The backup of a task or a result, among the alive peers (cached)."""

    def __init__(self, replicas: "Replicas"):
        self.replicas = replicas
        self._alive: list[str] = []                # alive peers (cached for ALIVE_TTL)
        self._alive_members: list[Member] = []
        self._takers: dict[tuple[str, str], list[str]] = {}   # (queue, name) -> alive takers
        self._alive_at = -1.0
        # peers that were alive and are not now (gossip.py notes them; the suspected
        # ones are kept: copy_back.py): a task given a backup meanwhile may not have its
        # first-ranked one, which it gets back once that peer is alive again
        self.missed: set[str] = set()

    @property
    def node(self) -> "Node":
        return self.replicas.node

    def refresh(self) -> None:
        """The next choice reads the membership, not the list cached for ALIVE_TTL."""
        self._alive_at = -1.0

    def alive_ids(self) -> list[str]:
        """The ids of the alive peers (not this node)."""
        now = time.monotonic()
        if now - self._alive_at > ALIVE_TTL:
            ms = self.node.membership
            self._alive_members = ms.alive_members(include_self=False)
            self._alive = [m.id for m in self._alive_members]
            self._takers = {}
            self._alive_at = now
        return self._alive

    def choose(self, task_id: str, entry: Entry | None = None) -> str:
        """The backup for a task (among the alive nodes that take it: its backup may
        have to run it) or for a result (any alive node); "" when there is none."""
        peers = self.alive_ids()
        if entry is not None:
            peers = self._takers_of(entry)
        return backup_for(task_id, peers, self.node.name) or ""

    def _takers_of(self, entry: Entry) -> list[str]:
        """Alive peers that would take this task (mesh, queue, name: docs/routing.md)."""
        routing = getattr(self.node, "routing", None)
        if routing is None:
            return self._alive
        queue = entry.queue
        if queue is None:
            queue = entry.queue = self.queue_for(entry, None)
        return self._takers_for(routing, queue, entry.name)

    def _takers_for(self, routing: Any, queue: str, name: str) -> list[str]:
        key = (queue, name)
        takers = self._takers.get(key)
        if takers is None:
            takers = self._takers[key] = [m.id for m in self._alive_members
                                          if routing.peer_accepts(m.meta, queue, name)]
        return takers

    def backup_now(self, task_id: str, msg: Submit) -> str:
        """The backup rendezvous hashing picks now for a task not held in memory (one
        waiting on disk: mesh/node/disk_copies.py), as ``choose`` would; "" if none."""
        peers = self.alive_ids()
        routing = getattr(self.node, "routing", None)
        if routing is not None:
            queue = sys.intern(str(routing.queue_for(msg.name, msg.headers)))
            peers = self._takers_for(routing, queue, msg.name)
        return backup_for(task_id, peers, self.node.name) or ""

    def queue_for(self, entry: Entry, msg: Submit | None) -> str:
        """The queue of a held task ("" without routing), from its Submit (decoded
        from the entry's frame when not given)."""
        routing = getattr(self.node, "routing", None)
        if routing is None:
            return ""
        if msg is None:
            sub = _submit(entry.frame)
            headers = sub.headers if sub is not None else None
        else:
            headers = msg.headers
        return sys.intern(str(routing.queue_for(entry.name, headers)))   # one per queue


def _submit(frame: bytes) -> Submit | None:
    try:
        msg = decode(frame)
    except DecodeError:
        return None
    return msg if type(msg) is Submit else None
