"""The workflow benchmark's app (bench/workflows.py): no-op tasks."""
from __future__ import annotations

from mesh import Mesh

app = Mesh("bench-wf")


@app.task(name="bench.noop")
def noop(x: int) -> int:
    return x


@app.task(name="bench.inc")
def inc(x: int) -> int:
    return x + 1


@app.task(name="bench.count")
def count(xs: list[int]) -> int:
    return len(xs)
