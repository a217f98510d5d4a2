"""Closing the client, and the wait at interpreter exit (a mixin of
mesh.client.io.Client, kept apart so that the I/O thread's module stays about the
loop and what each reply does).

The submitter may be gone once a node has acknowledged a task (journalled it), not
before: a task no node acknowledged lives only in this process. So ``close`` (and
``_close_at_exit``, registered with atexit for every client) first waits until nodes
have taken every task sent: for as long as they keep taking them (``patient``, the
default, and at exit), a burst waiting for room at full nodes (mesh/client/room.py)
included; then it stops the I/O thread, and says how many tasks no node took (those
may never run). ``flush(timeout)`` is the same wait for a caller that goes on.

``flush`` and ``close`` are for the callers' threads (``close`` on the I/O thread
skips the wait); ``unacknowledged`` is read from any thread.
"""
from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.security.text import safe_logger
from mesh.slot import Slot

if TYPE_CHECKING:
    from mesh.client.links import NodeLink

log = safe_logger("mesh.client")

EXIT_WAIT_MAX = 600.0       # s a closing client waits at most for nodes to take its tasks
EXIT_WAIT_REPORT = 10.0     # s between two lines saying that it still waits
EXIT_IDLE_MAX = 60.0        # s it waits with none taken while nodes hold some of its tasks


def _close_at_exit(ref: Callable[[], Closing | None]) -> None:
    """Before the interpreter exits, wait until a node has acknowledged every task
    this process sent (fire-and-forget delay()), as ``close`` does; say on stderr how
    many no node acknowledged. (``ref``: a weak reference to the client.)"""
    client = ref()
    if client is not None:
        client.close(at_exit=True)


class Closing:
    """Closing and the exit wait of a Client (see the module's docs)."""

    # state owned by Client (mesh/client/io.py) and WaitingRoom (room.py), used here
    links: dict[str, NodeLink]
    _slots: dict[str, Slot]
    _outbox: collections.deque[Any]
    _thread: threading.Thread
    _closing: bool
    _in_close: bool
    _linger: float
    _room: collections.deque[Slot]
    _room_warned: bool

    if TYPE_CHECKING:           # Client's, used here
        def _wake(self) -> None: ...
        def endpoints(self) -> list[str]: ...

    def unacknowledged(self) -> int:
        """Tasks submitted here that no node has acknowledged yet (nor finished): the
        ones that would be lost if this process exited now."""
        queued = sum(1 for x in list(self._outbox) if type(x) is not tuple)
        return queued + sum(1 for s in list(self._slots.values())
                            if s.msg is None and s.state == states.PENDING)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds until a node has acknowledged (journalled)
        every task submitted so far; the number still unacknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.unacknowledged()
            if n == 0 or not self._thread.is_alive() or time.monotonic() >= deadline:
                return n
            time.sleep(0.005)

    def _flush_while_taken(self, linger: float) -> tuple[int, float]:
        """``flush`` for as long as nodes keep taking this process's tasks, or will:
        a burst past the nodes' quotas waits in this process for room
        (mesh/client/room.py) and goes as earlier tasks finish, so a script that
        submits it and exits must not drop the rest while the nodes work through it.
        The wait goes on while tasks wait for room and alive nodes hold some of this
        process's tasks (their ends make room), up to ``EXIT_IDLE_MAX`` s with none
        taken (tasks that long, or stuck); it ends once no node took a task for
        ``linger`` s otherwise (no node reachable, nothing of ours held), and after
        ``EXIT_WAIT_MAX`` s in all. Says that it waits, and how
        it goes every ``EXIT_WAIT_REPORT`` s. (The tasks left, the last idle span.)"""
        start = last = said = time.monotonic()
        n = self.unacknowledged()
        while n:
            left = self.flush(min(linger, max(0.0, start + EXIT_WAIT_MAX - time.monotonic())))
            now = time.monotonic()
            if left == 0 or not self._thread.is_alive() or now - start >= EXIT_WAIT_MAX:
                return left, now - last
            if left < n:
                last = now
            elif now - last >= linger and (not self._room_will_come()
                                            or now - last >= EXIT_IDLE_MAX):
                return left, now - last
            if said == start or now - said >= EXIT_WAIT_REPORT:
                log.warning("mesh: waiting for the nodes to take %d more task(s) sent by this "
                            "process (%d wait for room: the nodes' quotas) before it exits; "
                            "they take them as earlier ones finish (%.0f s so far)",
                            left, len(self._room), now - start)
                said = now
            n = left
        return 0, 0.0

    def _room_will_come(self) -> bool:
        """Tasks wait for room (a spell is on: the last one may be on trial at a full
        node, out of the room for that moment), and an alive node holds some of ours:
        their ends free room for what waits."""
        return self._room_warned and any(link.state == "alive" and link.held > 0
                                         for link in list(self.links.values()))

    def close(self, linger: float = 5.0, at_exit: bool = False, patient: bool = True) -> int:
        """Wait until every task sent is acknowledged by a node, then stop the I/O
        thread: for as long as nodes keep taking them when ``patient`` (the default,
        and at interpreter exit: ``_flush_while_taken``), else up to ``linger`` s.
        Returns how many tasks no node acknowledged, and says so (a warning; on
        stderr too at interpreter exit): those may never run, since nothing holds
        them once this process is gone."""
        if self._closing:
            return 0
        unacked, window = 0, linger
        interrupted, self._in_close = self._in_close, True   # (then: no second wait)
        if threading.current_thread() is not self._thread and linger > 0 and not interrupted:
            if patient:
                unacked, window = self._flush_while_taken(linger)
            else:
                unacked = self.flush(linger)
        elif interrupted:
            unacked = self.unacknowledged()
        waiting = len(self._room)
        self._linger = min(linger, 1.0)
        self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(linger + 5)
        if unacked:
            why = ("its wait at exit was interrupted" if interrupted
                   else f"no node took one for {window:.3g} s")
            msg = (f"mesh: {unacked} task(s) sent by this process were not acknowledged by any "
                   f"node ({why}) and may never run (nodes tried: "
                   f"{', '.join(self.endpoints())})")
            if waiting:
                msg += (f"; {waiting} of them waited for room: the nodes held as many tasks from "
                        "this process as their quotas allow (app.client.flush(timeout) waits "
                        "until nodes have taken them all)")
            if at_exit and not logging.getLogger("mesh").hasHandlers():
                print(msg, file=sys.stderr, flush=True)   # (a warning without a handler
            else:                                         # would print it a second time)
                log.warning("%s", msg)
        return unacked
