"""The backup side of the two copies (mesh/node/replicas.py is the holder side).

This node keeps copies of tasks other nodes hold, and the results of those tasks:

* ``on_replicate``: task copies are kept in memory (``frames``), results in the
  journal (``Journal.copy_result``, expiring like our own). Acknowledged as soon as
  they are written (not at the end of the loop pass: a commit timer due in the same
  pass would run first, on the holder's owner's wait); the journal commits with the
  node's next commit, within 2 ms. Copies from a holder this node has declared dead (late, after a
  partition) are not kept: it sends them again once it is alive again.
* A copy of a task this node holds itself (its owner sent it here when its holder
  died; or this node is handing it to that holder, which copies it here before it
  answers: then it is the only other copy) is kept, never run as a copy; it goes
  when the task runs here (``forget_copy``) or goes to a node other than that holder
  (``handed_on``).
* ``check_holders``: a holder declared dead has its copies without a result run here
  (``take_over``); a holder that left is given ``LEFT_GRACE`` plus our shutdown
  timeout to hand its tasks on first; one no member knows, ``ORPHAN_AFTER``.
* ``note_departures`` / ``repair_some``: when a node that kept the other copy of some
  of our results (our backup, or the holder of a copied result) is gone, those results
  are copied to another node, so that a second loss later loses nothing either; and
  results kept while this node was alone are copied once another node is alive.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from mesh import states
from mesh.exceptions import DecodeError
from mesh.membership import MemberState
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.wire.protocol import Replicate, ReplicateAck, Submit, decode, encode
from mesh.workflow.plan import GROUP

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.replicas import Replicas

log = logging.getLogger("mesh.replicas")

LEFT_GRACE = 15.0        # s (plus our shutdown timeout) before the copies of a holder
                         # that left are run here (it hands its tasks on as it stops)
ORPHAN_AFTER = 30.0      # s before the copies of a holder no member knows are run here
REPAIR_CHUNK = 2000      # results copied again per gone peer per tick, at most


class Copies:
    """What this node keeps for other nodes, and what it does when they are gone."""

    def __init__(self, replicas: "Replicas"):
        self.replicas = replicas
        self.copies_of: dict[str, set[str]] = {}   # holder -> task ids copied here
        self.holder_of: dict[str, str] = {}        # task id -> its holder
        self.frames: dict[str, tuple[bytes, float]] = {}   # task id -> (Submit, received)
        self._gone: dict[str, float] = {}          # holder -> when first seen not alive
        # results whose other copy was on a node that is gone: peer -> position reached
        self.repairs: dict[str, int] = {}
        self._repaired: dict[str, int] = {}        # peer -> results copied again so far
        self._was_alive: set[str] = set()          # peers seen alive since start
        self._departed: set[str] = set()           # of those, the ones dead or left now
        self.taken_over = 0
        self._badlog = _RateLimitedLog("refused copies")
        self._deadlog = _RateLimitedLog("copies from dead holders", burst=3)

    @property
    def node(self) -> "Node":
        return self.replicas.node

    def on_replicate(self, msg: Replicate) -> None:
        """Copies from a holder: kept in memory (see the module docstring), results
        journalled; acknowledged at once."""
        node = self.node
        member = node.membership.member(msg.source)
        if member is None or member.address != msg.source_addr or msg.source == node.name:
            self._badlog.warning("refused copies from %r at %r: not a member at that address",
                                 msg.source[:100], msg.source_addr[:100])
            return
        if member.state == MemberState.DEAD:
            # sent before we declared it dead (a partition healing delivers them late):
            # its copies here were run already, its owners sent its tasks to their
            # backups, and these would be run at the next check too, while it runs them
            # itself. Not acknowledged: it sends them again once it is alive for us.
            self._deadlog.warning("copies from %s, which this node has declared dead, not "
                                  "kept (it sends them again once it is alive again)",
                                  msg.source[:100])
            return
        journal, now = node.journal, time.time()
        try:
            for tid in msg.drop:                  # (older than the copies sent with them)
                self._unkeep(tid)
            for tid, frame in zip(msg.task_ids, msg.tasks):
                # kept even when this node holds the task too: it may be handing it to
                # that holder, which copies it here before it answers the handoff (in
                # a two-node mesh the giver is always the receiver's backup); then it
                # is the only other copy. One held here is never run as a copy
                # (``take_over``), and goes when it runs here or goes elsewhere.
                self._keep(tid, msg.source)
                self.frames[tid] = (frame, now)
            ready, source = states.READY_STATES, msg.source
            rows = [(tid, state, frame, now, source) for tid, state, frame
                    in zip(msg.result_ids, msg.result_states, msg.results) if state in ready]
            if rows:
                journal.copy_results(rows)
                for row in rows:
                    self._unkeep(row[0])
        except JournalError as e:
            log.error("journal: copies from %s were not kept: %s", msg.source, e)
            return            # not acknowledged: the holder sends them again
        self.replicas.sockets.send(msg.source_addr, encode(ReplicateAck(msg.batch, node.name)))

    def _keep(self, tid: str, holder: str) -> None:
        old = self.holder_of.get(tid)
        if old is not None and old != holder:
            self.copies_of.get(old, set()).discard(tid)
        self.holder_of[tid] = holder
        self.copies_of.setdefault(holder, set()).add(tid)

    def forget_copy(self, tid: str) -> None:
        """The task is this node's own now (handed here), or it ran here: no longer a
        copy."""
        self._unkeep(tid)

    def handed_on(self, tid: str, to: str | None) -> None:
        """A task this node held went to node ``to`` (None: back to its owner). A copy
        of it kept here for another holder goes too, unless ``to`` is that holder (it
        holds the task again, with this node as its backup). Kept, it would run here
        when that holder is declared dead, while the node it went to runs it too: the
        owner sends a dead holder's task to its backup, which may shed it on (a third
        run after a partition: holder, backup's receiver, backup)."""
        if self.holder_of.get(tid) not in (None, to):
            self._unkeep(tid)

    def _unkeep(self, tid: str) -> None:
        holder = self.holder_of.pop(tid, None)
        if holder is not None:
            self.frames.pop(tid, None)
            s = self.copies_of.get(holder)
            if s is not None:
                s.discard(tid)
                if not s:
                    del self.copies_of[holder]

    def take_over(self, holder: str, why: str) -> int:
        """Run here the copies of ``holder``'s tasks that have no result: they are
        this node's tasks from now on. How many."""
        node = self.node
        ids = self.copies_of.pop(holder, set())
        if not ids:
            return 0
        journal, ledger = node.journal, node.ledger
        copies = [(tid, *self.frames.pop(tid)) for tid in ids if tid in self.frames]
        for tid in ids:
            self.holder_of.pop(tid, None)
        taken = failed = 0
        for tid, frame, received in sorted(copies, key=lambda c: c[2]):
            if tid in ledger.held:
                continue
            sub = _submit(frame)
            try:
                if sub is None or not journal.add(tid, b"", frame, time.time()):
                    continue                  # unreadable, or finished here already
            except JournalError as e:
                log.error("journal: cannot take over task %s of %s: %s", tid, holder, e)
                continue
            task = node.app.tasks.get(sub.name)
            limit = sub.time_limit or (task.options.time_limit if task else None) \
                or node.config.time_limit
            entry = Entry(tid, sub.name, b"", frame, sub.priority, sub.eta, sub.expires,
                          limit, task.options.acks_late if task else True)
            entry.received = received
            if task is None and sub.name != GROUP:     # (a group's coordinator is the node's)
                ledger.held[tid] = entry
                ledger.task_failed(entry, "NotRegistered", f"task {sub.name!r} is not "
                                   f"registered on node {node.name}, which took it over")
                failed += 1
            elif not entry.acks_late:         # it may have run on the holder: never twice
                ledger.held[tid] = entry
                ledger.task_failed(entry, "WorkerLostError", f"node {holder} died holding task "
                                   f"{tid}; it has acks_late=False, so it is not run again")
                failed += 1
            else:
                ledger.accept(entry, sub)
                taken += 1
        self.taken_over += taken
        node.front.schedule_flush()
        log.warning("node %s %s: running %d of its task(s) here (this node kept their "
                    "copies)%s", holder, why, taken,
                    f"; {failed} failed (acks_late=False or not registered)" if failed else "")
        return taken

    def check_holders(self, now: float) -> None:
        """Holders that are gone (dead; left long ago; unknown for long) are taken over."""
        ms = self.node.membership
        grace_left = LEFT_GRACE + self.node.config.shutdown_timeout
        for holder in list(self.copies_of):
            m = ms.member(holder)
            state = m.state if m is not None else None
            if state in (MemberState.ALIVE, MemberState.SUSPECT):
                self._gone.pop(holder, None)
                continue
            since = self._gone.setdefault(holder, now)
            if state == MemberState.DEAD:
                self.take_over(holder, "is dead")
            elif state == MemberState.LEFT and now - since > grace_left:
                self.take_over(holder, f"left {grace_left:.0f} s ago without handing them on")
            elif state is None and now - since > ORPHAN_AFTER:
                self.take_over(holder, "is unknown to the mesh")
            if holder not in self.copies_of:
                self._gone.pop(holder, None)

    def note_departures(self, alive: set[str]) -> None:
        """Members that went (dead or left) since the last check: the results whose
        other copy they kept are copied to another node (``_repair_some``); and when
        a node is alive again after none was, so are the results kept alone."""
        ms = self.node.membership
        if alive and not (self._was_alive - self._departed):
            self.repairs.setdefault("", 0)      # alone until now
        self._was_alive |= alive
        self._departed -= alive                 # back again
        for peer in self._was_alive - alive - self._departed:
            m = ms.member(peer)
            if m is None or m.state in (MemberState.DEAD, MemberState.LEFT):
                self._departed.add(peer)
                self.repairs.setdefault(peer, 0)

    def repair_some(self) -> None:
        """Copy up to REPAIR_CHUNK results per gone peer to their new backups."""
        journal = self.node.journal
        alive = set(self.replicas._alive_ids())
        if not alive:
            return
        for peer, after in list(self.repairs.items()):
            if peer in alive:                       # it came back: its copies are there
                del self.repairs[peer]
                continue
            try:
                rows = journal.results_of_peer(peer, after, REPAIR_CHUNK)
            except JournalError as e:
                log.error("journal: cannot read the results to copy again: %s", e)
                return
            if not rows:
                del self.repairs[peer]
                n = self._repaired.pop(peer, 0)
                if n:
                    log.info("copied %d result(s) to other nodes: their other copy was on %s",
                             n, peer or "no node (this one was alone)")
                continue
            moved: dict[str, list[str]] = {}
            for _pos, tid, state, frame in rows:
                new = self.replicas._choose(tid)
                self.replicas._queue(new).results[tid] = (state, frame)
                moved.setdefault(new, []).append(tid)
            try:
                for new, tids in moved.items():
                    journal.set_peer(tids, new)
            except JournalError as e:
                log.error("journal: cannot record where results were copied: %s", e)
            self.repairs[peer] = rows[-1][0]
            self._repaired[peer] = self._repaired.get(peer, 0) + len(rows)


def _submit(frame: bytes) -> Submit | None:
    try:
        msg = decode(frame)
    except DecodeError as e:
        log.warning("dropped a copy that does not decode: %s", e)
        return None
    return msg if type(msg) is Submit else None
