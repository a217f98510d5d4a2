"""Heartbeat: the node's load and resources, measured once a second.

Throughput (finished tasks/s, smoothed), CPU and RSS of the node and its children
(mesh/node/procstat.py), a ``node-heartbeat`` event every ``HEARTBEAT_INTERVAL`` (Celery's
worker-heartbeat) with the Lamport clock merged with the clocks peers gossip.
``status`` reads these figures; gossip carries them (``Members.local_meta``).
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from mesh import __version__
from mesh.node.component import Component
from mesh.node.events import HEARTBEAT_INTERVAL, MAX_CLOCK
from mesh.node.naps import aligned
from mesh.node.procstat import Proc, ProcessGone
from mesh.security.text import printable, safe_logger

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.events")

TICK = 1.0           # s between samples
STALE = 0.5          # s after which status samples again rather than use the last figures


class Heartbeat(Component):
    name = "heartbeat"
    requires = ("events", "pool")

    def __init__(self) -> None:
        self.rate = 0.0                            # finished tasks/s, smoothed
        self.cpu = 0.0
        self.rss = 0
        self._proc = Proc()
        self._child_procs: dict[int, Proc] = {}
        self._sampled = 0.0
        self._heartbeat_at = 0.0
        self._bad_clocks: set[str] = set()         # peers whose clock was said not taken

    async def start(self, node: "Node") -> None:
        self.node = node
        node.heartbeat = self
        node.spawn(self._loop(), name="heartbeat")

    async def _loop(self) -> None:
        node = self.node
        last_done, last_t = node.ledger.processed(), time.monotonic()
        self._proc.cpu_percent()
        while True:
            await aligned(TICK)                  # (with the node's other 1 s looks)
            now, done = time.monotonic(), node.ledger.processed()
            inst = (done - last_done) / max(now - last_t, 1e-6)
            self.rate = inst if self.rate == 0 else 0.5 * self.rate + 0.5 * inst
            last_done, last_t = done, now
            self.sample()
            if now - self._heartbeat_at >= HEARTBEAT_INTERVAL:
                self._heartbeat_at = now
                self.merge_clocks()
                node.events.emit("node-heartbeat", **self.node_fields())

    def merge_clocks(self) -> None:
        """Lamport: our clock is never behind a peer's (gossiped in its meta)."""
        for m in self.node.membership.alive_members(include_self=False):
            c = m.meta.get("clock")
            if type(c) is int and not self.node.events.tick(c) and m.id not in self._bad_clocks:
                self._bad_clocks.add(m.id)
                log.warning("member %s gossips a clock of %d, past any real one (%d): not "
                            "taken (said once)", printable(m.id), c, MAX_CLOCK)

    def fresh(self) -> None:
        """Sample now unless the figures are recent (status asks for them)."""
        if time.monotonic() - self._sampled > STALE:
            self.sample()

    def sample(self) -> None:
        pids = set(self.node.pool.pids())
        for pid in list(self._child_procs):
            if pid not in pids:
                del self._child_procs[pid]
        cpu, rss = self._proc.cpu_percent(), self._proc.rss()
        for pid in pids:
            p = self._child_procs.get(pid)
            try:
                if p is None:
                    p = self._child_procs[pid] = Proc(pid)
                    p.cpu_percent()
                cpu += p.cpu_percent()
                rss += p.rss()
            except ProcessGone:
                pass
        self.cpu, self.rss = cpu, rss
        self._sampled = time.monotonic()

    def node_fields(self) -> dict[str, Any]:
        """The fields of node-online/-heartbeat/-offline events."""
        node = self.node
        busy, total, queued = node.load()
        return {"address": node.address, "freq": HEARTBEAT_INTERVAL, "active": busy,
                "total": total, "queued": queued, "processed": node.ledger.processed(),
                "tasks_per_s": round(self.rate, 1), "cpu_percent": round(self.cpu, 1),
                "rss_bytes": self.rss, "loadavg": list(os.getloadavg()), "pid": os.getpid(),
                "version": __version__}
