"""Discovery glue: this node on mDNS (mesh/discovery/mdns.py).

The node announces itself and calls ``membership.join`` for every node it hears of;
mDNS only introduces nodes, membership decides who is alive. A node that had peers
and now sees none alive announces itself again (at most every
``REANNOUNCE_INTERVAL``), so that mDNS-only meshes heal. Off with ``--no-mdns``.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from mesh.node.component import Component
from mesh.security.text import printable, safe_logger

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

REANNOUNCE_INTERVAL = 10.0   # s between mDNS re-announcements of a node with no live peer
CHECK_INTERVAL = 1.0         # s between looks at whether this node is alone


class Announcer(Component):
    name = "discovery"
    requires = ("membership", "routing")

    def __init__(self) -> None:
        self.discovery: Any = None
        self.discovered: dict[str, str] = {}      # node id -> endpoint, heard on mDNS
        self.foreign: dict[str, str] = {}         # node id -> its mesh: another mesh's nodes
        self._had_peers = False
        self._reannounced = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self, node: "Node") -> None:
        self.node = node
        if node.config.mdns:
            self._task = node.spawn(self._run(), name="discovery")

    async def stop(self, node: "Node") -> None:
        if self._task is not None:       # say goodbye on mDNS
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        """Announce this node and hear of others until cancelled; goodbye on exit."""
        from mesh.discovery.mdns import Discovery, DiscoveryError
        node = self.node
        disc = Discovery(node.name, node.address, self._on_discovered,
                         interfaces=list(node.config.mdns_interfaces) or None,
                         props={"mesh": node.routing.mesh})
        try:
            await disc.start()
        except DiscoveryError as e:
            log.warning("mDNS discovery is off: %s (use --peers)", e)
            return
        self.discovery = disc
        try:
            while True:
                await asyncio.sleep(CHECK_INTERVAL)
                await self._reannounce_if_alone(time.monotonic())
        finally:
            self.discovery = None
            await asyncio.shield(disc.stop())

    def _on_discovered(self, node_id: str, endpoint: str, props: dict[str, str]) -> None:
        if endpoint == self.node.address:
            return
        mesh = props.get("mesh", "")
        if mesh != self.node.routing.mesh:     # another app's nodes on the same LAN
            if self.foreign.get(node_id) != mesh:
                if len(self.foreign) >= 1000:    # said once per node, within reason
                    self.foreign.clear()
                self.foreign[node_id] = mesh
                log.info("mDNS: ignoring node %s at %s: it belongs to mesh %r, this node to %r",
                         node_id, endpoint, mesh, self.node.routing.mesh)
            return
        if self.discovered.get(node_id) != endpoint:
            log.info("mDNS: found node %s at %s", printable(node_id), printable(endpoint))
            self.discovered[node_id] = endpoint
        self.node.membership.join([endpoint])   # new, or announcing again after a cut: (re)join

    async def _reannounce_if_alone(self, now: float) -> None:
        """A node cut off (or whose peers all restarted) announces itself again."""
        alone = len(self.node.membership.alive_members(include_self=False)) == 0
        if not alone:
            self._had_peers = True
        elif self._had_peers and now - self._reannounced > REANNOUNCE_INTERVAL:
            self._reannounced = now
            log.info("no peer is alive: announcing this node on mDNS again")
            try:
                await self.discovery.reannounce()
            except Exception as e:
                log.warning("mDNS re-announce failed: %s", e)
