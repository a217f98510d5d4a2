"""A simulated mesh: many Memberships on one InMemoryNetwork, with a fake clock.

Used by the tests (tests/unit/test_membership_*.py) and to produce the figures in
docs/membership.md; reusable for anything that runs on membership (placement,
shedding). Everything is deterministic for a given seed.

    sim = SimCluster(TEST, seed=1)
    a, b, c = sim.bootstrap(3)                 # three nodes that already know each other
    sim.crash("n1")
    assert sim.run_until(lambda: sim.seen_by_all("n1", MemberState.DEAD), timeout=10)
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mesh.clock import FakeClock
from mesh.membership.member import Member, MemberState
from mesh.membership.profiles import MembershipConfig
from mesh.membership.swim import Membership
from mesh.membership.transport import InMemoryNetwork
from mesh.wire.protocol import PushPullReply

GetMeta = Callable[[], Mapping[str, Any]]


class SimCluster:
    """Memberships named n0, n1, ... at addresses ``mem://<id>``.

    ``seen[(subject, state)][observer]`` is the simulated time at which ``observer``
    last saw ``subject`` enter ``state`` (reset it with :meth:`forget_seen`)."""

    def __init__(self, config: MembershipConfig, *, seed: int = 0, latency: float = 0.0003,
                 jitter: float = 0.0005, drop: float = 0.0) -> None:
        self.config = config
        self.seed = seed
        self.net = InMemoryNetwork(FakeClock(0.0), random.Random(seed), latency, jitter, drop)
        self.clock = self.net.clock
        self.nodes: dict[str, Membership] = {}
        self.crashed: set[str] = set()
        self.seen: dict[tuple[str, MemberState], dict[str, float]] = {}
        self.record = True
        self._count = 0

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def address_of(self, node_id: str) -> str:
        return self.nodes[node_id].address

    # -- making nodes -----------------------------------------------------------------
    def add(self, node_id: str | None = None, *, address: str | None = None,
            join: Iterable[str] = (), get_meta: GetMeta | None = None,
            config: MembershipConfig | None = None) -> Membership:
        """A new node (a restart, if ``node_id`` is taken: it replaces the old one)."""
        if node_id is None:
            node_id = f"n{self._count}"
            self._count += 1
        if address is None:
            address = f"mem://{node_id}"
            if node_id in self.nodes:
                address += f"#{self.now:.3f}"       # a restarted process: a new address
        rng = random.Random(f"{self.seed}/{node_id}/{self.now}")

        def on_change(member: Member, old: MemberState | None, new: MemberState,
                      observer: str = node_id) -> None:
            if self.record and old is not new:
                self.seen.setdefault((member.id, new), {})[observer] = self.now

        m = Membership(node_id, address, config or self.config, self.net.transport(address),
                       self.clock, rng, on_change, get_meta)
        old = self.nodes.get(node_id)
        if old is not None and old.address != address:
            self.net.detach(old.address)
        self.nodes[node_id] = m
        self.crashed.discard(node_id)
        if join:
            m.join(join)
        return m

    def bootstrap(self, n: int, get_meta: Callable[[str], GetMeta] | None = None) -> list[Membership]:
        """``n`` nodes that already know each other (as after a push-pull with a
        node that knew everyone): the fast way to a large converged mesh."""
        made = [self.add(get_meta=get_meta(f"n{self._count}") if get_meta else None) for _ in range(n)]
        state = [[0, m.id, m.incarnation, m.address, "", 0, dict(m.member(m.id).meta)]  # type: ignore[union-attr]
                 for m in made]
        reply = PushPullReply("bootstrap", state)
        for m in made:
            hook, m._on_change = m._on_change, None      # no snapshots for 1,000,000 news
            m.handle("bootstrap", reply, self.now)
            m._on_change = hook
        return made

    # -- faults -------------------------------------------------------------------------
    def crash(self, node_id: str) -> None:
        """SIGKILL: the node stops at once, nothing more is sent or delivered."""
        self.net.crash(self.address_of(node_id))
        self.crashed.add(node_id)

    # -- running and observing ----------------------------------------------------------
    def run_for(self, seconds: float) -> None:
        self.net.run_for(seconds)

    def run_until(self, condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
        return self.net.run_until_true(condition, timeout, step)

    def live_nodes(self) -> list[Membership]:
        return [m for i, m in self.nodes.items() if i not in self.crashed and not m.has_left]

    def observers(self, subject: str) -> list[str]:
        return [m.id for m in self.live_nodes() if m.id != subject]

    def state_seen_by(self, observer: str, subject: str) -> MemberState | None:
        member = self.nodes[observer].member(subject)
        return None if member is None else member.state

    def seen_by_all(self, subject: str, state: MemberState) -> bool:
        """Every live node other than ``subject`` has it in ``state`` right now."""
        return all(self.state_seen_by(o, subject) is state for o in self.observers(subject))

    def when_seen(self, subject: str, state: MemberState, since: float) -> list[float]:
        """Per live observer, seconds from ``since`` to when it saw ``subject`` enter
        ``state`` (its last entry, if at or after ``since``; others are left out)."""
        seen = self.seen.get((subject, state), {})
        return sorted(seen[o] - since for o in self.observers(subject) if o in seen and seen[o] >= since)

    def forget_seen(self) -> None:
        self.seen.clear()

    def bytes_sent(self) -> int:
        return sum(m.stats().bytes_sent for m in self.nodes.values())

    def bytes_sent_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.nodes.values():
            for k, v in m.stats().bytes_sent_by_type.items():
                out[k] = out.get(k, 0) + v
        return out
