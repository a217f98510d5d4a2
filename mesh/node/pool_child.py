"""What the pool keeps about each child, and what it tells its node.

A child has *slots*: a prefork or solo child runs one task at a time, or up to
``--async-concurrency`` ``async def`` tasks at once on its event loop (never both at
once: a plain task runs on the child's main thread, which must stay free to read the
node's messages while async tasks run); the threads pool's one child runs up to N
plain tasks on threads and async tasks on its loop, side by side.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import TYPE_CHECKING, Any, Protocol

from mesh.node.channel import FrameReader
from mesh.node.ledger import Entry
from mesh.trace import is_async_task
from mesh.wire.protocol import ChildDone

if TYPE_CHECKING:
    from mesh.app import Mesh


class ChildProc:
    __slots__ = ("index", "ident", "pid", "pidfd", "sock", "reader", "wbuf", "done_hdr",
                 "running", "async_ids", "sync_slots", "ready", "killed_for", "reasons",
                 "leaving", "tasks", "cancels", "ahead")

    def __init__(self, index: int, ident: bytes, pid: int, pidfd: int, sock: socket.socket,
                 sync_slots: int = 1):
        self.index = index
        self.ident = ident
        self.pid = pid
        self.pidfd = pidfd
        self.sock = sock                      # our end of the socketpair, non-blocking
        self.reader = FrameReader()
        self.wbuf = bytearray()               # what a short write left to send
        self.done_hdr: ChildDone | None = None  # a ChildDone waiting for its Result frame
        self.running: dict[str, Entry] = {}   # task id -> the task it runs
        self.async_ids: set[str] = set()      # the running ones that are async def tasks
        self.sync_slots = sync_slots          # plain tasks at once (threads: N; else 1)
        self.ready = False                    # said ChildReady: it takes work
        self.killed_for: str | None = None    # being killed (time limit, revoked, shutdown...)
        self.reasons: dict[str, str] = {}     # task id -> why it was stopped (for its owner)
        self.leaving = False                  # takes no more work, exits after its tasks;
                                              # not replaced then (a replacement, if any,
                                              # was started when it was told to leave)
        self.ahead: list[tuple[int, int, Entry]] = []   # queue items sent ahead, in the
                                              # order it starts them (mesh/node/pool_ahead.py)
        self.tasks = 0                        # tasks finished
        self.cancels: dict[str, asyncio.TimerHandle] = {}   # ChildCancel sent: the backstop

    @property
    def entry(self) -> Entry | None:
        """The task it runs (the first, when it runs several)."""
        for e in self.running.values():
            return e
        return None

    @property
    def open(self) -> bool:
        """It may be given a task (if it has a free slot)."""
        return self.ready and not self.leaving and self.killed_for is None

    @property
    def sync_running(self) -> int:
        return len(self.running) - len(self.async_ids)


class PoolEvents(Protocol):
    """What the pool tells its node (mesh.node.ledger.Ledger implements these)."""

    def task_done(self, entry: Entry, state: str, result_frame: bytes, runtime: float,
                  countdown: float | None = None, keep: bool = True) -> None: ...
    def task_progress(self, entry: Entry, state: str, meta: bytes | None) -> None:
        """The running task reported a state (track_started, update_state)."""
    def task_failed(self, entry: Entry, exc_type: str, message: str, state: str = "FAILURE",
                    **event: Any) -> None: ...
    def task_lost(self, entry: Entry, message: str, shutdown: bool = False) -> None:
        """Its child died while running it (or was killed at shutdown)."""
    def task_starting(self, entry: Entry) -> None:
        """Called just before an ``acks_late=False`` task goes to a child."""
    def task_started(self, entry: Entry, pid: int) -> None:
        """A child got the task."""
    def revoked_signal(self, task_id: str, name: str, expired: bool = False,
                       signum: int | None = None) -> None:
        """Send ``task_revoked`` in the node (a signal the child cannot see)."""


def async_task_names(app: "Mesh") -> frozenset[str]:
    return frozenset(name for name, task in app.tasks.items() if is_async_task(task))


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def trim_heap() -> None:
    """Give the free pages of the C heap back to the system (glibc's malloc_trim)
    before the first children are forked: each child would count them in its RSS
    too (measured: ~1 MB a process after the node's imports). Only at start: with a
    large backlog it walks a large heap. Elsewhere than glibc, nothing."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
