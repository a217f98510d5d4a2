"""How membership messages travel: the Transport interface and an in-memory network.

A :class:`Transport` is UDP-like: ``send`` is best effort, may drop, never blocks and
never raises because a peer is dead or unknown. Inbound frames are delivered by
calling ``receiver.handle(sender_address, frame)`` on the :class:`Receiver` attached
to it (a :class:`~mesh.membership.swim.Membership`). Frames are real encoded protocol
frames (mesh.wire.protocol.encode) in every implementation, so byte counts are true.

:class:`InMemoryNetwork` is also a discrete-event simulator: it owns a FakeClock,
delivers frames after a simulated latency, and calls each attached receiver's
``tick()`` when its ``next_deadline()`` comes. A 1,000-node mesh runs in one thread,
deterministically for a given seed. It can drop frames per link, block links
(partitions), crash nodes and slow a node's inbound processing down.

The ZeroMQ transport (mesh.node.peers) implements the same interface; the contract both
must meet is tests/unit/test_membership_swim.py::TransportContract.
"""
from __future__ import annotations

import abc
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mesh.clock import FakeClock
from mesh.wire.protocol import Message


class Receiver(Protocol):
    """What a transport delivers to (Membership implements it)."""

    def handle(self, sender: str, data: bytes | Message, now: float | None = None) -> None:
        """One inbound frame (or an already decoded message) from ``sender``."""

    def tick(self, now: float | None = None) -> None:
        """Run the timers that are due."""

    def next_deadline(self) -> float:
        """Monotonic time of the next timer (tick() should run then)."""
        ...


class Transport(abc.ABC):
    """Best-effort, datagram-like delivery of frames between member addresses."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """The address peers send to, to reach this transport."""

    @abc.abstractmethod
    def attach(self, receiver: Receiver) -> None:
        """Deliver inbound frames to ``receiver.handle`` from now on."""

    @abc.abstractmethod
    def send(self, address: str, frame: bytes) -> None:
        """Send one frame. Best effort: may drop; never blocks; never raises for a
        dead, unknown or unreachable peer."""

    def close(self) -> None:
        """Stop sending and delivering. Idempotent."""


@dataclass
class Traffic:
    """Counters of one address on an InMemoryNetwork."""
    sent_messages: int = 0
    sent_bytes: int = 0
    received_messages: int = 0
    received_bytes: int = 0
    dropped: int = 0          # frames from this address lost (drop, partition, crash)


_DELIVER = 0
_TICK = 1
_CALL = 2


class InMemoryNetwork:
    """A simulated lossy network with a fake clock, driving attached receivers.

    ``latency`` is the one-way delay in simulated seconds, plus up to ``jitter``
    uniformly at random; ``drop`` is the default per-frame loss probability.
    """

    def __init__(self, clock: FakeClock | None = None, rng: random.Random | None = None,
                 latency: float = 0.0005, jitter: float = 0.0, drop: float = 0.0) -> None:
        self.clock = clock if clock is not None else FakeClock(0.0)
        self.rng = rng if rng is not None else random.Random(0)
        self.latency = latency
        self.jitter = jitter
        self.drop = drop
        self._events: list[tuple[float, int, int, str, str, object]] = []
        self._seq = 0
        self._receivers: dict[str, Receiver] = {}
        self._tick_at: dict[str, float] = {}
        self._crashed: set[str] = set()
        self._blocked: set[tuple[str, str]] = set()
        self._link_drop: dict[tuple[str, str], float] = {}
        self._link_latency: dict[tuple[str, str], float] = {}
        self._inbound_delay: dict[str, float] = {}
        self._traffic: dict[str, Traffic] = {}
        self.delivered = 0

    # -- wiring -----------------------------------------------------------------------
    def transport(self, address: str) -> InMemoryTransport:
        return InMemoryTransport(self, address)

    def attach(self, address: str, receiver: Receiver) -> None:
        """Deliver frames for ``address`` to ``receiver`` (replacing a crashed one:
        a restart) and tick it at its deadlines."""
        self._receivers[address] = receiver
        self._crashed.discard(address)
        self._tick_at.pop(address, None)
        self._schedule_tick(address)

    def detach(self, address: str) -> None:
        self._receivers.pop(address, None)
        self._tick_at.pop(address, None)

    # -- faults -----------------------------------------------------------------------
    def crash(self, address: str) -> None:
        """The process at ``address`` stops: nothing is delivered to or from it and
        it is no longer ticked (frames in flight to it are lost)."""
        self._crashed.add(address)

    def is_crashed(self, address: str) -> bool:
        return address in self._crashed

    def partition(self, a: str, b: str) -> None:
        """Block the link between ``a`` and ``b``, both ways."""
        self._blocked.add((a, b))
        self._blocked.add((b, a))

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Unblock the link a-b, or every link if none is given."""
        if a is None or b is None:
            self._blocked.clear()
        else:
            self._blocked.discard((a, b))
            self._blocked.discard((b, a))

    def set_drop(self, a: str, b: str, probability: float) -> None:
        """Loss probability of frames from ``a`` to ``b`` (one way)."""
        self._link_drop[(a, b)] = probability

    def set_latency(self, a: str, b: str, seconds: float) -> None:
        """One-way latency from ``a`` to ``b``."""
        self._link_latency[(a, b)] = seconds

    def set_inbound_delay(self, address: str, seconds: float) -> None:
        """Every frame to ``address`` is handled ``seconds`` late: a node too busy
        to read its socket (its timers still run on time)."""
        self._inbound_delay[address] = seconds

    # -- counters ---------------------------------------------------------------------
    def traffic(self, address: str) -> Traffic:
        return self._traffic.setdefault(address, Traffic())

    def reset_traffic(self) -> None:
        self._traffic.clear()

    # -- sending ----------------------------------------------------------------------
    def _send(self, src: str, dst: str, frame: bytes) -> None:
        t = self.traffic(src)
        t.sent_messages += 1
        t.sent_bytes += len(frame)
        if src in self._crashed or (src, dst) in self._blocked:
            t.dropped += 1
            return
        p = self._link_drop.get((src, dst), self.drop)
        if p and self.rng.random() < p:
            t.dropped += 1
            return
        delay = self._link_latency.get((src, dst), self.latency)
        if self.jitter:
            delay += self.rng.random() * self.jitter
        delay += self._inbound_delay.get(dst, 0.0)
        self._push(self.clock.monotonic() + delay, _DELIVER, dst, src, frame)

    def _push(self, at: float, kind: int, address: str, src: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, address, src, payload))

    def _schedule_tick(self, address: str) -> None:
        receiver = self._receivers.get(address)
        if receiver is None or address in self._crashed:
            return
        at = max(receiver.next_deadline(), self.clock.monotonic())   # overdue: now
        if at < self._tick_at.get(address, math.inf):
            self._tick_at[address] = at
            self._push(at, _TICK, address, "", None)

    def call_at(self, at: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at simulated time ``at`` (a scripted fault, a measurement)."""
        self._push(at, _CALL, "", "", fn)

    # -- running ----------------------------------------------------------------------
    def run_until(self, t: float) -> None:
        """Process every event up to simulated time ``t``; the clock ends at ``t``."""
        events = self._events
        clock = self.clock
        while events and events[0][0] <= t:
            at, _seq, kind, address, src, payload = heapq.heappop(events)
            if at > clock.monotonic():
                clock.advance(at - clock.monotonic())
            if kind == _DELIVER:
                receiver = self._receivers.get(address)
                if receiver is None or address in self._crashed or src in self._crashed:
                    self.traffic(src).dropped += 1
                    continue
                frame = payload
                assert isinstance(frame, bytes)
                tr = self.traffic(address)
                tr.received_messages += 1
                tr.received_bytes += len(frame)
                self.delivered += 1
                receiver.handle(src, frame, at)
                self._schedule_tick(address)
            elif kind == _TICK:
                if self._tick_at.get(address) != at:
                    continue                          # superseded by an earlier tick
                del self._tick_at[address]
                receiver = self._receivers.get(address)
                if receiver is None or address in self._crashed:
                    continue
                receiver.tick(at)
                if receiver.next_deadline() <= at:
                    raise RuntimeError(f"{address}: next_deadline() is not after tick({at}): "
                                       "a timer that tick() does not run (a bug)")
                self._schedule_tick(address)
            else:
                fn = payload
                assert callable(fn)
                fn()
        if t > clock.monotonic():
            clock.advance(t - clock.monotonic())

    def run_for(self, seconds: float) -> None:
        self.run_until(self.clock.monotonic() + seconds)

    def run_until_true(self, condition: Callable[[], bool], timeout: float,
                       step: float = 0.01) -> bool:
        """Run in steps of ``step`` simulated seconds until ``condition()`` holds
        (True) or ``timeout`` simulated seconds pass (False)."""
        deadline = self.clock.monotonic() + timeout
        while not condition():
            if self.clock.monotonic() >= deadline:
                return False
            self.run_until(min(deadline, self.clock.monotonic() + step))
        return True


class InMemoryTransport(Transport):
    """One address on an InMemoryNetwork."""

    def __init__(self, network: InMemoryNetwork, address: str) -> None:
        self._network = network
        self._address = address
        self._closed = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def network(self) -> InMemoryNetwork:
        return self._network

    def attach(self, receiver: Receiver) -> None:
        self._network.attach(self._address, receiver)

    def send(self, address: str, frame: bytes) -> None:
        if not self._closed:
            self._network._send(self._address, address, frame)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._network.detach(self._address)
