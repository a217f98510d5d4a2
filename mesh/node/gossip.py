"""Membership glue: the SWIM membership (mesh/membership) on the node's sockets.

Membership messages arrive on the front door and go out through ``PeerSockets`` (one
DEALER per peer, datagram manners). This component builds the transport and the
membership, joins the seeds, spreads this node's load in its meta, tells a member that
joins (or comes back) what we revoked, leaves the mesh first thing at shutdown, and
closes the sockets of peers membership has forgotten (``sweep``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mesh.digest import sha1
from mesh.membership import Member, Membership, MemberState, profile
from mesh.node.component import Component
from mesh.node.peers import PeerSockets, ZmqTransport, routing_id
from mesh.node.scope import MeshScope
from mesh.security.text import printable, safe_logger

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

SWEEP_INTERVAL = 30.0      # s between closing the sockets of forgotten peers
SWEEP_FLOOR = 0.5          # ... at least (a short --dead-node-reclaim)
WILDCARDS = ("0.0.0.0", "*", "[::]", "::")   # a bind on every address of the machine
SEED_PROBES = 20           # probe intervals (6 s on lan) for a seed to answer before a warning


STOP_MAX = 3600.0          # s: the longest --shutdown-timeout of a peer waited for (or this node's own)
_ODD_STOPS_MAX = 10_000    # peers whose odd "stop" was said (once each; then at DEBUG)
_odd_stops: set[str] = set()


def shutdown_timeout_of(meta: Any, own: float, peer: str = "") -> float:
    """The ``--shutdown-timeout`` a member says in its meta (``"stop"``): how long it
    may run its tasks once it leaves, and so how long its peers wait before they take
    over its tasks (mesh/node/takeover.py) or send its periodic runs elsewhere
    (mesh/node/beat_send.py). ``own`` for a member that does not say it (a node from
    before 2026-12). Said at WARNING, once per peer: a value that is not a number >= 0
    (nan, negative, text: ``own`` is used), and one over STOP_MAX and over ``own``
    (1e300, inf: this node waited for ever, its tasks never taken over), which is
    waited for that long at most."""
    said = meta.get("stop") if isinstance(meta, Mapping) else None
    if said is None:
        return own
    if isinstance(said, (int, float)) and not isinstance(said, bool) and said >= 0:
        cap = max(STOP_MAX, own)
        if said <= cap:
            return float(said)
        _say_odd_stop(peer, f"says a shutdown timeout of {said:g} s: its tasks are waited "
                            f"for {cap:g} s at most once it leaves")
        return cap
    _say_odd_stop(peer, f"says a shutdown timeout of {printable(repr(said))[:40]}, not a "
                        f"number >= 0: this node's own ({own:g} s) is used for it")
    return own


def _say_odd_stop(peer: str, what: str) -> None:
    say = log.debug if peer in _odd_stops else log.warning
    if len(_odd_stops) < _ODD_STOPS_MAX:
        _odd_stops.add(peer)
    say("member %s %s", printable(peer) or "?", what)


def boot_of(meta: Any) -> str | None:
    """The ``boot`` a member says in its meta (the id of its process: another one
    means it restarted), None if it says none or what is not text. (Compared as
    said, a nan was never equal to itself: the member 'restarted' at every look.)"""
    said = meta.get("boot") if isinstance(meta, Mapping) else None
    return said if isinstance(said, str) else None


def tasks_digest(names: Iterable[str]) -> str:
    """A digest of the registered task names (in the gossiped meta)."""
    return sha1("\n".join(sorted(names)).encode()).hexdigest()[:12]


def is_own_address(seed: str, bound: str, advertised: str, seed_ips: Iterable[str],
                   local_ips: Iterable[str]) -> bool:
    """Whether ``seed`` reaches this node's own front door: the advertised endpoint
    itself, or the bound port at an address it listens on (``seed_ips``: what the
    seed's host resolves to; ``local_ips``: this machine's addresses, for a wildcard
    bind)."""
    if seed == advertised or seed == bound:
        return True
    host, _, port = seed[6:].rpartition(":")
    bound_host, _, bound_port = bound[6:].rpartition(":")
    if port != bound_port:
        return False
    wildcard = bound_host in WILDCARDS
    listening = set(local_ips) if wildcard else {bound_host.strip("[]")}
    return bool(set(seed_ips) & listening) or host.strip("[]") in listening


async def own_seeds(seeds: Iterable[str], bound: str, advertised: str) -> list[str]:
    """The seeds that are this node itself (host names resolved at once, 2 s at most)."""
    seeds = list(dict.fromkeys(seeds))
    ips = await asyncio.gather(*(_ips(s, bound, advertised) for s in seeds))
    # the machine's addresses only for a wildcard bind and a seed on our port: psutil
    # loaded before the fork is ~0.9 MiB in the node and in each child (docs/performance.md)
    local = _local_ips() if any(ips) and bound[6:].rpartition(":")[0] in WILDCARDS else set()
    return [s for s, found in zip(seeds, ips) if is_own_address(s, bound, advertised, found, local)]


def _local_ips() -> set[str]:
    """This machine's IPv4 and IPv6 addresses."""
    import socket

    import psutil
    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)}


async def _ips(seed: str, bound: str, advertised: str) -> set[str]:
    """What the seed's host is, as addresses: only for a seed on our own port (a name
    that does not resolve in 2 s is no address of ours)."""
    import ipaddress
    host, _, port = seed[6:].rpartition(":")
    if port != bound.rpartition(":")[2] or seed in (bound, advertised):
        return set()
    host = host.strip("[]")
    try:
        return {str(ipaddress.ip_address(host.split("%")[0]))}
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, None), 2.0)
    except (OSError, UnicodeError):     # (TimeoutError is an OSError)
        return set()
    return {str(i[4][0]).split("%")[0] for i in infos}


class Members(Component):
    name = "membership"
    requires = ("front", "events", "control", "routing", "pool", "heartbeat")

    async def start(self, node: "Node") -> None:
        self.node = node
        node.gossip = self
        # a digest of the registered task names: load is only shed to peers with the same
        node.tasks_digest = tasks_digest(node.app.tasks)
        # a routing id nobody can guess: a peer that took it over (ROUTER_HANDOVER)
        # would cut this node's link to that peer
        peers = PeerSockets(node.ctx, routing_id("node", node.name),
                            security=node.security)
        node.transport = self.transport = ZmqTransport(peers, node.address)
        prof = profile(node.config.profile)
        if node.config.dead_node_reclaim is not None:      # --dead-node-reclaim
            prof = dataclasses.replace(prof, dead_node_reclaim=node.config.dead_node_reclaim)
        self._reclaim = prof.dead_node_reclaim
        self._answered = False        # some other node has been alive here (seeds)
        node.membership = self.membership = Membership(
            node.name, node.address, prof, self.transport, on_change=self._on_change,
            get_local_meta=self.local_meta)
        # nodes of another mesh (another app's, on the same LAN) are refused (scope.py)
        self.scope = MeshScope(node.routing.mesh, self.membership, self.transport,
                               node.config.peers)
        self.transport.attach(self.scope)
        # one config file copied to every machine lists each machine's own address too:
        # not a seed (it never answers as another node), said at INFO, not warned about
        front = getattr(node, "front", None)
        mine = await own_seeds(node.config.peers, getattr(front, "bound", node.address),
                               node.address)
        if mine:
            log.info("%s: this node's own address, not used as a seed",
                     ("seed " if len(mine) == 1 else "seeds ") + ", ".join(printable(s) for s in mine))
        self.seeds = [s for s in node.config.peers if s not in mine]
        if self.seeds:
            self.membership.join(self.seeds)
            node.spawn(self._seeds_answer(self.seeds, SEED_PROBES * prof.probe_interval),
                       name="seeds")
        node.spawn(self.membership.run(), name="membership")
        node.spawn(self._sweeper(), name="sweeper")

    async def _seeds_answer(self, seeds: Iterable[str], wait: float) -> None:
        """Say so once when no node at all has answered ``wait`` s after the start: a
        mistyped seed (or a firewall) otherwise leaves the node alone without a word."""
        await asyncio.sleep(wait)
        if not self._answered:    # (one that answered and then left or died: not this)
            log.warning("no other node has answered in %.0f s: check the seeds (--peers, "
                        "MESH_PEERS) %s (address, port, firewall; keys, mesh name): this node "
                        "runs alone and keeps trying them", wait,
                        ", ".join(printable(s) for s in seeds))

    async def stop(self, node: "Node") -> None:
        self.membership.leave()      # others see "left" at once and stop sending

    def close(self, node: "Node") -> None:
        self.transport.close()

    def _on_change(self, member: Member, old: MemberState | None, new: MemberState) -> None:
        node = self.node
        if new == MemberState.ALIVE and member.id != node.name:
            self._answered = True
        if new == MemberState.ALIVE and old in (None, MemberState.DEAD, MemberState.LEFT) \
                and member.id != node.name:
            node.control.share_with(member.address)   # what we revoked must not run there
        if old == MemberState.ALIVE and new != MemberState.ALIVE and member.id != node.name \
                and node.replicas.enabled:    # (no copies: nothing would ever clear it)
            node.replicas.choice.missed.add(member.id)   # (copies go elsewhere meanwhile)
        if old != new:
            level = logging.WARNING if new in (MemberState.DEAD, MemberState.SUSPECT) else logging.INFO
            log.log(level, "member %s (%s): %s -> %s", printable(member.id),
                    printable(member.address), old.value if old else "new", new.value)

    def local_meta(self) -> dict[str, Any]:
        """This node's load, gossiped to the mesh (placement reads it)."""
        node = self.node
        busy, total, queued = node.load()
        hb = node.heartbeat
        shedder = getattr(node, "shedder", None)
        return {"busy": busy, "total": total, "queued": queued, "rate": round(hb.rate, 1),
                "cpu": round(hb.cpu), "rss": hb.rss, "tasks": node.tasks_digest,
                "events": node.events_endpoint, "clock": node.events.clock,
                "beat": node.beat.advertised() if node.beat is not None else "",
                "boot": node.boot,
                # tasks taken from peers, and by shedding from each of the latest
                # givers: a shedder counts what it sent until these show them
                # (mesh/node/shedding.py; ``took`` for nodes from before 2026-12)
                "took": node.handoff.received,
                "took_from": shedder.took_meta(time.time()) if shedder is not None else {},
                # what one sender may have held here: clients send no more (client/room.py)
                "quota": [node.config.quota_tasks, node.config.quota_bytes],
                # how long it may run tasks once it leaves: the nodes keeping copies of
                # its tasks wait that (and LEFT_GRACE) before running them (copies.py)
                "stop": node.config.shutdown_timeout,
                **node.routing.meta}      # mesh, queues, task names (mesh/capabilities.py)

    def members(self) -> list[dict[str, Any]]:
        """Every member this node knows, for the ``members`` control command."""
        node = self.node
        out = []
        for m in self.membership.members():
            if m.id == node.name:
                load = node.load()
                state = "left" if node.stopping else m.state.value
            else:
                meta = m.meta
                load = [meta.get("busy", 0), meta.get("total", 0), meta.get("queued", 0)]
                state = m.state.value
            out.append({"node": m.id, "endpoint": m.address, "state": state,
                        "incarnation": m.incarnation, "load": load, "meta": dict(m.meta)})
        return out

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(max(SWEEP_FLOOR, min(SWEEP_INTERVAL, self._reclaim / 2)))
            self.sweep()

    def sweep(self) -> int:
        """Close the sockets of peers membership has forgotten (dead or left for
        longer than its reclaim time): churn (DHCP, containers) must not grow file
        descriptors for ever. Seeds keep theirs. How many were closed."""
        known = {m.address for m in self.membership.members()}
        known.update(self.node.config.peers)
        socks = self.transport.sockets
        gone = [a for a in socks.socks if a not in known]
        for address in gone:
            socks.forget(address)
        if gone:
            log.info("closed the sockets of %d departed peer(s)", len(gone))
        return len(gone)
