"""The front door: the node's ROUTER socket, bound on ``--bind``.

Clients send Submit and Control frames to it and get Ack/Result/Release/Error/
ControlReply back; peers send membership messages. A zmq message may carry several
frames, each one protocol message handled on its own; a frame that cannot be decoded
is refused and logged, and the node keeps serving everyone else.

With keys (``--keys``) the ROUTER is a CurveZMQ server (mesh/security/curve.py),
and every message is read with the key it came with: the gate (mesh/security/gate.py)
checks that key's role before anything is dispatched, and refuses what the role may
not send (an ERROR ``unauthorized``), so a client key cannot control the node or
speak membership, and a removed key is refused on its next message.

Replies are gathered per peer and sent together, as one multipart zmq message, at the
end of each event-loop pass (``flush``), after the ledger has committed the pass's
intakes to the journal. The socket is bound when the component starts (the node's
address is known from then on) and read from the moment the node is ready.

A client says in its SUBMIT and CONTROL frames the largest frame it reads (its
``max_message_size``). One set below this node's is remembered per routing id
(``limits``), and a reply over it is not sent: libzmq would end that client's
connection on it, for good. An ERROR ``reply-too-large`` goes instead (a STATE is
dropped, a RETRY goes cut short: the task runs on), naming the sizes; the result stays
stored here (docs/protocol.md, section 9).
"""
from __future__ import annotations

import asyncio
import errno
from typing import TYPE_CHECKING, Any

import zmq

from mesh import states
from mesh.config import advertised_endpoint
from mesh.exceptions import DecodeError, result_too_large
from mesh.membership import MESSAGE_TYPES
from mesh.node.component import Component, NodeStartError
from mesh.node.ledger import _RateLimitedLog
from mesh.node.zmqloop import SocketDriver
from mesh.security import gate
from mesh.security.curve import FRONT_DOMAIN
from mesh.security.text import printable, safe_logger
from mesh.slot import trim_retry
from mesh.wire.protocol import (
    REPLY_TOO_LARGE,
    Control,
    Error,
    Handoff,
    HandoffAck,
    Reclaim,
    Reclaimed,
    Replicate,
    ReplicateAck,
    Result,
    State,
    Submit,
    WfPull,
    WfPulled,
    WfReport,
    decode,
    encode,
)

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

MAX_FRAMES_PER_SEND = 512     # frames for one peer per zmq message at most
REBIND_WAIT = 5.0             # s to bind the same address again when the mesh key changes
LIMITS_KEPT = 10_000          # routing ids whose smaller max_message_size is remembered (the
                              # oldest is forgotten past it: that client's link is cut on a
                              # big reply, it connects again and says its limit again)
_FINAL = frozenset((states.SUCCESS, states.FAILURE, states.REVOKED, states.IGNORED))


class FrontDoor(Component):
    """Binds the ROUTER, reads it once the node is ready, and sends what the node
    replies, batched per peer and per loop pass."""

    name = "front"

    def __init__(self) -> None:
        self.refused = 0                       # frames refused since start
        self._out: dict[bytes, list[bytes]] = {}
        self._flush_scheduled = False
        self._badlog = _RateLimitedLog("refused frames")
        self._denylog = _RateLimitedLog("unauthorized frames")
        self.unauthorized = 0                  # frames refused by the gate since start
        self.sock: zmq.Socket[bytes] | None = None
        self.bound = ""                        # the endpoint bound (rekey binds it again)
        self.limits: dict[bytes, int] = {}     # routing id -> the max_message_size it said,
                                               # when below this node's (oldest first)
        self.too_large = 0                     # replies not sent: over their receiver's limit
        self._own_limit = 0                    # this node's max_message_size
        self._biglog = _RateLimitedLog("replies too large for their receiver")
        self._told: set[bytes] = set()         # routing ids told of a reply too large that
                                               # is not a result (logged once each)

    async def start(self, node: "Node") -> None:
        cfg = node.config
        self._own_limit = cfg.max_message_size
        front = node.ctx.socket(zmq.ROUTER)
        self.sock = front
        front.setsockopt(zmq.LINGER, 2000)
        front.setsockopt(zmq.ROUTER_HANDOVER, 1)
        front.setsockopt(zmq.SNDHWM, 0)
        front.setsockopt(zmq.RCVHWM, 100_000)
        front.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_size * 2)
        node.security.server(front, FRONT_DOMAIN)
        try:
            front.bind(cfg.bind)
        except zmq.ZMQError as e:
            front.close(linger=0)
            self.sock = None
            hint = ""
            if e.errno == errno.EADDRINUSE:     # a second node on a machine (Celery's workers
                # share a broker; nodes each need a port)
                hint = (": another node (or program) has that port; give each node on a "
                        "machine its own, e.g. --bind "
                        f"{_next_port(cfg.bind)} (they find each other by mDNS or --peers)")
            raise NodeStartError(f"cannot bind {cfg.bind}: {e.strerror}{hint}") from e
        self.bound = front.getsockopt_string(zmq.LAST_ENDPOINT)
        node.address = advertised_endpoint(self.bound, cfg.advertise)
        self.node = node
        if node.security.enabled:    # every message read with its key: the gate's input
            self.driver = SocketDriver(front, self._on_front_keyed, "front", copy=False)
        else:
            self.driver = SocketDriver(front, self._on_front, "front")
        node.front = self
        node.spawn(self._serve(node), name="front")

    async def _serve(self, node: "Node") -> None:
        await node.ready.wait()
        await self.driver.run()

    def close(self, node: "Node") -> None:
        if self.sock is not None:
            self.sock.close(linger=2000)

    def rekey(self) -> None:
        """Serve with the key ring's (new) mesh key: bind the same address again.
        Connections made with the old key end; clients reconnect and resend."""
        if self.sock is not None:
            rebind(self.sock, self.bound, lambda s: self.node.security.server(s, FRONT_DOMAIN))

    # -- inbound ----------------------------------------------------------------------
    def _on_front(self, frames: list[bytes]) -> None:
        """A zmq message from a peer: its routing id, then one protocol message per frame."""
        ident = frames[0]
        if len(frames) < 2:
            self.refused += 1
            self._badlog.warning("dropped an empty message from %r", ident[:16])
            return
        for i in range(1, len(frames)):
            self._on_message(ident, frames[i])

    def _on_front_keyed(self, frames: list[zmq.Frame]) -> None:
        """The same, with keys: the key every frame of the message came with decides
        what its sender may send (one lookup per zmq message)."""
        ident = frames[0].bytes
        if len(frames) < 2:
            self.refused += 1
            self._badlog.warning("dropped an empty message from %r", ident[:16])
            return
        user = frames[1].get("User-Id")
        role = self.node.security.role(user if isinstance(user, str) else None)
        for i in range(1, len(frames)):
            self._on_message(ident, frames[i].bytes, role)

    def _on_message(self, ident: bytes, frame: bytes, role: str | None = "") -> None:
        """One frame. ``role`` is the sender's, with keys (None: a key no longer
        accepted); "" without keys, where the gate is not consulted."""
        node = self.node
        try:
            msg = decode(frame, node.config.max_message_size)
        except DecodeError as e:
            self.refused += 1
            code = "too-large" if len(frame) > node.config.max_message_size else "decode"
            self._badlog.warning("refused a frame of %d bytes from %r: %s", len(frame), ident[:16], e)
            self.refuse(ident, code, str(e), e.ref if code == "decode" else None)
            return
        if role != "":
            why = gate.refusal(role, msg, node.control.kind_of)
            if why is not None:
                self.unauthorized += 1
                self._denylog.warning("refused %s from %r (%s key): %s", type(msg).__name__,
                                      printable(ident[:16]), role or "unknown", why)
                self.refuse(ident, "unauthorized", why, _ref(msg))
                return
        if type(msg) is Submit:
            said = msg.max_message_size
            if said and said < self._own_limit and self.limits.get(ident) != said:
                self._said(ident, said)
            elif said >= self._own_limit and self.limits and ident in self.limits:
                del self.limits[ident]        # (raised since: as large as this node's)
            node.intake.submit(ident, msg, frame)
        elif type(msg) in MESSAGE_TYPES:
            node.transport.deliver(ident.hex(), msg)
        elif type(msg) is Control:
            said = msg.max_message_size
            if said and said < self._own_limit and self.limits.get(ident) != said:
                self._said(ident, said)
            elif said >= self._own_limit and self.limits and ident in self.limits:
                del self.limits[ident]        # (raised since: as large as this node's)
            node.control.handle(ident, msg)
        elif type(msg) in _NODE_DATA:          # node to node: handoff, copies, workflows
            try:
                _NODE_DATA[type(msg)](node, msg)
            except Exception:                  # never crash on what a peer sends
                self.refused += 1
                log.exception("failed to handle %s from %r", type(msg).__name__, ident[:16])
        else:
            self.refused += 1
            self.refuse(ident, "bad-request", f"a node does not accept {type(msg).__name__} messages")

    def _said(self, ident: bytes, limit: int) -> None:
        """``ident`` reads frames of ``limit`` bytes at most (less than this node's)."""
        limits = self.limits
        limits.pop(ident, None)
        if len(limits) >= LIMITS_KEPT:
            del limits[next(iter(limits))]
        limits[ident] = limit

    def said_limit(self, ident: bytes) -> int | None:
        """The max_message_size ``ident`` said, when below this node's: what its
        replies must fit (a result lookup's answer is made to: taskstate.lookup); None
        when it said none, or one as large as this node's."""
        return self.limits.get(ident)

    # -- outbound ---------------------------------------------------------------------
    def refuse(self, ident: bytes, code: str, message: str, ref: str | None = None) -> None:
        self.reply(ident, encode(Error(code=code, message=message[:500], ref=ref)))

    def reply(self, ident: bytes, frame: bytes) -> None:
        """Queue a frame for a peer. Frames for one peer go out together, as one
        multipart zmq message, once the loop has finished what it is doing. A frame over
        the max_message_size the peer said is replaced (``_too_large``)."""
        limits = self.limits
        if limits and len(frame) > limits.get(ident, len(frame)):
            replaced = self._too_large(ident, frame, limits[ident])
            if replaced is None:
                return
            frame = replaced
        out = self._out.get(ident)
        if out is None:
            out = self._out[ident] = []
        out.append(frame)
        if not self._flush_scheduled:
            self.schedule_flush()

    def _too_large(self, ident: bytes, frame: bytes, limit: int) -> bytes | None:
        """What goes to ``ident`` instead of ``frame``, over the ``limit`` it said: an
        ERROR ``reply-too-large`` naming the sizes and the task (or request) id, or
        nothing for a STATE (a later state, or the result, follows it)."""
        self.too_large += 1
        try:
            msg = decode(frame, len(frame))      # (ours: only for its type and id)
        except DecodeError:
            msg = None
        who = printable(ident[:40])
        if type(msg) is State:
            self._biglog.warning("did not send %s the state %s of task %s: %d bytes, over the "
                                 "max_message_size it said (%d)", who, msg.state, msg.task_id,
                                 len(frame), limit)
            return None
        if type(msg) is Result and msg.state == states.RETRY:
            return self._retry_trimmed(ident, msg, len(frame), limit)
        ref = _ref(msg)
        once = False
        if type(msg) is Result and msg.state in _FINAL:
            text = result_too_large(msg.task_id, len(frame), limit, self.node.name)
        else:
            what = type(msg).__name__.upper() if msg is not None else "reply"
            text = (f"a {what}{f' about {ref}' if ref else ''} of {len(frame):,} bytes is over "
                    f"this client's max_message_size ({limit:,}): not sent; raise the client's "
                    f"max_message_size to {len(frame):,} or more")
            once = ident in self._told      # (a members answer, asked each second)
            if not once:
                if len(self._told) >= LIMITS_KEPT:
                    self._told.clear()
                self._told.add(ident)
        (log.debug if once else self._biglog.warning)(
            "sent %s an ERROR %s instead of a reply of %d bytes: %s%s", who, REPLY_TOO_LARGE,
            len(frame), text, "" if once else " (said once for this peer's replies that are "
            "not results)")
        return encode(Error(REPLY_TOO_LARGE, text[:500], ref))

    def _retry_trimmed(self, ident: bytes, msg: Result, size: int, limit: int) -> bytes | None:
        """A RETRY over the ``limit`` ``ident`` said: not final (the task runs again and
        its result follows), so no ERROR (the client would fail the task): the notice
        trimmed to fit (mesh.slot.trim_retry: its cause cut short, saying so; retries,
        eta and the next run's arguments kept for a resend), or nothing if it cannot."""
        small = trim_retry(msg, size, limit)
        who = printable(ident[:40])
        if small is None:
            self._biglog.warning("did not send %s the RETRY of task %s: %d bytes, over the "
                                 "max_message_size it said (%d), even cut short", who,
                                 msg.task_id, size, limit)
            return None
        dropped = " and without the next run's arguments" if small.payload is None and \
            msg.payload is not None else ""
        self._biglog.warning("sent %s the RETRY of task %s cut short%s: %d bytes, over the "
                             "max_message_size it said (%d); the task runs again", who,
                             msg.task_id, dropped, size, limit)
        return encode(small)

    @property
    def flush_pending(self) -> bool:
        """A flush is scheduled in this loop pass (replies are waiting for it)."""
        return self._flush_scheduled

    def schedule_flush(self) -> None:
        """Flush once this loop pass has done its work, so the replies it produced for
        one peer leave together. (Delaying further to batch more cost latency: asyncio
        rounds timer waits up to whole milliseconds, and throughput did not improve.)"""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """End of a loop pass: the ledger commits and hands over new tasks, intake
        acknowledges what is still held, then every peer's frames are sent."""
        self._flush_scheduled = False
        node = self.node
        if node.workflows is not None:
            node.workflows.flush()
        node.ledger.flush()
        node.intake.flush_acks()
        spill = node.spill
        if spill.on_disk or spill.candidates:
            spill.settle()        # out of memory once acknowledged (mesh/node/spill.py)
            spill.refill()        # and back in order as the queue drains
        if node.replicas.started:
            node.replicas.flush()
        if node.handoff.started:
            node.handoff.flush()
        out, self._out = self._out, {}
        send = self.driver.send
        for ident, frames in out.items():
            for i in range(0, len(frames), MAX_FRAMES_PER_SEND):
                send([ident, *frames[i:i + MAX_FRAMES_PER_SEND]])


_NODE_DATA: dict[type, Any] = {
    Replicate: lambda node, msg: node.replicas.on_replicate(msg),
    ReplicateAck: lambda node, msg: node.replicas.on_ack(msg),
    Handoff: lambda node, msg: node.handoff.on_handoff(msg),
    HandoffAck: lambda node, msg: node.handoff.on_ack(msg),
    WfReport: lambda node, msg: node.workflows.on_message(msg),
    WfPull: lambda node, msg: node.workflows.on_message(msg),
    WfPulled: lambda node, msg: node.workflows.on_message(msg),
    Reclaim: lambda node, msg: node.reclaim.answer(msg),
    Reclaimed: lambda node, msg: node.reclaim.on_reclaimed(msg),
}


def rebind(sock: zmq.Socket[Any], endpoint: str, secure: Any) -> None:
    """Unbind ``endpoint`` and bind it again after ``secure(sock)`` set new keys
    (libzmq copies a socket's keys when it binds). The port is free again once
    libzmq's I/O thread has closed the listener, a moment later."""
    import time
    secure(sock)
    sock.unbind(endpoint)
    deadline = time.monotonic() + REBIND_WAIT
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as e:
            if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                log.error("could not bind %s again: %s", endpoint, e)
                raise
            time.sleep(0.01)


def _ref(msg: Any) -> str | None:
    """The task or request id a refused message names (the sender's reference)."""
    ref = getattr(msg, "task_id", None) or getattr(msg, "req_id", None)
    return ref if isinstance(ref, str) else None


def _next_port(endpoint: str) -> str:
    """``tcp://HOST:PORT`` with the next port (for the hint when PORT is taken)."""
    host, _, port = endpoint.rpartition(":")
    return f"{host}:{int(port) + 1}" if port.isdigit() else "tcp://127.0.0.1:7701"
