"""SWIM membership with Lifeguard, as a pure, synchronous state machine.

:class:`Membership` does no I/O of its own: inbound frames come in through
``handle(sender, frame, now)``, timers run in ``tick(now)``, ``next_deadline()`` says
when ``tick`` is next due, and frames go out through the injected
:class:`~mesh.membership.transport.Transport`. The simulator calls these with
simulated time; a real node runs ``await run()`` and feeds ``handle`` from its socket.

The protocol (hashicorp/memberlist's SWIM + Lifeguard; docs/membership.md has more):

* Probing (probe.py): each round one member is pinged, then asked about through k
  others; no ack at all makes it *suspect*.
* A suspect is declared *dead* when its suspicion timer runs out. The timer starts at
  a maximum and falls towards a minimum as other members independently suspect it;
  a member told of a suspicion probes the suspect next, to confirm it or not.
* A member told that it is suspect or dead refutes it by raising its incarnation
  number; an update with a higher incarnation wins.
* Updates are piggybacked on pings, acks and gossip messages, each passed on a
  limited number of times (broadcast.py); a push-pull of the whole member list with
  one random member repairs what gossip missed, and is how a node joins.
* Lifeguard: this node's health score rises when its probes fail without NACKs from
  the relays, when it has to refute, and when its event loop runs late; while it is
  high, this node probes less often, waits longer for acks and waits longer before
  declaring anyone dead.
* Meta (the member's load) travels in alive updates with its own version counter,
  not by raising the incarnation, so load churn never invalidates a suspicion; and
  meta updates are queued behind liveness updates.
* Partitions heal: a member that hears from one it holds suspect or dead tells it
  so (it then refutes), and each node pings one random dead member every
  reconnect_interval until dead_node_reclaim forgets it.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from mesh.clock import Clock
from mesh.exceptions import DecodeError, EncodeError
from mesh.membership import timing
from mesh.membership.broadcast import META, BroadcastQueue, Update
from mesh.membership.member import WIRE_STATE, Member, MembershipStats, MemberState
from mesh.membership.probe import Awareness, Prober
from mesh.membership.profiles import MembershipConfig
from mesh.membership.state import StateMachine, alive_update
from mesh.membership.table import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    MemberTable,
    Node,
    is_alive,
    is_live,
    not_left,
)
from mesh.membership.transport import Transport
from mesh.security.text import printable, safe_logger
from mesh.wire.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    UPDATE_DEAD,
    UPDATE_LEFT,
    UPDATE_SUSPECT,
    Gossip,
    Message,
    Ping,
    PingAck,
    PingNack,
    PingReq,
    PushPull,
    PushPullReply,
    decode,
    encode,
)

log = safe_logger("mesh.membership")

# the message types a Membership handles: a node routes these from its front door to it
MESSAGE_TYPES: frozenset[type[Message]] = frozenset(
    {Ping, PingReq, PingAck, PingNack, Gossip, PushPull, PushPullReply})

_INF = float("inf")
DIRECT_FANOUT = 64     # members told directly, at once, that this node joined or leaves
ENCODE_SAY_EVERY = 60.0  # s between two log lines for messages of one type that cannot be encoded

OnChange = Callable[[Member, "MemberState | None", MemberState], None]
GetMeta = Callable[[], Mapping[str, Any]]


class Membership:
    """This node's view of the mesh, and its part in failure detection.

    ``on_change(member, old_state, new_state)`` is called after every change of a
    member (``old_state`` is None for a member just learned; equal states mean its
    meta or address changed); it runs inline, must not block, and an exception from
    it is logged and ignored. Changes of this node itself are not reported.
    ``get_local_meta()`` returns this node's meta (its load: a small map of plain
    values); it is called every ``meta_refresh_interval`` and by update_local_meta(),
    and must not block either.

    ``incarnation`` starts this node's incarnation number somewhere other than 0
    (not needed: a restarted node learns its old number from the mesh and goes
    above it). ``max_message_size`` bounds inbound frames handed in as bytes.

    Not thread-safe: call everything from one thread (the node's event loop).
    """

    def __init__(self, self_id: str, self_address: str, config: MembershipConfig,
                 transport: Transport, clock: Clock | None = None,
                 rng: random.Random | None = None, on_change: OnChange | None = None,
                 get_local_meta: GetMeta | None = None, *, incarnation: int = 0,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.id = self_id
        self.address = self_address
        self.config = config
        self._transport = transport
        self._clock = clock if clock is not None else Clock()
        rng = rng if rng is not None else random.Random()
        self._rng = rng
        self._on_change = on_change
        self._get_meta = get_local_meta
        self._max_size = max_message_size
        now = self._clock.monotonic()
        meta = self._read_meta() if get_local_meta is not None else None
        self._me = Node(self_id, self_address, incarnation, meta or {}, 0, now)
        self._table = MemberTable(self._me, rng, config.dead_node_reclaim)
        self._queue = BroadcastQueue()
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._prober = Prober(self_id, self_address, config, self._table, self._awareness,
                              now + rng.random() * config.probe_interval,    # staggered starts
                              self._send, self._piggyback, self._probe_failed)
        self._state = StateMachine(config, self._table, self._queue, self._awareness, self._notify)
        self._seeds: tuple[str, ...] = ()
        self._announce = False          # a join reply is due: announce ourselves then
        self._join_quiet = False        # ... and we knew no live member when we asked
        self._told: dict[str, float] = {}           # members told they are suspect/dead -> when
        self._encode_said: dict[str, float] = {}    # message type -> when one failed to encode
        self._next_gossip = now + rng.random() * config.gossip_interval
        self._next_push_pull = now + rng.random() * config.push_pull_interval
        self._next_meta = now + config.meta_refresh_interval
        self._next_join = _INF
        self._next_reconnect = now
        self._counts = dict.fromkeys(("sent", "received", "bytes_sent", "bytes_received", "deaths",
                                      "decode_errors"), 0)
        self._bytes_by_type: dict[str, int] = {}
        self._wake: asyncio.Event | None = None
        self._planned = _INF
        self._dispatch: dict[type[Message], Callable[[Any, float], None]] = {
            Ping: self._on_ping, PingReq: self._on_ping_req, PingAck: self._on_ack,
            PingNack: self._on_nack, Gossip: self._on_gossip, PushPull: self._on_push_pull,
            PushPullReply: self._on_push_pull_reply,
        }
        self._queue.put(self_id, alive_update(self._me))
        transport.attach(self)

    # ---- public API -------------------------------------------------------------------
    @property
    def incarnation(self) -> int:
        """This node's incarnation number."""
        return self._me.incarnation

    @property
    def awareness(self) -> int:
        """This node's local health score: 0 healthy .. awareness_max_multiplier - 1."""
        return self._awareness.score

    @property
    def told_dead(self) -> int:
        """How many times this node refuted news that it is dead (another member had
        declared it dead: its backups may have taken its tasks over)."""
        return self._state.told_dead

    @property
    def has_left(self) -> bool:
        return self._state.left

    def members(self) -> list[Member]:
        """Every member this node knows, itself first, dead and left ones included
        (until dead_node_reclaim forgets them)."""
        return [self._me.snapshot()] + [n.snapshot() for n in self._table.nodes.values()]

    def alive_members(self, include_self: bool = True) -> list[Member]:
        """The members in state alive (not suspect)."""
        out = [n.snapshot() for n in self._table.nodes.values() if n.state is ALIVE]
        if include_self and not self._state.left:
            out.insert(0, self._me.snapshot())
        return out

    def member(self, member_id: str) -> Member | None:
        node = self._me if member_id == self.id else self._table.get(member_id)
        return None if node is None else node.snapshot()

    def join(self, seeds: Iterable[str], now: float | None = None) -> int:
        """Push-pull with each seed address now (and again every join_retry_interval
        while this node knows no live member). Returns how many seeds were contacted.
        Calls add seeds: call it again with addresses found later (mDNS)."""
        now = self._now(now)
        new = [s for s in dict.fromkeys(seeds) if s and s != self.address]
        self._seeds = tuple(dict.fromkeys((*self._seeds, *new)))
        self._send_join(new, now)
        return len(new)

    def leave(self, now: float | None = None) -> None:
        """Leave gracefully: this node is *left* from now on, and up to DIRECT_FANOUT
        (64) live members are told at once; gossip spreads it further (keep tick() or
        run() going for a few gossip intervals). Others never suspect a left member."""
        if self._state.left:
            return
        now = self._now(now)
        self._state.left = True
        self._me.state = LEFT
        self._me.state_changed = now
        self._prober.stop()
        update: Update = [UPDATE_LEFT, self.id, self._me.incarnation, "", self.id]
        self._queue.put(self.id, update)
        for node in self._table.random(DIRECT_FANOUT, is_live):
            self._send(node.address, Gossip(self.id, [update]))

    def update_local_meta(self) -> bool:
        """Read get_local_meta() now, and gossip it if it changed. True if it did."""
        meta = self._read_meta() if self._get_meta is not None else None
        if meta is None or meta == self._me.meta or self._state.left:
            return False
        self._me.meta = meta
        self._me.meta_version += 1
        self._queue.put(self.id, alive_update(self._me), META)
        return True

    def stats(self) -> MembershipStats:
        c, p = self._counts, self._prober
        return MembershipStats(
            messages_sent=c["sent"], messages_received=c["received"], bytes_sent=c["bytes_sent"],
            bytes_received=c["bytes_received"],
            bytes_sent_by_type=MappingProxyType(dict(self._bytes_by_type)), probes=p.probes,
            probe_failures=p.failures, indirect_probes=p.indirect_probes,
            suspicions=self._state.suspicions, refutations=self._state.refutations, deaths_declared=c["deaths"],
            decode_errors=c["decode_errors"], awareness=self._awareness.score,
            queued_updates=len(self._queue))

    # ---- driving: handle / tick / next_deadline / run ------------------------------------
    def handle(self, sender: str, data: bytes | Message, now: float | None = None) -> None:
        """One inbound frame (or decoded message) from ``sender``. Replies go to the
        addresses the messages carry, so ``sender`` is only for logs. Bad frames are
        counted (stats().decode_errors) and dropped."""
        now = self._now(now)
        self._counts["received"] += 1
        if isinstance(data, Message):
            msg = data
        else:
            self._counts["bytes_received"] += len(data)
            try:
                msg = decode(data, self._max_size)
            except DecodeError as e:
                self._counts["decode_errors"] += 1
                log.debug("membership: refused a frame from %s: %s", printable(sender), e)
                return
        fn = self._dispatch.get(type(msg))
        if fn is None:
            self._counts["decode_errors"] += 1
            log.debug("membership: %s from %s is not a membership message", type(msg).__name__,
                      printable(sender))
            return
        fn(msg, now)
        if self._wake is not None and self.next_deadline() < self._planned:
            self._wake.set()

    def tick(self, now: float | None = None) -> None:
        """Run every timer that is due at ``now``."""
        now = self._now(now)
        cfg = self.config
        self._prober.tick(now)
        for node in self._table.expired_suspicions(now):
            self._counts["deaths"] += 1
            log.info("membership: %s declares %s dead (suspicion timed out)", printable(self.id),
                     printable(node.id))
            self._state.dead(node.id, node.incarnation, self.id, now, left=False)
        if self._table.gone and now >= self._table.next_forget:
            for member_id in self._table.forget_due(now):
                self._told.pop(member_id, None)
        if not self._state.left:
            self._tick_active(now)
        # last, so that what the steps above queued goes out now
        if now >= self._next_gossip and len(self._queue):   # idle while there is no news
            self._next_gossip = now + cfg.gossip_interval
            self._gossip()

    def _tick_active(self, now: float) -> None:
        """The timers of a member that has not left."""
        cfg = self.config
        if now >= self._next_push_pull:
            # Each base period, with probability base / (the period for this n): the
            # average rate of timing.push_pull_interval, adapting at once as n changes.
            self._next_push_pull = now + cfg.push_pull_interval
            period = timing.push_pull_interval(cfg.push_pull_interval, self._table.n())
            if self._rng.random() * period < cfg.push_pull_interval:
                for node in self._table.random(1, is_alive):
                    self._send(node.address, PushPull(self.id, self.address, self._state_updates()))
        if self._seeds and self._table.live == 0 and now >= self._next_join:
            self._send_join(self._seeds, now)
        if self._get_meta is not None and cfg.meta_refresh_interval > 0 and now >= self._next_meta:
            self._next_meta = now + cfg.meta_refresh_interval
            self.update_local_meta()
        if self._table.gone and cfg.reconnect_interval > 0 and now >= self._next_reconnect:
            self._next_reconnect = now + cfg.reconnect_interval
            dead = self._table.random(1, _is_dead)
            if dead:
                self._prober.ping(dead[0])

    def next_deadline(self) -> float:
        """Monotonic time at which tick() is next due."""
        table, cfg = self._table, self.config
        d = min(self._prober.next_deadline(), table.next_suspicion_deadline())
        if len(self._queue):
            d = min(d, self._next_gossip)
        if table.gone:
            d = min(d, table.next_forget)
        if not self._state.left:
            d = min(d, self._next_push_pull)
            if self._get_meta is not None and cfg.meta_refresh_interval > 0:
                d = min(d, self._next_meta)
            if self._seeds and table.live == 0:
                d = min(d, self._next_join)
            if table.gone and cfg.reconnect_interval > 0:
                d = min(d, self._next_reconnect)
        return d

    async def run(self) -> None:
        """Run the timers from the running asyncio loop until cancelled (the
        transport calls handle() meanwhile). Waking up later than planned by more
        than probe_timeout means the loop is overloaded: that raises the awareness
        score (Lifeguard), so this node slows down rather than accuse others."""
        self._wake = wake = asyncio.Event()
        try:
            while True:
                now = self._clock.monotonic()
                if now - self._planned > self.config.probe_timeout:
                    self._awareness.apply(1)
                self.tick(now)
                self._planned = self.next_deadline()
                delay = self._planned - self._clock.monotonic()
                if delay > 0:
                    wake.clear()
                    try:
                        async with asyncio.timeout(delay):
                            await wake.wait()
                        self._planned = _INF       # woken early by handle(): not late
                    except TimeoutError:
                        pass
        finally:
            self._wake = None
            self._planned = _INF

    # ---- inbound messages -------------------------------------------------------------
    def _on_ping(self, msg: Ping, now: float) -> None:
        self._state.apply(msg.updates, now)     # first, so that a refutation rides on the ack
        self._prober.on_ping(msg)
        self._check_sender(msg.source, now)

    def _on_ping_req(self, msg: PingReq, now: float) -> None:
        self._prober.on_ping_req(msg, now)
        self._check_sender(msg.source, now)

    def _on_ack(self, msg: PingAck, now: float) -> None:
        self._prober.on_ack(msg)
        self._state.apply(msg.updates, now)
        self._check_sender(msg.node, now)

    def _on_nack(self, msg: PingNack, now: float) -> None:
        self._prober.on_nack(msg)

    def _on_gossip(self, msg: Gossip, now: float) -> None:
        self._state.apply(msg.updates, now)
        self._check_sender(msg.source, now)

    def _on_push_pull(self, msg: PushPull, now: float) -> None:
        state = self._state_updates()
        self._state.merge(msg.members, msg.source, now, quiet=False)
        self._send(msg.source_addr, PushPullReply(self.id, state))

    def _on_push_pull_reply(self, msg: PushPullReply, now: float) -> None:
        self._state.merge(msg.members, msg.source, now, quiet=self._join_quiet or self._table.live == 0)
        if self._announce and self._table.live:
            self._announce = self._join_quiet = False
            # Joined: announce ourselves directly to up to 64 members, as leave() does.
            # Gossip alone reaches everyone only with high probability, and in a small
            # mesh an unlucky member could wait for the next push-pull (30 s).
            update = [alive_update(self._me)]
            for node in self._table.random(DIRECT_FANOUT, is_live, msg.source):
                self._send(node.address, Gossip(self.id, update))

    def _check_sender(self, member_id: str, now: float) -> None:
        """A member we hold suspect or dead is talking to us: tell it, so that it
        refutes at once with a higher incarnation, which everyone accepts. This is
        how the two sides of a healed partition find each other again, and it cuts
        a false suspicion short."""
        node = self._table.get(member_id)
        if node is None or node.state not in (SUSPECT, DEAD):
            return
        if now - self._told.get(member_id, -_INF) < self.config.probe_interval:
            return
        self._told[member_id] = now
        state = UPDATE_SUSPECT if node.state is SUSPECT else UPDATE_DEAD
        self._send(node.address, Gossip(self.id, [[state, node.id, node.incarnation, "", self.id]]))

    # ---- wiring ---------------------------------------------------------------------
    def _probe_failed(self, node: Node, now: float) -> None:
        self._state.suspect(node.id, node.incarnation, self.id, now)

    # ---- sending ----------------------------------------------------------------------
    def _send_join(self, seeds: Iterable[str], now: float) -> None:
        self._announce = True
        self._join_quiet = self._table.live == 0
        state = self._state_updates()
        for address in seeds:
            self._send(address, PushPull(self.id, self.address, state, join=True))
        self._next_join = now + self.config.join_retry_interval

    def _gossip(self) -> None:
        for node in self._table.random(self.config.gossip_fanout, not_left):
            updates = self._piggyback(self.config.max_piggyback)
            if not updates:
                break
            self._send(node.address, Gossip(self.id, updates))

    def _piggyback(self, room: int) -> list[Update]:
        if room <= 0 or not len(self._queue):
            return []
        limit = timing.retransmit_limit(self.config.retransmit_mult, self._table.n())
        return self._queue.take(room, limit)

    def _state_updates(self) -> list[Update]:
        me = self._me
        out = [alive_update(me) if not self._state.left else
               [UPDATE_LEFT, self.id, me.incarnation, "", self.id]]
        for n in self._table.nodes.values():
            out.append(alive_update(n) if n.state is ALIVE else
                       [WIRE_STATE[n.state], n.id, n.incarnation, n.address, ""])
        return out

    def _send(self, address: str, msg: Message) -> None:
        try:
            frame = encode(msg)
        except EncodeError as e:
            # a value that cannot go on the wire (this node's own meta, a number a peer
            # pushed past msgpack's range) loses this message, never the membership
            # loop: its end was the node's (a peer's Lamport clock of 2**64 - 1, review20)
            now = self._clock.monotonic()
            if now - self._encode_said.get(msg.TYPE.name, -_INF) >= ENCODE_SAY_EVERY:
                self._encode_said[msg.TYPE.name] = now
                log.error("membership: a %s to %s is not sent: %s (said once a minute)",
                          msg.TYPE.name, address, e)
            return
        c = self._counts
        c["sent"] += 1
        c["bytes_sent"] += len(frame)
        name = msg.TYPE.name
        self._bytes_by_type[name] = self._bytes_by_type.get(name, 0) + len(frame)
        self._transport.send(address, frame)

    # ---- helpers ----------------------------------------------------------------------
    def _read_meta(self) -> dict[str, Any] | None:
        assert self._get_meta is not None
        try:
            return dict(self._get_meta())
        except Exception:
            log.exception("membership: get_local_meta() failed")
            return None

    def _notify(self, node: Node, old: MemberState | None) -> None:
        if self._on_change is not None:
            try:
                self._on_change(node.snapshot(), old, node.state)
            except Exception:
                log.exception("membership: on_change hook failed for %s", node.id)

    def _now(self, now: float | None) -> float:
        return self._clock.monotonic() if now is None else now


def _is_dead(n: Node) -> bool:
    return n.state is DEAD
