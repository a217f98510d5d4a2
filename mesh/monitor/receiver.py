"""Monitoring, subscriber side: receive the nodes' events and keep a picture of the mesh.

* :class:`EventReceiver` subscribes to the events of every node of a mesh (found by
  asking one or more seed nodes for their ``members``, again every ``refresh``
  seconds, so nodes that join later are picked up and dead ones dropped). It checks
  each event (a malformed one is skipped and counted, never raised), and watches the
  per-node, per-type ``seq`` numbers: when some were lost (this subscriber fell
  behind and the node's publisher dropped them) it delivers an ``events-lost`` event
  before the next one, so gaps are visible.
* :class:`State` (mesh/monitor/state.py) builds tasks and nodes from events, like
  Celery's ``app.events.State``: ``state.tasks``, ``state.nodes``, ``running()``...
* :func:`subscribe_result` waits for one task's result on its ``result.<id>`` topic.

The wire format and every event type are described in docs/events.md.

Example::

    from mesh.monitor import EventReceiver, State

    state = State()
    with EventReceiver(["tcp://127.0.0.1:7700"]) as recv:
        for ev in recv.events(timeout=10):
            state.event(ev)
            print(ev["type"], ev["node"], ev.get("uuid", ""))
    print(state.tasks_by_state())
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack
import zmq

from mesh.client.control import ControlClient
from mesh.exceptions import DecodeError, TimeoutError
from mesh.monitor.state import (
    EVENTS_LOST,
    REJECTED,
    NodeState,
    State,
    TaskState,
    _is_int,
    _is_number,
)
from mesh.security.curve import Security
from mesh.security.text import safe_logger
from mesh.wire.protocol import ControlReply, Result, decode

log = safe_logger("mesh.monitor")

__all__ = [
    "EVENTS_LOST",
    "REJECTED",
    "RESULT",
    "EventReceiver",
    "NodeState",
    "SeqTracker",
    "State",
    "TaskState",
    "parse_event",
    "seq_gap",
    "subscribe_result",
]

RESULT = "result"                # a task's Result, from a ``result.<id>`` topic
RESULT_PREFIX = b"result."

POLL_SLICE = 0.1                 # s: longest wait on the socket between housekeeping
MAX_TYPE_LEN = 100
MAX_NODE_LEN = 500
MAX_ID_LEN = 200

Handler = Callable[[dict[str, Any]], None]


# ---- checking one event ---------------------------------------------------------------

def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed in an event")


def parse_event(topic: bytes, body: bytes) -> dict[str, Any] | None:
    """The event carried by one ``[topic, body]`` message, or None when it is
    malformed: not a msgpack map with string keys, a missing or mistyped ``type``,
    ``node``, ``timestamp``, ``clock`` or ``seq``, a type that is not its topic, or
    a task event without a ``uuid``."""
    try:
        ev = msgpack.unpackb(body, raw=False, strict_map_key=True, timestamp=1,
                             ext_hook=_reject_ext)
    except Exception:
        return None
    if type(ev) is not dict or not all(type(k) is str for k in ev):
        return None
    type_, node = ev.get("type"), ev.get("node")
    if type(type_) is not str or not 0 < len(type_) <= MAX_TYPE_LEN:
        return None
    if type(node) is not str or not 0 < len(node) <= MAX_NODE_LEN:
        return None
    if topic != type_.encode():
        return None
    if not _is_number(ev.get("timestamp")):
        return None
    clock, seq = ev.get("clock"), ev.get("seq")
    if not _is_int(clock) or clock < 0 or not _is_int(seq) or seq < 1:
        return None
    if type_.startswith("task-"):
        uuid = ev.get("uuid")
        if type(uuid) is not str or not 0 < len(uuid) <= MAX_ID_LEN:
            return None
    return ev


# ---- sequence numbers -----------------------------------------------------------------

def seq_gap(last: int | None, seq: int) -> int:
    """How many events were missed between the last ``seq`` seen (of one node and
    one type) and this one: 0 when in order or the first seen, ``n > 0`` for a gap,
    and -1 when ``seq`` did not move forward (the node restarted and counts from 1
    again, or a duplicate): not a gap; start counting from this one."""
    if last is None:
        return 0
    if seq > last:
        return seq - last - 1
    return -1


class SeqTracker:
    """The last ``seq`` seen per (node, event type)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], int] = {}

    def check(self, node: str, type_: str, seq: int) -> int:
        """Record ``seq``; the number of events missed before it (0 if none)."""
        key = (node, type_)
        missed = seq_gap(self.last.get(key), seq)
        self.last[key] = seq
        return max(missed, 0)

    def forget(self, node: str) -> None:
        """The node restarted (new pid or events endpoint): its counters start over."""
        for key in [k for k in self.last if k[0] == node]:
            del self.last[key]


# ---- the receiver ---------------------------------------------------------------------

_STATE_RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}


def discover_event_endpoints(cc: ControlClient, seeds: list[str], timeout: float
                             ) -> tuple[dict[str, str], dict[str, str], dict[str, str]] | None:
    """Ask ``seeds`` for ``ping`` and ``members``. Returns (node -> events endpoint of
    every alive or suspect node that publishes events, node -> front address, node ->
    why it is not listed) or None when no seed answered."""
    pings = cc.broadcast(seeds, "ping", timeout=timeout)
    answered = [ep for ep, r in pings.items() if isinstance(r, ControlReply) and r.ok]
    if not answered:
        return None
    events: dict[str, str] = {}
    addresses: dict[str, str] = {}
    why: dict[str, str] = {}
    best: dict[str, dict[str, Any]] = {}
    for ep in answered:
        r = pings[ep]
        assert isinstance(r, ControlReply)
        p = r.payload if isinstance(r.payload, dict) else {}
        node, ev = p.get("node"), p.get("events")
        if isinstance(node, str) and node:
            addresses[node] = str(p.get("address") or ep)
            if isinstance(ev, str) and ev:
                events[node] = ev
            else:
                why[node] = "publishes no events (started with --no-events)"
    for r in cc.broadcast(answered, "members", timeout=timeout).values():
        if not isinstance(r, ControlReply) or not r.ok or not isinstance(r.payload, list):
            continue
        for m in r.payload:
            if not isinstance(m, dict) or not isinstance(m.get("node"), str):
                continue
            inc = m.get("incarnation") if _is_int(m.get("incarnation")) else 0
            key = (inc, _STATE_RANK.get(str(m.get("state")), 0))
            old = best.get(m["node"])
            if old is None or key > old["_key"]:
                best[m["node"]] = {**m, "_key": key}
    for node, m in best.items():
        meta = m["meta"] if isinstance(m.get("meta"), dict) else {}
        if isinstance(m.get("endpoint"), str):
            addresses.setdefault(node, m["endpoint"])
        if m.get("state") not in ("alive", "suspect"):
            events.pop(node, None)          # the mesh says it is dead or gone
            why[node] = f"is {m.get('state')}"
            continue
        if node in events:                  # it answered us itself: its own word
            continue
        ev = meta.get("events")
        if isinstance(ev, str) and ev:
            events[node] = ev
        else:
            why[node] = "publishes no events (started with --no-events)"
    return events, addresses, why


class EventReceiver:
    """Events from every node of a mesh, over one SUB socket.

    ``peers`` are seed nodes' front doors (``tcp://host:port``); every alive node
    they know is subscribed to, and the list is refreshed every ``refresh`` seconds
    (0: never). ``topics`` are prefixes of event types (``"task-"``,
    ``"task-failed"``, ``"node-"``; ``"result."`` or ``"result.<id>"`` for results,
    delivered as ``{"type": "result", "uuid", "node", "state", "result": Result}``).
    ``handlers`` map an event type to a function; ``"*"`` takes the types without one.

    Not thread-safe: use it from one thread (it runs its own discovery thread).
    ``lost`` counts events missed (seq gaps), ``malformed`` bodies skipped,
    ``received`` good events delivered; ``nodes`` maps node name -> events endpoint
    connected now. ``rcvhwm`` (messages) and ``rcvbuf`` (bytes) tune the socket.
    """

    def __init__(self, peers: Iterable[str], topics: Iterable[str] = ("task-", "node-"),
                 handlers: dict[str, Handler] | None = None, refresh: float = 2.0, *,
                 control_timeout: float = 2.0, rcvhwm: int | None = None,
                 rcvbuf: int | None = None, ctx: zmq.Context[Any] | None = None,
                 security: Security | None = None):
        self.peers = list(dict.fromkeys(peers))
        self.topics = tuple(topics)
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.refresh = refresh
        self.control_timeout = control_timeout
        self.lost = 0
        self.malformed = 0
        self.received = 0
        self.nodes: dict[str, str] = {}          # node -> events endpoint, connected
        self.addresses: dict[str, str] = {}      # node -> front door (for control commands)
        self.unavailable: dict[str, str] = {}    # node -> why it is not subscribed to
        self._endpoint_of: dict[str, str] = {}   # node -> the events endpoint it last had
        self._pids: dict[str, int] = {}
        self._seq = SeqTracker()
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._update: tuple[dict[str, str], dict[str, str], dict[str, str]] | None = None
        self._fallback: list[str] = []           # alive nodes' front doors, if the seeds die
        self._closed = threading.Event()
        self._own_ctx = ctx is None
        self._ctx: zmq.Context[Any] = ctx or zmq.Context()
        # with keys (an admin's or a node's: events are not for client keys), one SUB
        # per mesh key while the key is rotated; only the right one gets a handshake
        self.security = security if security is not None else Security.from_env()
        self._socks: list[zmq.Socket[bytes]] = []
        self._poller = zmq.Poller()
        for key in self.security.server_keys():
            sock: zmq.Socket[bytes] = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            if rcvhwm is not None:
                sock.setsockopt(zmq.RCVHWM, rcvhwm)
            if rcvbuf is not None:
                sock.setsockopt(zmq.RCVBUF, rcvbuf)
            for t in self.topics:
                sock.setsockopt(zmq.SUBSCRIBE, t.encode())
            self.security.client(sock, key)
            self._socks.append(sock)
            self._poller.register(sock, zmq.POLLIN)
        self._thread: threading.Thread | None = None
        try:
            with ControlClient(self._ctx, self.security) as cc:
                found = discover_event_endpoints(cc, self.peers, control_timeout)
            if found is not None:
                self._apply(found)
        except BaseException:
            self.close()
            raise
        if refresh > 0:
            self._thread = threading.Thread(target=self._rediscover, name="mesh-events-discovery",
                                            daemon=True)
            self._thread.start()

    # -- discovery ------------------------------------------------------------------------
    def _rediscover(self) -> None:
        with ControlClient(self._ctx, self.security) as cc:
            while not self._closed.wait(self.refresh):
                with self._lock:
                    fallback = [a for a in self._fallback if a not in self.peers]
                try:
                    found = discover_event_endpoints(cc, self.peers, self.control_timeout)
                    if found is None and fallback:     # the seeds are gone: ask the others
                        found = discover_event_endpoints(cc, fallback, self.control_timeout)
                except Exception:
                    log.exception("event receiver: discovery failed")
                    continue
                if found is not None:
                    with self._lock:
                        self._update = found

    def _apply_update(self) -> None:
        if self._update is None:
            return
        with self._lock:
            found, self._update = self._update, None
        if found is not None:
            self._apply(found)

    def _apply(self, found: tuple[dict[str, str], dict[str, str], dict[str, str]]) -> None:
        """Connect to new nodes' events endpoints and drop the ones gone (socket thread)."""
        wanted, addresses, why = found
        self.addresses.update(addresses)
        with self._lock:              # read by the discovery thread
            self._fallback = [addresses[n] for n in wanted if n in addresses]
        self.unavailable = dict(why)
        gone = [(node, ep) for node, ep in self.nodes.items() if wanted.get(node) != ep]
        if gone:
            # what those nodes sent last (node-offline, its last tasks' events) may be
            # in the sockets already: read before the disconnect drops it
            self._drain()
        for node, ep in gone:
            for sock in self._socks:
                try:
                    sock.disconnect(ep)
                except zmq.ZMQError:
                    pass
            del self.nodes[node]
            log.debug("events: dropped %s (%s)", node, ep)
        connected = set(self.nodes.values())
        for node, ep in wanted.items():
            if node in self.nodes or ep in connected:
                continue
            try:
                for sock in self._socks:
                    sock.connect(ep)
            except zmq.ZMQError as e:
                self.unavailable[node] = f"cannot connect to {ep}: {e}"
                continue
            if self._endpoint_of.get(node, ep) != ep:
                self._seq.forget(node)          # a new events port: the node restarted
            self._endpoint_of[node] = ep
            self.nodes[node] = ep
            connected.add(ep)
            log.debug("events: subscribed to %s (%s)", node, ep)

    def _drain(self) -> None:
        """Take every event that has arrived, without waiting."""
        for sock in self._socks:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.ZMQError:       # (Again: nothing more)
                    break
                self._take(frames)

    # -- receiving ------------------------------------------------------------------------
    def next_event(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever; 0: only
        what has arrived); None when none came."""
        if self._pending:
            return self._pending.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._apply_update()
            if self._pending:                  # (read before a node was dropped)
                return self._pending.popleft()
            if deadline is None:
                wait = POLL_SLICE
            else:
                wait = min(POLL_SLICE, max(0.0, deadline - time.monotonic()))
            ready = self._poller.poll(int(wait * 1000))
            if ready:
                for sock, _ in ready:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        continue
                    self._take(frames)
                if self._pending:
                    return self._pending.popleft()
            elif deadline is not None and time.monotonic() >= deadline:
                return None

    def _take(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.malformed += 1
            return
        topic, body = frames
        if topic.startswith(RESULT_PREFIX):
            try:
                res = decode(body)
            except DecodeError:
                self.malformed += 1
                return
            if not isinstance(res, Result) or topic != RESULT_PREFIX + res.task_id.encode():
                self.malformed += 1
                return
            self.received += 1
            self._pending.append({"type": RESULT, "uuid": res.task_id, "node": res.node,
                                  "state": res.state, "timestamp": time.time(), "result": res})
            return
        ev = parse_event(topic, body)
        if ev is None:
            self.malformed += 1
            return
        node, type_ = ev["node"], ev["type"]
        pid = ev.get("pid")
        if type_.startswith("node-") and _is_int(pid):
            if self._pids.get(node, pid) != pid:
                self._seq.forget(node)          # same name, new process: counters restart
            self._pids[node] = pid
        missed = self._seq.check(node, type_, ev["seq"])
        if missed:
            self.lost += missed
            self._pending.append({"type": EVENTS_LOST, "node": node, "of_type": type_,
                                  "missed": missed, "timestamp": time.time(),
                                  "first_seq": ev["seq"] - missed, "last_seq": ev["seq"] - 1})
        self.received += 1
        self._pending.append(ev)

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield events as they come, for ``timeout`` seconds in all (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ev = self.next_event(left)
            if ev is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                continue
            yield ev

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.events()

    def capture(self, limit: int | None = None, timeout: float | None = None) -> int:
        """Call the handlers for each event until ``limit`` events or ``timeout``
        seconds; the number of events handled."""
        n = 0
        if limit is not None and limit <= 0:
            return 0
        for ev in self.events(timeout):
            handler = self.handlers.get(ev["type"]) or self.handlers.get("*")
            if handler is not None:
                handler(ev)
            n += 1
            if limit is not None and n >= limit:
                break
        return n

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._thread is not None:
            self._thread.join(self.control_timeout * 2 + 1)
        for sock in self._socks:
            sock.close(linger=0)
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> EventReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscribe_result(peers: Iterable[str], task_id: str, timeout: float = 60.0) -> Result:
    """Wait for the Result of ``task_id`` on its ``result.<id>`` topic, from every
    node of the mesh; raise :class:`mesh.exceptions.TimeoutError` after ``timeout``.

    Only a result that finishes after the subscription reached the node arrives
    here (PUB/SUB does not replay): to get a result that may already exist, use
    ``app.AsyncResult(task_id).get()`` (docs/events.md says when to use which)."""
    deadline = time.monotonic() + timeout
    with EventReceiver(peers, topics=(RESULT_PREFIX.decode() + task_id,)) as recv:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ev = recv.next_event(left)
            if ev is not None and ev["type"] == RESULT and ev["uuid"] == task_id:
                res: Result = ev["result"]
                return res
    raise TimeoutError(f"no result for task {task_id} on its result topic within {timeout:g} s "
                       "(the topic only carries results finished after subscribing; "
                       "AsyncResult.get() asks the nodes)")
