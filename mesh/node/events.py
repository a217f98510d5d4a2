"""Monitoring events, node side: a publisher on each node's XPUB socket.

Wire format (docs/events.md): each event is a two-frame ZeroMQ message
``[topic, body]``. For an event, ``topic`` is its type (``task-succeeded``) and
``body`` a msgpack map with at least ``type``, ``node``, ``timestamp`` (unix
seconds), ``clock`` (the node's Lamport clock) and ``seq`` (a counter per node and
event type: a gap means the subscriber missed events). For a task's result, the
topic is ``result.<task_id>`` and the body is the encoded RESULT message, exactly
as the task's owner got it.

Subscribers filter by topic prefix (``task-``, ``node-``, ``task-failed``,
``result.<id>``, or everything). The socket is an XPUB: the node hears which
prefixes are subscribed and does not even build an event nobody asked for, so a
mesh nobody watches pays nothing. A subscriber that falls behind never slows the
node: past the high-water mark, ZeroMQ drops its messages, and ``seq`` shows the gap.
With keys the XPUB is a CurveZMQ server whose ZAP domain admits admin and node keys
only: events carry every task's arguments and results.

Celery's ``disable_events`` control command turns the task events (``task-*``) off
for subscribers, ``enable_events`` back on (and binds the XPUB of a node started with
``--no-events``); node events and results over pub/sub go on, and so do the node's
own in-process listeners (its dashboard). Until a restart, as in Celery.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from mesh import states
from mesh.exceptions import DecodeError
from mesh.node.commands import ControlState, register
from mesh.node.component import Component, NodeStartError
from mesh.node.zmqloop import SocketDriver
from mesh.security.curve import EVENTS_DOMAIN
from mesh.security.text import safe_logger
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, decode

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.events")

SNDHWM = 10_000              # events queued per subscriber before ZeroMQ drops them
HEARTBEAT_INTERVAL = 2.0     # s between node-heartbeat events (Celery's default)
MAX_CLOCK = 2**53 - 1        # a peer's clock is taken up to this (JSON's exact integers; a
                             # million events a second for 285 years): past it, it is not
                             # a clock (2**64 - 1, taken, made the next event's 2**64, which
                             # msgpack cannot encode, nor then the node's gossiped meta)
MAX_REPR = 1000              # characters of args/result/exception text in an event

# task-sent: published by the node a client submits to, when the client opts in
# (app.conf.task_send_sent_event; the Submit carries a ``sent_at`` header). Otherwise
# first as task-received on the node that took it)
TASK_EVENTS = ("task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
               "task-retried", "task-rejected", "task-revoked", "task-duplicate")
NODE_EVENTS = ("node-online", "node-heartbeat", "node-offline")
EVENT_TYPES = TASK_EVENTS + NODE_EVENTS
RESULT_PREFIX = b"result."

FINAL_EVENTS = {states.SUCCESS: "task-succeeded", states.FAILURE: "task-failed",
                states.REVOKED: "task-revoked"}

_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    try:
        text = repr(value)
    except Exception as e:              # a user object whose __repr__ fails
        text = f"<unrepresentable {type(value).__name__}: {e}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def received_fields(task_id: str, name: str, msg: Submit) -> dict[str, Any]:
    """The fields of task-received, from the Submit (arguments as repr texts)."""
    try:
        args, kwargs = codec.load_call(msg.payload)
        a, k = short_repr(tuple(args)), short_repr(kwargs)
    except Exception as e:
        a, k = f"<undecodable: {e}>", ""
    return {"uuid": task_id, "name": name, "args": a, "kwargs": k, "retries": msg.retries,
            "eta": msg.eta, "expires": msg.expires, "priority": msg.priority,
            "parent_id": msg.headers.get("parent_id"),
            "root_id": msg.headers.get("root_id") or task_id}


def sent_fields(task_id: str, name: str, msg: Submit) -> dict[str, Any] | None:
    """The fields of task-sent, when the client asked for one (header ``sent_at``, its
    unix time of sending, which becomes the event's timestamp; ``sent_by`` names it)."""
    at = msg.headers.get("sent_at")
    if type(at) is not float and type(at) is not int:
        return None
    fields = received_fields(task_id, name, msg)
    by = msg.headers.get("sent_by")
    fields.update(timestamp=float(at), sender=by[:200] if isinstance(by, str) else None)
    return fields


def result_fields(task_id: str, frame: bytes) -> dict[str, Any]:
    """The fields of task-succeeded / failed / revoked / retried, from the Result."""
    fields: dict[str, Any] = {"uuid": task_id}
    try:
        res = decode(frame)
    except DecodeError:
        return fields
    if not isinstance(res, Result):
        return fields
    fields["runtime"] = res.runtime
    if res.state == states.SUCCESS:
        try:
            fields["result"] = short_repr(codec.loads(res.result) if res.result else None)
        except Exception as e:
            fields["result"] = f"<undecodable: {e}>"
    else:
        exc = res.exc or {}
        fields["exception"] = f"{exc.get('type', 'Exception')}({str(exc.get('message', ''))[:900]!r})"
        fields["traceback"] = res.traceback
    return fields


class Publisher:
    """Builds and sends one node's events. ``wants(topic)`` is cheap; call it before
    doing any work to describe an event."""

    def __init__(self, sock: zmq.Socket[bytes] | None, node: str):
        self.sock = sock
        self.node = node
        self.clock = 0                              # Lamport: +1 per event, max with peers'
        self.seq: collections.Counter[str] = collections.Counter()
        self.prefixes: collections.Counter[bytes] = collections.Counter()
        self.sent = 0
        self.dropped = 0
        self._any = False            # someone subscribed to everything ("")
        self.task_events = True      # task-* events go to subscribers (disable_events)
        self._types: dict[str, bool] = {}           # event type -> anyone subscribed (cache)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []   # in-process (listen())

    # -- subscriptions ----------------------------------------------------------------
    def on_subscription(self, frames: list[bytes]) -> None:
        """An XPUB subscription message: ``\\x01prefix`` or ``\\x00prefix``."""
        for f in frames:
            if not f or f[0] not in (0, 1):
                continue
            prefix = bytes(f[1:])
            if f[0] == 1:
                self.prefixes[prefix] += 1
            elif self.prefixes[prefix] > 1:
                self.prefixes[prefix] -= 1
            else:
                self.prefixes.pop(prefix, None)
        self._any = b"" in self.prefixes
        self._types = {}
        log.debug("event subscriptions now: %s", sorted(self.prefixes))

    def listen(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call ``fn(event)`` in this process for every event from now on (the
        dashboard's metrics). It runs on the node's loop: it must be quick, must not
        block, and must not change the event; an exception in it is logged."""
        self.listeners.append(fn)

    def wants(self, topic: str) -> bool:
        """Is anyone (a subscriber, or a listener in this process) interested in an
        event type?"""
        if self.listeners:
            return True
        return self._subscribed(topic)

    def _subscribed(self, topic: str) -> bool:
        cached = self._types.get(topic)
        if cached is None:
            t = topic.encode()
            cached = self._types[topic] = \
                (self.task_events or not t.startswith(b"task-")) \
                and (self._any or any(t.startswith(p) for p in self.prefixes))
        return cached

    def set_task_events(self, on: bool) -> bool:
        """Send task-* events to subscribers or not (enable_events, disable_events);
        whether that changed anything."""
        if self.task_events == on:
            return False
        self.task_events = on
        self._types = {}
        return True

    def wants_result(self, task_id: str) -> bool:
        if self._any:
            return True
        if not self.prefixes:
            return False
        t = RESULT_PREFIX + task_id.encode()
        return any(t.startswith(p) for p in self.prefixes)

    # -- sending ----------------------------------------------------------------------
    def tick(self, peer_clock: int) -> bool:
        """Lamport merge with a clock seen from a peer; False if it is past MAX_CLOCK
        (not taken)."""
        if peer_clock > MAX_CLOCK:
            return False
        if peer_clock > self.clock:
            self.clock = peer_clock
        return True

    def emit(self, type_: str, **fields: Any) -> None:
        """Send an event if anyone wants it. Fields must be msgpack-able."""
        if not self.wants(type_):
            return
        self.clock += 1
        self.seq[type_] += 1
        body = {"type": type_, "node": self.node, "timestamp": time.time(),
                "clock": self.clock, "seq": self.seq[type_], **fields}
        for fn in self.listeners:
            try:
                fn(body)
            except Exception:
                log.exception("event listener %r failed", fn)
        if self.sock is not None and self._subscribed(type_):
            self._send(type_.encode(), msgpack.packb(body, use_bin_type=True))

    def publish_result(self, task_id: str, frame: bytes) -> None:
        if self.wants_result(task_id):
            self._send(RESULT_PREFIX + task_id.encode(), frame)

    def _send(self, topic: bytes, body: bytes) -> None:
        if self.sock is None:
            return
        try:   # two sends with int flags: send_multipart's enum arithmetic cost more
            self.sock.send(topic, _MORE)
            self.sock.send(body, _NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1
        except zmq.ZMQError as e:
            self.dropped += 1
            log.debug("event dropped: %s", e)


class EventStream(Component):
    """Binds the node's XPUB on an ephemeral port of its bind address (advertised in
    ``ping``, ``status`` and gossip) unless ``events`` is off; says ``node-online``
    when the node is ready and ``node-offline`` after its last task at shutdown."""

    name = "events"
    requires = ("front",)

    def __init__(self) -> None:
        self.sock: zmq.Socket[bytes] | None = None
        self.bound = ""

    async def start(self, node: "Node") -> None:
        if not node.config.events:
            return                    # node.events stays a publisher with no socket
        self.bind(node)
        node.spawn(self._online(node), name="events-online")

    def bind(self, node: "Node") -> None:
        """Bind the XPUB and advertise it (at start; or at run time, enable_events on a
        node started with --no-events)."""
        xpub = node.ctx.socket(zmq.XPUB)
        self.sock = xpub
        xpub.setsockopt(zmq.LINGER, 500)
        xpub.setsockopt(zmq.SNDHWM, SNDHWM)
        node.security.server(xpub, EVENTS_DOMAIN)
        host = node.config.bind.rsplit(":", 1)[0]
        try:
            xpub.bind(f"{host}:*")     # an ephemeral port, advertised (ping, members)
        except zmq.ZMQError as e:
            xpub.close(linger=0)
            self.sock = None
            raise NodeStartError(f"cannot bind an events port on {host}: {e.strerror}") from e
        self.bound = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        port = self.bound.rsplit(":", 1)[1]
        node.events_endpoint = node.address.rsplit(":", 1)[0] + ":" + port
        node.events.sock = xpub        # (the publisher others hold: its clock goes on)
        node.spawn(SocketDriver(xpub, node.events.on_subscription, "events").run(), name="events")

    async def _online(self, node: "Node") -> None:
        await node.ready.wait()
        node.events.emit("node-online", **node.heartbeat.node_fields())

    async def stop(self, node: "Node") -> None:
        node.events.emit("node-offline", **node.heartbeat.node_fields())   # after the last task

    def close(self, node: "Node") -> None:
        if self.sock is not None:
            self.sock.close(linger=500)

    def rekey(self, node: "Node") -> None:
        """Bind the events port again with the key ring as it is now (a new mesh key,
        or keys removed): every subscriber reconnects, and a key no longer accepted
        cannot. The port stays the same."""
        if self.sock is not None:
            from mesh.node.front import rebind
            rebind(self.sock, self.bound, lambda s: node.security.server(s, EVENTS_DOMAIN))


# ---- enable_events / disable_events (Celery's control commands) -------------------------

@register("enable_events", "control", builtin=True)
def enable_events(state: ControlState, req: Any) -> dict[str, Any]:
    """Send task events (task-*) from now on, until a restart; a node started with
    --no-events binds its events port now."""
    node = state.node
    bound = False
    if node.events.sock is None:
        stream = node.by_name.get("events")
        if not isinstance(stream, EventStream):
            raise RuntimeError("this node has no events component")
        stream.bind(node)
        bound = True
        node.membership.update_local_meta()        # (its events endpoint, for monitors)
    if node.events.set_task_events(True) or bound:
        log.info("task events enabled by remote control%s",
                 f" (events port {node.events_endpoint})" if bound else "")
        return {"ok": "task events enabled"}
    return {"ok": "task events already enabled"}


@register("disable_events", "control", builtin=True)
def disable_events(state: ControlState, req: Any) -> dict[str, Any]:
    """Send no task events (task-*) to subscribers from now on, until a restart (node
    events and results go on)."""
    if state.node.events.set_task_events(False):
        log.info("task events disabled by remote control")
        return {"ok": "task events disabled"}
    return {"ok": "task events already disabled"}
