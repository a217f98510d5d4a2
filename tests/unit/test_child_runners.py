"""The child's runners in this process (mesh/node/child_async.py, child_runners.py):
an exception thrown into a suspended coroutine, async tasks with soft limits, cancels
and retries, and plain tasks on threads with a soft limit and a cancel. The real
children run them in tests/integration/test_e2e_pools.py."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

import pytest

from mesh import Mesh, states
from mesh.config import Config
from mesh.exceptions import SoftTimeLimitExceeded
from mesh.node.child import Child
from mesh.node.child_async import AsyncRunner, Interruptible
from mesh.node.child_runners import ThreadRunner
from mesh.result import rebuild_exception
from mesh.wire import codec
from mesh.wire.protocol import ChildDone, Result, Submit, decode, encode


class Boom(Exception):
    pass


# ---- Interruptible ------------------------------------------------------------------------

def test_an_interrupt_is_raised_where_the_coroutine_waits_and_can_be_caught() -> None:
    async def fails() -> None:
        raise KeyError("in a task group")

    async def body(log: list[str]) -> str:
        try:
            await asyncio.sleep(30)
        except Boom:
            log.append("caught")
        await asyncio.sleep(0)                     # it goes on after catching it
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0   # not left "cancelling"
        try:                                       # so a task group reports its errors
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fails())
                await asyncio.sleep(30)
        except* KeyError:
            log.append("group")
        return "done"

    async def main() -> None:
        log: list[str] = []
        runner = Interruptible(body(log))
        task = asyncio.ensure_future(runner)
        await asyncio.sleep(0.01)
        assert runner.interrupt(Boom("now"))
        assert await task == "done"
        assert log == ["caught", "group"]
        assert not runner.interrupt(Boom("late"))      # finished: nothing to interrupt
    asyncio.run(main())


def test_an_uncaught_interrupt_ends_the_coroutine_and_a_real_cancel_still_cancels() -> None:
    async def main() -> None:
        runner = Interruptible(asyncio.sleep(30))
        task = asyncio.ensure_future(runner)
        await asyncio.sleep(0.01)
        runner.interrupt(Boom("now"))
        with pytest.raises(Boom):
            await task
        other = asyncio.ensure_future(Interruptible(asyncio.sleep(30)))
        await asyncio.sleep(0.01)
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await other
    asyncio.run(main())


# ---- the runners, with a real Child and a report callback ---------------------------------

app = Mesh("runners")


@app.task(name="r.nap")
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="r.soft")
async def soft(seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft"
    return "slept"


@app.task(name="r.again", bind=True, max_retries=3)
async def again(self: Any) -> None:
    raise self.retry(countdown=7)


@app.task(name="r.spin")
def spin(seconds: float) -> str:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sum(range(100))
    except SoftTimeLimitExceeded:
        return "soft"
    return "spun"


Done = tuple[ChildDone, Result]


def _msg(tid: str, name: str, *args: Any, soft_time_limit: float | None = None) -> Submit:
    return Submit(task_id=tid, name=name, payload=codec.dump_call(list(args), None),
                  soft_time_limit=soft_time_limit)


def _collect() -> tuple[queue.SimpleQueue[Done], Any]:
    q: queue.SimpleQueue[Done] = queue.SimpleQueue()

    def report(done: ChildDone, frame: bytes) -> None:
        res = decode(frame)
        assert isinstance(res, Result)
        q.put((done, res))
    return q, report


def _child(pool: str = "prefork") -> Child:
    return Child(app, Config.build(env={}, pool=pool), "n1")


def _results(q: queue.SimpleQueue[Done], n: int) -> dict[str, Done]:
    return {d.task_id: (d, r) for d, r in (q.get(timeout=10) for _ in range(n))}


def test_async_runner_runs_many_at_once_with_soft_limits_cancels_and_retries() -> None:
    q, report = _collect()
    runner = AsyncRunner(_child(), report)
    t0 = time.monotonic()
    for i in range(200):
        runner.submit(_msg(f"nap{i}", "r.nap", 0.5))
    runner.submit(_msg("soft", "r.soft", 30, soft_time_limit=0.2))
    runner.submit(_msg("stop", "r.nap", 30))
    runner.submit(_msg("retry", "r.again"))
    runner.submit(_msg("nope", "r.unknown"))
    time.sleep(0.1)
    runner.cancel("stop")
    got = _results(q, 204)
    assert time.monotonic() - t0 < 100          # 200 naps of 0.5 s one by one: 100 s
    assert all(got[f"nap{i}"][0].state == states.SUCCESS for i in range(200))
    assert codec.loads(got["soft"][1].result) == "soft"
    assert got["stop"][0].state == states.REVOKED        # the node reports why
    assert (got["retry"][0].state, got["retry"][0].countdown) == (states.RETRY, 7)
    assert got["nope"][0].state == states.FAILURE
    assert "not registered" in str(got["nope"][1].exc)


def test_async_runner_reports_a_task_cancelled_before_it_started() -> None:
    # its submit and its cancel handled in one pass of the runner's loop (a loaded CI
    # run): the task was cancelled before its first step, its coroutine ended unseen,
    # and no result was ever reported (the node would wait for it for ever)
    q, report = _collect()
    runner = AsyncRunner(_child(), report)
    gate = threading.Event()
    runner.loop.call_soon_threadsafe(gate.wait, 10)    # the loop, held
    runner.submit(_msg("early", "r.nap", 30))
    runner.cancel("early")
    gate.set()
    done, _res = q.get(timeout=10)
    assert (done.task_id, done.state) == ("early", states.REVOKED)


def test_thread_runner_runs_tasks_on_threads_with_soft_limits_and_cancels() -> None:
    q, report = _collect()
    runner = ThreadRunner(_child("threads"), report)
    for m in (_msg("soft", "r.spin", 30, soft_time_limit=0.2), _msg("stop", "r.spin", 30),
              _msg("ok", "r.spin", 0.05)):
        runner.submit(m, encode(m))
    deadline = time.monotonic() + 10
    while not runner.current.get("stop") and time.monotonic() < deadline:
        time.sleep(0.01)                         # its thread has taken it
    runner.cancel("stop")
    got = _results(q, 3)
    assert codec.loads(got["soft"][1].result) == "soft"
    assert got["stop"][0].state == states.REVOKED
    assert codec.loads(got["ok"][1].result) == "spun"
    assert runner.threads == 3 and not runner.busy
    m = _msg("later", "r.spin", 0.01)            # a free thread takes the next one
    runner.submit(m, encode(m))
    assert q.get(timeout=10)[0].state == states.SUCCESS and runner.threads == 3


def test_a_soft_limit_raised_in_a_thread_reaches_its_owner_as_soft_time_limit_exceeded() -> None:
    q, report = _collect()
    runner = ThreadRunner(_child("threads"), report)

    @app.task(name="r.spin_uncaught")
    def spin_uncaught() -> None:
        while True:
            sum(range(100))

    m = _msg("x", "r.spin_uncaught", soft_time_limit=0.1)
    runner.submit(m, encode(m))
    done, res = q.get(timeout=10)
    assert done.state == states.FAILURE
    err = rebuild_exception(res.exc, res.traceback)
    assert type(err) is SoftTimeLimitExceeded and "soft time limit" in str(err)


def test_a_trace_function_works_after_the_thread_runner_ran_and_interrupted_tasks() -> None:
    # A thread drops an interruption it may still have pending after each task. By
    # PyThreadState_SetAsyncExc(id, NULL) (until 2026-12) that left CPython 3.11's
    # "an exception is pending" flag set with none pending, and a thread traced from
    # then on (threading.settrace, sys.settrace: coverage, pdb) spun for ever: in
    # pytest, later tests' clients whose I/O thread started traced sent nothing
    q, report = _collect()
    runner = ThreadRunner(_child("threads"), report)
    for m in (_msg("ok", "r.spin", 0.01), _msg("soft", "r.spin", 30, soft_time_limit=0.1)):
        runner.submit(m, encode(m))
    assert codec.loads(_results(q, 2)["soft"][1].result) == "soft"
    calls: list[str] = []

    def trace(frame: Any, event: str, arg: Any) -> Any:
        calls.append(event)
        return None

    def traced() -> None:
        sum(range(10))
    threading.settrace(trace)
    try:
        th = threading.Thread(target=traced, daemon=True)
        th.start()
    finally:
        threading.settrace(None)
    th.join(10)
    assert not th.is_alive(), "a traced thread spins (the interpreter's flag was left set)"
    assert "call" in calls


def test_an_async_task_runs_in_eager_mode_too() -> None:
    assert nap.apply(args=(0.01,)).get() == 0.01
    assert soft.apply(args=(0.01,)).get() == "slept"

    async def from_async_code() -> Any:
        return nap.apply(args=(0.02,)).get()      # a loop runs here: apply uses a thread
    assert asyncio.run(from_async_code()) == 0.02
    r = again.apply()                             # retries at once, then gives up
    assert r.state == states.FAILURE and r.retries == 3
