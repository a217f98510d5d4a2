"""Re-runs after a holder's crash (docs/handoff.md, "A holder that comes back").

Two nodes, a and b (2 children each, b joined to a); a process sends N short tasks to
a and exits; once some have run, a is killed with -9 (it holds the rest, queued, some
shed to b); b takes them over and runs them; then a starts again on its data dir (with
b as its seed). Each task appends its id to a file: re-runs = lines - N, lost = N -
distinct ids. Printed per run, then the medians.

    .venv/bin/python -m bench.rerun_kill --runs 3                    # this checkout
    .venv/bin/python -m bench.rerun_kill --runs 3 --tree /tmp/base   # another checkout's nodes
    .venv/bin/python -m bench.rerun_kill --queue-memory 200          # most of a's queue on disk
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import ROOT, free_port

SUBMIT = """
import json, sys
from mesh import Mesh
app = Mesh("rerun", peers=[sys.argv[1]], mdns=False)
for _ in range(int(sys.argv[2])):
    app.send_task("rerun.mark", args=[sys.argv[3], float(sys.argv[4])])
"""


def start(tree: Path, d: Path, name: str, port: int, peers: str | None, extra: list[str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mesh.cli.meshnode", "-A", "rerun_tasks", "-n", name,
            "-b", f"tcp://127.0.0.1:{port}", "-c", "2", "--no-mdns",
            "--data-dir", str(d / f"{name}.data"), *extra, *(["--peers", peers] if peers else [])]
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{d}")   # mesh from --tree
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(d / f"{name}.log", "ab"),
                            env=env, cwd=d)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def status(cc: Any, endpoint: str) -> dict[str, Any]:
    reply = cc.broadcast([endpoint], "status", timeout=5)[endpoint]
    return dict(getattr(reply, "payload", None) or {})


def one_run(tree: Path, n: int, seconds: float, extra: list[str]) -> dict[str, Any]:
    from mesh.client.control import ControlClient
    d = Path(tempfile.mkdtemp(prefix="rerun-"))
    shutil.copy(Path(__file__).with_name("rerun_tasks.py"), d / "rerun_tasks.py")
    out = d / "runs"
    pa, pb = free_port(), free_port()
    ea, eb = f"tcp://127.0.0.1:{pa}", f"tcp://127.0.0.1:{pb}"
    procs = {"a": start(tree, d, "a", pa, None, extra)}
    procs["b"] = start(tree, d, "b", pb, ea, extra)
    cc = ControlClient()
    try:
        wait(lambda: "kept in two copies" in (d / "a.log").read_text(), 30, "the nodes to meet")
        subprocess.run([sys.executable, "-c", SUBMIT, ea, str(n), str(out), str(seconds)],
                       check=True, timeout=120, cwd=d, env=dict(os.environ, PYTHONPATH=str(tree)))
        wait(lambda: len(lines(out)) >= n // 10, 60, "a tenth of the tasks to run")
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait()
        before = len(lines(out))
        wait(lambda: len(set(lines(out))) >= n, 300, "b to run every task")
        procs["a"] = start(tree, d, "a", pa, eb, extra)
        wait(lambda: bool(status(cc, ea)), 60, "a to start again")
        last, still = len(lines(out)), time.monotonic()
        while time.monotonic() - still < 5:      # a done and nothing written for 5 s
            st = status(cc, ea)
            now = len(lines(out))
            if now != last or st.get("held") or st.get("queued_on_disk") or st.get("reclaim_waiting"):
                last, still = now, time.monotonic()
            time.sleep(0.2)
        runs = lines(out)
        return {"reruns": len(runs) - n, "lost": n - len(set(runs)), "ran_before_kill": before,
                "dir": str(d)}
    finally:
        cc.close()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-n", type=int, default=2000, help="tasks per run")
    ap.add_argument("--seconds", type=float, default=0.01, help="each task's sleep")
    ap.add_argument("--queue-memory", type=int, default=None, help="the nodes' --queue-memory")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose mesh the nodes run")
    args = ap.parse_args()
    extra = ["--queue-memory", str(args.queue_memory)] if args.queue_memory is not None else []
    rows = []
    for _ in range(args.runs):
        rows.append(one_run(Path(args.tree).resolve(), args.n, args.seconds, extra))
        print(json.dumps(rows[-1]), flush=True)
    print(f"{args.tree}: re-runs per run {[r['reruns'] for r in rows]} (median "
          f"{statistics.median(r['reruns'] for r in rows)}), lost {[r['lost'] for r in rows]}")


if __name__ == "__main__":
    main()
