"""Waiting on an AsyncResult, sync and async, against a bare Slot (what the client's I/O
thread completes): a timeout raises TimeoutError and leaves no waiter behind; a result
completed from another thread wakes both get() and await."""
from __future__ import annotations

import asyncio
import threading

import pytest

from mesh import states
from mesh.exceptions import TimeoutError
from mesh.result import AsyncResult, Slot
from mesh.wire import codec
from mesh.wire.protocol import Result


def done(slot: Slot, value: object) -> None:
    assert slot.complete(Result(slot.task_id, states.SUCCESS, codec.dumps(value)))


def test_get_times_out_with_timeout_error_and_forgets_its_waiter() -> None:
    slot = Slot("t-1", b"frame")
    r = AsyncResult("t-1", None, slot)
    with pytest.raises(TimeoutError, match="t-1"):
        r.get(timeout=0.01)
    assert not slot.waiters
    done(slot, 7)
    assert r.get(timeout=0.01) == 7


def test_get_is_woken_by_a_result_from_another_thread() -> None:
    slot = Slot("t-2", b"frame")
    r = AsyncResult("t-2", None, slot)
    timer = threading.Timer(0.01, done, (slot, "late"))
    timer.start()
    assert r.get(timeout=30) == "late"
    timer.join()
    assert slot.waiters is None


def test_await_is_woken_by_a_result_from_another_thread_and_forgets_its_waiter() -> None:
    slot = Slot("t-3", b"frame")
    r = AsyncResult("t-3", None, slot)

    async def main() -> object:
        task = asyncio.ensure_future(r._aget())
        while not slot.waiters:                 # the awaiting coroutine is registered
            await asyncio.sleep(0)
        threading.Thread(target=done, args=(slot, [1, 2])).start()
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(main()) == [1, 2]
    assert slot.waiters is None


def test_a_cancelled_await_removes_its_waiter_only() -> None:
    slot = Slot("t-4", b"frame")
    other = []
    assert slot.add_waiter(lambda: other.append(1))

    async def main() -> None:
        task = asyncio.ensure_future(AsyncResult("t-4", None, slot)._aget())
        while slot.waiters is not None and len(slot.waiters) < 2:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert slot.waiters is not None and len(slot.waiters) == 1
    done(slot, None)
    assert other == [1]


def test_await_raises_the_tasks_exception_as_get_does() -> None:
    slot = Slot("t-5", b"frame")
    assert slot.complete(Result("t-5", states.FAILURE, exc={
        "type": "ValueError", "module": "builtins", "message": "bad", "args": codec.dumps(["bad"])}))
    r = AsyncResult("t-5", None, slot)
    with pytest.raises(ValueError, match="bad"):
        asyncio.run(r._aget())
    with pytest.raises(ValueError, match="bad"):
        r.get(timeout=1)
    assert isinstance(r.get(timeout=1, propagate=False), ValueError)


def test_get_without_a_timeout_uses_the_apps_result_timeout() -> None:
    from mesh import Mesh
    app = Mesh("waits", peers=["tcp://127.0.0.1:9"], mdns=False, result_timeout=0.01)
    slot = Slot("t-6", b"frame")
    with pytest.raises(TimeoutError, match="within 0.01 s"):
        AsyncResult("t-6", app, slot).get()


@pytest.mark.parametrize("timeout", [float("inf"), 1e300, threading.TIMEOUT_MAX])
def test_get_with_a_timeout_past_what_a_lock_waits_waits_for_the_result(timeout: float) -> None:
    # (a lock's wait takes at most threading.TIMEOUT_MAX s: get(timeout=inf), and
    # 'meshctl call --wait --result-timeout inf', ended in OverflowError at once, the
    # task said PENDING while it ran)
    slot = Slot("t-inf", b"frame")
    r = AsyncResult("t-inf", None, slot)
    timer = threading.Timer(0.05, done, (slot, "late"))
    timer.start()
    assert r.get(timeout=timeout) == "late"
    timer.join()
    assert slot.waiters is None
