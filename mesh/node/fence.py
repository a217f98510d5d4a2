"""Fence: a node declared dead while it was only stalled runs none of the queued tasks
its backups took over.

A node whose event loop stops for longer than the membership's suspicion timeout (a
long GC pause, SIGSTOP, a machine loaded past reason) answers no probe meanwhile: its
peers declare it dead, and the backup of each task it holds runs its copy
(mesh/node/takeover.py). When the loop goes on, the node refutes its death and still
holds those tasks: run as they are, each would run twice. (A node restarted after a
crash asks first: mesh/node/reclaim.py. This is the same question, asked by a node
that never stopped.)

So, before it starts any more of them, the node looks at itself:

* the loop stalled: each ``STEP`` s a tick notes when the next look is due at the
  latest (``Pool.fence_at``: now + ``limit``, the profile's shortest suspicion timeout,
  less than any peer needs to declare this node dead); the tick checks it, and so
  do the pool before it starts a task (``Pool.dispatch``) and shedding before it
  hands tasks on. (After SIGSTOP the timers run first: CPython's ``select`` returns
  no event once its timeout has passed, EINTR and PEP 475. After a pause inside a
  callback, a GC pause, the sockets come first: a child's report that its task ended
  would start the next one, and the pool's check is what catches that.)
* or the membership says it refuted news of its own death (``told_dead``: a peer did
  declare it dead, a partition or a loop that ran but slowly), seen at the next tick
  (or at the first one with a member alive or suspected here to ask: a healed
  partition tells the node before its peers, which it declared dead too, are alive
  here again).

Then the fence goes up: every task waiting in the pool (queued, or waiting for its
eta or a retry's countdown) is set aside (``aside``: still held, out of the pool's
queues, so nothing starts them and nothing sheds them), and every member alive or
suspected here is asked about them with a RECLAIM (the returning holder's question,
in rounds of their own: negative numbers), answered as for a restart
(``Reclaimer.answer``): the ids it holds, the results of those it finished, and it
drops the copies of them it kept for this node, so that a takeover that has not
happened yet (the node only suspected there) does not run them later either. Once
every member asked has answered, or ``answer_wait`` s (3.5 s and more for many ids)
have passed, each task set aside is:

* finished elsewhere: its result is stored here too and goes to its owner (which
  gets one result: results are first-wins by id), not run;
* held elsewhere: out of the ledger and the journal, remembered as moved (an owner
  resending it here gets MOVED, and is sent one now), not run; unless that node (or
  another) handed it here since the fence went up (``_handed_here``: its shedder saw
  this node idle, its queue set aside): the handoff is the latest word, it runs here;
* otherwise: copied to its backup again (the members dropped their copies) and
  back in the pool, where it runs here.

A member that does not answer in time leaves the tasks to run here (at least once):
the wait is bounded, and the tasks set aside never wait for longer than that. A node
that begins to stop meanwhile hands them on with the rest of its queue (``release``;
before, a stop right after a stall kept them out of its handoff, and then handed them
to a peer as it exited, unanswered: tests/cluster/test_cluster_rename.py's stalled
node, whose owner waited in vain). Tasks
accepted while the fence is up are not set aside: they came after the stall.

Not helped: a task already running when the node stalled (or sent ahead to a child,
mesh/node/pool_ahead.py) has started; nothing calls it back, and its backup runs it
too (at least once). Nor are the tasks waiting on this node's disk (a deep backlog,
mesh/node/spill.py): they are read back later, and a backup that took them over runs
them too. A node cut off by the network, not stalled, is helped only once it hears
it was declared dead (its tasks may have started meanwhile).
"""
from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING

from mesh import states
from mesh.exceptions import revoked_message
from mesh.membership import Member, MemberState
from mesh.membership.timing import suspicion_timeout
from mesh.node import reclaim
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry
from mesh.security.text import safe_logger
from mesh.wire.protocol import Reclaim, Reclaimed, encode

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.replicas")

STEP = 0.1             # s between the loop's looks at itself
POLL = 0.02            # s between looks at the answers
REASON = "taken over while this node was declared dead"


class Fence:
    """The tasks set aside until the mesh says which of them were taken over."""

    def __init__(self, node: "Node"):
        self.node = node
        self.aside: dict[str, Entry] = {}
        self.limit = 0.0                  # s the loop may stall without a look (0: off)
        # False: a stall of the loop is not looked at, only the membership's news (nodes
        # in one process, mesh.testing.running_node: they stall together, none is
        # declared dead by another for it)
        self.watch_loop = True
        self.round = 0                    # RECLAIM rounds of the fence: -1, -2, ...
        self.answers = reclaim.Answers()
        self._expected = self.answers.expected      # member -> RECLAIMED parts still due
        self._told = 0                    # the membership's told_dead, last seen
        self._up_at = 0.0                 # (monotonic) when the fence last went up
        self._timer: asyncio.TimerHandle | None = None
        self.counts: collections.Counter[str] = collections.Counter()

    def start(self) -> None:
        """(At start, in the loop) the ticks begin."""
        self.node.pool.on_late = self.check
        self._timer = asyncio.get_running_loop().call_later(STEP, self._tick)

    def _tick(self) -> None:
        self._timer = None
        node = self.node
        if not self.limit:
            ms = getattr(node, "membership", None)
            if ms is None:                # (not started yet)
                self._timer = asyncio.get_running_loop().call_later(STEP, self._tick)
                return
            cfg = ms.config
            self.limit = suspicion_timeout(cfg.suspicion_mult, 1, cfg.probe_interval)
            self._told = ms.told_dead
        else:
            self.check()
        if self.watch_loop:
            node.pool.fence_at = time.monotonic() + self.limit
        if not node.stopping:
            self._timer = asyncio.get_running_loop().call_later(STEP, self._tick)

    def check(self) -> None:
        """Did the loop stall past ``limit`` since the last tick, or did this node
        refute its death since the last look? Then the fence goes up (``up``)."""
        node = self.node
        pool = node.pool
        if not self.limit:
            return
        now = time.monotonic()
        late = now - pool.fence_at + self.limit if pool.fence_at and now > pool.fence_at else 0.0
        told = node.membership.told_dead
        if not late and told == self._told:
            return
        if self.watch_loop:
            pool.fence_at = now + self.limit    # (measured from here on)
        if late:
            why = f"this node's loop stalled {late:.1f} s (more than {self.limit:.1f} s)"
        else:
            why = "this node was declared dead by another node"
        if self.up(why) is not None:
            # (the news is spent once a member could be asked: a healed partition, where
            # this node declared its peers dead too, tells it before they are alive here
            # again; spent then, the fence never went up and it ran what they took over)
            self._told = told

    def up(self, why: str) -> int | None:
        """Set the tasks waiting in the pool aside and ask the members alive here which
        of them they took over; how many were set aside (0: none), None when no other
        member is alive or suspected here to ask."""
        node = self.node
        if self.aside or node.stopping or not node.replicas.enabled:
            return 0
        peers = [m for m in node.membership.members()[1:]
                 if m.state in (MemberState.ALIVE, MemberState.SUSPECT)]
        pool = node.pool
        entries = [item[2] for item in sorted(pool.queue)]
        if not peers:
            return None
        if not (entries or pool.scheduled):
            return 0
        for entry in pool.scheduled.values():
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            entries.append(entry)
        pool.scheduled.clear()
        pool.discard({id(e) for e in entries})
        self.aside = {e.task_id: e for e in entries}
        self._up_at = time.monotonic()
        self.round -= 1
        ids = list(self.aside)
        self._ask(peers, ids)
        wait = reclaim.answer_wait(len(ids))
        self.counts["raised"] += 1
        log.warning("%s: its %d queued task(s) wait until %d other node(s) say which of "
                    "them they took over (%.1f s at most)", why, len(ids), len(peers), wait)
        node.spawn(self._wait(wait), name="fence")
        return len(ids)

    def _ask(self, peers: list[Member], ids: list[str]) -> None:
        node = self.node
        for m in peers:
            for s in range(0, len(ids), reclaim.CHUNK):
                frame = encode(Reclaim(node.name, node.address, self.round,
                                       ids[s:s + reclaim.CHUNK]))
                node.replicas.sockets.send(m.address, frame)
                self._expected[m.id] = self._expected.get(m.id, 0) + 1

    async def _wait(self, wait: float) -> None:
        try:
            deadline = time.monotonic() + wait
            ms = self.node.membership
            while self._expected and self.aside and time.monotonic() < deadline:
                for mid in list(self._expected):      # (one gone meanwhile answers nothing)
                    m = ms.member(mid)
                    if m is None or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
                        del self._expected[mid]
                if self._expected:
                    await asyncio.sleep(POLL)
            if self._expected and self.aside:
                log.warning("no answer from %s within %.1f s: the queued tasks they may have "
                            "taken over run here too (at least once)",
                            ", ".join(sorted(self._expected))[:300], wait)
        finally:
            self._settle()

    def on_answer(self, msg: Reclaimed) -> None:
        """(Reclaimer.on_reclaimed) a member's answer, for the round under way."""
        if msg.round != self.round or msg.source not in self._expected:
            return            # late, or from a node not asked
        self.answers.note(msg, self.aside)

    def release(self) -> list[Entry]:
        """(The node stops) the tasks set aside, for the stop's handoff with the rest of
        the queue (given away as any queued task: the wait for the answers ends)."""
        aside, self.aside = self.aside, {}
        return [e for t, e in aside.items() if self.node.ledger.held.get(t) is e]

    def take(self, task_id: str, entry: Entry | None = None) -> Entry | None:
        """Take ``task_id`` out of the tasks set aside (``entry``: only if it is that
        one): another node holds it now by a handoff's answer, or it goes on to one
        (mesh/node/handoff.py, handoff_cut.py); the fence's answers no longer decide it.
        The entry, None if it was not set aside."""
        e = self.aside.get(task_id)
        if e is None or (entry is not None and e is not entry):
            return None
        del self.aside[task_id]
        return e

    def holds(self, task_id: str) -> bool:
        """Is ``task_id`` set aside here (a member that asks about it is not told it is
        held here: both ask, and both run it rather than neither)."""
        return task_id in self.aside

    def _settle(self) -> None:
        node = self.node
        ledger, journal, front, pool = node.ledger, node.journal, node.front, node.pool
        aside, self.aside = self.aside, {}
        held, results = self.answers.take()
        if not aside:
            return                          # (released: the node stops)
        moved: dict[tuple[bytes, str], list[str]] = {}
        finished = here = 0
        revoked = node.control.revoked
        for tid, entry in aside.items():
            if ledger.held.get(tid) is not entry:
                continue                    # (finished or given away meanwhile)
            got, where = results.get(tid), held.get(tid)
            state = reclaim.final_state(tid, got[1]) if got is not None else None
            if state is not None and got is not None:
                watchers = ledger.watchers.pop(tid, ())
                ledger.forget([entry], got[0])
                try:
                    journal.finish(tid, state, got[1], time.time(), got[0])
                except JournalError as e:
                    log.error("journal: the result of task %s, run on %s, was not stored "
                              "here: %s", tid, got[0], e)
                for ident in {entry.client, *watchers} - {b""}:
                    front.reply(ident, got[1])
                finished += 1
            elif where is not None and not self._handed_here(tid):
                ledger.forget([entry], where)
                moved.setdefault((entry.client, where), []).append(tid)
            elif tid in revoked:            # (revoked while set aside: never started)
                ledger.task_failed(entry, "TaskRevokedError", revoked_message(tid, entry.name),
                                   states.REVOKED)
            else:
                here += 1
                node.replicas.updated(entry)   # (the members dropped their copies)
                if node.stopping:
                    node.handoff.give_away([entry])
                else:
                    pool.submit(entry, dispatch=False)
        n_moved = reclaim.tell_moved(node, moved, REASON)
        self.counts["finished_elsewhere"] += finished
        self.counts["held_elsewhere"] += n_moved
        self.counts["run_here"] += here
        ledger.commit()
        front.schedule_flush()
        pool.dispatch()
        log.warning("of %d queued task(s) set aside, %d finished on another node and %d are "
                    "held by another node: not run here; %d run here", len(aside), finished,
                    n_moved, here)

    def _handed_here(self, task_id: str) -> bool:
        """Was ``task_id`` handed to this node since the fence went up (held here, the
        handoff took it: Handoffs.taken_at)? Then the handoff is the
        latest word, whatever its giver answered before it (held: an idle-looking node
        is shed to), as for a restart (Reclaimer.handed_here): the giver forgot it at
        this node's answer. Settled as held elsewhere, no node had it."""
        taken = self.node.handoff.taken_at(task_id)
        return taken is not None and taken >= self._up_at

    def status(self) -> dict[str, int]:
        return {"fence_raised": self.counts["raised"],
                "fence_waiting": len(self.aside),
                "fence_finished_elsewhere": self.counts["finished_elsewhere"],
                "fence_held_elsewhere": self.counts["held_elsewhere"],
                "fence_run_here": self.counts["run_here"]}
