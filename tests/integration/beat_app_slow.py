"""beat_app whose node blocks its event loop for BEAT_SLOW_START seconds while it starts
(an app component doing heavy imports, as the dashboard's aiohttp import does on a slow
machine: 2.4 s in the LAN trial), for test_e2e_beat.py: a node must not count that
time as time spent learning the mesh before it fires."""
from __future__ import annotations

import os
import time
from typing import Any

from beat_app import app, tick  # noqa: F401  (the node serves beat_app's tasks and schedule)

from mesh import Component


class SlowStart(Component):
    name = "slow-start"

    async def start(self, node: Any) -> None:
        time.sleep(float(os.environ.get("BEAT_SLOW_START", "0")))   # blocks the loop, on purpose


app.components.add(SlowStart)
