"""A held task's copy follows the ranking (the holder side; mesh/node/replicas.py).

A holder copies each task to its first-ranked backup: rendezvous hashing over the alive
peers that take it (mesh/node/backup_choice.py). An owner whose holder dies sends its
tasks where the same hashing, over the nodes it sees alive, says their copies are
(mesh/client/members.py), so that the copy there and the resend are one task. When the
ranking changes while a task is held, its copy moves to the node that ranks first now,
or the copy runs at the takeover and the owner's resend runs on the other node too
(twice; three times if the holder was only cut off and runs it as well).

The ranking changes when a peer comes into the alive list:

* **back after a moment out** (suspected, mostly: ``BackupChoice.missed``): the tasks
  given a backup while it was out go back to it, if it ranks first for them. Only
  those (replaced for it, ``Replicas._parked``, or accepted meanwhile,
  ``chosen_while``) are looked at, not every held task: a flapping peer comes back
  often.
* **joining**: a peer alive at a membership check that was neither alive at the last
  one nor noted as suspected: new to this node, or back after it was declared dead or
  left (no longer noted then; its copies may be gone with its process). Every held
  task whose first-ranked backup it is now, and that has another, is copied to it, by
  a walk of the held tasks, ``WALK_CHUNK`` per replicas tick (none when nothing is
  held: a node's first check sees every alive peer as new). Until 2026-12 a joiner got only the copies
  of tasks accepted after it joined: a holder killed soon after a node joined had
  about 1/N of its tasks run twice (tests/integration/test_e2e_joiner.py: 12 of 24).
  The walk costs one rendezvous choice per held task, as accepting it did: measured
  (session 18, the shared 2-core machine, under a test run) 38 ms per 20,000 held tasks
  with 2 peers, 77 ms with 4, 390 ms with 20, in chunks of WALK_CHUNK per tick. A join
  while a walk is under way starts it again from the first task, so under constant
  churn the walk goes on at WALK_CHUNK per tick, no faster.

Either way the task keeps the copy on its old backup until the new one confirmed its
own (``Replicas.on_ack``; or until the task leaves this node first: ``moved_off``);
then the old one is sent a drop. So a task is never in fewer copies while two nodes
are alive; for a moment it is in three. A task on its way to disk (mesh/node/spill.py)
whose copy is moving stays in memory until the new one confirmed: until 2026-12 it
went to disk once its old backup had confirmed, and that one dropped its copy at once,
the new one's not there yet (one copy for a moment; the disk walk healed it if the new
one never confirmed).

The tasks waiting on this node's disk (a deep backlog, mesh/node/spill.py) follow a
joiner by a walk of the disk part (mesh/node/disk_copies.py); the ones read back are
copied to the one ranked first then, the old one dropping its copy once that one
confirmed (``Replicas.read_back``: a moving copy; until 2026-12 the drop went with the
copy, one copy until it was confirmed).

``missed`` holds suspected peers only: one declared dead or left, or no longer known,
is forgotten at the next membership check (back later, it is a joiner, and the walk
covers what it missed), and it holds ``MISSED_MAX`` at most (one beyond is forgotten
the same way). Until 2026-12 a dead peer stayed in it until membership forgot it
(``dead_node_reclaim``, 60 s): every task accepted meanwhile was noted for its return
(``chosen_while``, up to 100,000 ids).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.membership import MemberState
from mesh.node.ledger import Entry
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.node.replicas import Replicas

log = safe_logger("mesh.replicas")

CHOSEN_WHILE_MAX = 100_000   # tasks accepted while a peer was out, looked at on its return
MISSED_MAX = 1_000           # suspected peers noted at most (one beyond: a joiner when back)
WALK_CHUNK = 2_000           # held tasks looked at per replicas tick for joiners


class CopyBack:
    """Moves a held task's copy to the node that ranks first for it now."""

    def __init__(self, replicas: "Replicas"):
        self.replicas = replicas
        # held task -> the backups it had before it went to its first-ranked one
        # (``back_to``): they drop their copies once that one confirmed
        self.moving: dict[str, list[str]] = {}
        # tasks given a backup while a peer was out of the alive list (``choice.missed``):
        # the ones to look at when it is back, CHOSEN_WHILE_MAX at most
        self.chosen_while: set[str] = set()
        self.seen: set[str] = set()               # alive peers at the last check
        self.joined: set[str] = set()             # joiners the walk copies to
        self._walk: list[str] = []                # held ids the walk has still to look at
        self._walked: dict[str, int] = {}         # joiner -> tasks copied to it by this walk
        self.to_joiners = 0                       # figures (status)

    def accepted(self, tid: str) -> None:
        """(A task was given a backup) noted if a peer is out: maybe not its first-ranked."""
        if self.replicas.choice.missed and len(self.chosen_while) < CHOSEN_WHILE_MAX:
            self.chosen_while.add(tid)

    def working(self) -> bool:
        """A walk for joiners under way (the replicas loop ticks)."""
        return bool(self._walk)

    # -- each membership check ----------------------------------------------------------
    def check(self, alive: set[str]) -> None:
        """Peers back in the alive list since the last check: those back after a moment
        out get back the tasks chosen meanwhile; joiners start a walk."""
        replicas = self.replicas
        missed, ms = replicas.choice.missed, replicas.node.membership
        back = missed & alive
        joined = alive - self.seen - missed
        self.seen = set(alive)
        for b in list(missed - back):
            m = ms.member(b)
            if m is None or m.state != MemberState.SUSPECT:
                missed.discard(b)       # dead, left, forgotten: back later, it is a joiner
        while len(missed) > MISSED_MAX:
            missed.pop()                # (the same: not seen alive at the last check either)
        if back:
            missed -= back
            replicas.choice.refresh()   # (a choice from now on sees them alive)
            self._back(back)
        if not missed:
            self.chosen_while.clear()
        held = replicas.node.ledger.held
        if joined and held:
            self.joined |= joined
            self._walk = list(held)     # (again from the start: the new ones see every task)
            replicas.choice.refresh()
            replicas.nap.poke()

    def _back(self, back: set[str]) -> None:
        replicas = self.replicas
        held, choose = replicas.node.ledger.held, replicas.choice.choose
        ids = set(self.chosen_while)
        for b in back:
            ids.update(replicas._parked.get(b, ()))
        moved: dict[str, int] = {}
        for tid in ids:
            entry = held.get(tid)
            if entry is None or entry.backup is None or entry.backup in back:
                continue
            new = choose(tid, entry)
            if new in back:
                self.back_to(entry, new)
                moved[new] = moved.get(new, 0) + 1
        for b, n in moved.items():
            log.info("backup %s is alive again: %d task(s) copied back to it", b, n)

    # -- each replicas tick: the walk for joiners ---------------------------------------
    def tick(self) -> None:
        """Look at the next WALK_CHUNK held tasks: those whose first-ranked backup is a
        joiner, and that have another (not none: ``Replicas._rebackup`` gives those
        theirs), are copied to it."""
        walk = self._walk
        if not walk:
            return
        replicas = self.replicas
        chunk = walk[-WALK_CHUNK:]
        del walk[-WALK_CHUNK:]
        joined = self.joined
        joined &= set(replicas.choice.alive_ids())      # (one gone since: not chosen)
        held, choose, walked = replicas.node.ledger.held, replicas.choice.choose, self._walked
        if joined:
            for tid in chunk:
                entry = held.get(tid)
                if entry is None or not entry.backup:
                    continue
                new = choose(tid, entry)
                if new != entry.backup and new in joined:
                    self.back_to(entry, new)
                    walked[new] = walked.get(new, 0) + 1
        if not walk:
            for b, n in walked.items():
                log.info("node %s joined: %d held task(s) copied to it (it ranks first as "
                         "their backup now; their old backups drop theirs once it has them)",
                         b, n)
                self.to_joiners += n
            walked.clear()
            joined.clear()

    # -- moving one task's copy ---------------------------------------------------------
    def back_to(self, entry: Entry, b: str) -> None:
        """``b`` ranks first now as the backup of this held task, which has another:
        ``b`` is its backup (copied now; back after a moment out, it may have kept its
        old copy), and the other drops its own once ``b`` confirmed (``confirmed``; or
        when the task leaves first, ``moved_off``)."""
        replicas = self.replicas
        tid, old = entry.task_id, entry.backup
        replicas._track(entry, b)
        replicas._queue(b).tasks[tid] = entry.frame
        if old:
            olds = self.moving.setdefault(tid, [])
            if old not in olds:
                olds.append(old)

    def confirmed(self, backup: str, task_ids: list[str]) -> None:
        """(A REPLICATE_ACK from ``backup``) the tasks moving to it are there now: their
        old backups drop theirs."""
        held, moving = self.replicas.node.ledger.held, self.moving
        for tid in task_ids:
            olds = moving.get(tid)
            if olds is not None and (e := held.get(tid)) is not None \
                    and e.backup == backup:     # (its backup's confirmation)
                del moving[tid]
                for old in olds:
                    if old != backup:
                        self.drop_at(old, tid, "")

    def moved_off(self, tid: str, to: str) -> None:
        """A task whose copy was moving left this node (ran, handed on to ``to``, given
        back) before its new backup confirmed: the old ones drop it now."""
        for old in self.moving.pop(tid, ()):
            self.drop_at(old, tid, to)

    def drop_at(self, backup: str, tid: str, to: str) -> None:
        batch = self.replicas._queue(backup)
        batch.tasks.pop(tid, None)
        batch.drop.setdefault(tid, to)
