"""Tasks for tests/integration/test_e2e_celery_semantics.py: Celery idioms checked on
real ``meshnode --app celery_sem_app`` processes. Tasks that must be counted append a
line to a file named by the test."""
from __future__ import annotations

import os
import time
from typing import Any

from mesh import Mesh

app = Mesh("mesh-it-celery-sem", mdns=False)


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@app.task(name="cs.add")
def add(x: int, y: int = 0) -> int:
    return x + y


@app.task(name="cs.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="cs.tsum")
def tsum(xs: list[int]) -> int:
    return sum(xs)


@app.task(name="cs.boom")
def boom(*args: Any) -> None:
    raise ValueError(f"boom {list(args)}")


@app.task(name="cs.record")
def record(value: Any, path: str) -> Any:
    """A callback that records the value it was given."""
    _append(path, repr(value))
    return value


@app.task(name="cs.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="cs.request", bind=True)
def request(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The fields of ``self.request`` Celery code reads."""
    r = self.request
    out = {key: getattr(r, key) for key in (
        "id", "args", "kwargs", "retries", "is_eager", "root_id", "parent_id", "group",
        "group_index", "delivery_info", "hostname", "correlation_id", "timelimit")}
    out["get"] = [r.get("id"), r.get("no_such_field", "dflt"), r.get("delivery_info")]
    return out


@app.task(name="cs.expected", throws=(KeyError,))
def expected(key: str) -> None:
    """Celery's ``throws``: a KeyError is an expected failure, anything else is not."""
    if key == "other":
        raise ValueError("not expected")
    raise KeyError(key)


@app.task(name="cs.options", trail=True, send_events=True, store_eager_result=True,
          acks_on_failure_or_timeout=True, resultrepr_maxsize=100)
def options() -> str:
    """Celery task options mesh has no use for: taken (and logged), not refused."""
    return "ok"
