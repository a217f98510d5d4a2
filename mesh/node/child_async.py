"""``async def`` tasks in a child: an event loop on a thread of the child, many tasks at
once (the node sends at most ``--async-concurrency`` to one child).

A task's soft time limit raises SoftTimeLimitExceeded *inside* the coroutine, at the
``await`` it is suspended in (so ``except SoftTimeLimitExceeded:`` works as in a plain
task); a ChildCancel from the node (hard time limit, revoke --terminate) cancels it
(``asyncio.CancelledError`` in the coroutine: ``finally`` blocks run) and it is
reported with state REVOKED, the node then telling its owner why. A coroutine that
blocks the loop cannot be interrupted: the node kills the child after a grace.
"""
from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.exceptions import SoftTimeLimitExceeded
from mesh.trace import execute_async
from mesh.wire.protocol import ChildDone, Submit

if TYPE_CHECKING:
    from mesh.node.child import Child

Report = Callable[[ChildDone, bytes], None]


class Interruptible:
    """Await ``coro``; :meth:`interrupt` throws an exception into it where it is
    suspended. (``Task.cancel`` alone would only ever raise CancelledError there.)

    It drives the coroutine as ``await`` does, one step at a time. To interrupt, it
    cancels the asyncio task that awaits it (which wakes it from whatever future it
    waits on), catches that CancelledError, undoes the cancel request and throws the
    wanted exception into the coroutine instead."""

    def __init__(self, coro: Coroutine[Any, Any, Any]):
        self.coro = coro
        self.task: asyncio.Task[Any] | None = None
        self._pending: BaseException | None = None

    def interrupt(self, exc: BaseException) -> bool:
        """Raise ``exc`` in the coroutine at its current ``await``; False if it is not
        running (not started, or finished)."""
        task = self.task
        if task is None or task.done():
            return False
        self._pending = exc
        task.cancel()
        return True

    def __await__(self) -> Generator[Any, Any, Any]:
        self.task = asyncio.current_task()
        coro = self.coro
        value: Any = None
        throw: BaseException | None = None
        while True:
            try:
                step = coro.send(value) if throw is None else coro.throw(throw)
            except StopIteration as e:
                return e.value
            value, throw = None, None
            try:
                value = yield step
            except asyncio.CancelledError as e:
                pending, self._pending = self._pending, None
                if pending is not None and self.task is not None:
                    self.task.uncancel()        # it was our request, not a real cancel
                    throw = pending
                else:
                    throw = e
            except BaseException as e:          # thrown in by the awaiting task: pass it on
                throw = e


class _Run:
    """One async task on the loop."""

    __slots__ = ("msg", "atask", "runner", "stopping", "started")

    def __init__(self, msg: Submit):
        self.msg = msg
        self.atask: asyncio.Task[None] | None = None
        self.runner: Interruptible | None = None    # once the coroutine exists
        self.stopping = False                       # cancelled at the node's request
        self.started = False                        # its coroutine has taken a step


class AsyncRunner:
    """The child's event loop thread and the async tasks running on it."""

    def __init__(self, child: "Child", report: Report):
        self.child = child.twin()               # per-run state for this thread's runs
        self.report = report
        self.loop = asyncio.new_event_loop()
        self.runs: dict[str, _Run] = {}         # touched on the loop thread only
        self.thread = threading.Thread(target=self._main, name="mesh-async", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # -- from the child's main thread -------------------------------------------------
    def submit(self, msg: Submit) -> None:
        self.loop.call_soon_threadsafe(self._start, msg)

    def cancel(self, task_id: str) -> None:
        self.loop.call_soon_threadsafe(self._cancel, task_id)

    # -- on the loop ------------------------------------------------------------------
    def _start(self, msg: Submit) -> None:
        run = self.runs[msg.task_id] = _Run(msg)
        run.atask = self.loop.create_task(self._execute(run), name=f"task {msg.task_id}")

    def _cancel(self, task_id: str) -> None:
        run = self.runs.get(task_id)
        if run is not None and run.atask is not None:
            run.stopping = True
            if not run.started:
                # cancelled before its first step, the coroutine would end unseen: no
                # report, and the node would wait for the task for ever (a submit and
                # its cancel handled in one pass of the loop). Once it has started:
                self.loop.call_soon(self._cancel, task_id)
                return
            run.atask.cancel()

    def _soft_limit(self, run: _Run) -> None:
        if run.runner is not None:
            run.runner.interrupt(SoftTimeLimitExceeded("soft time limit exceeded"))

    async def _execute(self, run: _Run) -> None:
        msg, child = run.msg, self.child
        run.started = True
        t0 = time.perf_counter()
        try:
            state, value, exc, tb = await self._run(run)
        finally:
            self.runs.pop(msg.task_id, None)
        if run.stopping and state == states.FAILURE and exc is not None \
                and exc.get("type") == "CancelledError":
            state = states.REVOKED       # stopped when the node said so: the node says why
        # outcome() (in _run) and frames() share the twin's per-run state: no await between
        self.report(*child.frames(msg, state, value, exc, tb, time.perf_counter() - t0))

    async def _run(self, run: _Run) -> tuple[str, bytes | None, dict[str, Any] | None, str | None]:
        """Run one async task through the tracer; what Child.run_task returns."""
        from mesh.node.child import exc_info_of
        child = self.child
        try:
            task, req, soft = child.prepare(run.msg)
        except Exception as e:
            child.unrun = True
            return states.FAILURE, None, exc_info_of(e), "".join(traceback.format_exception(e))
        timer: asyncio.TimerHandle | None = None

        def interruptible(awaitable: Awaitable[Any]) -> Awaitable[Any]:
            nonlocal timer
            coro = awaitable if asyncio.iscoroutine(awaitable) else _awaiting(awaitable)
            run.runner = Interruptible(coro)
            if soft:
                timer = self.loop.call_later(soft, self._soft_limit, run)
            return run.runner

        try:
            outcome = await execute_async(task, req, interruptible)
        finally:
            if timer is not None:
                timer.cancel()
        return child.outcome(outcome)


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def soft_limit_of(msg: Submit, task: Any, default: float | None) -> float | None:
    """The soft time limit of one run: the message's, else the task's, else the node's."""
    soft = msg.soft_time_limit
    if soft is None and task is not None:
        soft = task.options.soft_time_limit
    return default if soft is None else soft
