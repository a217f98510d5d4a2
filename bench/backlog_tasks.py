"""The backlog benchmark's app (bench/backlog.py): ``bench.inc`` and ``bench.hold``,
which blocks a child until a gate file exists, so a backlog can build up behind it.

With ``MESH_BENCH_SNAPSHOTS`` set (``bench.backlog --tracemalloc``: the node runs with
``PYTHONTRACEMALLOC``), SIGUSR1 makes the node dump a tracemalloc snapshot there."""
from __future__ import annotations

import os
import signal
import time
import tracemalloc
from collections.abc import Iterable

from bench.tasks import TASK_NAME, inc
from mesh import Mesh

HOLD = "bench.hold"


def hold(gate: str, timeout: float = 3600.0) -> str:
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "opened"


def make_app(peers: Iterable[str] | None = None) -> Mesh:
    a = Mesh("bench", peers=peers, mdns=False) if peers is not None else Mesh("bench")
    a.task(name=TASK_NAME)(inc)
    a.task(name=HOLD)(hold)
    return a


app = make_app()


def _dump_snapshot(signum: int, frame: object) -> None:
    where = os.environ["MESH_BENCH_SNAPSHOTS"]
    n = len(os.listdir(where))
    tracemalloc.take_snapshot().dump(os.path.join(where, f"{os.getpid()}-{n}.snap"))


if os.environ.get("MESH_BENCH_SNAPSHOTS") and tracemalloc.is_tracing():
    signal.signal(signal.SIGUSR1, _dump_snapshot)
