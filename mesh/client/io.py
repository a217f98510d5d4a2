"""The client: one I/O thread that owns a DEALER socket per node.

Callers (any thread, or asyncio code) never touch a socket: ``submit`` appends to an
outbox and wakes the I/O thread through an eventfd, at most once per batch. The I/O
thread sends, receives ACK/RESULT/RELEASE/ERROR and completes slots. The client owns
every task it submitted until its result arrives: it keeps the encoded frame, and a
task a node gives back unstarted (RELEASE, at node shutdown) is sent again elsewhere.

Only the node a task was sent to (or given to: shedding) may speak for it: an ACK,
RESULT, RELEASE or ERROR about a task from any other link is dropped. With keys
(``Mesh(keys=DIR)``) every link speaks CurveZMQ as this client's key; a link whose
handshake fails because the node holds another mesh key (a rotation under way)
tries the next mesh key it trusts; one the node refuses (this key is not accepted,
or one side has no keys) fails the link's tasks with that reason, never silently.
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import itertools
import logging
import os
import random
import threading
import time
import uuid
import weakref
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from mesh import states
from mesh.capabilities import Serves, from_meta
from mesh.client import handshakes
from mesh.client.fit import fits
from mesh.client.placement import choose_from
from mesh.client.routes import Routing
from mesh.config import Config
from mesh.exceptions import ConfigError, DecodeError
from mesh.node.peers import literal_host
from mesh.result import Slot
from mesh.security.curve import (
    FAILED_AUTH,
    FAILED_KEY,
    FAILED_PROTOCOL,
    HANDSHAKE_EVENTS,
    Security,
)
from mesh.security.keys import CLIENT
from mesh.security.text import printable
from mesh.wire.protocol import (
    Ack,
    Control,
    ControlReply,
    Error,
    Release,
    Result,
    State,
    Submit,
    decode,
    encode,
)

log = logging.getLogger("mesh.client")

RELEASE_RETRY_DELAY = 0.5   # seconds before resending a released task to the node it left
BATCH = 256                 # most frames sent to a node in one zmq message
MEMBERS_INTERVAL = 1.0      # seconds between membership refreshes from a node
QUERY_TTL = 5.0             # seconds a result query waits for its answers
MEMBERS_WAIT = 2.0           # seconds a result lookup waits for the first members answer
LINK_GRACE = 60.0           # seconds a dead/left node's link is kept before it is closed
HEARTBEAT_IVL = 1000        # ms between ZMTP heartbeats on a link (a cut link is noticed)
HEARTBEAT_TIMEOUT = 4000    # ms without traffic after which a link counts as disconnected
# when several nodes know a task, the most advanced state is the one to report; a
# task's own states (update_state: PROGRESS...) come after STARTED
_STATE_RANK = {states.UNKNOWN: 0, states.PENDING: 1, states.RECEIVED: 2, states.RETRY: 3,
               states.STARTED: 4}


def _rank(state: str) -> int:
    return _STATE_RANK.get(state, 5)


def _close_at_exit(ref: "weakref.ref[Client]") -> None:
    """Flush what is queued before the interpreter exits (fire-and-forget delay())."""
    client = ref()
    if client is not None:
        client.close()


class NodeLink:
    """The client's view of one node, and the DEALER it talks to it through."""

    __slots__ = ("endpoint", "node_id", "state", "busy", "total", "queued", "inflight",
                 "sock", "released_at", "monitor", "connected", "reconnects", "gone_since",
                 "down", "serves", "key", "keys_failed", "strikes", "refused", "refused_at")

    def __init__(self, endpoint: str, sock: zmq.Socket[bytes], monitor: zmq.Socket[bytes]):
        self.endpoint = endpoint
        self.node_id = ""
        self.state = "alive"          # until membership says otherwise
        self.busy = 0
        self.total = 1
        self.queued = 0
        self.inflight = 0             # this client's tasks sent there and not acked yet
                                      # (once acked, the node counts them in busy/queued)
        self.sock = sock
        self.released_at = 0.0        # when it last gave work back (shutting down)
        self.monitor = monitor        # connection events of sock
        self.connected = 0            # handshakes so far; after the first, each is a reconnect
        self.reconnects = 0
        self.gone_since = 0.0         # monotonic time membership stopped calling it alive
        self.down = False             # disconnected (or reset) since its last handshake
        self.serves: Serves | None = None   # its mesh, queues, task names (None: not heard)
        self.key: bytes | None = None  # the mesh key it speaks to the node with (keys)
        self.keys_failed: set[bytes | None] = set()   # mesh keys the node did not hold
        self.strikes = 0              # handshakes failed in a row with the key tried now
        self.refused = ""             # why the node refused our handshake ("" : it did not)
        self.refused_at = 0.0

    @property
    def score(self) -> float:
        return (self.busy + self.queued + self.inflight) / max(self.total, 1)


class Client(Routing):
    def __init__(self, config: Config, seeds: list[str], mesh: str | None = None,
                 security: Security | None = None):
        if not seeds:
            raise ConfigError("no nodes to send tasks to: pass peers=['tcp://HOST:PORT'] to Mesh, "
                              "set MESH_PEERS, or start a node that mDNS can find")
        self.config = config
        self.security = (security if security is not None
                         else Security.load(config.keys, CLIENT, config.key_name))
        self.client_id = uuid.uuid4().hex.encode()
        self.seeds = list(dict.fromkeys(seeds))
        # the mesh this client sends to: its app's (nodes found by mDNS), else the mesh of
        # the first seed that answers; nodes of other meshes are not used (docs/routing.md)
        self.mesh = mesh
        self._foreign: set[str] = set()                  # other meshes' nodes, logged once
        self.duplicates = 0                             # results for already-complete tasks
        self.failovers = 0                              # tasks resent because their node died
        self.resent = 0                                 # tasks resent after a reconnect
        self.foreign = 0                                # frames about our tasks from other nodes
        self._watched: dict[str, list[Slot]] = {}       # tasks owned elsewhere that we look up
                                                        # (one slot per AsyncResult asking)
        self._watch_lock = threading.Lock()
        self._members_known = threading.Event()         # a members answer has arrived
        self._queries: dict[str, list[Any]] = {}        # req id -> [slot, pending, event, state,
                                                        # t, meta]
        self.links: dict[str, NodeLink] = {}            # endpoint -> link (I/O thread only)
        self._slots: dict[str, Slot] = {}               # I/O thread writes; others read
        self._outbox: collections.deque[Any] = collections.deque()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self._efd_lock = threading.Lock()
        self._closing = False
        self._linger = 5.0
        self._retry: list[tuple[float, Slot]] = []     # (not before, slot) for released tasks
        self._rng = random.Random()
        self._placeable: list[NodeLink] = []
        self._fits: dict[tuple[str, str], list[NodeLink]] = {}   # (queue, name) -> links that
                                                        # take it (reset with _placeable)
        self._members_req = ""
        self._next_refresh = 0.0
        self._ctx = zmq.Context()
        self._poller = zmq.Poller()
        self._by_sock: dict[zmq.Socket[bytes], NodeLink] = {}
        self._by_monitor: dict[zmq.Socket[bytes], NodeLink] = {}
        self._link_ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="mesh-client-io", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)

    # -- called from any thread -------------------------------------------------------
    def submit(self, slot: Slot) -> None:
        if self._closing:
            raise RuntimeError("the mesh client is closed")
        self._outbox.append(slot)
        self._wake()
        if self._efd < 0 and slot.msg is None:     # close() finished meanwhile
            self._fail(slot, "MeshError", "the mesh client was closed")

    def lookup(self, task_id: str) -> Slot | None:
        return self._slots.get(task_id)

    def watch(self, task_id: str) -> Slot:
        """The slot through which this process follows a task it does not own (submitted
        by another process): nodes are asked for it, and the one holding it sends its
        result here when it is done."""
        with self._watch_lock:
            slots = self._watched.get(task_id)
            if slots:
                return slots[0]
            slot = Slot(task_id, None, remote=True)
            self._watched[task_id] = [slot]
            return slot

    def query(self, slot: Slot, wait: float | None) -> None:
        """Ask every alive node about a watched task (and to send us its result when
        done). With ``wait``, block until all answered or ``wait`` seconds passed."""
        if self._closing:
            raise RuntimeError("the mesh client is closed")
        if wait and not self._members_known.is_set():   # a new client knows only its
            self._members_known.wait(min(wait, MEMBERS_WAIT))   # seeds: learn every node
        # (without ``wait`` nobody blocks: get() and await are asked again each second)
        with self._watch_lock:
            slots = self._watched.setdefault(slot.task_id, [])
            if slot not in slots:
                slots.append(slot)
        event = threading.Event() if wait else None
        self._outbox.append(("query", slot, event))
        self._wake()
        if event is not None:
            event.wait(wait)

    def nodes(self) -> list[dict[str, Any]]:
        """A snapshot of the nodes this client knows, for display and tests."""
        return [{"node": n.node_id, "endpoint": n.endpoint, "state": n.state, "busy": n.busy,
                 "total": n.total, "queued": n.queued, "inflight": n.inflight}
                for n in list(self.links.values())]

    def close(self, linger: float = 5.0) -> None:
        """Send what is queued (up to ``linger`` seconds), then stop the I/O thread."""
        if self._closing:
            return
        self._linger = linger
        self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(linger + 5)

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            with self._efd_lock:       # never write to the fd after close() closed it
                if self._efd >= 0:
                    os.eventfd_write(self._efd, 1)

    # -- the I/O thread ---------------------------------------------------------------
    def _link(self, endpoint: str) -> NodeLink:
        link = self.links.get(endpoint)
        if link is None:
            s, mon, key = self._open(endpoint, None, None)
            link = self.links[endpoint] = NodeLink(endpoint, s, mon)
            link.key = key
            self._by_sock[s] = link
            self._by_monitor[mon] = link
            self._update_placeable()
        return link

    def _open(self, endpoint: str, routing_id: bytes | None, key: bytes | None
              ) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], bytes | None]:
        """A DEALER to ``endpoint`` (speaking to it with mesh key ``key``, with keys;
        None: the current one), the monitor of its connection events, and the key."""
        s = self._ctx.socket(zmq.DEALER)
        # one routing id per link: a node reached through two addresses (a seed and
        # its advertised endpoint) sees two peers, and ROUTER_HANDOVER never moves
        # one link's replies to the other
        s.setsockopt(zmq.ROUTING_ID, routing_id or self.client_id + b".%d" % next(self._link_ids))
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size * 2)
        s.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT)
        keys = self.security.server_keys()
        key = key if key in keys else keys[0]
        self.security.client(s, key)
        # a unique inproc name (pyzmq's default is per fd, and a reset link's new socket
        # may get the fd of the old one before libzmq has let go of its monitor)
        mon = s.get_monitor_socket(HANDSHAKE_EVENTS | zmq.EVENT_DISCONNECTED,
                                   addr=f"inproc://mesh-monitor-{self.client_id.decode()}-"
                                        f"{next(self._link_ids)}")
        s.connect(endpoint)
        self._poller.register(s, zmq.POLLIN)
        self._poller.register(mon, zmq.POLLIN)
        return s, mon, key

    def _close_sockets(self, link: NodeLink) -> None:
        del self._by_sock[link.sock]
        del self._by_monitor[link.monitor]
        self._poller.unregister(link.sock)
        self._poller.unregister(link.monitor)
        link.sock.disable_monitor()
        link.monitor.close(linger=0)
        link.sock.close(linger=0)

    def _reset_link(self, link: NodeLink) -> None:
        """New sockets for a link whose node died: frames still queued in the old
        DEALER for it (sent after it died, now resent elsewhere) must not reach it
        if it comes back at that address; they would run twice."""
        routing_id = link.sock.getsockopt(zmq.ROUTING_ID)
        assert isinstance(routing_id, bytes)
        self._close_sockets(link)
        # the same routing id: a node restarted from its journal answers the tasks it
        # recovers to it, and the client counts those late results as duplicates
        link.sock, link.monitor, link.key = self._open(link.endpoint, routing_id, link.key)
        self._by_sock[link.sock] = link
        self._by_monitor[link.monitor] = link
        link.down = True                        # its next handshake is a reconnect

    def _update_placeable(self) -> None:
        self._fits = {}
        mesh = self.mesh
        self._placeable = [n for n in self.links.values() if n.state == "alive" and not n.refused
                           and (n.serves is None or mesh is None or n.serves.mesh == mesh)]

    def _run(self) -> None:
        self._poller.register(self._efd, zmq.POLLIN)
        for ep in self.seeds:
            self._link(ep)
        try:
            while True:
                now = time.monotonic()
                due = self._next_refresh
                if self._retry:
                    due = min(due, min(t for t, _ in self._retry))
                timeout = max(0.0, due - now) * 1000
                for sock_or_fd, _ev in self._poller.poll(int(timeout) + 1 if timeout else 0):
                    if sock_or_fd == self._efd:
                        try:
                            os.eventfd_read(self._efd)
                        except BlockingIOError:
                            pass
                        self._wake_pending = False
                        self._drain_outbox()
                    elif sock_or_fd in self._by_sock:
                        self._drain_socket(self._by_sock[sock_or_fd])
                    elif sock_or_fd in self._by_monitor:
                        self._drain_monitor(self._by_monitor[sock_or_fd])
                    # else: a socket closed earlier in this batch (a failover reset it)
                now = time.monotonic()
                if self._retry:
                    self._resend_due(now)
                if now >= self._next_refresh:
                    self._refresh_members(now)
                if self._closing:
                    self._drain_outbox()
                    break
        except Exception:
            log.exception("mesh client I/O thread failed")
        finally:
            self._closing = True       # submit(), watch() and query() refuse from now on
            # tasks still without a result will never get one through this client:
            # fail them, so nobody waits forever on get()
            while self._outbox:
                item = self._outbox.popleft()
                if type(item) is tuple:            # ("query", slot, event)
                    if item[2] is not None:
                        item[2].set()
                    continue
                self._slots.setdefault(item.task_id, item)
            for slot in list(self._slots.values()):
                self._fail(slot, "MeshError", f"the mesh client was closed before task "
                           f"{slot.task_id} finished")
            self._slots.clear()
            with self._watch_lock:
                watched, self._watched = [s for ss in self._watched.values() for s in ss], {}
            for slot in watched:
                self._fail(slot, "MeshError", f"the mesh client was closed while waiting for "
                           f"task {slot.task_id}")
            for link in self.links.values():
                link.sock.disable_monitor()
                link.monitor.close(linger=0)
                link.sock.close(linger=int(self._linger * 1000))
            self._ctx.term()
            with self._efd_lock:
                os.close(self._efd)
                self._efd = -1

    def _drain_monitor(self, link: NodeLink) -> None:
        """Connection events of a link. A link that connects again (the node restarted,
        or a cut network healed) may have lost frames in either direction: send it
        again every task it holds for us. The node answers a task it holds with an ACK,
        one it finished with the stored result, and runs one it never got."""
        while True:
            try:
                frames = link.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                event = parse_monitor_message(frames)["event"]
            except Exception:
                continue
            if event == zmq.EVENT_DISCONNECTED:
                link.down = True
            elif event == FAILED_KEY:
                self._wrong_key(link)
                return                          # the link's sockets may be new ones now
            elif event in (FAILED_AUTH, FAILED_PROTOCOL):
                self._link_refused(link, self.security.handshake_problem(event, link.endpoint))
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.keys_failed.clear()
                link.strikes = 0
                if link.refused:
                    log.info("the node at %s accepts this client's key now", link.endpoint)
                    link.refused = ""
                    self._update_placeable()
                link.connected += 1
                # (the first handshake's event can be missed, as the monitor attaches:
                # a disconnect, or a reset link, is what makes a handshake a reconnect)
                reconnected, link.down = link.down or link.connected > 1, False
                if reconnected:
                    link.reconnects += 1
                    mine = [s for s in self._slots.values()
                            if s.node == link.endpoint and s.msg is None]
                    if mine:
                        log.info("reconnected to %s: sending its %d task(s) again", link.endpoint,
                                 len(mine))
                        self.resent += len(mine)
                        link.inflight = 0
                        for slot in mine:
                            self._send(slot, link)

    # -- keys: handshakes that fail (mesh/client/handshakes.py) -----------------------
    def _wrong_key(self, link: NodeLink) -> None:
        handshakes.wrong_key(self, link)

    def _link_refused(self, link: NodeLink, why: str) -> None:
        handshakes.refused(self, link, why)

    def _retry_refused(self, now: float) -> None:
        handshakes.retry_refused(self, now)

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
        others = [n for n in self._placeable if n is not link]
        moved = 0
        for slot in mine:
            if slot.state != states.PENDING and not _acks_late(slot.frame):
                self._fail(slot, "WorkerLostError", f"node {link.node_id or link.endpoint} died "
                           f"holding task {slot.task_id}; it has acks_late=False, so it is not "
                           "run again", link.node_id)
                self._slots.pop(slot.task_id, None)
                continue
            slot.state = states.PENDING
            if others:
                self._send(slot, self._pick(avoid=link.endpoint, slot=slot))
            else:           # nowhere to go yet: keep trying (the node may come back)
                slot.node = None
                self._retry.append((time.monotonic() + RELEASE_RETRY_DELAY, slot))
            moved += 1
        self.failovers += moved
        log.warning("node %s (%s) is dead: sent %d of its task(s) to other nodes",
                    link.node_id, link.endpoint, moved)

    def _refresh_members(self, now: float) -> None:
        """Ask one node (an alive one we know, else a seed) for the membership."""
        self._next_refresh = now + MEMBERS_INTERVAL
        self._requery(now)
        self._close_gone_links(now)
        self._retry_refused(now)
        pool = self._placeable or [self.links[ep] for ep in self.seeds]
        link = self._rng.choice(pool)
        self._members_req = uuid.uuid4().hex
        try:
            link.sock.send(encode(Control(self._members_req, "members")), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _apply_members(self, members: Any, answering: NodeLink | None = None) -> None:
        if not isinstance(members, list):
            return
        changed = self._learn_mesh(members, answering)
        dead: list[NodeLink] = []
        for m in members:
            if not isinstance(m, dict):
                continue
            ep, state, nid = m.get("endpoint"), m.get("state"), m.get("node")
            if not isinstance(ep, str) or not isinstance(state, str) or not ep.startswith("tcp://"):
                continue
            link = self.links.get(ep)
            serves = from_meta(m.get("meta") if isinstance(m.get("meta"), dict) else None)
            if self.mesh is not None and serves.mesh != self.mesh:
                self._not_ours(ep, nid, serves.mesh)
                if link is not None and link.serves != serves:
                    link.serves, changed = serves, True
                continue
            if link is None:
                if state != "alive":
                    continue              # no need to connect to a node that is gone
                if any(n.node_id == nid for n in self.links.values()):
                    continue              # known already, through another address (a seed)
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
            if isinstance(nid, str):
                link.node_id = nid
            if link.serves != serves:
                link.serves, changed = serves, True
            load = m.get("load")
            if isinstance(load, list) and len(load) >= 3 and all(type(x) is int for x in load[:3]):
                link.busy, link.total, link.queued = load[0], load[1], load[2]
        if changed:
            self._update_placeable()
        self._members_known.set()
        for link in dead:
            self._failover(link)

    def _pick(self, avoid: str | None = None, slot: Slot | None = None,
              kind: str = "", said: str = "") -> NodeLink | None:
        """The node to send ``slot`` to: alive, of this client's mesh, serving its queue
        with its task registered (not one that refused it), by power of two choices.
        None when there is none: then the slot is failed (no alive node takes it:
        NotRegistered, or MeshError naming the queue) or tried again shortly (one that
        might is suspect, or the client has not heard from the mesh yet); ``kind`` and
        ``said`` are what the last node to refuse it answered."""
        pool = self._placeable
        seeds = self.seeds
        if slot is not None and slot.name:
            if pool:
                if slot.refused:
                    pool = fits(pool, slot.queue, slot.name, slot.refused)
                else:               # the same few (queue, name) pairs, again and again
                    key = (slot.queue, slot.name)
                    fit = self._fits.get(key)
                    if fit is None:
                        fit = self._fits[key] = fits(pool, slot.queue, slot.name)
                    pool = fit
                if not pool:
                    self._unplaceable(slot, kind, said)
                    return None
            elif slot.refused:          # no alive node known: the seeds that did not refuse
                seeds = [ep for ep in seeds if ep not in slot.refused]
                if not seeds:
                    self._unplaceable(slot, kind, said)
                    return None
        if avoid is not None and len(pool) > 1:
            pool = [n for n in pool if n.endpoint != avoid]
        if len(pool) > 1:   # skip nodes that are shutting down, while others remain
            now = time.monotonic()
            fresh = [n for n in pool if now - n.released_at > 5.0]
            pool = fresh or pool
        choice = choose_from(pool, self._rng)
        if choice is None:  # membership knows no alive node: keep trying the seeds
            choice = self.links[self._rng.choice(seeds)]
        return choice

    def _drain_outbox(self) -> None:
        """Send what callers queued, frames for one node together (one zmq message
        of up to BATCH frames; each frame is one protocol message)."""
        popleft = self._outbox.popleft
        batches: dict[NodeLink, list[bytes]] = {}
        while self._outbox:
            slot = popleft()
            if type(slot) is tuple:             # ("query", slot, event)
                self._send_query(slot[1], slot[2])
                continue
            if slot.task_id in self._slots:     # the caller reused an outstanding id
                self._fail(slot, "ConfigError", f"task id {slot.task_id} is already outstanding "
                           "in this client; give each call its own id")
                continue
            self._slots[slot.task_id] = slot
            link = self._pick(slot=slot)
            if link is None:
                continue
            if link.refused:                    # a seed whose handshake failed (keys)
                self._slots.pop(slot.task_id, None)
                self._fail(slot, "MeshError", link.refused)
                continue
            link.inflight += 1
            slot.node = link.endpoint
            batch = batches.get(link)
            if batch is None:
                batch = batches[link] = []
            if slot.frame is not None:
                batch.append(slot.frame)
            if len(batch) >= BATCH:
                link.sock.send_multipart(batch, zmq.NOBLOCK)
                batches[link] = []
        for link, batch in batches.items():
            if batch:
                link.sock.send_multipart(batch, zmq.NOBLOCK)

    @staticmethod
    def _forget_one(link: NodeLink, acked: bool) -> None:
        """A task left ``link`` (finished or given back): update our estimate of its
        load until the node reports again."""
        if not acked:
            if link.inflight > 0:
                link.inflight -= 1
        elif link.queued > 0:
            link.queued -= 1
        elif link.busy > 0:
            link.busy -= 1

    def _send(self, slot: Slot, link: NodeLink | None) -> None:
        """(Re)send a task the client holds to ``link`` (None: _pick dealt with it)."""
        if slot.frame is None or link is None:
            return
        if link.refused:
            self._slots.pop(slot.task_id, None)
            self._fail(slot, "MeshError", link.refused)
            return
        link.inflight += 1
        slot.node = link.endpoint
        link.sock.send(slot.frame, zmq.NOBLOCK)

    def _drain_socket(self, link: NodeLink) -> None:
        sock = link.sock
        while True:
            if link.sock is not sock:  # a frame just read made us reset this link (its node
                return                 # is dead): the old socket is closed, stop reading it
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for frame in frames:       # each frame is one message
                try:
                    msg = decode(frame, self.config.max_message_size)
                except DecodeError as e:
                    log.warning("dropped a bad frame from %s: %s", link.endpoint, e)
                    continue
                try:
                    self._handle(msg, link)
                except Exception:
                    log.exception("error handling %s from %s", type(msg).__name__, link.endpoint)

    def _handle(self, msg: Any, link: NodeLink) -> None:
        if type(msg) is Result and msg.state == states.RETRY:
            slot = self._slots.get(msg.task_id)    # not final: it runs again later
            if slot is not None and slot.node != link.endpoint:
                self._from_elsewhere(msg, link)
            elif slot is not None and slot.msg is None:
                slot.state = states.RETRY
                slot.meta = None
                if slot.frame is not None:     # keep what a resend must carry: retries + 1
                    sub = decode(slot.frame)
                    if isinstance(sub, Submit):
                        slot.frame = encode(dataclasses.replace(
                            sub, retries=msg.retries + 1, eta=msg.eta if msg.eta else sub.eta,
                            payload=msg.payload if msg.payload is not None else sub.payload))
        elif type(msg) is Result:
            slot = self._slots.get(msg.task_id)
            if slot is not None and slot.node != link.endpoint:
                self._from_elsewhere(msg, link)          # only its holder speaks for a task
                return
            if msg.exc is not None and msg.traceback is None and _not_registered(msg):
                slot = self._slots.get(msg.task_id)    # refused there: another node may have it
                if slot is not None and slot.msg is None:
                    self._on_refused(slot, link, "NotRegistered", str(msg.exc.get("message")))
                    return
            slot = self._slots.pop(msg.task_id, None)
            was_acked = slot is not None and slot.state != states.PENDING
            if slot is None:
                completed = self._complete_watched(msg)
                if completed:
                    return
            if slot is None or not slot.complete(msg):
                self.duplicates += 1       # first result won; tell its sender (an event)
                log.info("dropped a duplicate result for task %s from %s", msg.task_id, msg.node)
                try:
                    link.sock.send(encode(Control("dup", "duplicate", {
                        "task_id": msg.task_id, "noreply": True})), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                return
            owner = self.links.get(slot.node or "")
            if owner is not None:
                self._forget_one(owner, was_acked)
        elif type(msg) is Ack:
            if len(msg.load) >= 3:
                link.busy, link.total, link.queued = msg.load[0], msg.load[1], msg.load[2]
            link.node_id = msg.node
            for tid in msg.task_ids:
                slot = self._slots.get(tid)
                if slot is not None and slot.state == states.PENDING and slot.node == link.endpoint:
                    slot.state = states.RECEIVED
                    if link.inflight > 0:
                        link.inflight -= 1
        elif type(msg) is State:
            self._on_state(msg, link)
        elif type(msg) is Release:
            self._on_release(msg, link)
        elif type(msg) is ControlReply:
            if msg.req_id == self._members_req and msg.ok:
                link.node_id = msg.node
                self._apply_members(msg.payload, link)
            elif msg.req_id in self._queries:
                self._on_query_reply(msg)
        elif type(msg) is Error:
            log.warning("node at %s refused a frame: %s: %s", link.endpoint, msg.code,
                        printable(msg.message, 300))
            slot = self._slots.get(msg.ref) if msg.ref else None
            if slot is not None and slot.node != link.endpoint:
                slot = None                   # about a task this node does not hold for us
            if slot is not None and msg.code in ("journal", "queue", "quota"):
                self._on_refused(slot, link, msg.code, msg.message)
                return
            if slot is not None:
                self._slots.pop(slot.task_id, None)
                owner = self.links.get(slot.node or "") or link
                self._forget_one(owner, slot.state != states.PENDING)
                kind = "MeshError" if msg.code in ("unauthorized",) else "DecodeError"
                self._fail(slot, kind, f"node refused the task ({msg.code}): {msg.message}",
                           link.endpoint)
        else:
            log.debug("ignored %s from %s", type(msg).__name__, link.endpoint)

    def _from_elsewhere(self, msg: Result, link: NodeLink) -> None:
        handshakes.foreign(self, msg, link)

    @staticmethod
    def _fail(slot: Slot, exc_type: str, message: str, node: str = "") -> None:
        """Complete a slot with a failure decided here, in the client."""
        slot.complete(Result(task_id=slot.task_id, state=states.FAILURE, node=node, exc={
            "type": exc_type, "module": "mesh.exceptions", "message": message},
            date_done=time.time()))

    def _on_state(self, msg: State, link: NodeLink) -> None:
        """A task's state before it finishes (STARTED, PROGRESS...), with its meta.
        (Only owners get these: other processes ask the node, which remembers it.)"""
        slot = self._slots.get(msg.task_id)
        if slot is not None and slot.msg is None and slot.node == link.endpoint:
            if slot.state == states.PENDING and link.inflight > 0:   # it implies the ACK
                link.inflight -= 1
            slot.state, slot.meta = msg.state, msg.meta

    def _on_release(self, msg: Release, link: NodeLink) -> None:
        """Tasks given back unstarted: send them to ``msg.target`` if the node named
        one (shedding), else to another node (shutdown)."""
        target = msg.target
        if not target:
            link.released_at = time.monotonic()
        for tid in msg.task_ids:
            slot = self._slots.get(tid)
            if slot is None or slot.msg is not None or slot.node != link.endpoint:
                continue                      # not ours, done, or not held there
            self._forget_one(link, slot.state != states.PENDING)
            slot.state = states.PENDING
            shed_to = self._shed_target(target)
            if shed_to is not None:
                self._send(slot, shed_to)
            elif self._another(slot, link):
                self._send(slot, self._pick(avoid=link.endpoint, slot=slot))
            else:   # the only node is restarting: try it again shortly
                self._retry.append((time.monotonic() + RELEASE_RETRY_DELAY, slot))
        log.info("node %s gave back %d unstarted task(s): %s", msg.node, len(msg.task_ids), msg.reason)

    def _shed_target(self, target: Any) -> NodeLink | None:
        """The link to a node a task was shed to, if it is one to follow: an IP
        endpoint (no name lookups for what a node says), not known to be gone."""
        if not isinstance(target, str) or not target.startswith("tcp://"):
            return None
        link = self.links.get(target)
        if link is not None:
            return link if link.state == "alive" else None
        if not literal_host(target):
            return None
        try:
            return self._link(target)
        except zmq.ZMQError as e:
            log.warning("a node shed work to %r, which cannot be reached: %s", target[:100], e)
            return None

    def _resend_due(self, now: float) -> None:
        due = [s for t, s in self._retry if t <= now]
        self._retry = [(t, s) for t, s in self._retry if t > now]
        for slot in due:
            if slot.msg is None:
                self._send(slot, self._pick(slot=slot))

    # -- results of tasks owned elsewhere ---------------------------------------------
    def _targets(self) -> list[NodeLink]:
        return self._placeable or [self.links[ep] for ep in self.seeds]

    def _send_query(self, slot: Slot, event: threading.Event | None) -> None:
        links = self._targets()
        req = uuid.uuid4().hex
        self._queries[req] = [slot, len(links), event, states.UNKNOWN, time.monotonic(), None]
        frame = encode(Control(req, "result", {"task_id": slot.task_id, "watch": True}))
        for link in links:
            try:
                link.sock.send(frame, zmq.NOBLOCK)
            except zmq.ZMQError:
                self._queries[req][1] -= 1
        if self._queries[req][1] <= 0:
            self._end_query(req)

    def _on_query_reply(self, msg: ControlReply) -> None:
        q = self._queries[msg.req_id]
        slot: Slot = q[0]
        q[1] -= 1
        payload = msg.payload
        if msg.ok and isinstance(payload, dict) and payload.get("task_id") == slot.task_id:
            state = payload.get("state")
            frame = payload.get("result")
            submit = payload.get("submit")
            if isinstance(submit, bytes) and slot.submit is None:
                slot.submit = submit              # name, args, kwargs (result_extended)
            if isinstance(frame, bytes):
                try:
                    res = decode(frame, self.config.max_message_size)
                except DecodeError as e:
                    log.warning("node %s sent an unreadable stored result: %s", msg.node, e)
                else:
                    if type(res) is Result and res.task_id == slot.task_id:
                        self._complete_watched(res)
                        slot.complete(res)
            elif isinstance(state, str) and _rank(state) > _rank(q[3]):
                q[3] = state
                meta = payload.get("meta")
                q[5] = meta if isinstance(meta, bytes) else None
        if q[1] <= 0 or slot.msg is not None:
            self._end_query(msg.req_id)

    def _end_query(self, req: str) -> None:
        slot, _pending, event, state, _t, meta = self._queries.pop(req)
        if slot.msg is None:
            slot.state, slot.meta = state, meta
        if event is not None:
            event.set()

    def _requery(self, now: float) -> None:
        """Once a second: drop queries nobody answered, and ask again about watched
        tasks someone waits for (the node holding one may have died, and its owner
        sent it elsewhere). Watched tasks nobody waits for are forgotten."""
        for req in [r for r, q in self._queries.items() if now - q[4] > QUERY_TTL]:
            self._end_query(req)
        asked = {q[0].task_id for q in self._queries.values()}
        with self._watch_lock:
            for tid, slots in list(self._watched.items()):
                waiting = [s for s in slots if s.msg is None and s.waiters]
                if not waiting:
                    if tid not in asked:
                        del self._watched[tid]
                    continue
                if tid not in asked:
                    self._send_query(waiting[0], None)

    def _complete_watched(self, msg: Result) -> bool:
        """A final result for a task looked up here: complete every slot asking."""
        with self._watch_lock:
            slots = self._watched.pop(msg.task_id, None) or []
        done = False
        for s in slots:
            done = s.complete(msg) or done
        return done


def _not_registered(msg: Result) -> bool:
    """A node's own NotRegistered refusal (not an exception a task raised)."""
    exc = msg.exc or {}
    return exc.get("type") == "NotRegistered" and exc.get("module") == "mesh.exceptions"


def _acks_late(frame: bytes | None) -> bool:
    """Whether a task (its encoded Submit) may run again after its node died."""
    if frame is None:
        return True
    try:
        msg = decode(frame)
    except DecodeError:
        return True
    return not (isinstance(msg, Submit) and msg.headers.get("acks_late") is False)
