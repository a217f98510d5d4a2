"""The dashboard's ``http`` node component (``meshnode --http HOST:PORT``).

Starts the HTTP server (mesh/web/component.py: page, JSON API, /metrics, /healthz)
once the pool, events, membership and history exist, and stops it first at shutdown.
aiohttp is imported only when ``--http`` is given. (The ``history`` component, which
every node runs, is in mesh/web/commands.py.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.node.component import Component

if TYPE_CHECKING:
    from mesh.node.node import Node


class Http(Component):
    name = "http"
    requires = ("pool", "events", "membership", "history")

    def __init__(self) -> None:
        self.server: Any = None

    async def start(self, node: "Node") -> None:
        if not node.config.http:
            return
        from mesh.web.component import HttpServer
        self.server = node.http = HttpServer(node)
        await self.server.start()

    async def stop(self, node: "Node") -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def close(self, node: "Node") -> None:
        if self.server is not None:     # the node did not get to stop (a failed start)
            import asyncio
            asyncio.get_running_loop().create_task(self.server.stop())
