"""The in-memory journal (``--no-journal``): the Journal interface over dictionaries.

Nothing survives the node process: a node that dies forgets what it held (the owners
still resend it) and the results it kept. While it runs it answers like the sqlite
journal does: a resend of a finished id gets the stored result, ``result`` lookups
and revokes work, and results expire after ``result_expires``.

Bounded, so a busy node never grows without limit: at most ``MAX_RESULTS`` results
and ``MAX_RESULT_BYTES`` bytes of them are kept (the oldest go first, before they
expire if need be), and at most ``MAX_REVOKED`` revoked ids. Unfinished tasks are the
ones the node holds, which it bounds itself (it holds what it accepted).
"""
from __future__ import annotations

import collections
from collections.abc import Iterable

from mesh import states
from mesh.node.journal import Journal, Row, Stored

MAX_RESULTS = 100_000              # results kept in memory at most
MAX_RESULT_BYTES = 64 * 1024 * 1024  # bytes of encoded results kept at most
MAX_REVOKED = 100_000              # revoked ids kept at most


class MemoryJournal(Journal):
    """Accepted tasks, results and revokes in this process's memory."""

    path = None

    def __init__(self, max_results: int = MAX_RESULTS, max_bytes: int = MAX_RESULT_BYTES,
                 max_revoked: int = MAX_REVOKED):
        self.max_results, self.max_bytes, self.max_revoked = max_results, max_bytes, max_revoked
        self._tasks: dict[str, Row] = {}       # accepted, not finished
        # finished, oldest first: task id -> (state, encoded Result, finished at)
        self._results: collections.OrderedDict[str, tuple[str, bytes, float]] = \
            collections.OrderedDict()
        self._bytes = 0
        self._revoked: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._peers: dict[str, tuple[int, str]] = {}   # task id -> (position, other copy's node)
        self._seq = 0
        self.dropped = 0                       # results dropped by the caps before expiry

    # -- writes -----------------------------------------------------------------------
    def add(self, task_id: str, client: bytes, frame: bytes, received: float) -> bool:
        if task_id in self._tasks or task_id in self._results:
            return False
        self._tasks[task_id] = Row(task_id, client, frame, states.RECEIVED, received)
        return True

    def replace(self, task_id: str, client: bytes, frame: bytes, received: float) -> None:
        self._drop_result(task_id)
        self._tasks[task_id] = Row(task_id, client, frame, states.RECEIVED, received)

    def started(self, task_id: str) -> None:
        row = self._tasks.get(task_id)
        if row is not None:
            self._tasks[task_id] = row._replace(state=states.STARTED)

    def update_frame(self, task_id: str, frame: bytes) -> None:
        row = self._tasks.get(task_id)
        if row is not None:
            self._tasks[task_id] = row._replace(frame=frame, state=states.RECEIVED)

    def finish(self, task_id: str, state: str, result: bytes, finished: float,
               peer: str = "") -> None:
        self._tasks.pop(task_id, None)
        self._keep_result(task_id, state, result, finished, peer)

    def _keep_result(self, task_id: str, state: str, result: bytes, finished: float,
                     peer: str) -> None:
        self._drop_result(task_id)
        self._seq += 1
        self._results[task_id] = (state, result, finished)
        self._peers[task_id] = (self._seq, peer)
        self._bytes += len(result)
        while self._results and (len(self._results) > self.max_results
                                 or self._bytes > self.max_bytes):
            tid, (_, old, _) = self._results.popitem(last=False)
            self._peers.pop(tid, None)
            self._bytes -= len(old)
            self.dropped += 1

    def _drop_result(self, task_id: str) -> None:
        self._peers.pop(task_id, None)
        old = self._results.pop(task_id, None)
        if old is not None:
            self._bytes -= len(old[1])

    def remove(self, task_ids: Iterable[str]) -> None:
        for tid in task_ids:
            self._tasks.pop(tid, None)

    def forget(self, task_id: str) -> bool:
        found = task_id in self._results
        self._drop_result(task_id)
        return found

    def revoke(self, task_ids: Iterable[str], at: float) -> None:
        for tid in task_ids:
            self._revoked.pop(tid, None)
            self._revoked[tid] = at
        while len(self._revoked) > self.max_revoked:
            self._revoked.popitem(last=False)

    def copy_result(self, task_id: str, state: str, result: bytes, finished: float,
                    peer: str) -> None:
        if task_id not in self._results:
            self._keep_result(task_id, state, result, finished, peer)

    def results_of_peer(self, peer: str, after: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        out = []
        for tid, (pos, p) in self._peers.items():
            if pos > after and p == peer:
                state, result, _ = self._results[tid]
                out.append((pos, tid, state, result))
                if len(out) >= limit:
                    break
        return out

    def set_peer(self, task_ids: Iterable[str], peer: str) -> None:
        for tid in task_ids:
            old = self._peers.get(tid)
            if old is not None:
                self._peers[tid] = (old[0], peer)

    @property
    def in_tx(self) -> bool:
        return False          # every write is done at once: nothing waits for commit()

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def expire(self, before: float, limit: int = 10_000) -> int:
        n = 0
        results = self._results
        while results and n < limit:
            tid, (_, result, finished) = next(iter(results.items()))
            if finished >= before:
                break
            del results[tid]
            self._peers.pop(tid, None)
            self._bytes -= len(result)
            n += 1
        gone = 0
        for tid, at in list(self._revoked.items()):
            if gone >= limit or at >= before:
                break
            del self._revoked[tid]
            gone += 1
        return n

    # -- reads ------------------------------------------------------------------------
    def get(self, task_id: str) -> Stored | None:
        res = self._results.get(task_id)
        if res is not None:
            return Stored(res[0], res[1])
        row = self._tasks.get(task_id)
        return Stored(row.state, None) if row is not None else None

    def frame(self, task_id: str) -> bytes | None:
        row = self._tasks.get(task_id)      # finished tasks' Submits are not kept here
        return row.frame if row is not None else None

    def unfinished(self) -> list[Row]:
        return sorted(self._tasks.values(), key=lambda r: r.received)

    def revoked_since(self, since: float, limit: int = 100_000) -> list[tuple[str, float]]:
        found = sorted(((t, at) for t, at in self._revoked.items() if at >= since),
                       key=lambda x: x[1])
        return found[-limit:] if limit > 0 else []

    def counts(self) -> dict[str, int]:
        return {"open": len(self._tasks), "results": len(self._results)}

    def close(self) -> None:
        self._tasks.clear()
        self._results.clear()
        self._peers.clear()
        self._revoked.clear()
        self._bytes = 0
