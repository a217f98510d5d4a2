"""A deep backlog on one node: memory and cost per task at 10k, 100k and 1M queued.

One real ``meshnode`` (2 children, journal on, ``--quota-tasks``/``--quota-bytes``
raised so one client may queue a million tasks), whose two children are held by
``bench.hold`` tasks waiting for a gate file. Then, from this process:

  (a) submit ``bench.inc`` tasks in stages up to each mark (10,000, 100,000,
      1,000,000 queued), at most one batch ahead of what the node holds
      (``--no-pace``: as fast as the client goes); after each, wait until the node says it holds them all
      (status ``held``) and read the RSS of the node and of node + children:
      submit rate per stage = tasks of the stage / (first submit -> all held);
  (b) open the gate and time the drain: until ``held`` falls below each mark again,
      and to zero; drain rate per stage.

If the cost per task is flat in the backlog, the stage rates stay the same; the RSS
per queued task says what a queued task costs in memory (docs/performance.md). The
node keeps ``--queue-memory`` queued tasks in memory (20,000 by default) and the rest
in its journal (mesh/node/spill.py): ``--queue-memory 0`` measures all in memory.

    .venv/bin/python -m bench.backlog                 # 10k, 100k, 1M (a few minutes)
    .venv/bin/python -m bench.backlog --marks 10000,100000
    .venv/bin/python -m bench.backlog --queue-memory 0   # every queued task in memory
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import psutil

from bench.run import ROOT, Node

STATUS_TIMEOUT = 30.0


def _status(cc: Any, endpoint: str) -> dict[str, Any]:
    from mesh.wire.protocol import ControlReply
    reply = cc.broadcast([endpoint], "status", timeout=STATUS_TIMEOUT)[endpoint]
    if not isinstance(reply, ControlReply) or not reply.ok:
        raise RuntimeError(f"the node did not answer status: {reply!r}")
    payload: dict[str, Any] = reply.payload
    return payload


def _rss(pid: int) -> tuple[int, int]:
    """RSS of the node alone, and of the node plus its children."""
    p = psutil.Process(pid)
    own = p.memory_info().rss
    kids = 0
    for c in p.children(recursive=True):
        try:
            kids += c.memory_info().rss
        except psutil.Error:
            pass
    return own, own + kids


def run(marks: list[int], concurrency: int, batch: int,
        queue_memory: int | None = None, pace: bool = True) -> list[dict[str, Any]]:
    from bench.backlog_tasks import HOLD, make_app
    from bench.tasks import TASK_NAME
    from mesh.client.control import ControlClient
    from mesh.security.curve import Security

    top = max(marks)
    node = Node(concurrency, "WARNING", ["--quota-tasks", str(2 * top),
                                         "--quota-bytes", str(max(1 << 28, 2048 * top)),
                                         *(["--queue-memory", str(queue_memory)]
                                           if queue_memory is not None else [])],
                app="bench.backlog_tasks")
    gate = os.path.join(tempfile.mkdtemp(prefix="mesh-backlog-"), "gate")
    app = None
    rows: list[dict[str, Any]] = []
    try:
        node.wait_ready(concurrency, 30.0)
        app = make_app(peers=[node.endpoint])
        inc, hold = app.tasks[TASK_NAME], app.tasks[HOLD]
        with ControlClient(security=Security(None)) as cc:
            held = [hold.delay(gate) for _ in range(concurrency)]
            deadline = time.monotonic() + 60
            while _status(cc, node.endpoint)["busy"] < concurrency:
                if time.monotonic() > deadline:
                    raise RuntimeError("the children did not take the hold tasks")
                time.sleep(0.05)
            base_own, base_all = _rss(node.proc.pid)
            print(f"node ready, children held; node RSS {base_own / 2**20:.1f} MB, node + "
                  f"children {base_all / 2**20:.1f} MB", flush=True)
            submitted, results = 0, []
            for mark in marks:
                t0 = time.perf_counter()
                while submitted < mark:
                    n = min(batch, mark - submitted)
                    results.extend(inc.delay(i) for i in range(submitted, submitted + n))
                    submitted += n
                    # paced: at most one batch ahead of what the node holds, so that RSS
                    # is what the node keeps for its backlog, not a client outrunning it
                    # (messages buffered in zmq: up to the front door's RCVHWM)
                    while pace and _status(cc, node.endpoint)["held"] < submitted - batch:
                        time.sleep(0.01)
                t_sub = time.perf_counter()
                while _status(cc, node.endpoint)["held"] < mark + concurrency:
                    if node.proc.poll() is not None:
                        raise RuntimeError(f"meshnode exited:\n{node.log_tail()}")
                    time.sleep(0.05)
                t1 = time.perf_counter()
                own, total = _rss(node.proc.pid)
                st = _status(cc, node.endpoint)
                stage = mark - (rows[-1]["queued"] if rows else 0)
                rows.append({"queued": mark, "node_rss_mb": own / 2**20, "all_rss_mb": total / 2**20,
                             "bytes_per_task": (own - base_own) / mark,
                             "submit_per_s": stage / (t1 - t0), "client_submit_per_s": stage / (t_sub - t0),
                             "node_queued": st["queued"],
                             "on_disk": st.get("queued_on_disk", 0)})
                r = rows[-1]
                print(f"{mark:>9,} queued: node RSS {r['node_rss_mb']:7.1f} MB (node + children "
                      f"{r['all_rss_mb']:7.1f} MB, {r['bytes_per_task']:,.0f} B per queued task), "
                      f"stage submit {r['submit_per_s']:,.0f} tasks/s (held by the node; "
                      f"{r['on_disk']:,} on disk)", flush=True)
            # (b) drain
            t0 = time.perf_counter()
            open(gate, "w").close()
            downs = sorted([m for m in marks if m < top], reverse=True) + [0]
            last_t, last_n = t0, top
            for m in downs:
                while True:
                    h = _status(cc, node.endpoint)["held"]
                    if h <= m:
                        break
                    if node.proc.poll() is not None:
                        raise RuntimeError(f"meshnode exited:\n{node.log_tail()}")
                    time.sleep(0.05)
                now = time.perf_counter()
                rate = (last_n - m) / (now - last_t) if now > last_t else float("nan")
                print(f"drained to {m:>9,} held: {rate:,.0f} tasks/s over that stage", flush=True)
                for row in rows:
                    if row["queued"] == last_n:
                        row["drain_per_s"] = rate
                last_t, last_n = now, m
            own, total = _rss(node.proc.pid)
            print(f"drained {top:,} in {time.perf_counter() - t0:.1f} s; node RSS after "
                  f"{own / 2**20:.1f} MB", flush=True)
            bad = 0
            for i, r in enumerate(results[-1000:]):    # the last ones: results came back
                if r.get(timeout=120) != top - 1000 + i + 1:
                    bad += 1
            for h in held:
                h.get(timeout=60)
            if bad:
                raise RuntimeError(f"{bad} wrong results")
    finally:
        if app is not None:
            app.close()
        node.stop()
        try:
            os.unlink(gate)
        except OSError:
            pass
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--marks", default="10000,100000,1000000",
                    help="queued-task counts to measure at (default 10000,100000,1000000)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--batch", type=int, default=10000, help="tasks per submit burst")
    ap.add_argument("--no-pace", action="store_true",
                    help="submit without waiting for the node (the client may run far ahead)")
    ap.add_argument("--queue-memory", type=int, default=None,
                    help="the node's --queue-memory (default: the node's default)")
    args = ap.parse_args(argv)
    marks = sorted(int(x) for x in args.marks.split(","))
    os.chdir(ROOT)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    rows = run(marks, args.concurrency, args.batch, args.queue_memory, not args.no_pace)
    print("\nqueued     on disk    node RSS MB  node+children MB  B/queued task  submit/s  drain/s")
    for r in rows:
        print(f"{r['queued']:>9,}  {r['on_disk']:>9,}  {r['node_rss_mb']:11.1f}  {r['all_rss_mb']:16.1f}  "
              f"{r['bytes_per_task']:13,.0f}  {r['submit_per_s']:8,.0f}  {r.get('drain_per_s', 0):7,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
