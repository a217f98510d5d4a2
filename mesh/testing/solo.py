"""A solo pool: the prefork pool's bookkeeping with tasks run in the node's process.

``SoloPool`` is the real :class:`mesh.node.pool.Pool` (queue, eta timers, rate
limits, revokes, time limits, grow/shrink, the shutdown drain) whose "children" are
slots in this process: a task handed to a slot runs with the child's own code
(``Child.run_frame``) on the next loop pass, or, with ``autorun=False``, when the
test says so (``finish_running``), so a test can hold tasks "running" while it
revokes, sheds or stops. Killing a slot (time limit, revoke --terminate, shutdown)
reports its task lost exactly as a dead child's, and the slot is replaced.

For tests only: soft time limits are raised in this process, and tasks block the
event loop while they run.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from mesh.exceptions import SoftTimeLimitExceeded
from mesh.node.child import Child
from mesh.node.pool import ChildProc, Pool, PoolEvents

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.config import Config
    from mesh.node.ledger import Entry


class SoloSlot(ChildProc):
    """A "child" that is a slot in this process (no pid of its own, no socket)."""

    def __init__(self, index: int, ident: bytes):    # noqa: D107 - no OS resources
        self.index, self.ident, self.pid, self.pidfd = index, ident, os.getpid(), -1
        self.running = {}
        self.async_ids = set()
        self.sync_slots = 1
        self.ready = True
        self.killed_for = None
        self.reasons = {}
        self.leaving = False
        self.tasks = 0
        self.cancels = {}
        self.done_hdr = None
        self.ahead = []


def _soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


class SoloPool(Pool):
    ahead_max = 0            # no tasks sent ahead: a slot runs what it was handed, on the loop
    def __init__(self, app: "Mesh", config: "Config", node_name: str, events: PoolEvents,
                 size: int, autorun: bool = True):
        super().__init__(app, config, node_name, events, size)
        self.autorun = autorun
        self.child = Child(app, config, node_name)
        self._slots = itertools.count()
        self.ran = 0                       # tasks run to the end

    async def run(self) -> None:
        for i in range(self.size):
            self._spawn(i)
        await asyncio.get_running_loop().create_future()

    def _spawn(self, index: int) -> None:
        slot = SoloSlot(index, f"s{index}.{next(self._slots)}".encode())
        self.children[slot.ident] = slot
        self.started_total += 1
        if not self.stopping:
            self.idle.append(slot)
            self.dispatch()

    def _send(self, child: ChildProc, *frames: bytes) -> None:
        if self.autorun:
            asyncio.get_running_loop().call_soon(self._run, child, child.entry)

    def _run(self, child: ChildProc, entry: "Entry | None") -> None:
        if entry is None or child.killed_for is not None:
            return                          # killed (revoked, shut down) before it ran
        frame = entry.frame
        if child.running.get(entry.task_id) is not entry:
            return
        # soft time limits (SIGALRM) need the main thread: a node of start_worker runs
        # in a thread of its own, and its tasks have none
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGALRM, _soft_limit) if main else None
        try:
            done, result = self.child.run_frame(frame)
        finally:
            if main:
                signal.signal(signal.SIGALRM, old)
        self.ran += 1
        self._task_done(child, done, result)
        self.dispatch()                      # as the real pool does after a child's frames

    def finish_running(self, task_id: str | None = None) -> int:
        """autorun=False: run the tasks held "running" (or just ``task_id``) now."""
        n = 0
        for c in list(self.children.values()):
            e = c.entry
            if e is not None and (task_id is None or e.task_id == task_id):
                self._run(c, e)
                n += 1
        return n

    def _kill(self, c: ChildProc, sig: int) -> None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        asyncio.get_running_loop().call_soon(self._gone, c, f"was killed by {name}")

    def _gone(self, child: ChildProc, how: str) -> None:
        """The slot "exits": what Pool._on_exit does for a real child."""
        if self.children.pop(child.ident, None) is None:
            return
        self._not_idle(child)
        if not child.leaving and not self.stopping:
            self._record_death()
            self._replace(child)
        for entry in list(child.running.values()):
            if entry.timer is not None:
                entry.timer.cancel()
            self._report(child, entry, child.reasons.get(entry.task_id), how)
        child.running.clear()
        self.dispatch()

    async def finish(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(c.running for c in self.children.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        for c in list(self.children.values()):
            self._mark_killed(c, "shutdown", list(c.running))
            self._gone(c, "was killed by SIGKILL" if c.running else "exited")

    def close(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []                           # no processes of their own to measure
