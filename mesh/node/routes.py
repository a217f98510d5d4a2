"""Routing, node side: the mesh this node belongs to, the queues it takes, and what it
tells the mesh about them (docs/routing.md).

The ``routing`` component works out, once at start, what the node serves: its mesh
(the app's name), its queues (``--queues``; none given: every queue, less
``--exclude-queues``) and its task names (and the mesh-wide rate limits its tasks
declare). Those go into the member meta (``meta``, merged by the membership component)
and the ``status`` report. Intake asks ``refusal(msg)`` of every SUBMIT when the node
does not take every queue: a task for another queue is refused with ERROR ``queue``,
and its owner sends it to a node that serves that queue. ``add_consumer`` and
``cancel_consumer`` (Celery's control commands) change the queues at run time and
gossip the change at once; a restart goes back to the flags, as Celery's worker does.
Shedding and the beat ask ``peer_accepts`` of a member before they send it a task.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mesh import capabilities
from mesh.capabilities import show
from mesh.exceptions import ConfigError
from mesh.node.component import Component, NodeStartError
from mesh.node.ledger import _RateLimitedLog
from mesh.ratelimit import parse_rate
from mesh.routing import AppRoutes, check_queue, prepare
from mesh.security.text import safe_logger
from mesh.wire.protocol import Submit
from mesh.workflow.ids import GROUP

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

MAX_MESH_NAME = 200          # bytes of UTF-8: the name travels in an mDNS TXT string


class Routes(Component):
    name = "routing"

    def __init__(self) -> None:
        self._badlog = _RateLimitedLog("routing failures")

    async def start(self, node: "Node") -> None:
        self.node = node
        app = node.app
        self.mesh: str = app.main
        if len(self.mesh.encode("utf-8", "surrogatepass")) > MAX_MESH_NAME:
            raise NodeStartError(f"the app's name {self.mesh[:40]!r}... is the mesh's name and may "
                                 f"be at most {MAX_MESH_NAME} bytes")
        self.queues: frozenset[str] | None = frozenset(node.config.queues) or None
        self.excluded: frozenset[str] = frozenset(node.config.exclude_queues)
        if self.queues is not None:            # Celery's -Q a,b -X b: a
            self.queues, self.excluded = self.queues - self.excluded, frozenset()
        self.routes = AppRoutes()
        self.refresh(app)
        try:                                   # a bad task_routes stops the node at once
            prepare(app.conf["task_routes"])
            check_queue(app.conf["task_default_queue"], "task_default_queue")
        except ConfigError as e:
            raise NodeStartError(str(e)) from e
        node.routing = self
        log.info("node %s: mesh %r, queues: %s", node.name, self.mesh, self.describe())

    def describe(self) -> str:
        """The queues it takes, in words."""
        if self.queues is None:
            return "every queue" + (f" but {', '.join(sorted(self.excluded))}"
                                    if self.excluded else "")
        return ", ".join(sorted(self.queues)) or "no queue"

    @property
    def takes_every(self) -> bool:
        return self.queues is None and not self.excluded

    def refresh(self, app: Any) -> None:
        """What the node tells the mesh it serves, from the app's tasks (at start, and
        again when --autoreload loads new code)."""
        self.mesh_limits = mesh_limits(app.tasks)
        # every node coordinates groups (mesh.group, mesh/node/wf_groups.py)
        self.meta = capabilities.meta(self.mesh, self.queues, [*app.tasks, GROUP], self.excluded)
        self.meta["rl"] = self.mesh_limits

    # -- add_consumer / cancel_consumer -------------------------------------------------
    def add(self, queue: str) -> bool:
        """Take ``queue`` from now on; whether that changed anything."""
        if self.queues is None:
            if queue not in self.excluded:
                return False
            self.excluded = self.excluded - {queue}
        elif queue in self.queues:
            return False
        else:
            self.queues = self.queues | {queue}
        self._changed(f"started consuming from {queue}")
        return True

    def cancel(self, queue: str) -> bool:
        """Take no more tasks of ``queue`` (the ones it holds still run here); whether
        that changed anything."""
        if self.queues is None:
            if queue in self.excluded:
                return False
            self.excluded = self.excluded | {queue}
        elif queue not in self.queues:
            return False
        else:
            self.queues = self.queues - {queue}
        self._changed(f"no longer consuming from {queue}")
        return True

    def _changed(self, what: str) -> None:
        """Tell the mesh at once (gossip: peers and clients stop or start sending)."""
        self.refresh(self.node.app)
        membership = getattr(self.node, "membership", None)
        if membership is not None:
            membership.update_local_meta()
        log.info("%s: queues now: %s (until a restart: the flags decide again then)",
                 what, self.describe())

    # -- what intake asks ---------------------------------------------------------------
    def queue_for(self, name: str, headers: Mapping[str, Any] | None = None) -> str:
        """The queue of a task: what its SUBMIT says, else this app's routing for it."""
        q = headers.get("queue") if headers else None
        if isinstance(q, str):
            return q
        app = self.node.app
        task = app.tasks.get(name)
        try:
            return self.routes.queue(app.conf, name, task=task,
                                     task_queue=task.options.queue if task is not None else None)
        except Exception as e:                 # a router of the app's that raised
            self._badlog.warning("task_routes failed for %s (%s: %s): it is taken as routed "
                                 "to task_default_queue", name, type(e).__name__, e)
            return str(app.conf["task_default_queue"])

    def refusal(self, msg: Submit) -> str | None:
        """Why this node does not take ``msg`` (another queue), or None when it does."""
        if self.takes_every:
            return None
        queue = self.queue_for(msg.name, msg.headers)
        if self.serves_queue(queue):
            return None
        serves = (f"every queue but {show(sorted(self.excluded))}" if self.queues is None
                  else show(sorted(self.queues)) or "no queue")
        return (f"node {self.node.name} does not serve queue {queue!r} (it serves "
                f"{serves}), so it did not accept task {msg.task_id} ({msg.name})")

    # -- what shedding and the beat ask ------------------------------------------------
    def peer_accepts(self, meta: Mapping[str, Any], queue: str, name: str) -> bool:
        """Whether a member (its gossiped meta) takes a task of ``name`` on ``queue``:
        same mesh, serving the queue, with the name registered (a member that did not
        say which names it has is not sent work: a node always says)."""
        serves = capabilities.from_meta(meta)
        return serves.mesh == self.mesh and serves.names is not None \
            and serves.accepts(queue, name)

    def serves_queue(self, queue: str) -> bool:
        return queue not in self.excluded if self.queues is None else queue in self.queues

    def active_queues(self) -> dict[str, Any]:
        """The queues this node takes (the ``active_queues`` command): its --queues; or,
        when it takes every queue, the ones its app names (the default queue, and the
        queues its tasks declare) less the ones excluded (-X, cancel_consumer), with
        ``every`` true and ``excluded``."""
        if self.queues is not None:
            return {"queues": sorted(self.queues), "every": False, "excluded": []}
        app = self.node.app
        named = {str(app.conf["task_default_queue"])}
        named.update(q for t in app.tasks.values()
                     if isinstance(q := getattr(t.options, "queue", None), str))
        return {"queues": sorted(named - self.excluded), "every": True,
                "excluded": sorted(self.excluded)}

    def status(self) -> dict[str, Any]:
        return {"mesh": self.mesh,
                "queues": None if self.queues is None else sorted(self.queues),
                "excluded_queues": sorted(self.excluded)}


def mesh_limits(tasks: Mapping[str, Any]) -> dict[str, float]:
    """Task name -> its mesh-wide rate limit (starts per second), for tasks with one."""
    out = {}
    for name, task in tasks.items():
        rate = parse_rate(getattr(task.options, "mesh_rate_limit", None))
        if rate is not None:
            out[name] = rate
    return out
