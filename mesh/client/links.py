"""The client's view of the nodes: one link (a DEALER and its connection monitor) per
node endpoint (the membership answers that say which nodes are alive, and what a
node's death or leaving does to its tasks: members.py).

A mixin of :class:`mesh.client.io.Client` (kept apart so that each file reads in one
sitting): everything here runs on the client's I/O thread.

* Each link has its own routing id for the client's lifetime (a node restarted from
  its journal answers to it), ZMTP heartbeats and a socket monitor: a link that
  connects again sends its tasks again (``_drain_monitor``).
* libzmq ends a connection for good, without connecting again, when the node sends a
  frame over the DEALER's ``ZMQ_MAXMSGSIZE`` (twice this client's max_message_size; a
  node this client told its limit sends none, an older one may). The DEALER then
  refuses every send (zmq.Again: with no send high-water mark nothing else does). A
  send refused that way, or a disconnect after which a send is refused
  (``DROPPED_WAIT`` later: a connection libzmq tries again keeps taking frames), has
  the link rebuilt: new sockets, the same routing id, its tasks sent again once it
  connects (``_put``, ``_rebuild_lost``). A rebuilt link takes frames of up to
  ``WIDE_MAXMSGSIZE`` (twice a node's default limit): the node sends the same big
  result again when the task is sent again, and read, it fails its task
  (ResultTooLarge, replies.py) instead of ending the link again, and again. A rebuilt link
  ended again (a result over even that, from an older node set above 16 MiB) sends its
  tasks again one at a time, and the one whose answer ends it fails (alone.py).
"""
from __future__ import annotations

import itertools
import random
import time
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from mesh.capabilities import Serves
from mesh.client.alone import ENDED_MAX
from mesh.client.fit import fits
from mesh.client.frames import send_frames
from mesh.client.placement import choose_from
from mesh.client.room import room_for
from mesh.config import Config
from mesh.node.peers import literal_host
from mesh.security.curve import FAILED_AUTH, FAILED_KEY, FAILED_PROTOCOL, HANDSHAKE_EVENTS, Security
from mesh.security.text import safe_logger
from mesh.slot import Slot
from mesh.wire.protocol import DEFAULT_MAX_MESSAGE_SIZE, Control, encode

log = safe_logger("mesh.client")

HEARTBEAT_IVL = 1000        # ms between ZMTP heartbeats on a link (a cut link is noticed)
HEARTBEAT_TIMEOUT = 4000    # ms without traffic after which a link counts as disconnected
RELEASED_AVOID = 5.0        # s a node that gave work back (shutting down) gets no new task
DROPPED_WAIT = 0.5          # s after a disconnect before a send tells whether libzmq ended
                            # the connection for good (then the link is rebuilt)
LOST_SAID = 60.0            # s between two log lines about one link rebuilt that way
WIDE_MAXMSGSIZE = 2 * DEFAULT_MAX_MESSAGE_SIZE   # a rebuilt link's ZMQ_MAXMSGSIZE, at least


class NodeLink:
    """The client's view of one node, and the DEALER it talks to it through."""

    __slots__ = ("endpoint", "node_id", "state", "busy", "total", "queued", "inflight",
                 "sock", "released_at", "monitor", "connected", "reconnects", "gone_since",
                 "down", "resets", "rid", "serves", "key", "keys_failed", "strikes", "refused",
                 "refused_at", "credit", "held", "held_bytes", "quota_tasks", "quota_bytes",
                 "counted", "freed_at", "unlisted", "rebuilt", "rebuilt_said", "alone", "lone",
                 "lone_at", "queue")

    def __init__(self, endpoint: str, sock: zmq.Socket[bytes], monitor: zmq.Socket[bytes],
                 rid: bytes):
        self.endpoint = endpoint
        self.rid = rid                # its routing id, kept for its lifetime (a node
                                      # restarted from its journal answers to it)
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
        self.resets = 0               # times its sockets were replaced (its node died)
        self.serves: Serves | None = None   # its mesh, queues, task names (None: not heard)
        self.key: bytes | None = None  # the mesh key it speaks to the node with (keys)
        self.keys_failed: set[bytes | None] = set()   # mesh keys the node did not hold
        self.strikes = 0              # handshakes failed in a row with the key tried now
        self.refused = ""             # why the node refused our handshake ("": it did not)
        self.refused_at = 0.0
        self.credit = 0               # tasks it has room for while it is full (room.py)
        self.held = 0                 # our tasks it holds (sent, not finished, not moved)
        self.held_bytes = 0           # and their bytes: what its quota counts (room.py)
        self.quota_tasks = 0          # its quota per sender, as its members entry says
        self.quota_bytes = 0          # (0: not said, an older node: refusals tell)
        self.counted = False          # full by our count (not by a refusal): room.py
        self.freed_at = 0.0           # when one of our tasks last finished there, while full
        self.unlisted = 0             # members answers in a row not listing it, its link down
        self.rebuilt = 0              # times libzmq ended its connection for good (_put)
        self.rebuilt_said = 0.0       # when that was last logged (monotonic)
        self.alone = False            # its tasks go again one at a time (alone.py)
        self.lone = ""                # the task sent alone, until a frame about it comes
        self.lone_at = 0.0            # when it was sent (monotonic)
        self.queue: list[str] = []    # the tasks to send alone after it

    @property
    def score(self) -> float:
        return (self.busy + self.queued + self.inflight) / max(self.total, 1)


class Links:
    """The links of a Client (see the module docstring)."""

    # state owned by Client (mesh/client/io.py), used here
    config: Config
    security: Security
    client_id: bytes
    seeds: list[str]
    links: dict[str, NodeLink]
    resent: int
    _ctx: zmq.Context[Any]
    _poller: zmq.Poller
    _by_sock: dict[zmq.Socket[bytes], NodeLink]
    _by_monitor: dict[zmq.Socket[bytes], NodeLink]
    _link_ids: itertools.count[int]
    _placeable: list[NodeLink]
    _slots: dict[str, Slot]
    _rng: random.Random
    _heard_since: bool
    _drops: dict[NodeLink, float]   # links disconnected -> when to see whether for good
    _lost: list[NodeLink]           # links whose DEALER refuses sends: rebuilt (_rebuild_lost)
    _closing: bool
    _released_at = 0.0            # the latest released_at of any link (monotonic; replies.py)
    _gone: frozenset[str] = frozenset()   # endpoints the last members answer said are
                                          # dead or left (none of ours need be linked)

    if TYPE_CHECKING:           # Client's and its other mixins', used here
        mesh: str | None
        _fits: dict[tuple[str, str], list[NodeLink]]
        _full: dict[str, NodeLink]

        def _send(self, slot: Slot, link: NodeLink | None) -> None: ...
        def _unplaceable(self, slot: Slot, kind: str, said: str) -> None: ...
        def _with_room(self, pool: list[NodeLink], slot: Slot | None) -> list[NodeLink] | None: ...
        def _at_quota(self, link: NodeLink) -> None: ...
        def _wrong_key(self, link: NodeLink) -> None: ...
        def _link_refused(self, link: NodeLink, why: str) -> None: ...
        def _ended_alone(self, link: NodeLink, cap: int) -> None: ...
        def _resend_alone(self, link: NodeLink, slots: list[Slot]) -> None: ...

    def _link(self, endpoint: str) -> NodeLink:
        link = self.links.get(endpoint)
        if link is None:
            # one routing id per link: a node reached through two addresses (a seed and
            # its advertised endpoint) sees two peers, and ROUTER_HANDOVER never moves
            # one link's replies to the other
            rid = self.client_id + b".%d" % next(self._link_ids)
            s, mon, key = self._open(endpoint, rid, None)
            link = self.links[endpoint] = NodeLink(endpoint, s, mon, rid)
            link.key = key
            self._by_sock[s] = link
            self._by_monitor[mon] = link
            self._update_placeable()
        return link

    def _open(self, endpoint: str, routing_id: bytes, key: bytes | None, wide: bool = False
              ) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], bytes | None]:
        """A DEALER to ``endpoint`` (speaking to it with mesh key ``key``, with keys;
        None: the current one), the monitor of its connection events, and the key.
        ``wide``: for a link libzmq ended on a frame too big (the module's docs)."""
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, routing_id)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.LINGER, 0)
        most = self.config.max_message_size * 2
        s.setsockopt(zmq.MAXMSGSIZE, max(most, WIDE_MAXMSGSIZE) if wide else most)
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
        self._close_sockets(link)
        # the same routing id: a node restarted from its journal answers the tasks it
        # recovers to it, and the client counts those late results as duplicates
        link.sock, link.monitor, link.key = self._open(link.endpoint, link.rid, link.key,
                                                       link.rebuilt > 0)
        self._by_sock[link.sock] = link
        self._by_monitor[link.monitor] = link
        link.down = True                        # its next handshake is a reconnect
        link.resets += 1
        self._drops.pop(link, None)

    def _put(self, link: NodeLink, frames: bytes | list[bytes]) -> bool:
        """Send one frame, or several as one zmq message, on ``link`` without blocking.
        False when its DEALER refuses them: libzmq ended the connection for good (the
        module's docs). The link is then rebuilt at the loop's next pass: its tasks go
        again once it connects (these frames' tasks with them)."""
        try:
            if type(frames) is bytes:
                link.sock.send(frames, zmq.NOBLOCK)
            else:
                send_frames(link.sock, frames)      # type: ignore[arg-type]
            return True
        except zmq.ZMQError:
            if link not in self._lost:
                self._lost.append(link)
            return False

    def _check_drops(self, now: float) -> None:
        """Links disconnected DROPPED_WAIT ago, not connected since: a send says whether
        libzmq will connect them again (it takes the frame, and sends it then: a ``ping``
        the node answers nothing to), or ended them for good (refused: rebuilt)."""
        for link, due in list(self._drops.items()):
            if due <= now:
                del self._drops[link]
                if self.links.get(link.endpoint) is link and not link.refused:
                    self._put(link, encode(Control("probe", "ping", {"noreply": True},
                                                   self.config.max_message_size)))

    def _rebuild_lost(self) -> None:
        """New sockets (the same routing id) for links whose DEALER refused a send: once
        connected, every task held there for us is sent again (``_drain_monitor``)."""
        lost, self._lost = self._lost, []
        now = time.monotonic()
        for link in lost:
            if self.links.get(link.endpoint) is not link or link.refused or self._closing:
                continue
            limit = self.config.max_message_size
            cap = max(2 * limit, WIDE_MAXMSGSIZE) if link.rebuilt else 2 * limit
            if link.rebuilt:        # ended again, over even that: tasks go one at a time,
                self._ended_alone(link, cap)       # the one that ends it fails (alone.py)
            link.rebuilt += 1
            if now - link.rebuilt_said >= LOST_SAID:
                mine = sum(1 for s in self._slots.values()
                           if s.node == link.endpoint and s.msg is None)
                log.warning("the connection to node %s (%s) was ended by ZeroMQ, which does not "
                            "connect it again (a frame from the node over %d bytes ends it so; "
                            "this client's max_message_size is %d, and the node did not honour "
                            "it: an older node?): connecting again, taking frames of up to %d "
                            "bytes from it (a result over %d fails its task), and sending its %d "
                            "task(s) again%s (%d time(s) so far)", link.node_id or "?",
                            link.endpoint, cap, limit, max(2 * limit, WIDE_MAXMSGSIZE), limit,
                            mine, " one at a time (one whose result ends the connection "
                            f"{ENDED_MAX} times fails with ResultTooLarge)" if link.alone else "",
                            link.rebuilt)
                link.rebuilt_said = now
            self._reset_link(link)

    def _update_placeable(self) -> None:
        self._fits = {}
        mesh = self.mesh
        self._placeable = [n for n in self.links.values() if n.state == "alive" and not n.refused
                           and (n.serves is None or mesh is None or n.serves.mesh == mesh)]

    def _drain_monitor(self, link: NodeLink) -> None:
        """Connection events of a link. A link that connects again (the node restarted,
        or a cut network healed) may have lost frames in either direction: send it
        again every task it holds for us. The node answers a task it holds with an ACK,
        one it finished with the stored result, and runs one it never got."""
        mon = link.monitor
        while link.monitor is mon:
            try:
                frames = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as e:
                log.warning("connection events of %s: %s", link.endpoint, e)
                return
            try:
                event = parse_monitor_message(frames)["event"]
            except Exception:
                continue
            if event == zmq.EVENT_DISCONNECTED:
                link.down = True
                if not link.refused:    # (a refused handshake is tried again: handshakes.py)
                    self._drops[link] = time.monotonic() + DROPPED_WAIT
            elif event == FAILED_KEY:
                self._wrong_key(link)           # may reset the link: the loop then ends
            elif event in (FAILED_AUTH, FAILED_PROTOCOL):
                self._link_refused(link, self.security.handshake_problem(event, link.endpoint))
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._heard_since = True
                self._drops.pop(link, None)
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
                        if link.alone:      # (one at a time: alone.py)
                            self._resend_alone(link, mine)
                        else:
                            for slot in mine:
                                self._send(slot, link)

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
        counted = False
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
                if self._full:      # nodes without room for more from us (room.py)
                    roomy = self._with_room(pool, slot)
                    if roomy is None:
                        return None
                    pool = roomy
                    counted = True  # (each has room for it by our count)
            elif slot.refused:          # no alive node known: the seeds that did not refuse
                seeds = [ep for ep in seeds if ep not in slot.refused]
                if not seeds:
                    self._unplaceable(slot, kind, said)
                    return None
        if avoid is not None and len(pool) > 1:
            pool = [n for n in pool if n.endpoint != avoid]
        if len(pool) > 1:   # skip nodes that are shutting down, while others remain
            now = time.monotonic()
            if now - self._released_at <= RELEASED_AVOID:   # (one gave work back lately)
                fresh = [n for n in pool if now - n.released_at > RELEASED_AVOID]
                pool = fresh or pool
        choice = choose_from(pool, self._rng)
        if choice is None:  # membership knows no alive node: keep trying the seeds
            return self.links[self._rng.choice(seeds)]
        if choice.quota_tasks and not counted and slot is not None and slot.name and \
                not room_for(choice, slot):
            self._at_quota(choice)      # full by our count: choose again among the others
            return self._pick(avoid, slot, kind, said)      # (room.py), or wait
        return choice

    def _shed_target(self, target: Any) -> NodeLink | None:
        """The link to a node a task was shed to, if it is one to follow: an IP
        endpoint (no name lookups for what a node says), not known to be gone."""
        if not isinstance(target, str) or not target.startswith("tcp://"):
            return None
        link = self.links.get(target)
        if link is not None:
            return link if link.state == "alive" else None
        if target in self._gone:
            return None           # (never linked: it left or died before we knew it)
        if not literal_host(target):
            return None
        try:
            return self._link(target)
        except zmq.ZMQError as e:
            log.warning("a node shed work to %r, which cannot be reached: %s", target[:100], e)
            return None
