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
