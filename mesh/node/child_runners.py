"""Where a child runs what its main thread does not: plain tasks on threads (the
threads pool) and ``async def`` tasks on an event loop (mesh/node/child_async.py).

The child's main thread reads the node's frames; a prefork or solo child runs a plain
task right there (SIGALRM gives it its soft time limit), and hands the rest to a
:class:`Runners`: async tasks to the loop, plain tasks of the threads pool to
threads, and ChildCancel to whichever runs the task. Every result goes back through
``Child.finished`` (one lock, one write per result).

On threads, the soft time limit is SoftTimeLimitExceeded raised in the task's thread
(``PyThreadState_SetAsyncExc``) by a watchdog, and a cancel raises an exception the
task should not catch (``TaskStopped``, a BaseException). Either takes effect at the
thread's next Python instruction: a thread blocked in a C call (``time.sleep``,
a socket read) sees it when the call returns, and the node kills the child if a
cancelled task has not stopped within its grace (docs/pools.md).
"""
from __future__ import annotations

import ctypes
import dataclasses
import heapq
import itertools
import queue
import threading
import time
import traceback
from typing import TYPE_CHECKING

from mesh import states
from mesh.exceptions import SoftTimeLimitExceeded
from mesh.node.child_async import AsyncRunner, Report, soft_limit_of
from mesh.node.pool_child import async_task_names
from mesh.wire.protocol import (
    ChildCancel,
    ChildDone,
    MsgType,
    Result,
    Submit,
    decode,
    encode,
    peek_type,
)

if TYPE_CHECKING:
    from mesh.node.channel import BlockingChannel
    from mesh.node.child import Child


class ThreadSoftTimeLimit(SoftTimeLimitExceeded):
    """SoftTimeLimitExceeded raised in a thread (which instantiates it without
    arguments). It reports itself as SoftTimeLimitExceeded, so the task's owner gets
    that type back."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("soft time limit exceeded",)))


ThreadSoftTimeLimit.__qualname__ = ThreadSoftTimeLimit.__name__ = "SoftTimeLimitExceeded"
ThreadSoftTimeLimit.__module__ = SoftTimeLimitExceeded.__module__


class TaskStopped(BaseException):
    """Raised in a thread whose task the node cancelled (hard time limit, revoke)."""


_INTERRUPTS = (ThreadSoftTimeLimit, TaskStopped)


def _raise_in_thread(ident: int, exc: type[BaseException]) -> int:
    """Have thread ``ident`` raise ``exc`` at its next instruction (replacing one set
    but not raised yet); 0 if there is no such thread."""
    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                           ctypes.py_object(exc)))


class _Flush(BaseException):
    """Raised by a thread in itself, to drop an interruption set but not raised yet."""


def _drop_pending() -> None:
    """Drop an interruption set for this thread and not raised yet. Not by
    ``PyThreadState_SetAsyncExc(ident, NULL)``: before Python 3.13 that leaves the
    interpreter's "an exception is pending" flag set with none pending (only raising
    one clears it), and with that flag set a trace function (``sys.settrace``,
    ``threading.settrace``: coverage, pdb, a tracing profiler) spins the thread it
    traces for ever on CPython 3.11. This thread sets one of its own instead,
    replacing any pending, and raises it at once: the next check, a jump back."""
    try:
        if _raise_in_thread(threading.get_ident(), _Flush):
            while True:
                pass
    except _Flush:
        pass


class Watchdog:
    """One thread that raises SoftTimeLimitExceeded in threads whose task is late."""

    def __init__(self, runner: "ThreadRunner"):
        self.runner = runner
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, str]] = []     # (deadline, token, task id)
        self.armed: dict[str, int] = {}                  # task id -> its current token
        self._tokens = itertools.count()
        threading.Thread(target=self._main, name="mesh-watchdog", daemon=True).start()

    def arm(self, task_id: str, seconds: float) -> None:
        with self.cond:
            token = self.armed[task_id] = next(self._tokens)
            heapq.heappush(self.heap, (time.monotonic() + seconds, token, task_id))
            self.cond.notify()

    def disarm(self, task_id: str) -> None:
        with self.cond:
            self.armed.pop(task_id, None)

    def _main(self) -> None:
        while True:
            with self.cond:
                while not self.heap:
                    self.cond.wait()
                deadline, token, tid = self.heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                heapq.heappop(self.heap)
                due = self.armed.get(tid) == token
                if due:
                    del self.armed[tid]
            if due:
                self.runner.interrupt(tid, ThreadSoftTimeLimit)


class ThreadRunner:
    """Plain tasks on threads (the threads pool): a thread per task running at once,
    started when none is free and kept for later tasks. The node decides how many run
    at once (its --concurrency, or the autoscaled size)."""

    def __init__(self, child: "Child", report: Report):
        self.child = child
        self.report = report
        self.work: queue.SimpleQueue[tuple[Submit, bytes]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.waiting = 0                         # threads waiting for work
        self.threads = 0
        self.current: dict[str, int] = {}        # task id -> ident of the thread running it
        self.stopping: set[str] = set()          # cancelled at the node's request
        self.watchdog = Watchdog(self)

    @property
    def busy(self) -> bool:
        return bool(self.current)

    def submit(self, msg: Submit, frame: bytes) -> None:
        with self.lock:
            start = self.waiting == 0
            if start:
                self.threads += 1
            else:
                self.waiting -= 1                # that thread will take this one
            self.current[msg.task_id] = 0        # running from now on (ident set by its thread)
        self.work.put((msg, frame))
        if start:
            threading.Thread(target=self._worker, name=f"mesh-worker-{self.threads}",
                             daemon=True).start()

    def interrupt(self, task_id: str, exc: type[BaseException]) -> bool:
        with self.lock:
            if task_id not in self.current:
                return False
            ident = self.current[task_id]
            if exc is TaskStopped:
                self.stopping.add(task_id)
            if ident:                             # else: its thread has not taken it yet
                _raise_in_thread(ident, exc)
            return True

    def cancel(self, task_id: str) -> None:
        self.interrupt(task_id, TaskStopped)

    def _worker(self) -> None:
        child = self.child
        mine = child.twin()                      # its own per-run state
        ident = threading.get_ident()
        while True:
            msg, frame = self.work.get()
            tid = msg.task_id
            with self.lock:
                self.current[tid] = ident
                stopped_early = tid in self.stopping   # cancelled before it started here
            soft = soft_limit_of(msg, child.app.tasks.get(msg.name), child.config.soft_time_limit)
            if soft:
                self.watchdog.arm(tid, soft)
            try:
                if stopped_early:
                    raise TaskStopped()
                done, result = mine.run_frame(frame)
            except BaseException as e:    # an interruption that landed outside the task
                done, result = _failed(msg, e, child.node_name)
            finally:
                self._forget(tid)
            if tid in self.stopping:
                self.stopping.discard(tid)
                if done.state == states.FAILURE:
                    done = dataclasses.replace(done, state=states.REVOKED)
            self.report(done, result)
            with self.lock:
                self.waiting += 1

    def _forget(self, task_id: str) -> None:
        """The task is over: no interruption may reach this thread for it any more."""
        while True:
            try:
                self.watchdog.disarm(task_id)
                with self.lock:
                    self.current.pop(task_id, None)
                    _drop_pending()
                return
            except _INTERRUPTS:
                continue


def _failed(msg: Submit, e: BaseException, node: str) -> tuple[ChildDone, bytes]:
    from mesh.node.child import exc_info_of
    res = Result(task_id=msg.task_id, state=states.FAILURE, exc=exc_info_of(e),
                 traceback="".join(traceback.format_exception(e)), node=node, retries=msg.retries)
    return ChildDone(msg.task_id, states.FAILURE, 0.0), encode(res)


class Runners:
    """What a child's main thread hands on instead of running it (see module doc)."""

    def __init__(self, child: "Child", chan: "BlockingChannel"):
        self.child = child
        self.chan = chan
        self.async_names = async_task_names(child.app)
        self.threads = ThreadRunner(child, self.report) if child.config.pool == "threads" else None
        self.aio: AsyncRunner | None = None       # started with the first async task
        self.decoded: Submit | None = None       # the Submit take() left to the main thread

    @classmethod
    def for_child(cls, child: "Child", chan: "BlockingChannel") -> "Runners | None":
        """None for a child that runs everything on its main thread (a prefork or solo
        child of an app with no async def task)."""
        if child.config.pool == "threads" or async_task_names(child.app):
            return cls(child, chan)
        return None

    @property
    def busy(self) -> bool:
        """Tasks are running here."""
        return bool((self.threads is not None and self.threads.busy)
                    or (self.aio is not None and self.aio.runs))

    def take(self, frame: bytes) -> bool:
        """Run ``frame`` here if it is ours (True); False: the main thread runs it (a
        Submit decoded here is left in ``decoded`` for it, not decoded twice)."""
        self.decoded = None
        kind = peek_type(frame)
        if kind == MsgType.CHILD_CANCEL:
            msg = decode(frame)
            assert isinstance(msg, ChildCancel)
            if self.aio is not None:
                self.aio.cancel(msg.task_id)
            if self.threads is not None:
                self.threads.cancel(msg.task_id)
            return True
        if kind != MsgType.SUBMIT:
            return False
        msg = decode(frame)
        if not isinstance(msg, Submit):
            return False
        if msg.name in self.async_names:
            if self.aio is None:
                self.aio = AsyncRunner(self.child, self.report)
            self.aio.submit(msg)
            return True
        if self.threads is not None:
            self.threads.submit(msg, frame)
            return True
        self.decoded = msg
        return False

    def report(self, done: ChildDone, result: bytes) -> None:
        self.child.finished(self.chan, done, result)
