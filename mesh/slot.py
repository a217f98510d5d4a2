"""What a client knows of one task it owns (``Slot``), and the two RETRY helpers the
node shares with the client (``retry_meta``, ``trim_retry``): apart from
mesh/result.py (``AsyncResult``), which a node does not load before it forks its
children (docs/performance.md, round 15)."""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from mesh import states
from mesh.security.text import safe_logger
from mesh.wire import codec
from mesh.wire.protocol import Result, encode

log = safe_logger("mesh.result")     # its messages are the results' (as before the split)


class Slot:
    """What a client knows of one task it owns. Shared by the I/O thread (writer)
    and callers (readers/waiters) under ``Slot.lock``."""

    __slots__ = ("task_id", "frame", "state", "msg", "node", "waiters", "remote", "refused",
                 "meta", "submit", "name", "queue", "held_at", "held_size")
    lock = threading.Lock()   # one lock for all slots: waits are rare, updates are short

    def __init__(self, task_id: str, frame: bytes | None, remote: bool = False,
                 name: str = "", queue: str = ""):
        self.task_id = task_id
        self.frame = frame            # the encoded Submit, kept until the result arrives
        self.name = name              # the task's name and queue: where it may go
        self.queue = queue            # ("": not known, any node may be asked)
        self.remote = remote          # a task another process submitted: looked up, not owned
        self.state = states.UNKNOWN if remote else states.PENDING
        self.refused: set[str] | None = None  # nodes that did not take it (journal, queue,
                                      # not registered there)
        self.msg: Result | None = None
        self.node: str | None = None  # endpoint it was last sent to
        self.held_at: Any = None      # (client I/O thread) the NodeLink whose count of our
        self.held_size = 0            # tasks it is in, and the bytes it counts there
                                      # (mesh/client/room.py: quotas)
        self.waiters: list[Callable[[], None]] | None = None
        self.meta: bytes | None = None     # codec bytes of the meta of a reported state
        self.submit: bytes | None = None   # the Submit once the frame is let go (or a
                                           # lookup's): the task's name, args and kwargs

    def complete(self, msg: Result) -> bool:
        """Set the final result; False if it was already complete (a duplicate)."""
        with Slot.lock:
            if self.msg is not None:
                return False
            self.msg = msg
            self.state = msg.state
            if self.frame is not None:
                self.submit = self.frame
            self.frame = None
            self.meta = None
            waiters, self.waiters = self.waiters, None
        for w in waiters or ():
            try:
                w()
            except Exception:   # e.g. an awaiting event loop that is closed: others still run
                log.exception("a result waiter failed")
        return True

    def add_waiter(self, fn: Callable[[], None]) -> bool:
        """Register ``fn`` to be called on completion; False if already complete."""
        with Slot.lock:
            if self.msg is not None:
                return False
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(fn)
            return True

    def remove_waiter(self, fn: Callable[[], None]) -> None:
        with Slot.lock:
            if self.waiters and fn in self.waiters:
                self.waiters.remove(fn)


def retry_meta(res: Result) -> bytes | None:
    """The meta a RETRY carries (codec bytes): the exception it retries for and its
    traceback, which ``r.info`` and ``r.traceback`` give until the task runs again
    (Celery's RETRY meta)."""
    if res.state != states.RETRY or not res.exc:
        return None
    return codec.dumps({"exc": res.exc, "traceback": res.traceback})


RETRY_KEPT = 200        # characters of a RETRY's cause kept when the notice is trimmed
RETRY_TB_KEPT = 2000    # characters of the end of its traceback kept then


def trim_retry(res: Result, size: int, limit: int) -> Result | None:
    """A RETRY notice (``res``, ``size`` bytes encoded) small enough for a receiver
    that reads frames of ``limit`` bytes at most: the state, ``retries``, ``eta`` and the
    next run's ``payload`` as they are (what a resend must carry: docs/protocol.md
    12.1); of its cause the type and the start of its message, saying it was cut, and
    the end of its traceback. When the next run's arguments alone are over ``limit``,
    they are left out too (the receiver keeps the ones it has); None when even that is
    over it. The task runs again: a notice too big must not fail it (the final RESULT
    follows)."""
    note = (f" [cut: this RETRY notice was {size:,} bytes, over this client's "
            f"max_message_size ({limit:,}), and not sent whole; the task runs again]")
    exc = res.exc if isinstance(res.exc, dict) else {}
    message = str(exc.get("message") or "")
    cause = {"type": str(exc.get("type") or "Exception")[:RETRY_KEPT],
             "module": str(exc.get("module") or "")[:RETRY_KEPT],
             "message": (message[:RETRY_KEPT] + ("..." if len(message) > RETRY_KEPT else "")
                         + note), "args": None}
    tb = res.traceback
    if tb and len(tb) > RETRY_TB_KEPT:
        tb = "..." + tb[-RETRY_TB_KEPT:]
    for traceback, payload in ((tb, res.payload), (None, res.payload), (tb, None), (None, None)):
        small = dataclasses.replace(res, result=None, exc=cause, traceback=traceback,
                                    payload=payload)
        if len(encode(small)) <= limit:
            return small
    return None


__all__ = ["RETRY_KEPT", "RETRY_TB_KEPT", "Slot", "retry_meta", "trim_retry"]
