"""Tasks for the Task API tests (tests/integration/test_e2e_compat.py), run by real
nodes as ``--app compat_app``; the tests import the same module, so names and
exception types agree. Handlers run in the node's children: they write what they see
as JSON lines to a file the test names, so the test can read it."""
from __future__ import annotations

import json
import os
import time
from typing import Any

from mesh import Mesh
from mesh.exceptions import Ignore, Reject

app = Mesh("mesh-compat", mdns=False)
# settings made in code reach meshnode: its pool size, and task options from the settings
app.conf.update(worker_concurrency=3, result_expires=3600,
                task_annotations={"compat_app.annotated": {"track_started": True}})

GATE_TIMEOUT = 90.0


def wait_for(path: str, timeout: float = GATE_TIMEOUT) -> None:
    """Block until the test opens the gate ``path``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was not opened within {timeout} s")
        time.sleep(0.005)


def record(log: str, *event: Any) -> None:
    with open(log, "a") as f:
        f.write(json.dumps(list(event), default=repr) + "\n")


class Recorded(app.Task):  # type: ignore[name-defined,misc]
    """Every handler writes a line to the file given as the task's ``log`` keyword."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        record(kwargs["log"], "before_start", task_id, args, self.request.retries)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        record(kwargs["log"], "on_success", retval, task_id)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        record(kwargs["log"], "on_failure", type(exc).__name__, str(exc),
               "Traceback" in einfo.traceback, os.getpid())

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        record(kwargs["log"], "on_retry", type(exc).__name__, str(exc))

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        record(kwargs["log"], "after_return", status)


@app.task(base=Recorded, bind=True, max_retries=1)
def handled(self: Any, mode: str, *, log: str) -> Any:
    if mode == "fail":
        raise ValueError("handled failure")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(exc=OSError("first run"), countdown=0.05)
    return {"mode": mode, "retries": self.request.retries, "pid": os.getpid()}


class Wrapped(app.Task):  # type: ignore[name-defined,misc]
    """A base class whose __call__ wraps every run (Flask's app-context pattern)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        os.environ["COMPAT_WRAPPED"] = "inside"
        try:
            return super().__call__(*args, **kwargs)
        finally:
            os.environ.pop("COMPAT_WRAPPED", None)


@app.task(base=Wrapped, bind=True)
def wrapped(self: Any) -> Any:
    return [os.environ.get("COMPAT_WRAPPED"), self.request.id]


@app.task(bind=True)
def progress(self: Any, gate_prefix: str, steps: int) -> str:
    """Report PROGRESS before each step; each step waits for its gate file."""
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"done": i, "of": steps})
        wait_for(f"{gate_prefix}.{i}")
    return "finished"


@app.task(track_started=True)
def tracked(gate: str) -> str:
    wait_for(gate)
    return "tracked"


@app.task
def annotated(gate: str) -> str:
    """track_started comes from app.conf's task_annotations, not from an option."""
    wait_for(gate)
    return "annotated"


@app.task(ignore_result=True)
def quiet(x: int) -> int:
    return x * 2


@app.task(ignore_result=True, store_errors_even_if_ignored=True)
def quiet_failure() -> None:
    raise KeyError("kept although ignore_result")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def gated(gate: str) -> str:
    wait_for(gate)
    return "opened"


@app.task(bind=True, max_retries=3)
def halve_until_small(self: Any, n: int) -> dict[str, int]:
    """retry(args=...): each run gets the next, smaller argument."""
    if n > 1:
        raise self.retry(args=(n // 2,), countdown=0.01)
    return {"n": n, "retries": self.request.retries}


@app.task(autoretry_for=(OSError,), dont_autoretry_for=(FileNotFoundError,),
          retry_kwargs={"max_retries": 2, "countdown": 0.01}, bind=True)
def auto(self: Any, kind: str) -> None:
    raise (FileNotFoundError if kind == "missing" else OSError)(f"{kind} at {self.request.retries}")


@app.task
def skip() -> None:
    raise Ignore()


@app.task
def refuse(reason: str) -> None:
    raise Reject(reason, requeue=False)


@app.task(bind=True)
def headers_seen(self: Any) -> Any:
    return {"shadow": self.request.shadow, "trace": self.request.headers.get("trace")}
