"""Shedding: queued tasks move to peers with room when they wait here too long.

Every ``SHED_INTERVAL``, if the oldest queued task has waited more than ``SHED_AFTER``
and no child is idle, the tasks that would start next go to peers whose gossiped load
shows room and whose registered tasks are the same as ours (a digest of the task
names travels in the meta). They go node to node (mesh/node/handoff.py): the peer
journals them before this node forgets them, and their owners, if still there, are
told where they went (MOVED). The submitter is never needed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from mesh.membership import Member
from mesh.node.component import Component
from mesh.node.ledger import Entry

if TYPE_CHECKING:
    from mesh.node.node import Node

log = logging.getLogger("mesh.node")

SHED_AFTER = 0.05      # s a queued task may wait before the node looks for a peer with room
SHED_INTERVAL = 0.05
MAX_SHED_CHILDREN = 1024   # a peer's gossiped pool size is believed up to this
REASON = "shed to a node with room"


class Shedder(Component):
    name = "shedding"
    requires = ("pool", "membership", "handoff")

    def __init__(self) -> None:
        self._shed_to: dict[str, tuple[int, int]] = {}   # peer -> (its meta version, tasks sent since)

    async def start(self, node: "Node") -> None:
        self.node = node
        node.shedder = self
        node.spawn(self._loop(), name="shedding")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(SHED_INTERVAL)
            try:
                self.shed(time.time())
            except Exception:
                log.exception("shedding failed")

    def shed(self, now: float) -> int:
        """Give queued (not started) tasks that have waited longer than SHED_AFTER
        to peers with room: by their gossiped load, fewer tasks than twice their
        children (a short queue on a free node beats waiting here behind a stuck
        child), less what we sent them since that report. They are handed over node
        to node; those a peer does not take come back to the queue. Returns how many
        were sent."""
        node = self.node
        pool, ms = node.pool, node.membership
        if not pool.queue or pool.idle or node.stopping:
            return 0
        if now - min(e.received for _, _, e in pool.queue) < SHED_AFTER:
            return 0
        moved: dict[str, tuple[Member, list[Entry]]] = {}    # target id -> entries
        for m in ms.alive_members(include_self=False):
            meta = m.meta
            if meta.get("tasks") != node.tasks_digest:
                continue                 # it may not have our tasks: they would fail there
            try:
                total = min(int(meta.get("total", 0)), MAX_SHED_CHILDREN)   # a peer may lie
                free = 2 * total - int(meta.get("busy", 0)) - int(meta.get("queued", 0))
            except (TypeError, ValueError):
                continue
            version, sent = self._shed_to.get(m.id, (-1, 0))
            if version != m.meta_version:    # a fresh report: it counts what we sent
                sent = 0
            room = free - sent
            taken = 0
            while room > taken and pool.queue:
                moved.setdefault(m.id, (m, []))[1].append(pool.take_next())
                taken += 1
            if taken:
                self._shed_to[m.id] = (m.meta_version, sent + taken)
            if not pool.queue:
                break
        for target, entries in moved.values():
            node.handoff.hand(entries, REASON, target)
        n = sum(len(v) for _, v in moved.values())
        if n:
            log.info("shedding %d queued task(s) to %d peer(s) with room", n, len(moved))
        return n
