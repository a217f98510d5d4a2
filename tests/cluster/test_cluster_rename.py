"""A host's node killed with -9 and started again under a new name (``--name``, or the
default ``host-pid`` name of a systemd unit) at the same address, before its peers
noticed the old one was gone.

The new process is the one node that knows the old record is dead: it holds the
address. It says so as soon as it hears of the old name (mesh/membership/state.py,
``_displaced``), so its peers do not suspect the old name for a suspicion timeout while
their probes reach the new process (which ignores pings meant for another id), and do
not keep sending work there meanwhile."""
from __future__ import annotations

import signal

import pytest
from netns import Cluster, ClusterFactory, Host, wait_until

pytestmark = pytest.mark.cluster


def view(host: Host) -> dict[str, str]:
    """node name -> state, as the node on ``host`` sees the mesh ({} if it does not answer)."""
    reply = host.control([host.endpoint], "members", timeout=1.0)[host.endpoint]
    if not reply.get("ok"):
        return {}
    return {m["node"]: m["state"] for m in reply["payload"]}


@pytest.fixture
def mesh3(cluster: ClusterFactory) -> Cluster:
    cl = cluster(3)
    cl.start_nodes(peers=True, profile="lan")
    wait_until(lambda: all(all(view(o).get(h.name) == "alive" for h in cl.hosts) for o in cl.hosts),
               timeout=20, what="a full mesh of three")
    return cl


def test_a_new_name_at_the_same_address_ends_the_old_one_without_suspicion(mesh3: Cluster) -> None:
    a, b, c = mesh3.hosts
    # a and c are frozen while b is killed and started again as b2: when they go on,
    # b is alive in their views and b2 is at its address (a restart quicker than
    # detection, as with systemd's Restart=on-failure)
    for h in (a, c):
        h.kill(signal.SIGSTOP)
    try:
        b.kill(signal.SIGKILL)
        b.node.proc.wait(10)
        b2 = b.start_node(name="b2", peers=[a.endpoint, c.endpoint], profile="lan")
    finally:
        for h in (a, c):
            h.kill(signal.SIGCONT)
    wait_until(lambda: all(view(o).get("b") == "dead" and view(o).get("b2") == "alive"
                           for o in (a, c)), timeout=20, interval=0.05,
               what="a and c to see b dead and b2 alive")
    wait_until(lambda: view(b).get("a") == "alive" and view(b).get("c") == "alive", timeout=10,
               what="b2 to see a and c alive")
    # b went from alive to dead with no suspicion on the way: b2 declared it dead
    for h in (a, c):
        log = h.nodes[0].stderr()
        lines = [ln for ln in log.splitlines() if "member b (" in ln]
        assert lines and not any("suspect" in ln for ln in lines), "\n".join(lines)
        assert any("-> dead" in ln for ln in lines), "\n".join(lines)
    assert "declares b dead: this node holds its address" in b2.stderr()
    # and tasks go everywhere, from a client that knows only the address
    results = c.run_tasks([b.endpoint], [("tasks_app.add", [i, 1], {}) for i in range(12)], fresh=True)
    assert [r.get("value") for r in results] == [i + 1 for i in range(12)], results
