"""Rate limits of a node: per node (Celery's), and for the whole mesh (mesh's).

``rate_limit="100/m"`` is a limit per node, as in Celery; a task without one takes
``app.conf.task_default_rate_limit`` (mesh/task.py); the ``rate_limit`` control command
changes it at run time. ``worker_disable_rate_limits`` turns both kinds off on a node. ``mesh_rate_limit="100/m"`` is a limit for the whole mesh: each node that runs
the task declares it in its gossiped meta (``rl``, mesh/node/routes.py), and each takes
an even share of it (``mesh.ratelimit.mesh_share``) among the alive and suspect nodes
of its mesh that declare it, so the shares add up to the total. (Every such node is
counted, whatever queues it serves: a node counts the same nodes as its peers do, so
the shares never add up to more than the total; a node that gets none of the task
leaves its share unused.) The shares are worked out again every ``REBALANCE_INTERVAL`` (members come and
go). A task with both limits starts at the lower of the two rates on each node.

The limits are the pool's token buckets (``pool.limits``, capacity 1): a start that
must wait goes back to the node's timers with its start time reserved, so it never
holds a child. A start time reserved before a share shrank is kept.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from mesh.membership import MemberState
from mesh.node.component import Component
from mesh.ratelimit import TokenBucket, mesh_share, parse_rate
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

REBALANCE_INTERVAL = 0.5     # s between looks at the members running mesh-limited tasks
_COUNTED = (MemberState.ALIVE, MemberState.SUSPECT)   # a suspect may still be starting tasks


class Limits(Component):
    name = "ratelimits"
    requires = ("pool", "membership", "routing")

    def __init__(self) -> None:
        self.node_rates: dict[str, float | None] = {}   # per node: rate_limit, default, command
        self.totals: dict[str, float] = {}              # mesh-wide limits of our tasks
        self.shares: dict[str, tuple[float, int]] = {}  # name -> (this node's share, nodes)

    async def start(self, node: "Node") -> None:
        self.node = node
        for name, task in node.app.tasks.items():     # (task_default_rate_limit included)
            self.node_rates[name] = parse_rate(task.options.rate_limit)
        self.totals = dict(node.routing.mesh_limits)
        node.limits = self
        self.rebalance()
        if self.totals:
            node.spawn(self._loop(), name="ratelimits")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(REBALANCE_INTERVAL)
            try:
                self.rebalance()
            except Exception:
                log.exception("mesh-wide rate limits: rebalancing failed")

    # -- shares -----------------------------------------------------------------------
    def share(self, name: str) -> tuple[float, int] | None:
        """(this node's share, nodes sharing) of ``name``'s mesh-wide limit, or None."""
        total = self.totals.get(name)
        if total is None:
            return None
        node = self.node
        mesh = node.routing.mesh
        peers = []
        for m in node.membership.members()[1:]:
            if m.state not in _COUNTED or m.meta.get("mesh", "") != mesh:
                continue
            declared = m.meta.get("rl")
            if isinstance(declared, dict) and name in declared:
                peers.append(declared[name])
        return mesh_share(total, peers)

    def rebalance(self) -> None:
        """Work out every share again, and set the pool's buckets to match."""
        for name in self.totals:
            share = self.share(name)
            if share is not None and share != self.shares.get(name):
                if name in self.shares:
                    log.info("mesh-wide rate limit of %s: this node's share is now %.4g/s "
                             "(%d node(s))", name, share[0], share[1])
                self.shares[name] = share
        for name in {*self.node_rates, *self.totals}:
            self._apply(name)

    def _apply(self, name: str) -> None:
        rates = [r for r in (self.node_rates.get(name), self.shares.get(name, (None,))[0])
                 if r is not None]
        limits = self.node.pool.limits
        if not rates:
            limits.pop(name, None)
            return
        rate = min(rates)
        bucket = limits.get(name)
        if bucket is None:
            limits[name] = TokenBucket(rate)
        elif bucket.rate != rate:
            bucket.rate = rate

    def set_node_rate(self, name: str, rate: float | None) -> None:
        """The ``rate_limit`` command: this node's own limit of ``name`` (None: none)."""
        self.node_rates[name] = rate
        self._apply(name)

    def status(self) -> dict[str, Any]:
        """The mesh-wide limits and this node's shares (``status``: ``mesh_rate_limits``)."""
        return {name: {"total": total, "share": self.shares.get(name, (total, 1))[0],
                       "nodes": self.shares.get(name, (total, 1))[1]}
                for name, total in self.totals.items()}
