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
* At start, the copies left on disk by this node's last run are dropped, as the
  ones in its memory are lost: a holder copies its held tasks again when it sees this
  node's new boot id, and sends nothing more for the old copies (a result while this
  node was down went to another node or none), so kept ones could run a task again
  long after it finished elsewhere. (A holder's tasks waiting on its disk are copied
  again by its walk of them: mesh/node/disk_copies.py.)
* A holder that restarts (its boot id changes) needs nothing here: its copies, in
  memory or on disk, stay and are replaced as it copies its recovered tasks again
  and reads its disk part back; its results drop them.

What this node does when a node is gone (a dead holder's copies run here, the
takeover; our results whose other copy a gone node kept are copied again) is
mesh/node/takeover.py's, a part of ``Copies``.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from mesh import states
from mesh.membership import MemberState
from mesh.node.journal import JournalError
from mesh.node.ledger import _RateLimitedLog
from mesh.node.reclaim import live_elsewhere
from mesh.node.takeover import Takeover
from mesh.security.text import safe_logger
from mesh.wire.protocol import Replicate, ReplicateAck, encode

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.replicas import Replicas

log = safe_logger("mesh.replicas")


class Copies(Takeover):
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
        self._init_takeover()                      # gone holders, results copied again
        self.window = 0                            # copies kept in memory; 0: all of them
        self.disk: dict[str, int] = {}             # holder -> copies on disk (journal)
        self.on_disk = 0                           # their sum
        self._forget: set[str] = set()             # ids whose copy on disk may go (tick)
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
