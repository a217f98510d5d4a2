"""Two copies of a deep backlog's disk part (mesh/node/spill.py), kept up when a
backup is lost.

A task waiting on this node's disk only had its copy confirmed by its backup before
it left memory, and the journal names that backup (``tasks.backup``). The copy is
lost when that backup restarts (it drops the copies its last run kept) or is dead or
left; and a task this node took over onto its disk from a dead holder
(mesh/node/copies.py) had no copy here at all (``''``). Either way the task would
have one copy, this node's journal, until read back. ``DiskCopies`` walks the tasks
on disk in arrival order and copies those to the backup rendezvous hashing picks now
(as their read back would), then records it in the journal.

* A walk starts from the first task on disk when a backup restarts (a new boot id;
  the journal keeps the one its copies were made to, so a restart while this node
  was down counts too), is dead or left, when another node is alive after none was (tasks that went to
  disk while this node was alone), and once ``ORPHAN_AFTER`` after start (a backup
  of the last run that no member knows by then is gone too). Tasks taken over onto
  disk are at the walk's end: it goes on from where it was.
* A row is copied when its backup is ``''``, restarted since the walk began, dead,
  left, or unknown that long; or was seen dead or left when the walk began, even if it
  is alive again by the walk's tick: back as a new process, it dropped the copies (at
  its start), and this node tells a restart only at its next membership check, by the
  boot id (until 2026-12 those rows were skipped then, and a holder lost within that
  second lost them: test_e2e_backlog_recopy, 70 of 500 tasks; a backup back from a
  partition with its copies gets them again, kept as a resend). Not one finished (run
  elsewhere), revoked (``meshnode --purge``; it finishes REVOKED when read back), or in
  memory.
* A node that joins (alive at a membership check, neither alive at the last one nor
  a suspect back: as for the held tasks, mesh/node/copy_back.py) starts a walk too:
  a row whose backup is alive but ranks below a joiner for it (rendezvous weights,
  then ``backup_now`` on its frame) is copied to the joiner, and once the joiner
  confirmed, its old backup is sent a drop. An owner whose holder dies sends its task
  where the ranking says its copy is: with the copy left on the old backup, that one
  ran it at the takeover and the joiner ran it again from the owner's failover (until
  2026-12 such a task kept its old backup until read back).
* Throttled: ``CHUNK`` rows read per tick (0.1 s, the replicas loop), the next chunk
  only once the backups confirmed the last one. The holder keeps a chunk of frames
  at most; the backup journals copies beyond its window (``copies`` table).
* Confirmed copies: the journal names their new backup (``set_backups``), committed
  with the next pass. Unconfirmed after ``RESEND_AFTER``: sent again (to a new
  choice if their backup is no longer alive).
* With no other node alive the walk waits; and while this node, back after a crash,
  waits for the answers about its tasks on disk (mesh/node/reclaim.py). At a stop
  it is not finished: the tasks' copies are made again when this node starts on its
  data dir (the start walk) if their backup is gone by then.

Status: ``recopying_disk`` (a walk under way), ``recopied_from_disk`` (copies made
again since start).
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mesh.exceptions import DecodeError
from mesh.membership import MemberState
from mesh.node.journal import JournalError
from mesh.node.takeover import ORPHAN_AFTER
from mesh.rendezvous import weight
from mesh.security.text import safe_logger
from mesh.wire.protocol import Submit, decode

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.replicas import Replicas

log = safe_logger("mesh.replicas")

CHUNK = 2000            # rows read per tick at most (like TAKE_CHUNK, REPAIR_CHUNK)
RESEND_AFTER = 0.5      # s before unconfirmed copies are sent again
_GONE = (MemberState.DEAD, MemberState.LEFT)


class DiskCopies:
    """The walk over the tasks on disk that copies the lost ones again."""

    def __init__(self, replicas: "Replicas"):
        self.replicas = replicas
        self.walking = False
        self.pos = 0                                # arrival position the walk reached
        self.stale: set[str] = set()                # backups restarted since the walk began
        self.inflight: dict[str, tuple[str, bytes]] = {}   # task id -> (backup, Submit)
        self.sent_at = 0.0
        self.recopied = 0                           # figures (status)
        self._walked = 0                            # copies of this walk
        self._gone: set[str] = set()                # backups seen dead or left
        self._alone = True
        self._since = time.monotonic()
        self._orphans_checked = False
        self._saved: dict[str, str] | None = None   # backup -> boot id, as in the journal
        self._pending: dict[str, str] = {}          # backup -> boot id a walk copies to
        self.joined: set[str] = set()               # joiners this walk moves copies to
        self._seen: set[str] | None = None          # alive peers at the last check
        self._old: dict[str, str] = {}              # task id -> the backup it moves from
        self._to_joiners: dict[str, int] = {}       # joiner -> copies moved to it (this walk)

    @property
    def node(self) -> "Node":
        return self.replicas.node

    def walk(self, from_start: bool = True, stale: Iterable[str] = ()) -> None:
        """Walk the tasks on disk (again from the first, unless ``from_start`` is
        False: rows were added at the end); those whose backup is in ``stale`` are
        copied again too."""
        if not (self.replicas.enabled and self.node.spill.on_disk):   # (--replicas 1: no copies)
            return
        self.stale.update(stale)
        if from_start:
            self.pos = 0
        self.walking = True
        self.replicas.nap.poke()

    def check(self, alive: set[str], restarted: set[str], missed: Iterable[str] = ()) -> None:
        """(Each membership check) what starts a walk: see the module docstring
        (``missed``: suspected peers, not joiners when back)."""
        ms = self.node.membership
        if restarted:
            self.walk(stale=restarted)
        # (not at the first check: every peer is new then, and the walks at start
        # copy what lost its copy)
        joined = alive - self._seen - set(missed) if self._seen is not None else set()
        self._seen = set(alive)
        if joined and self.node.spill.on_disk:
            self.joined |= joined
            self.walk()
        for b in list(self.replicas._boot_of) + list(self._gone):
            m = ms.member(b)
            if m is None or m.state in _GONE:
                if b not in self._gone:
                    self._gone.add(b)
                    # (stale: copied even if it is alive again by the walk's tick, a
                    # new process before its boot id is seen here, which dropped them)
                    self.walk(stale=[b])
            else:
                self._gone.discard(b)
        if alive and self._alone:
            self.walk()
        self._alone = not alive
        if not self._orphans_checked and time.monotonic() - self._since > ORPHAN_AFTER:
            self._orphans_checked = True
            self.walk()
        self._boots(alive)

    def _boots(self, alive: set[str]) -> None:
        """A backup whose boot id is not the one the journal keeps for it restarted
        (also while this node was down): a walk copies to it again, and once that walk
        is over the journal keeps its new boot id."""
        saved = self._saved
        if saved is None:
            try:
                saved = self.node.journal.backup_boots()
            except JournalError as e:
                log.error("journal: cannot read the boot ids of the backups: %s", e)
                saved = {}
            self._saved = saved
        ms, pending = self.node.membership, self._pending
        new: dict[str, str] = {}
        for b in alive.intersection(saved) | alive.intersection(self.replicas._boot_of):
            m = ms.member(b)
            boot = None if m is None else m.meta.get("boot")
            if boot is None:
                continue
            boot = str(boot)
            expected = pending.get(b, saved.get(b))
            if expected is None:
                new[b] = boot                       # first seen: its copies are fresh
            elif expected != boot:
                pending[b] = boot
                self.walk(stale=[b])
        if pending and not self.walking:            # (no walk: nothing on disk)
            new.update(pending)
            pending.clear()
        self._save(new)

    def _save(self, boots: dict[str, str]) -> None:
        if not boots or self._saved is None:
            return
        node = self.node
        try:
            for b, boot in boots.items():
                node.journal.set_backup_boot(b, boot)
        except JournalError as e:
            log.error("journal: cannot record the boot ids of the backups: %s", e)
            return
        self._saved.update(boots)
        node.front.schedule_flush()                 # (committed by that pass)

    def _outranked(self, tid: str, backup: str, joined: set[str]) -> bool:
        """Does a joiner weigh more than ``backup`` for this task (it may rank first
        now: ``backup_now`` on its frame says)?"""
        w = weight(tid, backup)
        return any(weight(tid, j) > w for j in joined if j != backup)

    def _is_lost(self, backup: str, seen: dict[str, bool]) -> bool:
        """Is the copy this backup kept gone?"""
        lost = seen.get(backup)
        if lost is None:
            if not backup or backup in self.stale:
                lost = True
            else:
                m = self.node.membership.member(backup)
                lost = (time.monotonic() - self._since > ORPHAN_AFTER) if m is None \
                    else m.state in _GONE
            seen[backup] = lost
        return lost

    def tick(self, now: float) -> None:
        """(Each replicas tick) resend what is unconfirmed, or copy the next chunk."""
        if self.inflight:
            if now - self.sent_at > RESEND_AFTER:
                self._resend(now)
            return
        node = self.node
        if not self.walking or node.stopping or not self.replicas.choice.alive_ids():
            return                                  # (nobody to copy to: it waits)
        if node.reclaim.disk:
            # back after a crash, its tasks on disk wait for the other nodes' answers
            # (mesh/node/reclaim.py): one that another node holds now is not ours to
            # copy. Copied, it replaced at the backup the copy that node had made of
            # it, as its holder; then that node died, nobody took it over, this node
            # dropped it as held elsewhere, and it never ran (test_e2e_backlog_recopy,
            # 15 of 500 tasks). The walk waits for the answers (seconds at most).
            return
        journal = node.journal
        try:
            rows = journal.disk_walk(self.pos, CHUNK)
            if not rows:
                self._done()
                return
            self.pos = rows[-1][0]
            seen: dict[str, bool] = {}
            going = node.spill.candidates
            joined = self.joined & set(self.replicas.choice.alive_ids())
            due, moving = [], {}
            for p, tid, backup in rows:
                if tid in going:
                    continue
                if self._is_lost(backup, seen):
                    due.append(p)
                elif joined and self._outranked(tid, backup, joined):
                    due.append(p)
                    moving[tid] = backup
            # (not one revoked: --purge at start revokes the tasks on disk, and the
            # members asked dropped their copies; copied again, a backup would run
            # one if this node died before reading it back: nothing told it)
            frames = journal.disk_frames(due, revoked=False) if due else []
        except JournalError as e:
            log.error("journal: cannot read the tasks on disk to copy them again: %s", e)
            return
        for tid, frame in frames:
            self._send(tid, frame, moving.get(tid, ""), joined)
        self.sent_at = now

    def _send(self, tid: str, frame: bytes, old: str = "", joined: set[str] | None = None,
              ) -> None:
        """Copy a task on disk to the backup ranked first now; ``old``: its copy is
        kept there (not lost), moved only to a joiner that ranks first (``joined``)."""
        try:
            msg = decode(frame)
        except DecodeError:
            return                                  # (dropped when read back, said there)
        if type(msg) is not Submit:
            return
        backup = self.replicas.choice.backup_now(tid, msg)
        if old:
            if backup == old or joined is None or backup not in joined:
                return
            self._old[tid] = old
        if backup:
            self.inflight[tid] = (backup, frame)
            self.replicas._queue(backup).tasks[tid] = frame

    def _resend(self, now: float) -> None:
        alive = set(self.replicas.choice.alive_ids())
        for tid, (backup, frame) in list(self.inflight.items()):
            if backup in alive:
                self.replicas._queue(backup).tasks[tid] = frame
            else:
                del self.inflight[tid]
                old = self._old.pop(tid, "")
                if old in alive:
                    continue    # moving to a joiner gone before it confirmed: the old
                                # backup never dropped its copy
                self._send(tid, frame)
        self.sent_at = now

    def confirmed(self, backup: str, task_ids: Iterable[str]) -> None:
        """(A REPLICATE_ACK from ``backup``) these copies are kept there now."""
        inflight = self.inflight
        done = []
        for tid in task_ids:
            sent = inflight.get(tid)
            if sent is not None and sent[0] == backup:
                del inflight[tid]
                done.append((backup, tid))
                old = self._old.pop(tid, "")
                if old and old != backup:           # moved to a joiner: the old drops it
                    self._to_joiners[backup] = self._to_joiners.get(backup, 0) + 1
                    entry = self.node.ledger.held.get(tid)    # (unless read back with
                    if entry is None or entry.backup != old:  # the old as its backup)
                        self.replicas._queue(old).drop[tid] = ""
        if not done:
            return
        node = self.node
        try:
            node.journal.set_backups(done)
        except JournalError as e:
            log.error("journal: cannot record the new backups of tasks on disk: %s", e)
        node.front.schedule_flush()                 # (committed by that pass)
        self.recopied += len(done)
        self._walked += len(done)

    def _done(self) -> None:
        self.walking = False
        self.stale.clear()
        self._save(self._pending)
        self._pending = {}
        moved = sum(self._to_joiners.values())
        if self._walked - moved > 0:
            log.info("copied %d task(s) waiting on disk to their backups again (their "
                     "copies were lost or never made)", self._walked - moved)
        for b, n in self._to_joiners.items():
            log.info("node %s joined: %d task(s) waiting on disk copied to it (it ranks "
                     "first as their backup now; their old backups drop theirs)", b, n)
        self._walked = 0
        self._to_joiners.clear()
        self.joined.clear()

    def status(self) -> dict[str, object]:
        return {"recopying_disk": self.walking or bool(self.inflight),
                "recopied_from_disk": self.recopied}
