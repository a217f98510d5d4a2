"""The node: the daemon behind ``meshnode``, an ordered list of components.

``Node`` builds its components (``BUILTIN``, then the app's ``app.components``),
orders them by what each requires (mesh/node/component.py), and runs them in one
asyncio TaskGroup:

1. ``worker_init`` is sent; each component starts, in order (loops they spawn run in
   the TaskGroup); the node is then *ready*: it serves, says ``node-online`` and sends
   ``worker_ready``.
2. On stop() (SIGTERM, SIGINT, the ``shutdown`` command) each component stops, in
   reverse order, while the loops still run (the pool's stop is the drain), then
   ``worker_shutdown`` is sent, every loop is cancelled, and each component closes.

What the components share lives on the node (``node.journal``, ``node.front``,
``node.pool``, ...), each attribute set by the component that owns it, which is why
a component names what it requires. The app's components get a NodeView instead,
and what they raise is logged, never fatal.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import zmq

from mesh import __version__, signals
from mesh.node.announce import Announcer
from mesh.node.autoscale import Autoscaler
from mesh.node.beat import Beat
from mesh.node.component import Component, NodeStartError, component_name, order
from mesh.node.data_dir import settle
from mesh.node.events import EventStream, Publisher
from mesh.node.executor import Executor, Storage
from mesh.node.expiry import Expiry
from mesh.node.front import FrontDoor
from mesh.node.gossip import Members
from mesh.node.handoff import Handoffs
from mesh.node.heartbeat import Heartbeat
from mesh.node.intake import Intake
from mesh.node.keys import Keys
from mesh.node.ledger import Ledger
from mesh.node.limits import Limits
from mesh.node.reclaim import Reclaimer
from mesh.node.recovery import Recovery
from mesh.node.reload import Reloader
from mesh.node.remote import RemoteControl
from mesh.node.replicas import Replicas
from mesh.node.routes import Routes
from mesh.node.shedding import Shedder
from mesh.node.spill import Spill
from mesh.node.view import NodeView
from mesh.node.workflows import Workflows
from mesh.security.curve import Security
from mesh.security.text import safe_logger
from mesh.web.commands import History, HistoryService
from mesh.web.steps import Http
from mesh.wire.protocol import PROTOCOL_VERSION
from mesh.workflow.builtins import user_tasks

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.config import Config
    from mesh.membership import Membership
    from mesh.node.journal import Journal
    from mesh.node.peers import ZmqTransport
    from mesh.node.pool import Pool

__all__ = ["BUILTIN", "Node", "NodeStartError"]

log = safe_logger("mesh.node")

# The node's own components, in the order they start (each also names what it requires).
BUILTIN: tuple[type[Component], ...] = (
    Keys,           # keys: loopback unless keys or --insecure; with keys, the ZAP guard
    Storage,        # journal: sqlite in the data dir, or in memory
    RemoteControl,  # control: the control commands and what they change (revokes, limits)
    Routes,         # routing: this node's mesh, queues and task names (docs/routing.md)
    FrontDoor,      # front: the ROUTER, bound now, read once the node is ready
    EventStream,    # events: the XPUB
    Executor,       # pool: the prefork children; at shutdown, the drain
    Intake,         # intake: SUBMITs into the ledger
    Workflows,      # workflows: what follows a workflow's step; group coordinators
    Spill,          # spill: queued tasks beyond --queue-memory wait in the journal
    Recovery,       # recovery: the journal's unfinished tasks, held again
    Heartbeat,      # heartbeat: throughput, CPU/RSS, node-heartbeat events
    Members,        # membership: SWIM over the front door and peer sockets
    Replicas,       # replicas: a copy of each held task and result on a backup node
    Handoffs,       # handoff: tasks to other nodes (shedding, stopping), and from them
    Shedder,        # shedding: queued tasks to peers with room
    Limits,         # ratelimits: per-node and mesh-wide rate limits (shares from gossip)
    Expiry,         # expiry: old results out of the journal
    Autoscaler,     # autoscaler: the pool's size follows the work (--autoscale; replaceable)
    Reloader,       # reloader: new children for new code (--autoreload)
    Announcer,      # discovery: mDNS
    Beat,           # beat: periodic tasks, each due run fired by one node (mesh/node/beat.py)
    History,        # history: the dashboard's web.* questions, answered by every node
    Http,           # http: the dashboard, JSON API and /metrics (--http; mesh/web)
)

USER_HOOK_TIMEOUT = 10.0   # s an app component's start or stop may take before it is abandoned


def _replace_builtins(own: list[Component], users: list[Component]) -> None:
    """An app's component that subclasses a replaceable built-in (``replaceable =
    True``, e.g. the autoscaler) and keeps its name takes the built-in's place, as one
    of the node's own. Other name clashes are errors when the node orders them."""
    index = {component_name(c): i for i, c in enumerate(own)}
    for u in list(users):
        i = index.get(component_name(u))
        if i is not None and getattr(own[i], "replaceable", False) and isinstance(u, type(own[i])):
            log.info("component %s: the app's %s replaces mesh's", component_name(u),
                     type(u).__qualname__)
            own[i] = u
            users.remove(u)


class Node:
    # set by the components that own them (see BUILTIN)
    journal: "Journal"
    control: RemoteControl
    routing: Routes
    front: FrontDoor
    pool: "Pool"
    intake: Intake
    heartbeat: Heartbeat
    membership: "Membership"
    transport: "ZmqTransport"
    shedder: Shedder
    limits: Limits
    gossip: Members
    history: HistoryService
    http: Any = None                 # the HttpServer with --http (mesh/web/component.py)
    beat: Beat | None = None         # set by the beat component
    workflows: Workflows | None = None   # set by the workflows component
    autoscaler: Autoscaler | None = None   # set by the autoscaler component
    reloader: Reloader | None = None       # set by the reloader component
    ctx: "zmq.Context[Any]"

    def __init__(self, app: "Mesh", config: "Config",
                 components: Iterable[type[Component] | Component] | None = None,
                 handle_signals: bool = True):
        self.app = app
        from mesh.workflow.builtins import register_builtins
        register_builtins(app)       # mesh.map, mesh.starmap: before the children fork
        self.handle_signals = handle_signals    # SIGTERM/SIGINT stop the node (meshnode)
        self._run_task: asyncio.Task[Any] | None = None
        self.data_dir_given = bool(config.data_dir)       # --data-dir, not a default
        self.config = config = settle(config, app.main)   # the data dir of this mesh
        self.name = config.node_name
        self.address = config.bind
        self.started_at = time.time()
        self.boot = os.urandom(6).hex()          # this process: peers tell a restart by it
        self.ready = asyncio.Event()
        self.ledger = Ledger(self)
        self.reclaim = Reclaimer(self)            # recovered tasks another node may have
        self.security = Security(None)            # the key ring once "keys" has read it
        # until their components start (or in a node built without them): no copies,
        # and tasks given away go back to their owners
        self.replicas = Replicas.inert(self)
        self.handoff = Handoffs.inert(self)
        self.spill = Spill.inert(self)            # nothing goes to disk until it starts
        self.events = Publisher(None, self.name)  # a socket once "events" binds one
        self.events_endpoint = ""
        self.tasks_digest = ""
        self._stop = asyncio.Event()
        self._stop_count = 0
        self._loops: list[asyncio.Task[Any]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._client_app: Mesh | None = None
        own = [c() if isinstance(c, type) else c for c in (BUILTIN if components is None else components)]
        users = list(getattr(app, "components", None) or [])
        user_instances = [c() if isinstance(c, type) else c for c in users]
        _replace_builtins(own, user_instances)
        self.user_components = {id(c) for c in user_instances}
        self.components = order(own + user_instances)   # ComponentError if they cannot be ordered
        self.by_name = {component_name(c): c for c in self.components}

    # -- what components share --------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> "asyncio.Task[Any]":
        """Run ``coro`` in the node's TaskGroup until it returns or the node stops
        (loops are cancelled after every component has stopped)."""
        if self._tg is None:
            coro.close()
            raise RuntimeError("spawn() is for components, while the node runs")
        task = self._tg.create_task(coro, name=name)
        self._loops.append(task)
        return task

    def load(self) -> list[int]:
        return [self.pool.busy, self.pool.size,
                self.pool.queued + self.pool.ahead_count + self.spill.on_disk]

    def members(self) -> list[dict[str, Any]]:
        return self.gossip.members()

    def submitter(self) -> "Mesh":
        """A client app owned by the node (NodeView.submit), made on first use."""
        if self._client_app is None:
            from mesh.app import Mesh
            self._client_app = Mesh(f"{self.app.main}@{self.name}",
                                    peers=[self.address, *self.config.peers], mdns=False,
                                    max_message_size=self.config.max_message_size,
                                    keys=self.config.keys, key_name="mesh" if self.config.keys else "",
                                    set_as_current=False)   # shared tasks keep the user's app
        return self._client_app

    def pool_fields(self) -> dict[str, Any]:
        """The pool's kind and range (status, inspect stats)."""
        pool, scaler = self.pool, self.autoscaler
        auto = scaler is not None and scaler.range is not None
        mx, mn = scaler.range if scaler is not None and scaler.range is not None else (pool.size, pool.size)
        out: dict[str, Any] = {
            "pool": pool.kind, "pool_range": [mn, mx], "pool_autoscale": auto,
            "running": pool.running_count, "async_concurrency": pool.async_slots,
            "children": len(pool.children),
        }
        if scaler is not None:
            out.update(scaler.report())
        if self.reloader is not None:
            out.update(self.reloader.report())
        return out

    def status(self) -> dict[str, Any]:
        hb, ledger, pool = self.heartbeat, self.ledger, self.pool
        hb.fresh()
        busy, total, queued = self.load()
        c = ledger.counts
        return {**self.pool_fields(),
            "node": self.name, "address": self.address, "state": "left" if self.stopping else "alive",
            "version": __version__, "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
            "busy": busy, "total": total, "queued": queued, "scheduled": len(pool.scheduled),
            "held": len(ledger.held) + self.spill.on_disk, "succeeded": c["SUCCESS"], "failed": c["FAILURE"],
            "revoked": c["REVOKED"], "retried": c["RETRY"],
            "answered_from_journal": c["answered_from_journal"],
            "journal": self.journal.path, "journal_errors": self.journal.errors,
            "journal_error": self.journal.last_error,
            "journal_error_age": round(time.time() - self.journal.last_error_at, 1)
            if self.journal.last_error else None,
            "events": self.events_endpoint, "events_sent": self.events.sent,
            "peer_sockets": len(self.transport.sockets.socks),
            "clock": self.events.clock,
            "tasks_per_s": round(hb.rate, 1), "cpu_percent": round(hb.cpu, 1),
            "rss_bytes": hb.rss, "uptime": round(time.time() - self.started_at, 1),
            "children_started": pool.started_total, "refused_frames": self.front.refused,
            "sent_ahead": pool.sent_ahead, "ahead": pool.ahead_count,
            "unauthorized_frames": self.front.unauthorized,
            "replies_too_large": self.front.too_large,
            "keys": self.security.ring.identity.fingerprint if self.security.ring else "",
            "key_reloads": getattr(self.by_name.get("keys"), "reloads", 0),
            "registered": user_tasks(self.app.tasks), "app": self.app.origin or self.app.main,
            **self.routing.status(), "mesh_rate_limits": self.limits.status(),
            "components": [component_name(x) for x in self.components],
            **(self.replicas.status() if self.replicas.started else {}),
            **(self.handoff.status() if self.handoff.started else {}),
            **self.spill.status(),
            **self.reclaim.status(),
            **(self.workflows.status() if self.workflows is not None else {}),
        }

    # -- lifecycle --------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until stop() or SIGTERM/SIGINT; then drain and return."""
        self.ctx = zmq.Context()
        self._run_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT) if self.handle_signals else ()
        started: list[Component] = []
        failed: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    signals.worker_init.send(sender=NodeView(self))
                    signals.celeryd_after_setup.send(sender=self.name, instance=NodeView(self),
                                                     conf=self.app.conf)
                    for c in self.components:
                        if await self._start(c, started):
                            started.append(c)
                except NodeStartError as e:
                    failed = e
                    for c in reversed(started):    # stop what started (the children too)
                        try:
                            await self._call(c, "stop")
                        except Exception:
                            log.exception("stopping component %s after a failed start",
                                          component_name(c))
                else:
                    for sig in handled:
                        loop.add_signal_handler(sig, self.stop)
                    log.info("node %s ready on %s: %d children, tasks: %s", self.name,
                             self.address, self.pool.size, ", ".join(user_tasks(self.app.tasks)) or "(none)")
                    self.ready.set()
                    signals.worker_ready.send(sender=NodeView(self))
                    await self._stop.wait()
                    log.info("node %s stopping: finishing running tasks (up to %.0f s)",
                             self.name, self.config.shutdown_timeout)
                    for c in reversed(started):
                        await self._call(c, "stop")
                    signals.worker_shutdown.send(sender=NodeView(self))
                for t in self._loops:
                    t.cancel()
            if failed is not None:
                raise failed
            log.info("node %s stopped", self.name)
        finally:
            self._tg = None
            for sig in handled:
                loop.remove_signal_handler(sig)
            for c in reversed(started):
                self._close(c)
            if self._client_app is not None:      # (a stop has systemd's deadline)
                self._client_app.close(patient=False)
            self.ctx.term()

    def _user(self, c: Component) -> bool:
        return id(c) in self.user_components

    async def _start(self, c: Component, started: list[Component]) -> bool:
        """Start one component; False if an app component could not (it and the
        components that require it are then left out)."""
        if not self._user(c):
            await c.start(self)
            return True
        names = {component_name(s) for s in started}
        missing = [r for r in c.requires if (r if isinstance(r, str) else component_name(r)) not in names]
        if missing:
            log.error("component %s is not started: it requires %s, which did not start",
                      component_name(c), ", ".join(map(str, missing)))
            return False
        return await self._call(c, "start")

    async def _call(self, c: Component, hook: str) -> bool:
        """Run a start/stop hook: the node's own as they are; an app component's with
        a time limit, and what it raises logged, never fatal."""
        if not self._user(c):
            await getattr(c, hook)(self)
            return True
        name = component_name(c)
        try:
            async with asyncio.timeout(USER_HOOK_TIMEOUT):
                await getattr(c, hook)(NodeView(self, name))
            return True
        except TimeoutError:
            log.error("component %s: %s() took longer than %g s and was abandoned",
                      name, hook, USER_HOOK_TIMEOUT)
        except Exception:
            log.exception("component %s: %s() failed (the node goes on without it)", name, hook)
        return False

    def _close(self, c: Component) -> None:
        try:
            c.close(NodeView(self, component_name(c)) if self._user(c) else self)
        except Exception:
            log.exception("component %s: close() failed", component_name(c))

    def stop(self) -> None:
        """Begin a warm shutdown; a second call (second Ctrl-C) cuts it short."""
        self._stop_count += 1
        if self._stop_count == 1:
            self._stop.set()
        elif self._stop_count == 2:
            log.warning("second stop request: not waiting for running tasks")
            self.pool.kill_all()

    def crash(self) -> None:
        """End run() at once, as abruptly as one process allows (in-process tests):
        no stop hooks, no goodbye; loops are cancelled and components closed."""
        if self._run_task is not None:
            self._run_task.cancel()

    async def finished(self) -> None:
        """Wait for run() to end (after stop() or crash())."""
        if self._run_task is not None:
            await asyncio.wait({self._run_task})

    def stop_soon(self) -> None:
        """Stop once the current replies are out (the ``shutdown`` command)."""
        asyncio.get_running_loop().call_later(0.05, self.stop)
