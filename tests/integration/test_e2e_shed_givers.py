"""Two nodes shedding to one peer at once (real processes): the peer gossips what it
took from each giver (``took_from``, mesh/node/shedding.py), so each giver counts its own
tasks until the peer's load shows them, not until the peer's count of every giver's
has grown. (Whether a giver overshoots depends on the order of a report and a shed
arriving: tests/unit/test_shedding_givers.py makes that order; here the counts are
checked as every node sees them.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import NodeFactory, NodeProc, wait_until
from test_e2e_handoff import form_mesh, nodes_of, results, submit_and_exit


def _meta_of(viewer: NodeProc, member: str) -> dict[str, Any]:
    reply = viewer.request("members")
    return next((m["meta"] for m in reply.payload or [] if m["node"] == member), {})


def test_a_peer_two_nodes_shed_to_gossips_what_it_took_from_each(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    # a and c, one child each, five gated tasks each (sent while each is alone); b, four
    # idle children, joins both: each sheds to b (3 or 4: by b's load in its view),
    # b gossips how many from each, its own view and theirs the same
    gate = tmp_path / "gate"
    wait = ("tasks_app.wait_for_file", [str(gate)], {})
    a = start_node(name="a", concurrency=1, profile="test")
    c = start_node(name="c", concurrency=1, profile="test")
    ids = submit_and_exit([a], [wait] * 5) + submit_and_exit([c], [wait] * 5)
    wait_until(lambda: a.status()["queued"] == 4 and c.status()["queued"] == 4,
               what="one running on a and on c, four queued each")
    b = start_node(name="b", concurrency=4, peers=f"{a.endpoint},{c.endpoint}", profile="test")
    form_mesh(a, b, c)
    wait_until(lambda: a.status()["handed_off"] and c.status()["handed_off"],
               what="a and c to shed to b")

    took: dict[str, int] = {}

    def counted() -> bool:
        nonlocal took
        took = _meta_of(b, "b").get("took_from") or {}
        return set(took) == {"a", "c"} and sum(took.values()) == b.status()["taken_from_peers"] \
            and all(_meta_of(v, "b").get("took_from") == took for v in (a, c))
    wait_until(counted, what="b's count of each giver's tasks, in a's and c's views too")
    # (a and c may also shed to each other, once one sees the other emptier)
    assert 0 < took["a"] <= a.status()["handed_off"] and 0 < took["c"] <= c.status()["handed_off"]
    gate.touch()
    reader = make_client(b)
    assert results(reader, ids) == ["opened"] * 10
    assert set(nodes_of(reader, ids)) <= {"a", "b", "c"}
