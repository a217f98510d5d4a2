"""Simulated meshes of 3 to 1,000 nodes (fake clock, in-memory network, real frames).

Measured here, asserted as regression guards (simulated time, so deterministic):

* a join and a crash reach every node of 10, 100 and 1,000 nodes: simulated
  seconds, gossip rounds (gossip_interval) and probe rounds (probe_interval);
* gossip bytes/s per node at 10, 100 and 1,000 nodes stay roughly flat, in a quiet
  mesh and (slow) with every node's load changing every second;
* on the LAN profile, a killed node among 3, 5 and 10 is seen dead by all others
  with median < 2 s and worst < 4 s, over 100 crashes each.

docs/membership.md quotes the figures. To print them (all sizes, churn included;
about three minutes)::

    .venv/bin/python tests/unit/test_membership_sim.py

``pytest -s`` prints the figures of the runs it makes too.
"""
from __future__ import annotations

import functools
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

if __name__ == "__main__":          # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mesh.membership import LAN, MembershipConfig, MemberState
from mesh.membership.sim import SimCluster

ALIVE, DEAD = MemberState.ALIVE, MemberState.DEAD
WINDOW = 30.0       # simulated s of steady state to measure traffic over (a push-pull period)
CHURN_WINDOW = 10.0  # ... with load churn (saturated, so steady at once; and slower to simulate)
_ROW_PREFIX = "\n"   # under pytest -s, start rows on a line of their own


@dataclass(frozen=True)
class Figures:
    n: int
    churn: bool
    join_median: float          # simulated s until a node's join is seen, per node
    join_all: float             # ... seen by every node
    crash_first_suspect: float  # simulated s from SIGKILL to the first suspicion
    crash_median: float         # ... to "dead", per node
    crash_all: float            # ... seen dead by every node
    bytes_per_node: float       # bytes/s each node sends, steady state
    by_type: Mapping[str, float]
    wall: float                 # real seconds the run took
    gossip_interval: float
    probe_interval: float

    def row(self) -> str:
        g, p = self.gossip_interval, self.probe_interval
        kinds = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.by_type.items(), key=lambda kv: -kv[1]) if v >= 1)
        return (f"| {self.n:,} | {'load changes 1/s' if self.churn else 'quiet'} "
                f"| {self.join_median:.3f} / {self.join_all:.3f} s ({self.join_all / g:.1f} gossip rounds) "
                f"| {self.crash_first_suspect:.2f} s | {self.crash_median:.2f} / {self.crash_all:.2f} s "
                f"({self.crash_all / p:.0f} probe rounds) | {self.bytes_per_node:,.0f} ({kinds}) "
                f"| {self.wall:.0f} s |")


HEADER = ("| nodes | load | join seen: median / all | crash: first suspect | crash seen dead: median / all "
          "| bytes/s sent per node (by type) | wall |\n|---|---|---|---|---|---|---|")


def _churning_meta(node_id: str) -> Callable[[], Mapping[str, Any]]:
    tick = itertools.count()
    return lambda: {"free": next(tick) % 5, "total": 4, "queued": 0, "rate": 12.5, "cpu": 0.31, "mem": 0.42}


@functools.cache
def measure(n: int, churn: bool = False, config: MembershipConfig = LAN, seed: int = 1) -> Figures:
    """Bootstrap ``n`` nodes, measure steady traffic, then a join, then a crash."""
    started = time.perf_counter()
    sim = SimCluster(config, seed=seed)
    sim.bootstrap(n, get_meta=_churning_meta if churn else None)
    sim.run_for(5.0)                                    # the start-up announcements die down
    before, kinds_before = sim.bytes_sent(), sim.bytes_sent_by_type()
    window = CHURN_WINDOW if churn else WINDOW
    sim.run_for(window)
    kinds = {k: (v - kinds_before.get(k, 0)) / n / window for k, v in sim.bytes_sent_by_type().items()}
    per_node = (sim.bytes_sent() - before) / n / window

    t0 = sim.now
    joiner = sim.add("joiner", join=[sim.address_of("n0")])
    assert sim.run_until(lambda: sim.seen_by_all("joiner", ALIVE) and len(joiner.alive_members()) == n + 1,
                         timeout=30.0), "the join did not reach every node"
    joined = sim.when_seen("joiner", ALIVE, t0)

    sim.run_for(2.0)
    victim = f"n{n // 2}"
    t0 = sim.now
    sim.crash(victim)
    assert sim.run_until(lambda: sim.seen_by_all(victim, DEAD), timeout=60.0), "the crash did not reach every node"
    dead = sim.when_seen(victim, DEAD, t0)
    suspected = sim.when_seen(victim, MemberState.SUSPECT, t0)
    assert len(dead) == len(sim.observers(victim)) == n
    false_deaths = [s for (s, st) in sim.seen if st is DEAD and s != victim]
    assert false_deaths == [], f"healthy nodes declared dead: {false_deaths}"
    figures = Figures(n, churn, statistics.median(joined), max(joined), min(suspected),
                      statistics.median(dead), max(dead), per_node, kinds,
                      time.perf_counter() - started, config.gossip_interval, config.probe_interval)
    print(_ROW_PREFIX + figures.row())
    return figures


# 1000 nodes: ~25 s of CPU (80 s on a loaded machine, past the default 120 s timeout
# once): a big simulation, so `slow` with its own timeout; 10 and 100 run by default
@pytest.mark.parametrize("n", [10, 100, pytest.param(1000, marks=[pytest.mark.slow,
                                                                   pytest.mark.timeout(600)])])
def test_join_and_crash_reach_every_node(n: int) -> None:
    f = measure(n)
    # generous guards around the measured values (docs/membership.md), in simulated time
    assert f.join_all < 3.0
    assert f.crash_all < {10: 4.0, 100: 6.0, 1000: 8.0}[n]
    assert f.crash_median >= LAN.probe_interval       # at least a probe round: no shortcut


# up to 1000 nodes: ~25 s of CPU (47 s to 126 s on a loaded machine, past the default
# timeout): `slow`; the default run compares 10 and 100
@pytest.mark.parametrize("sizes", [(10, 100), pytest.param((10, 100, 1000), marks=[
    pytest.mark.slow, pytest.mark.timeout(600)])])
def test_gossip_bytes_per_node_stay_flat_in_a_quiet_mesh(sizes: tuple[int, ...]) -> None:
    rates = {n: measure(n).bytes_per_node for n in sizes}
    assert max(rates.values()) < 2.5 * min(rates.values()), rates
    assert max(rates.values()) < 500          # a quiet mesh costs a few hundred bytes/s per node


@pytest.mark.parametrize("n", [10, pytest.param(100, marks=[pytest.mark.slow, pytest.mark.timeout(600)]),
                               pytest.param(1000, marks=[pytest.mark.slow, pytest.mark.timeout(600)])])
def test_gossip_bytes_per_node_with_load_changing_every_second(n: int) -> None:
    f = measure(n, churn=True)
    # Bounded by the piggyback capacity (messages/s x max_piggyback), whatever n is:
    # (1/probe_interval probes + their acks + fanout/gossip_interval) x 8 updates.
    assert f.bytes_per_node < 20_000
    assert f.crash_all < {10: 4.0, 100: 6.0, 1000: 8.0}[n]    # liveness goes before load


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_load_gossip_saturates_flat() -> None:
    rates = {n: measure(n, churn=True).bytes_per_node for n in (100, 1000)}
    assert rates[1000] < 1.5 * rates[100], rates


def crash_distribution(n: int, trials: int, config: MembershipConfig = LAN) -> list[float]:
    """Seconds until the last survivor sees a killed node dead, over ``trials`` crashes."""
    out = []
    for seed in range(trials):
        sim = SimCluster(config, seed=seed)
        sim.bootstrap(n)
        sim.run_for(3.0 + (seed % 10) / 10)            # crash at different phases
        t0 = sim.now
        sim.crash("n0")
        assert sim.run_until(lambda: sim.seen_by_all("n0", DEAD), timeout=20.0)
        out.append(max(sim.when_seen("n0", DEAD, t0)))
    return sorted(out)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_lan_profile_detects_a_killed_node_within_the_target(n: int) -> None:
    times = crash_distribution(n, trials=100)
    median, worst = statistics.median(times), max(times)
    print(f"\nLAN, {n} nodes, 100 crashes: seen dead by all after median {median:.2f} s, "
          f"p90 {times[89]:.2f} s, worst {worst:.2f} s")
    assert median < 2.0 and worst < 4.0


def main() -> None:
    global _ROW_PREFIX
    _ROW_PREFIX = ""
    print("Crash detection on the LAN profile (seen dead by every survivor), 300 crashes each:\n")
    print("| nodes | median | p90 | p99 | worst |\n|---|---|---|---|---|")
    for n in (3, 5, 10, 30):
        t = crash_distribution(n, trials=300)
        print(f"| {n} | {statistics.median(t):.2f} s | {t[269]:.2f} s | {t[296]:.2f} s | {t[-1]:.2f} s |")
    print(f"\nMeshes on the LAN profile; traffic over {WINDOW:.0f} simulated s of steady state "
          f"({CHURN_WINDOW:.0f} s with load churn):\n")
    print(HEADER)
    for churn in (False, True):
        for n in (10, 100, 1000):
            measure(n, churn)


if __name__ == "__main__":
    main()
