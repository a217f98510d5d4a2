"""Backups against the membership (a part of :class:`mesh.node.replicas.Replicas`),
checked each ``MEMBERS_EVERY`` s by the loop.

A backup that is no longer alive (suspected too) or that restarted (its ``boot``
changed: the copies it kept in memory went with it) is replaced: the held tasks it kept copies
of get a new backup, each copied there (``_rebackup``; tasks held with one copy get
theirs once some node is alive). A replaced backup merely suspected may come back
with its copies: its drops are parked and sent once it is alive again (``_unpark``).
Also here: the holders that are gone (taken over: mesh/node/takeover.py, through
``Copies``), the data sockets of peers membership forgot (``sweep``), and the log line
that says whether tasks are kept in one copy or two (``_say_copies``).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mesh.membership import MemberState
from mesh.node.gossip import boot_of
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from typing import Any

    from mesh.node.backup_choice import BackupChoice
    from mesh.node.copies import Copies
    from mesh.node.copy_back import CopyBack
    from mesh.node.disk_copies import DiskCopies
    from mesh.node.ledger import Entry
    from mesh.node.node import Node
    from mesh.node.peers import PeerSockets
    from mesh.node.replicas_send import _Batch

log = safe_logger("mesh.replicas")

SWEEP_EVERY = 10.0       # s between closing the data sockets of peers membership forgot
SWEEP_FLOOR = 0.5        # ... at least (a short --dead-node-reclaim)


class ReplicasMembers:
    if TYPE_CHECKING:               # what Replicas has
        node: Node
        enabled: bool
        started: bool
        sockets: PeerSockets
        choice: BackupChoice
        copies: Copies
        disk_copies: DiskCopies
        back: CopyBack
        per_backup: dict[str, int]
        _boot_of: dict[str, Any]
        _parked: dict[str, dict[str, str]]
        _alone: bool | None

        def _queue(self, backup: str) -> _Batch: ...
        def _track(self, entry: Entry, backup: str) -> None: ...
        def _forget_stalls(self) -> None: ...

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
