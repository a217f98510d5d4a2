"""The mesh's boundary in membership: nodes of another mesh never join this one.

Every alive update a node gossips about itself carries its meta, and the meta says
which mesh it belongs to (``mesh``, the app's name; docs/routing.md). ``MeshScope``
stands between the node's transport and its membership: a membership message whose
sender says it belongs to another mesh is dropped, with the reason logged (once a
minute per sender), and updates about members of another mesh are taken out of any
message before membership sees them. A node of another mesh that asks to join is
answered with this node's own update only, so that it learns why, and says so: a
``--peers`` pointing at another app's node is an error in that node's log.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from mesh.membership import Membership
from mesh.membership.transport import Transport
from mesh.security.text import safe_logger
from mesh.wire.protocol import (
    UPDATE_ALIVE,
    Gossip,
    Message,
    Ping,
    PingAck,
    PushPull,
    PushPullReply,
    encode,
)

log = safe_logger("mesh.node")

LOG_EVERY = 60.0          # s between two log lines about the same foreign sender
MAX_REMEMBERED = 1000     # foreign senders remembered for that


def mesh_of_update(update: Sequence[Any]) -> str | None:
    """The mesh an alive update's meta names ("" when the meta has no ``mesh``: a node
    older than meshes), or None when the update carries no meta to tell."""
    if len(update) <= 6 or update[0] != UPDATE_ALIVE or not isinstance(update[6], dict):
        return None
    mesh = update[6].get("mesh", "")
    return mesh if isinstance(mesh, str) else ""


def foreign_members(updates: Iterable[Sequence[Any]], mesh: str) -> dict[str, str]:
    """Member id -> its mesh, for the updates that say they belong to another mesh."""
    out = {}
    for u in updates:
        theirs = mesh_of_update(u)
        if theirs is not None and theirs != mesh:
            out[str(u[1])] = theirs
    return out


def _parts(msg: Message) -> tuple[str, str, list[list[Any]]] | None:
    """(sender id, name of the updates field, updates) of a message that carries updates."""
    if isinstance(msg, (Ping, Gossip)):
        return msg.source, "updates", msg.updates
    if isinstance(msg, PingAck):
        return msg.node, "updates", msg.updates
    if isinstance(msg, (PushPull, PushPullReply)):
        return msg.source, "members", msg.members
    return None


class MeshScope:
    """A membership Receiver that passes on only what belongs to ``mesh``."""

    def __init__(self, mesh: str, membership: Membership, transport: Transport,
                 seeds: Iterable[str] = ()):
        self.mesh = mesh
        self.membership = membership
        self.transport = transport
        self.seeds = set(seeds)
        self.refused = 0                        # messages dropped: their sender is foreign
        self._logged: dict[str, float] = {}

    # -- the Receiver protocol ---------------------------------------------------------
    def handle(self, sender: str, data: bytes | Message, now: float | None = None) -> None:
        if isinstance(data, Message):
            parts = _parts(data)
            if parts is not None and parts[2]:
                source, field, updates = parts
                foreign = foreign_members(updates, self.mesh)
                if foreign:
                    if source in foreign:
                        self._refuse(data, source, foreign[source], updates)
                        return
                    data = dataclasses.replace(   # type: ignore[type-var]
                        data, **{field: [u for u in updates if str(u[1]) not in foreign]})
        self.membership.handle(sender, data, now)

    def tick(self, now: float | None = None) -> None:
        self.membership.tick(now)

    def next_deadline(self) -> float:
        return self.membership.next_deadline()

    # -- refusing ------------------------------------------------------------------------
    def _refuse(self, msg: Message, source: str, theirs: str, updates: list[list[Any]]) -> None:
        self.refused += 1
        address = next((str(u[3]) for u in updates if str(u[1]) == source), "")
        if isinstance(msg, PushPull) and msg.join:
            # tell the joiner who we are: it then knows why it cannot join, and says so
            me = self.membership.member(self.membership.id)
            if me is not None:
                update = [UPDATE_ALIVE, me.id, me.incarnation, me.address, "", me.meta_version,
                          dict(me.meta)]
                self.transport.send(msg.source_addr, encode(PushPullReply(me.id, [update])))
            self._log(source, logging.WARNING, "refused a join from node %s at %s: it belongs "
                      "to mesh %r, this node to mesh %r", source, address or msg.source_addr,
                      theirs, self.mesh)
        elif isinstance(msg, PushPullReply):   # the answer to our join: a seed of another mesh
            given = "given in --peers/MESH_PEERS" if address in self.seeds else "check --peers"
            self._log(source, logging.ERROR, "cannot join node %s at %s (%s): it belongs to mesh "
                      "%r, this node to mesh %r (the app's name)", source, address or "?", given,
                      theirs, self.mesh)
        else:
            self._log(source, logging.WARNING, "ignored node %s at %s: it belongs to mesh %r, "
                      "this node to mesh %r", source, address or "?", theirs, self.mesh)

    def _log(self, source: str, level: int, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._logged.get(source, -LOG_EVERY) < LOG_EVERY:
            return
        if len(self._logged) >= MAX_REMEMBERED:
            self._logged.clear()
        self._logged[source] = now
        log.log(level, fmt, *args)
