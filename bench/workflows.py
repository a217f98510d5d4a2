"""Benchmark workflows on two real nodes (not a test): chord vs group, a long chain,
and the memory a big group costs.

Two ``meshnode --app bench.wf_tasks --concurrency 2`` processes on loopback (a joins
b; default journal and two copies), one client in this process:

  (a) chord of N no-op header tasks and a body that counts them: seconds from
      ``apply_async()`` to the body's result;
  (b) plain group of N no-op tasks: seconds from ``apply_async()`` to ``get()``;
  (c) chain of L ``inc`` steps: seconds to the last step's result;
  (d) group of M no-op tasks: the client's RSS growth (building the group, sending it,
      holding the GroupResult, getting the M results) and the nodes' peak RSS (both
      nodes and their children, sampled every 50 ms), and its time.

Run from the repo root:  .venv/bin/python -m bench.workflows [--repeat 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import psutil

from bench.run import Node, RssSampler
from mesh import Mesh, chain, chord, group, signature

MB = 1024 * 1024


def start_nodes(args: argparse.Namespace) -> list[Node]:
    nodes: list[Node] = []
    try:
        a = Node(2, getattr(args, "loglevel", "WARNING"), args.node_args, app="bench.wf_tasks")
        nodes.append(a)
        a.wait_ready(2, 30)
        b = Node(2, getattr(args, "loglevel", "WARNING"), args.node_args + ["--peers", a.endpoint], app="bench.wf_tasks")
        nodes.append(b)
        b.wait_ready(2, 30)
        _wait_mesh(nodes)
        return nodes
    except BaseException:
        for n in nodes:
            n.stop()
        raise


def _wait_mesh(nodes: list[Node], timeout: float = 30.0) -> None:
    from mesh.client.control import ControlClient
    deadline = time.monotonic() + timeout
    with ControlClient() as cc:
        while time.monotonic() < deadline:
            ok = 0
            for n in nodes:
                r = cc.broadcast([n.endpoint], "members")[n.endpoint]
                alive = [m for m in getattr(r, "payload", None) or [] if m.get("state") == "alive"]
                ok += len(alive) == len(nodes)
            if ok == len(nodes):
                return
            time.sleep(0.05)
    raise RuntimeError("the two nodes did not see each other alive")


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    nodes = start_nodes(args)
    out: dict[str, Any] = {}
    samplers = [RssSampler(n.proc.pid) for n in nodes]
    try:
        app = Mesh("bench-wf-client", peers=[n.endpoint for n in nodes], mdns=False)
        S = lambda name, *a: signature(name, a, app=app)  # noqa: E731
        assert group(S("bench.noop", i) for i in range(100)).apply_async().get(timeout=60) == \
            list(range(100))                                            # warm up
        n = args.tasks
        t0 = time.perf_counter()
        r = chord([S("bench.noop", i) for i in range(n)], S("bench.count")).apply_async()
        assert r.get(timeout=args.timeout) == n
        out["chord_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        g = group(S("bench.noop", i) for i in range(n)).apply_async()
        assert g.get(timeout=args.timeout) == list(range(n))
        out["group_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        c = chain(S("bench.inc", 0), *[S("bench.inc") for _ in range(args.chain - 1)]).apply_async()
        assert c.get(timeout=args.timeout) == args.chain
        out["chain_s"] = time.perf_counter() - t0
        # (d) a big group: memory on both sides
        out["nodes_before_mb"] = sum(s.sample() for s in samplers) / MB
        for s in samplers:
            s.peak = 0
            s.start()
        before = rss()
        t0 = time.perf_counter()
        big = group(S("bench.noop", i) for i in range(args.big))
        built = rss()
        res = big.apply_async()
        sent = rss()
        values = res.get(timeout=args.timeout)
        out["big_s"] = time.perf_counter() - t0
        assert len(values) == args.big
        out["client_build_mb"] = (built - before) / MB
        out["client_sent_mb"] = (sent - before) / MB
        out["client_total_mb"] = (rss() - before) / MB
        del big, values
        out["nodes_peak_mb"] = sum(s.peak for s in samplers) / MB
        app.close()
    finally:
        for s in samplers:
            s.stop()
        for n in nodes:
            n.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--tasks", type=int, default=10_000, help="header/group size (10,000)")
    p.add_argument("--chain", type=int, default=1_000, help="chain length (1,000)")
    p.add_argument("--big", type=int, default=100_000, help="the big group's size (100,000)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--node-args", default="", help="extra meshnode flags, e.g. '--replicas 1'")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    args.node_args = args.node_args.split()
    runs = []
    for i in range(args.repeat):
        r = one_run(args)
        runs.append(r)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    n = args.tasks
    print(f"\nmedian of {len(runs)} ({os.cpu_count()} CPUs, 2 nodes x 2 children):")
    print(f"  chord of {n:,} no-op header tasks -> body's result  {med['chord_s']:7.2f} s "
          f"({n / med['chord_s']:,.0f} header tasks/s)")
    print(f"  group of {n:,} no-op tasks -> get()                 {med['group_s']:7.2f} s "
          f"({n / med['group_s']:,.0f} tasks/s)")
    print(f"  chain of {args.chain:,} steps -> last result            {med['chain_s']:7.2f} s "
          f"({1000 * med['chain_s'] / args.chain:.2f} ms per step)")
    print(f"  group of {args.big:,}: {med['big_s']:.1f} s; client +{med['client_build_mb']:.0f} MB "
          f"building it, +{med['client_sent_mb']:.0f} MB sent, +{med['client_total_mb']:.0f} MB "
          f"with its results; nodes' peak RSS {med['nodes_peak_mb']:.0f} MB (2 nodes + children; "
          f"{med['nodes_before_mb']:.0f} MB before it)")
    if args.json:
        print(json.dumps({"runs": runs, "median": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
