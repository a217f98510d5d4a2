"""The node's ZAP guard: pyzmq's authenticator admitting the keys of the node's KeyRing
by domain (mesh/security/curve.py says which roles each domain admits).

Its own module: pyzmq's ``zmq.auth.thread`` imports ``zmq.asyncio`` and asyncio, which
only a node with keys needs; meshctl and clients import mesh/security/curve.py
without them."""
from __future__ import annotations

from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from mesh.security.curve import DOMAIN_ROLES, Security
from mesh.security.text import safe_logger

log = safe_logger("mesh.security")


class Guard(ThreadAuthenticator):
    """pyzmq's ZAP authenticator in a thread of the node, admitting the keys of the
    node's KeyRing by domain. A refused connection is logged (at most a few a minute)."""

    def __init__(self, ctx: zmq.Context[Any], security: Security):
        super().__init__(ctx, log=safe_logger("mesh.security.zap"))
        self.security = security
        self.refused = 0
        self._address = ""
        for domain in DOMAIN_ROLES:
            self.configure_curve_callback(domain, self)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode(errors="replace")[:64] if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        """Admit ``key`` (z85) on ``domain``? (called by the authenticator)."""
        role = self.security.role(key.decode(errors="replace"))
        if role is not None and role in DOMAIN_ROLES.get(domain, ()):
            return True
        self.refused += 1
        if self.refused <= 20 or self.refused % 1000 == 0:
            log.warning("refused a connection from %s on %s: key %s... is %s (refused so far: %d)",
                        self._address, domain, key[:8].decode(errors="replace"),
                        f"a {role} key, not admitted there" if role else
                        "not in the mesh's key directory", self.refused)
        return False
