"""A burst past the nodes' quotas: how many tasks are refused, how many wait, how fast
it all runs (docs/routing.md, "When every node that would take it is full").

Each run starts ``--nodes`` fresh ``meshnode`` processes (``bench.tasks``, 2 children
each, ``--quota-tasks Q``) in one mesh, then one client process that waits until it
knows every node, submits ``-n`` no-op tasks at once (``[inc.delay(i) ...]``) and gets
every result (each checked). It reports tasks/s (first submit to last result), the
client's ``quota_refusals`` (ERROR ``quota`` answers) and ``waited`` (tasks that waited
in the client for room), and the nodes' own CPU per task (not their children's).

``--compare tree:PATH`` runs the same with the nodes *and the client* of another
checkout (e.g. a git worktree of main), interleaved with this one, repeat by repeat:
before and after in one run. Medians of ``--repeat`` runs.

Run from the repo root:
  .venv/bin/python -m bench.room -n 20000 --quota-tasks 1000 --repeat 3 --compare tree:/tmp/base
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from bench.run import ROOT, Node, _wait_mesh

# the client, run with the tree's mesh first on its path (this side's or --compare's)
CLIENT = r"""
import json, sys, time
import mesh
from bench.tasks import TASK_NAME, make_app
eps, n = sys.argv[1].split(","), int(sys.argv[2])
app = make_app(peers=eps)
inc = app.tasks[TASK_NAME]
client = app.client
assert inc.delay(0).get(timeout=60) == 1
deadline = time.monotonic() + 30
while sum(x["state"] == "alive" and bool(x["node"]) for x in client.nodes()) < len(eps):
    if time.monotonic() > deadline:
        raise SystemExit("the client did not learn every node")
    time.sleep(0.05)
time.sleep(1.5)                    # a members answer or two after that: what it knows
print("ready", flush=True)
sys.stdin.readline()
cpu0 = time.process_time()
t0 = time.perf_counter()
rs = [inc.delay(i) for i in range(n)]
t_sub = time.perf_counter()
for i, r in enumerate(rs):
    v = r.get(timeout=300)
    if v != i + 1:
        raise SystemExit(f"task {i} returned {v!r}")
t1 = time.perf_counter()
print(json.dumps({"tasks_per_s": n / (t1 - t0), "submit_per_s": n / (t_sub - t0),
                  "refusals": client.quota_refusals, "waited": client.waited,
                  "client_cpu_us": (time.process_time() - cpu0) / n * 1e6,
                  "mesh": mesh.__file__}), flush=True)
app.close()
"""


def run_once(args: argparse.Namespace, tree: str | None) -> dict[str, Any]:
    flags = ["--quota-tasks", str(args.quota_tasks)] if args.quota_tasks else []
    first = Node(2, "WARNING", flags, tree=tree)
    nodes = [first] + [Node(2, "WARNING", [*flags, "--peers", first.endpoint], tree=tree)
                       for _ in range(args.nodes - 1)]
    client: subprocess.Popen[str] | None = None
    try:
        for node in nodes:
            node.wait_ready(2, 30.0)
        if len(nodes) > 1:
            _wait_mesh(first.endpoint, len(nodes), 30.0)
        where = os.path.abspath(tree) if tree else ROOT
        env = {**os.environ, "PYTHONPATH": where}
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, ",".join(n.endpoint for n in nodes), str(args.tasks)],
            cwd=where, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdin is not None and client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the client did not start")
        procs = [psutil.Process(n.proc.pid) for n in nodes]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        client.stdin.write("go\n")
        client.stdin.flush()
        line = client.stdout.readline()
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
        if not line:
            raise RuntimeError(f"the client failed (exit {client.wait(30)})")
        out: dict[str, Any] = json.loads(line)
        client.wait(30)
        if not out["mesh"].startswith(where):
            raise RuntimeError(f"the client ran {out['mesh']}, not the tree's ({where})")
        out["node_cpu_us"] = cpu / args.tasks * 1e6
        return out
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(10)
        for node in nodes:
            node.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.room", description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--tasks", type=int, default=20000, help="tasks in the burst (20000)")
    ap.add_argument("--quota-tasks", type=int, default=1000, metavar="Q",
                    help="each node's --quota-tasks (1000; 0: the node's default)")
    ap.add_argument("--nodes", type=int, default=2, help="nodes in the mesh (2)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; medians (3)")
    ap.add_argument("--compare", metavar="tree:PATH", default=None,
                    help="also run another checkout's nodes and client, interleaved")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    other = None
    if args.compare:
        if not args.compare.startswith("tree:"):
            ap.error("--compare takes tree:PATH")
        other = args.compare[len("tree:"):]
    sides: dict[str, list[dict[str, Any]]] = {"this": []}
    if other:
        sides[f"tree:{other}"] = []
    print(f"{args.tasks:,} tasks from one client on {args.nodes} nodes at --quota-tasks "
          f"{args.quota_tasks or 'default'}, {args.repeat} run(s) per side", flush=True)
    t_all = time.monotonic()
    for k in range(args.repeat):
        for side in sides:
            r = run_once(args, None if side == "this" else other)
            sides[side].append(r)
            print(f"run {k + 1} {side}: {r['tasks_per_s']:,.0f} tasks/s, {r['refusals']:,} "
                  f"refusals, {r['waited']:,} waited, CPU per task: nodes "
                  f"{r['node_cpu_us']:.0f} us, client {r['client_cpu_us']:.0f} us",
                  flush=True)
    print("\nmedians:")
    for side, runs in sides.items():
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("tasks_per_s", "refusals", "waited", "node_cpu_us", "client_cpu_us")}
        print(f"  {side}: {med['tasks_per_s']:,.0f} tasks/s, {med['refusals']:,.0f} refusals, "
              f"{med['waited']:,.0f} waited, CPU per task: nodes {med['node_cpu_us']:.0f} us, "
              f"client {med['client_cpu_us']:.0f} us")
    print(f"total time {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
