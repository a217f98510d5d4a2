"""Node-to-node sends over ZeroMQ, with datagram manners, for membership and gossip.

Each node reaches a peer through a DEALER connected to the peer's front door; what
the peer says back arrives on our own front door (every membership message names
its sender's address), so these sockets only ever send. Sends are best effort, like
UDP: the queue per peer is short (SNDHWM), and frames beyond it are dropped. A few
frames do wait for a connection in progress, so a node's first words to a new peer
(its join) are not lost; after a cut, at most SNDHWM stale frames arrive in a burst,
which SWIM ignores (old sequence numbers, older incarnations). ZMTP heartbeats turn
a cut link into a disconnect within seconds instead of never. Liveness is the
membership protocol's call, never the socket's.
"""
from __future__ import annotations

import logging
from typing import Any

import zmq

from .membership.transport import Receiver, Transport

log = logging.getLogger("mesh.peers")

SNDHWM = 64                 # frames queued per peer before new ones are dropped
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class PeerSockets:
    """``send(address, frame)`` to any peer front door; never blocks, never raises."""

    def __init__(self, ctx: zmq.Context[Any], routing_id: bytes):
        self.ctx = ctx
        self.routing_id = routing_id
        self.socks: dict[str, zmq.Socket[bytes]] = {}
        self.sent = self.dropped = self.bytes_sent = 0

    def _sock(self, address: str) -> zmq.Socket[bytes]:
        s = self.socks.get(address)
        if s is None:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, self.routing_id)
            s.setsockopt(zmq.SNDHWM, SNDHWM)
            s.setsockopt(zmq.RCVHWM, 16)      # we never read: peers answer to our front door
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            s.setsockopt(zmq.RECONNECT_IVL, 100)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            s.connect(address)
            self.socks[address] = s
        return s

    def send(self, address: str, frame: bytes) -> bool:
        try:
            self._sock(address).send(frame, zmq.NOBLOCK)
        except zmq.ZMQError as e:     # queue full, bad address
            self.dropped += 1
            log.debug("dropped a frame for %s: %s", address, e)
            return False
        self.sent += 1
        self.bytes_sent += len(frame)
        return True

    def forget(self, address: str) -> None:
        """Close the socket for a peer that is gone for good."""
        s = self.socks.pop(address, None)
        if s is not None:
            s.close(linger=0)

    def close(self) -> None:
        for s in self.socks.values():
            s.close(linger=0)
        self.socks.clear()


class ZmqTransport(Transport):
    """The membership Transport over ZeroMQ (mesh.membership.transport.Transport):
    sends through PeerSockets; inbound membership frames arrive on the node's front
    door, which hands them to ``deliver``. Once closed it neither sends nor delivers."""

    def __init__(self, sockets: PeerSockets, address: str):
        self.sockets = sockets
        self._address = address
        self.receiver: Receiver | None = None
        self.closed = False

    @property
    def address(self) -> str:
        return self._address

    def attach(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def send(self, address: str, frame: bytes) -> None:
        if not self.closed:
            self.sockets.send(address, frame)

    def deliver(self, sender: str, data: Any) -> None:
        """An inbound membership frame (or decoded message) from the front door."""
        if not self.closed and self.receiver is not None:
            self.receiver.handle(sender, data)

    def close(self) -> None:
        self.closed = True
        self.sockets.close()
