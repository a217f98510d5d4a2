"""Shedding: queued tasks move to peers with room when they wait here too long.

Every ``SHED_INTERVAL``, if the oldest of the next ``HEAD_LOOK`` queued tasks (those that
would start next) has waited more than ``SHED_AFTER``
and no child is idle, the tasks that would start next go to peers whose gossiped load
shows room and that take them: of our mesh, serving the task's queue, with its name
registered (the meta says; mesh/capabilities.py). They go node to node
(mesh/node/handoff.py): the peer journals them before this node forgets them, and
their owners, if still there, are told where they went (MOVED). The submitter is
never needed.

Hysteresis (no ping-pong): gossiped loads are a moment old, so a node that took shed
tasks may see the giver with room and shed back, and so on, every 0.1 s to 1 s. A
task that came here by shedding is not shed again for ``SHED_HOLD`` seconds, and a
peer that shed tasks here is not shed to for ``PEER_HOLD`` seconds.

Crossings: two equally busy nodes that each see the other idle (gossip a moment old,
as a burst begins on both) shed to each other at once, before either batch arrives;
they swapped tasks and both stayed as busy (seen with two real nodes, 4 tasks each
way at the start of a burst). A shed that arrives from a peer this node shed to
within ``CROSS_WINDOW`` seconds is refused (mesh/node/handoff.py): each keeps its
own tasks, and neither sheds to the other for ``PEER_HOLD``.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mesh.capabilities import from_meta
from mesh.membership import Member
from mesh.node.component import Component
from mesh.node.ledger import Entry
from mesh.security.text import safe_logger
from mesh.wire.protocol import Submit, decode

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.pool import QueueItem

log = safe_logger("mesh.node")

SHED_AFTER = 0.05      # s a queued task may wait before the node looks for a peer with room
SHED_INTERVAL = 0.05
HEAD_LOOK = 64         # queued tasks (those that start next) whose age decides shedding
MAX_SHED_CHILDREN = 1024   # a peer's gossiped pool size is believed up to this
REASON = "shed to a node with room"
SHED_HOLD = 3.0        # s a task that came here by shedding is not shed again
PEER_HOLD = 1.0        # s a peer that shed tasks here is not shed to
HOLD_MAX = 100_000     # tasks remembered at most
HOLD_LOOK = 1024       # of those, how many are looked past at the head of the queue
# s after shedding to a peer in which a shed from it is refused: a batch in flight
# (under PEER_HOLD: a peer that took ours sheds back no sooner than PEER_HOLD after)
CROSS_WINDOW = 0.5
CROSS_REASON = ("it crossed a shed the other way (each node saw the other with room): both "
                "keep their own")


@dataclass
class _Room:
    member: Member
    left: int            # tasks it may still be given now
    sent: int            # tasks sent to it since its last report


class Shedder(Component):
    name = "shedding"
    requires = ("pool", "membership", "routing", "handoff")

    def __init__(self) -> None:
        self._shed_to: dict[str, tuple[int, int]] = {}   # peer -> (its meta version, tasks sent since)
        # task id -> when it came here by shedding (oldest first); peer -> when it shed here
        self._arrived: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._shed_from: dict[str, float] = {}
        self._sent_to: dict[str, float] = {}     # peer -> when we last shed to it
        self.crossings = 0                       # sheds refused as crossings (status)

    def sent(self, target: str, now: float) -> None:
        """A shed to ``target`` went out (mesh/node/handoff.py)."""
        self._sent_to[target] = now

    def crossing(self, source: str, now: float) -> bool:
        """Whether a shed arriving from ``source`` crosses one of ours to it: we shed to
        it within CROSS_WINDOW s, both seeing the other with room. Refused (each keeps
        its own tasks), and ``source`` is not shed to for PEER_HOLD s."""
        if now - self._sent_to.get(source, -CROSS_WINDOW) >= CROSS_WINDOW:
            return False
        self._shed_from[source] = now
        self.crossings += 1
        return True

    def took(self, source: str, task_ids: list[str], now: float) -> None:
        """Peer ``source`` shed these tasks here (mesh/node/handoff.py): they stay for
        SHED_HOLD s, and nothing is shed to it for PEER_HOLD s."""
        self._shed_from[source] = now
        arrived = self._arrived
        for tid in task_ids:
            arrived[tid] = now
            arrived.move_to_end(tid)
        while len(arrived) > HOLD_MAX:
            arrived.popitem(last=False)

    async def start(self, node: "Node") -> None:
        self.node = node
        node.shedder = self
        node.spawn(self._loop(), name="shedding")

    async def _loop(self) -> None:
        pool = self.node.pool
        while True:
            # ticks while tasks wait; the pool pokes its nap when a dispatch leaves some
            await pool.waiting.until_busy(pool.queued > 0, SHED_INTERVAL)
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
        if not pool.queued or pool.idle or node.stopping:
            return 0
        arrived = self._arrived
        while arrived and now - next(iter(arrived.values())) > SHED_HOLD:
            arrived.popitem(last=False)
        # the oldest of the tasks that would start next (not a scan of the whole queue:
        # this runs every SHED_INTERVAL, and a backlog may be a million tasks long),
        # less those that came here by shedding lately: they stay
        skip = min(len(arrived), HOLD_LOOK)
        head = self._movable(pool.head(HEAD_LOOK + skip))
        if not head or now - min(e.received for _, _, e in head) < SHED_AFTER:
            return 0
        rooms: list[_Room] = []
        for m in ms.alive_members(include_self=False):
            if now - self._shed_from.get(m.id, -PEER_HOLD) < PEER_HOLD:
                continue                           # it just shed here: it has no room
            meta = m.meta
            try:
                total = min(int(meta.get("total", 0)), MAX_SHED_CHILDREN)   # a peer may lie
                free = 2 * total - int(meta.get("busy", 0)) - int(meta.get("queued", 0))
            except (TypeError, ValueError):
                continue
            version, sent = self._shed_to.get(m.id, (-1, 0))
            if version != m.meta_version:    # a fresh report: it counts what we sent
                sent = 0
            if free - sent > 0:
                rooms.append(_Room(m, free - sent, sent))
        if not rooms:
            return 0
        moved: dict[str, list[Entry]] = {}          # target id -> entries
        accepts = node.routing.peer_accepts
        chosen: set[int] = set()
        # a task's queue matters only if some peer does not take every queue
        by_queue = any(not from_meta(r.member.meta).every for r in rooms)
        # the tasks that would start next, each to the first peer with room that takes it
        need = sum(r.left for r in rooms)
        for item in self._movable(pool.head(need + skip))[:need]:
            entry = item[2]
            queue = self._queue_of(entry) if by_queue else ""
            for r in rooms:
                if r.left > 0 and accepts(r.member.meta, queue, entry.name):
                    moved.setdefault(r.member.id, []).append(entry)
                    chosen.add(id(entry))
                    r.left -= 1
                    break
            if not any(r.left > 0 for r in rooms):
                break
        if not chosen:
            return 0
        pool.discard(chosen)       # from both heaps (async tasks' too)
        for r in rooms:
            taken = len(moved.get(r.member.id, ()))
            if taken:
                self._shed_to[r.member.id] = (r.member.meta_version, r.sent + taken)
        members = {r.member.id: r.member for r in rooms}
        for target, entries in moved.items():
            node.handoff.hand(entries, REASON, members[target])
        n = sum(len(v) for v in moved.values())
        if n:
            log.info("shedding %d queued task(s) to %d peer(s) with room", n, len(moved))
        return n

    def _movable(self, items: list[QueueItem]) -> list[QueueItem]:
        """``items`` less the tasks that came here by shedding within SHED_HOLD s."""
        arrived = self._arrived
        return [it for it in items if it[2].task_id not in arrived] if arrived else items

    def _queue_of(self, entry: Entry) -> str:
        """The queue a held task was routed to (its SUBMIT's header, else our routes)."""
        try:
            msg = decode(entry.frame)
        except Exception:
            msg = None
        headers = msg.headers if isinstance(msg, Submit) else None
        return self.node.routing.queue_for(entry.name, headers)
