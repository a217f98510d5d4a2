"""What the backup does when a node is gone (a mixin of mesh.node.copies.Copies, kept
apart so that copies.py stays about keeping the copies): the copies of a gone holder's
tasks run here, and our results whose other copy a gone node kept are copied again.

* ``check_holders``: a holder declared dead has its copies without a result run here
  (``take_over``). Not one another live holder keeps a copy of here too (in memory or
  on disk): that holder holds the task, and it would run a third time. That copy
  waits (``waiting``, in memory: as rare as the race that made two holders) for the
  other holder's drop: a drop saying it handed the task to the dead holder
  (``Replicate.handed_to``: its drop was late, no live node holds the task) runs it
  here; any other end of the other copy (a result; a drop for another reason: given
  back, its copy moved to another backup; that holder's own takeover) drops it.
  (Until 2026-12 it was dropped at the takeover, and a task handed to a holder that
  died before the giver's drop arrived ran nowhere. Review14's rule ran it whenever
  the other copy went, for any reason, and was backed out after the cluster chaos
  test ran tasks three times with it.) A holder that left is given ``LEFT_GRACE``
  plus its shutdown timeout (gossiped; ours if it does not say) to hand its tasks on
  first, even once the membership has forgotten it (``dead_node_reclaim`` shorter);
  one no member knows,
  ``ORPHAN_AFTER``. The copies on disk are taken over ``TAKE_CHUNK`` at a time (each tick, ``tick``): a
  plain one (priority 0, no eta, no workflow) becomes a task waiting on this node's
  disk (mesh/node/spill.py), read back in order as its queue drains, so a holder's
  deep backlog does not fill the taker's memory either; this node's walk of its
  disk part copies it to this node's backup (mesh/node/disk_copies.py).
* ``note_departures`` / ``repair_some``: when a node that kept the other copy of some
  of our results (our backup, or the holder of a copied result) is gone, those results
  are copied to another node, so that a second loss later loses nothing either; and
  results kept while this node was alone are copied once another node is alive.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mesh.exceptions import DecodeError
from mesh.membership import MemberState
from mesh.node.gossip import shutdown_timeout_of
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry
from mesh.node.reclaim import live_elsewhere
from mesh.security.text import safe_logger
from mesh.wire.protocol import Replicate, Submit, decode
from mesh.workflow.ids import GROUP, REPLACED_BY

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.replicas import Replicas

log = safe_logger("mesh.replicas")

LEFT_GRACE = 15.0        # s (plus its shutdown timeout) before the copies of a holder
                         # that left are run here (it hands its tasks on as it stops)
ORPHAN_AFTER = 30.0      # s before the copies of a holder no member knows are run here
REPAIR_CHUNK = 2000      # results copied again per gone peer per tick, at most
TAKE_CHUNK = 2000        # copies on disk taken over per dead holder per tick, at most


class Takeover:
    # what Copies has, used here (declared in the open, overridden by Copies: mypyc,
    # bench/mypyc_tree.py, takes no ``if TYPE_CHECKING`` in a class body)
    replicas: Replicas
    frames: dict[str, tuple[bytes, float, str]]
    more: dict[str, dict[str, tuple[bytes, float, str]]]
    kept: dict[str, int]
    disk: dict[str, int]
    on_disk: int

    @property
    def node(self) -> Node:
        raise NotImplementedError

    def _count(self, holder: str, n: int) -> None:
        raise NotImplementedError

    def _keep(self, tid: str, copy: tuple[bytes, float, str]) -> None:
        raise NotImplementedError

    def _unkeep(self, tid: str, holder: str | None = None) -> bool:
        raise NotImplementedError

    def holders(self, tid: str) -> list[str]:
        raise NotImplementedError

    def _init_takeover(self) -> None:
        self._gone: dict[str, float] = {}          # holder -> when first seen not alive
        self._left: dict[str, float] = {}          # holder seen left -> its grace (s)
        # results whose other copy was on a node that is gone: peer -> position reached
        self.repairs: dict[str, int] = {}
        self._repaired: dict[str, int] = {}        # peer -> results copied again so far
        self._was_alive: set[str] = set()          # peers seen alive since start
        self._departed: set[str] = set()           # of those, the ones dead or left now
        self.taken_over = 0
        self._taking: dict[str, str] = {}          # holder -> why: disk takeover under way
        # a dead holder's copy that another live holder keeps here too: task id ->
        # holder -> (frame, received), until that holder's drop (``_drops_came``)
        self.waiting: dict[str, dict[str, tuple[bytes, float]]] = {}

    def _drops_came(self, msg: Replicate) -> list[tuple[str, tuple[bytes, float], str]]:
        """(A holder's drops, applied) the waiting copies of these ids (``take_over``):
        once no live holder keeps a copy of the id here any more, the one kept for the
        node the task was handed to runs here if that node is still not alive (due:
        id, copy, holder); back alive, it keeps its copy; every other waiting copy of
        the id goes (the drop's holder holds it still, ran it, gave it back or handed
        it to another node: run here, it would run a third time)."""
        waiting = self.waiting
        hits = [t for t in msg.drop if t in waiting]
        if not hits:
            return []
        to_of = dict(zip(msg.drop, msg.handed_to)) if msg.handed_to else {}
        again = set(msg.task_ids)               # (held by that holder again: copied now)
        due = []
        for tid in hits:
            try:
                if self._held_elsewhere([tid], ""):
                    continue                    # another live holder's copy: its drop decides
            except JournalError as e:
                log.error("journal: cannot look the copies of task %s up: %s", tid, e)
                continue
            copies = waiting.pop(tid)
            to = to_of.get(tid, "")
            copy = copies.get(to) if to and tid not in again else None
            if copy is None:
                continue
            m = self.node.membership.member(to)
            if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                self._keep(tid, (copy[0], copy[1], to))     # (back: it holds the task)
            else:
                due.append((tid, copy, to))
        return due

    def _run_waiting(self, tid: str, copy: tuple[bytes, float], holder: str,
                     giver: str) -> None:
        r = self._take_one(tid, copy[0], copy[1], holder, disk=False)
        self.taken_over += r == 1
        self.node.front.schedule_flush()
        log.warning("node %s handed task %s to node %s, which is gone: %s here (this node "
                    "kept %s's copy until %s's drop came)", giver, tid, holder,
                    "running it" if r == 1 else "it failed" if r == 2 else "held or run here",
                    holder, giver)

    def _wait(self, tid: str, holder: str, frame: bytes, received: float) -> None:
        """A dead ``holder``'s copy of ``tid``, which another live holder keeps here
        too, waits for that holder's drop (``_drops_came``)."""
        self.waiting.setdefault(tid, {})[holder] = (frame, received)

    def _unwait(self, tid: str) -> None:
        """The waiting copies of ``tid`` go (a result, run or held here, reclaimed)."""
        if self.waiting:
            self.waiting.pop(tid, None)

    def _held_elsewhere(self, tids: list[str], holder: str) -> set[str]:
        """The ids of ``tids`` of which a copy is kept here (in memory or on disk) for
        a live holder other than ``holder`` (that holder holds the task). Raises
        JournalError."""
        held = {t for t in tids if self._live_holders(t, holder)}
        if self.on_disk:
            node = self.node
            held.update(t for t, h in node.journal.copy_holders(tids)
                        if live_elsewhere(node, h, holder))
        return held

    def _live_holders(self, tid: str, but: str) -> bool:
        """Is a copy of ``tid`` kept here for a live holder other than ``but`` (which
        holds the task, then)?"""
        return any(live_elsewhere(self.node, h, but) for h in self.holders(tid))

    def take_over(self, holder: str, why: str) -> int:
        """Run here the copies of ``holder``'s tasks that have no result: they are
        this node's tasks from now on. How many (of those in memory: the ones on disk
        follow, ``TAKE_CHUNK`` per tick, ``tick``)."""
        if holder in self.disk and holder not in self._taking:
            self._taking[holder] = why          # (a chunk each tick from now on)
            self.replicas.nap.poke()
        if not self.kept.get(holder, 0):
            return 0
        frames = self.frames                    # (one walk: a holder is gone seldom)
        copies = [(tid, c[0], c[1]) for tid, c in frames.items() if c[2] == holder]
        copies += [(tid, c[0], c[1]) for tid, m in self.more.items()
                   if (c := m.get(holder)) is not None]
        # only this holder's copies; one another live holder keeps here too (in memory,
        # or on disk) is held there (two holders after a race): not run a second time
        # here, it waits for that holder's drop (the module docstring)
        try:
            held = self._held_elsewhere([c[0] for c in copies], holder)
        except JournalError as e:
            log.error("journal: cannot look the copies of %s's tasks up: %s", holder, e)
            return 0                            # (the next check tries again)
        for tid, _, _ in copies:
            self._unkeep(tid, holder)
        self.kept.pop(holder, None)
        taken = failed = 0
        for tid, frame, received in sorted(copies, key=lambda c: c[2]):
            if tid in held:
                self._wait(tid, holder, frame, received)
                continue
            r = self._take_one(tid, frame, received, holder, disk=False)
            self._unwait(tid)                   # (another dead holder's: this one ran)
            taken += r == 1
            failed += r == 2
        self.taken_over += taken
        self.node.front.schedule_flush()
        log.warning("node %s %s: running %d of its task(s) here (this node kept their "
                    "copies)%s%s", holder, why, taken,
                    f"; {failed} failed (acks_late=False or not registered)" if failed else "",
                    f"; {self.disk[holder]} more kept on disk follow" if holder in self.disk
                    else "")
        return taken

    def _take_chunk(self, holder: str) -> None:
        """Up to TAKE_CHUNK of a dead holder's copies on disk become this node's tasks:
        a plain one waits on this node's disk (read back in order as its queue drains),
        the others are held in memory."""
        journal = self.node.journal
        try:
            rows = journal.copies_by_holder(holder, TAKE_CHUNK)
            held: set[str] = set()
            if rows:
                journal.drop_copy_pairs([(r[0], holder) for r in rows])
                # (a copy another live holder keeps here too: that one holds the task)
                held = {t for t, h in journal.copy_holders([r[0] for r in rows])
                        if live_elsewhere(self.node, h, holder)}
        except JournalError as e:
            log.error("journal: cannot take over the copies of %s on disk: %s", holder, e)
            return
        if not rows:
            why = self._taking.pop(holder, "is gone")
            self.on_disk -= self.disk.pop(holder, 0)   # (a count off by some: recounted)
            self.on_disk = max(self.on_disk, 0)
            log.warning("node %s %s: the copies of its tasks this node kept on disk are "
                        "its own tasks now (%d taken over since start)", holder, why,
                        self.taken_over)
            return
        self._count(holder, -len(rows))
        self.disk.setdefault(holder, 0)           # until a read finds none left
        taken = failed = 0
        for tid, frame, received in rows:
            if tid in held or self._live_holders(tid, holder):
                self._wait(tid, holder, frame, received)    # (in memory: as rare as the
                continue                                    # race that made two holders)
            r = self._take_one(tid, frame, received, holder, disk=True)
            self._unwait(tid)
            taken += r == 1
            failed += r == 2
        self.taken_over += taken
        self.node.front.schedule_flush()
        if taken:           # those now on this node's disk get their copy (disk_copies.py)
            self.replicas.disk_copies.walk(from_start=False)
        if failed:
            log.warning("node %s %s: %d of its task(s) kept on disk here failed (acks_late="
                        "False or not registered)", holder, self._taking[holder], failed)

    def _take_one(self, tid: str, frame: bytes, received: float, holder: str,
                  disk: bool) -> int:
        """One copy of a gone holder's task, this node's task now: 1 taken (held, or
        waiting on this node's disk when ``disk`` and it is plain), 2 failed at once,
        0 not taken (unreadable; held or finished here already)."""
        node = self.node
        journal, ledger = node.journal, node.ledger
        if tid in ledger.held:
            return 0
        sub = _submit(frame)
        if sub is None:
            return 0
        task = node.app.tasks.get(sub.name)
        plain = disk and task is not None and task.options.acks_late and not sub.priority \
            and sub.eta is None and "wf" not in sub.headers and REPLACED_BY not in sub.headers
        try:
            if plain:
                if not journal.add_spilled(tid, b"", frame, received):
                    return 0                      # held or finished here already
                spill = node.spill
                spill.on_disk += 1                # its quota, like spill's (Spill.start)
                q = ledger.senders.setdefault(b"", [0, 0])
                q[0] += 1
                q[1] += len(frame)
                return 1
            if not journal.add(tid, b"", frame, time.time()):
                return 0                          # finished here already
        except JournalError as e:     # its holder is gone: it runs from memory here
            log.error("journal: task %s taken over from %s not journalled (it runs from "
                      "memory): %s", tid, holder, e)
        limit = sub.time_limit or (task.options.time_limit if task else None) \
            or node.config.time_limit
        entry = Entry(tid, sub.name, b"", frame, sub.priority, sub.eta, sub.expires,
                      limit, task.options.acks_late if task else True)
        entry.received = received
        if task is None and sub.name != GROUP:     # (a group's coordinator is the node's)
            ledger.held[tid] = entry
            ledger.task_failed(entry, "NotRegistered", f"task {sub.name!r} is not "
                               f"registered on node {node.name}, which took it over")
            return 2
        if not entry.acks_late and REPLACED_BY not in sub.headers:
            # it may have run on the holder: never twice (a replaced task is not run
            # again: its replacement is coordinated)
            ledger.held[tid] = entry
            ledger.task_failed(entry, "WorkerLostError", f"node {holder} died holding task "
                               f"{tid}; it has acks_late=False, so it is not run again")
            return 2
        ledger.accept(entry, sub)
        return 1

    def check_holders(self, now: float) -> None:
        """Holders that are gone (dead; left long ago; unknown for long) are taken over."""
        ms = self.node.membership
        own = self.node.config.shutdown_timeout
        for holder in list(self.kept) + [h for h in self.disk if h not in self.kept]:
            if holder in self._taking:
                continue
            m = ms.member(holder)
            state = m.state if m is not None else None
            if state in (MemberState.ALIVE, MemberState.SUSPECT):
                self._gone.pop(holder, None)
                self._left.pop(holder, None)
                continue
            since = self._gone.setdefault(holder, now)
            if m is not None and state == MemberState.LEFT:     # its grace (its own timeout),
                self._left[holder] = LEFT_GRACE + shutdown_timeout_of(m.meta, own, holder)
            grace = self._left.get(holder)      # kept if the membership forgets it first
            if state == MemberState.DEAD:
                self.take_over(holder, "is dead")
            elif grace is not None and state in (MemberState.LEFT, None):
                if now - since > grace:
                    self.take_over(holder, f"left {grace:.0f} s ago without handing them on")
            elif state is None and now - since > ORPHAN_AFTER:
                self.take_over(holder, "is unknown to the mesh")
            if holder not in self.kept and holder not in self.disk:
                self._gone.pop(holder, None)
                self._left.pop(holder, None)

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

    def kept_alone(self) -> None:
        """A result of ours was kept in one copy (no other node alive when it
        finished): it is copied once one is. (Being alone is not only the departure of
        every peer: a peer merely suspected for a moment leaves none alive either, and
        comes back without having departed; the cluster chaos test lost a result so.)"""
        self.repairs.setdefault("", 0)        # rows after the walk's position: reached
        self.replicas.nap.poke()

    def results_moved(self, moved: Mapping[str, list[str]]) -> None:
        """Results sent to another node than the one the journal names as their other
        copy (that one was gone before it confirmed): the journal says where they went,
        so that a later departure of that node copies them again; those that went
        nowhere ("": none alive) are copied once a node is alive."""
        try:
            for new, tids in moved.items():
                self.node.journal.set_peer(tids, new)
        except JournalError as e:
            log.error("journal: cannot record where results were copied: %s", e)
        if "" in moved:
            self.repairs[""] = 0              # (rows before the walk's position too)

    def repair_some(self) -> None:
        """Copy up to REPAIR_CHUNK results per gone peer to their new backups, while
        fewer than REPAIR_CHUNK results wait for a backup's confirmation: a new backup
        that confirms nothing is not sent every result of the journal at once, kept
        in memory until it is found stalled (replicas_send.COPY_STALL; the hostile soak's
        node sent 39,786 at once to a made-up member just alive, and its RSS kept
        the high-water mark of each such wave)."""
        journal = self.node.journal
        alive = set(self.replicas.choice.alive_ids())
        if not alive:
            return
        for peer, after in list(self.repairs.items()):
            if peer in alive:                       # it came back: its copies are there
                del self.repairs[peer]
                continue
            if self.replicas.unconfirmed_results() >= REPAIR_CHUNK:
                return                              # (a later tick: confirmed or given up)
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
                new = self.replicas.choice.choose(tid)
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
