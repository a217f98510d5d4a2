"""The backup side of the two copies (mesh/node/replicas.py is the holder side).

This node keeps copies of tasks other nodes hold, and the results of those tasks:

* ``on_replicate``: task copies are kept in memory (``frames``), up to a window of
  ``queue_memory`` (``--queue-memory``) of them; beyond it, in the journal's
  ``copies`` table (mesh/node/copy_journal.py), with only a count per holder in
  memory (a deep backlog on a holder costs its backup disk, not memory). Results go
  to the journal (``Journal.copy_result``, expiring like our own). Acknowledged as soon as
  they are written (not at the end of the loop pass: a commit timer due in the same
  pass would run first, on the holder's owner's wait); the journal commits with the
  node's next commit, within 2 ms. Copies from a holder this node has declared dead (late, after a
  partition) are not kept: it sends them again once it is alive again.
* A copy of a task this node holds itself (its owner sent it here when its holder
  died; or this node is handing it to that holder, which copies it here before it
  answers: then it is the only other copy) is kept, never run as a copy; it goes
  when the task runs here (``forget_copy``) or goes to a node other than that holder
  (``handed_on``).
* Copies are kept per task id *and holder*: two nodes may both hold one id (a handoff
  given up on and answered late, or whose receiver crashed before answering and
  came back; a takeover of a holder declared dead that was not; an owner's resend to
  another node), and with the same backup (the id's highest-ranked node other than
  each of them: most often the same one), each has its copy here. A holder's drop,
  reclaim or takeover takes only its own copy: until 2026-12 a second holder's copy
  replaced the first's, and its drop (a handoff on, a reclaim after its restart)
  then left the first holder's task with no copy anywhere, lost with its machine.
  A result, from either, replaces every copy of the id (results are first-wins by
  id: a task run by both is delivered once). The second holder's copy is kept
  apart (``more``), so the one-holder case costs what it did.
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
  first, even once the membership has forgotten it (``dead_node_reclaim`` shorter); one no member knows,
  ``ORPHAN_AFTER``. The copies on disk are taken over ``TAKE_CHUNK`` at a time (each tick, ``tick``): a
  plain one (priority 0, no eta, no workflow) becomes a task waiting on this node's
  disk (mesh/node/spill.py), read back in order as its queue drains, so a holder's
  deep backlog does not fill the taker's memory either; this node's walk of its
  disk part copies it to this node's backup (mesh/node/disk_copies.py).
* At start, the copies left on disk by this node's last run are dropped, as the
  ones in its memory are lost: a holder copies its held tasks again when it sees this
  node's new boot id, and sends nothing more for the old copies (a result while this
  node was down went to another node or none), so kept ones could run a task again
  long after it finished elsewhere. (A holder's tasks waiting on its disk are copied
  again by its walk of them: mesh/node/disk_copies.py.)
* A holder that restarts (its boot id changes) needs nothing here: its copies, in
  memory or on disk, stay and are replaced as it copies its recovered tasks again
  and reads its disk part back; its results drop them.
* ``note_departures`` / ``repair_some``: when a node that kept the other copy of some
  of our results (our backup, or the holder of a copied result) is gone, those results
  are copied to another node, so that a second loss later loses nothing either; and
  results kept while this node was alone are copied once another node is alive.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from mesh import states
from mesh.exceptions import DecodeError
from mesh.membership import MemberState
from mesh.node.gossip import shutdown_timeout_of
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.node.reclaim import live_elsewhere
from mesh.security.text import safe_logger
from mesh.wire.protocol import Replicate, ReplicateAck, Submit, decode, encode
from mesh.workflow.plan import GROUP, REPLACED_BY

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.replicas import Replicas

log = safe_logger("mesh.replicas")

LEFT_GRACE = 15.0        # s (plus its shutdown timeout) before the copies of a holder
                         # that left are run here (it hands its tasks on as it stops)
ORPHAN_AFTER = 30.0      # s before the copies of a holder no member knows are run here
REPAIR_CHUNK = 2000      # results copied again per gone peer per tick, at most
TAKE_CHUNK = 2000        # copies on disk taken over per dead holder per tick, at most


class Copies:
    """What this node keeps for other nodes, and what it does when they are gone."""

    def __init__(self, replicas: "Replicas"):
        self.replicas = replicas
        # task id -> (Submit, received, holder): one record per copy (the float and the
        # holder's name shared by a REPLICATE's copies), not three dict and set entries
        self.frames: dict[str, tuple[bytes, float, str]] = {}
        # copies of an id in ``frames`` for other holders too (rare: two nodes that
        # both hold it): task id -> holder -> copy
        self.more: dict[str, dict[str, tuple[bytes, float, str]]] = {}
        self.kept: dict[str, int] = {}             # holder -> its copies in memory
        self.holder_of = Holders(self.frames)     # task id -> a holder (a view)
        self._gone: dict[str, float] = {}          # holder -> when first seen not alive
        self._left: dict[str, float] = {}          # holder seen left -> its grace (s)
        # results whose other copy was on a node that is gone: peer -> position reached
        self.repairs: dict[str, int] = {}
        self._repaired: dict[str, int] = {}        # peer -> results copied again so far
        self._was_alive: set[str] = set()          # peers seen alive since start
        self._departed: set[str] = set()           # of those, the ones dead or left now
        self.taken_over = 0
        self.window = 0                            # copies kept in memory; 0: all of them
        self.disk: dict[str, int] = {}             # holder -> copies on disk (journal)
        self.on_disk = 0                           # their sum
        self._forget: set[str] = set()             # ids whose copy on disk may go (tick)
        self._taking: dict[str, str] = {}          # holder -> why: disk takeover under way
        # a dead holder's copy that another live holder keeps here too: task id ->
        # holder -> (frame, received), until that holder's drop (``_drops_came``)
        self.waiting: dict[str, dict[str, tuple[bytes, float]]] = {}
        self._badlog = _RateLimitedLog("refused copies")
        self._deadlog = _RateLimitedLog("copies from dead holders", burst=3)

    @property
    def node(self) -> "Node":
        return self.replicas.node

    def start(self) -> None:
        """(The replicas component starts) the window; no copy from a last run."""
        journal = self.node.journal
        self.window = self.node.config.queue_memory if journal.spills else 0
        try:
            n = journal.clear_copies()
        except JournalError as e:
            log.error("journal: cannot drop the copies kept on disk before this start: %s", e)
            n = 0
        if n:
            log.info("journal: dropped %d copie(s) of other nodes' tasks kept on disk before "
                     "this start (their holders copy their held tasks here again)", n)

    def _count(self, holder: str, n: int) -> None:
        c = self.disk.get(holder, 0) + n
        if c > 0:
            self.disk[holder] = c
        else:
            self.disk.pop(holder, None)
        self.on_disk = max(self.on_disk + n, 0)

    def per_holder(self) -> dict[str, int]:
        """Holder -> the copies of its tasks kept here, in memory and on disk."""
        out = dict(self.kept)
        for holder, n in self.disk.items():
            out[holder] = out.get(holder, 0) + n
        return out

    def has(self, tid: str) -> bool:
        """Is a copy of this task kept here (in memory or on disk)?"""
        if tid in self.frames:
            return True
        if not self.on_disk or tid in self._forget:
            return False
        try:
            return bool(self.node.journal.copy_holders([tid]))
        except JournalError as e:
            log.error("journal: cannot look a copy up: %s", e)
            return False

    def in_memory(self) -> int:
        """How many copies are kept in memory."""
        return len(self.frames) + sum(len(m) for m in self.more.values()) + \
            sum(len(w) for w in self.waiting.values())

    def _drop_on_disk(self, ids: list[str], holder: str | None = None) -> None:
        """These ids' copies on disk go (a result, a drop, run or held here); with
        ``holder``, only those kept for that holder (its drop)."""
        if not ids or not self.on_disk:
            return
        journal = self.node.journal
        gone = journal.drop_copies(ids) if holder is None else \
            journal.drop_copy_pairs([(t, holder) for t in ids])
        for _tid, h in gone:
            self._count(h, -1)

    def _flush_forgets(self) -> None:
        if self._forget:
            ids = list(self._forget)
            self._forget.clear()
            self._drop_on_disk(ids)

    def on_replicate(self, msg: Replicate) -> None:
        """Copies from a holder: kept in memory (see the module docstring), results
        journalled; acknowledged at once."""
        node = self.node
        member = node.membership.member(msg.source)
        if member is None and msg.source != node.name:
            # a node (re)started a moment ago copies before membership here has heard
            # of it: not acknowledged, so it sends them again once it is a member
            self._badlog.info("copies from %r at %r wait: not a member here yet",
                              msg.source[:100], msg.source_addr[:100])
            return
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
        journal, now, source = node.journal, time.time(), sys.intern(msg.source)
        due: list[tuple[str, tuple[bytes, float], str]] = []
        try:
            self._flush_forgets()                 # (older than these copies)
            # (drops are older than the copies sent with them.) A drop takes only a copy
            # kept for its sender: a task handed on by the sender, copied here by the
            # node it went to (or that handed it back), is that node's copy now
            unkeep = self._unkeep
            drop = [t for t in msg.drop if not unkeep(t, source)]
            window, frames = self.window, self.frames
            self._drop_on_disk(drop, source)
            if self.waiting:
                due = self._drops_came(msg)
            # copies already on disk stay there (a resend, a retry's new Submit)
            there = {t for t, h in journal.copy_holders(msg.task_ids) if h == source} \
                if self.on_disk else set()
            rows: list[tuple[str, str, bytes, float]] = []
            for tid, frame in zip(msg.task_ids, msg.tasks):
                # kept even when this node holds the task too: it may be handing it to
                # that holder, which copies it here before it answers the handoff (in
                # a two-node mesh the giver is always the receiver's backup); then it
                # is the only other copy. One held here is never run as a copy
                # (``take_over``), and goes when it runs here or goes elsewhere.
                if window and (tid in there or (tid not in frames
                                                and len(frames) >= window)):
                    rows.append((tid, source, frame, now))     # beyond the window: on disk
                    continue
                self._keep(tid, (frame, now, source))
            if rows:
                journal.keep_copies(rows)
                for tid, _, _, _ in rows:
                    if tid not in there:
                        self._count(source, 1)
            ready = states.READY_STATES
            results = [(tid, state, frame, now, source) for tid, state, frame
                       in zip(msg.result_ids, msg.result_states, msg.results) if state in ready]
            if results:
                journal.copy_results(results)
                for row in results:           # (every holder's copy: the task is done)
                    unkeep(row[0])
                    self._unwait(row[0])
                if self.on_disk:
                    self._drop_on_disk([r[0] for r in results])
        except JournalError as e:
            log.error("journal: copies from %s were not kept: %s", msg.source, e)
            return            # not acknowledged: the holder sends them again
        finally:
            for tid, copy, holder in due:     # (out of ``waiting`` now: also on an error)
                self._run_waiting(tid, copy, holder, msg.source)
        if journal.in_tx:     # committed by this pass's flush (within RESULT_COMMIT_DELAY):
            node.front.schedule_flush()     # nothing else may flush an idle node soon
        self.replicas.sockets.send(msg.source_addr, encode(ReplicateAck(msg.batch, node.name)))

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

    def _keep(self, tid: str, copy: tuple[bytes, float, str]) -> None:
        """Keep ``copy`` (frame, received, holder) of ``tid``, over its holder's older one."""
        frames, holder = self.frames, copy[2]
        old = frames.get(tid)
        if old is None or old[2] == holder:
            frames[tid] = copy
            if old is not None:
                return
        else:                                 # another holder's copy is there: both kept
            more = self.more.setdefault(tid, {})
            fresh = holder not in more
            more[holder] = copy
            if not fresh:
                return
        self.kept[holder] = self.kept.get(holder, 0) + 1

    def holder(self, tid: str) -> str | None:
        """A holder whose copy of ``tid`` this node keeps in memory, if any."""
        return self.holder_of.get(tid)

    def holders(self, tid: str) -> list[str]:
        """Every holder whose copy of ``tid`` this node keeps in memory."""
        copy = self.frames.get(tid)
        if copy is None:
            return []
        more = self.more.get(tid) if self.more else None
        return [copy[2], *more] if more else [copy[2]]

    def forget_copy(self, tid: str) -> None:
        """The task is this node's own now (handed here), or it ran here: no longer a
        copy. (One on disk goes at the next tick or REPLICATE, with others: this is
        called for every task that finishes here. Until then a takeover skips it: it
        is in this node's journal.) Every holder's copy goes."""
        if tid in self.frames:
            self._unkeep(tid)
        self._unwait(tid)
        if self.on_disk:
            self._forget.add(tid)

    def handed_on(self, tid: str, to: str | None) -> None:
        """A task this node held went to node ``to`` (None: back to its owner). A copy
        of it kept here for another holder goes too, unless ``to`` is that holder (it
        holds the task again, with this node as its backup). Kept, it would run here
        when that holder is declared dead, while the node it went to runs it too: the
        owner sends a dead holder's task to its backup, which may shed it on (a third
        run after a partition: holder, backup's receiver, backup)."""
        for holder in self.holders(tid):
            if holder != to:
                self._unkeep(tid, holder)
        self._unwait(tid)
        if self.on_disk:
            try:
                for _tid, holder in self.node.journal.copy_holders([tid]):
                    if holder != to:
                        self._drop_on_disk([tid], holder)
            except JournalError as e:
                log.error("journal: cannot drop the copy of task %s: %s", tid, e)

    def reclaim(self, asker: str, ids: list[str]) -> set[str]:
        """A holder back after a crash (``asker``: mesh/node/reclaim.py) holds these ids
        again: the copies of them kept here for a holder that is gone (or for the asker)
        go, so no takeover runs them too (the asker copies them again as it runs them).
        The ids whose copy is kept for another live holder, which stays (that holder
        may hold them, or may have handed them to the asker: its copy goes with its
        drop; the reclaim is not answered "held" for these, the holder answers)."""
        node = self.node
        others: set[str] = set()
        for tid in ids:
            self._unwait(tid)                # (the asker holds it again)
            for holder in self.holders(tid):
                if live_elsewhere(node, holder, asker):
                    others.add(tid)          # (its copy stays: that holder's drop takes it)
                else:
                    self._unkeep(tid, holder)
        if self.on_disk:
            try:
                gone: list[tuple[str, str]] = []
                for tid, holder in node.journal.copy_holders(ids):
                    if live_elsewhere(node, holder, asker):
                        others.add(tid)
                    else:
                        gone.append((tid, holder))
                for _tid, holder in node.journal.drop_copy_pairs(gone):
                    self._count(holder, -1)
            except JournalError as e:
                log.error("journal: cannot drop the copies a returning holder reclaims: %s", e)
        return others

    def _unkeep(self, tid: str, holder: str | None = None) -> bool:
        """The copy of ``tid`` kept in memory for ``holder`` goes (None: every
        holder's); was there one?"""
        frames = self.frames
        copy = frames.get(tid)
        if copy is None:
            return False
        more = self.more.pop(tid, None) if self.more else None
        if holder is None:
            del frames[tid]
            uncount(self.kept, copy[2])
            for h in more or ():
                uncount(self.kept, h)
            return True
        if copy[2] == holder:
            if more:                            # another holder's copy takes its place
                frames[tid] = more.popitem()[1]
            else:
                del frames[tid]
        elif more is None or more.pop(holder, None) is None:
            if more:
                self.more[tid] = more
            return False
        if more:
            self.more[tid] = more
        uncount(self.kept, holder)
        return True

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

    def tick(self) -> None:
        """(Each replicas tick) copies on disk of tasks run here go; dead holders'
        copies on disk are taken over, a chunk each."""
        try:
            self._flush_forgets()
        except JournalError as e:
            log.error("journal: cannot drop copies on disk: %s", e)
        for holder in list(self._taking):
            self._take_chunk(holder)

    def working(self) -> bool:
        """Work for the replicas loop's ticks: repairs, takeovers, drops on disk."""
        return bool(self.repairs or self._taking or self._forget)

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
                self._left[holder] = LEFT_GRACE + shutdown_timeout_of(m.meta, own)
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
        in memory until it is found stalled (replicas.COPY_STALL; the hostile soak's
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


class Holders(Mapping[str, str]):
    """Task id -> the holder whose copy of it is kept in memory: a view of
    ``Copies.frames`` (no dict of its own)."""

    def __init__(self, frames: dict[str, tuple[bytes, float, str]]):
        self._frames = frames

    def __getitem__(self, tid: str) -> str:
        return self._frames[tid][2]

    def __contains__(self, tid: object) -> bool:
        return tid in self._frames

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


def uncount(counts: dict[str, int], key: str) -> None:
    """One less of ``key`` (gone from ``counts`` at none)."""
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


def _submit(frame: bytes) -> Submit | None:
    try:
        msg = decode(frame)
    except DecodeError as e:
        log.warning("dropped a copy that does not decode: %s", e)
        return None
    return msg if type(msg) is Submit else None
