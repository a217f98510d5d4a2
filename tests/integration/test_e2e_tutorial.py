"""Celery's "First Steps with Celery" tutorial, run on a real node.

tests/integration/tutorial/tasks.py and celeryconfig.py are the tutorial's code,
verbatim except the import line (``from mesh import Mesh as Celery``). The console
commands become mesh's: ``celery -A tasks worker --loglevel=INFO`` is
``meshnode -A tasks --loglevel=INFO`` and ``celery -A tasks control rate_limit
tasks.add 10/m`` is ``meshctl control rate_limit tasks.add 10/m``. The tutorial's
pycon lines are below as they are written there, with the waits a test needs.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from harness import (
    INTEGRATION_DIR,
    MESHCTL,
    ROOT,
    NodeFactory,
    NodeProc,
    clean_env,
    run_program,
    wait_until,
)

TUTORIAL = INTEGRATION_DIR / "tutorial"


@pytest.fixture(scope="module")
def worker(start_module_node: NodeFactory) -> NodeProc:
    """$ celery -A tasks worker --loglevel=INFO"""
    path = os.pathsep.join([str(TUTORIAL), str(INTEGRATION_DIR), str(ROOT)])
    return start_module_node(app="tasks", loglevel="INFO", env={"PYTHONPATH": path})


@pytest.fixture
def tasks(worker: NodeProc, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """>>> from tasks import add  (the client finds the node through MESH_PEERS)"""
    monkeypatch.setenv("MESH_PEERS", worker.endpoint)
    monkeypatch.syspath_prepend(str(TUTORIAL))
    for name in ("tasks", "celeryconfig"):
        sys.modules.pop(name, None)
    import tasks
    yield tasks
    tasks.app.close()
    for name in ("tasks", "celeryconfig"):
        sys.modules.pop(name, None)


def test_calling_the_task_and_keeping_results(tasks: ModuleType) -> None:
    add = tasks.add
    add.delay(4, 4)
    result = add.delay(4, 4)
    assert result.ready() in (False, True)       # False in the tutorial: it may be done already
    wait_until(result.ready, what="add(4, 4) to finish")
    assert result.get(timeout=1) == 8
    assert result.get(propagate=False) == 8
    assert result.traceback is None
    result.forget()


def test_configuration_snippets(tasks: ModuleType) -> None:
    app = tasks.app
    app.conf.task_serializer = 'json'
    app.conf.update(
        task_serializer='json',
        accept_content=['json'],  # Ignore other content
        result_serializer='json',
        timezone='Europe/Oslo',
        enable_utc=True,
    )
    app.config_from_object('celeryconfig')
    assert app.conf.timezone == "Europe/Oslo"
    assert tasks.add.options.rate_limit == "10/m"          # task_annotations


def test_the_worker_took_the_configuration_module_and_said_what_it_does_not_use(
        worker: NodeProc, tasks: ModuleType) -> None:
    registered = worker.control.broadcast([worker.endpoint], "registered")[worker.endpoint]
    (add,) = [t for t in registered.payload if t["name"] == "tasks.add"]  # type: ignore[union-attr]
    assert add["rate_limit"] == pytest.approx(10 / 60)     # task_annotations reached the node
    err = worker.stderr()
    assert "broker_url" in err and "no broker" in err
    assert "result_backend" in err and "no result backend" in err
    # task_routes is taken: tasks.add goes to queue 'low-priority', which this node, started
    # without --queues as in the tutorial, serves (mesh's nodes take every queue by default)
    assert "task_routes" not in err and "not available in this version of mesh yet" not in err


def test_control_rate_limit_from_the_command_line(worker: NodeProc) -> None:
    """$ celery -A tasks control rate_limit tasks.add 10/m"""
    p = run_program(MESHCTL, "--peers", worker.endpoint, "control", "rate_limit", "tasks.add",
                    "10/m", env=clean_env())
    assert p.returncode == 0, p
    assert worker.name in p.stdout


def test_the_tutorial_files_are_the_tutorials() -> None:
    """Only the import line differs from Celery's text."""
    text = (TUTORIAL / "tasks.py").read_text()
    assert "from mesh import Mesh as Celery\n" in text and "from celery" not in text
    assert "app = Celery('tasks', backend='rpc://', broker='pyamqp://')" in text
    assert Path(TUTORIAL / "celeryconfig.py").read_text().count("'tasks.add'") == 2
