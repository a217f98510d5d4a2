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

``--nodes 2``: two nodes, each the other's backup (two copies, the default), all four
children held. The client places its tasks over both (each holds about half); the
marks count the tasks held by both, and each node's RSS is reported: what a node's
own backlog costs it plus what keeping the copies of the other's costs
(mesh/node/copies.py). ``--tree PATH`` runs the nodes from another checkout (before
and after a change, side by side).

    .venv/bin/python -m bench.backlog --nodes 2 --marks 10000,100000
    .venv/bin/python -m bench.backlog --nodes 2 --tree /work/main   # the code on main

``--tracemalloc``: the nodes trace their Python allocations; at each mark the first
node's traced bytes per queued task are printed, and the lines that grew most (what a
held task and the copy of the other's cost in Python objects).

    .venv/bin/python -m bench.backlog --nodes 2 --marks 10000 --queue-memory 0 --tracemalloc

``--restart-backup`` (with ``--nodes 2``): once the last mark is queued, the second
node is killed (SIGKILL) and started again on its data dir, so the copies it kept of
the first node's tasks are gone; then the first node copies its disk part again
(mesh/node/disk_copies.py). Reported: how long that walk took, its rate, and the
first node's ``status`` round trips meanwhile (how responsive its loop stays).

    .venv/bin/python -m bench.backlog --nodes 2 --marks 100000 --restart-backup
"""
from __future__ import annotations

import argparse
import glob
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
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


def _alive(cc: Any, endpoint: str) -> int:
    from mesh.wire.protocol import ControlReply
    reply = cc.broadcast([endpoint], "members", timeout=STATUS_TIMEOUT)[endpoint]
    if not isinstance(reply, ControlReply) or not reply.ok:
        return 0
    return sum(1 for m in reply.payload or [] if m.get("state") == "alive")


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


def _snapshot(pid: int, where: str) -> tracemalloc.Snapshot:
    """A tracemalloc snapshot of node ``pid`` (bench/backlog_tasks.py dumps it)."""
    before = set(glob.glob(os.path.join(where, f"{pid}-*.snap")))
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while True:
        new = set(glob.glob(os.path.join(where, f"{pid}-*.snap"))) - before
        if new:
            path = new.pop()
            size = -1
            while size != os.path.getsize(path):     # until the dump is written
                size = os.path.getsize(path)
                time.sleep(0.2)
            return tracemalloc.Snapshot.load(path)
        if time.monotonic() > deadline:
            raise RuntimeError("the node did not dump a tracemalloc snapshot")
        time.sleep(0.05)


def _traced_growth(base: tracemalloc.Snapshot, now: tracemalloc.Snapshot, tasks: int) -> None:
    stats = now.compare_to(base, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"    traced Python allocations: +{total / 2**20:.1f} MiB, {total / tasks:,.0f} B per "
          "queued task; the lines that grew most (B per queued task):", flush=True)
    for s in stats[:14]:
        fr = s.traceback[0]
        print(f"      {s.size_diff / tasks:7,.0f}  {s.count_diff / tasks:5.2f} blocks  "
              f"{os.path.relpath(fr.filename, ROOT) if fr.filename.startswith(ROOT) else fr.filename}"
              f":{fr.lineno}", flush=True)


def _restart_backup(cc: Any, holder: Node, backup: Node, concurrency: int,
                    tree: str | None) -> dict[str, Any]:
    """Kill ``backup`` and start it again on its data dir; time ``holder``'s walk that
    copies its disk part to it again, and ``holder``'s status round trips meanwhile."""
    st = _status(cc, holder.endpoint)
    before = int(st.get("recopied_from_disk", 0))
    on_disk = int(st.get("queued_on_disk", 0))
    backup.note_children()
    backup.proc.kill()
    backup.proc.wait()
    env = None if tree is None else {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    backup.proc = subprocess.Popen(backup.cmd, cwd=tree or ROOT, stdout=backup._log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    t_restart = time.monotonic()
    backup.wait_ready(concurrency, 300.0)
    t_ready = time.monotonic()
    rtts: list[float] = []
    rss = 0
    started = 0.0
    deadline = t_ready + 600
    while time.monotonic() < deadline:
        t = time.perf_counter()
        st = _status(cc, holder.endpoint)
        rtts.append(time.perf_counter() - t)
        rss = max(rss, _rss(holder.proc.pid)[0])
        done = int(st.get("recopied_from_disk", 0)) - before
        if st.get("recopying_disk") and not started:
            started = time.monotonic()
        if done and not st.get("recopying_disk"):
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("the holder's disk part was not copied again within 600 s")
    end = time.monotonic()
    walk = end - (started or t_ready)
    r = {"on_disk": on_disk, "recopied": done, "restart_to_ready_s": t_ready - t_restart,
         "ready_to_done_s": end - t_ready, "walk_s": walk, "walk_per_s": done / walk,
         "status_ms_p50": statistics.median(rtts) * 1000, "status_ms_max": max(rtts) * 1000,
         "holder_rss_mb": rss / 2**20}
    print(f"backup restarted: ready in {r['restart_to_ready_s']:.1f} s; the holder copied "
          f"{done:,} of its {on_disk:,} tasks on disk again in {walk:.1f} s "
          f"({r['walk_per_s']:,.0f}/s; {r['ready_to_done_s']:.1f} s after the backup was ready); "
          f"its status round trip meanwhile p50 {r['status_ms_p50']:.1f} ms, max "
          f"{r['status_ms_max']:.1f} ms ({len(rtts)} samples); its RSS at most "
          f"{r['holder_rss_mb']:.1f} MB", flush=True)
    return r


def run(marks: list[int], concurrency: int, batch: int,
        queue_memory: int | None = None, pace: bool = True, nodes: int = 1,
        tree: str | None = None, trace: bool = False,
        restart_backup: bool = False) -> list[dict[str, Any]]:
    from bench.backlog_tasks import HOLD, make_app
    from bench.tasks import TASK_NAME
    from mesh.client.control import ControlClient
    from mesh.security.curve import Security

    top = max(marks)
    extra = ["--quota-tasks", str(2 * top), "--quota-bytes", str(max(1 << 28, 2048 * top)),
             *(["--queue-memory", str(queue_memory)] if queue_memory is not None else [])]
    gate = os.path.join(tempfile.mkdtemp(prefix="mesh-backlog-"), "gate")
    snaps = os.path.join(os.path.dirname(gate), "snapshots")
    env = None
    if trace:
        os.mkdir(snaps)
        env = {"PYTHONTRACEMALLOC": "1", "MESH_BENCH_SNAPSHOTS": snaps}
    all_nodes = [Node(concurrency, "WARNING", extra, app="bench.backlog_tasks", tree=tree, env=env)]
    app = None
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(nodes - 1):
            all_nodes.append(Node(concurrency, "WARNING", [*extra, "--peers", all_nodes[0].endpoint],
                                  app="bench.backlog_tasks", tree=tree, env=env))
        for n in all_nodes:
            n.wait_ready(concurrency, 30.0)
        node = all_nodes[0]
        app = make_app(peers=[n.endpoint for n in all_nodes])
        inc, hold = app.tasks[TASK_NAME], app.tasks[HOLD]
        with ControlClient(security=Security(None)) as cc:
            def held_now() -> int:
                return sum(int(_status(cc, n.endpoint)["held"]) for n in all_nodes)

            deadline = time.monotonic() + 60      # every node sees every other alive
            while nodes > 1 and not all(_alive(cc, n.endpoint) >= nodes for n in all_nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the nodes did not see each other")
                time.sleep(0.1)
            time.sleep(1.5)       # (their backups are chosen over the alive peers, cached 1 s)
            held = [hold.delay(gate) for _ in range(concurrency * nodes)]
            deadline = time.monotonic() + 60       # (a node with two sheds one to the other)
            while any(_status(cc, n.endpoint)["busy"] < concurrency for n in all_nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the children did not take the hold tasks")
                time.sleep(0.05)
            base = [_rss(n.proc.pid) for n in all_nodes]
            base_own, base_all = base[0]
            base_snap = _snapshot(all_nodes[0].proc.pid, snaps) if trace else None
            for n, (own, total) in zip(all_nodes, base):
                print(f"node {n.port} ready, children held; node RSS {own / 2**20:.1f} MB, node + "
                      f"children {total / 2**20:.1f} MB", flush=True)
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
                    while pace and held_now() < submitted - batch:
                        time.sleep(0.01)
                t_sub = time.perf_counter()
                while held_now() < mark + concurrency * nodes:
                    for n in all_nodes:
                        if n.proc.poll() is not None:
                            raise RuntimeError(f"meshnode exited:\n{n.log_tail()}")
                    time.sleep(0.05)
                if nodes > 1:              # every copy confirmed (the backups' RSS with them)
                    while any(_status(cc, n.endpoint).get("copies_waiting", 0) for n in all_nodes):
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
                if nodes > 1:
                    per = []
                    for n in all_nodes:
                        s2 = _status(cc, n.endpoint)
                        o, _ = _rss(n.proc.pid)
                        per.append({"node": n.port, "rss_mb": o / 2**20, "held": s2["held"],
                                    "on_disk": s2.get("queued_on_disk", 0),
                                    "copies": s2.get("copies_kept", 0),
                                    "copies_on_disk": s2.get("copies_on_disk", 0)})
                        print(f"    node {n.port}: RSS {o / 2**20:7.1f} MB, holds {s2['held']:,} "
                              f"({per[-1]['on_disk']:,} on disk), keeps {per[-1]['copies']:,} "
                              f"copies of the other's ({per[-1]['copies_on_disk']:,} on disk)",
                              flush=True)
                    r["nodes"] = per
                if base_snap is not None:
                    _traced_growth(base_snap, _snapshot(node.proc.pid, snaps), mark)
            if restart_backup and nodes > 1:
                rows[-1]["restart"] = _restart_backup(cc, all_nodes[0], all_nodes[1], concurrency,
                                                   tree)
            # (b) drain
            t0 = time.perf_counter()
            open(gate, "w").close()
            downs = sorted([m for m in marks if m < top], reverse=True) + [0]
            last_t, last_n = t0, top
            for m in downs:
                while True:
                    h = held_now()
                    if h <= m:
                        break
                    for n in all_nodes:
                        if n.proc.poll() is not None:
                            raise RuntimeError(f"meshnode exited:\n{n.log_tail()}")
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
        for n in all_nodes:
            n.stop()
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
    ap.add_argument("--nodes", type=int, default=1,
                    help="nodes (2: each the other's backup; their RSS each)")
    ap.add_argument("--restart-backup", action="store_true",
                    help="(--nodes 2) kill and restart the second node once the last mark is "
                         "queued; time the first node's copying of its disk part again")
    ap.add_argument("--tree", default=None,
                    help="run the nodes from this checkout (e.g. /work/main: before a change)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="trace the nodes' Python allocations: traced bytes per queued task "
                         "at each mark, and the lines that grew most")
    args = ap.parse_args(argv)
    marks = sorted(int(x) for x in args.marks.split(","))
    os.chdir(ROOT)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    rows = run(marks, args.concurrency, args.batch, args.queue_memory, not args.no_pace,
               args.nodes, args.tree, args.tracemalloc, args.restart_backup)
    print("\nqueued     on disk    node RSS MB  node+children MB  B/queued task  submit/s  drain/s")
    for r in rows:
        print(f"{r['queued']:>9,}  {r['on_disk']:>9,}  {r['node_rss_mb']:11.1f}  {r['all_rss_mb']:16.1f}  "
              f"{r['bytes_per_task']:13,.0f}  {r['submit_per_s']:8,.0f}  {r.get('drain_per_s', 0):7,.0f}")
    if args.nodes > 1:
        print("\nqueued (both)  node    RSS MB   holds (on disk)        copies kept (on disk)")
        for r in rows:
            for p in r["nodes"]:
                print(f"{r['queued']:>13,}  {p['node']:>5}  {p['rss_mb']:7.1f}   {p['held']:>9,} "
                      f"({p['on_disk']:>9,})  {p['copies']:>9,} ({p['copies_on_disk']:>9,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
