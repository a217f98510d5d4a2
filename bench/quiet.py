"""What idle nodes cost: CPU and wake-ups a second of a two-node mesh doing nothing.

Two real ``meshnode`` processes (2 children each, journal on, peered by --peers) sit
idle; over ``--seconds`` the bench reads each node's CPU time (the node and its
children, from /proc) and its threads' context switches (each a wake-up, nearly all
voluntary when idle). With ``--tree PATH`` a second mesh runs from another checkout
at the same time, so both are measured on the same machine at the same moment.
A test run starts hundreds of nodes, most of them idle most of the time, and a
node's periodic loops are the idle cost (mesh/node/naps.py).

    .venv/bin/python -m bench.quiet                              # ~40 s
    .venv/bin/python -m bench.quiet --tree /tmp/mesh-base --repeat 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psutil

from bench.run import Node

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (user + system)."""
    total = 0.0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _switches(pid: int) -> int:
    """Context switches of every thread of the node process (its wake-ups)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                        total += int(line.split(":")[1])
    except OSError:
        pass
    return total


def _mesh(tree: str | None) -> list[Node]:
    a = Node(2, "WARNING", tree=tree)
    a.wait_ready(2, 30.0)
    b = Node(2, "WARNING", ["--peers", a.endpoint], tree=tree)
    b.wait_ready(2, 30.0)
    return [a, b]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="measured idle time per run")
    ap.add_argument("--settle", type=float, default=5.0, help="idle time before measuring")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tree", metavar="PATH", help="also run a mesh from this checkout")
    args = ap.parse_args(argv)
    sides = {"this tree": None} | ({f"tree {args.tree}": args.tree} if args.tree else {})
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    for run in range(args.repeat):
        meshes: dict[str, list[Node]] = {}
        try:
            for label, tree in sides.items():
                meshes[label] = _mesh(tree)
            time.sleep(args.settle)
            pids = {k: [n.proc.pid for n in v] for k, v in meshes.items()}
            c0 = {k: sum(_cpu_s(p) for p in v) for k, v in pids.items()}
            s0 = {k: sum(_switches(p) for p in v) for k, v in pids.items()}
            t0 = time.monotonic()
            time.sleep(args.seconds)
            took = time.monotonic() - t0
            for k, v in pids.items():
                cpu = (sum(_cpu_s(p) for p in v) - c0[k]) / took / len(v)
                wakes = (sum(_switches(p) for p in v) - s0[k]) / took / len(v)
                got[k].append((100 * cpu, wakes))
                print(f"run {run + 1}: {k}: {100 * cpu:.2f} % of a core, {wakes:.0f} "
                      f"wake-ups/s per node", flush=True)
        finally:
            for nodes in meshes.values():
                for n in nodes:
                    n.stop()
    print(f"\nidle two-node mesh, per node (node + 2 children), medians of {args.repeat}:")
    print(f"{'':32} {'CPU % of a core':>16} {'wake-ups/s':>11}")
    for k, rows in got.items():
        print(f"{k:32} {statistics.median(r[0] for r in rows):>16.2f} "
              f"{statistics.median(r[1] for r in rows):>11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
