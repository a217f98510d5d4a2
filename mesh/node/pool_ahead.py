"""Tasks sent ahead (a part of :class:`mesh.node.pool.Pool`): batched dispatch to
children when the queue is deep and the tasks are short (docs/performance.md).

A child asks for work by having a free slot, and the node answers each ChildDone
with the next task: one round trip through the node's loop per task, during which the
child waits. When more tasks wait than there are children, a prefork or solo child
that runs a plain task may also be sent up to ``AHEAD_MAX`` more, behind it, in one
write: it starts each as soon as the one before it ends, and its results come back
in bursts, so the node handles several per loop pass. Only tasks that are safe to
hand over early go ahead:

- a plain task (not ``async def``), ``acks_late`` (its journal row says RECEIVED
  until it ends), not a workflow's step, behind a child running a plain task;
- of a name whose last ``SHORT_RUNS`` runs each took under ``SHORT_TASK`` seconds,
  and behind a running task of such a name, so a short task never waits long behind
  a long one;
- only while, after it is taken, at least as many tasks still wait in the queue as
  there are children: a child that frees up always finds queued work, never waits
  for tasks sent ahead elsewhere.

A task sent ahead has not started: the node moves it to ``running`` (started, its
hard time limit armed, task-started sent) when the ChildDone of the task before it
arrives, which is when the child starts it. If the child goes away first (retires
after max tasks or memory, is killed for a time limit or revoke --terminate, or
dies), the tasks still ahead of it never started: they go back to the queue in their
order (at shutdown, to their owners, as every unstarted task). A revoke of a task
sent ahead is sent to the child as a *skip* (a tagged frame): the child looks for
skips before it starts a task sent ahead, and reports a skipped one as REVOKED
without running it; if it had already started it, the skip comes too late and the
task ends as a running one does.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from mesh.exceptions import revoked_message
from mesh.node.channel import AHEAD_TAG, SKIP_TAG
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.node.child import StopFlags
    from mesh.node.ledger import Entry
    from mesh.node.naps import Nap
    from mesh.node.pool_child import ChildProc, PoolEvents

log = safe_logger("mesh.pool")

AHEAD_MAX = 4          # tasks a child may have been sent behind the one it runs
SHORT_TASK = 0.005     # s: a run under this is short
SHORT_RUNS = 8         # runs in a row, each short, before a name's tasks may go ahead

QueueItem = tuple[int, int, "Entry"]


class PoolAhead:
    if TYPE_CHECKING:               # what Pool has
        threaded: bool
        stopping: bool
        events: PoolEvents
        children: dict[bytes, ChildProc]
        squeue: list[QueueItem]
        stop_flags: StopFlags
        waiting: Nap

        def _send(self, child: ChildProc, *frames: bytes) -> None: ...
        def _admit(self, entry: Entry) -> bool: ...
        def _arm(self, child: ChildProc, entry: Entry) -> None: ...

    ahead_max = AHEAD_MAX        # 0: every task waits in the node's queue for a free slot
    ahead_count = 0              # tasks sent ahead, not started
    sent_ahead = 0               # since start (stats)
    _short: dict[str, int]       # task name -> its last runs in a row that were short

    def _init_ahead(self) -> None:
        self._short = {}

    # -- sending ahead ----------------------------------------------------------------
    def _prefetch(self, out: dict[ChildProc, list[bytes]]) -> None:
        """After every free slot got a task: send queued ones ahead, one per eligible
        child in turn, while the queue stays at least as long as there are children.
        Their frames go in ``out``, after any task just launched on the same child
        (``Pool.dispatch`` sends each child's in one write)."""
        sq = self.squeue
        n = len(self.children)
        if len(sq) <= n or self.threaded or self.stopping or not self.ahead_max:
            return
        short = self._short
        kids = [c for c in self.children.values()
                if c.open and c.sync_running == 1 and not c.async_ids
                and len(c.ahead) < self.ahead_max
                and short.get(next(iter(c.running.values())).name, 0) >= SHORT_RUNS]
        if not kids:
            return
        while kids and len(sq) > n:
            entry = sq[0][2]
            if (not entry.acks_late or entry.wf is not None
                    or short.get(entry.name, 0) < SHORT_RUNS):
                break                       # the next to start may not go ahead: none does
            item = heapq.heappop(sq)
            if not self._admit(entry):      # expired, or its rate limit says later
                continue
            c = kids.pop(0)
            c.ahead.append(item)
            self.ahead_count += 1
            self.sent_ahead += 1
            frames = out.get(c)
            if frames is None:
                out[c] = frames = []
            frames += (AHEAD_TAG + entry.task_id.encode(), entry.frame)
            if len(c.ahead) < self.ahead_max:
                kids.append(c)              # round robin: the children fill evenly

    def _note_run(self, name: str, runtime: float) -> None:
        n = self._short.get(name, 0)
        if runtime < SHORT_TASK:
            if n < SHORT_RUNS:
                self._short[name] = n + 1
        elif n:
            self._short[name] = 0

    # -- when the task before it ends ---------------------------------------------------
    def _next_ahead(self, child: ChildProc, retire: bool) -> None:
        """``child`` finished a task: the next one sent ahead starts now; or, if the
        child retires (it reads nothing more), those ahead go back to the queue."""
        if not child.ahead:
            return
        if retire:
            self._requeue(child)
            return
        item = child.ahead.pop(0)
        self.ahead_count -= 1
        entry = item[2]
        child.running[entry.task_id] = entry
        self._arm(child, entry)
        self.events.task_started(entry, child.pid)

    def _requeue(self, child: ChildProc) -> None:
        """Tasks ahead of a child that will not run them: never started."""
        items, child.ahead = child.ahead, []
        self.ahead_count -= len(items)
        if not items:
            return
        if self.stopping:          # to their owners or other nodes, as unstarted ones
            for _, _, e in items:
                self.events.task_lost(e, "node is shutting down; the task had not started",
                                      shutdown=True)
            return
        for item in items:
            e = item[2]
            if child.reasons.pop(e.task_id, None) == "skipped":     # revoked meanwhile
                self.events.task_failed(e, "TaskRevokedError", revoked_message(
                    e.task_id, e.name, "was revoked before it started"), "REVOKED")
            else:
                heapq.heappush(self.squeue, item)
                self.waiting.poke()
        log.debug("%d task(s) sent ahead to child pid %d go back to the queue", len(items),
                  child.pid)

    # -- revoke ------------------------------------------------------------------------
    def skip(self, task_id: str) -> bool:
        """A revoked task sent ahead: tell its child not to start it (True if it was
        ahead somewhere). Its end comes from the child: REVOKED if it had not started."""
        for c in self.children.values():
            for _, _, e in c.ahead:
                if e.task_id == task_id:
                    c.reasons[task_id] = "skipped"
                    self._send(c, SKIP_TAG + task_id.encode())
                    self.stop_flags.skip_sent(c.index)    # after the frame is queued
                    return True
        return False

    def ahead_entries(self) -> list[Entry]:
        """Tasks sent ahead to children, not started (``inspect reserved``)."""
        return [e for c in self.children.values() for _, _, e in c.ahead]
