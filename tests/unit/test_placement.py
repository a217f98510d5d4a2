"""Placement: power of two choices over alive nodes (mesh/placement.py)."""
from __future__ import annotations

import collections
import random

import pytest

from mesh.client.placement import NodeView, candidates, choose


def node(i: int, **kw: object) -> NodeView:
    return NodeView(node_id=f"n{i}", endpoint=f"tcp://10.0.0.{i}:7700", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("states,expected", [
    (["alive", "alive"], {"n0", "n1"}),
    (["alive", "suspect"], {"n0"}),
    (["dead", "left", "suspect"], set()),
    (["left", "alive", "dead"], {"n1"}),
])
def test_only_alive_nodes_are_candidates(states: list[str], expected: set[str]) -> None:
    nodes = [node(i, state=s) for i, s in enumerate(states)]
    assert {n.node_id for n in candidates(nodes)} == expected


def test_choose_returns_none_without_alive_nodes() -> None:
    assert choose([node(0, state="dead"), node(1, state="suspect")], random.Random(1)) is None
    assert choose([], random.Random(1)) is None


def test_avoid_is_skipped_unless_it_is_the_only_node() -> None:
    a, b = node(0), node(1)
    rng = random.Random(3)
    assert all(choose([a, b], rng, avoid=a.endpoint) is b for _ in range(50))
    assert choose([a], rng, avoid=a.endpoint) is a


@pytest.mark.parametrize("busy,total,queued,outstanding,score", [
    (0, 2, 0, 0, 0.0),
    (2, 2, 0, 0, 1.0),
    (2, 2, 4, 0, 3.0),
    (1, 4, 1, 2, 1.0),
    (0, 0, 3, 0, 3.0),          # a node reporting no children does not divide by zero
])
def test_score_is_load_per_child(busy: int, total: int, queued: int, outstanding: int,
                                 score: float) -> None:
    assert node(0, busy=busy, total=total, queued=queued, outstanding=outstanding).score == score


def test_idle_node_wins_over_busy_one_every_time() -> None:
    busy, idle = node(0, busy=2, total=2, queued=10), node(1, busy=0, total=2)
    rng = random.Random(7)
    assert all(choose([busy, idle], rng) is idle for _ in range(100))


def test_what_this_client_sent_counts_as_load() -> None:
    a, b = node(0, total=2), node(1, total=2, outstanding=5)
    assert all(choose([a, b], random.Random(i)) is a for i in range(20))


def test_bigger_node_wins_ties() -> None:
    small, big = node(0, total=1), node(1, total=8)
    assert all(choose([small, big], random.Random(i)) is big for i in range(20))


def test_the_most_loaded_node_of_many_never_gets_work_and_load_spreads() -> None:
    # with two choices, the single worst node can only win if sampled with itself,
    # which sample() never does; the rest share the work
    nodes = [node(i, busy=1, total=2) for i in range(5)] + [node(9, busy=2, total=2, queued=50)]
    rng = random.Random(11)
    counts = collections.Counter(choose(nodes, rng).node_id for _ in range(3000))  # type: ignore[union-attr]
    assert counts["n9"] == 0
    assert len(counts) == 5 and min(counts.values()) > 400


def test_a_tie_goes_to_the_node_with_more_free_children_in_either_order() -> None:
    big, small = node(0, busy=2, total=4), node(1, busy=1, total=2)     # both at 0.5
    assert big.score == small.score
    for seed in range(20):                 # whichever of the two is sampled first
        assert choose([big, small], random.Random(seed)) is big
        assert choose([small, big], random.Random(seed)) is big
