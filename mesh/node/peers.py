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

With keys, each socket speaks CurveZMQ with the node's identity (the mesh pair);
while the mesh key is rotated, a peer may serve with either key, so a frame goes out
on one socket per key the node trusts, and only the socket whose key the peer holds
ever completes its handshake (the others drop at their high-water mark).
"""
from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import socket
import time
from typing import Any

import zmq

from mesh.membership.transport import Receiver, Transport
from mesh.node.zmqloop import send_frame
from mesh.security.curve import Security
from mesh.security.text import safe_logger

log = safe_logger("mesh.peers")

SNDHWM = 64                 # frames queued per peer before new ones are dropped
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
RESOLVE_OK_TTL = 300.0      # s a host name's address is reused before it is looked up again
RESOLVE_FAIL_TTL = 30.0     # s a name that did not resolve is not tried again
MAX_RESOLVING = 8           # name lookups in flight at once; more names wait their turn
MAX_NAMES = 1024            # names remembered


def routing_id(kind: str, name: str) -> bytes:
    """The ZeroMQ routing id of a node's socket: ``kind``, the first 64 bytes of the
    node's name, and 8 random bytes. ZeroMQ takes 255 bytes at most, and a name may
    be 200 characters of 4 bytes each (mesh.wire.protocol.MAX_ID_LEN): cut at 64
    characters it was 256 bytes, and no socket so named could be opened."""
    return f"{kind}:".encode() + name.encode()[:64] + f":{os.urandom(8).hex()}".encode()


def request_id(kind: str, name: str) -> str:
    """The id of a request a node sends its peers (beat-fired, beat-sync, a revoke
    told on): ``kind``, the first 64 characters of the node's name, a clock. The wire
    takes ids of MAX_ID_LEN (200) characters, and a node's name may be that long: with
    the whole name, every peer refused them ('req_id must be 1..200 characters')."""
    return f"{kind}-{name[:64]}-{time.monotonic_ns()}"


def literal_host(address: str) -> bool:
    """True if a tcp://HOST:PORT address names an IP literal (no DNS needed)."""
    host = address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "*"
    return True


class Resolver:
    """Host names are looked up on a small thread pool, never on ZeroMQ's I/O thread:
    libzmq resolves a name given to connect() on its one I/O thread, so a peer that
    advertises (or a forged message that names) slow-to-resolve hosts would freeze
    every socket of the node. Until a name resolves, frames for it are dropped, as a
    datagram would be."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2,
                                                           thread_name_prefix="mesh-resolve")
        self._known: dict[str, tuple[str | None, float]] = {}   # host -> (ip, expires)
        self._pending: dict[str, concurrent.futures.Future[str | None]] = {}

    def lookup(self, address: str) -> str | None:
        """The address with an IP instead of the host name, or None for now."""
        rest = address.removeprefix("tcp://")
        host, _, port = rest.rpartition(":")
        now = time.monotonic()
        hit = self._known.get(host)
        if hit is not None and hit[1] > now:
            return f"tcp://{hit[0]}:{port}" if hit[0] else None
        fut = self._pending.get(host)
        if fut is not None:
            if not fut.done():
                return None
            del self._pending[host]
            ip = fut.result()
            if len(self._known) >= MAX_NAMES:
                del self._known[next(iter(self._known))]
            self._known[host] = (ip, now + (RESOLVE_OK_TTL if ip else RESOLVE_FAIL_TTL))
            if ip is None:
                log.warning("peer address %s: host %r does not resolve", address, host[:100])
            return f"tcp://{ip}:{port}" if ip else None
        if len(self._pending) < MAX_RESOLVING:
            self._pending[host] = self._pool.submit(_resolve, host)
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _resolve(host: str) -> str | None:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


class PeerSockets:
    """``send(address, frame)`` to any peer front door; never blocks, never raises."""

    def __init__(self, ctx: zmq.Context[Any], routing_id: bytes, hwm: int = SNDHWM,
                 security: Security | None = None):
        self.ctx = ctx
        self.routing_id = routing_id
        self.hwm = hwm                 # frames queued per peer before new ones are dropped
        self.security = security or Security(None)
        self.socks: dict[str, zmq.Socket[bytes]] = {}
        self.alternates: dict[str, list[zmq.Socket[bytes]]] = {}   # other mesh keys (rotation)
        self.sent = self.dropped = self.bytes_sent = 0
        self.resolver = Resolver()

    def _sock(self, address: str) -> zmq.Socket[bytes] | None:
        s = self.socks.get(address)
        if s is None:
            target = address if literal_host(address) else self.resolver.lookup(address)
            if target is None:
                return None
            keys = self.security.server_keys()
            s = self._open(target, keys[0])
            self.socks[address] = s
            if len(keys) > 1:
                self.alternates[address] = [self._open(target, k) for k in keys[1:]]
        return s

    def _open(self, target: str, server_key: bytes | None) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, self.routing_id)
        s.setsockopt(zmq.SNDHWM, self.hwm)
        s.setsockopt(zmq.RCVHWM, 16)      # we never read: peers answer to our front door
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.security.client(s, server_key)
        try:
            s.connect(target)
        except zmq.ZMQError:
            s.close(linger=0)
            raise
        return s

    def send(self, address: str, frame: bytes) -> bool:
        try:
            s = self._sock(address)
            if s is None:              # its host name is being looked up
                self.dropped += 1
                return False
            send_frame(s, frame)
            for alt in self.alternates.get(address, ()):
                try:
                    send_frame(alt, frame)
                except zmq.ZMQError:
                    pass
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
        for alt in self.alternates.pop(address, ()):
            alt.close(linger=0)

    def reset(self) -> None:
        """Close every socket; they are made again on the next send (new keys)."""
        for address in list(self.socks):
            self.forget(address)

    def close(self) -> None:
        self.reset()
        self.resolver.close()


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
