"""Tasks for the integration suite, run by real ``meshnode`` processes.

Nodes load this module as ``--app tasks_app`` and the tests import it as
``tasks_app`` too, so task names (``tasks_app.add``) and exception types agree on
both sides. Keep it free of side effects at import: every node imports it.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import time
from typing import Any

from mesh import Mesh
from mesh.exceptions import SoftTimeLimitExceeded

app = Mesh("mesh-it", mdns=False)

SOFT_LIMIT_MARKER = "soft time limit caught"
NODE_ONLY_MODULE = "mesh_it_node_only"   # a module name no client can import
GATE_TIMEOUT = 90.0                      # s a gated task waits before giving up

_hoard: list[bytes] = []                 # what hog() allocated; kept alive on purpose
_counter = itertools.count(1)


class CustomError(Exception):
    """A task's own exception type, importable by the tests."""

    def __init__(self, message: str, code: int):
        super().__init__(message, code)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


@app.task
def add(x: Any, y: Any) -> Any:
    return x + y


@app.task
def echo(value: Any) -> Any:
    return value


@app.task
def fail(message: str, code: int) -> None:
    raise CustomError(message, code)


@app.task
def fail_file_not_utf8() -> None:
    """Fails with a text that is not valid UTF-8: a lone surrogate, as os.fsdecode
    makes of a file name in another encoding."""
    raise ValueError("cannot read " + os.fsdecode(b"caf\xe9.csv"))


@app.task
def fail_node_only(message: str) -> None:
    """Raise an exception whose type lives in a module that exists only here."""
    cls = type("NodeOnlyError", (Exception,), {"__module__": NODE_ONLY_MODULE})
    raise cls(message)


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def wait_for_file(path: str, timeout: float = GATE_TIMEOUT) -> str:
    """Block until ``path`` exists (a gate the test opens), so tests order events
    without depending on how fast the machine is."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was not opened within {timeout} s")
        time.sleep(0.005)
    return "opened"


@app.task
def blob(size: int, gate: str) -> str:
    """``size`` bytes of text, once ``gate`` exists: a big value made from a small frame."""
    wait_for_file(gate)
    return "x" * size


@app.task
def spin_until_soft_limit(cap: float = 30.0) -> str:
    """Burn CPU until the soft time limit interrupts us; return a marker."""
    deadline = time.monotonic() + cap
    try:
        while time.monotonic() < deadline:
            pass
    except SoftTimeLimitExceeded:
        return SOFT_LIMIT_MARKER
    return "no soft time limit within the cap"


@app.task
def spin(seconds: float) -> str:
    """Burn CPU for ``seconds`` without catching anything."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "finished"


@app.task
def exit_child(code: int) -> None:
    os._exit(code)


@app.task
def segfault() -> None:
    ctypes.string_at(0)


@app.task
def hog(mib: int) -> int:
    """Allocate and touch ``mib`` MiB, keep it, return this process's RSS in KiB."""
    _hoard.append(b"\xa5" * (mib * 1024 * 1024))
    return _rss_kib()


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def gc_frozen() -> int:
    """Objects in the collector's permanent generation (meshnode freezes what it
    loaded before forking its children)."""
    import gc
    return gc.get_freeze_count()


@app.task
def loaded(names: list[str]) -> list[str]:
    """Which of these modules the child running the task has imported."""
    import sys
    return [n for n in names if n in sys.modules]


@app.task
def stamp() -> float:
    """When the task started, in unix time."""
    return time.time()


@app.task
def seq() -> int:
    """The order in which this child ran its seq() calls."""
    return next(_counter)


@app.task(bind=True)
def request_info(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = self.request
    return {"id": r.id, "task": r.task, "args": r.args, "kwargs": r.kwargs,
            "retries": r.retries, "hostname": r.hostname, "priority": r.priority,
            "eta": r.eta, "expires": r.expires, "time_limit": r.time_limit,
            "soft_time_limit": r.soft_time_limit, "called_directly": r.called_directly,
            "pid": os.getpid()}


# ---- retries --------------------------------------------------------------------------

def _bump(path: str) -> int:
    """Count calls in a file (children are separate processes): the new count."""
    n = int(open(path).read()) + 1 if os.path.exists(path) else 1
    with open(path, "w") as f:
        f.write(str(n))
    return n


@app.task(bind=True)
def flaky(self: Any, path: str, fail_times: int, countdown: float = 0.05) -> dict[str, int]:
    """Fails ``fail_times`` times (asking for a retry each time), then succeeds."""
    if _bump(path) <= fail_times:
        raise self.retry(exc=OSError(f"flaky, attempt {self.request.retries + 1}"), countdown=countdown)
    return {"retries": self.request.retries}


@app.task(bind=True, max_retries=2)
def retry_then_fail(self: Any) -> None:
    raise self.retry(exc=ValueError(f"still broken after {self.request.retries} retries"),
                     countdown=0.05)


@app.task(bind=True, max_retries=1)
def retry_without_exc(self: Any) -> None:
    raise self.retry(countdown=0.01)


@app.task(autoretry_for=(OSError,), max_retries=3, retry_backoff=0.05, retry_jitter=False)
def auto_flaky(path: str, fail_times: int) -> int:
    n = _bump(path)
    if n <= fail_times:
        raise OSError(f"auto flaky, call {n}")
    return n


@app.task(autoretry_for=(KeyError,), max_retries=1, default_retry_delay=0.05)
def auto_exhausted(path: str) -> None:
    _bump(path)
    raise KeyError("never there")


@app.task(acks_late=False)
def wait_for_file_once(path: str, timeout: float = GATE_TIMEOUT) -> str:
    """wait_for_file, acknowledged early: at most once, never run a second time."""
    return str(wait_for_file(path, timeout))


@app.task(reject_on_worker_lost=True)
def exit_child_once(marker: str) -> int:
    """Kill its child the first time (leaving ``marker``); return the runs after that."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("1")
        os._exit(1)
    with open(marker) as f:
        runs = int(f.read()) + 1
    with open(marker, "w") as f:
        f.write(str(runs))
    return runs


@app.task(reject_on_worker_lost=True)
def exit_child_always() -> None:
    os._exit(1)


@app.task
def append_line(path: str, line: str) -> str:
    """Append ``line`` to ``path`` (one line per run: tests count the runs)."""
    with open(path, "a") as f:
        f.write(line + "\n")
    return line


@app.task(bind=True)
def retry_after_gate(self: Any, gate: str, marker: str, countdown: float = 0.5) -> dict[str, Any]:
    """Wait for ``gate``; the first run then asks for a retry (leaving ``marker``),
    the next one returns where it ran."""
    wait_for_file(gate)
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(self.request.hostname or "")
        raise self.retry(countdown=countdown)
    return {"retries": self.request.retries, "node": self.request.hostname}


BACKOFF_MAX = 5000.0


@app.task(autoretry_for=(OSError,), max_retries=None, retry_backoff=1, retry_backoff_max=BACKOFF_MAX,
          retry_jitter=False)
def always_retry() -> None:
    """Retries by itself forever, 1, 2, 4, 8 ... s apart (capped): the backoff is read
    from its RETRY results."""
    raise OSError("always")


@app.task
def step(log: str, x: int, gate: str = "", die: bool = False) -> int:
    """Short unless gated: waits for ``gate`` (if given), then records ``x`` in
    ``log`` (one line per run) and returns it; ``die``: the child exits instead, after
    the gate (tests of tasks sent ahead to a child, mesh/node/pool_ahead.py)."""
    if gate:
        wait_for_file(gate)
    if die:
        os._exit(1)
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x
