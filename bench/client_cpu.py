"""The client's CPU per task, thread by thread: the caller (delay() and get()), the
client's I/O thread (mesh-client-io) and libzmq's threads, in 20,000-task batches and
per lone round trip, against a two-node mesh. ``bench.cpu_split`` gives the client's
total; this says which of its threads pays it.

The client is the checkout this runs from; ``--nodes-tree PATH`` runs the nodes of
another checkout, so that two clients can be compared against the very same nodes
(run it from each tree in turn, alternated):

    for i in 1 2 3; do for t in /tmp/mesh-base .; do
        (cd $t && /path/to/.venv/bin/python -m bench.client_cpu --nodes-tree /tmp/mesh-base)
    done; done
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading

import psutil

from bench.cpu_split import add_run_args, two_nodes


def _threads() -> dict[str, float]:
    """CPU seconds (user + system) of this process's threads, by role."""
    me = threading.get_native_id()
    io = {t.native_id for t in threading.enumerate() if t.name == "mesh-client-io"}
    out = {"caller": 0.0, "io": 0.0, "zmq": 0.0}
    for t in psutil.Process().threads():
        role = "caller" if t.id == me else "io" if t.id in io else "zmq"
        out[role] += t.user_time + t.system_time
    return out


def _per(a: dict[str, float], b: dict[str, float], n: int) -> dict[str, float]:
    d = {k: (b[k] - a[k]) / n * 1e6 for k in a}
    d["client"] = sum(d.values())
    return d


def run_once(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]]:
    with two_nodes(args, args.nodes_tree) as (_first, _second, inc):
        c0 = _threads()
        results = [inc.delay(i) for i in range(args.tasks)]
        for i, r in enumerate(results):
            if r.get(timeout=120) != i + 1:
                raise RuntimeError(f"task {i}: wrong result")
        c1 = _threads()
        for i in range(args.latency):
            inc.delay(i).get(timeout=60)
        c2 = _threads()
        return _per(c0, c1, args.tasks), _per(c1, c2, args.latency)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap)
    ap.add_argument("--nodes-tree", metavar="PATH", default=None,
                    help="run the nodes of another checkout (the client is this one's)")
    args = ap.parse_args()
    runs = [run_once(args) for _ in range(args.repeat)]
    print(f"client CPU us per task by thread, medians of {args.repeat} "
          f"(client: {os.getcwd()}; nodes: {args.nodes_tree or 'the same'})")
    for k, label in ((0, f"{args.tasks:,}-task batches"), (1, "lone round trip")):
        med = {role: statistics.median(r[k][role] for r in runs) for role in runs[0][k]}
        print(f"  {label:22s}" + "".join(f"{role} {v:6.1f}   " for role, v in med.items()))


if __name__ == "__main__":
    main()
