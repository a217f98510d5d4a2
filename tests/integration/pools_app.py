"""Tasks for the pool tests (tests/integration/test_e2e_pools.py): async def tasks,
and plain ones that tell which process and thread ran them. Nodes load it as
``--app pools_app``; the tests import it under the same name."""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Any

from mesh import Mesh
from mesh.exceptions import SoftTimeLimitExceeded

app = Mesh("mesh-it-pools", mdns=False)

SOFT_LIMIT_MARKER = "soft time limit caught"
GATE_TIMEOUT = 90.0

_inflight = 0              # async tasks running in this child now (one event loop: no lock)
_peak = 0                  # the most seen at once
_threads_inflight = 0
_threads_peak = 0
_lock = threading.Lock()


@app.task
async def nap(seconds: float) -> dict[str, int]:
    """Sleep on the child's event loop; report how many naps ran at once."""
    global _inflight, _peak
    _inflight += 1
    _peak = max(_peak, _inflight)
    try:
        await asyncio.sleep(seconds)
    finally:
        _inflight -= 1
    return {"peak": _peak, "pid": os.getpid()}


@app.task(bind=True)
async def whoami(self: Any, value: Any) -> dict[str, Any]:
    """The request context is the task's own in an async task too."""
    await asyncio.sleep(0.01)
    return {"id": self.request.id, "value": value, "pid": os.getpid()}


class Recorded(app.Task):
    """Handlers run for async tasks as for plain ones: each writes a line to a file."""

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        with open(args[0], "a") as f:
            f.write(f"failure {type(exc).__name__}\n")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        with open(args[0], "a") as f:
            f.write(f"success {retval}\n")


@app.task(bind=True, base=Recorded)
async def async_progress(self: Any, log: str, gate: str, fail: bool = False) -> str:
    """Report PROGRESS, wait for the gate file, then succeed or fail."""
    self.update_state(state="PROGRESS", meta={"waiting": gate})
    while not os.path.exists(gate):
        await asyncio.sleep(0.005)
    if fail:
        raise KeyError("asked to fail")
    return "done"


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@app.task
async def async_fail(message: str) -> None:
    await asyncio.sleep(0)
    raise ValueError(message)


@app.task
async def async_soft(seconds: float) -> str:
    """Sleep; the soft time limit interrupts the sleep and is caught here."""
    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        return SOFT_LIMIT_MARKER
    return "slept"


@app.task
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task
async def async_wait_for_file(path: str, timeout: float = GATE_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was not opened within {timeout} s")
        await asyncio.sleep(0.005)
    return "opened"


@app.task
async def async_block(seconds: float) -> str:
    """Blocks the child's event loop (a bug in a real task): only a kill stops it."""
    time.sleep(seconds)
    return "blocked"


@app.task
def where() -> dict[str, Any]:
    """The process and thread that ran this plain task, and how many ran at once."""
    global _threads_inflight, _threads_peak
    with _lock:
        _threads_inflight += 1
        _threads_peak = max(_threads_peak, _threads_inflight)
    try:
        time.sleep(0.05)
    finally:
        with _lock:
            _threads_inflight -= 1
    return {"pid": os.getpid(), "thread": threading.current_thread().name, "peak": _threads_peak}


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def spin_until_soft_limit(cap: float = 30.0) -> str:
    """Busy Python code until the soft limit interrupts it (caught here)."""
    deadline = time.monotonic() + cap
    try:
        while time.monotonic() < deadline:
            sum(range(1000))
    except SoftTimeLimitExceeded:
        return SOFT_LIMIT_MARKER
    return "not interrupted"


@app.task
def spin(seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(1000))
    return "finished"


@app.task
def wait_for_file(path: str, timeout: float = GATE_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was not opened within {timeout} s")
        time.sleep(0.005)
    return "opened"


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def traced(n: int) -> int:
    """Count the calls of a loop under a trace function (what coverage, pdb or a tracing
    profiler does in a task); after an earlier task, on a threads pool's thread, this
    spun for ever on CPython 3.11 until 2026-12 (mesh/node/child_runners.py)."""
    calls = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal calls
        calls += event == "call"
        return None

    def step(i: int) -> int:
        return i

    sys.settrace(trace)
    try:
        for i in range(n):
            step(i)
    finally:
        sys.settrace(None)
    return calls
