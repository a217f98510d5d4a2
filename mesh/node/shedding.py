"""Shedding: queued tasks move to peers with room when they wait here too long.

Every ``SHED_INTERVAL``, if the oldest of the next ``HEAD_LOOK`` queued tasks (those that
would start next) has waited more than ``SHED_AFTER``
and no child is idle, the tasks that would start next go to peers that are less loaded
and that take them: of our mesh, serving the task's queue, with its name
registered (the meta says; mesh/capabilities.py). They go node to node
(mesh/node/handoff.py): the peer journals them before this node forgets them, and
their owners, if still there, are told where they went (MOVED). The submitter is
never needed.

Even loads (``fits``): a node's load is its tasks (running and queued) per child. A
peer is sent a task only if it is then no more loaded than this node is without it,
counting what we sent it that its gossiped load does not show yet; so a peer as loaded
as we are is sent nothing, and after a shed neither side sees the other with room
(nothing comes back). At most twice its children in tasks (a short queue on a free
node beats waiting here behind a stuck child; a long backlog goes over a batch per
report). Before (session 18), room was ``2*total - busy - queued``: a peer whose
children were all busy and whose queue was empty had room for ``total`` tasks, so two
full nodes (2 children each, 6 tasks of 20 s) passed tasks back and forth, 14
handoffs in 20 s.

What the gossiped load shows: each node gossips ``took_from``, the tasks it has taken
by shedding from each of the last ``TOOK_FROM_MAX`` givers (each for ``TOOK_FROM_KEEP``
after its last shed there), and ``took``, those it has taken from all peers
(mesh/node/gossip.py). What we sent a peer counts on top of its gossiped load until
its count of ours has grown by as much (a report older than our shed, gossiped after
it, showed the peer emptier than it is, and we sent more: then it sent them back).
From a node without ``took_from`` (before 2026-12), until its ``took`` has grown by as
much: with other nodes shedding to it at once, their tasks grew it too, and ours
counted as shown before they were (we sent more: an overshoot); from a node without
either, until its next report.

Hysteresis (no ping-pong): gossiped loads are a moment old, so a node that took shed
tasks may see the giver with room and shed back. A task that came here by shedding
is not shed again for ``SHED_HOLD`` seconds, and a peer that shed tasks here is not
shed to for ``PEER_HOLD`` seconds.

Crossings: two equally busy nodes that each see the other idle (gossip a moment old,
as a burst begins on both) shed to each other at once, before either batch arrives;
they swapped tasks and both stayed as busy (seen with two real nodes, 4 tasks each
way at the start of a burst). A shed that arrives from a peer this node shed to within
``CROSS_WINDOW`` seconds is refused (mesh/node/handoff.py): each keeps its
own tasks, and neither sheds to the other for ``PEER_HOLD``.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Mapping
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
SENT_TTL = 5.0         # s after our last shed to a peer: what its load does not show is forgotten
TOOK_FROM_MAX = 16     # givers a node gossips its count of (``took_from``), the latest
TOOK_FROM_KEEP = 60.0  # s a giver stays there after its last shed (well past SENT_TTL)


def fits(ours: int, our_total: int, theirs: int, their_total: int) -> bool:
    """Whether one more task moved from this node (``ours`` tasks, running and queued,
    on ``our_total`` children) to a peer (``theirs`` on ``their_total``) leaves the peer
    no more loaded per child than this node, and under twice its children in tasks."""
    return (theirs + 1 <= 2 * their_total
            and (theirs + 1) * our_total <= (ours - 1) * their_total)


def room(ours: int, our_total: int, theirs: int, their_total: int) -> int:
    """How many tasks in a row ``fits`` lets this node move to that peer."""
    if our_total <= 0 or their_total <= 0:
        return 0
    even = (their_total * ours - our_total * theirs) // (our_total + their_total)
    return max(0, min(even, 2 * their_total - theirs))


def _count(value: object) -> int | None:
    """A gossiped counter (a peer may lie: not a count, None)."""
    return value if type(value) is int and value >= 0 else None


@dataclass
class _Given:
    """Tasks shed to one peer that its gossiped load may not show yet."""
    version: int         # its meta version when we last looked
    took: int | None     # what it took from us then (``Shedder.took_of``; None: unknown)
    n: int               # tasks sent since, not shown
    at: float            # when we last shed to it


@dataclass
class _Room:
    member: Member
    total: int           # its children (as gossiped, believed up to MAX_SHED_CHILDREN)
    load: int            # its tasks, running and queued, and those we sent it since
    sent: int            # of those, what we sent it this round


class Shedder(Component):
    name = "shedding"
    requires = ("pool", "membership", "routing", "handoff")

    def __init__(self) -> None:
        self._given: dict[str, _Given] = {}   # peer -> what we shed it that its load does not show
        # task id -> when it came here by shedding (oldest first); peer -> when it shed here
        self._arrived: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._shed_from: dict[str, float] = {}
        self._sent_to: dict[str, float] = {}     # peer -> when we last shed to it
        self.crossings = 0                       # sheds refused as crossings (status)
        self.me = ""                             # this node's name (started)
        # giver -> tasks taken from it by shedding, and when it last shed here (the
        # latest last: gossiped as ``took_from``, TOOK_FROM_MAX at most)
        self._took_from: dict[str, int] = {}
        self._took_at: dict[str, float] = {}

    def sent(self, target: str, now: float) -> None:
        """A shed to ``target`` went out (mesh/node/handoff.py)."""
        self._sent_to[target] = now

    def refused(self, target: str, n: int) -> None:
        """``target`` did not take ``n`` tasks we shed it (mesh/node/handoff.py): they
        are not in its load."""
        g = self._given.get(target)
        if g is not None:
            g.n = max(0, g.n - n)

    def gave(self, m: Member, n: int, now: float) -> None:
        """We shed ``n`` tasks to ``m`` (as its gossiped meta is now): in its load until
        it shows them."""
        g = self._given.setdefault(m.id, _Given(m.meta_version, self.took_of(m), 0, now))
        g.n += n
        g.at = now

    def took_of(self, m: Member) -> int | None:
        """What ``m`` says it took from us: its ``took_from`` count of us (0 if it
        does not list us); from an older node, its ``took`` (from every peer: with
        others shedding to it too, it grows by theirs); None if it says neither."""
        per = m.meta.get("took_from")
        if isinstance(per, Mapping):
            return _count(per.get(self.me, 0))
        return _count(m.meta.get("took"))

    def unshown(self, m: Member, now: float) -> int:
        """The tasks we shed to ``m`` that its gossiped load does not show yet: until
        its count of what it took from us has grown by as many (else until a fresh
        report), SENT_TTL at most."""
        g = self._given.get(m.id)
        if g is None:
            return 0
        fresh = m.meta_version != g.version
        took = self.took_of(m)
        if took is not None and g.took is not None and took >= g.took:
            g.n = max(0, g.n - (took - g.took))    # taken there since: in its load
        elif fresh:          # no count; or a lower one (it restarted, or forgot us)
            g.n = 0
        if fresh and now - g.at > SENT_TTL:        # (an answer lost: it may never show)
            g.n = 0
        g.version, g.took = m.meta_version, took
        if not g.n:
            del self._given[m.id]
        return g.n

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
        took, at = self._took_from, self._took_at
        took[source] = took.pop(source, 0) + len(task_ids)     # (the latest last)
        at.pop(source, None)
        at[source] = now
        while len(took) > TOOK_FROM_MAX:
            oldest = next(iter(took))
            del took[oldest], at[oldest]

    def took_meta(self, now: float) -> dict[str, int]:
        """Giver -> the tasks taken from it by shedding (gossiped ``took_from``): the
        last TOOK_FROM_MAX givers, each for TOOK_FROM_KEEP s after its last shed."""
        took, at = self._took_from, self._took_at
        while at:
            oldest, when = next(iter(at.items()))
            if now - when <= TOOK_FROM_KEEP:
                break
            del took[oldest], at[oldest]
        return dict(took)

    async def start(self, node: "Node") -> None:
        self.node = node
        node.shedder = self
        self.me = node.name
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
        to peers less loaded than this node: each task to a peer it ``fits`` (no more
        loaded than we are after the move, by its gossiped load and what we sent it
        that the load does not show yet). They are handed over node to node; those a
        peer does not take come back to the queue. Returns how many were sent."""
        node = self.node
        pool, ms = node.pool, node.membership
        node.reclaim.fence.check()    # (stalled: what a backup took over is set aside)
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
        busy, ours_total, queued = node.load()
        ours = busy + queued
        rooms: list[_Room] = []
        for m in ms.alive_members(include_self=False):
            if now - self._shed_from.get(m.id, -PEER_HOLD) < PEER_HOLD:
                continue                           # it just shed here: it has no room
            meta = m.meta
            try:
                total = min(int(meta.get("total", 0)), MAX_SHED_CHILDREN)   # a peer may lie
                load = max(0, int(meta.get("busy", 0))) + max(0, int(meta.get("queued", 0)))
            except (TypeError, ValueError, OverflowError):   # (inf: OverflowError)
                continue
            load += self.unshown(m, now)       # (so at most 2 * total tasks go to one peer)
            if room(ours, ours_total, load, total) > 0:
                rooms.append(_Room(m, total, load, 0))
        if not rooms:
            return 0
        moved: dict[str, list[Entry]] = {}          # target id -> entries
        accepts = node.routing.peer_accepts
        chosen: set[int] = set()
        # a task's queue matters only if some peer does not take every queue
        by_queue = any(not from_meta(r.member.meta).every for r in rooms)
        # the tasks that would start next, each to the least loaded peer it fits that
        # takes it (our load goes down by each one), until none fits: past those no
        # peer takes (another queue, a name it has not), HEAD_LOOK at least
        need = sum(room(ours, ours_total, r.load, r.total) for r in rooms)
        for item in head if need <= HEAD_LOOK else self._movable(pool.head(need + skip)):
            entry = item[2]
            queue = self._queue_of(entry) if by_queue else ""
            fit = [r for r in rooms if fits(ours, ours_total, r.load, r.total)]
            if not fit:
                break
            fit.sort(key=lambda r: r.load / r.total)
            for r in fit:
                if accepts(r.member.meta, queue, entry.name):
                    moved.setdefault(r.member.id, []).append(entry)
                    chosen.add(id(entry))
                    r.load += 1
                    r.sent += 1
                    ours -= 1
                    break
        if not chosen:
            return 0
        pool.discard(chosen)       # from both heaps (async tasks' too)
        for r in rooms:
            if r.sent:
                self.gave(r.member, r.sent, now)
        members = {r.member.id: r.member for r in rooms}
        for target, entries in moved.items():
            node.handoff.hand(entries, REASON, members[target])
        n = sum(len(v) for v in moved.values())
        if n:
            log.info("shedding %d queued task(s) to %d peer(s) less loaded", n, len(moved))
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
