"""The node's HTTP server (``meshnode --http HOST:PORT``): start and stop.

Shaped as a node component (``start(node)``/``stop(node)`` with its requirements):
it needs the pool, the events publisher and membership to exist, and listens to the
node's events in process from start to stop. (Until components land, the node calls
:meth:`HttpServer.start` just before its loops start, and :meth:`HttpServer.stop` when
they have ended.)
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mesh import states
from mesh.config import http_address
from mesh.security.text import safe_logger
from mesh.web.live import LiveHub, Timelines
from mesh.web.metrics import NodeMetrics
from mesh.web.peers import MeshAsker
from mesh.web.server import build_app, is_loopback

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.node.node import Node

log = safe_logger("mesh.web")


class Submitter:
    """Sends tasks for the API (apply, async-apply) and looks results up: a client of
    the mesh inside the node process, made on first use, seeded with this node."""

    def __init__(self, node: "Node"):
        self.node = node
        self._app: Mesh | None = None

    def _client(self) -> "Mesh":
        if self._app is None:
            from mesh.app import Mesh
            self._app = Mesh(f"web@{self.node.name}", peers=[self.node.address], mdns=False)
        return self._app

    async def send(self, name: str, args: list[Any], kwargs: dict[str, Any],
                   options: dict[str, Any], wait: float | None) -> dict[str, Any]:
        if name not in self.node.app.tasks:
            raise ValueError(f"task {name!r} is not registered on node {self.node.name}")

        def run() -> dict[str, Any]:
            app = self._client()
            opts = dict(options)
            for key in ("countdown", "eta", "expires", "time_limit", "soft_time_limit"):
                if key in opts:
                    opts[key] = float(opts[key])
            if "priority" in opts:
                opts["priority"] = int(opts["priority"])
            r = app.send_task(name, args=args, kwargs=kwargs, **opts)
            out: dict[str, Any] = {"task-id": r.id, "state": states.PENDING}
            if wait is not None:
                try:
                    value = r.get(timeout=min(wait, 300.0), propagate=False)
                except Exception as e:
                    return {**out, "state": "TIMEOUT", "error": str(e)}
                out["state"] = r.state
                out["result"] = value if r.successful() else repr(value)
                if r.failed():
                    out["traceback"] = r.traceback
            return out
        return await asyncio.to_thread(run)

    async def result(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            r = self._client().AsyncResult(task_id)
            if timeout:
                try:
                    r.get(timeout=min(timeout, 300.0), propagate=False)
                except Exception:
                    pass
            state = r.state
            out: dict[str, Any] = {"task-id": task_id, "state": state}
            if r.ready():
                out["result"] = r.result if r.successful() else repr(r.result)
                if r.failed():
                    out["traceback"] = r.traceback
            return out
        return await asyncio.to_thread(run)

    def close(self) -> None:
        if self._app is not None:
            self._app.close(patient=False)      # (the node's stop has a deadline)
            self._app = None


class HttpServer:
    """Dashboard, JSON API, /metrics and /healthz of one node."""

    requires = ("pool", "events", "membership")

    def __init__(self, node: "Node"):
        self.node = node
        self.host, self.port = http_address(node.config.http)
        self.loopback = is_loopback(self.host)
        self.token = node.config.http_token
        self.metrics = NodeMetrics(node)
        self.timelines = Timelines()
        self.live = LiveHub(node)
        self.asker = MeshAsker(node, node.history)
        self.submitter = Submitter(node)
        self.closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.url = ""

    def _on_event(self, ev: dict[str, Any]) -> None:
        self.metrics.observe(ev)
        self.timelines.observe(ev)
        self.live.observe(ev)

    async def start(self) -> None:
        from mesh.node.node import NodeStartError
        node = self.node
        node.events.listen(self._on_event)
        node.history.timeline = self.timelines.get
        self._runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise NodeStartError(f"cannot serve HTTP on {self.host}:{self.port}: {e.strerror}") from e
        port = self.port
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            port = server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        if not self.loopback and not self.token:
            log.warning("dashboard on %s answers anyone who can reach it, and its API can "
                        "revoke tasks and stop nodes: set MESH_HTTP_TOKEN", self.url)
        log.info("dashboard on %s", self.url)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="http-ticker")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.metrics.watch_members()
                self.live.tick(time.monotonic())
            except Exception:
                log.exception("dashboard housekeeping failed")

    async def stop(self) -> None:
        self.closing.set()
        if self._ticker is not None:
            self._ticker.cancel()
        if self.node.events.listeners and self._on_event in self.node.events.listeners:
            self.node.events.listeners.remove(self._on_event)
        self.node.history.timeline = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        thread = self.live.stop_peers()
        await asyncio.to_thread(self._close_threads, thread)

    def _close_threads(self, thread: Any) -> None:
        if thread is not None:
            thread.join(10.0)
        self.submitter.close()
        self.asker.close()
