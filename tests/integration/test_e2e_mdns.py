"""mDNS on loopback with real nodes: a client and meshctl with no peers find the mesh."""
from __future__ import annotations

import json
import os

import pytest
import tasks_app
from harness import MESHCTL, NodeFactory, clean_env, run_program, wait_until

from mesh import Mesh

pytestmark = pytest.mark.mdns


def test_client_without_peers_finds_a_node_by_mdns(start_node: NodeFactory) -> None:
    node = start_node(mdns=True, name="mdns-it-node")
    env = clean_env()
    old = {k: os.environ.get(k) for k in ("MESH_PEERS", "MESH_MDNS_INTERFACES")}
    os.environ.pop("MESH_PEERS", None)
    os.environ["MESH_MDNS_INTERFACES"] = env["MESH_MDNS_INTERFACES"]
    try:
        app = Mesh(tasks_app.app.main, discovery_timeout=10)   # mDNS finds its own mesh's nodes
        try:
            r = app.send_task(tasks_app.add.name, args=(20, 22))
            assert r.get(timeout=30) == 42
            assert r.node == node.name
        finally:
            app.close()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_meshctl_without_peers_finds_a_node_by_mdns(start_node: NodeFactory) -> None:
    node = start_node(mdns=True, name="mdns-it-ctl")
    # --mesh: only this test's mesh (another mesh on the machine's loopback, such as a
    # demo left running, answered first and meshctl settled on it)
    p = run_program(MESHCTL, "--timeout", "5", "--mesh", "mesh-it", "--json", "ping")
    assert p.returncode == 0, p
    assert node.endpoint in json.loads(p.stdout)


def test_meshctl_says_when_mdns_found_more_than_one_mesh(start_node: NodeFactory) -> None:
    ours = start_node(mdns=True, name="mdns-it-one")
    other = start_node(app="routing_app", mdns=True, name="mdns-it-other")
    for mesh, node in (("mesh-it", ours), ("routing-it", other)):    # both announced
        wait_until(lambda: node.endpoint in run_program(
            MESHCTL, "--timeout", "5", "--mesh", mesh, "--json", "ping").stdout, 60,
            f"mDNS to find {node.name}", interval=0.5)
    for _attempt in range(6):                # mDNS may settle before the second answers
        p = run_program(MESHCTL, "--timeout", "8", "--json", "ping")
        assert p.returncode == 0, p
        if {ours.endpoint, other.endpoint} <= set(json.loads(p.stdout)):
            break
    assert {ours.endpoint, other.endpoint} <= set(json.loads(p.stdout)), p
    said = p.stderr.split("meshes (", 1)[-1]          # (another mesh on the machine counts too)
    assert "'mesh-it'" in said and "'routing-it'" in said and "--mesh NAME picks one" in said, \
        p.stderr
    p = run_program(MESHCTL, "--timeout", "8", "--mesh", "routing-it", "--json", "ping")
    assert p.returncode == 0, p
    assert other.endpoint in json.loads(p.stdout) and ours.endpoint not in p.stdout
    assert "meshes" not in p.stderr, p.stderr
