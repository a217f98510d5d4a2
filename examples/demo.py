"""A real mesh on this machine: two meshnode processes on loopback, a few thousand
tasks (some failing on purpose), their results, a `meshctl status` table, and a
clean shutdown. Run it with ./scripts/demo.sh (or python -m examples.demo)."""
from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(endpoints: list[str], procs: list[subprocess.Popen[bytes]], logs: list[str],
               timeout: float = 30) -> None:
    from mesh.client.control import ControlClient
    from mesh.wire.protocol import ControlReply
    deadline = time.monotonic() + timeout
    with ControlClient() as cc:
        while time.monotonic() < deadline:
            for p, path in zip(procs, logs):
                if p.poll() is not None:
                    sys.exit(f"demo: a node exited early with code {p.returncode}; {path}:\n"
                             + "\n".join(_lines(path)[-15:]))
            replies = cc.broadcast(endpoints, "ping", timeout=0.5)
            if all(isinstance(r, ControlReply) for r in replies.values()):
                return
    sys.exit("demo: nodes did not answer in time")


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _say(text: str) -> None:
    try:
        print(text, flush=True)
    except OSError:          # stdout closed (`demo.sh | head`): the nodes must stop all the same
        pass


def main() -> int:
    # stopped by a signal (Ctrl-C, SIGTERM, a closed terminal): stop the nodes too
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    ports = [free_port(), free_port()]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    tmp = tempfile.mkdtemp(prefix="mesh-demo-")
    logs = [os.path.join(tmp, f"demo-{i + 1}.log") for i in range(2)]
    print(f"== starting 2 nodes: {', '.join(endpoints)} (their logs: {', '.join(logs)})")
    # node 2 knows only node 1; membership (SWIM gossip) makes them one mesh. Their logs
    # go to files: a failing task is logged at ERROR with its traceback (as Celery's
    # worker does), and the checkouts below fail 20 times on purpose
    procs = []
    for i, ep in enumerate(endpoints):
        with open(logs[i], "wb") as log:
            procs.append(subprocess.Popen(
                [os.path.join(BIN, "meshnode"), "--app", "examples.tasks", "--name", f"demo-{i + 1}",
                 "--bind", ep, "--concurrency", "2", "--no-mdns",
                 "--data-dir", os.path.join(tmp, f"n{i}"), *(["--peers", endpoints[0]] if i else [])],
                stdout=log, stderr=log))
    try:
        wait_ready(endpoints, procs, logs)
        os.environ["MESH_PEERS"] = endpoints[1]   # one seed: the client learns the rest
        from examples.tasks import InvalidOrder, add, app, checkout, whoami

        deadline = time.monotonic() + 30
        while len([n for n in app.client.nodes() if n["state"] == "alive"]) < 2:
            if time.monotonic() > deadline:
                sys.exit("demo: the client did not learn both nodes in time")
            time.sleep(0.05)
        print(f"   the client was given {endpoints[1]} and learned: "
              f"{sorted(n['endpoint'] for n in app.client.nodes())}")

        n = 3000
        print(f"== submitting {n} tasks: add(i, i) for i < {n}")
        t0 = time.perf_counter()
        results = [add.delay(i, i) for i in range(n)]
        values = [r.get(timeout=60) for r in results]
        dt = time.perf_counter() - t0
        wrong = sum(1 for i, v in enumerate(values) if v != 2 * i)
        by_node = collections.Counter(r.node for r in results)
        print(f"   {n} results in {dt:.2f} s ({n / dt:.0f} tasks/s), {wrong} wrong; "
              f"ran on: {dict(by_node)}")

        print("== 200 checkouts, every 10th with a negative amount (fails on purpose)")
        orders = [checkout.delay(i, -1.0 if i % 10 == 0 else 10.0 + i) for i in range(200)]
        ok = failed = 0
        first_error = None
        for r in orders:
            try:
                r.get(timeout=60)
                ok += 1
            except InvalidOrder as e:   # the task's own exception type, rebuilt here
                failed += 1
                first_error = first_error or (e, r.traceback)
        print(f"   {ok} succeeded, {failed} failed with InvalidOrder")
        if first_error:
            print(f"   first failure: {first_error[0]!r}; remote traceback ends with:")
            print("     " + first_error[1].strip().splitlines()[-1])
        errors = [line for path in logs for line in _lines(path) if " ERROR " in line]
        print(f"   the nodes logged {len(errors)} failure(s) at ERROR, with tracebacks, e.g.:")
        if errors:
            print("     " + errors[0][:160])

        print("== send_task by name, and a bound task that sees its own request")
        print(f"   send_task('examples.tasks.add', (40, 2)) -> {app.send_task('examples.tasks.add', (40, 2)).get(timeout=30)}")
        print(f"   whoami -> {whoami.delay().get(timeout=30)}")

        lookup = app.send_task("examples.tasks.add", (20, 22))
        lookup.get(timeout=30)
        print(f"== meshctl result {lookup.id}   (another process looks the result up on the mesh)")
        subprocess.run([os.path.join(BIN, "meshctl"), "--peers", endpoints[0], "result", lookup.id],
                       check=True)

        print(f"== meshctl --peers {endpoints[1]} status   (one seed; the mesh knows the rest)")
        subprocess.run([os.path.join(BIN, "meshctl"), "--peers", endpoints[1], "status"], check=True)
        app.close()
        return 1 if wrong or ok != 180 or failed != 20 else 0
    finally:
        _say("== stopping nodes (SIGTERM)")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=40))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        _say(f"   nodes exited with codes {codes}")
        for path, code in zip(logs, codes):
            if code != 0:       # what went wrong, where a person looks first
                _say(f"   {path}, last lines:\n" + "\n".join(_lines(path)[-15:]))


if __name__ == "__main__":
    sys.exit(main())
