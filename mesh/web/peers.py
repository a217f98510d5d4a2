"""Asking the mesh: one question to every alive node, answered in-process for this one.

Peers are asked over their front doors with the ``web.*`` control commands
(mesh/web/commands.py), and with the ordinary commands (``status``, ``revoke``...)
for the API's control verbs. The sockets live on a worker thread for the length of
one question (as ``meshctl`` does), so the node's loop only awaits.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import zmq

from mesh.client.control import ControlClient
from mesh.security.curve import Security
from mesh.wire.protocol import ControlReply

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.web.commands import HistoryService

TIMEOUT = 3.0


def ask_sync(ctx: zmq.Context[Any], endpoints: list[str], command: str, args: dict[str, Any],
             timeout: float, security: Security | None = None) -> dict[str, ControlReply | str]:
    """Send one Control to each endpoint and gather the replies (or why there is
    none) until all answered or ``timeout``. ``web.*`` commands are answered later by
    the node: they carry ``req`` and ``noreply``. With keys, as the node."""
    req_id = uuid.uuid4().hex
    if command.startswith("web."):
        args = {**args, "req": req_id, "noreply": True}
    return ControlClient(ctx, security or Security(None)).broadcast(endpoints, command, args, timeout,
                                                                  req_id=req_id)


class MeshAsker:
    """Questions to every alive node of the mesh, seen from one node."""

    def __init__(self, node: "Node", service: "HistoryService"):
        self.node = node
        self.service = service
        self.ctx: zmq.Context[Any] = zmq.Context()

    def close(self) -> None:
        self.ctx.term()

    def peers(self) -> dict[str, str]:
        """Alive (and suspect) peers: name -> front door, from this node's membership."""
        ms = self.node.membership
        if ms is None:
            return {}
        return {m.id: m.address for m in ms.members()
                if m.id != self.node.name and m.state.value in ("alive", "suspect")}

    def members(self) -> list[dict[str, Any]]:
        """Every member this node knows (any state), this node included."""
        return self.node.members() if self.node.membership is not None else []

    async def ask(self, names: dict[str, str], command: str, args: dict[str, Any] | None = None,
                  timeout: float = TIMEOUT) -> dict[str, Any]:
        """``command`` to the named peers (name -> endpoint): name -> payload, or
        ``{"error": text}`` for a node that refused or did not answer."""
        if not names:
            return {}
        eps = list(names.values())
        replies = await asyncio.to_thread(ask_sync, self.ctx, eps, command, dict(args or {}), timeout,
                                          self.node.security)
        out: dict[str, Any] = {}
        by_ep = {ep: name for name, ep in names.items()}
        for ep, r in replies.items():
            name = by_ep[ep]
            if isinstance(r, ControlReply):
                out[name] = r.payload if r.ok else {"error": r.error}
            else:
                out[name] = {"error": r}
        return out

    async def everywhere(self, command: str, args: dict[str, Any] | None = None,
                         only: str | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
        """A ``web.*`` question to this node (in-process) and every alive peer (or
        only the node named ``only``): node name -> answer or ``{"error"}``."""
        args = dict(args or {})
        peers = self.peers()
        if only is not None:
            peers = {k: v for k, v in peers.items() if k == only}
        out: dict[str, Any] = {}
        local = None
        if only is None or only == self.node.name:
            local = asyncio.ensure_future(self._local(command, args))
        if peers:
            out.update(await self.ask(peers, command, args, timeout))
        if local is not None:
            out[self.node.name] = await local
        if only is not None and only not in out:
            out[only] = {"error": f"no alive node is named {only!r}"}
        return out

    async def _local(self, command: str, args: dict[str, Any]) -> Any:
        fn = self.service.handlers[command]
        try:
            return await fn(args)
        except ValueError:
            raise
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"}

    async def control(self, command: str, args: dict[str, Any] | None = None,
                      only: str | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
        """An ordinary control command (status, revoke, pool_grow...) to this node and
        every alive peer, or only the named node. This node is asked over its own front
        door too, so every answer goes through the same checks."""
        names = {self.node.name: self.node.address, **self.peers()}
        if only is not None:
            if only not in names:
                return {only: {"error": f"no alive node is named {only!r}"}}
            names = {only: names[only]}
        return await self.ask(names, command, args, timeout)
