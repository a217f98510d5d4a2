"""Pool kinds measured (docs/pools.md): many sleeping tasks on one node, as async def
tasks on one child's event loop, on the threads pool, and on prefork children.

Each case starts its own ``meshnode`` (bench.run.Node, --app bench.pools_tasks), sends
N tasks that sleep S seconds, waits for every result, and prints the wall time next to
the serial time (N x S) and the most tasks seen running at once in one child.

    .venv/bin/python -m bench.pools                 # 1,000 async naps; 200 plain ones
    .venv/bin/python -m bench.pools --async-n 10000 --workers 32
"""
from __future__ import annotations

import argparse
import time

from bench.run import Node
from mesh import Mesh


def _case(label: str, flags: list[str], task: str, n: int, seconds: float, children: int) -> None:
    node = Node(children, "WARNING", ["--app", "bench.pools_tasks", "--no-journal", *flags])
    try:
        node.wait_ready(children, 60.0)
        app = Mesh("bench-pools-client", peers=[node.endpoint], mdns=False)
        try:
            t0 = time.perf_counter()
            results = [app.send_task(task, args=(seconds,)) for _ in range(n)]
            peaks = [r.get(timeout=max(120.0, n * seconds)) for r in results]
            wall = time.perf_counter() - t0
        finally:
            app.close()
        print(f"{label:44s} {n:>6,} x {seconds:g} s: {wall:7.2f} s wall (serial {n * seconds:,.0f} s), "
              f"at most {max(peaks):,} at once in a child", flush=True)
    finally:
        node.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--async-n", type=int, default=1000, help="async naps (default 1000)")
    p.add_argument("-n", type=int, default=200, help="plain naps (default 200)")
    p.add_argument("--seconds", type=float, default=1.0, help="async nap length (default 1)")
    p.add_argument("--plain-seconds", type=float, default=0.1, help="plain nap length (default 0.1)")
    p.add_argument("--workers", type=int, default=16, help="threads / children (default 16)")
    a = p.parse_args()
    _case("async def, 1 prefork child", ["--concurrency", "1", "--async-concurrency", str(a.async_n)],
          "bench.anap", a.async_n, a.seconds, 1)
    _case(f"plain, threads pool ({a.workers} threads)", ["--pool", "threads", "--concurrency", str(a.workers)],
          "bench.nap", a.n, a.plain_seconds, 1)
    _case(f"plain, prefork ({a.workers} children)", ["--concurrency", str(a.workers)],
          "bench.nap", a.n, a.plain_seconds, a.workers)


if __name__ == "__main__":
    main()
