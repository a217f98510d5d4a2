"""The ``keys`` component: the node's key ring, its ZAP guard, and key reloads.

First of the node's components. Without keys it only checks that the node stays on
loopback (unless ``--insecure``; mesh/security/exposure.py) and says so. With
``--keys DIR`` it reads the directory (the mesh pair is the node's identity and the
key it serves with), starts the ZAP authenticator (mesh/security/curve.py) on the
node's context, and reads the directory again every ``RELOAD_INTERVAL`` seconds (every
``ROTATING_INTERVAL`` while a mesh key rotation is begun, so that the nodes reading one
directory switch to the new key close together):

* a key added is accepted from then on, a key removed is refused on its next message
  (the gate looks roles up per message), and the events port is bound again so that
  a removed key's subscription ends too;
* a new mesh key (``meshctl keys rotate DIR commit``) is served from then on: the
  front door and the events port are bound again with it (clients reconnect and
  resend; the journal answers what was finished), and peer sockets are made again
  with the new identity.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from mesh.exceptions import ConfigError
from mesh.node.component import Component, NodeStartError
from mesh.security.curve import Security
from mesh.security.exposure import host_of, is_loopback, refusal
from mesh.security.keys import NODE
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.security.guard import Guard
    from mesh.security.keys import KeyRing

log = safe_logger("mesh.security")

RELOAD_INTERVAL = 2.0      # s between looks at the key directory
ROTATING_INTERVAL = 0.25   # s between looks while a mesh key rotation is begun (mesh-next)


def reload_interval(ring: "KeyRing") -> float:
    """How long to wait before the next look at the key directory. While a rotation
    is begun, its commit is looked for every ROTATING_INTERVAL: a node serves the new
    key only when it sees the commit, and until its peers see it too their probes of
    each other fail; on the 2 s clock two nodes reading one directory switched up to
    2 s apart, long enough for the default profile to declare a two-node peer dead
    (seen in CI: suspect at +0.4 s, dead at +1.3 s)."""
    return ROTATING_INTERVAL if ring.rotating else RELOAD_INTERVAL


class Keys(Component):
    name = "keys"

    def __init__(self) -> None:
        self.guard: Guard | None = None
        self.reloads = 0

    async def start(self, node: "Node") -> None:
        cfg = node.config
        why = refusal(cfg)
        if why is not None:
            raise NodeStartError(why)
        try:
            node.security = Security.load(cfg.keys, NODE)
        except ConfigError as e:
            raise NodeStartError(f"keys: {e}") from None
        ring = node.security.ring
        if ring is None:
            if is_loopback(host_of(cfg.bind)):      # the usual one-machine setup: a note
                log.info("no keys: serving on loopback only (%s). To serve other machines, "
                            "make the mesh's keys (meshctl keys init DIR) and start nodes with "
                            "--keys DIR; --insecure serves beyond loopback without them",
                            cfg.bind)
            else:
                log.warning("no keys and --insecure: anyone who reaches %s may run tasks, read "
                            "results and events, and control this node (docs/security.md)", cfg.bind)
            return
        from mesh.security.guard import Guard  # (zmq.auth.thread: only with keys)
        self.guard = Guard(node.ctx, node.security)
        self.guard.start()
        log.info("keys %s: mesh key %s, %d client and %d admin key(s) accepted", ring.path,
                 ring.identity.fingerprint, _count(ring.roles, "client"), _count(ring.roles, "admin"))
        node.spawn(self._reload_loop(node, ring), name="keys-reload")

    def close(self, node: "Node") -> None:
        if self.guard is not None:
            self.guard.stop()
            self.guard = None

    async def _reload_loop(self, node: "Node", ring: "KeyRing") -> None:
        """(Started only with keys.) ``ring`` is the node's for its whole run: nothing
        replaces ``node.security`` once ``start`` made it, and ``reload`` reads the
        directory again into the same ring."""
        while True:
            await asyncio.sleep(reload_interval(ring))
            try:
                self.reload(node)
            except Exception:            # never the end of the node: the old keys stay
                log.exception("keys: reading the key directory again failed")

    def reload(self, node: "Node") -> bool:
        """Read the key directory again; act on what changed. True if anything did."""
        ring = node.security.ring
        if ring is None:
            return False
        before_roles, before_server = dict(ring.roles), ring.server_keys[:1]
        try:
            changed = ring.reload()
        except (ConfigError, OSError) as e:
            log.error("keys %s: cannot read them again (%s); the keys read before stay in use",
                      ring.path, e)
            return False
        if not changed:
            return False
        self.reloads += 1
        removed = [k for k, r in before_roles.items() if ring.roles.get(k) != r]
        log.info("keys %s changed: mesh key %s, %d client and %d admin key(s) accepted%s",
                 ring.path, ring.identity.fingerprint, _count(ring.roles, "client"),
                 _count(ring.roles, "admin"), f", {len(removed)} removed" if removed else "")
        steps: list[tuple[str, Callable[[], None]]] = []
        if ring.server_keys[:1] != before_server:
            log.warning("keys: now serving with mesh key %s (rotation committed): binding the "
                        "front door and the events port again", ring.identity.fingerprint)
            steps += [("the front door", node.front.rekey),
                      ("the events port", lambda: node.by_name["events"].rekey(node)),  # type: ignore[attr-defined]
                      ("the peer sockets", node.transport.sockets.reset)]
            if getattr(node.replicas, "started", False):
                steps.append(("the handoff and copy sockets", node.replicas.sockets.reset))
            if node.workflows is not None:
                steps.append(("the workflow sockets", node.workflows.sockets.reset))
            if node.beat is not None:
                steps.append(("the beat's sockets", node.beat.reset_sockets))
        elif removed:
            steps.append(("the events port", lambda: node.by_name["events"].rekey(node)))  # type: ignore[attr-defined]
        for what, step in steps:
            try:
                step()
            except Exception:            # a port taken meanwhile: say so, keep serving
                log.exception("keys: could not renew %s with the new keys", what)
        return True


def _count(roles: dict[str, str], role: str) -> int:
    return sum(1 for r in roles.values() if r == role)
