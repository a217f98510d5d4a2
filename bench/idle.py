"""What a node holds once it has worked and gone idle: RSS before, right after N tasks,
and after the node has been idle for ``IDLE_RELEASE`` seconds (mesh/node/expiry.py
then gives back sqlite's page cache and the C heap's free pages).

One real ``meshnode`` (2 children, journal on); ``bench.inc`` tasks in batches of
20,000 (all submitted, then all results awaited), then nothing.

    .venv/bin/python -m bench.idle                  # 100,000 tasks, about a minute
    .venv/bin/python -m bench.idle -n 20000
    .venv/bin/python -m bench.idle --tree /tmp/mesh-base   # the node from another checkout
"""
from __future__ import annotations

import argparse
import sys
import time

from bench.backlog import _rss
from bench.run import Node
from mesh.node.expiry import IDLE_RELEASE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--tasks", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--tree", metavar="PATH", help="run the node from this checkout of mesh")
    args = ap.parse_args(argv)
    from bench.tasks import TASK_NAME, make_app

    node = Node(2, "WARNING", ["--quota-tasks", str(max(100_000, args.batch))], tree=args.tree)
    app = None
    try:
        node.wait_ready(2, 30.0)
        app = make_app(peers=[node.endpoint])
        inc = app.tasks[TASK_NAME]
        time.sleep(1.0)
        rows = [("idle, at start", *_rss(node.proc.pid))]
        t0 = time.perf_counter()
        for start in range(0, args.tasks, args.batch):
            results = [inc.delay(i) for i in range(start, min(args.tasks, start + args.batch))]
            for i, r in enumerate(results):
                if r.get(timeout=120) != start + i + 1:
                    raise RuntimeError("wrong result")
        took = time.perf_counter() - t0
        rows.append((f"after {args.tasks:,} tasks", *_rss(node.proc.pid)))
        deadline = time.monotonic() + IDLE_RELEASE + 15
        last = rows[-1][1]
        while time.monotonic() < deadline:      # until the release shows (or it never does)
            time.sleep(1.0)
            own, total = _rss(node.proc.pid)
            if own < last * 0.8:
                break
        time.sleep(1.0)
        rows.append((f"idle {IDLE_RELEASE:g} s+ after", *_rss(node.proc.pid)))
        print(f"{args.tasks:,} tasks in {took:.1f} s ({args.tasks / took:,.0f}/s)")
        print(f"{'':24}  {'node RSS MiB':>12}  {'node + children MiB':>19}")
        for what, own, total in rows:
            print(f"{what:24}  {own / 2**20:12.1f}  {total / 2**20:19.1f}")
    finally:
        if app is not None:
            app.close()
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
