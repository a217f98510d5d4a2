"""A peer's gossiped shutdown timeout (its member meta ``"stop"``), on real meshnodes.

A node waits that long, plus LEFT_GRACE, for a peer that left before it takes over the
peer's tasks (mesh/node/takeover.py) or sends its periodic runs elsewhere
(mesh/node/beat_send.py). A peer saying 1e300 or inf (meshnode --shutdown-timeout
takes them) was waited for for ever, silently; now it is waited for STOP_MAX at most
(or this node's own timeout, if longer), said in one WARNING per peer.
"""
from __future__ import annotations

import math
import time

import pytest

from mesh.node.gossip import STOP_MAX, shutdown_timeout_of
from tests.integration.harness import NodeFactory, NodeProc, wait_until

PROFILE = "test"


def said_of(node: NodeProc, peer: str) -> list[str]:
    return [line for line in node.stderr().splitlines()
            if f"member {peer} says a shutdown timeout" in line]


def test_peers_saying_an_endless_shutdown_timeout_are_waited_for_a_bounded_time(
        start_node: NodeFactory) -> None:
    a = start_node(concurrency=1, profile=PROFILE, name="stop-a")
    b = start_node(concurrency=1, profile=PROFILE, name="stop-huge", peers=a.endpoint,
                   shutdown_timeout="1e300")
    c = start_node(concurrency=1, profile=PROFILE, name="stop-inf", peers=a.endpoint,
                   shutdown_timeout="inf")
    wait_until(lambda: a.alive_members() == {"stop-a", "stop-huge", "stop-inf"}, 30,
               "the mesh to form")
    for n in (b, c):
        assert n.stop() == 0, n.stderr_tail(20)        # they leave: a waits for their tasks
    wait_until(lambda: said_of(a, "stop-huge") and said_of(a, "stop-inf"), 30,
               "a to say what the peers that left said")
    time.sleep(2.0)                       # (a looks at the members that left every 0.1 s)
    for peer, said in (("stop-huge", "1e+300"), ("stop-inf", "inf")):
        lines = said_of(a, peer)
        assert len(lines) == 1 and " WARNING " in lines[0], a.stderr_tail(20)
        assert f"of {said} s: its tasks are waited for {STOP_MAX:g} s at most" in lines[0]


@pytest.mark.parametrize(("said", "own", "waited"), [
    (12.5, 30.0, 12.5), (0, 30.0, 0.0), (1e300, 30.0, STOP_MAX), (math.inf, 30.0, STOP_MAX),
    (1e300, 2 * STOP_MAX, 2 * STOP_MAX), (math.nan, 30.0, 30.0), (-1.0, 30.0, 30.0),
    ("600", 30.0, 30.0), (True, 30.0, 30.0), (None, 30.0, 30.0)])
def test_a_peers_shutdown_timeout_is_bounded(said: object, own: float, waited: float) -> None:
    meta = {} if said is None else {"stop": said}
    assert shutdown_timeout_of(meta, own, "peer") == waited
