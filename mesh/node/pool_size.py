"""The pool's size and code (a part of :class:`mesh.node.pool.Pool`): grow, shrink
and resize the workers (children, or the threads pool's threads), replace every child
for new code (``reload``), and the numbers status reports."""
from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.node.pool_child import async_task_names

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.node.ledger import Entry
    from mesh.node.pool_child import ChildProc

    QueueItem = tuple[int, int, Entry]


class PoolSize:
    if TYPE_CHECKING:               # what Pool has
        app: Mesh
        kind: str
        threaded: bool
        size: int
        reloads: int
        stopping: bool
        async_names: frozenset[str]
        children: dict[bytes, ChildProc]
        idle: list[ChildProc]
        squeue: list[QueueItem]
        aqueue: list[QueueItem]

        @property
        def queue(self) -> list[QueueItem]: ...
        def _spawn(self, index: int) -> None: ...
        def _leave(self, child: ChildProc, replace: bool) -> None: ...
        def _enqueue(self, entry: Entry) -> None: ...
        def dispatch(self) -> None: ...

    def grow(self, n: int) -> int:
        """``n`` more workers (children, or threads of the threads child); the new size."""
        if self.kind == "solo":
            raise ValueError("the solo pool runs one task at a time: it cannot grow")
        self.size += n
        if self.threaded:
            for c in self.children.values():
                c.sync_slots = self.size
        else:
            used = {c.index for c in self.children.values() if not c.leaving}
            index = 0
            for _ in range(n):
                while index in used:
                    index += 1
                used.add(index)
                self._spawn(index)
        self.dispatch()
        return self.size

    def shrink(self, n: int) -> int:
        """``n`` fewer workers, never below one (idle children leave at once, busy ones
        after their tasks; the threads child runs fewer tasks at once); the new size."""
        if self.kind == "solo":
            raise ValueError("the solo pool runs one task at a time: it cannot shrink")
        n = min(n, self.size - 1)
        if n <= 0:
            return self.size
        self.size -= n
        if self.threaded:
            for c in self.children.values():
                c.sync_slots = self.size
            return self.size
        left = n
        for c in list(self.idle[:n]):
            self._leave(c, replace=False)
            left -= 1
        busy = [c for c in self.children.values() if c.running and not c.leaving]
        busy.sort(key=lambda c: len(c.running))       # the ones with the fewest tasks first
        for c in busy[:left]:
            self._leave(c, replace=False)
        return self.size

    def resize(self, size: int) -> int:
        """Grow or shrink to ``size`` workers (at least one); the new size."""
        if size > self.size:
            return self.grow(size - self.size)
        if size < self.size:
            return self.shrink(self.size - size)
        return self.size

    def reload(self, app: "Mesh") -> int:
        """Run ``app`` (new code, imported in the node) from now on: every child is
        replaced by one forked now; a child running tasks finishes them on the old code
        first. Queued tasks run on the new children. Returns how many were replaced."""
        self.app = app
        self.async_names = async_task_names(app)
        self.reloads += 1
        old = [c for c in self.children.values() if not c.leaving and c.killed_for is None]
        # re-sort queued tasks: a task's kind (plain or async) follows the new code
        waiting = [e for _, _, e in sorted(self.queue)]
        self.squeue.clear()
        self.aqueue.clear()
        for e in waiting:
            self._enqueue(e)
        for c in old:
            self._leave(c, replace=True)
        return len(old)

    @property
    def busy(self) -> int:
        """Workers in use: children running a task (an async one counts once); for the
        threads pool, tasks running on its threads (and its event loop, as one)."""
        if not self.threaded:
            return sum(1 for c in self.children.values() if c.running and not c.leaving)
        n = sum(c.sync_running + (1 if c.async_ids else 0)
                for c in self.children.values() if not c.leaving)
        return min(n, self.size)

    @property
    def running_count(self) -> int:
        """Tasks running (async ones each counted)."""
        return sum(len(c.running) for c in self.children.values())

    def pids(self) -> list[int]:
        return [c.pid for c in self.children.values()]

    def active(self) -> list[Entry]:
        return [e for c in self.children.values() for e in c.running.values()]

    def running(self) -> list[tuple[Entry, int]]:
        """Started tasks and the pid of the child running each."""
        return [(e, c.pid) for c in self.children.values() for e in c.running.values()]
