"""Two copies: each task a node holds, and its result once it finishes, is also kept
on a second node, the task's *backup*, chosen by rendezvous hashing over the alive
members (mesh/rendezvous.py). Then the loss of any one machine, for good, loses no
accepted task and no result, even when the submitter exited long ago.

(This module is the holder's side and the batching: its send, confirm and resend
paths share one in-flight state per backup. Which node is a task's backup is
mesh/node/backup_choice.py; the replies that wait for a copy's confirmation,
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
import dataclasses
import functools
import itertools
import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mesh.membership import MemberState
from mesh.node.backup_choice import ALIVE_TTL as ALIVE_TTL  # (importable from here as before)
from mesh.node.backup_choice import BackupChoice
from mesh.node.component import Component
from mesh.node.copies import Copies, uncount
from mesh.node.copy_back import CopyBack
from mesh.node.copy_gates import COPY_TIMEOUT as COPY_TIMEOUT
from mesh.node.copy_gates import GATE_STAMP as GATE_STAMP
from mesh.node.copy_gates import CopyGates
from mesh.node.disk_copies import DiskCopies
from mesh.node.gossip import boot_of
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.node.naps import Nap
from mesh.node.peers import PeerSockets, routing_id
from mesh.security.text import safe_logger
from mesh.wire.protocol import Replicate, ReplicateAck, Submit, encode

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.replicas")

COPY_DELAY = 0.002       # s a held task waits before its copy is sent (if it finishes
                         # sooner, its result is sent instead: most tasks are short)
RESEND_AFTER = 0.5       # s before an unconfirmed REPLICATE is sent again
COPY_STALL = 10.0        # s a backup not dead may confirm nothing before the results
                         # it has not confirmed stop being sent again (one copy for now)
TICK = 0.1               # s between checks of unconfirmed copies
MEMBERS_EVERY = 1.0      # s between checks of backups and holders against membership
SWEEP_EVERY = 10.0       # s between closing the data sockets of peers membership forgot
SWEEP_FLOOR = 0.5        # ... at least (a short --dead-node-reclaim)
DATA_HWM = 10_000        # frames queued per peer for handoff and replication
BATCH_BYTES = 4 * 1024 * 1024   # bytes of frames in one REPLICATE at most (well under
                                # the message size limit)
SETTLE_STEP = 0.02


@dataclasses.dataclass
class _Batch:
    """What goes to one backup in its next REPLICATE."""
    tasks: dict[str, bytes] = dataclasses.field(default_factory=dict)
    results: dict[str, tuple[str, bytes]] = dataclasses.field(default_factory=dict)
    # id -> the node it was handed to ("": not handed on; Replicate.handed_to)
    drop: dict[str, str] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.results or self.drop)


@dataclasses.dataclass
class _Sent:
    backup: str
    batch: _Batch
    at: float


class Replicas(CopyGates, Component):
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

    # -- sending (end of each loop pass, after the ledger's commit) -------------------
    def flush(self) -> None:
        """Send this pass's REPLICATEs.

        (The backup acknowledges copies once written, in Copies.on_replicate, and
        commits them with the ledger's next commit (within RESULT_COMMIT_DELAY, 2 ms,
        or with the intakes of this pass), as results are: losing an acknowledged copy
        takes its holder and the backup dying within those milliseconds. Committing
        before each acknowledgement cost a sqlite commit per copy batch, a fifth of
        the mesh's throughput.)"""
        if self._out:
            busy = self._busy
            for backup in [b for b in self._out if b not in busy]:
                batch = self._out.pop(backup)
                if batch:
                    self._send(backup, batch)

    def _send(self, backup: str, batch: _Batch) -> None:
        node = self.node
        member = node.membership.member(backup)
        if member is None or member.state != MemberState.ALIVE:
            self._reroute(backup, batch)
            return
        self._unconfirmed_since.setdefault(backup, time.monotonic())
        for part in _split(batch):
            bid = self._prefix + str(next(self._ids))
            results = part.results
            drop = sorted(part.drop)
            handed_to = [part.drop[t] for t in drop]
            msg = Replicate(bid, node.name, node.address, list(part.tasks), list(part.tasks.values()),
                            list(results), [r[0] for r in results.values()],
                            [r[1] for r in results.values()], drop,
                            handed_to if any(handed_to) else [])
            self._sent[bid] = _Sent(backup, part, time.monotonic())
            self.nap.poke()
            self._busy[backup] = bid
            self._boot_of.setdefault(backup, boot_of(member.meta))
            self.copies_sent += len(part.tasks)
            self.sockets.send(member.address, encode(msg))

    def _reroute(self, backup: str, batch: _Batch) -> None:
        """A batch for a backup that is gone: its copies and results go to the tasks'
        new backups; its drops wait until it is alive again (moot if it never is)."""
        if batch.drop:
            self._parked.setdefault(backup, {}).update(batch.drop)
        for tid, frame in batch.tasks.items():
            entry = self.node.ledger.held.get(tid)
            if entry is not None:
                new = self.choice.choose(tid, entry)
                self._track(entry, new)
                if new:
                    self._queue(new).tasks[tid] = frame
                else:
                    self._open(tid)            # nobody to copy to: one copy for now
        moved: dict[str, list[str]] = {}
        now = time.monotonic()
        stalled: dict[str, dict[str, tuple[str, bytes]]] = {}
        for tid, result in batch.results.items():
            new = self.choice.choose(tid)
            if new and self._is_stalled(new, now):
                stalled.setdefault(new, {})[tid] = result    # (the journal names it)
            elif new:
                self._queue(new).results[tid] = result
            else:
                self._open(tid)
            moved.setdefault(new, []).append(tid)
        for new, results in stalled.items():
            self._stalled(new, results, now)
        if moved:
            self.copies.results_moved(moved)

    def on_ack(self, msg: ReplicateAck) -> None:
        sent = self._sent.get(msg.batch)
        if sent is None or sent.backup != msg.node:
            return
        del self._sent[msg.batch]
        self._unconfirmed_since.pop(sent.backup, None)
        if self._busy.get(sent.backup) == msg.batch:
            del self._busy[sent.backup]
            if sent.backup in self._out:
                self.node.front.schedule_flush()     # the next batch for it goes now
        self.copies_confirmed += len(sent.batch.tasks)
        for tid in sent.batch.tasks:
            if tid not in self._result_wait:       # (its result is on the way: wait for it)
                self._open(tid)
        for tid in sent.batch.results:
            self._result_wait.discard(tid)
            self._open(tid)
        if self.disk_copies.inflight:
            self.disk_copies.confirmed(sent.backup, sent.batch.tasks)
        if self.back.moving:
            self.back.confirmed(sent.backup, list(sent.batch.tasks))

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

    def _resend(self, now: float) -> None:
        due = [b for b, s in self._sent.items() if now - s.at > RESEND_AFTER]
        for bid in due:
            sent = self._sent.pop(bid)
            if self._busy.get(sent.backup) == bid:
                del self._busy[sent.backup]
            member = self.node.membership.member(sent.backup)
            if member is not None and member.state == MemberState.ALIVE:
                batch = self._queue(sent.backup)        # same backup, again
                held = self.node.ledger.held
                for tid, frame in sent.batch.tasks.items():
                    entry = held.get(tid)
                    if entry is not None and entry.backup == sent.backup:
                        batch.tasks.setdefault(tid, frame)
                if self._is_stalled(sent.backup, now):
                    self._stalled(sent.backup, sent.batch.results, now)
                else:
                    for tid, result in sent.batch.results.items():
                        batch.results.setdefault(tid, result)
                for tid, to in sent.batch.drop.items():
                    batch.drop.setdefault(tid, to)      # (a newer drop of it says more)
            else:
                self._reroute(sent.backup, sent.batch)
        if due:
            # (its backup is free again: what was queued for it meanwhile, in a batch
            # _queue had made while this one was in flight, goes now, as on_ack does;
            # before, it waited for some other flush, for ever on an idle node)
            self.node.front.schedule_flush()

    def unconfirmed_results(self) -> int:
        """Results in memory for their backups, not confirmed yet (to send or sent)."""
        return sum(len(b.results) for b in self._out.values()) + \
            sum(len(s.batch.results) for s in self._sent.values())

    def _forget_stalls(self) -> None:
        """The time since a backup last confirmed is kept while it is alive or suspected
        (a member that answers probes now and then but never confirms a copy, as the
        hostile soak's made-up ones did, flickers between the two: a stall counted from
        each return to alive never came, and its results went round, kept in memory,
        for ever); forgotten once it is dead, left or unknown (back later, it starts
        afresh)."""
        ms = self.node.membership
        for b in list(self._unconfirmed_since):
            m = ms.member(b)
            if m is None or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
                del self._unconfirmed_since[b]

    def _is_stalled(self, backup: str, now: float) -> bool:
        """``backup`` has confirmed no copy for COPY_STALL (while alive or suspected)."""
        return now - self._unconfirmed_since.get(backup, now) > COPY_STALL

    def _stalled(self, backup: str, results: dict[str, tuple[str, bytes]], now: float) -> None:
        """``backup`` has confirmed no copy for COPY_STALL: the results it did not
        confirm are not sent again (nor kept for it), also when they come back to it
        from a reroute (it was suspected a moment). They stay in one copy
        here; the journal names ``backup`` as their other copy, so its departure
        copies them to another node (Copies.note_departures). Replies waiting for
        them go now. (Held tasks are still sent again: they are held anyway.)"""
        if not results:
            return
        self.results_given_up += len(results)
        for tid in results:
            self._open(tid)
        self._stall_log.warning(
            "backup %s, not dead, confirmed no copy for %.0f s: %d result(s) it did not "
            "confirm stay in one copy here (copied to another node if it goes)",
            backup, now - self._unconfirmed_since.get(backup, now), len(results))

    def check_members(self, now: float) -> None:
        """Backups that are gone are replaced; holders that are gone are taken over."""
        if not self.started:
            return
        node = self.node
        ms = node.membership
        if self.enabled:
            self._say_copies()
            self._forget_stalls()
            alive = set(self.choice.alive_ids())
            self.copies.note_departures(alive)
            boots = {m.id: boot_of(m.meta) for m in ms.alive_members(include_self=False)}
            restarted = {b for b, boot in self._boot_of.items() if b in boots and boots[b] != boot}
            for b in restarted:           # copies are kept in memory: a restarted backup
                del self._boot_of[b]      # has none of them any more
            self.disk_copies.check(alive, restarted,    # nor of the tasks on disk
                                   self.choice.missed)
            # tasks held with one copy ("") look for a backup only when some node is
            # alive: alone, that would walk every held task each second for nothing
            gone = {b for b in self.per_backup
                    if (b not in alive and (b or alive)) or b in restarted}
            if gone:
                self._rebackup(gone, restarted, bool(alive))
            self.back.check(alive)
            if self._parked:
                self._unpark(restarted)
        self.copies.check_holders(now)

    def _rebackup(self, gone: set[str], restarted: set[str], alive: bool) -> None:
        """The held tasks whose backup is in ``gone`` get a new one (one walk of the
        held tasks: a backup is gone seldom)."""
        moved: dict[str, int] = {}
        chosen: set[str] = set()
        for tid, entry in list(self.node.ledger.held.items()):
            old = entry.backup
            if old is None or old not in gone:
                continue
            moved[old] = moved.get(old, 0) + 1
            new = self.choice.choose(tid, entry)
            self._track(entry, new)
            if old and new and old not in restarted and new != old:
                # a backup merely suspected comes back with its copy: dropped then, else
                # it runs the task again when this node is declared dead later, though
                # the task finished here long before (its result went to the new backup).
                # (Not when none replaced it: it gets the task again when it is back.)
                self._parked.setdefault(old, {})[tid] = ""   # (held here: not handed on)
            chosen.add(new)
            if new:
                self._queue(new).tasks[tid] = entry.frame
        for backup in gone:
            if backup not in chosen:     # none left (a count of tasks no longer held goes)
                self.per_backup.pop(backup, None)
            n = moved.get(backup, 0)
            if n and alive:
                log.info("%s: copying %d task(s) to their backups now", "tasks held with "
                         "one copy" if not backup else f"backup {backup} restarted"
                         if backup in restarted else f"backup {backup} is gone", n)

    def _unpark(self, restarted: set[str]) -> None:
        """Drops for backups that were replaced go to those alive again (not for a copy
        they keep as the task's backup now: ``CopyBack.check`` ran first); those gone for
        good, or restarted (their copies went with their memory), are forgotten."""
        ms, held, journal = self.node.membership, self.node.ledger.held, self.node.journal
        for b in list(self._parked):
            m = ms.member(b)
            if m is None or m.state == MemberState.LEFT or b in restarted:
                del self._parked[b]
            elif m.state == MemberState.ALIVE:
                ids = self._parked.pop(b)
                # not one waiting on this node's disk now (it is out of ``held`` there,
                # and its copy may be the one b keeps for it: kept, at worst one copy
                # too many, never one too few)
                drop = {t: to for t, to in ids.items() if (e := held.get(t)) is not None
                        and e.backup != b or e is None and journal.on_disk(t) is None}
                if drop:
                    batch = self._queue(b)
                    for tid, to in drop.items():
                        batch.drop.setdefault(tid, to)     # (a newer drop of it says more)

    def _sweep_every(self) -> float:
        """SWEEP_EVERY, or half of a shorter dead_node_reclaim (at least SWEEP_FLOOR)."""
        reclaim = self.node.membership.config.dead_node_reclaim
        return max(SWEEP_FLOOR, min(SWEEP_EVERY, reclaim / 2))

    def sweep(self) -> int:
        """Close the handoff/copy sockets of peers membership no longer knows (churn
        must not grow file descriptors for ever); how many."""
        known = {m.address for m in self.node.membership.members()}
        gone = [a for a in self.sockets.socks if a not in known]
        for address in gone:
            self.sockets.forget(address)
        return len(gone)

    def _say_copies(self, first: bool = False) -> None:
        alone = not self.choice.alive_ids()
        if alone == self._alone:
            return
        self._alone = alone
        if alone:
            log.log(logging.INFO if first else logging.WARNING,
                    "no other node is alive%s: tasks and results are kept in one copy (on "
                    "this node) until another node joins", " yet" if first else "")
        else:
            log.info("tasks and results are kept in two copies: this node and a backup node")

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


def _split(batch: _Batch) -> list[_Batch]:
    """A batch in parts of at most BATCH_BYTES of frames each."""
    size = sum(len(f) for f in batch.tasks.values()) + \
        sum(len(r[1]) for r in batch.results.values())
    if size <= BATCH_BYTES:
        return [batch]
    parts: list[_Batch] = []
    cur, n = _Batch(drop=dict(batch.drop)), 0
    for tid, frame in batch.tasks.items():
        if n and n + len(frame) > BATCH_BYTES:
            parts.append(cur)
            cur, n = _Batch(), 0
        cur.tasks[tid] = frame
        n += len(frame)
    for tid, result in batch.results.items():
        if n and n + len(result[1]) > BATCH_BYTES:
            parts.append(cur)
            cur, n = _Batch(), 0
        cur.results[tid] = result
        n += len(result[1])
    parts.append(cur)
    return parts

