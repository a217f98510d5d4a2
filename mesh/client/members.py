"""The client's membership view: which nodes are alive, asked of one node each second,
and what the client does when one dies or leaves (a mixin of mesh.client.io.Client,
kept apart so that links.py stays about the links themselves). Runs on the I/O thread
only.

* Membership is asked of one node each second. It may name one address twice (a
  node restarted under a new name: the old name dead, the new one alive); the address
  is as alive as its most alive entry (``_by_endpoint``). A node declared dead gets
  new sockets and its tasks go to their rendezvous backup (``_failover``); the tasks
  a node that left has not acknowledged go where it hands its queue, the same backup
  (``_left``); a node the mesh forgot while our link to it is down is taken as dead
  (``_forgotten``).
* No node heard from for ``UNREACHABLE_AFTER`` seconds is said once, with the
  endpoints tried (``_check_reachable``).
* Links to nodes gone for ``LINK_GRACE`` seconds that hold nothing of ours are closed
  (``_close_gone_links``).
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import zmq

from mesh import states
from mesh.capabilities import from_meta
from mesh.client.fit import fits
from mesh.client.links import NodeLink
from mesh.client.room import let_go, quota_of
from mesh.config import Config
from mesh.exceptions import DecodeError
from mesh.node.peers import literal_host
from mesh.rendezvous import backup_for
from mesh.security.text import safe_logger
from mesh.slot import Slot
from mesh.wire.protocol import Control, Submit, decode, encode

log = safe_logger("mesh.client")

RELEASE_RETRY_DELAY = 0.5   # seconds before resending a released task to the node it left
MEMBERS_INTERVAL = 1.0      # seconds between membership refreshes from a node
LINK_GRACE = 60.0           # seconds a dead/left node's link is kept before it is closed
UNREACHABLE_AFTER = 5.0     # s without a frame from any node before the client says so (once)
UNLISTED_DEAD = 2           # members answers in a row without a node whose link is down:
                            # it was forgotten (dead), not yet heard of by the answerer
MEMBERS_REQ = "members-"    # the req_id of each members question starts so


class Members:
    """The membership view of a Client (see the module docstring)."""

    # state owned by Client (mesh/client/io.py) and Links (links.py), used here
    config: Config
    seeds: list[str]
    links: dict[str, NodeLink]
    failovers: int
    members_applied: int
    _placeable: list[NodeLink]
    _slots: dict[str, Slot]
    _retry: list[tuple[float, Slot]]
    _rng: random.Random
    _next_refresh: float
    _members_req: str
    _members_asked: float
    _members_known: threading.Event
    _heard: float
    _heard_since: bool
    _unreachable: bool
    _gone: frozenset[str]
    _members_big_said = False     # "the members answer is too big" said, none fitted since

    if TYPE_CHECKING:           # Client's and its other mixins', used here
        mesh: str | None
        _followed: dict[str, str]

        @staticmethod
        def _forget_one(link: NodeLink, acked: bool) -> None: ...
        @staticmethod
        def _fail(slot: Slot, exc_type: str, message: str, node: str = "") -> None: ...
        def _send(self, slot: Slot, link: NodeLink | None) -> None: ...
        def _pick(self, avoid: str | None = None, slot: Slot | None = None,
                  kind: str = "", said: str = "") -> NodeLink | None: ...
        def _put(self, link: NodeLink, frames: bytes | list[bytes]) -> bool: ...
        def _link(self, endpoint: str) -> NodeLink: ...
        def _reset_link(self, link: NodeLink) -> None: ...
        def _close_sockets(self, link: NodeLink) -> None: ...
        def _update_placeable(self) -> None: ...
        def _requery(self, now: float) -> None: ...
        def unacknowledged(self) -> int: ...
        def endpoints(self) -> list[str]: ...
        def _learn_mesh(self, members: list[Any], answering: Any) -> bool: ...
        def _not_ours(self, endpoint: str, node_id: Any, mesh: str) -> None: ...
        def _retry_refused(self, now: float) -> None: ...
        def _check_alone(self, now: float) -> None: ...

    @property
    def unreachable(self) -> bool:
        """No node has been heard from for UNREACHABLE_AFTER seconds (and it was said)."""
        return self._unreachable

    def _close_gone_links(self, now: float) -> None:
        """Close links to nodes dead or left for over LINK_GRACE seconds that hold
        nothing of ours (seeds stay): a long-lived client in a churning mesh must not
        keep a socket per node that ever existed. A node that comes back at that
        address gets a new link when membership reports it alive."""
        for ep, link in list(self.links.items()):
            if (link.gone_since and now - link.gone_since > LINK_GRACE and ep not in self.seeds
                    and not any(s.node == ep for s in self._slots.values())):
                del self.links[ep]
                self._close_sockets(link)
                log.info("closed the link to %s (%s): gone for %.0f s", link.node_id, ep,
                         now - link.gone_since)
        self._update_placeable()

    def _failover(self, link: NodeLink) -> None:
        """Membership declared the node dead: send every task it held for us to
        another node, under the same id. An acks_late=False task it had acknowledged
        may have run already and must not run twice: it fails with WorkerLostError."""
        self._reset_link(link)
        mine = [s for s in self._slots.values() if s.node == link.endpoint and s.msg is None]
        if not mine:
            return
        link.inflight = link.busy = link.queued = 0
        moved = 0
        for slot in mine:
            self._followed.pop(slot.task_id, None)
            if slot.state != states.PENDING and not _acks_late(slot.frame):
                self._fail(slot, "WorkerLostError", f"node {link.node_id or link.endpoint} died "
                           f"holding task {slot.task_id}; it has acks_late=False, so it is not "
                           "run again", link.node_id)
                self._slots.pop(slot.task_id, None)
                continue
            slot.state = states.PENDING
            self._to_backup(slot, link.node_id, link)
            moved += 1
        self.failovers += moved
        log.warning("node %s (%s) is dead: sent %d of its task(s) to other nodes",
                    link.node_id, link.endpoint, moved)

    def _left(self, link: NodeLink) -> None:
        """Membership says the node left: it is stopping, and hands its queue to its
        tasks' backups. A task sent to it that it has not acknowledged (sent as it
        stopped, or followed there from a MOVED a moment before) may never be read
        (the node exits): it goes where that node hands its queue, as after a death.
        Had the node read it, it answers RELEASE or MOVED, which no longer apply (the
        task is not held there for us now), or it took it first and hands it to that
        same backup, which holds one task per id. Tasks it acknowledged are its own
        (run before it exits, or handed on with a MOVED to us)."""
        ep, followed = link.endpoint, self._followed
        mine = [s for s in self._slots.values() if s.node == ep and s.msg is None
                and (s.state == states.PENDING or followed.get(s.task_id) == ep)]
        for slot in mine:
            followed.pop(slot.task_id, None)
            self._forget_one(link, slot.state != states.PENDING)
            let_go(slot)
            slot.state = states.PENDING
            self._to_backup(slot, link.node_id, link)
        if mine:
            log.warning("node %s (%s) left before it acknowledged %d of our task(s): sent "
                        "where it hands its queue", link.node_id, ep, len(mine))

    def _to_backup(self, slot: Slot, holder: str, avoid: NodeLink) -> None:
        """Send ``slot``, held by ``holder`` (dead, or gone), to the node that keeps its
        copy: rendezvous hashing over the alive nodes that take it, ``avoid`` aside. A
        dead holder's copy runs there, and a stopping holder handed its queue there
        (mesh/node/handoff.py): the task is there already and runs once. With no other
        node, it is tried again shortly (the node may come back)."""
        others = [n for n in self._placeable if n is not avoid]
        if not others:
            let_go(slot)
            slot.node = None
            self._retry.append((time.monotonic() + RELEASE_RETRY_DELAY, slot))
            return
        takers = fits(others, slot.queue, slot.name) if slot.name else others
        by_id = {n.node_id: n for n in takers if n.node_id}
        backup = backup_for(slot.task_id, by_id, holder)
        self._send(slot, by_id[backup] if backup is not None else
                   self._pick(avoid=avoid.endpoint, slot=slot))

    def _refresh_members(self, now: float) -> None:
        """Ask one node (an alive one we know, else a seed) for the membership."""
        self._next_refresh = now + MEMBERS_INTERVAL
        self._members_asked = now
        self._check_reachable(now)
        self._requery(now)
        self._close_gone_links(now)
        self._retry_refused(now)
        self._check_alone(now)
        pool = self._placeable or [self.links[ep] for ep in self.seeds]
        link = self._rng.choice(pool)
        self._members_req = MEMBERS_REQ + uuid.uuid4().hex
        self._put(link, encode(Control(self._members_req, "members", {},
                                       self.config.max_message_size)))

    def _check_reachable(self, now: float) -> None:
        """Say once when no node has sent anything for UNREACHABLE_AFTER seconds (with
        the endpoints tried), and once when one is heard from again."""
        if self._heard_since:
            self._heard_since = False
            self._heard = now
            if self._unreachable:
                self._unreachable = False
                log.warning("reached the mesh again")
        elif now - self._heard > UNREACHABLE_AFTER and not self._unreachable:
            self._unreachable = True
            log.warning("cannot reach any mesh node for %.0f s (tried %s); %d task(s) wait "
                        "to be acknowledged", now - self._heard, ", ".join(self.endpoints()),
                        self.unacknowledged())

    @staticmethod
    def _by_endpoint(members: list[Any]) -> dict[str, tuple[str, Any, dict[str, Any]]]:
        """Membership entries, one per endpoint. A node restarted under a new name at
        the same address appears twice (the old name dead, the new one alive): the
        endpoint is as alive as its most alive entry."""
        rank = {"alive": 3, "suspect": 2, "left": 1, "dead": 0}
        out: dict[str, tuple[str, Any, dict[str, Any]]] = {}
        for m in members:
            if not isinstance(m, dict):
                continue
            ep, state, nid = m.get("endpoint"), m.get("state"), m.get("node")
            if not isinstance(ep, str) or not isinstance(state, str) or not ep.startswith("tcp://"):
                continue
            seen = out.get(ep)
            if seen is None or rank.get(state, -1) > rank.get(seen[0], -1):
                out[ep] = (state, nid, m)
        return out

    def _members_too_large(self, text: str, link: NodeLink) -> None:
        """The answer to our members question was over our max_message_size (``text``:
        the node's ERROR ``reply-too-large``, or what an older node's frame was). Said
        once, until an answer fits again (asked each second, it would be said each
        second); the client goes on with the nodes it knows."""
        if self._members_big_said:
            log.debug("members answer from %s too large again: %s", link.endpoint, text)
            return
        self._members_big_said = True
        who = f"node {link.node_id} ({link.endpoint})" if link.node_id else link.endpoint
        log.warning("the mesh's members answer from %s was not read: %s. Until one fits, "
                    "this client does not learn the mesh's nodes (nor when one dies) and "
                    "sends its tasks to the %d node(s) it knows. Raise the client's "
                    "max_message_size (Mesh(max_message_size=...), MESH_MAX_MESSAGE_SIZE) to "
                    "that size or more. (Said once; it asks again each second.)", who, text,
                    len(self._placeable) or len(self.seeds))

    def _apply_members(self, members: Any, answering: NodeLink | None = None) -> None:
        if not isinstance(members, list):
            return
        if self._members_big_said:
            self._members_big_said = False
            log.info("the mesh's members answer fits this client's max_message_size again")
        self.members_applied += 1
        changed = self._learn_mesh(members, answering)
        dead: list[NodeLink] = []
        left: list[NodeLink] = []
        named = {m.get("node") for m in members if isinstance(m, dict)}
        by_endpoint = self._by_endpoint(members)
        self._gone = frozenset(ep for ep, (state, _, _) in by_endpoint.items()
                               if state in ("dead", "left"))
        for ep, (state, nid, m) in by_endpoint.items():
            link = self.links.get(ep)
            # a node restarted under a new name there, heard from by us (and still
            # connected) before the answerer heard of it: what it says of the address is
            # the old incarnation's, not the live link's (its tasks are with the new one)
            other = (link is not None and not link.down and bool(link.node_id)
                     and nid != link.node_id and link.node_id not in named)
            if other and state != "alive":
                continue          # its death is not the link's
            serves = from_meta(m.get("meta") if isinstance(m.get("meta"), dict) else None)
            if self.mesh is not None and serves.mesh != self.mesh:
                self._not_ours(ep, nid, serves.mesh)
                if link is not None and link.serves != serves:
                    link.serves, changed = serves, True
                continue
            if link is None:
                if state != "alive":
                    continue              # no need to connect to a node that is gone
                known = [n for n in self.links.values() if n.node_id == nid]
                for n in known:           # known already, through another address (a seed)
                    n.quota_tasks, n.quota_bytes = quota_of(m.get("meta"))
                if known:
                    continue
                if not literal_host(ep):
                    continue              # names are resolved on libzmq's one I/O thread:
                                          # only seeds (configured) may be host names
                try:
                    link = self._link(ep)
                except zmq.ZMQError as e:
                    log.warning("cannot connect to member %r at %r: %s", nid, ep[:100], e)
                    continue
            if link.state != state:
                changed = True
                old, link.state = link.state, state
                link.gone_since = 0.0 if state == "alive" else time.monotonic()
                if state == "dead" and old != "dead":
                    dead.append(link)
                elif state == "left" and old != "left":
                    left.append(link)
            if isinstance(nid, str) and nid != link.node_id and not other:
                # (the old name alive, from an answerer that has not seen it die: not the
                # link's name, or its death, said next, is taken for the live link's)
                if link.node_id:
                    log.info("the node at %s is now %s (was %s)", ep, nid[:100], link.node_id)
                link.node_id = nid
            if link.serves != serves:
                link.serves, changed = serves, True
            link.quota_tasks, link.quota_bytes = quota_of(m.get("meta"))   # (room.py)
            load = m.get("load")
            if isinstance(load, list) and len(load) >= 3 and all(type(x) is int for x in load[:3]):
                link.busy, link.total, link.queued = load[0], load[1], load[2]
        for link in self._forgotten(by_endpoint, named):
            changed = True
            link.state, link.gone_since = "dead", time.monotonic()
            dead.append(link)
        if changed:
            self._update_placeable()
        self._members_known.set()
        for link in dead:
            self._failover(link)
        for link in left:
            self._left(link)

    def _forgotten(self, by_endpoint: dict[str, Any], named: set[Any]) -> list[NodeLink]:
        """Nodes the mesh has forgotten: not listed at all (by address or by name) in
        UNLISTED_DEAD answers in a row while our own link to them is down. The mesh
        forgets a node dead or left for its --dead-node-reclaim, which may be shorter
        than our refresh: we never saw it dead, and its tasks would wait for ever. A node
        not listed while our link to it is up is alive: the answerer has not heard of it
        yet (it joined a moment ago, and another node told us), and its tasks stay."""
        out: list[NodeLink] = []
        for ep, link in self.links.items():
            if (ep in by_endpoint or not link.node_id or link.node_id in named
                    or link.state in ("dead", "left") or not link.down):
                link.unlisted = 0
                continue
            link.unlisted += 1
            if link.unlisted >= UNLISTED_DEAD:
                link.unlisted = 0
                log.warning("node %s (%s) is no longer a member and does not answer: "
                            "taken as dead", link.node_id, ep)
                out.append(link)
        return out


def _acks_late(frame: bytes | None) -> bool:
    """Whether a task (its encoded Submit) may run again after its node died."""
    if frame is None:
        return True
    try:
        msg = decode(frame)
    except DecodeError:
        return True
    return not (isinstance(msg, Submit) and msg.headers.get("acks_late") is False)
