"""A child's per-task path in a warm loop: ``Child.run_frame`` and ``Child.finished``
of the no-op bench task, writing to a real socketpair whose other end another process
drains; CPU time (this process) per task. ``--async-app``: the app also has an
``async def`` task (the child then has Runners, which look at every frame first).
``--compare tree:PATH``: the same loop with another checkout's mesh, alternated.

Run from the repo root:
    .venv/bin/python -m bench.child_loop [--repeat 3] [--async-app]
                                         [--compare tree:/tmp/mesh-base]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

N = 50_000


def _loop_once(async_app: bool) -> float:
    """us of CPU per task, this process's mesh."""
    from bench.tasks import TASK_NAME, make_app
    from mesh.config import Config
    from mesh.node.channel import BlockingChannel
    from mesh.node.child import Child
    from mesh.node.child_runners import Runners
    from mesh.wire import codec
    from mesh.wire.protocol import Submit, encode

    app = make_app()
    if async_app:
        async def coro(x: int) -> int:
            return x
        app.task(name="bench.coro")(coro)
    config = Config.build(env={}, name="loop", bind="tcp://127.0.0.1:*", mdns=False)
    child = Child(app, config, "loop")
    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:                                 # the node's end: read and drop
        mine.close()
        while theirs.recv(1 << 16):
            pass
        os._exit(0)
    theirs.close()
    chan = BlockingChannel(mine)
    runners = Runners.for_child(child, chan)
    frames = [encode(Submit(task_id=f"t{i:030d}", name=TASK_NAME,
                            payload=codec.dump_call([i], {}))) for i in range(1000)]

    def loop(n: int) -> None:
        for i in range(n):
            frame = frames[i % 1000]
            msg = None
            if runners is not None:
                if runners.take(frame):
                    continue
                msg = getattr(runners, "decoded", None)   # (a tree before it: None)
            done, result = (child.run_frame(frame, msg) if msg is not None
                            else child.run_frame(frame))
            child.finished(chan, done, result)
    try:
        loop(2000)
        t0 = time.process_time()
        loop(N)
        return (time.process_time() - t0) / N * 1e6
    finally:
        mine.close()
        os.waitpid(pid, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--async-app", action="store_true")
    ap.add_argument("--compare", metavar="tree:PATH", default=None)
    ap.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.once:
        print(_loop_once(args.async_app))
        return
    sides: list[tuple[str, str]] = [("this tree", os.getcwd())]
    if args.compare:
        if not args.compare.startswith("tree:"):
            sys.exit("--compare takes tree:PATH")
        sides.append((args.compare, os.path.abspath(args.compare[len("tree:"):])))
    bench_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs: dict[str, list[float]] = {label: [] for label, _ in sides}
    for _ in range(args.repeat):
        for label, tree in sides:         # each run in its own process, that tree's mesh
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, bench_dir])}
            cmd = [sys.executable, os.path.abspath(__file__), "--once"]
            if args.async_app:
                cmd.append("--async-app")
            done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{label}: the loop failed:\n{done.stderr}")
            runs[label].append(float(done.stdout.split()[-1]))
    print(f"us of CPU per task, run_frame + finished, warm loop of {N:,}; medians of "
          f"{args.repeat}{' (app with an async def task)' if args.async_app else ''}")
    for label, rs in runs.items():
        print(f"{label[:40]:40s} {statistics.median(rs):8.2f}   "
              + " ".join(f"{r:.2f}" for r in rs))


if __name__ == "__main__":
    main()
