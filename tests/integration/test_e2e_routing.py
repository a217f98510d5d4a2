"""Routing with real meshnode processes: two apps on one LAN found by mDNS never meet,
tasks go to the nodes serving their queues (option, task_routes globs, call), a task
goes to the one node that has it and NotRegistered comes only when none has, a node of
another mesh named in --peers is refused with a clear error, and a mesh-wide rate
limit holds across three nodes. The pure parts: tests/unit/test_routing.py; the same
logic in-process: tests/unit/test_routing_node.py."""
from __future__ import annotations

import collections
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import routing_app
from harness import MESHCTL, NodeFactory, NodeProc, clean_env, run_program, wait_until

from mesh import Mesh
from mesh.exceptions import MeshError, NotRegistered
from mesh.exceptions import TimeoutError as MeshTimeoutError
from mesh.wire import codec
from mesh.wire.protocol import Error, Submit, decode, encode

RESULT_TIMEOUT = 60.0


def _members(node: NodeProc) -> dict[str, str]:
    reply = node.request("members")
    assert not isinstance(reply, str) and reply.ok, reply
    return {m["node"]: m["state"] for m in reply.payload}


def _alive(node: NodeProc) -> set[str]:
    return {n for n, state in _members(node).items() if state == "alive"}


def _client(app_module: Any, nodes: list[NodeProc]) -> Mesh:
    """A client app of the module's mesh, with its routes, pointed at ``nodes``."""
    src = app_module.app
    c = Mesh(src.main, peers=[n.endpoint for n in nodes], mdns=False)
    c.conf.task_routes = src.conf.task_routes
    return c


# ---- two apps on one LAN ---------------------------------------------------------------

@pytest.fixture
def lan(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This run's suffix of the two LAN meshes' names (nodes inherit it), and the client's
    mDNS on loopback only."""
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setenv("ROUTING_IT_LAN", suffix)
    monkeypatch.delenv("MESH_PEERS", raising=False)
    monkeypatch.setenv("MESH_MDNS_INTERFACES", clean_env()["MESH_MDNS_INTERFACES"])
    yield suffix


@pytest.mark.mdns
def test_two_apps_on_one_lan_never_meet(start_node: NodeFactory, lan: str) -> None:
    a = start_node(app="lan_a", mdns=True, name=f"lan-a1-{lan}", concurrency=1)
    b1 = start_node(app="lan_b", mdns=True, name=f"lan-b1-{lan}", concurrency=1)
    b2 = start_node(app="lan_b", mdns=True, name=f"lan-b2-{lan}", concurrency=1)
    wait_until(lambda: _alive(b1) == {b1.name, b2.name} == _alive(b2), 30,
               "lan_b's two nodes to find each other by mDNS")
    wait_until(lambda: "ignoring node" in a.stderr() and "ignoring node" in b1.stderr(), 30,
               "each mesh to hear of the other on mDNS, and ignore it")
    for name, only, nodes in (("b", "lan.only_b", {b1.name, b2.name}),
                              ("a", "lan.only_a", {a.name})):
        client = Mesh(f"routing-it-lan-{name}-{lan}", discovery_timeout=10)   # no peers: mDNS
        try:
            rs = [client.send_task("lan.add", args=(i, i)) for i in range(40)]
            rs += [client.send_task(only, args=(i,)) for i in range(10)]
            values = [r.get(timeout=RESULT_TIMEOUT) for r in rs]
            assert all(v[0] == name for v in values), values
            assert {r.node for r in rs} <= nodes
            assert client.client.mesh == f"routing-it-lan-{name}-{lan}"
            assert all(link.node_id in nodes for link in client.client.links.values())
            other = "lan.only_a" if name == "b" else "lan.only_b"
            with pytest.raises(NotRegistered, match="not registered on any alive node"):
                client.send_task(other, args=(1,)).get(timeout=RESULT_TIMEOUT)
        finally:
            client.close()
    # neither mesh ever listed the other's nodes, through mDNS or gossip
    assert set(_members(a)) == {a.name}
    assert set(_members(b1)) == set(_members(b2)) == {b1.name, b2.name}


# ---- queues -----------------------------------------------------------------------------

@pytest.fixture
def three(start_node: NodeFactory) -> dict[str, NodeProc]:
    """Three nodes of one mesh serving different queues."""
    n1 = start_node(app="routing_app", name="q-default", queues="celery")
    n2 = start_node(app="routing_app", name="q-reports", queues="reports",
                    peers=n1.endpoint)
    n3 = start_node(app="routing_app", name="q-media", queues="media,celery",
                    peers=n1.endpoint)
    names = {n1.name, n2.name, n3.name}
    for n in (n1, n2, n3):
        wait_until(lambda n=n: _alive(n) == names, 30, f"{n.name} to see all three")
    return {"default": n1, "reports": n2, "media": n3}


def test_tasks_go_to_nodes_serving_their_queue(three: dict[str, NodeProc]) -> None:
    n1, n2, n3 = three["default"], three["reports"], three["media"]
    c = _client(routing_app, [n1])                  # one seed: the rest through membership
    try:
        calls = {
            "default queue": ([c.send_task("routing_app.where") for _ in range(30)],
                              {n1.name, n3.name}),
            "task_routes glob": ([c.send_task("routing_app.report_daily") for _ in range(15)],
                                 {n2.name}),
            "call's queue": ([c.send_task("routing_app.where", queue="reports")
                              for _ in range(15)], {n2.name}),
            "call's queue, two nodes": ([c.send_task("routing_app.transcode", queue="media")
                                         for _ in range(15)], {n3.name}),
        }
        for what, (rs, allowed) in calls.items():
            ran_on = {r.get(timeout=RESULT_TIMEOUT) for r in rs}
            assert ran_on <= allowed and ran_on == {r.node for r in rs}, (what, ran_on)
        # once the client has heard of every node, both that serve the default queue get some
        wait_until(lambda: sum(1 for link in c.client.links.values() if link.serves) >= 3, 30,
                   "the client to hear what each node serves")
        rs = [c.send_task("routing_app.where") for _ in range(30)]
        assert {r.get(timeout=RESULT_TIMEOUT) for r in rs} == {n1.name, n3.name}
        with pytest.raises(MeshError, match="serving queue 'nowhere'") as info:
            c.send_task("routing_app.where", queue="nowhere").get(timeout=RESULT_TIMEOUT)
        assert "q-reports serves queue(s) reports" in str(info.value)
    finally:
        c.close()


def test_the_task_option_queue_routes_it_from_its_own_app(three: dict[str, NodeProc]) -> None:
    c = _client(routing_app, [three["default"]])
    try:
        transcode = c.task(name="routing_app.transcode", bind=True, queue="media")(
            routing_app.transcode.fun)
        rs = [transcode.delay() for _ in range(10)]
        assert {r.get(timeout=RESULT_TIMEOUT) for r in rs} == {three["media"].name}
        r = transcode.apply_async(queue="reports")          # the call's queue wins
        assert r.get(timeout=RESULT_TIMEOUT) == three["reports"].name
    finally:
        c.close()


def test_a_node_refuses_a_task_for_a_queue_it_does_not_serve(
        three: dict[str, NodeProc], raw_dealer: Any) -> None:
    node = three["reports"]
    s = raw_dealer(node.endpoint)
    for tid, headers in (("r-1", {"queue": "celery"}), ("r-2", {})):   # no header: its routes
        s.send(encode(Submit(task_id=tid, name="routing_app.where",
                             payload=codec.dump_call((), None), headers=headers)))
    got = {}
    while len(got) < 2:
        assert s.poll(10_000), "no answer from the node"
        msg = decode(s.recv())
        if isinstance(msg, Error):
            got[msg.ref] = msg
    assert {m.code for m in got.values()} == {"queue"}
    assert "does not serve queue 'celery' (it serves reports)" in got["r-1"].message
    assert node.status()["queues"] == ["reports"]


def test_meshctl_status_shows_each_nodes_queues(three: dict[str, NodeProc]) -> None:
    p = run_program(MESHCTL, "--peers", three["default"].endpoint, "--json", "status")
    assert p.returncode == 0, p
    rows = {r["node"]: r for r in json.loads(p.stdout)}
    assert {n: rows[n]["queues"] for n in rows} == {
        "q-default": ["celery"], "q-reports": ["reports"], "q-media": ["celery", "media"]}
    assert {r["mesh"] for r in rows.values()} == {"routing-it"}
    p = run_program(MESHCTL, "--peers", three["default"].endpoint, "status")
    assert p.returncode == 0, p
    header, *lines = p.stdout.strip().splitlines()
    assert header.split()[:6] == ["NODE", "ADDRESS", "STATE", "MESH", "QUEUES", "KIND"]
    cells = {line.split()[0]: line.split() for line in lines if line.startswith("q-")}
    assert cells["q-media"][4] == "celery,media" and cells["q-reports"][4] == "reports"
    assert cells["q-media"][5:7] == ["prefork", "2"]


def test_a_task_for_a_queue_whose_node_restarts_waits_for_it(start_node: NodeFactory) -> None:
    """The only node serving a queue is down (left, restarting): a task for that queue
    waits for it, rather than failing at once, and runs when it is back."""
    n1 = start_node(app="routing_app", name="w-default", queues="celery")
    n2 = start_node(app="routing_app", name="w-reports", queues="reports", peers=n1.endpoint)
    c = _client(routing_app, [n1])
    try:
        assert c.send_task("routing_app.report_daily").get(timeout=RESULT_TIMEOUT) == n2.name
        n2.stop()
        wait_until(lambda: c.client.links[n2.endpoint].state != "alive", 30,
                   "the client to learn that w-reports is gone")
        r = c.send_task("routing_app.report_daily")
        with pytest.raises(MeshTimeoutError):       # not failed: waiting for a node of its queue
            r.get(timeout=1.5)
        start_node.restart(n2)
        assert r.get(timeout=RESULT_TIMEOUT) == n2.name
    finally:
        c.close()


# ---- NotRegistered only when no node has the task ----------------------------------------

def test_a_task_only_one_node_has_runs_there_and_not_registered_needs_all(
        start_node: NodeFactory) -> None:
    plain = start_node(name="nr-plain")
    extra = start_node(app="routing_extra_app", name="nr-extra", peers=plain.endpoint)
    wait_until(lambda: _alive(plain) == {plain.name, extra.name}, 30, "the two nodes to meet")
    # the client knows only the node without the task: its first sends are refused there
    c = Mesh("mesh-it", peers=[plain.endpoint], mdns=False)
    try:
        rs = [c.send_task("extra.only_here", args=(i,)) for i in range(20)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == [[extra.name, i] for i in range(20)]
        assert c.send_task("tasks_app.add", args=(1, 2)).get(timeout=RESULT_TIMEOUT) == 3
        with pytest.raises(NotRegistered) as info:
            c.send_task("tasks_app.no_such_task").get(timeout=RESULT_TIMEOUT)
        text = str(info.value)
        assert "not registered on any alive node of mesh 'mesh-it'" in text
        assert "nr-plain has no task" in text and "nr-extra has no task" in text
    finally:
        c.close()


# ---- meshes are named ---------------------------------------------------------------------

def test_peers_naming_a_node_of_another_mesh_is_a_clear_error(start_node: NodeFactory) -> None:
    theirs = start_node(name="mesh-it-node")                         # mesh "mesh-it"
    ours = start_node(app="routing_app", name="routing-it-node", peers=theirs.endpoint)
    wait_until(lambda: "cannot join node mesh-it-node" in ours.stderr(), 30,
               "the node given a seed of another mesh to say so")
    assert "belongs to mesh 'mesh-it', this node to mesh 'routing-it'" in ours.stderr()
    wait_until(lambda: "refused a join from node routing-it-node" in theirs.stderr(), 30,
               "the seed to refuse the join")
    assert set(_members(ours)) == {ours.name} and set(_members(theirs)) == {theirs.name}


# ---- a mesh-wide rate limit ----------------------------------------------------------------

def _rate_run(start_node: NodeFactory, seconds: float) -> None:
    """Three nodes run ``limited`` (15/s for the whole mesh) for about ``seconds``: no
    second sees more starts than the limit (plus one per node: each bucket holds one
    token), and the mesh as a whole keeps close to it."""
    rate = routing_app.MESH_RATE
    nodes = [start_node(app="routing_app", name="rl-0", concurrency=2)]
    nodes += [start_node(app="routing_app", name=f"rl-{i}", concurrency=2,
                         peers=nodes[0].endpoint) for i in (1, 2)]
    for n in nodes:
        wait_until(lambda n=n: n.status()["mesh_rate_limits"]["routing_app.limited"]["nodes"] == 3,
                   30, f"{n.name} to share the limit three ways")
    assert nodes[0].status()["mesh_rate_limits"]["routing_app.limited"]["share"] == \
        pytest.approx(rate / 3)
    c = _client(routing_app, nodes)
    try:
        count = int(rate * seconds)
        rs = [c.send_task("routing_app.limited") for _ in range(count)]
        starts = sorted(r.get(timeout=seconds * 3 + RESULT_TIMEOUT) for r in rs)
        placed = collections.Counter(r.node for r in rs)
        assert len(placed) == 3
    finally:
        c.close()
    per_second = collections.Counter(int(t - starts[0]) for t in starts)
    worst = max(per_second.values())
    span = starts[-1] - starts[0]
    print(f"mesh-wide limit {rate:g}/s over 3 nodes: {count} starts in {span:.1f} s "
          f"({(count - 1) / span:.2f}/s), busiest second {worst}, placed {dict(placed)}")
    assert worst <= rate + len(nodes), per_second
    assert (count - len(nodes)) / span <= rate * 1.05, span        # the limit held overall
    # ... and was used: each node starts its tasks at its share (rate / 3), so the run
    # lasts as long as the node given the most takes (the client places by load, and a
    # share is not lent to a node with more: mesh/node/limits.py)
    fair_span = (max(placed.values()) - 1) / (rate / len(nodes))
    assert span <= fair_span / 0.7, (span, fair_span, dict(placed))


def test_a_mesh_wide_rate_limit_holds_across_three_nodes(start_node: NodeFactory) -> None:
    # ten one-second windows (150 starts); the minute-long run below is the soak
    _rate_run(start_node, 10.0)


@pytest.mark.slow
def test_a_mesh_wide_rate_limit_holds_for_a_minute(start_node: NodeFactory) -> None:
    _rate_run(start_node, 60.0)


@pytest.mark.mdns
def test_the_mdns_client_of_another_mesh_is_not_used(start_node: NodeFactory,
                                                      lan: str) -> None:
    """An app whose name matches no node finds none by mDNS: a clear error, not work
    sent to another app's nodes. It names the mesh looked for and the one found (a
    node runs an app of another name: it said only 'start a node that mDNS can find')."""
    start_node(app="lan_a", mdns=True, name=f"lan-alone-{lan}", concurrency=1)
    client = Mesh(f"routing-it-lan-nobody-{lan}", discovery_timeout=3)
    try:
        with pytest.raises(MeshError, match="no nodes to send tasks to") as e:
            client.send_task("lan.add", args=(1, 1))
        assert f"no node of mesh 'routing-it-lan-nobody-{lan}'" in str(e.value)
        assert "(only nodes of mesh" in str(e.value), e.value
        assert f"'routing-it-lan-a-{lan}'" in str(e.value), e.value
    finally:
        client.close()
