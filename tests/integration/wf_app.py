"""Tasks for the workflow tests (tests/integration/test_e2e_workflows.py), run by real
``meshnode --app wf_app`` processes. Tasks that must be counted append a line to a
file named by the test, so "ran once" is read from the file, not believed."""
from __future__ import annotations

import os
import time
from typing import Any

from mesh import Mesh
from mesh.task import Request

app = Mesh("mesh-it-wf", mdns=False)


class StepError(Exception):
    """A step's own failure, importable by the tests."""


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@app.task(name="wf.add")
def add(x: int, y: int = 0) -> int:
    return x + y


@app.task(name="wf.tsum")
def tsum(xs: list[int]) -> int:
    return sum(xs)


@app.task(name="wf.boom")
def boom(*args: Any) -> None:
    raise StepError(f"boom {list(args)}")


@app.task(name="wf.append")
def append(path: str, value: int, pause: float = 0.0) -> int:
    """Record a run of this header task (value) in ``path``, after ``pause`` s."""
    if pause:
        time.sleep(pause)
    _append(path, f"member {value}")
    return value


@app.task(name="wf.body")
def body(values: list[int], path: str) -> int:
    """A chord body that records each run: the test counts them."""
    total = sum(values)
    _append(path, f"body {total} {len(values)}")
    return total


@app.task(name="wf.on_error")
def on_error(request: Request, exc: BaseException, traceback: str | None, path: str) -> str:
    _append(path, f"error {request.id} {request.task} {type(exc).__name__} {exc}")
    return "handled"


@app.task(name="wf.on_error_in_group")
def on_error_in_group(request: Request, exc: BaseException, traceback: str | None, path: str) -> None:
    _append(path, f"error {request.id} {request.task} {request.group} {type(exc).__name__} {exc}")


@app.task(name="wf.old_style_errback")
def old_style_errback(task_id: str, path: str) -> None:
    _append(path, f"old {task_id}")


@app.task(name="wf.slow")
def slow(path: str, value: int, pause: float) -> int:
    """Record its start, sleep ``pause`` s, record its end: the test counts runs."""
    _append(path, f"start {value}")
    time.sleep(pause)
    _append(path, f"member {value}")
    return value


@app.task(name="wf.replaced", bind=True)
def replaced(self: Any, x: int, how: str = "task", path: str = "", pause: float = 0.0) -> Any:
    """Replace itself (Task.replace) with what ``how`` names; records its runs in
    ``path`` (with its replaced_task_nesting) when given."""
    from mesh import chain, chord, group
    if path:
        _append(path, f"replaced {x} {self.request.replaced_task_nesting}")
    if how == "task":
        raise self.replace(add.s(x, 100))
    if how == "chain":
        return self.replace(chain(add.s(x, 1), add.s(10)))
    if how == "group":
        raise self.replace(group(add.s(x, i) for i in range(3)))
    if how == "chord":
        raise self.replace(chord((add.s(x, i) for i in range(3)), tsum.s()))
    if how == "fail":
        raise self.replace(boom.s(x))
    if how == "slow":           # on the queue "slowq" (only some nodes serve it)
        raise self.replace(slow.s(path, x, pause).set(queue="slowq"))
    if how == "twice":          # a replacement that replaces itself once more
        raise self.replace(replaced.s(x, "task", path))
    if how == "forever":
        raise self.replace(replaced.s(x, "forever", path))
    return x


@app.task(name="wf.record")
def record(value: Any, path: str) -> Any:
    """A link callback that records the value it was given."""
    _append(path, f"linked {value}")
    return value
