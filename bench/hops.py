"""Where a lone round trip's wall time goes, hop by hop (issue #17, round 10).

Two nodes (two copies, journal on), a warm-up, then ``--trips`` sequential
``inc.delay(i).get()``, with time stamps (``perf_counter_ns``: CLOCK_MONOTONIC, one
clock for every process) at each step of the path in the client, both nodes and
their children; the bare pyzmq ceiling's lone round trip is measured in the same run,
before and after. Prints the median of each step over the trips in which every step
was seen in order.

The stamps come from wrappers this module puts on a few functions when a process
starts with ``MESH_HOPS`` set (a ``sitecustomize`` in a scratch directory put first on
the nodes' ``PYTHONPATH``; children are forked from the node and inherit them; the
client is this process). Nothing in mesh knows of it: off, it costs nothing. A
stamp costs ~0.2 us (kept in memory, written out every FLUSH_AT stamps: the trips
where a write lands are slower, the medians are not).

    .venv/bin/python -m bench.hops --trips 3000 [--tree PATH] [--json OUT]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_buf: list[tuple[str, int]] = []
_pid = 0
_dir = ""
_clock = time.perf_counter_ns
FLUSH_AT = 256                # stamps kept in memory before one write to the process's file


def stamp(name: str) -> None:
    """~0.2 us: the write is one per FLUSH_AT stamps (the trips after the measured
    ones push the last stamps out)."""
    _buf.append((name, _clock()))
    if len(_buf) >= FLUSH_AT:
        flush()


def flush() -> None:
    if not _buf or not os.path.isdir(_dir):
        return
    data = "".join(f"{n} {t}\n" for n, t in _buf).encode()
    _buf.clear()
    fd = os.open(os.path.join(_dir, f"{_pid}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _forked() -> None:
    """A forked child writes its own file, without its parent's stamps."""
    global _pid
    _pid = os.getpid()
    _buf.clear()


def _wrap(owner: Any, attr: str, before: str | None = None, after: str | None = None,
          name_of: Callable[..., str] | None = None) -> None:
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        if before is not None:
            stamp(before)
        if name_of is not None:
            stamp(name_of(*a, **kw))
        r = fn(*a, **kw)
        if after is not None:
            stamp(after)
        return r
    setattr(owner, attr, wrapper)


def _client_stamp(client: Any, msg: Any, link: Any) -> str:
    """c.Result from the node that ran the task (its holder), c.Result.b from another
    (its backup, round 10); c.<type> for the rest."""
    name = type(msg).__name__
    if name == "Result" and msg.node and link.node_id and msg.node != link.node_id:
        return "c.Result.b"
    return f"c.{name}"


def install(directory: str) -> None:
    """Put the stamps on (in a node or a client process)."""
    global _dir, _pid
    _dir, _pid = directory, os.getpid()
    import atexit
    atexit.register(flush)
    os.register_at_fork(after_in_child=_forked)
    from mesh.client import io as cio
    from mesh.node import channel, copies, intake, ledger, peers, pool, replicas, zmqloop
    # client: the I/O thread sends the SUBMIT; reads an ACK, then the RESULT
    _wrap(cio, "send_frames", before="c.out")
    _wrap(cio.Client, "_handle", name_of=_client_stamp)
    # node: a SUBMIT in, the commit, the task to a child, its ChildDone read
    _wrap(intake.Intake, "submit", before="n.submit")
    _wrap(ledger.Ledger, "commit", before="n.commit0", after="n.commit1")
    _wrap(pool.Pool, "_send", before="n.to_child")
    _wrap(pool.Pool, "_on_readable", before="n.child_readable")
    _wrap(pool.Pool, "_task_done", after="n.task_done")
    # the child: the task read, its ChildDone written
    _wrap(channel.BlockingChannel, "recv", after="k.recv")
    _wrap(channel.BlockingChannel, "send", before="k.send0", after="k.send1")
    # the holder's REPLICATE out, the backup's side, the ack back
    _wrap(peers.PeerSockets, "send", before="n.peer_send")
    _wrap(copies.Copies, "on_replicate", before="b.repl_in")
    _wrap(replicas.Replicas, "on_ack", before="n.ack_in")
    # the front door's sends (the RESULT after the ack). Sends are stamped before the
    # call: the process woken often runs before the sender gets its core back
    _wrap(zmqloop.SocketDriver, "send", before="n.send")


# the path, in order: (stamp, process) with process c client, h holder, k child, b backup
PATH = [("c.delay", "c"), ("c.out", "c"), ("n.submit", "h"), ("n.commit0", "h"),
        ("n.commit1", "h"), ("n.to_child", "h"), ("k.recv", "k"), ("k.send0", "k"),
        ("k.send1", "k"), ("n.child_readable", "h"), ("n.peer_send", "h"),
        ("b.repl_in", "b"), ("n.peer_send", "b"), ("n.ack_in", "h"),
        ("n.send", "h"), ("c.Result", "c"), ("c.got", "c")]

BACKUP_ACK = 12               # PATH's index of the backup's ack: what follows it varies
# with round 10, a lone task's backup sends its RESULT to the owner, and the client
# takes whichever of the two comes first
BACKUP_PATH = PATH[:BACKUP_ACK] + [("n.send", "b"), ("c.Result.b", "c"), ("c.got", "c")]

STEPS = {      # (process, stamp) -> what the time from the step before it is
    ("c", "c.out"): "client: delay() -> the SUBMIT's send starts (caller -> I/O thread)",
    ("h", "n.submit"): "zmq hop client -> holder (I/O threads, the holder's wake-up, read, decode)",
    ("h", "n.commit0"): "holder: intake (checks, journal add, accept) -> the commit starts",
    ("h", "n.commit1"): "holder: the commit",
    ("h", "n.to_child"): "holder: commit -> the task's write to a child starts",
    ("k", "k.recv"): "hop holder -> child (the child's wake-up, its read)",
    ("k", "k.send0"): "child: runs the task (decode, run, encode)",
    ("k", "k.send1"): "child: its ChildDone written",
    ("h", "n.child_readable"): "hop child -> holder (the holder's wake-up)",
    ("h", "n.peer_send"): "holder: ChildDone read, ledger.finish, the REPLICATE's send starts",
    ("b", "b.repl_in"): "zmq hop holder -> backup (I/O threads, the backup's wake-up)",
    ("b", "n.peer_send"): "backup: REPLICATE decoded, result journalled, the ack's send starts",
    ("h", "n.ack_in"): "zmq hop backup -> holder",
    ("h", "n.send"): "holder: ack read -> the RESULT's send starts",
    ("c", "c.Result"): "zmq hop holder -> client (I/O threads, the client's I/O thread)",
    ("b", "n.send"): "backup: REPLICATE decoded, result journalled, its RESULT's send starts "
                     "(when it came first)",
    ("c", "c.Result.b"): "zmq hop backup -> client (when the backup's RESULT came first)",
    ("c", "c.got"): "client: RESULT handled -> get() returns (the caller's wake-up)",
}


def _load(directory: str) -> dict[int, list[tuple[int, str]]]:
    by_pid: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir(directory):
        if not name.endswith(".log"):
            continue
        pid = int(name[:-4])
        rows = by_pid.setdefault(pid, [])
        with open(os.path.join(directory, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    rows.append((int(parts[1]), parts[0]))
        rows.sort()
    return by_pid


def analyse(directory: str, trips: list[tuple[int, int]], client_pid: int,
            node_pids: set[int]) -> dict[str, Any]:
    """Median per step over the trips in which every step was seen, in order."""
    import bisect
    by_pid = _load(directory)
    stamps = {pid: ([t for t, _ in rows], rows) for pid, rows in by_pid.items()}
    child_pids = set(by_pid) - node_pids - {client_pid}
    steps: dict[tuple[str, str], list[int]] = {k: [] for k in STEPS}
    totals: list[int] = []
    complete = by_backup = 0
    for a, b in trips:
        window: dict[int, list[tuple[int, str]]] = {}
        for pid, (ts, rows) in stamps.items():
            i, j = bisect.bisect_left(ts, a), bisect.bisect_right(ts, b)
            if i < j:
                window[pid] = rows[i:j]
        holder = next((p for p in node_pids
                       if any(n == "n.submit" for _, n in window.get(p, []))), None)
        if holder is None:
            continue
        backup = next((p for p in node_pids if p != holder), None)
        procs = {"c": [client_pid], "h": [holder], "b": [backup] if backup else [],
                 "k": list(child_pids)}
        seen: dict[tuple[str, str], int] = {("c", "c.delay"): a}

        def first(who: str, name: str, after: int, procs: dict[str, list[int]] = procs,
                  window: dict[int, list[tuple[int, str]]] = window) -> int | None:
            return min((ts for p in procs[who] for ts, n in window.get(p, [])
                        if n == name and ts >= after), default=None)

        def walk(part: list[tuple[str, str]], t: int, first: Any = first,
                 seen: dict[tuple[str, str], int] = seen) -> int | None:
            """Each step of ``part`` in order from ``t`` (into ``seen``): the last one's
            time, or None if one is missing."""
            for name, who in part:
                found = first(who, name, t)
                if found is None:
                    return None
                seen[who, name] = t = found
            return t
        t = walk(PATH[1:BACKUP_ACK], a)
        if t is None:
            continue
        from_holder, from_backup = first("c", "c.Result", t), first("c", "c.Result.b", t)
        if from_backup is not None and (from_holder is None or from_backup < from_holder):
            path = BACKUP_PATH                      # the backup's RESULT came first
            by_backup += 1
        else:
            path = PATH
        if walk(path[BACKUP_ACK:-1], t) is None:
            continue
        complete += 1
        seen["c", "c.got"] = b
        prev = ("c", "c.delay")
        for name, who in path[1:]:
            steps[who, name].append(seen[who, name] - seen[prev])
            prev = (who, name)
        totals.append(b - a)
    return {
        "trips": len(trips), "complete": complete, "answered_by_backup": by_backup,
        "steps": {STEPS[k]: statistics.median(v) / 1e3 if v else None
                  for k, v in steps.items()},
        "total_p50_us": statistics.median(totals) / 1e3 if totals else None,
        "all_p50_us": statistics.median([b - a for a, b in trips]) / 1e3,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.run import Node, _wait_mesh
    from bench.tasks import TASK_NAME, make_app
    from bench.zmq_ceiling import run_ceiling

    tmp = tempfile.mkdtemp(prefix="mesh-hops-")
    shim, logs = os.path.join(tmp, "shim"), os.path.join(tmp, "logs")
    os.makedirs(shim)
    os.makedirs(logs)
    tree = os.path.abspath(args.tree or ROOT)
    with open(os.path.join(shim, "sitecustomize.py"), "w") as f:
        # this file by its path: mesh itself comes from the nodes' tree (PYTHONPATH)
        f.write("import os\nif os.environ.get('MESH_HOPS'):\n"
                "    import importlib.util as u\n"
                f"    spec = u.spec_from_file_location('mesh_hops', {os.path.abspath(__file__)!r})\n"
                "    m = u.module_from_spec(spec); spec.loader.exec_module(m)\n"
                "    m.install(os.environ['MESH_HOPS'])\n")
    env = {"MESH_HOPS": logs, "PYTHONPATH": f"{shim}:{tree}"}
    ceil0 = run_ceiling(2000, args.trips)
    first = Node(2, "warning", env=env)
    second = Node(2, "warning", ["--peers", first.endpoint], env=env)
    app = None
    try:
        first.wait_ready(2, 30)
        second.wait_ready(2, 30)
        _wait_mesh(first.endpoint, 2, 30)
        install(logs)
        app = make_app(peers=[first.endpoint, second.endpoint])
        inc = app.tasks[TASK_NAME]
        for i in range(args.warmup):
            inc.delay(i).get(timeout=30)
        time.sleep(0.5)
        trips: list[tuple[int, int]] = []
        pc = time.perf_counter_ns
        for i in range(args.trips):
            a = pc()
            stamp("c.delay")
            v = inc.delay(i).get(timeout=30)
            b = pc()
            trips.append((a, b))
            if v != i + 1:
                raise RuntimeError(f"task {i} returned {v!r}")
        for i in range(FLUSH_AT * 2):      # not measured: every process writes its stamps
            inc.delay(i).get(timeout=30)
        flush()
    finally:
        if app is not None:
            app.close()
        first.stop()
        second.stop()
    ceil1 = run_ceiling(2000, args.trips)
    out = analyse(logs, trips, os.getpid(), {first.proc.pid, second.proc.pid})
    out["ceiling_p50_us"] = [ceil0["p50_ms"] * 1e3, ceil1["p50_ms"] * 1e3]
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trips", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--tree", help="the nodes run this checkout of mesh (default: this one)")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    out = run(args)
    print(f"{out['complete']} of {out['trips']} trips had every step in order "
          f"({out['answered_by_backup']} answered by the backup first); "
          f"p50 of those {out['total_p50_us']:.0f} us, of all {out['all_p50_us']:.0f} us; "
          f"the pyzmq ceiling's p50 {out['ceiling_p50_us'][0]:.0f} / "
          f"{out['ceiling_p50_us'][1]:.0f} us (before / after)")
    print("| step | median us |\n|---|---|")
    for desc in STEPS.values():
        v = out["steps"][desc]
        print(f"| {desc} | {v:.0f} |" if v is not None else f"| {desc} | - |")
    print(f"| sum of the medians | {sum(v for v in out['steps'].values() if v):.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
