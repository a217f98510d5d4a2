"""The hand-rolled pyzmq ceiling: ROUTER -> 2 DEALER workers, msgpack, x + 1.

Nothing but ZeroMQ and msgpack: no journal, no events, no ids beyond a counter, no
result bookkeeping beyond a list. It is the same loop as the "hand-rolled pyzmq" row
of ../shared/BENCHMARKS.md, run on this machine so mesh can be read against it.

The benchmark process binds a ROUTER on a loopback port; two worker processes
(``python -m bench.zmq_ceiling --worker ENDPOINT``) connect a DEALER each, announce
themselves, and answer every ``[seq, x]`` with ``[seq, x + 1]``. The ROUTER deals
requests round-robin over the two workers.

Run alone:  python -m bench.zmq_ceiling [-n 20000] [--latency 1000]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

import msgpack
import psutil
import zmq

READY = b"ready"


# -- worker side ----------------------------------------------------------------------
def worker(endpoint: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send(READY)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        while True:
            frame = s.recv()
            if frame == b"stop":
                break
            seq, x = unpackb(frame)
            s.send(packb([seq, x + 1]))
    except KeyboardInterrupt:
        pass
    finally:
        s.close(0)
        ctx.term()


# -- driver side ----------------------------------------------------------------------
def _pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 1)) - 1))
    return sorted_vals[k]


def run_ceiling(n: int = 20000, latency_n: int = 1000, workers: int = 2,
                start_timeout: float = 15.0) -> dict[str, Any]:
    """One ceiling measurement: throughput over ``n`` tasks, ``latency_n`` round trips,
    and the workers' summed RSS sampled at the end (they hold nothing, so it is flat)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.SNDHWM, 0)
    router.setsockopt(zmq.RCVHWM, 0)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    idents: list[bytes] = []
    try:
        for _ in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.zmq_ceiling", "--worker", endpoint],
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        deadline = time.monotonic() + start_timeout
        while len(idents) < workers:
            left = deadline - time.monotonic()
            if left <= 0 or not router.poll(int(left * 1000) + 1):
                raise RuntimeError(f"only {len(idents)} of {workers} ceiling workers started "
                                   f"within {start_timeout:g} s")
            ident, msg = router.recv_multipart()
            if msg == READY:
                idents.append(ident)
        packb, unpackb = msgpack.packb, msgpack.unpackb
        send, recv = router.send_multipart, router.recv_multipart

        # warm-up: a few round trips through each worker
        for i in range(200):
            send([idents[i % workers], packb([i, i])])
            recv()

        # throughput: send everything, then collect everything
        results: list[Any] = [None] * n
        t0 = time.perf_counter()
        for i in range(n):
            send([idents[i % workers], packb([i, i])], copy=False)
        t_sub = time.perf_counter()
        for _ in range(n):
            _, frame = recv()
            seq, y = unpackb(frame)
            results[seq] = y
        t1 = time.perf_counter()
        bad = sum(1 for i, y in enumerate(results) if y != i + 1)
        if bad:
            raise RuntimeError(f"ceiling: {bad} wrong results")

        # latency: sequential round trips
        lat: list[float] = []
        for i in range(latency_n):
            a = time.perf_counter()
            send([idents[i % workers], packb([i, i])])
            _, frame = recv()
            lat.append(time.perf_counter() - a)
            if unpackb(frame)[1] != i + 1:
                raise RuntimeError("ceiling: wrong latency result")
        lat.sort()
        rss = 0
        for p in procs:
            try:
                rss += psutil.Process(p.pid).memory_info().rss
            except psutil.Error:
                pass
        return {
            "tasks_per_s": n / (t1 - t0), "submit_per_s": n / (t_sub - t0),
            "p50_ms": _pct(lat, 0.50) * 1e3, "p99_ms": _pct(lat, 0.99) * 1e3,
            "max_ms": lat[-1] * 1e3, "rss_mb": rss / 2**20,
        }
    finally:
        try:
            for ident in idents:
                router.send_multipart([ident, b"stop"], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        router.close(0)
        ctx.term()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.zmq_ceiling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", metavar="ENDPOINT", help=argparse.SUPPRESS)
    ap.add_argument("-n", "--tasks", type=int, default=20000, help="tasks for throughput (default 20000)")
    ap.add_argument("--latency", type=int, default=1000, help="sequential round trips (default 1000)")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    r = run_ceiling(args.tasks, args.latency)
    print(f"pyzmq ceiling: {r['tasks_per_s']:,.0f} tasks/s (submit {r['submit_per_s']:,.0f}/s), "
          f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, max {r['max_ms']:.3f} ms, "
          f"workers' RSS {r['rss_mb']:.1f} MB")


if __name__ == "__main__":
    main()
