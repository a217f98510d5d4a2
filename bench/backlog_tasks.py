"""The backlog benchmark's app (bench/backlog.py): ``bench.inc`` and ``bench.hold``,
which blocks a child until a gate file exists, so a backlog can build up behind it."""
from __future__ import annotations

import os
import time
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
