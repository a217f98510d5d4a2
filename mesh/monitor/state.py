"""Monitoring: the picture of a mesh built from its events, like Celery's
``app.events.State``: ``state.tasks``, ``state.nodes``, ``running()``... Events come
from :class:`mesh.monitor.receiver.EventReceiver`, checked (docs/events.md)."""
from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, TypeGuard

from mesh import states

REJECTED = "REJECTED"            # a node gave the task back (requeue) or refused it
EVENTS_LOST = "events-lost"      # synthetic: a receiver missed events (see seq)


def _is_int(v: Any) -> TypeGuard[int]:
    return type(v) is int


def _is_number(v: Any) -> TypeGuard[float]:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


# ---- the state ------------------------------------------------------------------------

_TASK_STATES = {"task-sent": states.PENDING, "task-received": states.RECEIVED,
                "task-started": states.STARTED, "task-succeeded": states.SUCCESS,
                "task-failed": states.FAILURE, "task-retried": states.RETRY,
                "task-rejected": REJECTED, "task-revoked": states.REVOKED}
_TASK_TIMES = {"task-sent": "sent", "task-received": "received", "task-started": "started",
               "task-succeeded": "succeeded", "task-failed": "failed", "task-retried": "retried",
               "task-rejected": "rejected", "task-revoked": "revoked"}
_TASK_TEXT_FIELDS = ("name", "args", "kwargs", "result", "exception", "traceback", "reason",
                     "parent_id", "root_id", "target", "first_node")
_NODE_NUMBERS = ("active", "total", "queued", "processed", "tasks_per_s", "cpu_percent",
                 "rss_bytes")


@dataclasses.dataclass
class TaskState:
    """One task as its events describe it. Timestamps are the nodes' unix times."""
    uuid: str
    name: str | None = None
    state: str = states.PENDING
    node: str | None = None
    args: str | None = None            # repr() texts, as the node sent them (shortened)
    kwargs: str | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    rejected: float | None = None
    revoked: float | None = None
    runtime: float | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    retries: int = 0
    eta: float | None = None
    expires: float | None = None
    priority: int | None = None
    pid: int | None = None             # the child that ran it
    reason: str | None = None          # task-rejected
    target: str | None = None          # task-rejected: the node it was handed to
    parent_id: str | None = None
    root_id: str | None = None         # the workflow it belongs to (its own id if none)
    first_node: str | None = None      # task-duplicate: the node whose result won
    duplicates: int = 0
    clock: int = 0                     # of the event that set ``state``
    timestamp: float = 0.0             # of the event that set ``state``
    handed_on: bool = False            # ``state`` is a requeue rejection: the task moves on

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES


@dataclasses.dataclass
class NodeState:
    """One node as its events describe it. ``last_seen`` is when this process
    received its last node event (local time: immune to clock skew)."""
    name: str
    address: str | None = None
    pid: int | None = None
    version: str | None = None
    freq: float = 2.0
    heartbeat: float | None = None     # the node's timestamp of its last node event
    last_seen: float | None = None
    online_at: float | None = None
    offline: bool = False
    active: int = 0
    total: int = 0
    queued: int = 0
    processed: int = 0
    tasks_per_s: float = 0.0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    loadavg: list[float] = dataclasses.field(default_factory=list)
    lost: int = 0                      # events of this node this receiver missed
    events: int = 0
    clock: int = 0                     # highest Lamport clock seen from it
    _now: Callable[[], float] = dataclasses.field(default=time.time, repr=False, compare=False)

    def is_alive(self, now: float | None = None) -> bool:
        """A heartbeat within 2.5 heartbeat intervals, and no node-offline since."""
        if self.offline or self.last_seen is None:
            return False
        now = self._now() if now is None else now
        return now - self.last_seen <= 2.5 * self.freq

    @property
    def alive(self) -> bool:
        return self.is_alive()


def _order_newer(ev_node: str, ev_clock: int, ev_ts: float, task: TaskState) -> bool:
    """Is this event after the one that set the task's state? One node's events are
    ordered by its Lamport clock; across nodes the clocks only meet on gossip (every
    few seconds), so wall time decides, the clock breaking ties."""
    if task.node is None or task.timestamp == 0.0:
        return True
    if ev_node == task.node:
        return ev_clock > task.clock
    if task.handed_on:
        return True          # its node handed it on: the next node's events take it
    return (ev_ts, ev_clock) >= (task.timestamp, task.clock)


class State:
    """What the events say about tasks and nodes (Celery's ``app.events.State``).

    Feed it every event: ``state.event(ev)`` (it never raises on odd values).
    ``tasks`` holds up to ``max_tasks`` tasks (finished ones are evicted first,
    oldest first). ``now`` is the clock used for node liveness (tests pass a fake).
    """

    def __init__(self, max_tasks: int = 10_000, now: Callable[[], float] = time.time):
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.max_tasks = max_tasks
        self._now = now
        self.tasks: dict[str, TaskState] = {}
        self.nodes: dict[str, NodeState] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.event_count = 0
        self.task_count = 0               # distinct tasks seen (evicted ones included)
        self.evicted = 0
        self.lost = 0                     # events missed, from events-lost
        self.clock = 0                    # highest Lamport clock seen

    # -- feeding ------------------------------------------------------------------------
    def event(self, ev: dict[str, Any]) -> None:
        type_ = ev.get("type")
        node = ev.get("node")
        if type(type_) is not str or type(node) is not str:
            return
        self.event_count += 1
        c = ev.get("clock")
        clock = c if _is_int(c) else 0
        self.clock = max(self.clock, clock)
        if type_ == EVENTS_LOST:
            m = ev.get("missed")
            missed = m if _is_int(m) else 0
            self.lost += missed
            self._node(node).lost += missed
            return
        if type_.startswith("node-"):
            self._node_event(type_, node, clock, ev)
        elif type_.startswith("task-"):
            n = self.nodes.get(node)
            if n is not None and clock > n.clock:
                n.clock = clock
            self._task_event(type_, node, clock, ev)

    def _node(self, name: str) -> NodeState:
        n = self.nodes.get(name)
        if n is None:
            n = self.nodes[name] = NodeState(name, _now=self._now)
        return n

    def _node_event(self, type_: str, name: str, clock: int, ev: dict[str, Any]) -> None:
        n = self._node(name)
        ts = ev.get("timestamp")
        if _is_number(ts) and n.heartbeat is not None and ts < n.heartbeat and clock <= n.clock:
            return                                     # an older event than what we have
        n.events += 1
        n.clock = max(n.clock, clock)
        if _is_number(ts):
            n.heartbeat = float(ts)
        n.last_seen = self._now()
        if type_ == "node-offline":
            n.offline = True
        elif type_ in ("node-online", "node-heartbeat"):
            n.offline = False
            if type_ == "node-online" and n.heartbeat is not None:
                n.online_at = n.heartbeat
        for key in _NODE_NUMBERS:
            v = ev.get(key)
            if _is_number(v):
                setattr(n, key, v)
        freq = ev.get("freq")
        if _is_number(freq) and freq > 0:
            n.freq = float(freq)
        for key in ("address", "version"):
            if isinstance(ev.get(key), str):
                setattr(n, key, ev[key])
        if _is_int(ev.get("pid")):
            n.pid = ev["pid"]
        la = ev.get("loadavg")
        if isinstance(la, list) and all(_is_number(x) for x in la):
            n.loadavg = [float(x) for x in la]

    def _task_event(self, type_: str, node: str, clock: int, ev: dict[str, Any]) -> None:
        uuid = ev.get("uuid")
        if type(uuid) is not str or not uuid:
            return
        ts = float(ev["timestamp"]) if _is_number(ev.get("timestamp")) else self._now()
        new = _TASK_STATES.get(type_)
        t = self.tasks.get(uuid)
        if t is None:
            t = self.tasks[uuid] = TaskState(uuid)
            self.task_count += 1
            self._evict()
        elif t.ready and new in states.READY_STATES:
            return           # a second result (a duplicate run elsewhere): the first stands
        # fields: filled from any event, whatever its order
        for key in _TASK_TEXT_FIELDS:
            v = ev.get(key)
            if isinstance(v, str):
                setattr(t, key, v)
        for key in ("eta", "expires"):
            if _is_number(ev.get(key)):
                setattr(t, key, float(ev[key]))
        if _is_number(ev.get("runtime")):
            t.runtime = float(ev["runtime"])
        if _is_int(ev.get("priority")):
            t.priority = ev["priority"]
        if type_ == "task-started" and _is_int(ev.get("pid")):
            t.pid = ev["pid"]
        if type_ == "task-received" and _is_int(ev.get("retries")):
            t.retries = max(t.retries, ev["retries"])
        elif type_ == "task-retried":
            t.retries += 1
        elif type_ == "task-duplicate":
            t.duplicates += 1
        when = _TASK_TIMES.get(type_)
        if when is not None:
            setattr(t, when, ts)
        # state: a finished task stays finished (a late task-started from another
        # node does not undo SUCCESS), otherwise the newest event wins
        if new is None or t.ready:
            return
        # A requeue rejection (a shed, a stop: the task goes on to another node) is
        # published once the receiver has taken the task, after the receiver's own
        # events: from another node than the one holding the task, it changes nothing.
        handed_on = type_ == "task-rejected" and ev.get("requeue") is True
        if handed_on and t.node is not None and t.node != node:
            return
        if new in states.READY_STATES or _order_newer(node, clock, ts, t):
            t.state, t.node, t.clock, t.timestamp = new, node, clock, ts
            t.handed_on = handed_on
            if new in states.READY_STATES:
                self._finished[uuid] = None

    def _evict(self) -> None:
        while len(self.tasks) > self.max_tasks:
            if self._finished:
                uuid, _ = self._finished.popitem(last=False)
                if self.tasks.pop(uuid, None) is None:
                    continue
            else:
                self.tasks.pop(next(iter(self.tasks)))
            self.evicted += 1

    # -- views --------------------------------------------------------------------------
    def tasks_by_state(self) -> dict[str, list[TaskState]]:
        out: dict[str, list[TaskState]] = {}
        for t in self.tasks.values():
            out.setdefault(t.state, []).append(t)
        return out

    def running(self) -> list[TaskState]:
        """Tasks started and not finished, oldest first; not those on a node known
        to be gone (offline, or no heartbeat for 2.5 intervals)."""
        now = self._now()
        out = []
        for t in self.tasks.values():
            if t.state != states.STARTED:
                continue
            n = self.nodes.get(t.node or "")
            if n is not None and n.last_seen is not None and not n.is_alive(now):
                continue
            out.append(t)
        out.sort(key=lambda t: t.started or 0.0)
        return out

    def alive_nodes(self) -> list[NodeState]:
        now = self._now()
        return [n for n in self.nodes.values() if n.is_alive(now)]

    def clear(self) -> None:
        self.tasks.clear()
        self.nodes.clear()
        self._finished.clear()
