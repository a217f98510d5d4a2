"""The holder's replies that wait for a copy (a mixin of mesh/node/replicas.py's
``Replicas``): a reply that says "a node has this task" (the owner's ACK, a RESULT,
a HANDOFF_ACK) goes once the task's backup confirmed its copy (REPLICATE_ACK), or
after ``COPY_TIMEOUT`` all the same (one copy for now, said in the log: the copy is
still sent until it is confirmed). A task that waits has a *gate*; ``_open`` runs
what waited on it."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeAlias

from mesh.node.ledger import _RateLimitedLog
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from mesh.node.node import Node

log = safe_logger("mesh.replicas")

COPY_TIMEOUT = 1.0       # s the owner's ACK waits for the backup's confirmation at most
GATE_STAMP = 0.001       # s one time stamp serves the gates opened in a burst

Waiter: TypeAlias = "bytes | tuple[bytes, bytes] | Callable[[], None]"
Gate: TypeAlias = "None | Waiter | list[Waiter]"


class CopyGates:
    """What waits for copies to be confirmed, and the timeout that lets it go."""

    node: "Node"

    def __init__(self) -> None:
        # task id -> what waits for its copy's confirmation: None (nothing yet), an
        # ACK to send (the owner's routing id: bytes), a reply to send (routing id,
        # frame) or a callable, or a list of those (no list nor closure per task for
        # the usual one ACK or RESULT)
        self.gates: dict[str, Gate] = {}
        self._result_wait: set[str] = set()        # finished: replies wait for the result's copy
        self._gate_since: dict[str, float] = {}   # (the float shared by a pass's tasks)
        self._stamp = 0.0
        self.single_copy = 0                       # replies that went after COPY_TIMEOUT
        self._slowlog = _RateLimitedLog("unconfirmed copies")

    def _now(self) -> float:
        """time.monotonic(), the same float object within GATE_STAMP (one per burst,
        not one per task: a gate's start is kept until the copy is confirmed)."""
        now = time.monotonic()
        if now - self._stamp < GATE_STAMP:
            return self._stamp
        self._stamp = now
        return now

    def _gate(self, tid: str, since: float) -> None:
        if tid not in self.gates:
            self.gates[tid] = None
        self._gate_since.setdefault(tid, since)

    def pending(self, task_id: str) -> bool:
        """Its copy is not confirmed yet: replies saying a node has it must wait."""
        return task_id in self.gates

    def after_copy(self, task_id: str, fn: Waiter) -> None:
        """Run ``fn`` once the task's copy is confirmed (at once if it is); ``fn`` a
        routing id (bytes): acknowledge the task to it then (``Intake.ack_later``);
        (routing id, frame): send it that frame then."""
        gates = self.gates
        if task_id not in gates:
            self._run(task_id, fn)
            return
        waiting = gates[task_id]
        if waiting is None:
            gates[task_id] = fn
        elif isinstance(waiting, list):
            waiting.append(fn)
        else:
            gates[task_id] = [waiting, fn]

    def reply(self, task_id: str, ident: bytes, frame: bytes) -> None:
        """Send ``frame`` to ``ident`` once the task's copy is confirmed."""
        if task_id in self.gates:
            self.after_copy(task_id, (ident, frame))
        else:
            self.node.front.reply(ident, frame)

    def _run(self, task_id: str, fn: Waiter) -> None:
        if isinstance(fn, bytes):
            self.node.intake.ack_later(fn, task_id)
        elif isinstance(fn, tuple):
            self.node.front.reply(*fn)
        else:
            fn()

    def _open(self, tid: str) -> None:
        """The copy is confirmed (or we stop waiting for it): send what waited."""
        self._result_wait.discard(tid)
        self._gate_since.pop(tid, None)
        waiting = self.gates.pop(tid, None)
        if waiting is None:
            return
        for fn in waiting if isinstance(waiting, list) else (waiting,):
            try:
                self._run(tid, fn)
            except Exception:
                log.exception("a reply waiting for the copy of task %s failed", tid)

    def _give_up(self, now: float) -> None:
        # _gate_since is in order of time (a task's first wait is kept): only its head
        # can be late, so this reads a few entries, not every task in flight
        late: list[str] = []
        for t, since in self._gate_since.items():
            if now - since <= COPY_TIMEOUT:
                break
            late.append(t)
        if late:
            self.single_copy += len(late)
            self._slowlog.warning("no backup confirmed the copy of %d task(s) within %g s: "
                                  "acknowledged with one copy for now (still copying)",
                                  len(late), COPY_TIMEOUT)
            for tid in late:
                self._open(tid)
