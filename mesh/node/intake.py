"""Intake: what the node does with a SUBMIT.

A task is refused (revoked, another queue, not registered, journal failing, over its
sender's quota or its eta too far ahead) with a clear answer,
answered from the journal (finished here already), recognised (a resend of a task
held here), answered MOVED (handed on lately: mesh/node/handoff.py), or accepted into
the ledger. Every SUBMIT of a loop pass is acknowledged
in one ACK per peer at the end of the pass (``flush_acks``), after the journal has
committed the pass, and only for tasks still held then (a RESULT implies the ACK);
with two copies, a task's ACK waits until its backup has confirmed the copy
(mesh/node/replicas.py).
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from mesh import states
from mesh.exceptions import revoked_message
from mesh.node.component import Component
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry
from mesh.security.text import safe_logger
from mesh.wire.protocol import Ack, Release, Submit, encode
from mesh.workflow.builtins import user_tasks
from mesh.workflow.ids import GROUP

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")


class Intake(Component):
    """Takes SUBMITs from the front door into the ledger."""

    name = "intake"
    requires = ("journal", "front", "control", "routing", "pool")

    def __init__(self) -> None:
        self._acks: dict[bytes, list[str]] = {}
        self._on_disk: set[str] = set()    # resent this pass, held on disk (mesh/node/spill.py)

    async def start(self, node: "Node") -> None:
        self.node = node
        node.intake = self

    def submit(self, ident: bytes, msg: Submit, frame: bytes) -> None:
        node = self.node
        front, ledger = node.front, node.ledger
        tid = msg.task_id
        held = ledger.held.get(tid)
        if node.stopping and held is None:
            # a task this node handed on (its stop hands its queue on) is followed there:
            # given back instead, its owner sent it again to the node that had handed it
            # here, which pointed back here (a beat run went round that loop, 1,000 times
            # a second, until this node was gone). (One still held here is acknowledged
            # below, as always: it runs here, or the stop hands it on and the MOVED goes
            # to this link. Given back, its owner sent it elsewhere while this node ran it
            # or handed it to a third: two runs.)
            moved = node.handoff.moved_to(tid)
            if moved is None and self._waits_on_disk(ident, tid, len(frame)):
                # held here still: the disk part of a deep backlog is not handed on at a
                # stop (it runs at the next start, or its backups run their copies once
                # this node is gone for their LEFT_GRACE). Given back, its owner sent it
                # to another node, which ran it, and so did the backup that keeps its
                # copy (tests/integration/test_e2e_joiner.py)
                self._ack(ident, tid)
                return
            front.reply(ident, encode(moved if moved is not None else Release(
                [tid], node.name, "node is shutting down")))
            return
        self._ack(ident, tid)
        if held is not None:           # a resend of a task we already hold
            if held.client != ident and tid in node.spill.candidates:
                node.spill.moved(tid, ident)   # going to disk: its row names the new link
            ledger.move(held, ident)   # its owner may have reconnected through another link
            return
        if node.reclaim.resent(tid, ident):   # recovered, asking the mesh first
            return                     # (mesh/node/reclaim.py): answered once it knows
        moved = node.handoff.moved_to(tid)
        if moved is not None:          # handed on lately (taken over, then shed): follow it
            front.reply(ident, encode(moved))
            return
        if tid in node.control.revoked:
            ledger.fail(ident, tid, "TaskRevokedError", revoked_message(tid, msg.name),
                        states.REVOKED)
            node.events.emit("task-revoked", uuid=tid, name=msg.name, expired=False,
                             terminated=False)
            self._refused(msg, tid, states.REVOKED, "TaskRevokedError",
                          revoked_message(tid, msg.name))
            return
        if not node.routing.takes_every:         # not every queue: is this one ours?
            refused = node.routing.refusal(msg)
            if refused is not None:
                front.refuse(ident, "queue", refused, tid)
                node.events.emit("task-rejected", uuid=tid, name=msg.name, requeue=True,
                                 reason="queue")
                return
        task = node.app.tasks.get(msg.name)
        if task is None and msg.name != GROUP:
            known = ", ".join(user_tasks(node.app.tasks)[:20])
            node.events.emit("task-rejected", uuid=tid, name=msg.name, requeue=False,
                             reason="not registered")
            why = (f"task {msg.name!r} is not registered on node {node.name} (registered: "
                   f"{known or 'none'})")
            ledger.fail(ident, tid, "NotRegistered", why)
            self._refused(msg, tid, states.FAILURE, "NotRegistered", why)
            return
        now = time.time()
        max_eta = node.config.max_eta
        if max_eta and msg.eta is not None and msg.eta - now > max_eta:
            ahead = msg.eta - now
            ahead_text = f"{ahead:.0f}" if ahead < 1e10 else f"{ahead:.3g}"   # (not 300 digits)
            ledger.fail(ident, tid, "MeshError", f"task {tid} is due in {ahead_text} s, "
                        f"beyond node {node.name}'s limit of {max_eta:.0f} s ahead (max_eta, "
                        "--max-eta)")
            return
        journal = node.journal
        over = ledger.over_quota(ident, len(frame))
        if over is not None:
            self.refuse_over_quota(ident, msg, over, len(frame))
            return
        spill = node.spill
        disk = spill.wants(msg)        # a deep queue: it waits on disk (mesh/node/spill.py)
        size = len(frame)
        try:
            if not (journal.add_spilled(tid, ident, frame, now) if disk
                    else journal.add(tid, ident, frame, now)):
                stored = journal.get(tid)
                if stored is not None and stored.result is not None:
                    ledger.counts["answered_from_journal"] += 1   # finished here already
                    front.reply(ident, stored.result)
                    return
                if spill.resent(ident, tid, size):       # held here, on disk
                    self._on_disk.add(tid)
                    return
                journal.replace(tid, ident, frame, now)
                disk = False
        except JournalError as e:
            front.refuse(ident, "journal", f"node {node.name} cannot write its journal, so it "
                         f"did not accept task {tid}: {e}", tid)
            log.error("journal write failed: %s (task %s refused)", e, tid)
            node.events.emit("task-rejected", uuid=tid, name=msg.name, requeue=True,
                             reason=f"journal: {e}")
            return
        limits = node.control.time_limits
        override = limits.get(msg.name) if limits else None
        if override is not None:       # set at run time (time_limit command): the child
            msg = dataclasses.replace(msg, soft_time_limit=override[0], time_limit=override[1])
            frame = encode(msg)        # reads the soft limit from the message
        if task is None:               # a group's coordinator (mesh/node/wf_groups.py)
            entry = Entry(tid, msg.name, ident, frame, msg.priority, None, None, None)
            # sent here first: start its members; a resend to the node that kept its copy
            # (its first holder died) asks the mesh first, as a takeover does
            entry.fresh = not node.replicas.copies.has(tid)
            ledger.accept(entry, msg, submitted=True)
            return
        options = task.options         # (a property: resolved against app.conf each read)
        limit = msg.time_limit or options.time_limit or node.config.time_limit
        entry = Entry(tid, msg.name, ident, frame, msg.priority, msg.eta, msg.expires, limit,
                      options.acks_late)
        entry.size = size              # what its sender sent (a time limit override aside)
        ledger.accept(entry, msg, submitted=True)
        if disk:                       # in memory until its ACK is out, then on disk only
            spill.candidates[tid] = entry

    def _ack(self, ident: bytes, tid: str) -> None:
        """Acknowledge ``tid`` to ``ident`` in this pass's ``flush_acks`` if it is held
        here by then (in memory, or on disk: ``_on_disk``)."""
        acks = self._acks.get(ident)
        if acks is None:
            acks = self._acks[ident] = []
            self.node.front.schedule_flush()
        acks.append(tid)

    def _waits_on_disk(self, ident: bytes, tid: str, size: int) -> bool:
        """Does ``tid`` wait on this node's disk? Then its row names ``ident`` now, and
        it is acknowledged with this pass's acks (the caller added it to them)."""
        try:
            if not self.node.spill.resent(ident, tid, size):
                return False
        except JournalError as e:
            log.error("journal: cannot look task %s up on disk: %s", tid, e)
            return False
        self._on_disk.add(tid)
        return True

    def _refused(self, msg: Submit, tid: str, state: str, exc_type: str, why: str) -> None:
        """A workflow's step refused here ended all the same: what follows it is told."""
        wf = self.node.workflows
        if wf is not None and ("wf" in msg.headers or msg.name == GROUP):
            wf.refused(msg, self.node.ledger.failure(tid, state, exc_type, why))

    def refuse_over_quota(self, ident: bytes, msg: Submit, why: str, size: int = 0) -> None:
        """A sender over its quota: a task finished here already is still answered;
        a new one is refused (ERROR ``quota``: the client may try another node)."""
        node, tid = self.node, msg.task_id
        try:
            stored = node.journal.get(tid)
        except JournalError:
            stored = None
        if stored is not None and stored.result is not None:
            node.ledger.counts["answered_from_journal"] += 1
            node.front.reply(ident, stored.result)
            return
        if self._waits_on_disk(ident, tid, size):      # held here already, on disk
            return
        node.front.refuse(ident, "quota", why, tid)
        node.ledger.faillog.warning("task %s refused: %s", tid, why)
        node.events.emit("task-rejected", uuid=tid, name=msg.name, requeue=True, reason="quota")

    def flush_acks(self) -> None:
        """Acknowledge this pass's SUBMITs that are still held (a result implies the ack)."""
        if not self._acks:
            return
        node = self.node
        load = node.load()
        held = node.ledger.held
        replicas = node.replicas
        acks, self._acks = self._acks, {}
        disk = self._on_disk
        if disk:
            self._on_disk = set()
        gates = replicas.gates              # (replicas.pending, read in one pass)
        for ident, ids in acks.items():
            now = []
            for t in ids:
                if t not in held:
                    if t in disk:            # held on disk (its copy confirmed long ago)
                        now.append(t)
                    continue
                if t not in gates:
                    now.append(t)
                else:          # acknowledged once the backup has its copy too
                    replicas.after_copy(t, ident)
            if now:
                node.front.reply(ident, encode(Ack(now, node.name, load)))

    def ack_later(self, ident: bytes, task_id: str) -> None:
        """(Its copy is confirmed) acknowledge ``task_id`` to ``ident`` in this pass."""
        self._acks.setdefault(ident, []).append(task_id)
        self.node.front.schedule_flush()
