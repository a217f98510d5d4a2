"""Three hosts in network namespaces, a real meshnode on each: status, tasks, a cut host,
a partition, loss, mDNS across the bridge, and a teardown that leaves nothing behind.
Root only (skips otherwise)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import netns
import psutil
import pytest
from netns import Cluster, ClusterFactory, wait_until

pytestmark = pytest.mark.cluster

MULTICAST = '''
import socket, struct
GROUP, PORT = "224.0.0.251", 45353          # the mDNS group, another port
def mc_listen(ip):
    global _rx
    _rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _rx.bind(("", PORT))
    _rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                   struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton(ip)))
    _rx.settimeout(0.3)
def mc_send(ip, text):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
        s.sendto(text.encode(), (GROUP, PORT))
def mc_received():
    got = []
    try:
        while True:
            got.append(_rx.recvfrom(100)[0].decode())
    except socket.timeout:
        return got
'''


@pytest.fixture(scope="module")
def three(module_cluster: ClusterFactory) -> Cluster:
    """Hosts a, b, c, each running a node bound to its own address with --peers the others."""
    cl = module_cluster(3)
    cl.start_nodes(peers=True)
    print(f"\ncluster timings: {cl.timings}")
    return cl


def test_status_and_tasks_across_three_hosts(three: Cluster) -> None:
    a, b, c = three.hosts
    expected = [("a", a.endpoint, "alive"), ("b", b.endpoint, "alive"), ("c", c.endpoint, "alive")]

    def status() -> list[tuple[str, str, str]]:
        rows = a.meshctl_json("--peers", three.peers(), "status")
        return sorted((r["node"], r["address"], r["state"]) for r in rows)
    wait_until(lambda: status() == expected, timeout=10, what="meshctl status to show a, b, c alive")

    # a client on host a: every result right, and tasks run on every node (placement
    # decides which: keep submitting until each node ran some, in batches)
    seen: set[str] = set()
    for batch in range(10):
        calls: list[tuple[str, list[int], dict[str, int]]] = [("tasks_app.add", [batch, i], {}) for i in range(6)]
        results = a.run_tasks(three.endpoints(), calls, timeout=30)
        assert [r["value"] for r in results] == [batch + i for i in range(6)], results
        seen |= {r["node"] for r in results}
        if seen == {"a", "b", "c"}:
            break
    assert seen == {"a", "b", "c"}

    info = a.run_tasks(three.endpoints(), [("tasks_app.request_info", [i], {}) for i in range(3)])
    assert [(r["value"]["args"], r["value"]["hostname"]) for r in info] == [
        ([i], r["node"]) for i, r in enumerate(info)], info


def test_cut_host_then_restore(three: Cluster) -> None:
    a, b, c = three.hosts
    c.cut()
    try:
        assert not a.ping(c, timeout=0.5)
        assert c.ping(c)                        # the node itself is fine, only the network is gone

        # once the mesh no longer sees c alive (at once without membership: it does not
        # answer), a new client seeded with a and b gets every result, from a and b
        def c_state() -> str:
            rows = a.meshctl_json("--peers", three.peers(), "--timeout", "0.5", "status")
            return str(next(r["state"] for r in rows if r["address"] == c.endpoint))
        wait_until(lambda: c_state() != "alive", timeout=15, what="host c to be seen not alive")
        results = a.run_tasks([a.endpoint, b.endpoint],
                              [("tasks_app.add", [i, i], {}) for i in range(8)], timeout=30, fresh=True)
        assert [r["value"] for r in results] == [2 * i for i in range(8)], results
        assert {r["node"] for r in results} <= {"a", "b"}
    finally:
        c.restore()
    wait_until(lambda: a.ping(c, timeout=0.5), timeout=10, what="host c to answer again")
    wait_until(lambda: c_state() == "alive", timeout=15, what="host c to be seen alive again")
    # a client seeded with c alone is served: c answers it (the task may run on any
    # node: a client spreads its tasks over the members c names, and c may shed it;
    # a CI run saw it run on b)
    again = a.run_tasks([c.endpoint], [("tasks_app.add", [40, 2], {})], timeout=20)
    assert again[0]["value"] == 42, again


@pytest.mark.parametrize("method", ["link", "bridge"])
def test_other_ways_to_cut_a_host(three: Cluster, method: str) -> None:
    a, _b, c = three.hosts
    c.cut(method)
    try:
        assert not a.ping(c, timeout=0.5)
        assert c.ping(c)
    finally:
        c.restore()
    wait_until(lambda: a.ping(c, timeout=0.5), timeout=10, what=f"host c to answer after a {method} cut")


def test_loss_on_a_host(three: Cluster) -> None:
    a, b, _c = three.hosts
    b.loss(1.0, "both")                       # every packet: deterministic
    try:
        assert not a.ping(b, timeout=0.5)
    finally:
        b.clear_loss()
    wait_until(lambda: a.ping(b, timeout=0.5), timeout=10, what="host b to answer once loss is cleared")


def test_partition_between_two_hosts_only(three: Cluster) -> None:
    a, b, c = three.hosts
    for h in three.hosts:
        h.run_python(MULTICAST)
    b.run_python(f"mc_listen({b.ip!r})")
    a.run_python(f"mc_send({a.ip!r}, 'from a')")
    assert b.run_python("mc_received()") == ["from a"]          # multicast crosses the bridge

    three.partition(a, b)
    try:
        assert not a.ping(b, timeout=0.5) and not b.ping(a, timeout=0.5)
        assert a.ping(c) and b.ping(c) and c.ping(a) and c.ping(b)
        a.run_python(f"mc_send({a.ip!r}, 'from a, partitioned')")
        c.run_python(f"mc_send({c.ip!r}, 'from c')")
        assert b.run_python("mc_received()") == ["from c"]     # multicast is cut too
    finally:
        three.heal(a, b)
    wait_until(lambda: a.ping(b, timeout=0.5), timeout=10, what="a to reach b after the heal")


@pytest.mark.mdns
def test_mdns_finds_nodes_on_other_hosts(cluster: ClusterFactory) -> None:
    cl = cluster(2)
    a, b = cl.hosts
    cl.start_nodes(peers=False, mdns=True)          # no seeds: mDNS across the bridge only

    def found() -> list[tuple[str, str]]:
        proc = a.meshctl("--json", "status")          # no --peers: meshctl browses mDNS
        rows = json.loads(proc.stdout) if proc.returncode == 0 else []
        return sorted((r["node"], r["address"]) for r in rows if r["state"] == "alive")
    wait_until(lambda: found() == [("a", a.endpoint), ("b", b.endpoint)], timeout=15,
               what="meshctl on host a to find both nodes by mDNS")


def test_teardown_leaves_no_namespace_nor_process(tmp_path: Path) -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    procs: list[psutil.Process] = []
    with pytest.raises(RuntimeError, match="the test failed"), Cluster(2, base_dir=tmp_path) as cl:
        cl.start_nodes(peers=True)
        assert cl.hosts[0].run_tasks(cl.endpoints(), [("tasks_app.add", [1, 2], {})])[0]["value"] == 3
        assert len(cl.namespaces()) == 3
        procs = [psutil.Process(pid) for pid in cl.pids()]
        assert len(procs) >= 6, procs      # on each host: the agent, the node and its pool child
        raise RuntimeError("the test failed")
    assert cl.namespaces() == []
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(cl.prefix)]
    assert not [p for p in procs if p.is_running()]
    assert cl.timings["teardown"] < 10, cl.timings


def test_stale_namespaces_of_dead_runs_are_swept() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{netns.PREFIX}{dead.pid}-beef-1-a"
    mine = f"{netns.RUN_PREFIX}stale-test"
    for ns in (stale, mine):
        subprocess.run([netns.IP, "netns", "add", ns], check=True)
    try:
        assert netns.sweep_stale() == []
        names = netns.list_namespaces()
        assert stale not in names            # its run is gone
        assert mine in names                 # this run is alive
    finally:
        netns.destroy_namespaces([ns for ns in (stale, mine) if ns in netns.list_namespaces()])
