"""Benchmark mesh end to end: one real ``meshnode`` (2 children), one client.

Each run starts a fresh node (``meshnode --app bench.tasks --concurrency 2 --no-mdns``
on a free loopback port, temp data dir), waits for it with control pings, then:

  (a) throughput: ``[inc.delay(i) for i in range(N)]``, then ``get()`` every result and
      check it is ``i + 1``; tasks/s = N / (first submit -> last result), and the
      submit-only rate (N / time of the submit loop);
  (b) latency: sequential ``inc.delay(i).get()`` round trips; p50/p99/max in ms;
  (c) peak RSS of the node plus its children, sampled every ~50 ms (not during (b),
      whose round trips the sampler would delay; once before and once after it).

The medians over ``--repeat`` runs are printed next to the reference figures from
../shared/BENCHMARKS.md. See bench/README.md.

Run from the repo root:  .venv/bin/python -m bench.run [--repeat 3] [--with-ceiling] [--json]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JSON = os.path.join(ROOT, "bench", "results", "latest.json")

# ../shared/BENCHMARKS.md (2 vCPU, Python 3.11; 5,000 tasks, 300 round trips, median of 3)
REFERENCE: dict[str, dict[str, float]] = {
    "Celery 5.7 + Redis (prefork -c 2)": {"tasks_per_s": 516, "p50_ms": 2.46, "p99_ms": 6.36, "rss_mb": 144},
    "Dramatiq 2.2 + Redis (best peer)": {"tasks_per_s": 1883, "p50_ms": 4.67, "p99_ms": 10.5, "rss_mb": 83},
    "hand-rolled pyzmq (ceiling, ref.)": {"tasks_per_s": 66668, "p50_ms": 0.087, "p99_ms": 0.144, "rss_mb": 40},
    "mesh goal": {"tasks_per_s": 20000, "p50_ms": 0.3, "p99_ms": 1.0, "rss_mb": 90},
}


# -- helpers --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 1)) - 1))
    return sorted_vals[k]


def meshnode_cmd() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "meshnode")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("meshnode")
    if found:
        return [found]
    return [sys.executable, "-m", "mesh.cli.meshnode"]


def _lists_children() -> bool:
    me = os.getpid()
    return os.path.exists(f"/proc/{me}/task/{me}/children")


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``. On Linux from ``/proc/PID/task/TID/children`` (the
    children of each thread), a few small reads; psutil's ``children(recursive=True)``
    reads the stat file of every process on the machine instead (2.5 ms of CPU with
    ~100 processes, tens of ms when the machine is loaded). psutil where the kernel does
    not list children."""
    if not _lists_children():
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue                       # ended meanwhile
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue                   # the thread ended meanwhile
            out += kids
            todo += kids
    return out


class RssSampler(threading.Thread):
    """Every ``interval`` s, the summed RSS of a process and all its descendants; keeps
    the peak. Children are re-listed each time, so replaced children are counted.

    ``pause()`` stops sampling until ``resume()`` (the latency phase: the sampler shares
    the client's GIL and CPU, and a sample landing on a round trip delayed it; see
    docs/performance.md, "Round 8a"). Sampling is cheap (``descendants``) but not free."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self.last = 0
        self._stop_ev = threading.Event()
        self._running = threading.Event()       # clear while paused
        self._running.set()
        self._lock = threading.Lock()            # one sample at a time; pause() waits for it
        self._procs: dict[int, psutil.Process] = {pid: self.proc}

    def sample(self, only_if_running: bool = False) -> int:
        with self._lock:
            if only_if_running and not self._running.is_set():
                return self.last             # paused since this thread last looked
            total, count = 0, 0
            try:
                pids = [self.pid, *descendants(self.pid)]
            except psutil.Error:
                return 0
            procs = self._procs
            for gone in procs.keys() - set(pids):
                del procs[gone]
            for pid in pids:
                try:
                    p = procs.get(pid)
                    if p is None:
                        p = procs[pid] = psutil.Process(pid)
                    total += p.memory_info().rss
                    count += 1
                except psutil.Error:
                    procs.pop(pid, None)
            self.samples += 1
            self.last = total
            if total > self.peak:
                self.peak, self.peak_procs = total, count
            return total

    def run(self) -> None:
        while not self._stop_ev.is_set():
            self._running.wait()
            if self._stop_ev.is_set():
                break
            self.sample(only_if_running=True)
            self._stop_ev.wait(self.interval)

    def pause(self) -> None:
        """Take one sample now, then none until ``resume()``."""
        self._running.clear()
        self.sample()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop_ev.set()
        self._running.set()
        self.join(2)


class Node:
    """One ``meshnode`` subprocess; ``stop()`` always leaves nothing behind."""

    def __init__(self, concurrency: int, loglevel: str, extra: list[str] | None = None,
                 app: str = "bench.tasks", tree: str | None = None,
                 env: dict[str, str] | None = None):
        self.tmp = tempfile.mkdtemp(prefix="mesh-bench-")
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.tmp, "node.log")
        self.cmd = meshnode_cmd() + [
            "--app", app, "--name", f"bench-{self.port}", "--bind", self.endpoint,
            "--concurrency", str(concurrency), "--no-mdns",
            "--data-dir", os.path.join(self.tmp, "data"), "--shutdown-timeout", "5",
            "--loglevel", loglevel, *(extra or [])]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        if tree is not None:     # --compare tree:PATH: mesh imported from another checkout
            env = {**os.environ, **(env or {}), "PYTHONPATH": os.path.abspath(tree)}
        elif env is not None:
            env = {**os.environ, **env}
        self.proc = subprocess.Popen(self.cmd, cwd=tree or ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.children: dict[int, psutil.Process] = {}   # every child seen, to reap leftovers

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def note_children(self) -> list[int]:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        for c in kids:
            self.children.setdefault(c.pid, c)
        return [c.pid for c in kids]

    def wait_ready(self, concurrency: int, timeout: float, keys: str | None = None) -> float:
        """Ping until the node answers, then until its children are up; returns the
        seconds it took. Raises with the node's log if it exits or the deadline passes."""
        from mesh.client.control import ControlClient
        from mesh.security.curve import Security
        from mesh.wire.protocol import ControlReply
        t0 = time.monotonic()
        deadline = t0 + timeout
        with ControlClient(security=Security.load(keys or "", "admin")) as cc:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"meshnode exited with code {self.proc.returncode} before it "
                                       f"was ready:\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"meshnode did not answer ping within {timeout:g} s; its "
                                       f"log:\n{self.log_tail() or '(empty)'}")
                reply = cc.broadcast([self.endpoint], "ping", timeout=min(0.25, left))[self.endpoint]
                if isinstance(reply, ControlReply) and reply.ok:
                    break
        while len(self.note_children()) < concurrency:
            if self.proc.poll() is not None:
                raise RuntimeError(f"meshnode exited with code {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"meshnode has not started {concurrency} children within "
                                   f"{timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.005)
        return time.monotonic() - t0

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; then kill any child it left behind."""
        try:
            if self.proc.poll() is None:
                self.note_children()
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            for c in self.children.values():   # psutil checks pid + create time: no reuse mistakes
                try:
                    if c.is_running():
                        c.kill()
                except psutil.Error:
                    pass
            return self.proc.returncode
        finally:
            self._log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- one measurement ------------------------------------------------------------------
def _start_subscriber(endpoint: str) -> subprocess.Popen[str]:
    """A separate process subscribed to all of the node's events (``--compare events``)."""
    from mesh.client.control import ControlClient
    from mesh.security.curve import Security
    with ControlClient(security=Security(None)) as cc:
        reply = cc.broadcast([endpoint], "ping")[endpoint]
    events = getattr(reply, "payload", {}).get("events")
    if not events:
        raise RuntimeError(f"the node has no events endpoint: {reply!r}")
    sub = subprocess.Popen([sys.executable, "-m", "bench.subscriber", events], cwd=ROOT,
                           stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != "ready":
        raise RuntimeError("the events subscriber did not start")
    time.sleep(0.5)    # its subscription reaches the node's XPUB (no events before it does)
    return sub


def _stop_subscriber(sub: subprocess.Popen[str]) -> int:
    sub.send_signal(signal.SIGTERM)
    out, _ = sub.communicate(timeout=30)
    return int(out.split()[-1]) if out.split() else 0


def run_once(args: argparse.Namespace, extra: list[str] | None = None) -> dict[str, Any]:
    from bench.tasks import TASK_NAME, make_app

    subscribe = extra == ["events"]        # --compare events: a subscriber, not a flag
    made_keys = None
    if extra == ["keys"]:                  # --compare keys: a keyed mesh and client (CURVE)
        from mesh.security.keys import init
        made_keys = tempfile.mkdtemp(prefix="mesh-bench-keys-")
        init(os.path.join(made_keys, "k"))
        extra = ["--keys", os.path.join(made_keys, "k")]
    keys = extra[extra.index("--keys") + 1] if extra and "--keys" in extra[:-1] else None
    tree = None
    if extra and len(extra) == 1 and extra[0].startswith("tree:"):   # another checkout's nodes
        tree, extra = extra[0][len("tree:"):], None
    flags = None if subscribe else extra
    node = Node(args.concurrency, args.loglevel, flags, tree=tree)
    others = [Node(args.concurrency, args.loglevel, [*(flags or []), "--peers", node.endpoint],
                   tree=tree)
              for _ in range(args.nodes - 1)]        # --nodes: a mesh, seeded with the first
    sampler: RssSampler | None = None
    sub: subprocess.Popen[str] | None = None
    app = None
    try:
        sampler = RssSampler(node.proc.pid, args.sample_interval)
        sampler.start()
        ready_s = node.wait_ready(args.concurrency, args.start_timeout, keys)
        for o in others:
            o.wait_ready(args.concurrency, args.start_timeout, keys)
        if others:
            _wait_mesh(node.endpoint, args.nodes, args.start_timeout, keys)
        if subscribe:
            sub = _start_subscriber(node.endpoint)
        app = make_app(peers=[node.endpoint, *(o.endpoint for o in others)], keys=keys)
        inc = app.tasks[TASK_NAME]
        timeout = args.result_timeout

        def check_alive() -> None:
            if node.proc.poll() is not None:
                raise RuntimeError(f"meshnode exited with code {node.proc.returncode} during the "
                                   f"run:\n{node.log_tail()}")

        # warm-up (not measured): the client's I/O thread, connections, the children
        for i in range(args.warmup):
            if inc.delay(i).get(timeout=timeout) != i + 1:
                raise RuntimeError("warm-up: wrong result")
        idle_rss = sampler.sample()

        # (a) throughput
        n = args.tasks
        node_p = psutil.Process(node.proc.pid)
        cpu0 = sum(node_p.cpu_times()[:2])     # the node's own CPU (not its children's)
        own0 = time.process_time()             # this client's, its I/O thread included
        t0 = time.perf_counter()
        results = [inc.delay(i) for i in range(n)]
        t_sub = time.perf_counter()
        for i, r in enumerate(results):
            try:
                v = r.get(timeout=timeout)
            except Exception:
                check_alive()
                raise
            if v != i + 1:
                raise RuntimeError(f"throughput: task {i} returned {v!r}, expected {i + 1}")
        t1 = time.perf_counter()
        node_cpu_us = (sum(node_p.cpu_times()[:2]) - cpu0) / n * 1e6
        client_cpu_us = (time.process_time() - own0) / n * 1e6
        del results
        check_alive()

        # (b) latency, with the RSS sampler paused (a sample on the client's GIL delayed
        # the trip it landed on: round 8a); the node holds at most one task meanwhile,
        # and a sample is taken before and after
        sampler.pause()
        lat: list[float] = []
        pc = time.perf_counter
        for i in range(args.latency):
            a = pc()
            v = inc.delay(i).get(timeout=timeout)
            lat.append(pc() - a)
            if v != i + 1:
                raise RuntimeError(f"latency: task {i} returned {v!r}, expected {i + 1}")
        lat.sort()
        check_alive()
        sampler.resume()
        sampler.sample()
        pss = 0
        try:
            node_p = psutil.Process(node.proc.pid)
            for p in [node_p] + node_p.children(recursive=True):
                pss += getattr(p.memory_full_info(), "pss", 0)
        except psutil.Error:
            pss = 0
        received = _stop_subscriber(sub) if sub is not None else None
        sub = None
        return {
            "events_received": received,
            "tasks": n, "latency_samples": len(lat), "ready_s": ready_s,
            "tasks_per_s": n / (t1 - t0), "submit_per_s": n / (t_sub - t0),
            "node_cpu_us": node_cpu_us, "client_cpu_us": client_cpu_us,
            "throughput_wall_s": t1 - t0,
            "p50_ms": pct(lat, 0.50) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3, "max_ms": lat[-1] * 1e3,
            "mean_ms": statistics.fmean(lat) * 1e3,
            "rss_mb": sampler.peak / 2**20, "rss_idle_mb": idle_rss / 2**20,
            "pss_end_mb": pss / 2**20 if pss else None,
            "rss_procs": sampler.peak_procs, "rss_samples": sampler.samples,
        }
    finally:
        if app is not None:
            try:
                app.close()
            except Exception as e:  # noqa: BLE001 - never let cleanup hide the real error
                print(f"warning: closing the client failed: {e!r}", file=sys.stderr)
        if sampler is not None:
            sampler.stop()
        if sub is not None:
            sub.kill()
            sub.wait(10)
        node.stop()
        if made_keys is not None:
            shutil.rmtree(made_keys, ignore_errors=True)
        for o in others:
            o.stop()


def _wait_mesh(endpoint: str, n: int, timeout: float, keys: str | None = None) -> None:
    """Until the first node sees ``n`` members alive (--nodes)."""
    from mesh.client.control import ControlClient
    from mesh.security.curve import Security
    from mesh.wire.protocol import ControlReply
    deadline = time.monotonic() + timeout
    with ControlClient(security=Security.load(keys or "", "admin")) as cc:
        while True:
            reply = cc.broadcast([endpoint], "members", timeout=1.0)[endpoint]
            if isinstance(reply, ControlReply) and reply.ok and \
                    sum(m["state"] == "alive" for m in reply.payload) >= n:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {n} nodes did not form a mesh within {timeout:g} s")
            time.sleep(0.05)


# -- output ---------------------------------------------------------------------------
def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.3f}"
    if kind == "mb":
        return f"{v:.1f}"
    if kind == "us":
        return f"{v:.0f}"
    return str(v)


COLS = [("tasks/s", "tasks_per_s", "rate"), ("submit/s", "submit_per_s", "rate"),
        ("p50 ms", "p50_ms", "ms"), ("p99 ms", "p99_ms", "ms"), ("max ms", "max_ms", "ms"),
        ("peak RSS MB", "rss_mb", "mb"), ("node us/task", "node_cpu_us", "us"),
        ("client us/task", "client_cpu_us", "us")]


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = ["run"] + [c[0] for c in COLS]
    body = [[label] + [_fmt(r.get(k), kind) for _, k, kind in COLS] for label, r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
    return out


def verdict(m: dict[str, Any], ceiling: dict[str, Any] | None = None) -> list[str]:
    """Issue #17's goals: throughput at least 25 % of the pyzmq ceiling measured in the
    same run (--with-ceiling), else the fixed figure of the first goal."""
    g = REFERENCE["mesh goal"]
    if ceiling:
        quarter = 0.25 * ceiling["tasks_per_s"]
        tput = (f"throughput >= 25 % of this run's ceiling ({quarter:,.0f} tasks/s)",
                m["tasks_per_s"] >= quarter)
    else:
        tput = ("throughput >= 20,000 tasks/s (--with-ceiling: 25 % of the ceiling)",
                m["tasks_per_s"] >= g["tasks_per_s"])
    checks = [tput,
              ("p50 < 0.3 ms", m["p50_ms"] < g["p50_ms"]),
              ("p99 < 1 ms", m["p99_ms"] < g["p99_ms"]),
              ("node + children < 90 MB", m["rss_mb"] < g["rss_mb"])]
    return [f"  [{'met' if ok else 'NOT met'}] {what}" for what, ok in checks]


def machine_info() -> dict[str, Any]:
    import msgpack
    import zmq

    import mesh
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": None, "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(), "mesh_version": mesh.__version__,
        "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "msgpack": msgpack.version,
        "git_commit": None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                            capture_output=True, text=True, timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# -- main -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark mesh with one real meshnode (2 children) and one client: "
                    "throughput, latency and the node's peak RSS, median of --repeat runs, "
                    "printed next to the reference figures of ../shared/BENCHMARKS.md.",
        epilog="Example: .venv/bin/python -m bench.run --repeat 3 --with-ceiling --json")
    ap.add_argument("-n", "--tasks", type=int, default=20000, metavar="N",
                    help="tasks submitted for throughput (default 20000)")
    ap.add_argument("--latency", type=int, default=1000, metavar="N",
                    help="sequential round trips for latency (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, metavar="R",
                    help="runs, each with a fresh node; medians are reported (default 3)")
    ap.add_argument("--warmup", type=int, default=100, metavar="N",
                    help="unmeasured round trips before each run (default 100)")
    ap.add_argument("--concurrency", type=int, default=2, help="node children (default 2)")
    ap.add_argument("--nodes", type=int, default=1, metavar="N",
                    help="run a mesh of N nodes (each with --concurrency children; the client "
                         "knows them all; peak RSS is the first node's). With 2: "
                         "--compare=--replicas=1 measures what the second copy costs")
    ap.add_argument("--with-ceiling", action="store_true",
                    help="also run the bare pyzmq ROUTER -> 2 DEALER loop (bench/zmq_ceiling.py) "
                         "in each run, side by side")
    ap.add_argument("--with-peers", action="store_true",
                    help="also run Celery and Dramatiq on a local redis-server (bench/peers.py), "
                         "same -n and --latency, each run interleaved with mesh's; skipped with "
                         "a line saying what to install when they are missing")
    ap.add_argument("--compare", metavar="FLAG", default=None,
                    help="also run mesh with this meshnode flag in each repeat, interleaved, and "
                         "print both side by side (e.g. --compare=--no-journal); 'events' "
                         "runs the other side with a process subscribed to every event; "
                         "'keys' with a fresh key directory (CurveZMQ on node and client; "
                         "--compare='--keys DIR' uses DIR); 'tree:PATH' runs the other side's "
                         "nodes from another checkout of mesh (e.g. a git worktree of main): "
                         "before/after in one run")
    ap.add_argument("--json", nargs="?", const=DEFAULT_JSON, default=None, metavar="PATH",
                    help=f"write results and machine info as JSON (default path "
                         f"{os.path.relpath(DEFAULT_JSON, ROOT)})")
    ap.add_argument("--sample-interval", type=float, default=0.05, metavar="S",
                    help="RSS sampling period in seconds (default 0.05)")
    ap.add_argument("--start-timeout", type=float, default=20.0, metavar="S",
                    help="deadline for the node to answer ping and start its children (default 20)")
    ap.add_argument("--result-timeout", type=float, default=60.0, metavar="S",
                    help="deadline for any single get() (default 60)")
    ap.add_argument("--loglevel", default="WARNING",
                    help="the node's --loglevel; its log goes to a temp file (default WARNING)")
    args = ap.parse_args(argv)
    for name in ("tasks", "latency", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGINT/SIGTERM unwind through the finally blocks, so the node is always stopped
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    os.chdir(ROOT)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    info = machine_info()
    print(f"mesh {info['mesh_version']} | Python {info['python']} | {info['cpu_count']} CPUs "
          f"({info['cpu_model'] or '?'}) | {info['date']}")
    print(f"{args.tasks:,} tasks for throughput, {args.latency:,} round trips for latency, "
          f"{args.concurrency} children, {args.repeat} run(s)\n", flush=True)

    runs: list[dict[str, Any]] = []
    alt: list[dict[str, Any]] = []
    ceil: list[dict[str, Any]] = []
    peers: dict[str, list[dict[str, Any]]] = {}
    t_all = time.monotonic()
    for k in range(args.repeat):
        r = run_once(args)
        runs.append(r)
        line = (f"run {k + 1}: mesh {r['tasks_per_s']:,.0f} tasks/s, p50 {r['p50_ms']:.3f} ms, "
                f"p99 {r['p99_ms']:.3f} ms, peak RSS {r['rss_mb']:.1f} MB")
        if args.with_ceiling:
            from bench.zmq_ceiling import run_ceiling
            c = run_ceiling(args.tasks, args.latency, workers=args.concurrency)
            ceil.append(c)
            line += f" | pyzmq ceiling {c['tasks_per_s']:,.0f} tasks/s, p50 {c['p50_ms']:.3f} ms"
        if args.compare:
            a = run_once(args, args.compare.split())
            alt.append(a)
            line += (f" | with {args.compare}: {a['tasks_per_s']:,.0f} tasks/s, "
                     f"p50 {a['p50_ms']:.3f} ms, p99 {a['p99_ms']:.3f} ms, RSS {a['rss_mb']:.1f} MB")
            if a.get("events_received") is not None:
                line += f", {a['events_received']:,} events received"
        if args.with_peers:
            from bench.peers import PEERS, run_in_subprocess
            for system in PEERS:
                pr = run_in_subprocess(system, args.tasks, args.latency, args.concurrency)
                if isinstance(pr, str):
                    if k == 0:
                        print(pr, flush=True)
                    continue
                peers.setdefault(system, []).append(pr)
                line += f" | {system} {pr['tasks_per_s']:,.0f} tasks/s, p50 {pr['p50_ms']:.3f} ms"
        print(line, flush=True)

    med = median_of(runs)
    rows = [(f"mesh run {i + 1}", r) for i, r in enumerate(runs)]
    rows += [(f"mesh {args.compare} run {i + 1}", a) for i, a in enumerate(alt)]
    rows += [(f"pyzmq ceiling run {i + 1}", c) for i, c in enumerate(ceil)]
    for system, pruns in peers.items():
        rows += [(f"{system} + redis run {i + 1}", r) for i, r in enumerate(pruns)]
    print("\nEach run (this machine):")
    print(table(rows))

    cmed = median_of(ceil) if ceil else None
    summary: list[tuple[str, dict[str, Any]]] = [("mesh, MEDIAN (this machine)", med)]
    amed = median_of(alt) if alt else None
    if amed:
        summary.append((f"mesh {args.compare}, MEDIAN", amed))
    if cmed:
        summary.append(("pyzmq ceiling, MEDIAN (this machine)", cmed))
    pmed = {system: median_of(pruns) for system, pruns in peers.items()}
    for system, m in pmed.items():
        summary.append((f"{system} + redis, MEDIAN (this machine)", m))
    summary += [(k, dict(v)) for k, v in REFERENCE.items()]
    print(f"\nMedians of {args.repeat} run(s) next to ../shared/BENCHMARKS.md "
          "(reference rows: 5,000 tasks, 300 round trips, their machine):")
    print(table(summary))
    extra = (f"\nmesh medians: node ready in {med['ready_s'] * 1e3:.0f} ms; "
             f"RSS after warm-up {med['rss_idle_mb']:.1f} MB")
    if med.get("pss_end_mb"):
        extra += f", PSS at end {med['pss_end_mb']:.1f} MB (shared pages counted once)"
    print(extra)
    if cmed:
        print(f"mesh / ceiling on this machine: {med['tasks_per_s'] / cmed['tasks_per_s']:.1%} of "
              f"the throughput, p50 {med['p50_ms'] / cmed['p50_ms']:.1f}x the ceiling's")
    for system, m in pmed.items():
        print(f"mesh / {system} on this machine: {med['tasks_per_s'] / m['tasks_per_s']:.1f}x the "
              f"throughput; p50 {med['p50_ms']:.3f} vs {m['p50_ms']:.3f} ms")
    if amed:
        print(f"mesh / mesh {args.compare}: {med['tasks_per_s'] / amed['tasks_per_s']:.1%} of the "
              f"throughput; p50 {med['p50_ms']:.3f} vs {amed['p50_ms']:.3f} ms; "
              f"p99 {med['p99_ms']:.3f} vs {amed['p99_ms']:.3f} ms; node CPU per task "
              f"{med['node_cpu_us']:.0f} vs {amed['node_cpu_us']:.0f} us, client "
              f"{med['client_cpu_us']:.0f} vs {amed['client_cpu_us']:.0f} us")
    print("\nGoal (median):")
    print("\n".join(verdict(med, cmed)))
    print(f"\ntotal time {time.monotonic() - t_all:.1f} s")

    if args.json:
        out = {"machine": info, "params": {k: v for k, v in vars(args).items() if k != "json"},
               "mesh": {"runs": runs, "median": med},
               "ceiling": {"runs": ceil, "median": cmed} if ceil else None,
               "compare": {"flag": args.compare, "runs": alt, "median": amed} if alt else None,
               "peers": {s: {"runs": peers[s], "median": pmed[s]} for s in peers},
               "reference": REFERENCE}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print(f"wrote {os.path.relpath(os.path.abspath(args.json), ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
