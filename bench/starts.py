"""What a process start costs the test suite: a ``meshnode`` started as the integration
harness starts one (tests/integration/harness.py: ``--app tasks_app``, two children,
ready when it answers a ping), then ``meshctl status`` against it, then a SIGTERM stop;
side by side with another checkout, trees alternated in every round, medians.

Per round and tree, a fresh interpreter of that tree's venv (``TREE/.venv/bin/python``)
imports that tree's harness and measures: exec -> first answered ping (wall), the
node's CPU at that moment (user + system), ``meshctl status`` (wall, and its CPU from
``RUSAGE_CHILDREN``), SIGTERM -> exit (wall). Both trees' byte code is compiled first,
as scripts/setup.sh does.

    .venv/bin/python -m bench.starts --repeat 9 --tree /tmp/mesh-base
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ONE = r'''
import json, os, resource, signal, subprocess, sys, tempfile, time
from pathlib import Path
tree = Path(sys.argv[1])
sys.path[:0] = [str(tree / "tests" / "integration"), str(tree)]
os.chdir(tree)
import harness, psutil
from mesh.client.control import ControlClient
cc = ControlClient()
base = Path(tempfile.mkdtemp(prefix="bench-starts-"))
f = harness.NodeFactory(base, cc)
try:
    t0 = time.monotonic()
    node = f()
    ready = time.monotonic() - t0
    ct = psutil.Process(node.pid).cpu_times()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t1 = time.monotonic()
    q = subprocess.run([harness.MESHCTL, "--peers", node.endpoint, "status"], capture_output=True,
                       env=harness.clean_env(), cwd=tree, timeout=60)
    ctl = time.monotonic() - t1
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert q.returncode == 0, q.stderr
    t2 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(30)
    stop = time.monotonic() - t2
finally:
    f.close()
    cc.close()
    import shutil
    shutil.rmtree(base, ignore_errors=True)
print(json.dumps({"ready": ready, "node_cpu": ct.user + ct.system, "meshctl": ctl,
                  "meshctl_cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                  "stop": stop}))
'''

KEYS = ("ready", "node_cpu", "meshctl", "meshctl_cpu", "stop")


def _python(tree: str) -> str:
    py = os.path.join(tree, ".venv", "bin", "python")
    if not os.path.exists(py):
        raise SystemExit(f"{tree} has no .venv (python3 -m venv .venv && pip install -e .)")
    return py


def _one(tree: str) -> dict[str, float]:
    p = subprocess.run([_python(tree), "-c", ONE, tree], capture_output=True, text=True,
                       cwd="/", timeout=180)
    if p.returncode != 0:
        raise RuntimeError(f"a start in {tree} failed:\n{p.stderr[-2000:]}")
    result: dict[str, float] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=9, help="rounds (each tree once a round)")
    ap.add_argument("--tree", action="append", default=[],
                    help="another checkout with its own .venv (repeatable)")
    args = ap.parse_args(argv)
    trees = [ROOT, *(os.path.abspath(t) for t in args.tree)]
    for tree in trees:
        compileall.compile_dir(os.path.join(tree, "mesh"), quiet=1)
        compileall.compile_dir(os.path.join(tree, "tests"), quiet=1)
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for r in range(args.repeat):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            runs[tree].append(_one(tree))
    print(f"medians of {args.repeat}, ms: " + ", ".join(KEYS))
    for tree in trees:
        row = [statistics.median(x[k] for x in runs[tree]) * 1000 for k in KEYS]
        print(f"{tree}: " + "  ".join(f"{k} {v:.0f}" for k, v in zip(KEYS, row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
