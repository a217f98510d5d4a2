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
instead (``_to_its_backup``): the receiver may have taken it, its answer lost as it
was cut off, and that backup then runs the copy it keeps (mesh/node/takeover.py);
run here too, it ran three times (the receiver, cut off, runs it as well).

Where tasks go when the node stops: to each task's backup (it has the copy already,
and it is where the owner would resend it), else to the least loaded alive peer with
the same tasks registered.

A task handed on is remembered for ``MOVED_TTL`` seconds: an owner that sends it here
again meanwhile is answered MOVED, and follows it. (The owner of a task this node
took over, as the backup of its dead holder, is not known here: it sends the task to
this node, its backup, a moment later; accepted again, the task would run twice.)
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import itertools
import os
import time
from typing import TYPE_CHECKING, Any

from mesh.exceptions import DecodeError
from mesh.membership import Member, MemberState
from mesh.node.component import Component
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.node.naps import Nap
from mesh.node.shedding import CROSS_REASON
from mesh.node.shedding import REASON as SHED_REASON
from mesh.rendezvous import backup_for
from mesh.security.text import safe_logger
from mesh.wire.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Handoff,
    HandoffAck,
    Moved,
    Submit,
    decode,
    encode,
)
from mesh.workflow.ids import GROUP

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
MOVED_MAX = 100_000      # tasks remembered at most
GIVEN_UP_MAX = 1_000     # handoffs given up on, remembered at most (for a late answer)
STRANGERS_MAX = 64       # addresses of non-members answered (refusals) kept a socket to, at most
STOP_REASON = "node is shutting down"
NO_BACKUP_REASON = "no other node is alive here to keep its copy: it stays where it is"
# (not sheds: the node they go to takes them even if it shed to the giver a moment ago)
UNANSWERED_REASON = ("handed to a node that did not answer and is gone: sent to the node "
                     "that keeps its copy there")
GIVER_GONE_REASON = ("its giver was declared dead, maybe before it had this node's answer: "
                     "sent to the node that keeps the giver's copy")
GIVER_TTL = 30.0         # s a task taken from a giver goes to its backup if it is declared
                         # dead meanwhile (as long as a giver may send a batch again)


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


class Handoffs(Component):
    """Sends tasks to other nodes (``hand``), and takes the tasks others send."""

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
        journal) as if answered in time; a started one runs on both nodes, which is said."""
        out = self._given_up.get(msg.batch)
        if out is None or out.target != msg.node:
            return                      # (not the receiver's to answer: kept for its own)
        del self._given_up[msg.batch]
        ledger, pool = self.node.ledger, self.node.pool
        moved, twice = [], []
        busy = self._busy_while_stopping()
        for tid in msg.accepted:
            e = out.entries.get(tid)
            if e is None or ledger.held.get(tid) is not e:
                continue
            if pool.remove(tid) is e or (busy is not None and tid not in busy):
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

    def _to_its_backup(self, out: _Out, entries: list[Entry]) -> list[Entry]:
        """(A handoff to ``out.target`` went unanswered, and the target is dead or left)
        each task goes to the node the target copied it to if it took it: its backup
        there (``_to_backup_of``). The target may hold the task, its answer lost (cut
        off as it answered: it runs the task, unreachable), and once it is declared
        dead that node runs its copy; run here as well, the task ran three times (the
        cluster chaos test saw it). There it runs once: held there already (taken
        over), or taken now, and then the copy is not run at the takeover (held there
        already). Returns the tasks that stay here."""
        return self._to_backup_of(out.target, entries, UNANSWERED_REASON, out.refused_by)

    def _to_backup_of(self, holder: str, entries: list[Entry], reason: str,
                      refused_by: set[str] | None = None) -> list[Entry]:
        """Send each of ``entries`` to ``holder``'s backup for it: the node ranked first
        for it (mesh/rendezvous.py) among those alive or suspected here that take it,
        this one included, where ``holder`` keeps its copy if it holds the task. Returns
        those for which that is this node, or a node in ``refused_by``."""
        node = self.node
        routing = getattr(node, "routing", None)
        refused_by = refused_by or set()
        # (a peer merely suspected here may have been alive there: it keeps the copy)
        peers = [m for m in node.membership.members() if m.id not in (holder, node.name)
                 and m.state in (MemberState.ALIVE, MemberState.SUSPECT)]
        groups: dict[str, tuple[Member, list[Entry]]] = {}
        stay: list[Entry] = []
        for e in entries:
            takers = peers
            if routing is not None:
                queue = _queue_of(routing, e)
                takers = [m for m in peers if routing.peer_accepts(m.meta, queue, e.name)]
            by_id = {m.id: m for m in takers}
            m = by_id.get(backup_for(e.task_id, [*by_id, node.name], holder) or "")
            if m is None or m.id in refused_by:
                stay.append(e)
            else:
                groups.setdefault(m.id, (m, []))[1].append(e)
        for m, group in groups.values():
            if reason == UNANSWERED_REASON:
                log.info("node %s did not answer a handoff: %d of its task(s) go to %s, its "
                         "backup for them (which runs them once if %s took them and is "
                         "declared dead)", holder, len(group), m.id, holder)
            else:
                log.info("node %s, which handed %d queued task(s) here lately, is dead: they "
                         "go to %s, its backup for them (where its copies and its owners' "
                         "failover go)", holder, len(group), m.id)
            self._send(m, group, reason, unanswered_by=holder)
        return stay

    def _givers_gone(self, now: float) -> None:
        """Tasks taken from a giver within GIVER_TTL s that is declared dead now, and
        that have not started here, go to its backup for them (``_to_backup_of``). The
        giver may not have had our answer (cut off as it came): then it runs them (cut
        off, it cannot know), its copy of each is at its backup, and its owners send
        them there (the failover): run here as well, three runs. There they run once
        (the failover is a resend of a held task, the copy is skipped at the takeover).
        Had it our answer, they run there instead of here: once all the same."""
        taken, givers = self._from, self._givers
        while taken and now - next(iter(taken.values()))[0] > GIVER_TTL:
            taken.popitem(last=False)
        ms = self.node.membership
        dead = set()
        for giver, at in list(givers.items()):
            m = ms.member(giver)
            if now - at > GIVER_TTL:
                del givers[giver]
            elif m is not None and m.state == MemberState.DEAD:
                del givers[giver]           # (its tasks here are seen to now, once)
                dead.add(giver)
        if not dead:
            return
        gone: dict[str, set[str]] = {}
        for tid, (_, giver) in taken.items():
            if giver in dead:
                gone.setdefault(giver, set()).add(tid)
        node = self.node
        pool, held = node.pool, node.ledger.held
        for giver, ids in gone.items():
            for tid in ids:
                del taken[tid]
            ids &= held.keys()
            if not ids or node.stopping:
                continue
            # not started: waiting for its eta, or queued (one walk of the queues)
            entries = [e for t in ids if t in pool.scheduled
                       and (e := pool.remove(t)) is not None]
            queued = [item[2] for q in (pool.squeue, pool.aqueue) for item in q
                      if item[2].task_id in ids]
            if queued:
                pool.discard({id(e) for e in queued})
            for e in self._to_backup_of(giver, entries + queued, GIVER_GONE_REASON):
                pool.submit(e)

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

    # -- receiving --------------------------------------------------------------------
    def on_handoff(self, msg: Handoff) -> None:
        """Tasks from another node: hold them (journal, copy to our backup), then say so."""
        node = self.node
        if msg.source == node.name:
            self._badlog.warning("refused a handoff from %r: not a member", msg.source[:100])
            return
        if msg.target_boot and msg.target_boot != node.boot:
            # (answered even when the sender is not a member here yet: a node restarted
            # under a new name gets at once what its peers queued for the killed one)
            self._refuse_earlier(msg)
            return
        if node.membership.member(msg.source) is None:
            if msg.target_boot == node.boot:
                # meant for this process by a node that knows it, before this one has
                # heard of that node (just started): not answered, so sent again
                self._badlog.info("a handoff from %r waits: not a member here yet (it is "
                                  "sent again)", msg.source[:100])
            else:
                self._badlog.warning("refused a handoff from %r: not a member", msg.source[:100])
            return
        accepted: list[str] = []
        refused: dict[str, Any] = {}
        new: list[str] = []
        giver = node.membership.member(msg.source)
        # (shed by a node that is leaving now: taken even in one copy, as at its stop)
        shed = msg.reason == SHED_REASON and giver is not None and giver.state != MemberState.LEFT
        shedder = getattr(node, "shedder", None)
        if shed and shedder is not None and shedder.crossing(msg.source, time.time()):
            # it shed to us as we shed to it (each saw the other idle): refused, so no
            # task is swapped between two busy nodes (mesh/node/shedding.py)
            log.info("refused %d shed task(s) from %s: %s", len(msg.tasks), msg.source,
                     CROSS_REASON)
            ids = [s.task_id for s in map(_submit_or_none, msg.tasks) if s is not None]
            self._answers.append((msg.source_addr, encode(HandoffAck(
                msg.batch, node.name, [], dict.fromkeys(ids, CROSS_REASON), node.address))))
            node.front.schedule_flush()
            return
        if shed:
            node.replicas.choice.refresh()   # (who is alive now: _take asks who copies)
        for frame in msg.tasks:
            try:
                sub = decode(frame, node.config.max_message_size)
            except DecodeError as e:
                self._badlog.warning("a handed task from %s does not decode: %s", msg.source, e)
                continue
            if type(sub) is not Submit:
                continue
            why = self._take(sub, frame, shed)
            if why is None:
                accepted.append(sub.task_id)
                if node.replicas.pending(sub.task_id):
                    new.append(sub.task_id)
            else:
                refused[sub.task_id] = why
        self.received += len(accepted)
        answer = encode(HandoffAck(msg.batch, node.name, accepted, refused, node.address))
        waiting = set(new)

        def copied(tid: str) -> None:
            waiting.discard(tid)
            if not waiting:
                self._answers.append((msg.source_addr, answer))
                node.front.schedule_flush()
        if not waiting:
            copied("")
        for tid in new:                 # answered once our backup has them too
            node.replicas.after_copy(tid, functools.partial(copied, tid))
        if accepted:
            log.info("took %d task(s) from %s: %s", len(accepted), msg.source, msg.reason)
            now = time.monotonic()
            taken = self._from
            for tid in accepted:
                taken[tid] = (now, msg.source)
                taken.move_to_end(tid)
            self._givers[msg.source] = now
            while len(taken) > MOVED_MAX:
                taken.popitem(last=False)
            self.nap.poke()
            shedder = getattr(node, "shedder", None)
            if shedder is not None and msg.reason == SHED_REASON:   # not straight back
                shedder.took(msg.source, accepted, time.time())

    def _refuse_earlier(self, msg: Handoff) -> None:
        """A handoff queued for an earlier run at this address (killed, then restarted,
        maybe under another name): all refused, so the sender takes its tasks back at
        once; it gives them up or runs them itself."""
        node = self.node
        log.info("refused a handoff of %d task(s) from %s: it was sent to the previous "
                 "process at this address", len(msg.tasks), msg.source[:100])
        earlier = f"sent to a previous run at {node.address} (node {node.name} now)"
        refused: dict[str, Any] = {}
        for frame in msg.tasks:
            handed = _submit_or_none(frame, node.config.max_message_size)
            if handed is not None:
                refused[handed.task_id] = earlier
        self._answers.append((msg.source_addr, encode(HandoffAck(
            msg.batch, node.name, [], refused, node.address))))
        if node.membership.member(msg.source) is None:
            self._strangers[msg.source_addr] = None
            self._strangers.move_to_end(msg.source_addr)
        node.front.schedule_flush()

    def _forget_strangers(self) -> None:
        """(After the answers are sent) close the sockets to the oldest non-members'
        addresses past STRANGERS_MAX, unless a member is there now."""
        if len(self._strangers) <= STRANGERS_MAX:
            return
        members = {m.address for m in self.node.membership.members()}
        sockets = self.node.replicas.sockets
        while len(self._strangers) > STRANGERS_MAX:
            address, _ = self._strangers.popitem(last=False)
            if address not in members:
                sockets.forget(address)

    def _take(self, msg: Submit, frame: bytes, shed: bool = False) -> str | None:
        """Hold one handed task; None when held (or finished) here, else why not."""
        node = self.node
        ledger, tid = node.ledger, msg.task_id
        if node.stopping:
            return STOP_REASON
        if tid in ledger.held:          # ours already; but if we are handing it away
            for out in self._out.values():   # (to the node that sends it back: it shed it
                mine = out.entries.pop(tid, None)   # before our handoff was answered), it
                if mine is not None and not node.stopping:   # stays here: the answer to
                    node.pool.submit(mine)   # ours must not make us forget it
            for out in self._given_up.values():  # nor a late answer to one given up
                out.entries.pop(tid, None)       # (its tasks are in our queue already)
            return None
        if tid in node.control.revoked:
            return None                 # revoked: nothing to run
        task = node.app.tasks.get(msg.name)
        if task is None and msg.name != GROUP:    # (a group's coordinator is the node's)
            return f"task {msg.name!r} is not registered on node {node.name}"
        routing = getattr(node, "routing", None)
        refusal = routing.refusal(msg) if routing is not None else None
        if refusal is not None:          # another queue than ours
            return str(refusal)
        replicas = node.replicas
        if shed and replicas.enabled and not replicas.choice.backup_now(tid, msg):
            # taken, it would be held in one copy (here): we know no alive node to copy
            # it to (the giver, the likeliest, merely suspected here under load), and the
            # giver forgets it at our answer; killed then, we lose it (a loaded run:
            # a task shed to a node killed at once stayed RECEIVED on the survivor)
            return NO_BACKUP_REASON
        # (back after a crash: ours now, whatever was said; its owner's link kept)
        owner = node.reclaim.handed_here(tid)
        journal, now = node.journal, time.time()
        try:
            if not journal.add(tid, owner, frame, now):
                stored = journal.get(tid)
                if stored is not None and stored.result is not None:
                    return None         # finished here already
                if node.spill.holds(tid):
                    return None         # queued here already, on disk (mesh/node/spill.py)
                journal.replace(tid, owner, frame, now)
        except JournalError as e:
            return f"node {node.name} cannot write its journal: {e}"
        node.replicas.forget_copy(tid)     # we were its backup: it is ours now
        limit = msg.time_limit or (task.options.time_limit if task else None) \
            or node.config.time_limit
        entry = Entry(tid, msg.name, owner, frame, msg.priority, msg.eta, msg.expires, limit,
                      task.options.acks_late if task else True)
        ledger.accept(entry, msg)
        return None

    # -- end of each loop pass, and the loop ------------------------------------------
    def flush(self) -> None:
        """Send the answers of this pass (the ledger has committed what they took)."""
        if self._answers:
            answers, self._answers = self._answers, []
            for address, frame in answers:
                self.node.replicas.sockets.send(address, frame)
            self._forget_strangers()

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


def _queue_of(routing: Any, entry: Entry) -> str:
    """The queue a held task was routed to (its SUBMIT's header, else our routes)."""
    msg = _submit_or_none(entry.frame)
    return str(routing.queue_for(entry.name, msg.headers if msg is not None else None))


def _submit_or_none(frame: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Submit | None:
    """The SUBMIT ``frame`` holds, or None (it does not decode, or is something else)."""
    try:
        sub = decode(frame, max_size)
    except DecodeError:
        return None
    return sub if type(sub) is Submit else None
