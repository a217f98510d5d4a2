"""The client: one I/O thread that owns a DEALER socket per node.

Callers (any thread, or asyncio code) never touch a socket: ``submit`` appends to an
outbox and wakes the I/O thread through an eventfd, at most once per batch. The I/O
thread sends, receives ACK/RESULT/RELEASE/MOVED/ERROR and completes slots. The client
owns every task it submitted until its result arrives: it keeps the encoded frame; a
task a node gives back unstarted (RELEASE) is sent again elsewhere, and one a node
handed to another node (MOVED) is followed there.

Only the node a task was sent to (or given to: shedding, MOVED, failover to its backup)
may speak for it: an ACK, RESULT, STATE, RELEASE, MOVED or ERROR about a task from any
other link is dropped. With keys (``Mesh(keys=DIR)``) every link speaks CurveZMQ as this
client's key; handshakes that fail are mesh/client/handshakes.py's business.

The I/O thread must never die on what a node does; if it ever fails all the same (a
bug), it says so (CRITICAL) and a new thread takes over its tasks (``_take_over``).

``Client`` is this module's loop plus mixins, one concern each, all sharing the slots
and links the one I/O thread owns: what each frame from a node does (ACK, RESULT,
STATE, RELEASE and MOVED followed, ERROR, frames over the limit: replies.py), the
links to the nodes (links.py), the membership view and what a node's death or
leaving does to its tasks (members.py), routes and refusals (routes.py), tasks
waiting for room at full nodes (room.py), lookups of results owned elsewhere
(lookups.py), and closing: the wait at close and at interpreter exit until a node
has acknowledged every task sent (closing.py). Keys' handshakes are in handshakes.py.

(About 470 lines: the loop, sending and the takeover of a failed thread. The next
piece to move, if it grows: the takeover.)
"""
from __future__ import annotations

import atexit
import collections
import itertools
import math
import os
import random
import threading
import time
import uuid
import weakref
from typing import Any

import zmq

from mesh import states
from mesh.client import handshakes
from mesh.client.alone import Alone, names
from mesh.client.closing import Closing, _close_at_exit
from mesh.client.frames import recv_frames
from mesh.client.links import Links, NodeLink
from mesh.client.lookups import Lookups
from mesh.client.members import Members
from mesh.client.replies import Replies
from mesh.client.room import WaitingRoom, hold, let_go
from mesh.client.routes import Routing
from mesh.config import Config
from mesh.exceptions import ConfigError, DecodeError
from mesh.security.curve import Security
from mesh.security.keys import CLIENT
from mesh.security.text import safe_logger
from mesh.slot import Slot
from mesh.wire.protocol import Result, decode

log = safe_logger("mesh.client")

BATCH = 256                 # most frames sent to a node in one zmq message
TAKEOVER_LIMIT = 5          # I/O thread failures within TAKEOVER_WINDOW s before the client
TAKEOVER_WINDOW = 60.0      # gives up (and fails its tasks) instead of starting a new thread
FIRST_PLACE_WAIT = 0.5      # s a new client's first tasks wait for the mesh's members list


class Client(Links, Members, Alone, Routing, WaitingRoom, Lookups, Closing, Replies):
    def __init__(self, config: Config, seeds: list[str], mesh: str | None = None,
                 security: Security | None = None):
        if not seeds:
            raise ConfigError("no nodes to send tasks to: pass peers=['tcp://HOST:PORT'] to Mesh, "
                              "set MESH_PEERS or the app's 'peers' setting (CELERY_PEERS in "
                              "Django's settings read with namespace='CELERY'; there is no "
                              "broker_url), or start a node that mDNS can find")
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
        self.takeovers = 0                              # I/O threads that replaced a failed one
        self.members_applied = 0                        # membership answers read so far
        self._failures: list[float] = []                # when I/O threads failed (monotonic)
        self._heard = time.monotonic()                  # when some node last sent us anything
        self._heard_since = False                       # a frame arrived since the last check
        self._unreachable = False                       # "cannot reach any node" was logged
        self._init_lookups()                            # results owned elsewhere (lookups.py)
        self._members_known = threading.Event()         # a members answer has arrived
        self._refusals: dict[str, list[float]] = {}     # task name -> [first refusal logged,
                                                        # refusals since] (routes.py)
        self._rechecked: dict[str, float] = {}          # task id -> when no alive node took it
                                                        # first (a fresh member list is asked
                                                        # for after that: routes.py)
        self.links: dict[str, NodeLink] = {}            # endpoint -> link (I/O thread only)
        self._slots: dict[str, Slot] = {}               # I/O thread writes; others read
        self._queued: dict[str, Slot] = {}              # submitted, not yet in _slots: callers
                                                        # add, the I/O thread takes (lookup)
        self._outbox: collections.deque[Any] = collections.deque()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self._efd_lock = threading.Lock()
        self._closing = False
        self._in_close = False      # a close is waiting (a signal's exit may interrupt it)
        self._linger = 5.0
        self._retry: list[tuple[float, Slot]] = []     # (not before, slot) for released tasks
        self._followed: dict[str, str] = {}             # task id -> endpoint a MOVED sent it
                                                        # to, until that node acknowledges it
        self._init_room()                               # tasks no node has room for (room.py)
        self._rng = random.Random()
        self._placeable: list[NodeLink] = []
        self._fits: dict[tuple[str, str], list[NodeLink]] = {}   # (queue, name) -> links that
                                                        # take it (reset with _placeable)
        self._members_req = ""
        self._members_asked = -math.inf     # when the latest members question was asked,
        self._members_answered = -math.inf  # and when the one last answered was (routes.py)
        self._next_refresh = 0.0
        # the first tasks wait (FIRST_PLACE_WAIT at most) for the first members answer:
        # a script that sends a burst and exits would put all of it on its seed
        self._holding = True
        self._hold_until = time.monotonic() + FIRST_PLACE_WAIT
        self._ctx = zmq.Context()
        self._poller = zmq.Poller()
        self._by_sock: dict[zmq.Socket[bytes], NodeLink] = {}
        self._by_monitor: dict[zmq.Socket[bytes], NodeLink] = {}
        self._link_ids = itertools.count()
        self._drops: dict[NodeLink, float] = {}        # disconnected links -> when to check
        self._lost: list[NodeLink] = []                 # links libzmq ended: rebuilt (links.py)
        self._dropped_said: dict[str, float] = {}      # frame kind -> when a frame of it
                                                        # too big was last said dropped
        self._ended: dict[str, int] = {}                # task id -> ends of its link while it
                                                        # was sent there alone (alone.py)
        self._thread = threading.Thread(target=self._run, name="mesh-client-io", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)

    # -- called from any thread -------------------------------------------------------
    def submit(self, slot: Slot) -> None:
        if self._closing:
            raise RuntimeError("the mesh client is closed")
        self._queued[slot.task_id] = slot     # AsyncResult(id) in this process finds it
        self._outbox.append(slot)             # before the I/O thread has it (not a lookup
        self._wake()                          # the nodes could only answer UNKNOWN)
        if self._efd < 0 and slot.msg is None:     # close() finished meanwhile
            self._fail(slot, "MeshError", "the mesh client was closed")

    def lookup(self, task_id: str) -> Slot | None:
        """The slot of a task this client owns (submitted and not finished), if any."""
        # _queued first: the I/O thread puts a slot in _slots before it takes it from
        # _queued, so a slot moving meanwhile is found in one or the other
        return self._queued.get(task_id) or self._slots.get(task_id)

    def nodes(self) -> list[dict[str, Any]]:
        """A snapshot of the nodes this client knows, for display and tests."""
        return [{"node": n.node_id, "endpoint": n.endpoint, "state": n.state, "busy": n.busy,
                 "total": n.total, "queued": n.queued, "inflight": n.inflight,
                 "held": n.held, "held_bytes": n.held_bytes,
                 "quota": [n.quota_tasks, n.quota_bytes]}
                for n in list(self.links.values())]

    def endpoints(self) -> list[str]:
        """The node endpoints this client knows (seeds first)."""
        return list(dict.fromkeys([*self.seeds, *list(self.links)]))

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            with self._efd_lock:       # never write to the fd after close() closed it
                if self._efd >= 0:
                    os.eventfd_write(self._efd, 1)

    # -- the I/O thread ---------------------------------------------------------------


    def _run(self, takeover: bool = False) -> None:
        """The I/O thread. If it fails (a bug: nothing a node sends should do that),
        it says so loudly and a new thread takes over its sockets' work: new sockets
        with the same routing ids, and every task it owns sent again (nodes answer
        what they hold with an ACK and what they finished with the stored result)."""
        try:
            self._poller.register(self._efd, zmq.POLLIN)
            if takeover:
                self._rebuild_links()
            else:
                for ep in self.seeds:
                    self._link(ep)
            self._loop()
        except Exception as e:
            if self._take_over(e):
                return
        self._shut_down()

    def _take_over(self, e: Exception) -> bool:
        """Start a new I/O thread after this one failed with ``e``; False when the
        client is closing, or threads failed too often (then the client shuts down)."""
        now = time.monotonic()
        self._failures = [t for t in self._failures if now - t < TAKEOVER_WINDOW] + [now]
        owned = sum(1 for s in list(self._slots.values()) if s.msg is None)
        if self._closing:
            log.exception("mesh client I/O thread failed while closing")
            return False
        if len(self._failures) > TAKEOVER_LIMIT:
            log.critical("mesh client I/O thread failed %d times in %.0f s (%s: %s): giving up; "
                         "its %d outstanding task(s) fail with MeshError", len(self._failures),
                         TAKEOVER_WINDOW, type(e).__name__, e, owned, exc_info=e)
            return False
        log.critical("mesh client I/O thread failed (%s: %s); a new I/O thread takes over its "
                     "%d outstanding task(s)", type(e).__name__, e, owned, exc_info=e)
        self.takeovers += 1
        for link in self.links.values():
            for sock in (link.monitor, link.sock):
                try:
                    if sock is link.sock:
                        sock.disable_monitor()
                    sock.close(linger=0)
                except Exception:     # a socket already closed, or in a bad state
                    pass
        self._poller = zmq.Poller()
        self._by_sock, self._by_monitor = {}, {}
        self._thread = threading.Thread(target=self._run, args=(True,), name="mesh-client-io",
                                        daemon=True)
        self._thread.start()
        return True

    def _rebuild_links(self) -> None:
        """(In a new I/O thread) new sockets for every link, same routing ids, and
        every owned task sent again to where it was, or placed anew."""
        for link in self.links.values():
            link.sock, link.monitor, link.key = self._open(link.endpoint, link.rid, link.key,
                                                           link.rebuilt > 0)
            self._by_sock[link.sock] = link
            self._by_monitor[link.monitor] = link
            # its first handshake is no reconnect: the tasks are resent below, once
            link.down, link.connected, link.inflight = False, 0, 0
        self._drops.clear()
        self._lost.clear()
        self._update_placeable()
        self._room.clear()                     # (placed again below, with the others)
        for req in list(self._queries):
            self._end_query(req)
        for slot in list(self._slots.values()):
            if slot.msg is not None:
                continue
            was = self.links.get(slot.node or "")
            self._send(slot, was if was is not None and was.state == "alive"
                       else self._pick(slot=slot))
        self._next_refresh = 0.0

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            due = self._next_refresh
            if self._retry:
                due = min(due, min(t for t, _ in self._retry))
            if self._full:
                due = min(due, self._probe_at)
            if self._holding:
                due = min(due, self._hold_until)
            if self._drops:
                due = min(due, min(self._drops.values()))
            if self._lost:
                due = now
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
            if self._drops:
                self._check_drops(now)
            if self._lost:
                self._rebuild_lost()
            if self._holding and (self._members_known.is_set() or now >= self._hold_until):
                self._drain_outbox()
            if self._retry:
                self._resend_due(now)
            if self._full or self._room_warned:     # (a spell ends at a probe's tick)
                self._probe(now)
            if now >= self._next_refresh:
                self._refresh_members(now)
            if self._closing:
                self._drain_outbox()
                break

    def _shut_down(self) -> None:
        """The I/O thread's last act: fail what can no longer finish, close sockets."""
        self._closing = True       # submit(), watch() and query() refuse from now on
        # a caller past submit()'s check of _closing may queue a slot still: the eventfd
        # goes first, so that such a slot is either in the outbox drained below or
        # failed by submit() itself (it sees _efd < 0 after queueing it), never left
        # behind while the sockets linger
        with self._efd_lock:
            os.close(self._efd)
            self._efd = -1
        # tasks still without a result will never get one through this client:
        # fail them, so nobody waits forever on get()
        while self._outbox:
            item = self._outbox.popleft()
            if type(item) is tuple:            # ("query", slot, event)
                if item[2] is not None:
                    item[2].set()
                continue
            self._slots.setdefault(item.task_id, item)
        self._queued.clear()
        for slot in list(self._slots.values()):
            self._fail(slot, "MeshError", f"the mesh client was closed before task "
                       f"{slot.task_id} finished")
        self._slots.clear()
        self._fail_watched()
        for link in self.links.values():
            try:
                link.sock.disable_monitor()
                link.monitor.close(linger=0)
                link.sock.close(linger=int(self._linger * 1000))
            except zmq.ZMQError:
                pass
        self._ctx.term()

    def _drain_outbox(self) -> None:
        """Send what callers queued, frames for one node together (one zmq message
        of up to BATCH frames; each frame is one protocol message). A new client
        holds them until the mesh has said which nodes it has (FIRST_PLACE_WAIT at
        most), so that a first burst is spread over them, not all sent to a seed."""
        if self._holding:
            if not (self._members_known.is_set() or self._closing
                    or time.monotonic() >= self._hold_until):
                return
            self._holding = False
        popleft = self._outbox.popleft
        batches: dict[NodeLink, list[bytes]] = {}
        queries: list[tuple[Any, ...]] = []
        while self._outbox:
            slot = popleft()
            if type(slot) is tuple:             # ("query", slot, event): sent after the
                queries.append(slot)            # tasks queued before it, not ahead of them
                continue
            tid = slot.task_id
            if tid in self._slots:              # the caller reused an outstanding id
                if self._queued.get(tid) is slot:
                    del self._queued[tid]
                self._fail(slot, "ConfigError", f"task id {tid} is already outstanding "
                           "in this client; give each call its own id")
                continue
            self._slots[tid] = slot
            if self._queued.get(tid) is slot:
                del self._queued[tid]
            link = self._pick(slot=slot)
            if link is None:
                continue
            if link.refused:                    # a seed whose handshake failed (keys)
                self._slots.pop(slot.task_id, None)
                self._fail(slot, "MeshError", link.refused)
                continue
            link.inflight += 1
            if link.credit:                     # room made at a full node (room.py)
                link.credit -= 1
            slot.node = link.endpoint
            hold(slot, link)                    # what it holds from us (quotas: room.py)
            batch = batches.get(link)
            if batch is None:
                batch = batches[link] = []
            if slot.frame is not None:
                batch.append(slot.frame)
            if len(batch) >= BATCH:
                self._put(link, batch)
                batches[link] = []
        for link, batch in batches.items():
            if batch:
                self._put(link, batch)
        for query in queries:
            self._send_query(query[1], query[2])

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
        if link.credit:
            link.credit -= 1
        slot.node = link.endpoint
        hold(slot, link)
        self._put(link, slot.frame)

    def _drain_socket(self, link: NodeLink) -> None:
        sock = link.sock
        self._heard_since = True
        while True:
            if link.sock is not sock:  # a frame just read made us reset this link (its node
                return                 # is dead): the old socket is closed, stop reading it
            try:
                frames = recv_frames(sock)
            except zmq.ZMQError as e:
                log.warning("receiving from %s failed: %s", link.endpoint, e)
                return
            if frames is None:
                return
            for frame in frames:       # each frame is one message
                try:
                    msg = decode(frame, self.config.max_message_size)
                except DecodeError as e:
                    if len(frame) > self.config.max_message_size:
                        try:                 # (from a node that does not know our limit)
                            read = self._oversized(frame, link)
                            if link.lone and names(read, link.lone):
                                self._answered_alone(link)  # (alone.py)
                        except Exception:    # never the end of this thread
                            log.exception("error handling a frame of %d bytes (over this "
                                          "client's limit) from %s", len(frame), link.endpoint)
                    else:
                        log.warning("dropped a bad frame from %s: %s", link.endpoint, e)
                    continue
                try:
                    self._handle(msg, link)
                except Exception:
                    log.exception("error handling %s from %s", type(msg).__name__, link.endpoint)
                try:              # (the node answered, whatever handling its answer did)
                    if link.lone and names(msg, link.lone):     # (alone.py)
                        self._answered_alone(link)
                except Exception:
                    log.exception("error sending the next task alone to %s", link.endpoint)

    @staticmethod
    def _fail(slot: Slot, exc_type: str, message: str, node: str = "") -> None:
        """Complete a slot with a failure decided here, in the client."""
        let_go(slot)
        slot.complete(Result(task_id=slot.task_id, state=states.FAILURE, node=node, exc={
            "type": exc_type, "module": "mesh.exceptions", "message": message},
            date_done=time.time()))

    # -- keys: handshakes that fail, frames from elsewhere (mesh/client/handshakes.py) --
    def _wrong_key(self, link: NodeLink) -> None:
        handshakes.wrong_key(self, link)

    def _link_refused(self, link: NodeLink, why: str) -> None:
        handshakes.refused(self, link, why)

    def _retry_refused(self, now: float) -> None:
        handshakes.retry_refused(self, now)

    def _from_elsewhere(self, msg: Result, link: NodeLink) -> None:
        handshakes.foreign(self, msg, link)
