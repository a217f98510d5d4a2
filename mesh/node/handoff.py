"""Handoff: work moves node to node, never through the submitter.

A node that sheds queued tasks, or stops (its queued and eta tasks, a retry that
comes due while it drains, a task interrupted at its shutdown deadline), sends them
to another node in a HANDOFF. The receiver journals each task it takes (and has its
own backup confirm the copy), then answers HANDOFF_ACK; only then does the sender
forget them (and drop their copies; when the receiver's backup is the sender, the
sender keeps the receiver's copy: mesh/node/copies.py). Then it tells each owner that is still there
where its tasks went (MOVED), and the owner's ``get()`` follows them; an owner that
is gone is not needed.

A task refused by the receiver (it does not have the task, it is stopping) or not
answered within ``HANDOFF_TIMEOUT`` (sent again up to ``TRIES`` times while the
receiver is alive, and for as long as it is suspected) goes back to the queue, or,
when stopping, to another node. A stopping node with no peer alive keeps its
unstarted tasks in its journal, says so, and runs them when it starts again. One not
answered by a receiver declared dead (or gone) goes to the receiver's backup for it
instead (mesh/node/handoff_cut.py).

Where tasks go when the node stops: to each task's backup (it has the copy already,
and it is where the owner would resend it), else to the least loaded alive peer with
the same tasks registered.

A task handed on is remembered for ``MOVED_TTL`` seconds: an owner that sends it here
again meanwhile is answered MOVED, and follows it. (The owner of a task this node
took over, as the backup of its dead holder, is not known here: it sends the task to
this node, its backup, a moment later; accepted again, the task would run twice.)

This module is the giver's side, and the component; the receiver's side (taking the
tasks, answering) is mesh/node/handoff_take.py, and what happens when the other side
of a handoff is declared dead before it ended, mesh/node/handoff_cut.py.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import os
import time
from typing import TYPE_CHECKING, Any

from mesh.membership import Member, MemberState
from mesh.node.component import Component
from mesh.node.handoff_cut import HandoffCut, _queue_of
from mesh.node.handoff_take import MOVED_MAX, NO_BACKUP_REASON, STOP_REASON, HandoffTake
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.node.naps import Nap
from mesh.node.shedding import REASON as SHED_REASON
from mesh.security.text import safe_logger
from mesh.wire.protocol import Handoff, HandoffAck, Moved, encode

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.handoff")

HANDOFF_TIMEOUT = 1.0    # s a HANDOFF waits for its answer before it is sent again
TRIES = 3                # sends of one HANDOFF to one receiver before trying elsewhere
SUSPECT_TRIES = 30       # sends at most while the receiver is suspected (until it is
                         # alive again, or dead: its backup has what it took)
TICK = 0.1
BATCH_BYTES = 4 * 1024 * 1024
MOVED_TTL = 30.0         # s a task handed on is remembered (an owner sending it here follows)
GIVEN_UP_MAX = 1_000     # handoffs given up on, remembered at most (for a late answer)


@dataclasses.dataclass
class _Out:
    """A HANDOFF in flight."""
    target: str                 # the receiver's node id
    address: str                # its front door
    entries: dict[str, Entry]
    reason: str
    frame: bytes
    at: float
    tries: int = 1
    refused_by: set[str] = dataclasses.field(default_factory=set)
    # the tasks of a handoff to this node that went unanswered, sent to its backup for
    # them (``_to_its_backup``): not sent on again if this one goes unanswered too
    unanswered_by: str = ""


class Handoffs(HandoffTake, HandoffCut, Component):
    """Sends tasks to other nodes (``hand``), and takes the tasks others send
    (``on_handoff``: mesh/node/handoff_take.py)."""

    name = "handoff"
    requires = ("replicas", "pool", "membership", "front", "journal", "control")

    def __init__(self) -> None:
        self.started = False
        self._out: dict[str, _Out] = {}
        self.nap = Nap()          # poked as a handoff goes out: the loop ticks while one waits
        # batch -> the handoff given up on (not answered in time), for MOVED_TTL: a
        # late answer (the receiver took it after all) must not leave it on two nodes
        self._given_up: collections.OrderedDict[str, _Out] = collections.OrderedDict()
        self._answers: list[tuple[str, bytes]] = []      # (sender address, HANDOFF_ACK)
        # addresses of senders not members here that were refused a handoff (a socket
        # was opened to each): past STRANGERS_MAX the oldest is closed unless a member
        # is there by then (made-up addresses must not pile up sockets, fds)
        self._strangers: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._ids = itertools.count()
        self._prefix = f"h{os.getpid():x}.{int(time.time() * 1000) & 0xFFFFFF:x}."
        self._spread = itertools.count()
        self.handed = self.received = self.kept = 0
        self._badlog = _RateLimitedLog("refused handoffs")
        # task id -> (when, its node, that node's address, why): handed on lately
        self._moved: collections.OrderedDict[str, tuple[float, str, str, str]] = \
            collections.OrderedDict()
        # task id -> (when, its giver): taken from another node lately (``_givers_gone``);
        # giver -> when it last handed us tasks (its state is looked at, not each task's)
        self._from: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()
        self._givers: dict[str, float] = {}

    @classmethod
    def inert(cls, node: "Node") -> "Handoffs":
        """What a node has until this component starts (or when built without it):
        tasks given away go back to their owners (RELEASE)."""
        h = cls()
        h.node = node
        return h

    async def start(self, node: "Node") -> None:
        self.node = node
        node.handoff = self
        self.started = True
        node.spawn(self._loop(), name="handoff")

    # -- sending ----------------------------------------------------------------------
    def give_away(self, entries: list[Entry], reason: str = STOP_REASON) -> None:
        """(Stopping) unstarted tasks go to other nodes; with no peer alive they stay
        held here, in the journal (``settle`` says how many)."""
        if not self.started:
            self.node.ledger.release(entries, reason)     # a node built without handoff
            return
        self.hand(entries, reason)

    def hand(self, entries: list[Entry], reason: str, target: Member | None = None) -> int:
        """Send ``entries`` (held here, taken out of the pool) to ``target``, or to the
        best other node for each; how many were sent. Those with nowhere to go go back
        to the pool (or, when stopping, stay held for the next start)."""
        node = self.node
        groups: dict[str, tuple[Member, list[Entry]]] = {}
        stay: list[Entry] = []
        peers = self._peers()
        for e in entries:
            m = target if target is not None else self._pick(e, peers)
            if m is None:
                stay.append(e)
            else:
                groups.setdefault(m.id, (m, []))[1].append(e)
        for m, group in groups.values():
            self._send(m, group, reason)
        if stay and not node.stopping:
            for e in stay:
                node.pool.submit(e)
        return len(entries) - len(stay)

    def _peers(self, exclude: set[str] | None = None) -> list[Member]:
        """Alive peers (minus ``exclude``)."""
        node = self.node
        return [m for m in node.membership.alive_members(include_self=False)
                if exclude is None or m.id not in exclude]

    def _pick(self, entry: Entry, peers: list[Member], exclude: set[str] | None = None) -> Member | None:
        """The peer for one task: one that takes it (mesh, queue, name: others could
        not run it), its backup first (it has the copy), else the least loaded."""
        routing = getattr(self.node, "routing", None)
        if routing is not None:
            queue = _queue_of(routing, entry)
            peers = [m for m in peers if routing.peer_accepts(m.meta, queue, entry.name)]
        if exclude:
            peers = [m for m in peers if m.id not in exclude]
        if not peers:
            return None
        backup = entry.backup
        for m in peers:
            if m.id == backup:
                return m
        # the least loaded by gossip, ties spread round-robin
        def load(m: Member) -> float:
            meta = m.meta
            try:
                return (int(meta.get("busy", 0)) + int(meta.get("queued", 0))) / \
                    max(int(meta.get("total", 1)), 1)
            except (TypeError, ValueError, OverflowError):   # a peer may lie (inf: Overflow)
                return 1e9
        best = min(load(m) for m in peers)
        ties = [m for m in peers if load(m) == best]
        return ties[next(self._spread) % len(ties)]

    def _send(self, m: Member, entries: list[Entry], reason: str, unanswered_by: str = "") -> None:
        node = self.node
        chunks: list[list[Entry]] = [[]]
        size = 0
        for e in entries:
            if chunks[-1] and size + len(e.frame) > BATCH_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(e)
            size += len(e.frame)
        for chunk in chunks:
            bid = self._prefix + str(next(self._ids))
            frame = encode(Handoff(bid, node.name, node.address, [x.frame for x in chunk],
                                   reason, str(m.meta.get("boot") or "")))
            self._out[bid] = _Out(m.id, m.address, {x.task_id: x for x in chunk}, reason,
                                  frame, time.monotonic(), unanswered_by=unanswered_by)
            self.nap.poke()
            node.replicas.sockets.send(m.address, frame)
        shedder = getattr(node, "shedder", None)
        if shedder is not None and reason == SHED_REASON:
            shedder.sent(m.id, time.time())       # a shed from it now crosses this one

    def going_to(self, target: str) -> set[str]:
        """The tasks in handoffs to ``target`` not answered yet (it may hold them now)."""
        return {t for out in self._out.values() if out.target == target for t in out.entries}

    def taken_at(self, task_id: str) -> float | None:
        """When (monotonic) this node took ``task_id`` from another by a handoff lately
        (within GIVER_TTL, and until its giver was seen dead: then it went on to the
        giver's backup), None if it did not."""
        taken = self._from.get(task_id)
        return taken[0] if taken is not None else None

    def keep(self, target: str, task_ids: list[str]) -> None:
        """``target`` was told this node holds ``task_ids`` (a reclaim's answer): it drops
        them, so its late answer to a handoff of them given up on does not take them out
        of this node's queue (no node would run them)."""
        for out in self._given_up.values():
            if out.target == target:
                for tid in task_ids:
                    out.entries.pop(tid, None)

    def on_ack(self, msg: HandoffAck) -> None:
        out = self._out.pop(msg.batch, None)
        if out is None:
            self._late_ack(msg)
            return
        if out.target != msg.node and (msg.accepted or msg.address != out.address):
            self._out[msg.batch] = out       # not the receiver's to answer
            return
        # (a node at the receiver's address under another name, restarted there, refuses
        # what was queued for the one before: taken back now, not after the retries. Not
        # bound to a member: it may not be one yet; an honest node names its own address)
        node = self.node
        ledger = node.ledger
        moved = [out.entries[t] for t in msg.accepted if t in out.entries]
        moved = [e for e in moved if ledger.held.get(e.task_id) is e]   # still ours
        self._moved_on(moved, msg, out)
        refused = [e for t, e in out.entries.items() if t not in msg.accepted
                   and ledger.held.get(t) is e]
        if refused:
            why = {str(v) for v in msg.refused.values()} or {"no answer for them"}
            log.info("node %s did not take %d task(s): %s", msg.node, len(refused),
                     "; ".join(sorted(why))[:300])
            # held here again: copied again (Replicas.taken_back: made when a backup kept
            # one copy per id, which the receiver's earlier run had replaced and reclaimed)
            node.replicas.taken_back(refused)
            shedder = getattr(node, "shedder", None)
            if shedder is not None and out.reason == SHED_REASON:   # not in its load
                shedder.refused(out.target, len(refused))
            if node.stopping and why == {NO_BACKUP_REASON}:
                # shed, refused for want of a second copy there, but this node is leaving
                # now: one copy there beats none (kept here until this node starts again)
                self._again(refused, STOP_REASON, out.refused_by)
            else:
                self._again(refused, out.reason, out.refused_by | {out.target})

    def _late_ack(self, msg: HandoffAck) -> None:
        """The answer to a handoff given up on (no answer in time: its tasks went back
        to the queue, or, stopping, are kept here for the next start). The receiver
        holds what it accepted: those not started here since leave the queue (or the
        journal, or the fence's tasks set aside) as if answered in time; a started one
        runs on both nodes, which is said."""
        out = self._given_up.get(msg.batch)
        if out is None or out.target != msg.node:
            return                      # (not the receiver's to answer: kept for its own)
        del self._given_up[msg.batch]
        ledger, pool = self.node.ledger, self.node.pool
        fence = self.node.reclaim.fence
        moved, twice = [], []
        busy = self._busy_while_stopping()
        for tid in msg.accepted:
            e = out.entries.get(tid)
            if e is None or ledger.held.get(tid) is not e:
                continue
            # (set aside by the fence since, not started: the receiver's answer is the
            # word on it; its answer to the fence may have come before it took the task)
            if fence.take(tid, e) is e or pool.remove(tid) is e \
                    or (busy is not None and tid not in busy):
                moved.append(e)
            else:
                twice.append(tid)
        if moved:
            log.warning("node %s answered a handoff after it was given up: it holds %d of "
                        "its task(s), taken out of the queue here", msg.node, len(moved))
        if twice:
            log.warning("node %s answered a handoff after it was given up: %d of its task(s) "
                        "could not be taken back here (started, handed on or on disk "
                        "meanwhile) and may run on both nodes, e.g. %s", msg.node, len(twice),
                        twice[0])
        self._moved_on(moved, msg, out)

    def _busy_while_stopping(self) -> set[str] | None:
        """(Stopping) the held tasks that are not only kept here for the next start:
        running, sent ahead to a child, or in a handoff in flight. None when not
        stopping (a task not in the queue then is busy somewhere)."""
        node = self.node
        if not node.stopping:
            return None
        busy = {e.task_id for e in (*node.pool.active(), *node.pool.ahead_entries())}
        busy.update(t for out in self._out.values() for t in out.entries)
        return busy

    def _moved_on(self, moved: list[Entry], msg: HandoffAck, out: _Out) -> None:
        """``moved`` are held by the receiver now: forgotten here, owners told."""
        node = self.node
        if moved:
            node.ledger.forget(moved, msg.node)     # the copies at our backup go with them
            self.handed += len(moved)
            address = msg.address if msg.address.startswith("tcp://") else out.address
            self.remember([e.task_id for e in moved], msg.node, address, out.reason)
            by_owner: dict[bytes, list[str]] = {}
            for e in moved:
                if e.client:
                    by_owner.setdefault(e.client, []).append(e.task_id)
            for ident, ids in by_owner.items():
                node.front.reply(ident, encode(Moved(ids, node.name, address, msg.node,
                                                     out.reason)))
            if node.events.wants("task-rejected"):
                for e in moved:
                    node.events.emit("task-rejected", uuid=e.task_id, name=e.name, requeue=True,
                                     target=address, reason=out.reason)
            log.info("handed %d task(s) to %s (%s): %s", len(moved), msg.node, address,
                     out.reason)

    def _again(self, entries: list[Entry], reason: str, refused_by: set[str]) -> None:
        """Tasks a receiver did not take: elsewhere when stopping, else back to the queue."""
        node = self.node
        if not node.stopping:
            for e in entries:
                node.pool.submit(e)
            return
        peers = self._peers(exclude=refused_by)
        groups: dict[str, tuple[Member, list[Entry]]] = {}
        for e in entries:
            m = self._pick(e, peers)
            if m is not None:
                groups.setdefault(m.id, (m, []))[1].append(e)
        for m, group in groups.values():
            self._send(m, group, reason)
            for out in self._out.values():
                if out.target == m.id:
                    out.refused_by |= refused_by

    def remember(self, task_ids: list[str], target: str, address: str, reason: str) -> None:
        """These tasks are held by node ``target`` (at ``address``) now: an owner sending
        one here within MOVED_TTL is answered MOVED."""
        now = time.monotonic()
        for tid in task_ids:
            self._moved[tid] = (now, target, address, reason)
            self._moved.move_to_end(tid)
        while len(self._moved) > MOVED_MAX:
            self._moved.popitem(last=False)

    def moved_to(self, task_id: str) -> Moved | None:
        """The MOVED that answers an owner sending ``task_id`` here again, if this node
        handed it on within MOVED_TTL seconds (see the module docstring)."""
        moved = self._moved.get(task_id)
        if moved is None or time.monotonic() - moved[0] > MOVED_TTL:
            return None
        _, target, address, reason = moved
        m = self.node.membership.member(target)
        if m is not None and m.state == MemberState.DEAD:
            return None     # it died: the owner's failover is right (this node may be the
                            # task's backup, which runs it: mesh/node/takeover.py)
        return Moved([task_id], self.node.name, address, target, reason)

    def taken_back(self, task_id: str) -> None:
        """The task is held here again (handed back, taken over): no longer moved."""
        if self._moved:
            self._moved.pop(task_id, None)

    # -- the loop ---------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            # ticks while a handoff waits for its answer; the rest (what was moved or
            # given up, remembered for a while) is only trimmed, at least once a nap
            await self.nap.until_busy(bool(self._out) or bool(self._givers), TICK)
            try:
                self._check(time.monotonic())
            except Exception:
                log.exception("handoff check failed")

    def _check(self, now: float) -> None:
        self._givers_gone(now)
        moved = self._moved
        while moved and now - next(iter(moved.values()))[0] > MOVED_TTL:
            moved.popitem(last=False)
        for bid in [b for b, o in self._out.items() if now - o.at > HANDOFF_TIMEOUT]:
            out = self._out[bid]
            ledger = self.node.ledger
            entries = [e for t, e in out.entries.items() if ledger.held.get(t) is e]
            m = self.node.membership.member(out.target)
            # sent again to a receiver merely suspected, too: a busy node is suspected
            # for a moment, and giving up on it then made both nodes run the tasks it
            # took meanwhile (the cluster chaos test saw tasks run three times so); and
            # for as long as it is suspected (SUSPECT_TRIES at most): it is alive again
            # (it answers), or declared dead (its backup has the tasks it took, below)
            if entries and m is not None and (
                    (m.state == MemberState.ALIVE and out.tries < TRIES)
                    or (m.state == MemberState.SUSPECT and out.tries < SUSPECT_TRIES)):
                out.tries += 1                  # the same batch again: a receiver that
                out.at = now                    # took it answers again, the same way
                self.node.replicas.sockets.send(out.address, out.frame)
                continue
            del self._out[bid]
            if entries:
                log.warning("node %s did not answer a handoff of %d task(s) in time",
                            out.target, len(entries))
                out.at = now
                self._given_up[bid] = out
                if not out.unanswered_by and (m is None or m.state in (MemberState.DEAD,
                                                                       MemberState.LEFT)):
                    entries = self._to_its_backup(out, entries)
                if entries:
                    self._again(entries, out.reason, out.refused_by | {out.target})
        given_up = self._given_up
        while given_up and (now - next(iter(given_up.values())).at > MOVED_TTL
                            or len(given_up) > GIVEN_UP_MAX):
            given_up.popitem(last=False)

    async def settle(self, timeout: float) -> None:
        """(Stopping) wait up to ``timeout`` s for the answers to what was handed, then
        say what stays here: unstarted tasks no peer took are kept in the journal."""
        deadline = time.monotonic() + timeout
        while self._out and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        node = self.node
        running = {e.task_id for e in node.pool.active()}
        kept = [e for t, e in node.ledger.held.items() if t not in running]
        self.kept = len(kept)
        if not kept:
            return
        if node.journal.path is None:       # --no-journal: kept nowhere; owners may resend
            node.ledger.release(kept, f"{STOP_REASON}; no other node is alive to take them")
            log.warning("no other node took %d unstarted task(s), and there is no journal to "
                        "keep them in: given back to their owners (if still there)", len(kept))
            return
        log.warning("no other node is alive to take %d unstarted task(s): kept in the journal "
                    "(%s); they run when this node starts again", len(kept), node.journal.path)

    def status(self) -> dict[str, Any]:
        shedder = getattr(self.node, "shedder", None)
        return {"handed_off": self.handed, "taken_from_peers": self.received,
                "handoffs_in_flight": len(self._out),
                "shed_crossings": shedder.crossings if shedder is not None else 0}
