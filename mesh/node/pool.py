"""The prefork pool, node side: children started once and reused.

Children ask for work by being idle (a ChildReady, or a ChildDone, is one credit). The
pool never hands a task to a busy child, so a short task never waits behind a long one
while any child is free. Hard time limits kill the child; a child that dies fails its
task with WorkerLostError; children retire after max tasks or max memory. Every
child that goes away is replaced.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

from mesh.node.channel import FrameReader, pack
from mesh.node.child import Child
from mesh.node.ledger import Entry
from mesh.ratelimit import TokenBucket
from mesh.wire.protocol import ChildDone, ChildReady, ChildState, decode

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.config import Config

log = logging.getLogger("mesh.pool")

CRASH_WINDOW = 10.0        # s; more than CRASH_LIMIT deaths in it slow respawning down
CRASH_LIMIT = 10
RESPAWN_BACKOFF = 1.0


class ChildProc:
    __slots__ = ("index", "ident", "pid", "pidfd", "sock", "reader", "wbuf", "done_hdr",
                 "entry", "killed_for", "retiring", "tasks", "shrink")

    def __init__(self, index: int, ident: bytes, pid: int, pidfd: int, sock: socket.socket):
        self.index = index
        self.ident = ident
        self.pid = pid
        self.pidfd = pidfd
        self.sock = sock                      # our end of the socketpair, non-blocking
        self.reader = FrameReader()
        self.wbuf = bytearray()               # what a short write left to send
        self.done_hdr: ChildDone | None = None  # a ChildDone waiting for its Result frame
        self.entry: Entry | None = None
        self.killed_for: str | None = None
        self.retiring = False
        self.tasks = 0
        self.shrink = False                   # leaves the pool after its task (pool_shrink)


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


class Pool:
    def __init__(self, app: "Mesh", config: "Config", node_name: str, events: PoolEvents,
                 size: int):
        self.app = app
        self.config = config
        self.node_name = node_name
        self.events = events
        self.size = size
        self.children: dict[bytes, ChildProc] = {}
        self.idle: list[ChildProc] = []
        self.queue: list[tuple[int, int, Entry]] = []   # (-priority, seq, entry)
        self.scheduled: dict[str, Entry] = {}           # eta tasks waiting for their time
        self._seq = itertools.count()
        self._gen = itertools.count()
        self._deaths: list[float] = []
        self.stopping = False
        self.started_total = 0
        self.limits: dict[str, TokenBucket] = {}         # task name -> rate limit, per node
        self.rate_limited = 0                            # starts put off by a rate limit

    # -- lifecycle --------------------------------------------------------------------
    async def run(self) -> None:
        """Start the children and supervise them until cancelled."""
        for i in range(self.size):
            self._spawn(i)
        await asyncio.get_running_loop().create_future()

    def _spawn(self, index: int) -> None:
        ident = f"c{index}.{next(self._gen)}".encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child = Child(self.app, self.config, self.node_name)
        node_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            child.main(theirs, node_pid)            # never returns
        theirs.close()
        mine.setblocking(False)
        pidfd = os.pidfd_open(pid)
        proc = ChildProc(index, ident, pid, pidfd, mine)
        self.children[ident] = proc
        self.started_total += 1
        loop = asyncio.get_running_loop()
        loop.add_reader(pidfd, self._on_exit, proc)
        loop.add_reader(mine.fileno(), self._on_readable, proc)
        log.debug("started child %s pid %d", ident.decode(), pid)

    # -- the channel ------------------------------------------------------------------
    def _on_readable(self, child: ChildProc) -> None:
        try:
            data = child.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            data = b""
            log.debug("child %d channel error: %s", child.pid, e)
        if not data:                   # EOF: the child is exiting; _on_exit reports it
            asyncio.get_running_loop().remove_reader(child.sock.fileno())
            return
        for frame in child.reader.feed(data):
            try:
                self._on_frame(child, frame)
            except Exception:
                log.exception("bad message from child pid %d", child.pid)
        self.dispatch()

    def _read_rest(self, child: ChildProc) -> None:
        """Read everything the child wrote before it went away."""
        while True:
            try:
                data = child.sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError, OSError):
                return
            if not data:
                return
            for frame in child.reader.feed(data):
                try:
                    self._on_frame(child, frame)
                except Exception:
                    log.exception("bad message from child pid %d", child.pid)

    def _send(self, child: ChildProc, frame: bytes) -> None:
        bufs = pack(frame)
        if child.wbuf:
            child.wbuf += b"".join(bufs)
            return
        try:
            n = child.sock.sendmsg(bufs)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:           # the child is gone; _on_exit will report the task
            log.debug("write to child %d failed: %s", child.pid, e)
            return
        total = sum(len(b) for b in bufs)
        if n < total:
            child.wbuf += b"".join(bufs)[n:]
            asyncio.get_running_loop().add_writer(child.sock.fileno(), self._on_writable, child)

    def _on_writable(self, child: ChildProc) -> None:
        try:
            n = child.sock.send(child.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = len(child.wbuf)
        del child.wbuf[:n]
        if not child.wbuf:
            asyncio.get_running_loop().remove_writer(child.sock.fileno())

    def begin_stop(self) -> list[Entry]:
        """Stop starting tasks; return the queued and scheduled (unstarted) entries so
        the node can give them back at once."""
        self.stopping = True
        unstarted = [e for _, _, e in sorted(self.queue)] + list(self.scheduled.values())
        for e in self.scheduled.values():
            if e.timer:
                e.timer.cancel()
        self.queue.clear()
        self.scheduled.clear()
        return unstarted

    async def finish(self, timeout: float) -> None:
        """Let running tasks finish for up to ``timeout`` seconds, then stop every child
        (killing the ones still running a task)."""
        deadline = time.monotonic() + timeout
        while any(c.entry for c in self.children.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in self.children.values():
            if c.entry is not None:
                c.killed_for = "shutdown"
            self._kill(c, signal.SIGKILL if c.entry is not None else signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while self.children and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.children.values()):
            self._kill(c, signal.SIGKILL)
        while self.children and time.monotonic() < deadline + 2.0:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        for c in self.children.values():
            c.sock.close()

    @staticmethod
    def _kill(c: ChildProc, sig: int) -> None:
        try:
            os.kill(c.pid, sig)
        except ProcessLookupError:
            pass

    # -- work -------------------------------------------------------------------------
    def submit(self, entry: Entry) -> None:
        now = time.time()
        if entry.eta is not None and entry.eta > now:
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_later(entry.eta - now, self._eta_due, entry)
            self.scheduled[entry.task_id] = entry
            return
        heapq.heappush(self.queue, (-entry.priority, next(self._seq), entry))
        if self.idle:
            self.dispatch()

    def take_next(self) -> Entry:
        """Remove and return the queued task that would start next (to shed it)."""
        return heapq.heappop(self.queue)[2]

    def _eta_due(self, entry: Entry) -> None:
        if self.scheduled.pop(entry.task_id, None) is not None:
            entry.timer = None
            heapq.heappush(self.queue, (-entry.priority, next(self._seq), entry))
            self.dispatch()

    def dispatch(self) -> None:
        """Hand queued tasks to idle children, one each."""
        queue, idle, limits = self.queue, self.idle, self.limits
        while queue and idle and not self.stopping:
            entry = heapq.heappop(queue)[2]
            if entry.expires is not None and time.time() > entry.expires:
                self.events.task_failed(entry, "TaskRevokedError",
                                        f"task {entry.task_id} expired before it started", "REVOKED",
                                        expired=True)
                continue
            if limits and not entry.reserved:
                bucket = limits.get(entry.name)
                if bucket is not None:
                    now = time.time()
                    wait = bucket.take(now)
                    if wait > 0.0:          # not yet: back to the timers, others go on
                        self.rate_limited += 1
                        entry.eta = now + wait
                        entry.reserved = True
                        self.submit(entry)
                        continue
            entry.reserved = False
            if not entry.acks_late:
                self.events.task_starting(entry)
            child = idle.pop()
            child.entry = entry
            entry.started = time.time()
            if entry.time_limit:
                entry.timer = asyncio.get_running_loop().call_later(
                    entry.time_limit, self._on_time_limit, child, entry)
            self._send(child, entry.frame)
            self.events.task_started(entry, child.pid)

    def _on_time_limit(self, child: ChildProc, entry: Entry) -> None:
        if child.entry is entry and child.killed_for is None:
            log.warning("task %s (%s) exceeded its time limit of %ss: killing child pid %d",
                        entry.task_id, entry.name, entry.time_limit, child.pid)
            child.killed_for = "time limit"
            self._kill(child, signal.SIGKILL)

    # -- messages from children -------------------------------------------------------
    def _on_frame(self, child: ChildProc, frame: bytes) -> None:
        hdr = child.done_hdr
        if hdr is not None:            # this frame is the Result that follows a ChildDone
            child.done_hdr = None
            self._task_done(child, hdr, frame)
            return
        msg = decode(frame)
        if type(msg) is ChildDone:
            child.done_hdr = msg
        elif type(msg) is ChildReady:
            if not self.stopping and child.killed_for is None:
                self.idle.append(child)
        elif type(msg) is ChildState:
            entry = child.entry
            if entry is not None and entry.task_id == msg.task_id:
                self.events.task_progress(entry, msg.state, msg.meta)
        else:
            log.error("unexpected %s from child pid %d", type(msg).__name__, child.pid)

    def _task_done(self, child: ChildProc, msg: ChildDone, result: bytes) -> None:
        entry = child.entry
        if entry is None or entry.task_id != msg.task_id:
            log.error("child pid %d reported task %s it was not running", child.pid, msg.task_id)
            return
        child.entry = None
        child.tasks += 1
        if entry.timer is not None:
            entry.timer.cancel()
        self.events.task_done(entry, msg.state, result, msg.runtime, msg.countdown, msg.keep)
        if child.shrink:              # pool_shrink: leaves, not replaced (it may also
            child.retiring = True     # have asked to retire; leaving covers that)
            self._kill(child, signal.SIGTERM)
        elif msg.retire:
            log.info("child pid %d retires: %s", child.pid, msg.retire)
            child.retiring = True
            self._replace(child)
        elif child.killed_for is None and not self.stopping:
            self.idle.append(child)

    # -- child exits ------------------------------------------------------------------
    def _on_exit(self, child: ChildProc) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.pidfd)
        os.close(child.pidfd)
        try:
            _, status = os.waitpid(child.pid, 0)
            how = _describe_status(status)
        except ChildProcessError:
            how = "exited"
        # what it wrote before it died is still in the socket: read it first
        self._read_rest(child)
        loop.remove_reader(child.sock.fileno())
        if child.wbuf:
            loop.remove_writer(child.sock.fileno())
        child.sock.close()
        self.children.pop(child.ident, None)
        if child in self.idle:
            self.idle.remove(child)
        if not child.retiring:
            log.log(logging.INFO if self.stopping else logging.WARNING,
                    "child pid %d %s%s", child.pid, how,
                    f" while running task {child.entry.task_id}" if child.entry else "")
            if not self.stopping:
                self._record_death()
                if child.shrink:          # leaving the pool anyway (pool_shrink)
                    child.retiring = True
                else:
                    self._replace(child)
        entry = child.entry
        if entry is not None:
            child.entry = None
            if entry.timer is not None:
                entry.timer.cancel()
            self._report_lost(child, entry, how)
        self.dispatch()

    def _report_lost(self, child: ChildProc, entry: Entry, how: str) -> None:
        if child.killed_for == "revoked":
            self.events.task_failed(entry, "TaskRevokedError",
                                    f"task {entry.name}[{entry.task_id}] was revoked and "
                                    f"terminated (child pid {child.pid} {how})", "REVOKED", terminated=True)
        elif child.killed_for == "time limit":
            self.events.task_failed(entry, "TimeLimitExceeded",
                                    f"task {entry.name}[{entry.task_id}] exceeded its hard time "
                                    f"limit of {entry.time_limit} s; its child was killed")
        elif child.killed_for == "shutdown":
            self.events.task_lost(entry, f"node {self.node_name} shut down while task "
                                  f"{entry.task_id} was still running after the shutdown timeout",
                                  shutdown=True)
        else:
            self.events.task_lost(entry, f"child process pid {child.pid} {how} while running "
                                  f"task {entry.name}[{entry.task_id}]")

    def _replace(self, child: ChildProc) -> None:
        if self.stopping:
            return
        delay = self._respawn_delay()
        if delay:
            asyncio.get_running_loop().call_later(delay, self._respawn, child.index)
        else:
            self._spawn(child.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping:
            self._spawn(index)

    def _record_death(self) -> None:
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < CRASH_WINDOW] + [now]

    def _respawn_delay(self) -> float:
        if len(self._deaths) > CRASH_LIMIT:
            log.error("children are dying fast (%d in %.0f s): slowing respawn", len(self._deaths), CRASH_WINDOW)
            return RESPAWN_BACKOFF
        return 0.0

    # -- remote control ---------------------------------------------------------------
    def remove(self, task_id: str) -> Entry | None:
        """Take a task that has not started out of the queue or the timers."""
        entry = self.scheduled.pop(task_id, None)
        if entry is not None:
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            return entry
        for i, (_, _, e) in enumerate(self.queue):
            if e.task_id == task_id:
                self.queue[i] = self.queue[-1]
                self.queue.pop()
                heapq.heapify(self.queue)
                return e
        return None

    def terminate(self, task_id: str, sig: int = signal.SIGKILL) -> bool:
        """Kill the child running ``task_id`` (revoke --terminate); it is replaced."""
        for c in self.children.values():
            if c.entry is not None and c.entry.task_id == task_id and c.killed_for is None:
                log.warning("terminating task %s (%s): signal %d to child pid %d",
                            task_id, c.entry.name, sig, c.pid)
                c.killed_for = "revoked"
                self._kill(c, sig)
                return True
        return False

    def grow(self, n: int) -> int:
        """Start ``n`` more children; the new size."""
        used = {c.index for c in self.children.values()}
        index = 0
        for _ in range(n):
            while index in used:
                index += 1
            used.add(index)
            self._spawn(index)
        self.size += n
        return self.size

    def shrink(self, n: int) -> int:
        """Retire ``n`` children (idle ones at once, busy ones after their task),
        never below one; the new size."""
        n = min(n, self.size - 1)
        if n <= 0:
            return self.size
        self.size -= n
        leaving = [c for c in self.idle[:n]]
        for c in leaving:
            self.idle.remove(c)
            c.retiring = True
            self._kill(c, signal.SIGTERM)
        busy = [c for c in self.children.values() if c.entry is not None and not c.shrink
                and not c.retiring]
        for c in busy[:n - len(leaving)]:
            c.shrink = True
        return self.size

    # -- numbers ----------------------------------------------------------------------
    @property
    def busy(self) -> int:
        return sum(1 for c in self.children.values() if c.entry is not None)

    def pids(self) -> list[int]:
        return [c.pid for c in self.children.values()]

    def active(self) -> list[Entry]:
        return [c.entry for c in self.children.values() if c.entry is not None]

    def running(self) -> list[tuple[Entry, int]]:
        """Started tasks and the pid of the child running each."""
        return [(c.entry, c.pid) for c in self.children.values() if c.entry is not None]

    def kill_all(self) -> None:
        """A second stop request: kill every child now (running tasks are reported
        lost at shutdown, so acks_late ones go back to their owners)."""
        self.stopping = True
        for c in self.children.values():
            if c.entry is not None:
                c.killed_for = "shutdown"
            self._kill(c, signal.SIGKILL)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


