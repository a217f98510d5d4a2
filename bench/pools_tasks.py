"""The pool benchmark's app (bench/pools.py): an async nap and a plain one, each
reporting how many ran at once in its child."""
from __future__ import annotations

import asyncio
import threading
import time

from mesh import Mesh

app = Mesh("bench-pools")

_inflight = 0
_peak = 0
_lock = threading.Lock()


def _enter() -> None:
    global _inflight, _peak
    with _lock:
        _inflight += 1
        _peak = max(_peak, _inflight)


def _leave() -> int:
    global _inflight
    with _lock:
        _inflight -= 1
        return _peak


@app.task(name="bench.anap")
async def anap(seconds: float) -> int:
    _enter()
    try:
        await asyncio.sleep(seconds)
    finally:
        peak = _leave()
    return peak


@app.task(name="bench.nap")
def nap(seconds: float) -> int:
    _enter()
    try:
        time.sleep(seconds)
    finally:
        peak = _leave()
    return peak
