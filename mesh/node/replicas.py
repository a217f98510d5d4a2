"""Two copies: each task a node holds, and its result once it finishes, is also kept
on a second node, the task's *backup*, chosen by rendezvous hashing over the alive
members (mesh/rendezvous.py). Then the loss of any one machine, for good, loses no
accepted task and no result, even when the submitter exited long ago.

(This module is the holder's side and the loop. The batching, whose send, confirm
and resend paths share one in-flight state per backup, is mesh/node/replicas_send.py;
backups checked against the membership (replaced when gone or restarted),
mesh/node/replicas_members.py (both mixins of ``Replicas``). Which node is a task's
backup is mesh/node/backup_choice.py; the replies that wait for a copy's confirmation,
mesh/node/copy_gates.py (a mixin of ``Replicas``); a held task's copy moved to the
node that ranks first for it now (a joiner, a peer back from a moment out),
mesh/node/copy_back.py; what a backup keeps and does when a holder dies,
mesh/node/copies.py and takeover.py.)

Holder side (this node holds the task):

* ``accepted``: after ``COPY_DELAY`` (2 ms) a copy goes to the backup in a REPLICATE;
  a task that finished by then is copied as its result alone. One REPLICATE per
  backup is in flight at a time, so batches grow with the load. Until the backup
  confirms (REPLICATE_ACK), the replies that say "a node has it" wait: the owner's
  ACK, and a RESULT that came first (``after_copy``). A backup that does not confirm
  within ``COPY_TIMEOUT`` does not hold the owner up for ever: the replies go (one
  copy for now, said in the log) and the copy is sent again until it is confirmed,
  or until the backup has confirmed nothing for ``COPY_STALL`` while alive or
  suspected (a member that answers probes but not copies: a made-up one, a broken
  data path): then its unconfirmed results are no longer kept for it in memory
  (before, every result sent to it, twice a second, for as long as it was not
  dead, and round again through the journal at each suspicion: the hostile soak's
  node grew by ~1 KiB per task run). They stay in one copy here; the journal names that backup as
  their other copy, so they are copied to another node if it goes (dead or left).
* ``updated``: a retry's new Submit (retries + 1, its eta) replaces the copy.
* ``finished``: the result replaces the copy at the backup, which serves it like its
  own (``result`` lookups from any process, a resend of the id).
* ``forgotten``: the task went elsewhere (handed off, given back): the copy goes.
* A backup that is no longer alive, or that restarted (its ``boot`` id in the
  gossiped meta changed), is replaced: its tasks are copied to their new backup (and
  tasks held while no other node was alive get their copy once one is). The tasks
  waiting on disk whose copy it kept follow, a chunk at a time (disk_copies.py).

Backup side (this node keeps copies of others' tasks and their results; a holder's
death; results copied again when a node is gone): mesh/node/copies.py (the keeping)
and mesh/node/takeover.py (a node gone).

A task may run twice (its holder was declared dead but was not); its result is
delivered once (results are first-wins by task id). ``--replicas 1`` sends no copies
(this node still keeps the copies others send it).
"""
from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mesh.node.backup_choice import ALIVE_TTL as ALIVE_TTL  # (importable from here as before)
from mesh.node.backup_choice import BackupChoice
from mesh.node.component import Component
from mesh.node.copies import Copies, uncount
from mesh.node.copy_back import CopyBack
from mesh.node.copy_gates import COPY_TIMEOUT as COPY_TIMEOUT
from mesh.node.copy_gates import GATE_STAMP as GATE_STAMP
from mesh.node.copy_gates import CopyGates
from mesh.node.disk_copies import DiskCopies
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.node.naps import Nap
from mesh.node.peers import PeerSockets, routing_id
from mesh.node.replicas_members import SWEEP_EVERY, ReplicasMembers
from mesh.node.replicas_send import ReplicasSend, _Batch, _Sent
from mesh.security.text import safe_logger
from mesh.wire.protocol import Replicate, Submit

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.replicas")

COPY_DELAY = 0.002       # s a held task waits before its copy is sent (if it finishes
                         # sooner, its result is sent instead: most tasks are short)
TICK = 0.1               # s between checks of unconfirmed copies
MEMBERS_EVERY = 1.0      # s between checks of backups and holders against membership
DATA_HWM = 10_000        # frames queued per peer for handoff and replication
SETTLE_STEP = 0.02


class Replicas(ReplicasSend, ReplicasMembers, CopyGates, Component):
    """The second copy of held tasks and results; the backup's takeover."""

    name = "replicas"
    requires = ("journal", "front", "pool", "membership")

    def __init__(self) -> None:
        CopyGates.__init__(self)                   # replies waiting for copies: copy_gates.py
        self.enabled = False                       # sending copies (replicas == 2, started)
        self.nap = Nap()                           # the loop's: poked as work for it starts
        self.started = False
        # holder side: a held task's backup and queue are on its Entry (``backup``,
        # ``queue``: one record per task, not a dict entry each); here, how many
        # held tasks each backup has ("" = none), to replace a backup that is gone
        self.per_backup: dict[str, int] = {}
        self._held_results: dict[str, tuple[str, str, bytes]] = {}   # workflow steps' results,
                                                   # until the steps they started are copied
        self._out: dict[str, _Batch] = {}          # backup -> its next REPLICATE
        self._sent: dict[str, _Sent] = {}          # batch id -> what it carried
        self._busy: dict[str, str] = {}            # backup -> its batch in flight: one at a
                                                   # time, so batches grow under load
        self._later: collections.deque[tuple[float, list[Entry]]] = collections.deque()
        self._later_timer: asyncio.TimerHandle | None = None   # copies waiting COPY_DELAY,
                                                   # those of one moment in one list
        self._unconfirmed_since: dict[str, float] = {}   # backup -> its first REPLICATE
                                                   # since its last confirmation (kept while
                                                   # it is suspected: see check_members)
        self._boot_of: dict[str, Any] = {}         # backup -> its process (a restart loses
                                                   # the copies it kept in memory)
        self._parked: dict[str, dict[str, str]] = {}   # backup not alive -> drops (id ->
                                                   # handed to) that go once it is alive again
        self.choice = BackupChoice(self)           # a task's backup: backup_choice.py
        self.back = CopyBack(self)                 # its copy follows the ranking: copy_back.py
        self._ids = itertools.count()
        self._prefix = f"{os.getpid():x}.{int(time.time() * 1000) & 0xFFFFFF:x}."
        self.copies = Copies(self)                 # the backup side: mesh/node/copies.py
        self.disk_copies = DiskCopies(self)        # tasks on disk whose copy was lost
        # figures (status)
        self.copies_sent = self.copies_confirmed = 0
        self.results_given_up = 0                  # unconfirmed by a stalled backup
        self._stall_log = _RateLimitedLog("stalled backups")
        self._alone: bool | None = None

    @classmethod
    def inert(cls, node: "Node") -> "Replicas":
        """What a node has until this component starts (or when built without it):
        no copies are made, replies go at once."""
        r = cls()
        r.node = node
        return r

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, node: "Node") -> None:
        self.node = node
        node.replicas = self
        # with keys, CurveZMQ as the node (mesh/security); a routing id nobody can guess
        self.sockets = PeerSockets(node.ctx, routing_id("data", node.name),
                                   hwm=DATA_HWM, security=node.security)
        self.enabled = node.config.replicas >= 2
        self.copies.start()
        self.started = True
        if not self.enabled:
            log.info("--replicas 1: tasks and results are kept on this node only (no backup)")
        else:
            self._say_copies(first=True)
        node.spawn(self._loop(), name="replicas")

    def close(self, node: "Node") -> None:
        if self.started:
            self.sockets.close()

    async def settle(self, timeout: float) -> None:
        """(Stopping) wait up to ``timeout`` s until every copy and result sent is
        confirmed, so that what finished during the drain is on its backup too."""
        deadline = time.monotonic() + timeout
        while (self._sent or any(self._out.values())) and time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_STEP)

    # -- holder side: what the ledger tells us ---------------------------------------
    def accepted(self, entry: Entry, msg: Submit | None = None) -> None:
        """A task is held here now: copy it to its backup; replies wait for the copy."""
        if not self.enabled:
            return
        tid = entry.task_id
        entry.queue = self.choice.queue_for(entry, msg)
        backup = self.choice.choose(tid, entry)
        self._track(entry, backup)
        self.back.accepted(tid)              # (a peer is out: maybe not its first-ranked)
        if backup:
            # the copy goes after COPY_DELAY: a task that finishes sooner (most do) is
            # copied as its result alone, one write at the backup instead of three
            now = self._now()
            later = self._later
            if later and later[-1][0] is now:       # (the same moment, within GATE_STAMP:
                                                    # one list, copied together after
                                                    # COPY_DELAY less up to GATE_STAMP)
                later[-1][1].append(entry)
            else:
                later.append((now, [entry]))
            if self._later_timer is None:
                self._later_timer = asyncio.get_running_loop().call_later(
                    COPY_DELAY, self._copy_due)
            self._gate(tid, now)

    def _copy_due(self) -> None:
        """Copies whose delay is over, of tasks still held here, go to their backups."""
        self._later_timer = None
        due = time.monotonic() - COPY_DELAY
        later, held = self._later, self.node.ledger.held
        while later and later[0][0] <= due:
            for entry in later.popleft()[1]:
                tid = entry.task_id
                backup = entry.backup
                if backup and held.get(tid) is entry:
                    self._queue(backup).tasks[tid] = entry.frame
        if later:
            self._later_timer = asyncio.get_running_loop().call_later(
                max(later[0][0] - due, 0.0005), self._copy_due)

    def updated(self, entry: Entry) -> None:
        """A retry: the task runs again with a new Submit; the copy follows."""
        backup = entry.backup
        if backup:
            self._queue(backup).tasks[entry.task_id] = entry.frame

    def taken_back(self, entries: Iterable[Entry]) -> None:
        """Tasks a receiver refused (mesh/node/handoff.py), held here again: copied to
        their backup again. (Made when a backup kept one copy per task id: an earlier
        run of the receiver had replaced ours with its own, then reclaimed it, leaving
        none. A backup keeps a copy per id and holder since 2026-12 (mesh/node/copies.py),
        so ours is still there in that case; this replaces it with itself, a copy per
        refused task, and covers a copy gone by a path not foreseen.)"""
        for entry in entries:
            self.updated(entry)

    def finished(self, task_id: str, state: str, result_frame: bytes | None,
                 hold: bool = False, entry: Entry | None = None) -> str:
        """A held task's final result: it replaces the copy at the backup (a copy not
        sent yet is not sent at all). The backup that keeps the result ("" if none).
        ``result_frame`` None: the task keeps no result (ignore_result); its copy goes,
        and nothing waits for the backup. ``hold``: keep it until ``release`` (a
        workflow's step: see there). ``entry``: the task's, if it was held here."""
        self.copies.forget_copy(task_id)     # it ran here: a copy kept for another holder
        if not self.enabled:                 # must not run it again (mesh/node/copies.py)
            return ""
        if result_frame is None:
            if entry is not None:
                self.forgotten([entry])
            else:
                self._open(task_id)
            return ""
        if self.back.moving:
            self.back.moved_off(task_id, "")
        backup = (self._untrack(entry) if entry is not None else "") or self.choice.choose(task_id)
        if backup:
            if hold:
                self._held_results[task_id] = (backup, state, result_frame)
            else:
                self._put_result(backup, task_id, state, result_frame)
            # the owner gets its RESULT once the backup has the result too (not just the
            # task): else a holder dying in between would leave the backup to run it again
            self._result_wait.add(task_id)
            self._gate(task_id, self._now())
        else:
            # no other node alive (its peers dead, or only suspected for a moment): the
            # result is kept in one copy, and copied once a node is alive again
            self.copies.kept_alone()
        return backup

    def _put_result(self, backup: str, task_id: str, state: str, result_frame: bytes) -> None:
        batch = self._queue(backup)
        batch.tasks.pop(task_id, None)
        batch.results[task_id] = (state, result_frame)

    def release(self, task_id: str, after: Iterable[str]) -> None:
        """A result held by ``finished(hold=True)`` goes to its backup once the copies
        of ``after`` (the workflow steps it started here) are confirmed, so a backup
        never has a step's result without the steps that follow it having their copy
        (mesh/node/workflows.py): if this node dies in between, the backup runs the
        step again, and the same ids follow."""
        held = self._held_results.pop(task_id, None)
        if held is None:
            return
        backup, state, frame = held
        waiting = {t for t in after if t in self.gates}

        def go(tid: str) -> None:
            waiting.discard(tid)
            if not waiting:
                self._put_result(backup, task_id, state, frame)
        if not waiting:
            self._put_result(backup, task_id, state, frame)
            return
        for t in list(waiting):
            self.after_copy(t, functools.partial(go, t))

    def forgotten(self, entries: Iterable[Entry], to: str | None = None) -> None:
        """Tasks that are no longer ours (handed on to node ``to``, given back): drop
        their copies (and a copy of them this node kept for another holder, unless
        ``to`` is that holder: ``Copies.handed_on``)."""
        parked = self._parked if to else None
        for entry in entries:
            tid = entry.task_id
            self.copies.handed_on(tid, to)
            if parked:                # (its old backup, replaced while suspected, learns
                for ids in parked.values():     # where it went too: takeover.py)
                    if tid in ids:
                        ids[tid] = to or ""
            if self.back.moving:
                self.back.moved_off(tid, to or "")
            backup = self._untrack(entry)
            if backup:
                batch = self._queue(backup)
                batch.tasks.pop(tid, None)
                # (who it went to: a backup that kept the copy of a holder it was handed
                # to, declared dead meanwhile, runs that copy on this drop: takeover.py)
                batch.drop[tid] = to or ""
            self._open(tid)

    def spilled(self, entry: Entry) -> str:
        """A task whose copy is confirmed now waits on disk only (mesh/node/spill.py):
        nothing is kept for it here until it is read back (then copied again). Its
        backup ("" if none), which the journal keeps for ``read_back``."""
        if self.back.moving:
            self.back.moved_off(entry.task_id, "")
        return self._untrack(entry)

    def read_back(self, entry: Entry, msg: Submit, was: str) -> None:
        """A task read back from disk: copied to its backup again; the node that kept
        its copy when it went to disk (``was``), if another one now, drops it once
        that one confirmed (as a moving copy: copy_back.py; until 2026-12 at once)."""
        self.accepted(entry, msg)
        if was and self.enabled and entry.backup != was:
            if entry.backup:
                self.back.moving.setdefault(entry.task_id, []).append(was)
            else:                     # (none alive: parked until was is)
                self._queue(was).drop[entry.task_id] = ""

    # -- holder side: bookkeeping ----------------------------------------------------
    def backup_of(self, task_id: str) -> str | None:
        """The backup of a task held here ("" none; None: not held, or not tracked)."""
        entry = self.node.ledger.held.get(task_id)
        return entry.backup if entry is not None else None

    def _track(self, entry: Entry, backup: str) -> None:
        if entry.backup is not None:
            uncount(self.per_backup, entry.backup)
        entry.backup = backup
        self.per_backup[backup] = self.per_backup.get(backup, 0) + 1

    def _untrack(self, entry: Entry) -> str:
        entry.queue = None
        backup = entry.backup
        if backup is None:
            return ""
        entry.backup = None
        uncount(self.per_backup, backup)
        return backup

    def _queue(self, backup: str) -> _Batch:
        batch = self._out.get(backup)
        if batch is None:
            batch = self._out[backup] = _Batch()
            self.node.front.schedule_flush()
        return batch

    # -- backup side (mesh/node/copies.py) --------------------------------------------
    def on_replicate(self, msg: Replicate) -> None:
        self.copies.on_replicate(msg)

    def forget_copy(self, tid: str) -> None:
        """The task is this node's own now (handed here): no longer a copy."""
        self.copies.forget_copy(tid)


    # -- the loop: resends, timeouts, membership --------------------------------------
    async def _loop(self) -> None:
        next_members = 0.0
        next_sweep = time.monotonic() + SWEEP_EVERY
        while True:
            # ticks while a copy waits for its confirmation or a walk/repair/takeover is
            # under way; else a nap until one starts or the next membership check
            now = time.monotonic()
            await self.nap.until_busy(self._working(), TICK, min(next_members, next_sweep) - now)
            try:
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + self._sweep_every()
                    self.sweep()
                self._resend(now)
                self._give_up(now)
                if self.copies.repairs:
                    self.copies.repair_some()
                self.copies.tick()
                self.disk_copies.tick(now)
                self.back.tick()
                if now >= next_members:
                    next_members = now + MEMBERS_EVERY
                    self.check_members(now)
            except Exception:
                log.exception("replication check failed")

    def _working(self) -> bool:
        """Something for the loop's next tick: a copy unconfirmed, a repair, a takeover
        of copies on disk, copies on disk to drop, a walk of the disk part or of the held
        tasks for a joiner."""
        d = self.disk_copies
        return bool(self._sent or self.copies.working() or d.inflight or d.walking
                    or self.back.working())

    def status(self) -> dict[str, Any]:
        return {"replicas": 2 if self.enabled else 1, "copies_kept": self.copies.in_memory() + self.copies.on_disk,
                "copies_on_disk": self.copies.on_disk, "copies_kept_for": self.copies.per_holder(),
                "data_sockets": len(self.sockets.socks),
                "copies_sent": self.copies_sent, "copies_confirmed": self.copies_confirmed,
                "copies_waiting": len(self.gates), "single_copy_acks": self.single_copy,
                "results_given_up": self.results_given_up,
                "taken_over": self.copies.taken_over,
                # (copy_back.py) held tasks copied to a node that joined; suspected
                # peers noted, and tasks given a backup while one was out
                "copied_to_joiners": self.back.to_joiners, "peers_out": len(self.choice.missed),
                "chosen_while_out": len(self.back.chosen_while),
                # (dead holders' copies that another live holder keeps too: takeover.py)
                "copies_waiting_for_a_drop": sum(len(w) for w in self.copies.waiting.values()),
                **self.disk_copies.status()}
