"""The pool, node side: children started once and reused (docs/pools.md).

Three kinds (``--pool``): *prefork*, N children each running one task at a time;
*threads*, one child running up to N tasks at once on threads; *solo*, one child
running one task at a time. In every kind a child also runs ``async def`` tasks on
its event loop, up to ``--async-concurrency`` at once. Tasks never run in the node's
process, so its loop stays responsive and a hard time limit can always kill.

Children ask for work by having a free slot (ChildReady, then every ChildDone, frees
one): the pool never hands a task to a child without one, so a short task never
waits behind a long one while any child has room. A hard time limit kills a child
that runs one task; a task that shares its child (a thread, an async task) is first
cancelled in the child (ChildCancel), and its child is killed only if it does not
stop within CANCEL_GRACE. A child that dies fails its tasks with WorkerLostError;
children retire after max tasks or max memory; every child that goes away is
replaced. ``grow``/``shrink``/``resize`` change the number of workers (children, or
the threads child's threads) and ``reload`` replaces every child with one forked from
the node's current code (--autoreload), letting running tasks finish on the old one.
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
from collections.abc import Callable
from typing import TYPE_CHECKING

from mesh.exceptions import revoked_message
from mesh.node.channel import pack
from mesh.node.child import Child, StopFlags
from mesh.node.ledger import Entry
from mesh.node.naps import Nap
from mesh.node.pool_ahead import PoolAhead
from mesh.node.pool_child import ChildProc, PoolEvents, async_task_names, describe_status, trim_heap
from mesh.node.pool_size import PoolSize
from mesh.node.pool_stop import CANCEL_GRACE, STOPPED_IN_CHILD, PoolStop
from mesh.ratelimit import TokenBucket
from mesh.security.text import safe_logger
from mesh.wire.protocol import ChildDone, ChildReady, ChildState, decode

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.config import Config

__all__ = ["CANCEL_GRACE", "ChildProc", "Pool", "PoolEvents"]

log = safe_logger("mesh.pool")

CRASH_WINDOW = 10.0        # s; more than CRASH_LIMIT deaths in it slow respawning down
CRASH_LIMIT = 10
RESPAWN_BACKOFF = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)   # blocked across a fork


IOV_MAX = 1024             # buffers one sendmsg takes at most (Linux's IOV_MAX): more and
                           # it fails (EMSGSIZE), so more frames go joined in one buffer
LEAVE_GRACE = 5.0          # s a child that retires by itself has before it is told to

QueueItem = tuple[int, int, Entry]       # (-priority, seq, entry): a heap of these


def _nothing() -> None:
    """(Pool.on_late with no fence: a node built without one)"""


class Pool(PoolSize, PoolStop, PoolAhead):
    def __init__(self, app: "Mesh", config: "Config", node_name: str, events: PoolEvents,
                 size: int):
        self.app = app
        self.config = config
        self.node_name = node_name
        self.home = ""            # the node's front door: where a task's own sends go first
        self.events = events
        self.kind = config.pool                      # prefork, threads, solo
        self.threaded = self.kind == "threads"       # one child, ``size`` threads
        self.size = size                             # workers: children, or the child's threads
        self.async_slots = config.async_concurrency  # async tasks per child at once
        self.async_names = async_task_names(app)
        self.children: dict[bytes, ChildProc] = {}
        self.idle: list[ChildProc] = []              # open children running nothing
        self.squeue: list[QueueItem] = []            # plain tasks waiting for a slot
        self.aqueue: list[QueueItem] = []            # async def tasks waiting for a slot
        self.waiting = Nap()                         # poked as tasks queue (the shedder's)
        self.scheduled: dict[str, Entry] = {}        # eta tasks waiting for their time
        self._seq = itertools.count()
        self._gen = itertools.count()
        self._deaths: list[float] = []
        self.stopping = False
        self.started_total = 0
        self.reloads = 0                             # times every child was replaced (reload)
        self.limits: dict[str, TokenBucket] = {}     # task name -> rate limit, per node
        self.rate_limited = 0                        # starts put off by a rate limit
        self.stop_flags = StopFlags()                # which children the node itself stops
        self._out: dict[ChildProc, list[bytes]] | None = None   # a dispatch's frames to send
        # the loop's next look at itself is due by then (0: none): later, it stalled,
        # and ``on_late`` sets its queued tasks aside first (mesh/node/fence.py)
        self.fence_at = 0.0
        self.on_late: Callable[[], None] = _nothing
        self._init_ahead()                           # tasks sent ahead (mesh/node/pool_ahead.py)

    @property
    def queue(self) -> list[QueueItem]:
        """Every task waiting for a slot, as (-priority, seq, entry); sorted() gives the
        order they would start in."""
        return self.squeue + self.aqueue if self.aqueue else self.squeue

    @property
    def queued(self) -> int:
        """How many tasks wait for a slot (no list is built: the node's load, per pass)."""
        return len(self.squeue) + len(self.aqueue)

    def head(self, k: int) -> list[QueueItem]:
        """The ``k`` queued tasks that would start next, in that order, in O(k log k)
        whatever the queue's length (a walk down each heap from its root)."""
        if k <= 0:
            return []
        out: list[QueueItem] = []
        for q in (self.squeue, self.aqueue):
            if not q:
                continue
            cand: list[tuple[QueueItem, int]] = [(q[0], 0)]
            n = len(q)
            taken = 0
            while cand and taken < k:
                item, i = heapq.heappop(cand)
                out.append(item)
                taken += 1
                for j in (2 * i + 1, 2 * i + 2):
                    if j < n:
                        heapq.heappush(cand, (q[j], j))
        if self.aqueue and self.squeue:
            out.sort()
            del out[k:]
        return out

    def discard(self, entries: set[int]) -> None:
        """Take the queued tasks whose ``id(entry)`` is in ``entries`` out of the queue
        (both heaps: plain and async tasks)."""
        for q in (self.squeue, self.aqueue):
            if q:
                q[:] = [item for item in q if id(item[2]) not in entries]
                heapq.heapify(q)

    # -- lifecycle --------------------------------------------------------------------
    async def run(self) -> None:
        """Start the children and supervise them until cancelled."""
        trim_heap()
        for i in range(1 if self.kind != "prefork" else self.size):
            self._spawn(i)
        await asyncio.get_running_loop().create_future()

    def _spawn(self, index: int) -> None:
        ident = f"c{index}.{next(self._gen)}".encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stop_flags.clear(index)
        child = Child(self.app, self.config, self.node_name, self.stop_flags, index)
        child.home = self.home
        node_pid = os.getpid()
        # SIGTERM/SIGINT stay blocked across the fork until the child has its own
        # handlers: one reaching a child still on the node's (a signal to the process
        # group, right after a fork) would be written to the node's wakeup fd, which
        # the child shares, and count as the node's second stop request
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                child.main(theirs, node_pid, old_mask)   # never returns
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        theirs.close()
        mine.setblocking(False)
        pidfd = os.pidfd_open(pid)
        proc = ChildProc(index, ident, pid, pidfd, mine, self.size if self.threaded else 1)
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

    def _send(self, child: ChildProc, *frames: bytes) -> None:
        bufs = pack(*frames)
        if len(bufs) > IOV_MAX:        # (a dispatch of hundreds of async tasks at once)
            bufs = [b"".join(bufs)]
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
        self.squeue.clear()
        self.aqueue.clear()
        self.scheduled.clear()
        return unstarted

    async def finish(self, timeout: float) -> None:
        """Let running tasks finish for up to ``timeout`` seconds, then stop every child
        (killing the ones still running a task)."""
        deadline = time.monotonic() + timeout
        while any(c.running for c in self.children.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in self.children.values():
            self._mark_killed(c, "shutdown", list(c.running))
            self._kill(c, signal.SIGKILL if c.running else signal.SIGTERM)
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

    def _not_idle(self, c: ChildProc) -> None:
        if c in self.idle:
            self.idle.remove(c)

    # -- work -------------------------------------------------------------------------
    def submit(self, entry: Entry, dispatch: bool = True) -> None:
        """Queue ``entry`` (or time it, with an eta ahead); ``dispatch=False``: the
        caller dispatches once after queueing many (mesh/node/spill.py)."""
        now = time.time()
        if entry.eta is not None and entry.eta > now:
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_later(entry.eta - now, self._eta_due, entry)
            self.scheduled[entry.task_id] = entry
            return
        self._enqueue(entry)
        if dispatch:
            self.dispatch()

    def _enqueue(self, entry: Entry) -> None:
        q = self.aqueue if entry.name in self.async_names else self.squeue
        heapq.heappush(q, (-entry.priority, next(self._seq), entry))
        self.waiting.poke()

    def take_next(self) -> Entry:
        """Remove and return the queued task that would start next (to shed it)."""
        sq, aq = self.squeue, self.aqueue
        q = sq if sq and (not aq or sq[0] <= aq[0]) else aq
        return heapq.heappop(q)[2]

    def _eta_due(self, entry: Entry) -> None:
        if self.scheduled.pop(entry.task_id, None) is not None:
            entry.timer = None
            self._enqueue(entry)
            self.dispatch()

    def dispatch(self) -> None:
        """Hand queued tasks to children with a free slot, highest priority first."""
        if self.stopping:
            return
        if self.fence_at and time.monotonic() > self.fence_at:
            self.on_late()              # (a node declared dead while it stalled: fence.py)
        out = self._out
        if out is not None:             # again, from an event of the dispatch under way:
            self._dispatch(out)         # its frames go after the outer one's, in order
            return
        self._out = out = {}            # frames per child, each child's sent in one write
        try:
            self._dispatch(out)
        finally:                        # (what was launched is sent, whatever raised)
            self._out = None
            for child, frames in out.items():
                self._send(child, *frames)

    def _dispatch(self, out: dict[ChildProc, list[bytes]]) -> None:
        sq, aq = self.squeue, self.aqueue
        while sq or aq:
            s_child = self._find(False) if sq else None
            a_child = self._find(True) if aq else None
            if s_child is not None and (a_child is None or sq[0] <= aq[0]):
                self._launch(heapq.heappop(sq)[2], s_child, False, out)
            elif a_child is not None:
                self._launch(heapq.heappop(aq)[2], a_child, True, out)
            else:
                break
        if sq:
            self._prefetch(out)         # every slot is taken: short tasks may go ahead

    def _find(self, is_async: bool) -> ChildProc | None:
        """A child with a free slot for a plain or an async task. Async tasks pack into
        the child that runs the most of them, leaving other children whole."""
        if is_async:
            best: ChildProc | None = None
            for c in self.children.values():
                n = len(c.async_ids)
                if (n and n < self.async_slots and c.open and (self.threaded or not c.sync_running)
                        and (best is None or n > len(best.async_ids))):
                    best = c
            if best is not None:
                return best
        if not self.threaded:
            return self.idle[-1] if self.idle else None
        for c in self.children.values():
            if c.open and (len(c.async_ids) < self.async_slots if is_async
                           else c.sync_running < c.sync_slots):
                return c
        return None

    def _admit(self, entry: Entry) -> bool:
        """May ``entry`` start now? Not if it expired (it fails) or its rate limit says
        later (it goes back to the timers)."""
        if entry.expires is not None and time.time() > entry.expires:
            self.events.task_failed(entry, "TaskRevokedError",
                                    revoked_message(entry.task_id, entry.name,
                                                    "expired before it started"), "REVOKED",
                                    expired=True)
            return False
        limits = self.limits
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
                    return False
        entry.reserved = False
        return True

    def _arm(self, child: ChildProc, entry: Entry) -> None:
        """``entry`` starts now on ``child``: its start time and hard time limit."""
        entry.started = time.time()
        if entry.time_limit:
            entry.timer = asyncio.get_running_loop().call_later(
                entry.time_limit, self._on_time_limit, child, entry)

    def _launch(self, entry: Entry, child: ChildProc, is_async: bool,
                out: dict[ChildProc, list[bytes]]) -> None:
        """Start ``entry`` on ``child``, unless it expired or its rate limit says later;
        its frame goes in ``out`` (sent by ``dispatch`` with the tasks sent ahead to the
        same child, in one write)."""
        if not self._admit(entry):
            return
        if not entry.acks_late:
            self.events.task_starting(entry)
        idle = self.idle
        if idle and idle[-1] is child:
            idle.pop()
        elif not child.running and child in idle:
            idle.remove(child)
        child.running[entry.task_id] = entry
        if is_async:
            child.async_ids.add(entry.task_id)
        self._arm(child, entry)
        frames = out.get(child)
        if frames is None:
            out[child] = [entry.frame]
        else:
            frames.append(entry.frame)
        self.events.task_started(entry, child.pid)

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
            child.ready = True
            if child.open and not child.running and not self.stopping:
                self.idle.append(child)
        elif type(msg) is ChildState:
            entry = child.running.get(msg.task_id)
            if entry is not None:
                self.events.task_progress(entry, msg.state, msg.meta)
        else:
            log.error("unexpected %s from child pid %d", type(msg).__name__, child.pid)

    def _task_done(self, child: ChildProc, msg: ChildDone, result: bytes) -> None:
        tid = msg.task_id
        entry = child.running.pop(tid, None)
        if entry is None:
            log.error("child pid %d reported task %s it was not running", child.pid, tid)
            return
        self._note_run(entry.name, msg.runtime)
        self._next_ahead(child, bool(msg.retire))    # the task sent ahead starts now
        was_async = tid in child.async_ids
        child.async_ids.discard(tid)
        child.tasks += 1
        if entry.timer is not None:
            entry.timer.cancel()
        backstop = child.cancels.pop(tid, None)
        if backstop is not None:
            backstop.cancel()
        why = child.reasons.pop(tid, None)
        if why is not None and msg.state == "REVOKED":     # it stopped when told to
            self._report(child, entry, why, STOPPED_IN_CHILD)
        else:
            self.events.task_done(entry, msg.state, result, msg.runtime, msg.countdown, msg.keep)
        if msg.retire and not child.leaving:
            log.info("child pid %d retires: %s", child.pid, msg.retire)
            # a plain task on its main thread: the child leaves its loop by itself
            # (cleanly, worker_process_shutdown and all); else it is told to go
            self._leave(child, replace=True, itself=not self.threaded and not was_async)
        elif child.leaving and not child.running:   # its last task: it goes now
            self._stop_child(child)
        elif not child.running and child.open and not self.stopping:
            self.idle.append(child)

    def _leave(self, child: ChildProc, replace: bool, itself: bool = False) -> None:
        """``child`` takes no more work and exits once its tasks are done (now, if it
        runs none; ``itself``: it exits on its own, the node only makes sure); with
        ``replace`` a new child takes its place at once."""
        child.leaving = True
        self._not_idle(child)
        if itself:
            asyncio.get_running_loop().call_later(LEAVE_GRACE, self._stop_child, child)
        elif not child.running:
            self._stop_child(child)
        if replace and not self.stopping:
            self._spawn(child.index)

    def _stop_child(self, child: ChildProc) -> None:
        """SIGTERM to a child with nothing left to run (it exits cleanly)."""
        if child.ident in self.children and not child.running:
            self._kill(child, signal.SIGTERM)

    # -- child exits ------------------------------------------------------------------
    def _on_exit(self, child: ChildProc) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.pidfd)
        os.close(child.pidfd)
        try:
            _, status = os.waitpid(child.pid, 0)
            how = describe_status(status)
        except ChildProcessError:
            how = "exited"
        fd = child.sock.fileno()
        if fd >= 0:           # (closed already when the node failed to start: close())
            # what it wrote before it died is still in the socket: read it first
            self._read_rest(child)
            loop.remove_reader(fd)
            if child.wbuf:
                loop.remove_writer(fd)
            child.sock.close()
        self._requeue(child)         # tasks sent ahead that it never started
        self.children.pop(child.ident, None)
        self._not_idle(child)
        for handle in child.cancels.values():
            handle.cancel()
        if not child.leaving:
            log.log(logging.INFO if self.stopping else logging.WARNING,
                    "child pid %d %s%s", child.pid, how,
                    f" while running {len(child.running)} task(s)" if child.running else "")
            if not self.stopping:
                self._record_death()
                self._replace(child)
        for entry in list(child.running.values()):
            if entry.timer is not None:
                entry.timer.cancel()
            self._report(child, entry, child.reasons.get(entry.task_id), how)
        child.running.clear()
        self.dispatch()

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
        for q in (self.squeue, self.aqueue):
            for i, (_, _, e) in enumerate(q):
                if e.task_id == task_id:
                    q[i] = q[-1]
                    q.pop()
                    heapq.heapify(q)
                    return e
        return None

    def kill_all(self) -> None:
        """A second stop request: kill every child now (running tasks are reported
        lost at shutdown, so acks_late ones go back to their owners)."""
        self.stopping = True
        for c in self.children.values():
            self._mark_killed(c, "shutdown", list(c.running))
            self._kill(c, signal.SIGKILL)

