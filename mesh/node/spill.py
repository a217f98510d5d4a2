"""A deep backlog in bounded memory: queued tasks beyond a window wait in the journal.

A node keeps at most ``queue_memory`` (``--queue-memory``, 20,000 by default) queued
tasks in memory. Once that many wait for a slot, a new *plain* task (priority 0, no
eta or countdown, not a workflow's unit) is journalled marked as waiting on disk,
acknowledged like any other (after its backup confirmed its copy, with two copies),
and then leaves the node's memory: only counters stay (``on_disk``, and its
sender's quota). From then on every plain task goes to disk too, until the disk part
has drained, so tasks start in the order they came; tasks with a higher priority
stay in memory (they start first anyway).

As the in-memory queue drains, tasks are read back from the journal in arrival order,
``chunk`` at a time (a partial index of the rows on disk: no scan), at the end of a
loop pass. A task read back is held as if it had just come: revoked meanwhile, it
finishes REVOKED without running; its copy goes to its backup again.

* A resend of an id waiting on disk is recognised (a journal lookup while the disk
  part is not empty), acknowledged, and not run twice.
* A revoke of a task waiting on disk reads that one task back and finishes it REVOKED.
* After a restart (even kill -9) the tasks on disk stay there and are read back in
  order; only what was in memory is recovered into memory (mesh/node/recovery.py).
* Two copies: a task leaves memory once its backup confirmed its copy (and, when
  its copy is moving to a node that ranks first for it now, once that one did: its
  old backup keeps its own until then, mesh/node/copy_back.py); when that
  backup restarts, dies or leaves, the tasks on disk that named it are copied to
  their backup now, a chunk at a time (mesh/node/disk_copies.py).
* At a graceful stop the in-memory queue is handed off as before; the disk part
  stays in the journal and runs when the node starts again (with two copies, the
  backup runs it if this node is not back within its grace: docs/design.md).

``--no-journal`` keeps nothing on disk: the window does not apply.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from mesh import states
from mesh.config import Config
from mesh.exceptions import DecodeError, revoked_message
from mesh.node.component import Component, NodeStartError
from mesh.node.journal import DiskRow, JournalError
from mesh.node.ledger import Entry
from mesh.node.naps import Nap
from mesh.node.takeover import LEFT_GRACE
from mesh.security.text import safe_logger
from mesh.wire.protocol import Submit, decode, encode
from mesh.workflow.ids import GROUP

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

QUEUE_MEMORY_DEFAULT = next(f.default for f in dataclasses.fields(Config) if f.name == "queue_memory")
CHUNK = 1000        # tasks read back from the journal at a time, at most
TICK = 0.1          # s between checks that the in-memory queue has room (a safety net:
                    # every pass that finishes a task checks too)


class Spill(Component):
    """The queued tasks that wait on disk only, and reading them back."""

    name = "spill"
    requires = ("journal", "pool", "front", "control")

    def __init__(self) -> None:
        self.window = 0           # queued tasks kept in memory; 0: no tasks go to disk
        self.chunk = CHUNK
        self.on_disk = 0          # tasks waiting on disk only
        # accepted this pass or waiting for their copy's confirmation, marked on disk
        # in the journal, still in memory until their ACK is out (``settle``)
        self.candidates: dict[str, Entry] = {}
        self.purging = 0                       # purges walking the disk: no read back meanwhile
        self.spilled = self.read_back = 0     # figures (status)
        self.started = False
        self.nap = Nap()          # poked as tasks go to disk: the loop ticks while some wait

    @classmethod
    def inert(cls, node: "Node") -> "Spill":
        """What a node has until this component starts: nothing goes to disk."""
        s = cls()
        s.node = node
        return s

    async def start(self, node: "Node") -> None:
        self.node = node
        node.spill = self
        journal = node.journal
        self.window = node.config.queue_memory if journal.spills else 0
        asked = node.config.queue_memory
        if not journal.spills and asked and asked != QUEUE_MEMORY_DEFAULT:   # never silent
            log.warning("queue_memory %d (--queue-memory) does not apply: this node keeps no "
                        "journal (--no-journal), so every queued task is kept in memory", asked)
        self.chunk = max(1, min(CHUNK, self.window // 4)) if self.window else CHUNK
        self.started = True
        try:
            senders = journal.disk_senders()
        except JournalError as e:
            raise NodeStartError(f"cannot read the journal: {e}") from e
        ledger = node.ledger
        for client, n, size in senders:     # their owners' quotas count them
            q = ledger.senders.setdefault(client, [0, 0])
            q[0] += n
            q[1] += size
            self.on_disk += n
        if self.on_disk:
            log.info("journal: %d queued task(s) wait on disk; read back in order as the "
                     "queue drains", self.on_disk)
        node.spawn(self._loop(), name="spill")

    async def stop(self, node: "Node") -> None:
        n = self.on_disk + len(self.candidates)
        if not n:
            return
        replicas = node.replicas
        if replicas.enabled and node.membership.alive_members(include_self=False):
            grace = LEFT_GRACE + node.config.shutdown_timeout
            log.warning("%d queued task(s) wait on disk in the journal (%s): they run when "
                        "this node starts again, or on the nodes that keep their copies if "
                        "it is not back within %.0f s", n, node.journal.path, grace)
        else:
            log.warning("%d queued task(s) wait on disk in the journal (%s): they run when "
                        "this node starts again", n, node.journal.path)

    # -- intake -----------------------------------------------------------------------
    def wants(self, msg: Submit) -> bool:
        """Does this newly accepted task wait on disk?"""
        if not self.window or msg.priority or msg.eta is not None or msg.name == GROUP \
                or "wf" in msg.headers:
            return False
        if self.on_disk or self.candidates:   # spilling: first in, first out
            return True
        node = self.node
        return node.pool.queued + len(node.ledger.pending) >= self.window

    def resent(self, ident: bytes, task_id: str, size: int) -> bool:
        """A SUBMIT (of ``size`` bytes) of an id that may wait on disk: True if it
        does (it is held here: acknowledge it, do not accept it again)."""
        if not self.on_disk:
            return False
        journal = self.node.journal
        client = journal.on_disk(task_id)
        if client is None:
            return False
        if client != ident:            # its owner speaks through another link now
            journal.set_client(task_id, ident)
            senders = self.node.ledger.senders
            old = senders.get(client)
            if old is not None:
                old[0] -= 1
                old[1] -= size
                if old[0] <= 0:
                    del senders[client]
            new = senders.setdefault(ident, [0, 0])
            new[0] += 1
            new[1] += size
        return True

    def moved(self, task_id: str, client: bytes) -> None:
        """A task going to disk (in ``candidates``) was resent through another link:
        its journal row names that link, so the task read back replies there and its
        quota is given back to the sender that holds it now (``Ledger.move``)."""
        try:
            self.node.journal.set_client(task_id, client)
        except JournalError as e:
            log.error("journal: the new link of task %s was not recorded: %s", task_id, e)

    def holds(self, task_id: str) -> bool:
        """Does this task wait on disk here?"""
        return bool(self.on_disk) and self.node.journal.on_disk(task_id) is not None

    def unqueue(self, task_id: str) -> bool:
        """A revoke of a task accepted to go to disk that is still in memory: it is
        not read back (the caller finishes it)."""
        return self.candidates.pop(task_id, None) is not None

    # -- end of each loop pass (FrontDoor.flush, after the ACKs) -----------------------
    def settle(self) -> None:
        """Tasks marked on disk whose ACK is out (their copy confirmed) leave memory."""
        c = self.candidates
        if not c:
            return
        node = self.node
        held, gates, moving = node.ledger.held, node.replicas.gates, node.replicas.back.moving
        gone: list[str] = []
        backups: list[tuple[str, str]] = []
        out = 0
        for tid, entry in c.items():
            if held.get(tid) is not entry:     # finished or given back meanwhile
                gone.append(tid)
            elif tid in gates:                  # copies are confirmed in order: wait
                break
            elif moving and tid in moving and entry.backup:
                # its copy moves to a new backup (a joiner: mesh/node/copy_back.py), not
                # confirmed yet: it stays (in order: read back from memory if the queue
                # drains first) until it is, else the old backup's drop goes now
                continue
            else:
                gone.append(tid)
                del held[tid]                   # (its sender's quota still counts it)
                backup = node.replicas.spilled(entry)
                if backup:
                    backups.append((backup, tid))
                out += 1
        for tid in gone:
            del c[tid]
        self.on_disk += out
        self.spilled += out
        if out:
            self.nap.poke()
        if backups:        # where its copy is: read back, a new backup's predecessor drops it
            try:
                node.journal.set_backups(backups)
            except JournalError as e:
                log.error("journal: cannot record the backups of tasks on disk: %s", e)

    def refill(self) -> None:
        """Read tasks back from disk, in arrival order, while the in-memory queue has
        room for a chunk."""
        if not (self.on_disk or self.candidates):
            return
        node = self.node
        if node.stopping or node.reclaim.disk or self.purging:   # (after a crash:
            return                                   # mesh/node/reclaim.py; mesh/node/purge.py)
        room = (self.window - node.pool.queued) if self.window else self.chunk
        if room < self.chunk and room < self.on_disk + len(self.candidates):
            return
        try:
            rows = node.journal.spilled(min(room, self.chunk))
        except JournalError as e:
            log.error("journal: cannot read queued tasks back: %s", e)
            return
        every = len(rows) < min(room, self.chunk)    # nothing is left on disk
        pool = node.pool
        for row in rows:
            entry = self.candidates.pop(row.task_id, None)
            if entry is not None:               # still in memory: straight to the queue
                if node.ledger.held.get(row.task_id) is entry:
                    pool.submit(entry, dispatch=False)
                continue
            if row.done:
                continue
            self.on_disk -= 1
            self.read_back += 1
            held = self._hold(row)
            if held is None:
                continue
            entry, msg = held
            node.replicas.read_back(entry, msg, row.backup)   # copied again
            if row.revoked or row.task_id in node.control.revoked:
                node.ledger.task_failed(entry, "TaskRevokedError",
                                        revoked_message(row.task_id, entry.name),
                                        states.REVOKED)
            else:
                pool.submit(entry, dispatch=False)
        pool.dispatch()
        self.on_disk = 0 if every else max(self.on_disk, 0)

    def take(self, task_id: str) -> Entry | None:
        """One task waiting on disk, held in memory from now on (a revoke finishes
        it), or None if it does not wait on disk."""
        if not self.on_disk:
            return None
        try:
            row = self.node.journal.take_from_disk(task_id)
        except JournalError as e:
            log.error("journal: cannot read task %s back: %s", task_id, e)
            return None
        if row is None:
            return None
        self.on_disk -= 1
        held = self._hold(row)
        if held is None:
            return None
        self.node.replicas.read_back(held[0], held[1], row.backup)  # its result replaces
        return held[0]                                            # the copy, wherever

    def _hold(self, row: DiskRow) -> tuple[Entry, Submit] | None:
        """A task read back from disk, held again (its quota was never given back)."""
        node, ledger = self.node, self.node.ledger
        try:
            msg = decode(row.frame)
        except DecodeError as e:
            msg = None
            log.error("journal: task %s cannot be read back (%s): dropped", row.task_id, e)
        if not isinstance(msg, Submit):
            q = ledger.senders.get(row.client)
            if q is not None:
                q[0] -= 1
                q[1] -= len(row.frame)
                if q[0] <= 0:
                    del ledger.senders[row.client]
            try:
                node.journal.remove([row.task_id])
            except JournalError:
                pass
            return None
        task = node.app.tasks.get(msg.name)
        frame = row.frame
        limits = node.control.time_limits
        override = limits.get(msg.name) if limits else None
        if override is not None:        # set at run time (time_limit command)
            msg = dataclasses.replace(msg, soft_time_limit=override[0], time_limit=override[1])
            frame = encode(msg)
        limit = msg.time_limit or (task.options.time_limit if task else None) \
            or node.config.time_limit
        entry = Entry(row.task_id, msg.name, row.client, frame, msg.priority, msg.eta,
                      msg.expires, limit, task.options.acks_late if task else True)
        entry.received = row.received
        entry.size = len(row.frame)           # what its sender's quota counted
        ledger.held[row.task_id] = entry
        if task is None:
            ledger.task_failed(entry, "NotRegistered", f"task {msg.name!r} is no longer "
                               f"registered on node {node.name}")
            return None
        return entry, msg

    async def _loop(self) -> None:
        while True:
            await self.nap.until_busy(self.on_disk > 0, TICK)
            if self.on_disk and not self.node.stopping:
                self.node.front.schedule_flush()      # refill() runs in the flush

    def status(self) -> dict[str, int]:
        return {"queued_on_disk": self.on_disk, "queue_memory": self.window,
                "spilled_to_disk": self.spilled, "read_back_from_disk": self.read_back}

