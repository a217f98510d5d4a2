"""What importing mesh costs a process: CPU, peak RSS, and ``-X importtime``'s figures
for mesh.wire.protocol, in fresh interpreters, medians, side by side with another
checkout (round 11).

Each run is ``python -X importtime -c "import M"`` for each of: ``mesh.wire.protocol``
(what a client, a child, meshctl load first: it imports ``mesh``), and what
meshnode loads before it forks its children (``mesh.cli.meshnode``, ``mesh.node.node``,
the bench's app). CPU is the process's user + system time (``wait4``), less that of
``python -c pass`` in the same round; RSS is its own at the end (``/proc/self/statm``,
after a collection), less the same. (Not ``ru_maxrss``: it counts the bench's own
pages, shared with the child until its ``exec``.)
The trees are alternated in every round. Both trees' byte code is compiled first
(``compileall``): without ``__pycache__`` (e.g. under ``PYTHONDONTWRITEBYTECODE``) every
process compiles mesh from source, ~0.7 MiB more RSS each and several times the CPU.

    .venv/bin/python -m bench.imports --repeat 11 --tree /tmp/mesh-base
"""
from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "protocol": "import mesh.wire.protocol",
    "node": "import mesh.cli.meshnode, mesh.node.node, bench.tasks",
}


def _run(code: str, tree: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": tree}
    code += "\nimport gc; gc.collect(); print(open('/proc/self/statm').read().split()[1])"
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-c", code], cwd=tree, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    err = proc.stderr.read()
    pages = int(proc.stdout.read().split()[-1])
    _pid, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{code!r} failed in {tree}:\n{err[-2000:]}")
    out = {"cpu_ms": (ru.ru_utime + ru.ru_stime) * 1000,
           "rss_mib": pages * os.sysconf("SC_PAGE_SIZE") / 2**20}
    for line in err.splitlines():        # "import time: self | cumulative | name"
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == "mesh.wire.protocol":
            self_ms = int(parts[0].split(":")[1]) / 1000   # (the line of its real import;
            if self_ms > out.get("protocol_self_ms", -1):   # a later one reads sys.modules)
                out["protocol_self_ms"] = self_ms
                out["protocol_cum_ms"] = int(parts[1]) / 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--tree", metavar="PATH", help="another checkout of mesh to compare with")
    args = ap.parse_args(argv)
    trees = {"this tree": ROOT}
    if args.tree:
        trees["other tree"] = os.path.abspath(args.tree)
    for path in trees.values():
        for sub in ("mesh", "bench"):
            compileall.compile_dir(os.path.join(path, sub), quiet=1)
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        for label, path in trees.items():
            base = _run("pass", path)
            for case, code in CASES.items():
                r = _run(code, path)
                r["cpu_ms"] -= base["cpu_ms"]
                r["rss_mib"] -= base["rss_mib"]
                rows.setdefault((label, case), []).append(r)
    print(f"medians of {args.repeat} (CPU and RSS over `python -c pass`)")
    print(f"{'':24} {'CPU ms':>8} {'RSS MiB':>8} {'protocol self ms':>17} {'protocol cum ms':>16}")
    for (label, case), runs in rows.items():
        def med(key: str, runs: list[dict[str, Any]] = runs) -> str:
            vals = [r[key] for r in runs if key in r]
            return f"{statistics.median(vals):.1f}" if vals else "-"
        print(f"{label + ', ' + case:24} {med('cpu_ms'):>8} {med('rss_mib'):>8} "
              f"{med('protocol_self_ms'):>17} {med('protocol_cum_ms'):>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
