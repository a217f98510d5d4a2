"""User components and node signals, in real meshnode processes (components_app)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import free_port, run_program, wait_until

RESULT_TIMEOUT = 30.0


def _notes(node: Any) -> list[str]:
    try:
        return (Path(node.data_dir) / "notes.log").read_text().splitlines()
    except OSError:
        return []


def _stats(node: Any) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((Path(node.data_dir) / "stats.json").read_text())
        return data
    except (OSError, ValueError):
        return None


def test_user_components_run_and_their_failures_are_isolated(
        start_node: Any, make_client: Any) -> None:
    node = start_node(app="components_app")
    # the example exporter writes the node's report, again and again
    first = wait_until(lambda: _stats(node), what="stats.json")
    assert first["stats"]["node"] == node.name and first["final"] is False
    wait_until(lambda: (_stats(node) or first)["at"] > first["at"], what="a second report")
    # a component's own task went through the mesh and came back
    wait_until(lambda: "submitted add: 42" in _notes(node), what="the submitter's result")
    # broken components are logged; the node serves on
    assert make_client(node).tasks.add.delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5
    err = node.stderr()
    assert "component BrokenStart: start() failed" in err and "broken on purpose at start" in err
    assert "component NeedsBroken is not started: it requires" in err
    wait_until(lambda: "broken on purpose in a loop" in node.stderr(), what="the loop's failure")
    assert "needs-broken started" not in _notes(node)
    status = node.status()
    assert status["components"][-5:] == ["stats-exporter", "BrokenStart", "NeedsBroken",
                                         "broken-loop", "Submitter"]
    assert node.stop() == 0
    err = node.stderr()
    assert "component broken-loop: stop() failed" in err
    assert _stats(node)["final"] is True        # the exporter's stop ran after the failing one
    assert "stopped" in err


def test_node_signals_fire_in_the_node_in_order(start_node: Any) -> None:
    node = start_node(app="components_app")
    wait_until(lambda: any(n.startswith("worker_ready") for n in _notes(node)),
               what="worker_ready")
    assert "signal worker_ready: receiver raises_on_ready raised" in node.stderr()
    assert node.stop() == 0
    notes = [n for n in _notes(node) if n.startswith("worker_") or n.startswith("broken-loop")]
    pid = node.pid
    assert notes == [f"worker_init pid={pid}", f"broken-loop started on {node.name}",
                     f"worker_ready pid={pid} members=1", f"worker_shutdown pid={pid}"]


def test_components_that_cannot_be_ordered_stop_the_node_with_a_clear_error(
        tmp_path: Path) -> None:
    (tmp_path / "cyclic_app.py").write_text(
        "from mesh import Component, Mesh\n"
        "app = Mesh('cyclic')\n"
        "class A(Component):\n    requires = ('B',)\n"
        "class B(Component):\n    requires = ('A',)\n"
        "class C(Component):\n    requires = ('nope',)\n"
        "app.components.add(A)\napp.components.add(B)\n")
    (tmp_path / "unknown_app.py").write_text(
        "from mesh import Component, Mesh\n"
        "app = Mesh('unknown')\n"
        "class C(Component):\n    requires = ('nope',)\n"
        "app.components.add(C)\n")
    from harness import MESHNODE, clean_env
    env = clean_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    for module, words in (("cyclic_app", "components require each other: A -> B -> A"),
                          ("unknown_app", "component 'C' requires 'nope', which is not a component")):
        done = run_program(MESHNODE, "--app", module, "--bind", f"tcp://127.0.0.1:{free_port()}",
                           "--no-mdns", "--data-dir", str(tmp_path / module), env=env)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr


# ---- control commands the app registered ----------------------------------------------

def test_app_control_commands_through_app_control_and_meshctl(start_node: Any) -> None:
    from harness import MESHCTL

    from mesh import Mesh
    node = start_node(app="components_app")
    with Mesh("ctl", peers=[node.endpoint], mdns=False) as app:
        ctl = app.control
        assert ctl.broadcast("bump", arguments={"n": 2}, reply=True) == {node.name: {"bumped": 2}}
        assert "'n' must be" in ctl.broadcast("bump", arguments={"n": "x"})[node.name]["error"]
        assert ctl.broadcast("component-names")[node.name][-1] == "Submitter"
        assert "RuntimeError: a command that raises" in ctl.broadcast("explodes")[node.name]["error"]
        assert "note needs 'text'" in ctl.broadcast("note", arguments={})[node.name]["error"]
        assert ctl.broadcast("note", arguments={"text": "quietly"}, reply=False) is None
        wait_until(lambda: "quietly" in _notes(node), what="the reply=False command to run")
    done = run_program(MESHCTL, "--peers", node.endpoint, "--json", "control", "bump",
                       "--args", '{"n": 3}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {node.name: {"bumped": 5}}
    done = run_program(MESHCTL, "--peers", node.endpoint, "control", "bump", "--args", "[1]")
    assert done.returncode == 2 and "--args must be a JSON object" in done.stderr
    done = run_program(MESHCTL, "--peers", node.endpoint, "control", "nope")
    assert done.returncode == 1 and "unknown command 'nope'" in done.stdout
    # the node's own commands keep their names and shapes through the same path
    done = run_program(MESHCTL, "--peers", node.endpoint, "--json", "control", "revoke",
                       "--args", '{"task_ids": ["abc"]}')
    assert json.loads(done.stdout) == {node.name: {"revoked": ["abc"], "dropped": [],
                                                   "terminated": [], "still_running": []}}
    assert node.ping()
