"""Where the CPU of a task goes, process by process: a two-node mesh (two copies,
journal on), one client; CPU time (user + system, every thread) of each node, each
child and the client, per task during 20,000-task batches and per lone round trip.

On a machine with C cores, throughput is at most C / (the total CPU per task): this
is the figure that bounds it, and it moves less with the load of other work on a
shared machine than tasks/s does. Side by side with another checkout of mesh:
``--compare tree:PATH`` (the runs alternate: this tree, then the other, ``--repeat``
times).

Run from the repo root:
    .venv/bin/python -m bench.cpu_split [--repeat 3] [-n 20000] [--latency 1000]
                                        [--compare tree:/tmp/mesh-base]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil

from bench.run import Node, _wait_mesh
from bench.tasks import TASK_NAME, make_app


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        try:
            t = p.cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = 0.0
    return out


@contextlib.contextmanager
def two_nodes(args: argparse.Namespace, tree: str | None
              ) -> Iterator[tuple[Node, Node, Any]]:
    """A two-node mesh (the nodes of ``tree``: None for this checkout) and this
    checkout's client, warmed up: (first node, second node, the bench task)."""
    app = None
    first = Node(args.concurrency, "WARNING", None, tree=tree)
    second = Node(args.concurrency, "WARNING", ["--peers", first.endpoint], tree=tree)
    try:
        first.wait_ready(args.concurrency, 30)
        second.wait_ready(args.concurrency, 30)
        _wait_mesh(first.endpoint, 2, 30)
        app = make_app(peers=[first.endpoint, second.endpoint])
        inc = app.tasks[TASK_NAME]
        for i in range(200):                         # warm-up
            inc.delay(i).get(timeout=60)
        yield first, second, inc
    finally:
        if app is not None:
            app.close()
        second.stop()
        first.stop()


def run_once(args: argparse.Namespace, tree: str | None) -> dict[str, float]:
    """One two-node mesh: CPU us per task of each role (holder and backup are both
    roles of both nodes: each holds about half the tasks and backs up the rest)."""
    with two_nodes(args, tree) as (first, second, inc):
        procs: dict[str, psutil.Process] = {}
        for label, node in (("nodes", first), ("nodes'", second)):
            p = psutil.Process(node.proc.pid)
            procs[label] = p
            for j, c in enumerate(p.children()):
                procs[f"{label}child{j}"] = c
        me = psutil.Process(os.getpid())
        procs["client"] = me
        n = args.tasks
        c0 = _cpu(procs)
        t0 = time.perf_counter()
        results = [inc.delay(i) for i in range(n)]
        for i, r in enumerate(results):
            if r.get(timeout=120) != i + 1:
                raise RuntimeError(f"task {i}: wrong result")
        wall = time.perf_counter() - t0
        c1 = _cpu(procs)
        m = args.latency
        lat = []
        for i in range(m):
            a = time.perf_counter()
            inc.delay(i).get(timeout=60)
            lat.append(time.perf_counter() - a)
        c2 = _cpu(procs)
        lat.sort()

        def role(c_a: dict[str, float], c_b: dict[str, float], per: int) -> dict[str, float]:
            d = {k: (c_b[k] - c_a[k]) / per * 1e6 for k in procs}
            kids = sum(v for k, v in d.items() if "child" in k)
            nodes = d["nodes"] + d["nodes'"]
            return {"nodes": nodes, "children": kids, "client": d["client"],
                    "total": nodes + kids + d["client"]}
        thr = role(c0, c1, n)
        rt = role(c1, c2, m)
        return {"tasks_per_s": n / wall,
                **{f"thr_{k}": v for k, v in thr.items()},
                **{f"rt_{k}": v for k, v in rt.items()},
                "p50_ms": lat[len(lat) // 2] * 1e3}


COLUMNS = [("tasks/s", "tasks_per_s", "{:,.0f}"), ("p50 ms", "p50_ms", "{:.3f}"),
           ("nodes", "thr_nodes", "{:.1f}"), ("children", "thr_children", "{:.1f}"),
           ("client", "thr_client", "{:.1f}"), ("total", "thr_total", "{:.1f}"),
           ("rt nodes", "rt_nodes", "{:.0f}"), ("rt children", "rt_children", "{:.0f}"),
           ("rt client", "rt_client", "{:.0f}"), ("rt total", "rt_total", "{:.0f}")]


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """The arguments of a run (also bench.client_cpu's)."""
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-n", "--tasks", type=int, default=20000)
    ap.add_argument("--latency", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap)
    ap.add_argument("--compare", metavar="tree:PATH", default=None,
                    help="also run the nodes of another checkout, alternating")
    ap.add_argument("--abba", action="store_true",
                    help="with --compare: every other repeat runs the other side first "
                         "(a load that rises or falls during a pair favours neither side)")
    args = ap.parse_args()
    sides: list[tuple[str, str | None]] = [("this tree", None)]
    if args.compare:
        if not args.compare.startswith("tree:"):
            sys.exit("--compare takes tree:PATH")
        sides.append((args.compare, args.compare[len("tree:"):]))
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in sides}
    for i in range(args.repeat):
        for label, tree in (sides[::-1] if args.abba and i % 2 else sides):
            runs[label].append(run_once(args, tree))
    print(f"CPU us per task (user + system, all threads) in {args.tasks:,}-task batches, "
          f"and per lone round trip (rt, {args.latency} of them); medians of {args.repeat}; "
          "nodes = both nodes (holder and backup), children = all four")
    head = f"{'':28s}" + "".join(f"{c:>12s}" for c, _k, _f in COLUMNS)
    print(head)
    for label, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for _c, k, _f in COLUMNS}
        print(f"{label[:28]:28s}" + "".join(f"{f.format(med[k]):>12s}" for _c, k, f in COLUMNS))
    if len(sides) == 2:       # each pair's nodes figure: how often each side was lower
        a, b = (runs[label] for label, _ in sides)
        pairs = [(x["thr_nodes"], y["thr_nodes"]) for x, y in zip(a, b)]
        print("nodes us per task, each pair (this tree / other): " + ", ".join(
            f"{x:.1f}/{y:.1f}" for x, y in pairs) + f"; this tree lower in "
            f"{sum(x < y for x, y in pairs)} of {len(pairs)}")


if __name__ == "__main__":
    main()
