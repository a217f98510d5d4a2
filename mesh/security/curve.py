"""The one place a ZeroMQ socket is made secure (CurveZMQ), and the node's ZAP guard.

Every socket mesh makes goes through a :class:`Security`: without keys it does
nothing (plain ZeroMQ, as before); with keys, ``server(sock, domain)`` makes a
bound socket a CURVE server with the mesh key and a ZAP domain, and
``client(sock, server_key)`` makes a connecting socket speak CURVE with this
process's key pair to a node holding ``server_key``. While the mesh key is being
rotated a process trusts up to three mesh keys (``server_keys()``, current first);
connectors either open one socket per key (only the right one completes its
handshake) or switch keys when a handshake fails (the client's links).

The guard (mesh/security/guard.py) is pyzmq's ZAP authenticator (``zmq.auth``), in a thread of the
node: a connection completes its handshake only if its key is in the key directory,
in a role that the domain admits (``mesh``: every role, the front door; ``events``:
admin and node keys). What each role may *send* is the gate's business
(mesh/security/gate.py), per message, from the key libzmq puts on every message as
its ``User-Id``.
"""
from __future__ import annotations

import os
from typing import Any

import zmq

from mesh.security.keys import ADMIN, CLIENT, NODE, KeyRing
from mesh.security.text import safe_logger

log = safe_logger("mesh.security")

FRONT_DOMAIN = "mesh"           # ZAP domain of a node's front door: every role connects
EVENTS_DOMAIN = "mesh-events"   # the events XPUB: what every task carries, for admins and nodes
DOMAIN_ROLES = {FRONT_DOMAIN: frozenset({CLIENT, ADMIN, NODE}),
                EVENTS_DOMAIN: frozenset({ADMIN, NODE})}
# handshake failures a connecting socket sees, and what each means
FAILED_KEY = int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)   # the node holds another mesh key
FAILED_PROTOCOL = int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)  # one side has keys, the other not
FAILED_AUTH = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)       # the node does not accept our key
HANDSHAKE_EVENTS = int(zmq.EVENT_HANDSHAKE_SUCCEEDED) | FAILED_KEY | FAILED_PROTOCOL | FAILED_AUTH


class Security:
    """How this process's sockets are secured: ``Security(None)`` for none (no keys),
    ``Security(KeyRing(...))`` for CurveZMQ with that key directory."""

    def __init__(self, ring: KeyRing | None):
        self.ring = ring

    @classmethod
    def load(cls, path: str, use: str, name: str = "") -> "Security":
        """From a key directory path ("" for none)."""
        return cls(KeyRing(path, use, name) if path else None)

    @classmethod
    def from_env(cls, use: str = ADMIN) -> "Security":
        """From MESH_KEYS / MESH_KEY_NAME (meshctl and tools), none when unset."""
        return cls.load(os.environ.get("MESH_KEYS", ""), use, os.environ.get("MESH_KEY_NAME", ""))

    @property
    def enabled(self) -> bool:
        return self.ring is not None

    def describe(self) -> str:
        if self.ring is None:
            return "no keys"
        return f"keys {self.ring.path} (as {self.ring.identity.role} {self.ring.identity.name})"

    # -- sockets --------------------------------------------------------------------------
    def server(self, sock: zmq.Socket[Any], domain: str = FRONT_DOMAIN) -> None:
        """Make a socket about to bind a CURVE server with the mesh key."""
        ring = self.ring
        if ring is None:
            return
        if ring.server is None or ring.server.secret is None:
            raise RuntimeError(f"{ring.path}: only a node (with the mesh secret) binds")
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, ring.server.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, ring.server.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def client(self, sock: zmq.Socket[Any], server_key: bytes | None) -> None:
        """Make a socket about to connect speak CURVE to a node holding ``server_key``
        (one of ``server_keys()``; None without keys)."""
        ring = self.ring
        if ring is None or server_key is None:
            return
        me = ring.identity
        assert me.secret is not None
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, me.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, me.secret)

    def server_keys(self) -> list[bytes | None]:
        """The mesh keys a node may hold, current first: one socket per key where a
        connector cannot tell in advance (``[None]`` without keys)."""
        if self.ring is None:
            return [None]
        return list(self.ring.server_keys)

    # -- the gate's input -----------------------------------------------------------------
    def role(self, user_id: str | None) -> str | None:
        """The role of the key a message came with (its ZAP User-Id), now: a key
        removed since the connection was made has none."""
        if self.ring is None or user_id is None:
            return None
        return self.ring.role_of(user_id)

    def handshake_problem(self, event: int, endpoint: str) -> str:
        """Words for a failed handshake, for logs and for the callers it fails."""
        where = self.describe()
        if self.ring is None:
            return (f"the node at {endpoint} requires keys (a handshake without keys failed): "
                    "pass the mesh's keys (Mesh(keys=DIR), MESH_KEYS, meshctl --keys DIR)")
        if event == FAILED_AUTH:
            return (f"the node at {endpoint} refused this process's key ({where}): "
                    "is it in the mesh's key directory? (meshctl keys list DIR)")
        if event == FAILED_PROTOCOL:
            return f"the node at {endpoint} has no keys, and this process does ({where})"
        return (f"the node at {endpoint} does not hold a mesh key this process trusts "
                f"({where})")
