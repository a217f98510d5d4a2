"""The shedder's room arithmetic (mesh/node/shedding.py), without a node: a peer is sent
only as many tasks as leave it no more loaded per child than the giver, counting what
the giver sent it that its gossiped load does not show yet.

Session 18's rule gave a peer ``2*total - busy - queued``: two nodes of 2 children with
3 tasks each (all busy, one queued) each saw the other with room, and 6 tasks of 20 s
moved 14 times between them (tests/integration/test_e2e_handoff.py has the real run).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.membership import Member, MemberState
from mesh.node import shedding
from mesh.node.shedding import Shedder, fits, room


@pytest.mark.parametrize(("ours", "our_total", "theirs", "their_total", "n"), [
    (3, 2, 3, 2, 0),     # the report: both full, one queued each: nothing moves
    (3, 2, 2, 2, 0),     # all busy there, queue empty (the old rule: room for 2)
    (4, 2, 2, 2, 1),     # two queued here, none there: one each
    (6, 2, 0, 2, 3),     # all six sent to one node of two idle ones: three each
    (6, 2, 3, 2, 1),     # three there already: one moves (then 5 here, 4 there)
    (5, 1, 0, 1, 2),     # a stuck child's queue to an idle peer (tests/unit/test_node_inprocess)
    (100, 2, 0, 2, 4),   # a long backlog: at most twice its children per report
    (4, 1, 0, 4, 3),     # unequal pools: 1 task on 1 child here, 3 on 4 there
    (3, 2, 0, 0, 0),     # a peer with no children (or a lying meta)
])
def test_room_leaves_the_peer_no_more_loaded_than_us(ours: int, our_total: int, theirs: int,
                                                     their_total: int, n: int) -> None:
    assert room(ours, our_total, theirs, their_total) == n


loads = st.integers(0, 60)
pools = st.integers(1, 16)


@settings(max_examples=400, deadline=None)
@given(loads, pools, loads, pools)
def test_after_a_shed_nothing_goes_back(ours: int, our_total: int, theirs: int,
                                        their_total: int) -> None:
    """``room`` is the count of tasks ``fits`` lets go one after the other; after they
    moved the peer is no more loaded than we are, and by the same rule it sends none
    back (no ping-pong), nor would we send it more."""
    n = 0
    while fits(ours - n, our_total, theirs + n, their_total):
        n += 1
    assert room(ours, our_total, theirs, their_total) == n
    ours, theirs = ours - n, theirs + n
    if n:
        assert theirs * our_total <= ours * their_total
    assert room(theirs, their_total, ours, our_total) == 0 or n == 0
    assert room(ours, our_total, theirs, their_total) == 0


def member(meta: dict[str, Any], version: int) -> Member:
    return Member("b", "tcp://b", 0, MemberState.ALIVE, MappingProxyType(meta), version, 0.0)


def test_what_we_sent_counts_until_the_peers_took_shows_it() -> None:
    """A report made before our shed can reach us after it (gossip is a moment old): a
    fresh meta version alone does not mean the peer's load counts what we sent. (With
    the old rule, a new version reset the count: the giver sent more, and the peer
    sent them back.)"""
    s = Shedder()
    s.gave(member({"busy": 0, "queued": 0, "took": 5}, 7), 3, 100.0)
    assert s.unshown(member({"busy": 0, "queued": 0, "took": 5}, 7), 100.1) == 3
    assert s.unshown(member({"busy": 1, "queued": 0, "took": 5}, 8), 100.2) == 3   # older than our shed
    assert s.unshown(member({"busy": 2, "queued": 0, "took": 7}, 9), 100.3) == 1   # two shown
    s.refused("b", 1)                                     # the third was not taken
    assert s.unshown(member({"busy": 2, "queued": 0, "took": 7}, 9), 100.4) == 0
    assert "b" not in s._given


def test_from_a_peer_without_took_a_fresh_report_counts_what_we_sent() -> None:
    s = Shedder()
    s.gave(member({"busy": 0}, 7), 2, 100.0)
    assert s.unshown(member({"busy": 0}, 7), 100.5) == 2
    assert s.unshown(member({"busy": 2}, 8), 101.0) == 0


def test_what_a_peer_never_shows_is_forgotten_after_sent_ttl() -> None:
    """An answer lost (the handoff given up on, its tasks back here): the peer's took
    never grows by them; past SENT_TTL a fresh report is believed as it is."""
    s = Shedder()
    s.gave(member({"took": 0}, 1), 2, 100.0)
    assert s.unshown(member({"took": 0}, 2), 100.0 + shedding.SENT_TTL / 2) == 2
    assert s.unshown(member({"took": 0}, 2), 100.0 + shedding.SENT_TTL + 1) == 2   # no fresh report
    assert s.unshown(member({"took": 0}, 3), 100.0 + shedding.SENT_TTL + 1) == 0


def test_what_other_givers_sent_the_peer_does_not_show_ours() -> None:
    """Three nodes shed to b at once. b's ``took`` grows by what c and d sent it before
    ours arrives: counting from ``took``, a took that growth for its own tasks shown,
    saw b with room again and sent more (an overshoot). b says what it took from each
    giver (``took_from``): a's count there is a's tasks only."""
    s = Shedder()
    s.me = "a"
    s.gave(member({"busy": 0, "took": 0, "took_from": {}}, 7), 2, 100.0)
    # c's and d's tasks are in b's load; ours are not (on their way)
    seen = member({"busy": 4, "took": 4, "took_from": {"c": 2, "d": 2}}, 8)
    assert s.unshown(seen, 100.1) == 2
    assert s.unshown(member({"busy": 6, "took": 6, "took_from": {"c": 2, "d": 2, "a": 2}}, 9),
                     100.2) == 0


def test_a_count_of_ours_that_went_down_is_a_peer_that_restarted_or_forgot_us() -> None:
    """b restarted (its counts start again) or no longer lists us (past
    TOOK_FROM_MAX givers, or TOOK_FROM_KEEP after our last shed): its fresh report is
    believed as it is, as from a node without the count."""
    s = Shedder()
    s.me = "a"
    s.gave(member({"took_from": {"a": 5}}, 7), 2, 100.0)
    assert s.unshown(member({"took_from": {"a": 5}}, 7), 100.1) == 2
    assert s.unshown(member({"took_from": {}}, 8), 100.2) == 0


def test_a_peer_lists_the_latest_givers_it_took_from_and_forgets_old_ones() -> None:
    s = Shedder()
    for i in range(shedding.TOOK_FROM_MAX + 2):
        s.took(f"g{i}", ["t"] * (i + 1), 100.0 + i)
    s.took("g2", ["t"], 120.0)             # (the latest last: g0 and g1 were dropped)
    assert list(s.took_meta(121.0)) == [f"g{i}" for i in range(3, shedding.TOOK_FROM_MAX + 2)] + ["g2"]
    assert s.took_meta(121.0)["g2"] == 4
    assert s.took_meta(120.0 + shedding.TOOK_FROM_KEEP + 1) == {}
