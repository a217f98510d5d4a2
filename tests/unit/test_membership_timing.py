"""Membership timing maths (mesh/membership/timing.py) and profiles (profiles.py).

Table-driven: each row is (inputs, expected), worked out by hand from the formulas
in the docstrings (memberlist's util.go / suspicion.go / awareness.go).
"""
from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from mesh.exceptions import ConfigError
from mesh.membership import (
    LAN,
    LOCAL,
    PROFILES,
    TEST,
    MembershipConfig,
    profile,
    timing,
)


@pytest.mark.parametrize("n,expected", [
    (0, 1.0), (1, 1.0), (5, 1.0), (10, 1.0), (100, 2.0), (1000, 3.0), (31623, 4.5),
])
def test_node_scale(n: int, expected: float) -> None:
    assert timing.node_scale(n) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("mult,n,interval,expected", [
    (4, 1, 1.0, 4.0),          # memberlist LAN, one node: floored at log10 = 1
    (4, 10, 1.0, 4.0),
    (4, 100, 1.0, 8.0),
    (4, 1000, 1.0, 12.0),
    (3, 3, 0.3, 0.9),          # mesh LAN, 3 nodes
    (3, 1000, 0.3, 2.7),
    (4, 10, 0.2, 0.8),         # mesh TEST
    (2.5, 50, 0.5, 2.5 * math.log10(50) * 0.5),
])
def test_suspicion_timeout(mult: float, n: int, interval: float, expected: float) -> None:
    assert timing.suspicion_timeout(mult, n, interval) == pytest.approx(expected)


def test_suspicion_bounds() -> None:
    assert timing.suspicion_bounds(3, 3, 5, 0.3) == pytest.approx((0.9, 2.7))
    assert timing.suspicion_bounds(4, 6, 100, 1.0) == pytest.approx((8.0, 48.0))


@pytest.mark.parametrize("k,n,expected", [
    (1, 2, 0), (1, 3, 1), (2, 3, 0), (2, 4, 2), (3, 4, 0), (3, 5, 3), (0, 100, 0), (1, 1000, 1),
])
def test_expected_confirmations(k: int, n: int, expected: int) -> None:
    assert timing.expected_confirmations(k, n) == expected


# memberlist's TestSuspicion_remainingSuspicionTime table, plus rows for k < 1
@pytest.mark.parametrize("n,k,elapsed,lo,hi,expected", [
    (0, 3, 0.0, 2.0, 30.0, 30.0),
    (1, 3, 2.0, 2.0, 30.0, 14.0),
    (2, 3, 3.0, 2.0, 30.0, 4.810),
    (3, 3, 4.0, 2.0, 30.0, -2.0),
    (4, 3, 5.0, 2.0, 30.0, -3.0),
    (5, 3, 10.0, 2.0, 30.0, -8.0),
    (0, 0, 0.0, 2.0, 30.0, 2.0),       # no confirmations expected: the minimum at once
    (0, 0, 0.5, 2.0, 30.0, 1.5),
    (0, 1, 0.0, 0.9, 2.7, 2.7),        # mesh LAN
    (1, 1, 0.25, 0.9, 2.7, 0.65),
])
def test_remaining_suspicion_time(n: int, k: int, elapsed: float, lo: float, hi: float,
                                  expected: float) -> None:
    assert timing.remaining_suspicion_time(n, k, elapsed, lo, hi) == pytest.approx(expected, abs=1e-9)


def test_remaining_suspicion_time_falls_monotonically_with_confirmations() -> None:
    times = [timing.remaining_suspicion_time(c, 5, 0.0, 1.0, 10.0) for c in range(8)]
    assert times == sorted(times, reverse=True)
    assert times[0] == 10.0 and times[5] == times[7] == 1.0


@pytest.mark.parametrize("mult,n,expected", [
    (4, 0, 0), (4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 99, 8), (4, 100, 12), (4, 1000, 16),
    (2, 3, 2), (3, 10000, 15),
])
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    assert timing.retransmit_limit(mult, n) == expected


@pytest.mark.parametrize("seconds,score,expected", [
    (0.3, 0, 0.3), (0.3, 1, 0.6), (0.15, 7, 1.2), (1.0, 3, 4.0),
])
def test_scale_by_awareness(seconds: float, score: int, expected: float) -> None:
    assert timing.scale_by_awareness(seconds, score) == pytest.approx(expected)


@pytest.mark.parametrize("score,delta,max_mult,expected", [
    (0, -1, 8, 0), (0, 1, 8, 1), (0, 3, 8, 3), (6, 3, 8, 7), (7, 1, 8, 7), (7, -1, 8, 6),
    (3, -10, 8, 0), (0, 5, 1, 0),     # max_mult 1: awareness off
])
def test_apply_awareness_delta(score: int, delta: int, max_mult: int, expected: int) -> None:
    assert timing.apply_awareness_delta(score, delta, max_mult) == expected


@pytest.mark.parametrize("n,expected", [
    (1, 30.0), (32, 30.0), (33, 30.0 * 33 / 32), (64, 60.0), (1000, 30.0 * 1000 / 32),
])
def test_push_pull_interval(n: int, expected: float) -> None:
    assert timing.push_pull_interval(30.0, n) == pytest.approx(expected)


def test_push_pull_bytes_per_node_stay_flat_above_the_threshold() -> None:
    # bytes/s one node sends in push-pulls ~ n (state size) / interval(n): constant
    per_node = [n / timing.push_pull_interval(30.0, n) for n in (32, 100, 1000, 10000)]
    assert max(per_node) == pytest.approx(min(per_node))


# ---- profiles ------------------------------------------------------------------------

def test_profile_lookup() -> None:
    assert profile("lan") is LAN and profile("LAN") is LAN
    assert profile("local") is LOCAL and profile("test") is TEST
    assert set(PROFILES) == {"lan", "local", "test"}
    assert MembershipConfig() == LAN


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown membership profile 'wan'.*lan, local, test"):
        profile("wan")


def test_every_config_field_is_commented() -> None:
    source = inspect.getsource(MembershipConfig)
    for f in dataclasses.fields(MembershipConfig):
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"field {f.name} has no comment"


def test_lan_timing_budget_meets_the_target() -> None:
    # A killed node among up to 10: someone probes it within about one interval,
    # the probe round takes one more, then the minimum suspicion timeout (one
    # confirmation brings it there), then a few gossip hops. docs/membership.md has
    # the simulated distribution; this is the arithmetic the profile was chosen by.
    lo, hi = timing.suspicion_bounds(LAN.suspicion_mult, LAN.suspicion_max_timeout_mult, 10,
                                     LAN.probe_interval)
    typical = LAN.probe_interval / 2 + LAN.probe_interval + lo + LAN.gossip_interval
    worst = 3 * LAN.probe_interval + LAN.probe_interval + lo + 3 * LAN.gossip_interval
    assert typical < 2.0 and worst < 4.0
    # and a peer gets at least 1.2 s to answer before anyone can call it dead
    assert LAN.probe_interval + lo >= 1.2


@pytest.mark.parametrize("cfg", [LAN, LOCAL, TEST], ids=["lan", "local", "test"])
def test_profiles_keep_room_for_indirect_probes(cfg: MembershipConfig) -> None:
    assert cfg.probe_timeout < cfg.probe_interval
    assert cfg.indirect_checks >= 1 and cfg.awareness_max_multiplier > 1


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(probe_interval=0), "probe_interval must be > 0"),
    (dict(probe_timeout=-1), "probe_timeout must be > 0"),
    (dict(probe_timeout=0.5, probe_interval=0.5), "must be shorter than probe_interval"),
    (dict(gossip_fanout=0), "gossip_fanout must be an int >= 1"),
    (dict(indirect_checks=-1), "indirect_checks"),
    (dict(max_piggyback=2.5), "max_piggyback"),
    (dict(suspicion_max_timeout_mult=0.5), "suspicion_max_timeout_mult"),
    (dict(dead_node_reclaim=-1), "dead_node_reclaim must be >= 0"),
    (dict(reconnect_interval=-1), "reconnect_interval must be >= 0"),
    (dict(probe_interval=float("nan")), "must be a number"),
    (dict(gossip_interval=True), "must be a number"),
    (dict(gossip_interval="0.2"), "must be a number"),
])
def test_bad_config_values_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        dataclasses.replace(LAN, **kwargs)  # type: ignore[arg-type]


def test_zero_disables_optional_timers() -> None:
    cfg = dataclasses.replace(LAN, indirect_checks=0, suspicion_confirmations=0,
                              reconnect_interval=0, meta_refresh_interval=0, dead_node_reclaim=0)
    assert cfg.indirect_checks == 0
