"""Dashboard benchmark: memory and API response times with a million tasks in history.

Not a test: it measures. It writes N finished tasks straight into a journal file (the
node's own schema, through mesh.node.journal.Journal's connection: rows as the node
writes them, spread over the last 12 hours, 10% failed, 0.1% of another name), starts
a real ``meshnode --http`` on that data dir, and times the API, with the node's RSS
before and after, and the node's control ping while the heavy queries run (does the
loop stay free?). Then the same node without --http, for its RSS.

    .venv/bin/python -m bench.web                  # 1,000,000 tasks (about 1 min to write)
    .venv/bin/python -m bench.web -n 100000 --repeat 5
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from mesh import states
from mesh.client.control import ControlClient
from mesh.node.sqlite_journal import SqliteJournal as Journal
from mesh.wire import codec
from mesh.wire.protocol import ControlReply, Result, Submit, encode

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_history(directory: str, n: int) -> tuple[float, list[str]]:
    """n finished tasks in a journal at ``directory``; seconds taken, a few ids."""
    t0 = time.perf_counter()
    j = Journal(directory)
    now = time.time()
    span = 12 * 3600.0
    ids = []
    batch_t: list[tuple[Any, ...]] = []
    batch_r: list[tuple[Any, ...]] = []
    for i in range(n):
        tid = f"bench-{i:09d}"
        received = now - span + span * i / n
        name = "bench.rare" if i % 1000 == 999 else "bench.inc"
        failed = i % 10 == 9
        frame = encode(Submit(task_id=tid, name=name, payload=codec.dump_call([i], {})))
        if failed:
            res = Result(task_id=tid, state=states.FAILURE, runtime=0.0004, node="bench",
                         exc={"type": "ValueError", "module": "builtins", "message": f"bad {i}"},
                         traceback="Traceback (most recent call last):\nValueError: bad\n")
        else:
            res = Result(task_id=tid, state=states.SUCCESS, result=codec.dumps(i + 1),
                         runtime=0.0004, node="bench")
        batch_t.append((tid, b"client", frame, "RECEIVED", received))
        batch_r.append((tid, res.state, encode(res), received + 0.002))
        if i % 100_000 == 50_000:
            ids.append(tid)
        if len(batch_t) >= 50_000 or i == n - 1:
            j.db.execute("BEGIN")
            j.db.executemany("INSERT INTO tasks (task_id, client, frame, state, received) "
                             "VALUES (?, ?, ?, ?, ?)", batch_t)
            # (schema 4: a result names its task's row)
            j.db.executemany("INSERT INTO results (task, task_id, state, result, finished) "
                             "SELECT rowid, ?1, ?2, ?3, ?4 FROM tasks WHERE task_id=?1", batch_r)
            j.db.execute("COMMIT")
            batch_t, batch_r = [], []
    j.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    j.close()
    return time.perf_counter() - t0, ids


def start_node(data: str, http: str | None, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "mesh.cli.meshnode", "--app", "bench.tasks", "--bind", ep,
            "--no-mdns", "--concurrency", "2", "--data-dir", data, "--name", "bench",
            "--result-expires", str(7 * 86400), "--loglevel", "WARNING"]
    if http:
        argv += ["--http", http]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
                            env=env, start_new_session=True)
    with ControlClient() as cc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = cc.broadcast([ep], "ping", timeout=0.5)[ep]
            if isinstance(r, ControlReply):
                return proc, ep
            if proc.poll() is not None:
                break
    stop(proc)
    raise SystemExit(f"the node did not start; its log:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def rss_mib(proc: subprocess.Popen[bytes]) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20      # the node only, no children


class PingWatch:
    """Control pings to the node every 20 ms on a thread: the worst round trip seen."""

    def __init__(self, ep: str):
        self.ep, self.worst, self.n = ep, 0.0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        with ControlClient() as cc:
            while not self._stop.wait(0.02):
                t = time.perf_counter()
                cc.broadcast([self.ep], "ping", timeout=5)
                self.worst = max(self.worst, time.perf_counter() - t)
                self.n += 1

    def close(self) -> None:
        self._stop.set()
        self._t.join()


def timed_get(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--tasks", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5, help="timings per request (median, max)")
    ap.add_argument("--keep", metavar="DIR", help="write (or reuse) the journal here")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mesh-bench-web-")
    data = args.keep or os.path.join(tmp, "data")
    try:
        if not os.path.exists(os.path.join(data, "journal.sqlite3")):
            took, ids = write_history(data, args.tasks)
            print(f"wrote {args.tasks:,} tasks in {took:.1f} s")
        else:
            ids = [f"bench-{i:09d}" for i in range(50_000, args.tasks, 100_000)]
        size = sum(f.stat().st_size for f in Path(data).iterdir() if f.name.startswith("journal"))
        print(f"journal: {size / 2**20:.0f} MiB")
        proc, ep = start_node(data, None, Path(tmp) / "plain.log")
        time.sleep(2)
        plain = rss_mib(proc)
        stop(proc)
        http = f"127.0.0.1:{free_port()}"
        proc, ep = start_node(data, http, Path(tmp) / "http.log")
        base = f"http://{http}"
        try:
            time.sleep(2)
            idle = rss_mib(proc)
            now = time.time()
            rare_ids = ids[len(ids) // 2]
            requests = [
                ("tasks, newest 100", "/api/mesh/tasks?limit=100"),
                ("tasks, state=FAILURE (10%)", "/api/mesh/tasks?limit=100&state=FAILURE"),
                ("tasks, name=bench.rare (0.1%)", "/api/mesh/tasks?limit=100&name=bench.rare"),
                ("tasks, text search, no match", "/api/mesh/tasks?limit=100&search=nomatch"),
                ("tasks, received 6 h ago +-1 min",
                 f"/api/mesh/tasks?limit=100&since={now - 6 * 3600 - 60}&until={now - 6 * 3600 + 60}"),
                ("Flower /api/tasks?limit=100", "/api/tasks?limit=100"),
                ("task info (an old id)", f"/api/task/info/{rare_ids}"),
                ("summary (counts by state)", "/api/mesh/summary"),
                ("series, 1 h in 40 s steps", "/api/mesh/series?window=3600&step=40"),
                ("series, 12 h in 10 min steps", "/api/mesh/series?window=43200&step=600"),
                ("/metrics", "/metrics"),
                ("/api/workers", "/api/workers"),
                ("/healthz", "/healthz"),
                ("/ (the page)", "/"),
            ]
            watch = PingWatch(ep)
            print(f"\n{'request':<36} {'first':>9} {'median':>9} {'max':>9} {'bytes':>9}")
            for label, path in requests:
                times = []
                nbytes = 0
                for _ in range(args.repeat):
                    t, nbytes = timed_get(base + path)
                    times.append(t)
                print(f"{label:<36} {times[0] * 1000:8.1f}ms {statistics.median(times) * 1000:8.1f}ms "
                      f"{max(times) * 1000:8.1f}ms {nbytes:>9,}")
            # paging back through the failures: 20 pages
            t = time.perf_counter()
            cursor, pages = None, 0
            for _ in range(20):
                import json
                q = base + "/api/mesh/tasks?limit=100&state=FAILURE" + (f"&cursor={cursor}" if cursor else "")
                with urllib.request.urlopen(q, timeout=120) as r:
                    cursor = json.loads(r.read())["cursor"]
                pages += 1
                if cursor is None:
                    break
            per_page = (time.perf_counter() - t) / pages
            watch.close()
            after = rss_mib(proc)
            print(f"{'20 pages of FAILURE, per page':<36} {per_page * 1000:8.1f}ms")
            print(f"\nnode RSS (no children): without --http {plain:.0f} MiB; with --http "
                  f"{idle:.0f} MiB idle, {after:.0f} MiB after the requests above")
            print(f"control ping while the API worked: worst {watch.worst * 1000:.1f} ms "
                  f"over {watch.n} pings (journal reads run off the node's loop)")
        finally:
            stop(proc)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
