"""A keyed mesh across hosts on real (non-loopback) addresses, and strangers on the
same network: three hosts run keyed nodes (MESH_KEYS in the cluster's environment:
nodes, agents and meshctl all use it); a fourth host tries without keys. Root only."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import MESHCTL, Cluster, wait_until

from mesh.security import keys

pytestmark = pytest.mark.cluster


@pytest.fixture
def keyed(tmp_path: Path, cluster: object) -> Iterator[Cluster]:          # cluster: skips without netns
    k = tmp_path / "keys"
    keys.init(str(k))
    cl = Cluster(4, base_dir=tmp_path / "cluster")
    cl.env["MESH_KEYS"] = str(k)
    cl.open()
    yield cl
    cl.close()


def test_a_keyed_mesh_serves_across_hosts_and_refuses_strangers(keyed: Cluster) -> None:
    a, b, c, d = keyed.hosts
    keyed.start_nodes(hosts=[a, b, c], peers=True)               # bound on 10.x: keys, no --insecure
    seeds = keyed.peers(a, b, c)

    rows = d.meshctl_json("--peers", seeds, "status")            # the admin key, from host d
    assert sorted(r["node"] for r in rows) == ["a", "b", "c"]
    assert len({r["keys"] for r in rows}) == 1 and rows[0]["keys"]
    done = d.run_tasks(seeds.split(","), [("tasks_app.add", [i, i], {}) for i in range(30)])
    assert [x["value"] for x in done] == [2 * i for i in range(30)]

    # a stranger on host d: no keys at all
    env = {k: v for k, v in keyed.env.items() if k != "MESH_KEYS"}
    p = d.exec(MESHCTL, "--peers", seeds, "ping", env=env)
    assert p.returncode == 1 and "requires keys" in p.stderr, p
    got = d.run_python(f"""
import zmq
from mesh.wire import codec
from mesh.wire.protocol import Submit, encode
_c = zmq.Context(); _s = _c.socket(zmq.DEALER); _s.setsockopt(zmq.LINGER, 0)
_s.setsockopt(zmq.SNDTIMEO, 2000)     # (the refused handshake may drop the pipe: send waits)
_s.connect({a.endpoint!r})
try:
    _s.send(encode(Submit("stranger-1", "tasks_app.add", codec.dump_call((1, 2), None))))
    _got = _s.poll(2000)
except zmq.Again:
    _got = 0
_s.close(0); _c.term(); _got
""")
    assert got == 0                                              # no handshake, no answer
    known = a.control([a.endpoint], "members")[a.endpoint]["payload"]
    assert sorted(m["node"] for m in known) == ["a", "b", "c"]

    # a node without keys on host d (--insecure) asks to join: the keyed mesh never lists it
    d.spawn_node(name="intruder", peers=[a.endpoint], keys="", insecure=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        members = a.control([a.endpoint], "members")[a.endpoint]["payload"]
        assert "intruder" not in {m["node"] for m in members}
        time.sleep(0.5)

    # and the keyed mesh still fails over: kill b, its tasks run elsewhere
    b.kill()
    wait_until(lambda: {m["node"]: m["state"] for m in
                        a.control([a.endpoint], "members")[a.endpoint]["payload"]}.get("b") == "dead",
               timeout=30, what="b dead")
    done = d.run_tasks([a.endpoint, c.endpoint], [("tasks_app.add", [i, 1], {}) for i in range(10)])
    assert [x["value"] for x in done] == [i + 1 for i in range(10)]
