"""A user component: every node writes its figures to a JSON file, and says so.

    from examples.stats_exporter import StatsExporter
    app.components.add(StatsExporter)          # in the module meshnode --app loads

Each node then writes ``<data dir>/stats.json`` every ``interval`` seconds (the same
report as ``meshctl status --json``, plus what it knows of its peers), publishes an
``exporter-wrote`` event (``meshctl events`` shows it), and on shutdown writes a last
report with ``"final": true``. See docs/components.md.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from mesh import Component

log = logging.getLogger("examples.stats_exporter")


class StatsExporter(Component):
    name = "stats-exporter"
    requires = ("pool",)          # start after the pool: its figures are there to read
    interval = 1.0                # seconds between reports

    async def start(self, node: Any) -> None:
        self.path = os.path.join(node.config.data_path, "stats.json")
        self.writes = 0
        node.spawn(self._loop(node), name="stats-exporter")
        log.info("stats exporter: writing %s every %g s", self.path, self.interval)

    async def _loop(self, node: Any) -> None:
        while True:
            self.write(node)
            await asyncio.sleep(self.interval)

    async def stop(self, node: Any) -> None:
        self.write(node, final=True)

    def write(self, node: Any, final: bool = False) -> None:
        report = {"at": time.time(), "final": final, "stats": node.stats(),
                  "members": [(m["node"], m["state"]) for m in node.members()]}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:          # a small file: quick enough for the loop
            json.dump(report, f)
        os.replace(tmp, self.path)         # readers never see half a report
        self.writes += 1
        node.publish("exporter-wrote", path=self.path, writes=self.writes, final=final)
