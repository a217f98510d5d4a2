"""A new user's scenario (docs/handoff.md): two nodes (2 children and 1), a submitter
sends N 3 s tasks to the first and exits; with --kill, the node that just took tasks
by shedding is killed with -9 at once (never restarted) and every result must come
from the other; without, the run counts the handoffs (shedding) until all finished.

    .venv/bin/python -m bench.shed_kill --runs 5            # handoffs per run
    .venv/bin/python -m bench.shed_kill --runs 5 --kill     # tasks lost per run
    .venv/bin/python -m bench.shed_kill --venv ../main/.venv   # another checkout's nodes
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HANDED = re.compile(r"handed (\d+) task\(s\) to (\w+) ")
SUBMIT = """
import json, sys
from mesh import Mesh
app = Mesh("shedkill", peers=[sys.argv[1]], mdns=False)
print(json.dumps([app.send_task("shedkill.nap", args=[float(sys.argv[3])]).id
                  for _ in range(int(sys.argv[2]))]))
"""


def node(venv: Path, name: str, port: int, children: int, peers: str | None, d: Path) -> subprocess.Popen[bytes]:
    argv = [str(venv / "bin" / "meshnode"), "-A", "shed_tasks", "-n", name,
            "-b", f"tcp://127.0.0.1:{port}", "-c", str(children), "--no-mdns",
            "--data-dir", str(d / f"{name}.data")]
    if peers:
        argv += ["--peers", peers]
    # the task module alone on the path (the nodes import mesh from --venv's checkout)
    env = dict(os.environ, PYTHONPATH=str(d))
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(d / f"{name}.log", "wb"),
                            env=env, cwd=d)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(venv: Path, n: int, seconds: float, kill: bool) -> dict[str, object]:
    from mesh import Mesh
    d = Path(tempfile.mkdtemp(prefix="shedkill-"))
    shutil.copy(Path(__file__).with_name("shed_tasks.py"), d / "shed_tasks.py")
    pa, pb = free_port(), free_port()
    a = node(venv, "a", pa, 2, None, d)
    b = node(venv, "b", pb, 1, f"tcp://127.0.0.1:{pa}", d)
    procs = {"a": a, "b": b}
    logs = {k: d / f"{k}.log" for k in procs}
    try:
        deadline = time.time() + 30
        while "kept in two copies" not in logs["a"].read_text():
            if time.time() > deadline:
                raise SystemExit(f"the two nodes did not meet: {d}")
            time.sleep(0.05)
        p = subprocess.run([str(venv / "bin" / "python"), "-c", SUBMIT, f"tcp://127.0.0.1:{pa}",
                            str(n), str(seconds)], capture_output=True, text=True, timeout=60,
                           cwd=d)
        ids = json.loads(p.stdout)
        killed = None
        if kill:                  # the first node that takes tasks by shedding
            deadline = time.time() + 3 * seconds
            while killed is None and time.time() < deadline:
                for log in logs.values():
                    m = HANDED.search(log.read_text())
                    if m:
                        killed = m.group(2)
                        break
                time.sleep(0.005)
            if killed is not None:
                procs[killed].send_signal(signal.SIGKILL)
                procs[killed].wait()
        survivor = [k for k in procs if k != killed][0]
        port = pb if survivor == "b" else pa
        reader = Mesh("shedkill", peers=[f"tcp://127.0.0.1:{port}"], mdns=False)
        lost = 0
        until = time.monotonic() + 2 * seconds * n + 20    # all of them, one after another
        try:
            for t in ids:
                try:
                    reader.AsyncResult(t).get(timeout=max(until - time.monotonic(), 0.5))
                except Exception:
                    lost += 1
        finally:
            reader.close()
        text = {k: log.read_text() for k, log in logs.items()}
        moves = [(k, int(m.group(1)), m.group(2)) for k in text for m in HANDED.finditer(text[k])]
        return {"lost": lost, "killed": killed, "handoffs": len(moves),
                "tasks_moved": sum(x[1] for x in moves),
                "back": {k: sum(1 for x in moves if x[0] == k) for k in procs}, "dir": str(d)}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-n", type=int, default=8, help="tasks per run")
    ap.add_argument("--seconds", type=float, default=3.0, help="each task's sleep")
    ap.add_argument("--kill", action="store_true")
    ap.add_argument("--venv", type=Path, default=Path(sys.executable).parent.parent,
                    help="the virtualenv whose meshnode runs the nodes")
    args = ap.parse_args()
    rows = [one_run(args.venv.resolve(), args.n, args.seconds, args.kill) for _ in range(args.runs)]
    for r in rows:
        print(json.dumps(r), flush=True)
    print(f"lost per run {[r['lost'] for r in rows]}; handoffs per run "
          f"{[r['handoffs'] for r in rows]} (tasks moved {[r['tasks_moved'] for r in rows]}; "
          f"by the node with 1 child {[r['back']['b'] for r in rows]})")  # type: ignore[index]


if __name__ == "__main__":
    main()
