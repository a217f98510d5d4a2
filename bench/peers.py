"""The peers, measured by the same method as mesh: Celery and Dramatiq on a local Redis.

Each run starts its own ``redis-server`` on a free loopback port (no persistence) and
its own worker with two processes, then, from this process as the client:

  (a) throughput: submit N no-op ``inc(i)`` tasks, then wait for every result and check
      it is ``i + 1``; tasks/s = N / (first submit -> last result);
  (b) latency: sequential submit-and-wait round trips; p50/p99/max in ms;
  (c) peak RSS of the worker and its children, sampled every ~50 ms.

and stops the worker and Redis (SIGTERM, then SIGKILL), also on errors and Ctrl-C.
A system whose packages (``pip install -e '.[bench]'``) or ``redis-server`` (Debian's
redis-server) are missing is skipped with a line that says what to install.

    .venv/bin/python -m bench.peers celery -n 5000 --latency 300
    .venv/bin/python -m bench.run --repeat 3 --with-ceiling --with-peers   # side by side
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

PEERS = ("celery", "dramatiq")

CELERY_APP = '''
from celery import Celery
app = Celery("peerbench", broker="redis://127.0.0.1:{port}/0", backend="redis://127.0.0.1:{port}/1")
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

@app.task
def inc(x):
    return x + 1
'''

DRAMATIQ_APP = '''
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url="redis://127.0.0.1:{port}/0")
broker.add_middleware(Results(backend=RedisBackend(url="redis://127.0.0.1:{port}/1")))
dramatiq.set_broker(broker)

@dramatiq.actor(store_results=True, max_retries=0)
def inc(x):
    return x + 1
'''


def missing(system: str) -> str | None:
    """What is missing to run ``system``, or None."""
    need = {"celery": ["celery", "redis"], "dramatiq": ["dramatiq", "redis"]}[system]
    absent = [m for m in need if importlib.util.find_spec(m) is None]
    if absent:
        return f"{system}: skipped (not installed: {', '.join(absent)}; pip install -e '.[bench]')"
    if shutil.which("redis-server") is None:
        return f"{system}: skipped (no redis-server; apt-get install redis-server)"
    return None


def _free_port() -> int:
    from bench.run import free_port
    return free_port()


def _wait(cond: Any, timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: a process exited early with code {p.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout} s")
        time.sleep(0.05)


def _stop(p: subprocess.Popen[bytes] | None) -> None:
    if p is None or p.poll() is not None:
        return
    import psutil
    try:
        kids = psutil.Process(p.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    for k in kids:
        try:
            k.kill()
        except psutil.Error:
            pass


def run_peer(system: str, n: int, latency: int, workers: int = 2,
             result_timeout: float = 120.0) -> dict[str, Any]:
    """One run of ``system`` (fresh Redis, fresh worker); the figures as bench.run's."""
    import redis

    from bench.run import RssSampler, pct
    tmp = tempfile.mkdtemp(prefix=f"mesh-peer-{system}-")
    port = _free_port()
    modname = f"peerbench_{system}_{port}"
    with open(os.path.join(tmp, modname + ".py"), "w") as f:
        f.write(textwrap.dedent((CELERY_APP if system == "celery" else DRAMATIQ_APP).format(port=port)))
    log = open(os.path.join(tmp, "worker.log"), "wb")
    rds = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--daemonize", "no"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker: subprocess.Popen[bytes] | None = None
    sampler: RssSampler | None = None
    try:
        r = redis.Redis(port=port)

        def redis_up() -> bool:
            try:
                return bool(r.ping())
            except redis.exceptions.ConnectionError:
                return False
        _wait(redis_up, 20, "redis-server", [rds])
        env = {**os.environ, "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", "")}
        bindir = os.path.dirname(sys.executable)
        if system == "celery":
            cmd = [os.path.join(bindir, "celery"), "-A", modname, "worker", "--pool", "prefork",
                   "-c", str(workers), "--loglevel", "WARNING", "--without-gossip",
                   "--without-mingle", "--without-heartbeat"]
        else:
            cmd = [os.path.join(bindir, "dramatiq"), modname, "--processes", str(workers),
                   "--threads", "1"]
            env["dramatiq_queue_prefetch"] = "64"
        worker = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=log)
        sampler = RssSampler(worker.pid, 0.05)
        sampler.start()
        sys.path.insert(0, tmp)
        mod = importlib.import_module(modname)
        inc = mod.inc
        if system == "celery":
            def submit(i: int) -> Any:
                return inc.delay(i)

            def wait(h: Any) -> Any:
                return h.get(timeout=result_timeout)
        else:
            def submit(i: int) -> Any:
                return inc.send(i)

            def wait(h: Any) -> Any:
                return h.get_result(block=True, timeout=int(result_timeout * 1000))

        t_ready = time.monotonic()
        for i in range(20):              # warm-up: the worker is up and the client connected
            if wait(submit(i)) != i + 1:
                raise RuntimeError(f"{system}: warm-up returned a wrong result")
        ready_s = time.monotonic() - t_ready
        t0 = time.perf_counter()
        handles = [submit(i) for i in range(n)]
        t_sub = time.perf_counter()
        for i, h in enumerate(handles):
            v = wait(h)
            if v != i + 1:
                raise RuntimeError(f"{system}: task {i} returned {v!r}")
        t1 = time.perf_counter()
        sampler.pause()                  # as bench.run: no sample lands on a round trip
        lat: list[float] = []
        for i in range(latency):
            a = time.perf_counter()
            v = wait(submit(i))
            lat.append(time.perf_counter() - a)
            if v != i + 1:
                raise RuntimeError(f"{system}: round trip {i} returned {v!r}")
        lat.sort()
        sampler.resume()
        sampler.sample()
        return {"tasks": n, "latency_samples": latency, "ready_s": ready_s,
                "tasks_per_s": n / (t1 - t0), "submit_per_s": n / (t_sub - t0),
                "p50_ms": pct(lat, 0.50) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
                "max_ms": lat[-1] * 1e3, "rss_mb": sampler.peak / 2**20}
    finally:
        if sampler is not None:
            sampler.stop()
        _stop(worker)
        _stop(rds)
        log.close()
        if tmp in sys.path:
            sys.path.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def run_in_subprocess(system: str, n: int, latency: int, workers: int = 2) -> dict[str, Any] | str:
    """Run one peer in a fresh interpreter (its client libraries never share this
    process with mesh's); the figures, or the reason it was skipped or failed."""
    why = missing(system)
    if why:
        return why
    p = subprocess.run([sys.executable, "-m", "bench.peers", system, "-n", str(n), "--latency",
                        str(latency), "--workers", str(workers), "--json"],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        return f"{system}: failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark a peer (Celery or Dramatiq on a local "
                                             "Redis) with the same method as bench.run.")
    ap.add_argument("system", choices=PEERS)
    ap.add_argument("-n", "--tasks", type=int, default=5000)
    ap.add_argument("--latency", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON line of figures")
    args = ap.parse_args(argv)
    why = missing(args.system)
    if why:
        print(why)
        return 0
    r = run_peer(args.system, args.tasks, args.latency, args.workers)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{args.system}: {r['tasks_per_s']:,.0f} tasks/s, p50 {r['p50_ms']:.3f} ms, "
              f"p99 {r['p99_ms']:.3f} ms, peak RSS {r['rss_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
