"""meshnode -A finds the app the way Celery's -A does (module, its app/celery/mesh
attribute, a package's celery/mesh submodule), and a node whose app registers no
tasks says so loudly: a WARNING at start, and in meshctl status."""
from __future__ import annotations

import json

import pytest
from harness import MESHCTL, MESHNODE, NodeFactory, clean_env, free_port, run_program

from mesh import Mesh


def _registered(node: object) -> list[str]:
    status = node.status()  # type: ignore[attr-defined]
    names: list[str] = status["registered"]
    return names


@pytest.mark.parametrize("spec", ["compat_proj", "compat_proj.celery", "compat_proj.celery:app",
                                  "compat_proj.celery.app"])
def test_a_project_package_is_found_through_its_celery_module(
        start_node: NodeFactory, spec: str) -> None:
    node = start_node(app=spec, concurrency=1)
    assert _registered(node) == ["compat_proj.tasks.mul"]         # through include=[...]
    assert node.status()["app"] == "compat_proj.celery:app"
    with Mesh("c", peers=[node.endpoint], mdns=False) as client:
        assert client.send_task("compat_proj.tasks.mul", args=(6, 7)).get(timeout=60) == 42
    assert "broker='amqp://'" in node.stderr() and "no broker" in node.stderr()


def test_a_package_with_a_mesh_module(start_node: NodeFactory) -> None:
    node = start_node(app="compat_meshpkg", concurrency=1)
    assert _registered(node) == ["compat_meshpkg.mesh.hello"]
    assert node.status()["app"] == "compat_meshpkg.mesh:application"


def test_an_app_with_no_tasks_says_so_loudly(start_node: NodeFactory) -> None:
    node = start_node(app="compat_empty", concurrency=1)
    err = node.stderr()
    assert "WARNING" in err and "REGISTERS NO TASKS" in err and "compat_empty.celery:app" in err
    p = run_program(MESHCTL, "--peers", node.endpoint, "status")
    assert p.returncode == 0, p
    assert f"WARNING: node {node.name} registers no tasks" in p.stderr
    assert "compat_empty.celery:app" in p.stderr
    p = run_program(MESHCTL, "--peers", node.endpoint, "--json", "status")
    assert json.loads(p.stdout)[0]["registered"] == []


@pytest.mark.parametrize("spec,words", [
    ("compat_nowhere", "no mesh.Mesh app in 'compat_nowhere'"),
    ("compat_nowhere", "compat_nowhere.celery"),
    ("compat_proj.celery:nothing", "has no attribute 'nothing'"),
    ("mesh_it_no_such_package", "cannot import 'mesh_it_no_such_package'"),
    ("compat_proj/celery.py", "--app takes a module: --app compat_proj.celery"),
])
def test_an_app_that_cannot_be_found_says_what_was_tried(spec: str, words: str, tmp_path: object) -> None:
    p = run_program(MESHNODE, "--app", spec, "--bind", f"tcp://127.0.0.1:{free_port()}",
                    "--no-mdns", "--data-dir", str(tmp_path), env=clean_env())
    assert p.returncode == 2, p
    assert words in p.stderr, p.stderr
