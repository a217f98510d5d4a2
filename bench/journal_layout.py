"""The journal's cost per task on its own: ``add`` then ``finish`` of 10,000 tasks in
batches of 64 (a commit after each batch's adds and after its finishes, as the node
does under load), on a journal already holding ``--prefill`` finished tasks, with the
node's own class and pragmas. CPU (every thread: the checkpoints too) and wall time
per task, and what the commits write to the WAL per task (2,000 more, checkpoints
off). Side by side with another checkout:
``--compare PATH`` runs the same with that tree's ``mesh`` (a separate process).

Run from the repo root:
    .venv/bin/python -m bench.journal_layout [--prefill 100000] [-n 10000] [--repeat 3]
                                             [--compare /work/main]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def measure(prefill: int, n: int, batch: int, random_ids: bool = False) -> tuple[float, float, float]:
    import uuid

    # the ids the product makes (that tree's), or ids a program chose at random
    from mesh.app import new_task_id
    from mesh.node.sqlite_journal import SqliteJournal
    if random_ids:
        def new_task_id() -> str:
            return str(uuid.uuid4())

    frame, client, res = os.urandom(180), b"\x00" + os.urandom(4), os.urandom(40)
    with tempfile.TemporaryDirectory() as d:
        j = SqliteJournal(os.path.join(d, "data"))

        def run(ids: list[str]) -> None:
            now = time.time()
            for t in ids:
                j.add(t, client, frame, now)
            j.commit()
            for t in ids:
                j.finish(t, "SUCCESS", res, now, "peer")
            j.commit()

        pre = [new_task_id() for _ in range(prefill)]
        for i in range(0, prefill, 1000):
            run(pre[i:i + 1000])
        ids = [new_task_id() for _ in range(n)]
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(0, n, batch):
            run(ids[i:i + batch])
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        # what the commits write: the WAL's growth over 2,000 more, checkpoints off
        j.checkpointer.stop()
        j.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        j.db.execute("PRAGMA wal_autocheckpoint=0")
        ids = [new_task_id() for _ in range(2000)]
        for i in range(0, len(ids), batch):
            run(ids[i:i + batch])
        wal = os.path.getsize(j.path + "-wal") / len(ids)
        j.close()
    return cpu / n * 1e6, wall / n * 1e6, wal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefill", type=int, default=100_000)
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", default="", help="another checkout of mesh")
    ap.add_argument("--random-ids", action="store_true",
                    help="uuid4 ids (as a program that chooses its own might) instead of mesh's")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(*measure(a.prefill, a.n, a.batch, a.random_ids))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [("this tree", here)] + ([("compare", os.path.abspath(a.compare))] if a.compare else [])
    got: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in trees}
    for _ in range(a.repeat):
        for name, tree in trees:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--prefill", str(a.prefill), "-n", str(a.n), "--batch", str(a.batch),
                 "--one", *(["--random-ids"] if a.random_ids else [])], cwd=tree, capture_output=True, text=True, check=True,
                env={**os.environ, "PYTHONPATH": tree}).stdout.split()
            got[name].append((float(out[0]), float(out[1]), float(out[2])))
    for name, tree in trees:
        cpu = statistics.median(c for c, _, _ in got[name])
        wall = statistics.median(w for _, w, _ in got[name])
        wal = statistics.median(x for _, _, x in got[name])
        print(f"{name:10s} {tree}: add+finish {cpu:6.1f} us CPU, {wall:6.1f} us wall, "
              f"{wal / 1024:4.1f} KiB of WAL per task (median of {a.repeat}; {a.prefill:,} "
              f"finished before)")


if __name__ == "__main__":
    main()
