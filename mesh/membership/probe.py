"""Failure detection: SWIM's probes, indirect probes, and Lifeguard's NACKs and
local health awareness. Internal to mesh.membership; Membership owns one Prober.

A probe round, every ``probe_interval`` (times the awareness multiplier):

    0                      probe_timeout                   probe_interval
    | PING the target ---> | no ACK yet: PING_REQ to k      | no ACK at all: the target
    |                      | members; they ping the target  | becomes suspect; relays that
    |                      | and forward its ACK, or NACK   | did not NACK raise our
    |                      | if it does not answer them     | awareness (we are the slow one);
    |                      | (none to ask: nothing to learn | with none asked, the awareness
    |                      | about ourselves)               | stays as it is

An ACK in time lowers the awareness score by one; a late one (after the timeout)
leaves it as it is.
"""
from __future__ import annotations

from collections.abc import Callable

from mesh.membership import timing
from mesh.membership.broadcast import Update
from mesh.membership.profiles import MembershipConfig
from mesh.membership.table import LIVE, SUSPECT, MemberTable, Node, is_alive
from mesh.wire.protocol import UPDATE_SUSPECT, Message, Ping, PingAck, PingNack, PingReq


class Awareness:
    """Lifeguard's local health score: 0 (healthy) .. max_multiplier - 1."""

    def __init__(self, max_multiplier: int) -> None:
        self.score = 0
        self.max_multiplier = max_multiplier

    def apply(self, delta: int) -> None:
        self.score = timing.apply_awareness_delta(self.score, delta, self.max_multiplier)

    def scale(self, seconds: float) -> float:
        return timing.scale_by_awareness(seconds, self.score)


class _Probe:
    __slots__ = ("end_at", "expected_nacks", "indirect", "nacks", "seq", "target", "timeout_at")

    def __init__(self, seq: int, target: str, timeout_at: float, end_at: float) -> None:
        self.seq, self.target, self.timeout_at, self.end_at = seq, target, timeout_at, end_at
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """A PING_REQ this node is serving: forward the ACK, or NACK at nack_at."""
    __slots__ = ("expire_at", "nack_at", "reply_to", "seq")

    def __init__(self, reply_to: str, seq: int, nack_at: float, expire_at: float) -> None:
        self.reply_to, self.seq, self.nack_at, self.expire_at = reply_to, seq, nack_at, expire_at


class Prober:
    """Probes one member per round and serves other members' indirect probes."""

    def __init__(self, self_id: str, self_address: str, config: MembershipConfig,
                 table: MemberTable, awareness: Awareness, first_probe_at: float,
                 send: Callable[[str, Message], None],
                 piggyback: Callable[[int], list[Update]],
                 on_failed: Callable[[Node, float], None]) -> None:
        self.id = self_id
        self.address = self_address
        self.config = config
        self.table = table
        self.awareness = awareness
        self.next_probe = first_probe_at
        self._send = send
        self._piggyback = piggyback
        self._on_failed = on_failed
        self._seq = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self.probes = self.failures = self.indirect_probes = 0

    def stop(self) -> None:
        """No more probes of our own (after leave()); relays are still served."""
        self._probe = None
        self.next_probe = float("inf")

    def next_deadline(self) -> float:
        d = self.next_probe
        probe = self._probe
        if probe is not None:
            d = min(d, probe.end_at if probe.indirect else probe.timeout_at)
        for r in self._relays.values():
            d = min(d, r.nack_at if r.nack_at > 0 else r.expire_at)
        return d

    def tick(self, now: float) -> None:
        if self._relays:
            for seq, r in list(self._relays.items()):
                if 0 < r.nack_at <= now:
                    r.nack_at = 0.0
                    self._send(r.reply_to, PingNack(r.seq, self.id))
                if now >= r.expire_at:
                    del self._relays[seq]
        probe = self._probe
        if probe is not None:
            if not probe.indirect and now >= probe.timeout_at:
                self._ask_others(probe)
            if now >= probe.end_at:
                self._failed(probe, now)
        if now >= self.next_probe:
            self._start(now)

    def ping(self, node: Node) -> None:
        """A ping outside the probe rounds (to a member we hold dead, to see whether
        it is back); its ACK is not a probe result."""
        self._seq += 1
        self._send(node.address, Ping(self._seq, node.id, self.id, self.address, []))

    # -- our probes -----------------------------------------------------------------------
    def _start(self, now: float) -> None:
        cfg = self.config
        self.next_probe = now + self.awareness.scale(cfg.probe_interval)
        node = self.table.next_probe_target()
        if node is None:
            return
        self._seq += 1
        updates: list[Update] = []
        if node.state is SUSPECT:      # tell it, so that it can refute at once (Lifeguard)
            updates.append([UPDATE_SUSPECT, node.id, node.incarnation, "", self.id])
        updates += self._piggyback(cfg.max_piggyback - len(updates))
        self._send(node.address, Ping(self._seq, node.id, self.id, self.address, updates))
        self._probe = _Probe(self._seq, node.id, now + self.awareness.scale(cfg.probe_timeout),
                             self.next_probe)
        self.probes += 1

    def _ask_others(self, probe: _Probe) -> None:
        probe.indirect = True
        target = self.table.get(probe.target)
        if target is None:
            return
        relays = self.table.random(self.config.indirect_checks, is_alive, target.id)
        for relay in relays:
            self._send(relay.address, PingReq(probe.seq, target.id, target.address, self.id, self.address))
        probe.expected_nacks = len(relays)
        self.indirect_probes += 1

    def _failed(self, probe: _Probe, now: float) -> None:
        self._probe = None
        self.failures += 1
        # Lifeguard: relays that did not even NACK point at us, not at the target.
        # With no member to ask (two nodes, or every other one suspect), a failed
        # probe says nothing about us: memberlist adds 1 then, which doubled our next
        # probe timeout and the suspicion timeout we start (two real nodes took 2.2 to
        # 2.4 s, not 1.4 s, to declare a killed one dead; session 16)
        expected = probe.expected_nacks
        if expected:
            self.awareness.apply(max(expected - probe.nacks, 0))
        node = self.table.get(probe.target)
        if node is not None and node.state in LIVE:
            self._on_failed(node, now)

    # -- inbound ------------------------------------------------------------------------
    def on_ping(self, msg: Ping) -> None:
        if msg.target == self.id:      # else: meant for an earlier process at this address
            self._send(msg.source_addr, PingAck(msg.seq, self.id, self._piggyback(self.config.max_piggyback)))

    def on_ping_req(self, msg: PingReq, now: float) -> None:
        # NACK early enough to reach the prober before its round ends: it asks us
        # probe_timeout into its round and gives up probe_interval into it. (With
        # memberlist's NACK after a whole probe_timeout, NACKs arrive as the round
        # ends, and a healthy prober counts them missing and blames itself.)
        cfg = self.config
        wait = 0.8 * min(cfg.probe_timeout, cfg.probe_interval - cfg.probe_timeout)
        self._seq += 1
        self._relays[self._seq] = _Relay(msg.source_addr, msg.seq, now + wait, now + cfg.probe_interval)
        self._send(msg.target_addr, Ping(self._seq, msg.target, self.id, self.address,
                                         self._piggyback(cfg.max_piggyback)))

    def on_ack(self, msg: PingAck) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            if not probe.indirect:
                self.awareness.apply(-1)
            self._probe = None
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self._send(relay.reply_to, PingAck(relay.seq, msg.node, self._piggyback(self.config.max_piggyback)))

    def on_nack(self, msg: PingNack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            probe.nacks += 1
