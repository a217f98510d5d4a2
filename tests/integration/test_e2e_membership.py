"""The mesh on loopback, with real nodes: membership through one seed, failure
detection (kill -9 -> dead, SIGTERM -> left), mDNS-only discovery, and clients that
learn every node from one seed and place work where there is room."""
from __future__ import annotations

import collections
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import tasks_app
from harness import (
    MESHNODE,
    ROOT,
    ClientHandle,
    NodeFactory,
    NodeProc,
    clean_env,
    free_port,
    wait_until,
)

from mesh.client.control import ControlClient
from mesh.wire.protocol import ControlReply


def members(node: NodeProc) -> dict[str, str]:
    """node id -> state, as ``node`` sees the mesh."""
    reply = node.request("members")
    assert isinstance(reply, ControlReply) and reply.ok, reply
    return {m["node"]: m["state"] for m in reply.payload}


def sees(observer: NodeProc, expected: dict[str, str]) -> Callable[[], bool]:
    return lambda: all(members(observer).get(k) == v for k, v in expected.items())


def test_three_nodes_join_through_one_seed(start_node: NodeFactory) -> None:
    a = start_node(profile="test", concurrency=1)
    b = start_node(profile="test", concurrency=1, peers=a.endpoint)
    c = start_node(profile="test", concurrency=1, peers=a.endpoint)
    everyone = {a.name: "alive", b.name: "alive", c.name: "alive"}
    for n in (a, b, c):       # b and c only knew a: they learn each other through it
        wait_until(sees(n, everyone), timeout=20, what=f"{n.name} to see all three alive")


def test_a_node_whose_seeds_never_answer_says_so(start_node: NodeFactory) -> None:
    nobody = f"tcp://127.0.0.1:{free_port()}"          # a mistyped seed: nothing there
    a = start_node(profile="test", concurrency=1)
    b = start_node(profile="test", concurrency=1, peers=f"{a.endpoint},{nobody}")
    lone = start_node(profile="test", concurrency=1, peers=nobody)
    # a seed that answered and then left before the check is no mistyped seed (CI saw
    # the warning on a node whose only peer had stopped a second after they met); c and
    # d start with the others, so that c's check (4 s after its start) and lone's overlap
    d = start_node(profile="test", concurrency=1)
    c = start_node(profile="test", concurrency=1, peers=d.endpoint)
    wait_until(sees(c, {d.name: "alive"}), timeout=20, what="c to see d")
    d.send_signal(signal.SIGTERM)        # d leaves at once, before c's check
    wait_until(sees(c, {d.name: "left"}), timeout=20, what="c to see d leave")
    said = "no other node has answered in 4 s: check the seeds"
    wait_until(lambda: said in lone.stderr(), timeout=20, what="the lone node to warn")
    assert nobody in lone.stderr()
    wait_until(sees(b, {a.name: "alive", b.name: "alive"}), timeout=20, what="b to see a")
    assert said not in b.stderr()        # one seed answered: no warning
    wait_until(lambda: float(c.status()["uptime"]) > 5.0, timeout=30, interval=0.2,
               what="c to be up past its seed check (4 s after its start)")
    assert "no other node has answered" not in c.stderr(), c.stderr()


def test_a_node_whose_seeds_name_itself_ignores_them_quietly(tmp_path: Path) -> None:
    """One config file copied to every machine lists each machine's own address among
    the seeds: a node whose only seed was itself warned "no other node has answered
    ... check the seeds" (a new user, session 16). Its own address, however spelt, is
    no seed: one INFO line, no warning; its other seeds are still warned about."""
    nobody = f"tcp://127.0.0.1:{free_port()}"
    # both nodes at once, each on its own port: their seed checks (4 s) overlap
    ports = {warned: free_port() for warned in (False, True)}
    procs: dict[bool, subprocess.Popen[bytes]] = {}
    cc = ControlClient()
    try:
        for warned, port in ports.items():
            seeds = (f"tcp://127.0.0.1:{port},tcp://localhost:{port}" if not warned
                     else f"tcp://localhost:{port},{nobody}")
            with open(tmp_path / f"node-{warned}.stderr", "wb") as f:
                procs[warned] = subprocess.Popen(
                    [MESHNODE, "--app", "tasks_app", "--bind", f"tcp://127.0.0.1:{port}",
                     "--no-mdns", "--concurrency", "1", "--profile", "test", "--peers", seeds,
                     "--name", f"self-seed-{warned}", "--data-dir", str(tmp_path / f"data-{warned}")],
                    stdout=f, stderr=f, stdin=subprocess.DEVNULL, env=clean_env(), cwd=ROOT)
        for warned, port in ports.items():
            ep = f"tcp://127.0.0.1:{port}"

            def uptime() -> float:
                r = cc.broadcast([ep], "status", timeout=1.0)[ep]
                return float(r.payload["uptime"]) if isinstance(r, ControlReply) else 0.0
            wait_until(lambda: uptime() > 5.0, 30, "the node to be up past its seed check (4 s)",
                       interval=0.2)
            text = (tmp_path / f"node-{warned}.stderr").read_text()
            assert f"seed tcp://localhost:{port}: this node's own address, not used as a seed" \
                in text or f"seeds tcp://127.0.0.1:{port}, tcp://localhost:{port}: this node's " \
                "own address, not used as a seed" in text, text
            assert ("no other node has answered" in text) == warned, text
            if warned:
                assert f"check the seeds (--peers, MESH_PEERS) {nobody} (" in text, text
    finally:
        cc.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            assert proc.wait(30) == 0


def test_killed_node_is_dead_and_stopped_node_has_left(start_node: NodeFactory) -> None:
    a = start_node(profile="test", concurrency=1)
    b = start_node(profile="test", concurrency=1, peers=a.endpoint)
    c = start_node(profile="test", concurrency=1, peers=a.endpoint)
    wait_until(sees(a, {b.name: "alive", c.name: "alive"}), timeout=20, what="a full mesh")
    wait_until(sees(b, {c.name: "alive"}), timeout=20, what="b to see c")

    c.send_signal(signal.SIGKILL)
    for n in (a, b):
        wait_until(sees(n, {c.name: "dead"}), timeout=20, what=f"{n.name} to see c dead")

    b.send_signal(signal.SIGTERM)
    wait_until(sees(a, {b.name: "left"}), timeout=10, what="a to see b leave")
    assert b.wait(timeout=30) == 0


@pytest.mark.mdns
def test_mdns_alone_makes_a_mesh(start_node: NodeFactory) -> None:
    nodes = [start_node(profile="test", concurrency=1, mdns=True) for _ in range(3)]
    everyone = {n.name: "alive" for n in nodes}
    for n in nodes:
        wait_until(sees(n, everyone), timeout=30, what=f"{n.name} to find the others by mDNS")


def test_client_with_one_seed_uses_every_node(start_node: NodeFactory,
                                              make_client: Callable[..., ClientHandle]) -> None:
    a = start_node(profile="test", concurrency=1)
    b = start_node(profile="test", concurrency=1, peers=a.endpoint)
    c = start_node(profile="test", concurrency=1, peers=a.endpoint)
    wait_until(sees(a, {b.name: "alive", c.name: "alive"}), timeout=20, what="a full mesh")
    client = make_client(a)                  # knows only a
    seen: collections.Counter[str] = collections.Counter()

    def all_used() -> bool:
        rs = [client.tasks.add.delay(i, 1) for i in range(30)]
        for i, r in enumerate(rs):
            assert r.get(timeout=30) == i + 1
            seen[r.node or ""] += 1
        return {a.name, b.name, c.name} <= set(seen)
    wait_until(all_used, timeout=30, what="tasks to run on all three nodes")


def test_new_work_goes_to_the_idle_node(start_node: NodeFactory, tmp_path: Path,
                                        make_client: Callable[..., ClientHandle]) -> None:
    a = start_node(profile="test", concurrency=1)
    b = start_node(profile="test", concurrency=1, peers=a.endpoint)
    wait_until(sees(a, {b.name: "alive"}), timeout=20, what="the two nodes to meet")
    client = make_client(a, b)
    gate = tmp_path / "gate"
    blocker = client.app.send_task(tasks_app.wait_for_file.name, args=(str(gate),))
    wait_until(lambda: a.status()["busy"] + b.status()["busy"] == 1, timeout=20,
               what="one node busy with the gated task")
    blocked, free = (a, b) if a.status()["busy"] == 1 else (b, a)

    # one at a time: each new task goes to the node with room
    for i in range(10):
        r = client.tasks.add.delay(i, i)
        assert r.get(timeout=30) == 2 * i
        assert r.node == free.name

    # a burst: some land behind the blocked task, and the blocked node sheds them to
    # the free one; every task finishes while the gate is still closed
    rs = [client.tasks.add.delay(i, 1) for i in range(40)]
    assert [r.get(timeout=30) for r in rs] == [i + 1 for i in range(40)]
    assert {r.node for r in rs} == {free.name}
    assert not blocker.ready()
    gate.write_text("open")
    assert blocker.get(timeout=60) == "opened"
