"""Stopping tasks (a part of :class:`mesh.node.pool.Pool`): hard time limits, revoke
--terminate, and what a task that ended without a result of its own is reported as.

A task alone in its child (a plain task of prefork or solo, or of a threads child
running nothing else) is stopped by killing the child, which is replaced. A task that
shares its child (an ``async def`` task, or one of several on threads) is cancelled in
the child with a ChildCancel; if it has not stopped within CANCEL_GRACE, the child is
killed, and the tasks beside it are lost with it.
"""
from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING

from mesh.exceptions import revoked_message
from mesh.security.text import safe_logger
from mesh.wire.protocol import ChildCancel, encode

if TYPE_CHECKING:
    from mesh.node.child import StopFlags
    from mesh.node.ledger import Entry
    from mesh.node.pool_child import ChildProc, PoolEvents

log = safe_logger("mesh.pool")

CANCEL_GRACE = 2.0         # s a cancelled task that shares its child has to stop before
                           # the child (and every task in it) is killed
STOPPED_IN_CHILD = "stopped in its child"   # how a cancelled task ended (ChildCancel)


class PoolStop:
    if TYPE_CHECKING:               # what Pool has
        node_name: str
        events: PoolEvents
        children: dict[bytes, ChildProc]
        stop_flags: StopFlags

        def _send(self, child: ChildProc, frame: bytes) -> None: ...
        def _not_idle(self, c: ChildProc) -> None: ...

    def _kill(self, c: "ChildProc", sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):    # children ignore these unless armed
            self.stop_flags.arm(c.index)              # (mesh/node/child.py, StopFlags)
        try:
            os.kill(c.pid, sig)
        except ProcessLookupError:
            pass

    def _mark_killed(self, c: ChildProc, why: str, task_ids: list[str]) -> None:
        """``c`` is about to be killed: it gets no more work, and ``task_ids`` are
        reported for ``why`` (its other tasks are lost)."""
        if c.running:
            c.killed_for = c.killed_for or why
        for tid in task_ids:
            c.reasons[tid] = why
        self._not_idle(c)

    @staticmethod
    def _shares(child: ChildProc, task_id: str) -> bool:
        """Stop the task in its child (ChildCancel), not by killing the child: it is an
        async task (cancelling one is clean and at once), or others run beside it."""
        return task_id in child.async_ids or len(child.running) > 1

    def _on_time_limit(self, child: ChildProc, entry: Entry) -> None:
        tid = entry.task_id
        if child.running.get(tid) is not entry or child.killed_for is not None:
            return
        shares = self._shares(child, tid)
        # an ERROR, in Celery's words: its worker logs "Hard time limit (Ns) exceeded for
        # NAME[ID]" at ERROR, and no other line says that the task failed
        log.error("Hard time limit (%ss) exceeded for %s[%s]: %s child pid %d",
                  entry.time_limit, entry.name, tid,
                  "cancelling it in" if shares else "killing", child.pid)
        if shares:
            self._cancel(child, tid, "time limit", signal.SIGKILL)
        else:
            self._mark_killed(child, "time limit", [tid])
            self._kill(child, signal.SIGKILL)

    def _cancel(self, child: ChildProc, tid: str, why: str, sig: int) -> None:
        """Ask the child to stop one task; kill the child if it has not in CANCEL_GRACE."""
        if tid in child.cancels:
            return
        child.reasons[tid] = why
        self._send(child, encode(ChildCancel(tid, why)))
        child.cancels[tid] = asyncio.get_running_loop().call_later(
            CANCEL_GRACE, self._cancel_overdue, child, tid, why, sig)

    def _cancel_overdue(self, child: ChildProc, tid: str, why: str, sig: int) -> None:
        child.cancels.pop(tid, None)
        if tid not in child.running or child.killed_for is not None:
            return
        others = len(child.running) - 1
        log.warning("task %s did not stop within %g s of being cancelled (%s): killing child "
                    "pid %d%s", tid, CANCEL_GRACE, why, child.pid,
                    f" and the {others} other task(s) it runs" if others else "")
        self._mark_killed(child, why, [tid])
        self._kill(child, sig)

    def _report(self, child: ChildProc, entry: Entry, why: str | None, how: str) -> None:
        """A task that ended without a result of its own: stopped for ``why`` (revoked,
        time limit, shutdown), or lost with its child."""
        where = (f"cancelled in child pid {child.pid}" if how == STOPPED_IN_CHILD
                 else f"child pid {child.pid} {how}")
        if why == "skipped":           # sent ahead, revoked before it started
            self.events.task_failed(entry, "TaskRevokedError",
                                    revoked_message(entry.task_id, entry.name,
                                                    "was revoked before it started (skipped "
                                                    f"in child pid {child.pid})"), "REVOKED")
        elif why == "revoked":
            self.events.task_failed(entry, "TaskRevokedError",
                                    revoked_message(entry.task_id, entry.name,
                                                    f"was revoked and terminated ({where})"),
                                    "REVOKED", terminated=True)
        elif why == "time limit":
            self.events.task_failed(entry, "TimeLimitExceeded",
                                    f"task {entry.name}[{entry.task_id}] exceeded its hard time "
                                    f"limit of {entry.time_limit} s ({where})")
        elif why == "shutdown":
            self.events.task_lost(entry, f"node {self.node_name} shut down while task "
                                  f"{entry.task_id} was still running after the shutdown timeout",
                                  shutdown=True)
        else:
            self.events.task_lost(entry, f"child process pid {child.pid} {how} while running "
                                  f"task {entry.name}[{entry.task_id}]")

    def terminate(self, task_id: str, sig: int = signal.SIGKILL) -> bool:
        """Stop the running ``task_id`` (revoke --terminate): kill its child (which is
        replaced), or cancel it in the child it shares."""
        for c in self.children.values():
            entry = c.running.get(task_id)
            if entry is None:
                continue
            if c.killed_for is not None:
                # being killed already. For this task's revoke (a second revoke, such as
                # the one a peer forwards after meshctl's own reached this node) it is
                # being terminated, not left running; the signal goes again, so that
                # SIGKILL ends a task that ignored a first revoke's SIGTERM
                if c.reasons.get(task_id) != "revoked":
                    return False
                self._kill(c, sig)
                return True
            log.warning("terminating task %s (%s): %s", task_id, entry.name,
                        f"cancelling it in child pid {c.pid}" if self._shares(c, task_id)
                        else f"signal {sig} to child pid {c.pid}")
            if self._shares(c, task_id):
                self._cancel(c, task_id, "revoked", sig)
            else:
                self._mark_killed(c, "revoked", [task_id])
                self._kill(c, sig)
                if sig == signal.SIGKILL:        # the child cannot send task_revoked
                    self.events.revoked_signal(task_id, entry.name, signum=sig)
            return True
        return False

