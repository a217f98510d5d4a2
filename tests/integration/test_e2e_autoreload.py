"""Autoreload on real nodes (docs/pools.md): a change to the app's source replaces the
children during a stream of tasks with none lost or failed; running tasks finish on
the old code and queued ones run on the new; a syntax error keeps the node serving
the old code until the file is fixed."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from harness import INTEGRATION_DIR, ROOT, NodeProc, wait_until

from mesh import Mesh, xmap, xstarmap

RESULT_TIMEOUT = 60.0

APP = '''
import os
import time

from mesh import Mesh

app = Mesh("mesh-it-reload", mdns=False)
VERSION = 1


@app.task
def version():
    return VERSION


@app.task
def slow(seconds):
    time.sleep(seconds)
    return VERSION


@app.task
def gated(path):
    while not os.path.exists(path):
        time.sleep(0.005)
    return VERSION
'''


ADDED = '''

@app.task
def added(x):
    return ("added", x)
'''


def _write(path: Path, version: str, extra: str = "") -> None:
    path.write_text(APP.replace("VERSION = 1", f"VERSION = {version}") + extra)


def _start(start_node: Any, tmp_path: Path, concurrency: int) -> tuple[NodeProc, Path]:
    src = tmp_path / "app"
    src.mkdir()
    module = src / "reload_app.py"
    _write(module, "1")
    path = os.pathsep.join([str(src), str(INTEGRATION_DIR), str(ROOT)])
    node = start_node(app="reload_app", concurrency=concurrency, autoreload=True,
                      env={"PYTHONPATH": path})
    return node, module


def _reloads(node: NodeProc) -> int:
    return int(node.status()["reloads"])


def test_a_change_replaces_the_children_during_a_stream_losing_no_task(
        start_node: Any, tmp_path: Path) -> None:
    node, module = _start(start_node, tmp_path, concurrency=2)
    client = Mesh("reload-client", peers=[node.endpoint], mdns=False)
    results: list[Any] = []
    stop = threading.Event()

    def stream() -> None:                     # a task every few ms until told to stop
        while not stop.is_set():
            results.append(client.send_task("reload_app.slow", args=(0.02,)))
            time.sleep(0.005)

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        wait_until(lambda: len(results) >= 50, what="a stream of tasks")
        _write(module, "2")
        wait_until(lambda: _reloads(node) == 1, what="the node to load the new code")
        sent = len(results)
        wait_until(lambda: len(results) >= sent + 50, what="more tasks after the reload")
    finally:
        stop.set()
        sender.join()
    values = [r.get(timeout=RESULT_TIMEOUT) for r in results]    # raises if one failed
    assert set(values) == {1, 2}
    assert values[-1] == 2                    # sent after the reload: the new code
    first_new = values.index(2)
    assert all(v == 2 for v in values[first_new + 2:]), "old code ran after new code had"
    s = node.status()
    assert s["succeeded"] == len(values) and s["failed"] == 0
    assert s["children_started"] >= 4 and s["children"] == 2
    client.close()


def test_running_tasks_finish_on_the_old_code_and_queued_ones_run_on_the_new(
        start_node: Any, tmp_path: Path) -> None:
    node, module = _start(start_node, tmp_path, concurrency=1)
    client = Mesh("reload-client", peers=[node.endpoint], mdns=False)
    gate = tmp_path / "gate"
    running = client.send_task("reload_app.gated", args=(str(gate),))
    wait_until(lambda: node.status()["busy"] == 1, what="the gated task to start")
    queued = [client.send_task("reload_app.version") for _ in range(3)]
    wait_until(lambda: node.status()["queued"] == 3, what="three queued tasks")
    _write(module, "2")
    wait_until(lambda: _reloads(node) == 1, what="the node to load the new code")
    assert [r.get(timeout=RESULT_TIMEOUT) for r in queued] == [2, 2, 2]
    assert not running.ready()
    gate.touch()
    assert running.get(timeout=RESULT_TIMEOUT) == 1
    client.close()


def test_a_syntax_error_keeps_the_node_serving_the_old_code(start_node: Any, tmp_path: Path) -> None:
    node, module = _start(start_node, tmp_path, concurrency=1)
    client = Mesh("reload-client", peers=[node.endpoint], mdns=False)
    pid_before = node.status()["children_started"]
    module.write_text(APP.replace("VERSION = 1", "VERSION = (1"))
    error = wait_until(lambda: node.status()["reload_error"], what="the reload error")
    assert f"{module} line " in error and "SyntaxError" in error
    assert f"{module} line" in node.stderr() and "keeps serving with the code it had" in node.stderr()
    assert [client.send_task("reload_app.version").get(timeout=RESULT_TIMEOUT)
            for _ in range(5)] == [1] * 5
    assert node.status()["children_started"] == pid_before        # the old children serve
    _write(module, "3", ADDED)                                      # fixed, and a new task
    wait_until(lambda: _reloads(node) == 1, what="the fixed code to load")
    assert client.send_task("reload_app.version").get(timeout=RESULT_TIMEOUT) == 3
    # the node's own registry follows the new code: it accepts the new task
    assert client.send_task("reload_app.added", args=(5,)).get(timeout=RESULT_TIMEOUT) == ["added", 5]
    s = node.status()
    assert s["reload_error"] is None and "reload_app.added" in s["registered"]
    client.close()


def test_map_and_starmap_still_run_after_a_reload(start_node: Any, tmp_path: Path) -> None:
    """The builtin tasks behind task.map/starmap/chunks are the node's, not the app
    module's: the reloaded app must have them too (a reload dropped them: 'gone:
    mesh.map, mesh.starmap' in its log, then NotRegistered for every map)."""
    node, module = _start(start_node, tmp_path, concurrency=1)
    client = Mesh("reload-client", peers=[node.endpoint], mdns=False)
    slow = client.signature("reload_app.slow")
    assert xmap(slow, [0, 0]).apply_async().get(timeout=RESULT_TIMEOUT) == [1, 1]
    _write(module, "2")
    wait_until(lambda: client.send_task("reload_app.version").get(timeout=RESULT_TIMEOUT) == 2,
               what="the node to run the new code")
    assert xmap(slow, [0, 0]).apply_async().get(timeout=RESULT_TIMEOUT) == [2, 2]
    assert xstarmap(slow, [(0,), (0,)]).apply_async().get(timeout=RESULT_TIMEOUT) == [2, 2]
    assert "gone:" not in node.stderr()
    client.close()


def test_a_celery_layout_found_by_its_package_reloads(start_node: Any, tmp_path: Path) -> None:
    """`meshnode -A proj --autoreload` on Celery's layout (the app in proj/celery.py,
    proj/__init__.py importing it as celery_app): the reload finds the app as -A did.
    It looked for `proj.app` only, so every reload failed ('proj has no mesh.Mesh app
    named 'app' any more') and the node kept the old code."""
    src = tmp_path / "src"
    (src / "proj").mkdir(parents=True)
    (src / "proj" / "__init__.py").write_text(
        "from .celery import app as celery_app\n\n__all__ = ('celery_app',)\n")
    (src / "proj" / "celery.py").write_text(
        "from mesh import Mesh\n\napp = Mesh('mesh-it-proj', mdns=False, include=['proj.tasks'])\n")
    tasks = src / "proj" / "tasks.py"
    tasks.write_text("from .celery import app\n\n\n@app.task\ndef version():\n    return 1\n")
    path = os.pathsep.join([str(src), str(INTEGRATION_DIR), str(ROOT)])
    node = start_node(app="proj", concurrency=1, autoreload=True, env={"PYTHONPATH": path})
    client = Mesh("reload-client", peers=[node.endpoint], mdns=False)
    assert client.send_task("proj.tasks.version").get(timeout=RESULT_TIMEOUT) == 1
    tasks.write_text(tasks.read_text().replace("return 1", "return 2"))
    wait_until(lambda: client.send_task("proj.tasks.version").get(timeout=RESULT_TIMEOUT) == 2,
               what="the node to run the new code")
    assert node.status()["reload_error"] is None
    client.close()
