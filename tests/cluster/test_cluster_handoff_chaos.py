"""Chaos with submitters that exit: nothing depends on the submitter, and the loss of
any one machine for good loses nothing (two copies). Root only (skips otherwise).

Four hosts in network namespaces: a, b and c run a node each; d runs submitters, one
short-lived process after another (each sends a batch of append_line tasks, some due
at once and some with a countdown, waits until every one is acknowledged, and exits).
Every few seconds a random node is killed with SIGKILL and never restarted; a fresh
node (new name, new port, empty data dir: the old machine's disk is gone) joins on
that host instead. At the end a reader process on d, which submitted nothing, reads
every acknowledged task's result from the nodes alive then.

Prints (``pytest -s``)::

    [handoff-chaos <name>] sent=... readable=... duplicates_executed=... lost=...
        not_acknowledged=... kills=...

``sent`` counts tasks a node acknowledged (the submitter exited after that);
``readable`` those whose result a third process read, correct; ``lost`` must be 0.
``not_acknowledged`` counts tasks a submitter was told (on stderr, exit report) that
no node took. The default version is short; ``-m slow`` runs the long one
(MESH_HANDOFF_CHAOS_KILLS kills, default 12).
"""
from __future__ import annotations

import collections
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from netns import Cluster, ClusterFactory, ClusterNode, Host, wait_until

pytestmark = pytest.mark.cluster

KILL_EVERY = 5.0          # s between kills (longer than membership needs to declare a death)
BATCH = 40                # tasks per submitter process
SHORT_KILLS = 3
SLOW_KILLS = int(os.environ.get("MESH_HANDOFF_CHAOS_KILLS", "12"))

# argv: peers (comma-separated), the output file, the first line number, how many;
# prints [[id, line, acknowledged], ...] as JSON
SUBMITTER = r'''
import json, random, sys
from mesh import Mesh
peers, path, first, n = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = Mesh("chaos-submitter", peers=peers, mdns=False)
rng = random.Random(first)
sent = []
for i in range(first, first + n):
    line = f"t{i}"
    countdown = rng.uniform(0.5, 4.0) if rng.random() < 0.4 else None
    r = app.send_task("tasks_app.append_line", args=[path, line], countdown=countdown)
    sent.append((r, line))
app.client.flush(10.0)
print(json.dumps([[r.id, line, r.state != "PENDING"] for r, line in sent]))
'''

READER = r'''
def read_all(peers, pairs_path, out_path, timeout):
    """Look every task up at once (each asked of every node, again each second while
    it has no result), then wait; write {id: [state, value, node]} to out_path."""
    import json, time
    from mesh import Mesh
    pairs = json.load(open(pairs_path))
    app = Mesh("chaos-reader", peers=list(peers), mdns=False)
    try:
        results = [(app.AsyncResult(tid), line) for tid, line in pairs]
        for r, _ in results:
            slot = r._require_slot()
            slot.add_waiter(lambda: None)          # keeps it asked for until it completes
            app.client.query(slot, wait=None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(r._slot.msg is None for r, _ in results):
            time.sleep(0.2)
        out = {}
        for r, _ in results:
            if r._slot.msg is None:
                out[r.id] = [r._slot.state, None, None]
            else:
                try:
                    out[r.id] = [r._slot.msg.state, r.get(timeout=0), r.node]
                except Exception as e:
                    out[r.id] = [r._slot.msg.state, f"{type(e).__name__}: {e}"[:200], r.node]
        json.dump(out, open(out_path, "w"))
        return sum(1 for v in out.values() if v[0] == "SUCCESS")
    finally:
        app.close()
'''


def alive_view(node: ClusterNode) -> dict[str, str]:
    reply = node.request("members", timeout=2.0)
    if isinstance(reply, str) or not reply.ok:
        return {}
    return {m["node"]: m["state"] for m in reply.payload}


class Submitters:
    """Submitter processes on host d, one after another, until stopped."""

    def __init__(self, host: Host, out: str, live: dict[str, ClusterNode]):
        self.host, self.out, self.live = host, out, live
        self.acked: dict[str, str] = {}          # task id -> line
        self.not_acknowledged = 0
        self.failures: list[str] = []
        self.next_line = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                peers = ",".join(n.endpoint for n in self.live.values())
            first, self.next_line = self.next_line, self.next_line + BATCH
            p = self.host.exec(sys.executable, "-c", SUBMITTER, peers, self.out, str(first),
                               str(BATCH), timeout=60)
            try:
                rows = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                self.failures.append(f"exit {p.returncode}: {p.stderr[-500:]}")
                continue
            for tid, line, acked in rows:
                if acked:
                    self.acked[tid] = line
                else:         # the submitter said so at exit (never silent)
                    self.not_acknowledged += 1
            if "not acknowledged" in p.stderr and not any(not r[2] for r in rows):
                self.failures.append("an exit report without unacknowledged tasks")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)


def _chaos(cl: Cluster, kills: int, name: str, seed: int) -> None:
    rng = random.Random(seed)
    a, b, c, d = cl.hosts
    node_hosts = [a, b, c]
    cl.start_nodes(hosts=node_hosts, peers=True, profile="lan", concurrency=2)
    live: dict[str, ClusterNode] = {h.name: h.node for h in node_hosts}
    names = {n.name for n in live.values()}
    wait_until(lambda: all({k for k, v in alive_view(n).items() if v == "alive"} == names
                           for n in live.values()), timeout=30, what="a mesh of three")
    out = str(cl.base_dir / "runs")           # one file system for every host
    subs = Submitters(d, out, live)
    subs.start()
    killed: list[str] = []
    try:
        for k in range(kills):
            time.sleep(KILL_EVERY)            # chaos on the clock, whatever the load
            host = rng.choice(node_hosts)
            victim = live[host.name]
            victim.kill()
            victim.proc.wait(10)
            killed.append(victim.name)
            gen = k + 1
            fresh = host.start_node(name=f"{host.name}{gen}", port=7700 + gen,
                                    data_dir=cl.base_dir / f"{host.name}{gen}.data",
                                    peers=[n.endpoint for h, n in live.items() if h != host.name],
                                    profile="lan", concurrency=2)
            with subs.lock:
                live[host.name] = fresh
    finally:
        subs.stop()
    # the mesh settles: every node alive sees the others, and holds nothing
    names = {n.name for n in live.values()}
    wait_until(lambda: all({k for k, v in alive_view(n).items() if v == "alive"} == names
                           for n in live.values()), timeout=60, what="the last three to see each other")
    d.run_python(READER)
    pairs = sorted(subs.acked.items())
    pairs_path, got_path = cl.base_dir / "sent.json", cl.base_dir / "read.json"
    pairs_path.write_text(json.dumps(pairs))
    d.run_python(f"read_all({[n.endpoint for n in live.values()]!r}, {str(pairs_path)!r}, "
                 f"{str(got_path)!r}, 120.0)", timeout=200)
    got: dict[str, list[Any]] = json.loads(got_path.read_text())
    try:
        wait_until(lambda: all(n.status()["held"] == 0 for n in live.values()), timeout=60,
                   what="the nodes to hold nothing")
    except AssertionError as e:
        print(f"[handoff-chaos {name}] {e}")
    runs: collections.Counter[str] = collections.Counter(
        Path(out).read_text().splitlines() if os.path.exists(out) else [])
    readable = [t for t, line in pairs if got.get(t, [None, None])[0] == "SUCCESS"
                and got[t][1] == line]
    wrong = [(t, got.get(t)) for t, line in pairs if got.get(t, [None])[0] == "SUCCESS"
             and got[t][1] != line]
    lost = [(t, line, got.get(t)) for t, line in pairs if t not in set(readable)]
    figures = {"sent": len(pairs), "readable": len(readable),
               "duplicates_executed": sum(k - 1 for k in runs.values() if k > 1),
               "lost": len(lost), "not_acknowledged": subs.not_acknowledged, "kills": len(killed)}
    print(f"\n[handoff-chaos {name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))
    print(f"[handoff-chaos {name}] killed {killed}; alive at the end "
          f"{sorted(n.name for n in live.values())}; submitter problems: {subs.failures[:5]}")
    assert not wrong, wrong[:5]
    assert figures["lost"] == 0, lost[:5]
    never_ran = [line for _, line in pairs if line not in runs]
    assert not never_ran, never_ran[:10]
    assert figures["sent"] >= 4 * BATCH, "too few tasks to mean anything"


@pytest.mark.timeout(600)
def test_kill_a_random_node_every_few_seconds_with_submitters_that_exit(
        cluster: ClusterFactory) -> None:
    _chaos(cluster(4), SHORT_KILLS, f"kills-{SHORT_KILLS}", seed=1)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill_a_random_node_every_few_seconds_for_long(cluster: ClusterFactory) -> None:
    _chaos(cluster(4), SLOW_KILLS, f"kills-{SLOW_KILLS}", seed=2)
