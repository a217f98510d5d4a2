"""Tasks for the routing tests (test_e2e_routing.py): queues by option, by task_routes
globs and by call, and a mesh-wide rate limit. Nodes run it as ``--app routing_app``."""
from __future__ import annotations

import time
from typing import Any

from mesh import Mesh

app = Mesh("routing-it", mdns=False)
app.conf.task_routes = {"routing_app.report_*": {"queue": "reports"}}

MESH_RATE = 15.0          # starts per second, for the whole mesh


@app.task(bind=True)
def where(self: Any) -> str:
    return str(self.request.hostname)


@app.task(bind=True)
def report_daily(self: Any) -> str:          # routed to "reports" by task_routes
    return str(self.request.hostname)


@app.task(bind=True, queue="media")
def transcode(self: Any) -> str:             # its own queue
    return str(self.request.hostname)


@app.task(mesh_rate_limit=f"{MESH_RATE:g}/s")
def limited() -> float:
    return time.time()
