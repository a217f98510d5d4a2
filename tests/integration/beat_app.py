"""Periodic tasks for the beat tests (tests/integration/test_e2e_beat.py).

``tick`` appends one line per run to the file named by BEAT_LOG: the run's due time
(from its request headers), its entry, the node's pid and its task id and when it ran, so a test can
count executions per due time across nodes that are killed.
"""
from __future__ import annotations

import os
import time
from typing import Any

from mesh import Mesh

app = Mesh("mesh-beat-it", mdns=False)
LONG_NAMES = ("reports.weekly-summary-mail",       # 27 characters: more than 24, a row of its own
              "reports.nightly-export-of-every-invoice-to-the-archive-eu",
              "reports.nightly-export-of-every-invoice-to-the-archive-us")


@app.task(bind=True)
def tick(self: Any) -> float:
    headers = self.request.headers
    due = headers.get("periodic_due")
    gate = os.environ.get("BEAT_GATE")        # runs wait for this file (runs in flight)
    deadline = time.monotonic() + 60
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    path = os.environ.get("BEAT_LOG")
    if path:
        line = (f"{due!r} {headers.get('periodic_entry')} {os.getppid()} {self.request.id} "
                f"{time.time():.3f}\n")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return float(due)


@app.on_after_configure.connect
def setup_periodic_tasks(sender: Mesh, **kwargs: Any) -> None:
    sender.add_periodic_task(float(os.environ.get("BEAT_EVERY", "1")), tick.s(), name="tick")
    lon = os.environ.get("BEAT_SOLAR_NOON_LON")       # Celery's solar schedule, by longitude
    if lon:
        from mesh.schedules import solar
        sender.add_periodic_task(solar("solar_noon", 0.0, float(lon)), tick.s(), name="noon")
    if os.environ.get("BEAT_LONG_NAMES"):            # names meshctl beat must show whole
        for name in LONG_NAMES:
            sender.add_periodic_task(3600.0, tick.s(), name=name)
    if os.environ.get("BEAT_SOLAR_POLE"):            # a solar event with no run ahead
        from mesh.schedules import solar
        sender.add_periodic_task(solar("sunrise", -90.0, 0.0), tick.s(), name="pole")
