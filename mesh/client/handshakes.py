"""The client's links, with keys: handshakes that fail, and frames from the wrong node.

A link (mesh/client/io.py) speaks CurveZMQ to its node with one of the mesh keys the
client trusts. libzmq reports a failed handshake three ways:

* ``HANDSHAKE_FAILED_NO_DETAIL``: the node holds another mesh key (a rotation under
  way), or it went away mid-handshake. libzmq tries again by itself; after
  ``KEY_STRIKES`` failures in a row the link tries the next mesh key the client
  trusts (the key directory is read again first), and when none is left the link is
  refused;
* ``HANDSHAKE_FAILED_AUTH``: the node does not accept this client's key;
* ``HANDSHAKE_FAILED_PROTOCOL``: one side has keys and the other has none.

A refused link takes no task: its tasks go to other nodes, or fail with the reason
when no other node can take them (never silently); it is tried again every
``REFUSED_RETRY`` seconds, since the key may be added meanwhile. Functions of the
client (``client`` is the ``Client``), kept here so io.py stays about the I/O loop.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mesh import states
from mesh.client.placement import choose_from
from mesh.exceptions import ConfigError
from mesh.security.curve import FAILED_KEY
from mesh.security.text import safe_logger
from mesh.wire.protocol import Result

if TYPE_CHECKING:
    from mesh.client.io import Client
    from mesh.client.links import NodeLink

log = safe_logger("mesh.client")

KEY_STRIKES = 3             # handshakes failed in a row before a link tries another mesh key
                            # (one failure may be a node that died mid-handshake)
REFUSED_RETRY = 5.0         # s before a link the node refused (keys) is tried again


def wrong_key(client: "Client", link: "NodeLink") -> None:
    """A handshake failed without saying why: the node holds a mesh key other than
    the one this link tried (a rotation under way), or it went away mid-handshake.
    libzmq tries again by itself; after KEY_STRIKES failures in a row the link tries
    the next mesh key we trust, and when none works, the link is refused."""
    link.strikes += 1
    if link.strikes < KEY_STRIKES:
        return
    link.strikes = 0
    link.keys_failed.add(link.key)
    ring = client.security.ring
    if ring is not None:
        try:
            ring.reload()           # the directory may hold the new key by now
        except (ConfigError, OSError) as e:
            log.warning("keys: cannot read %s again: %s", ring.path, e)
    keys = client.security.server_keys()
    untried = [k for k in keys if k not in link.keys_failed]
    if not untried:
        refused(client, link, client.security.handshake_problem(FAILED_KEY, link.endpoint))
        return
    link.key = untried[0]
    client._reset_link(link)


def refused(client: "Client", link: "NodeLink", why: str) -> None:
    """The node refused our handshake: its tasks go to other nodes, or fail with
    ``why`` when no other node can take them; new ones fail at once. The link is
    tried again every REFUSED_RETRY seconds (the key may be added meanwhile)."""
    first = not link.refused
    link.refused, link.refused_at = why, time.monotonic()
    if first:
        log.error("%s", why)
    client._update_placeable()
    for slot in [s for s in client._slots.values() if s.node == link.endpoint and s.msg is None]:
        client._forget_one(link, slot.state != states.PENDING)
        others = [n for n in client._placeable if n is not link]
        if others:
            slot.state = states.PENDING
            client._send(slot, choose_from(others, client._rng) or others[0])
        else:
            client._slots.pop(slot.task_id, None)
            client._fail(slot, "MeshError", why)


def retry_refused(client: "Client", now: float) -> None:
    for link in list(client.links.values()):
        if link.refused and now - link.refused_at > REFUSED_RETRY:
            link.refused_at = now
            link.keys_failed.clear()
            link.strikes = 0
            link.key = None
            if client.security.ring is not None:
                try:
                    client.security.ring.reload()
                except (ConfigError, OSError):
                    pass
            client._reset_link(link)


def foreign(client: "Client", msg: Result, link: "NodeLink") -> None:
    """A result for one of our tasks from a node that does not hold it for us
    (a late one from a node we failed over from, or a forgery): not taken."""
    client.foreign += 1
    if client.foreign <= 10 or client.foreign % 1000 == 0:
        log.warning("dropped a %s for task %s from %s, which does not hold it for this "
                    "client (%d so far)", msg.state, msg.task_id, link.endpoint, client.foreign)
