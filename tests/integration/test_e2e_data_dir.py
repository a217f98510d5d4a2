"""A journal belongs to one mesh (mesh/node/data_dir.py).

Found by a new user: a tutorial's node on the default port, killed with tasks queued,
then one's own app's node on the same port opened the same default data dir and
failed the tutorial's tasks as not registered. Now the default data dir is named by
host, mesh and port, and a node never opens another mesh's journal.
"""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import tasks_app
from harness import MESHNODE, ROOT, clean_env, free_port, make_client_app, run_program, wait_until

from mesh.client.control import ControlClient
from mesh.wire.protocol import ControlReply

N = 5


def _start(app: str, port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([MESHNODE, "--app", app, "--bind", f"tcp://127.0.0.1:{port}",
                             "--no-mdns", "--concurrency", "1", *extra], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _status(cc: ControlClient, port: int) -> dict[str, Any] | None:
    reply = cc.broadcast([f"tcp://127.0.0.1:{port}"], "status", timeout=0.5)[f"tcp://127.0.0.1:{port}"]
    return reply.payload if isinstance(reply, ControlReply) and reply.ok else None


def _queue_behind_a_gate(port: int, tmp_path: Path, cc: ControlClient) -> Path:
    """N tasks journalled and queued behind a gated one on the node at ``port``."""
    out, gate = tmp_path / "lines", tmp_path / "gate"
    client = make_client_app([f"tcp://127.0.0.1:{port}"], tasks_app)
    try:
        client.tasks.wait_for_file.delay(str(gate))
        wait_until(lambda: (_status(cc, port) or {}).get("busy"), what="the child busy")
        for i in range(N):
            client.tasks.append_line.apply_async((str(out), f"line-{i}"), task_id=f"dd-{i}")
        assert client.app.client.flush(60) == 0            # journalled: the promise
    finally:
        client.close()
    return out


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            _kill(proc)


def _lines(out: Path) -> list[str]:
    return sorted(out.read_text().split()) if out.exists() else []


def test_two_apps_served_in_turn_on_one_port_keep_their_own_journals(tmp_path: Path) -> None:
    env, port = clean_env(XDG_DATA_HOME=str(tmp_path / "xdg")), free_port()
    with ControlClient() as cc:
        a = _start("tasks_app", port, env)
        try:
            wait_until(lambda: _status(cc, port), what="mesh-it's node")
            out = _queue_behind_a_gate(port, tmp_path, cc)
        finally:
            _kill(a)                                       # tasks left in its journal
        b = _start("routing_app", port, env)               # another app, same port
        try:
            st = wait_until(lambda: _status(cc, port), what="routing-it's node")
            assert st["held"] == 0, st                     # none of mesh-it's tasks
        finally:
            _stop(b)
        dirs = sorted(os.listdir(tmp_path / "xdg" / "mesh"))
        host = socket.gethostname()
        assert dirs == [f"{host}-mesh-it-port{port}", f"{host}-routing-it-port{port}"], dirs
        (tmp_path / "gate").touch()
        a = _start("tasks_app", port, env)                 # mesh-it again: it finds them
        try:
            wait_until(lambda: len(_lines(out)) == N, timeout=60, what="mesh-it's tasks run")
        finally:
            _stop(a)
    assert _lines(out) == [f"line-{i}" for i in range(N)]


def test_a_node_refuses_another_meshs_journal(tmp_path: Path) -> None:
    env, port, data = clean_env(), free_port(), tmp_path / "data"
    with ControlClient() as cc:
        a = _start("tasks_app", port, env, "--data-dir", str(data))
        try:
            wait_until(lambda: _status(cc, port), what="mesh-it's node")
            _queue_behind_a_gate(port, tmp_path, cc)
        finally:
            _kill(a)
    done = run_program(MESHNODE, "--app", "routing_app", "--bind", f"tcp://127.0.0.1:{free_port()}",
                       "--no-mdns", "--concurrency", "1", "--data-dir", str(data), env=env)
    assert done.returncode == 3, done
    assert (f"the data dir {data} holds the journal of mesh 'mesh-it', and this node serves "
            f"mesh 'routing-it'") in done.stderr, done.stderr
    db = sqlite3.connect(data / "journal.sqlite3")
    try:                                                   # nothing failed, all still there
        rows = db.execute("SELECT task_id, state FROM tasks WHERE task_id LIKE 'dd-%'").fetchall()
    finally:
        db.close()
    assert sorted(rows) == [(f"dd-{i}", "RECEIVED") for i in range(N)], rows


def test_a_journal_in_the_old_default_dir_is_still_found(tmp_path: Path) -> None:
    """Before, the default data dir was named by host and port only: an upgraded node
    of the same mesh (or one of a journal that records no mesh) keeps using it."""
    xdg, port = tmp_path / "xdg", free_port()
    env = clean_env(XDG_DATA_HOME=str(xdg))
    legacy = xdg / "mesh" / f"{socket.gethostname()}-port{port}"
    with ControlClient() as cc:
        a = _start("tasks_app", port, env, "--data-dir", str(legacy))
        try:
            wait_until(lambda: _status(cc, port), what="the node")
            out = _queue_behind_a_gate(port, tmp_path, cc)
        finally:
            _kill(a)
        db = sqlite3.connect(legacy / "journal.sqlite3")
        db.execute("DELETE FROM meta WHERE key='mesh'")    # as a journal written before
        db.commit()
        db.close()
        (tmp_path / "gate").touch()
        a = _start("tasks_app", port, env)                 # no --data-dir
        try:
            wait_until(lambda: len(_lines(out)) == N, timeout=60, what="the tasks run")
        finally:
            _stop(a)
    assert _lines(out) == [f"line-{i}" for i in range(N)]
    assert os.listdir(xdg / "mesh") == [legacy.name]
