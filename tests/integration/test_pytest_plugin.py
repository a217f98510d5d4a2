"""mesh.testing.pytest, Celery's pytest plugin (``celery.contrib.pytest``) moved over
by its name: a suite using Celery's fixtures runs in a pytest of its own (a
subprocess), its worker mesh's real node in a thread. And the client's fresh look
at the membership that a task registered just before it was sent needs."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from harness import clean_env

from mesh import Mesh
from mesh.client import routes
from mesh.exceptions import ConfigError
from mesh.testing import start_worker

CONFTEST = """\
import pytest
pytest_plugins = ("mesh.testing.pytest",)     # was: ("celery.contrib.pytest",)


@pytest.fixture(scope="session")
def celery_config():
    # a Celery suite's: broker and backend are logged as not used
    return {"broker_url": "amqp://", "result_backend": "redis://", "task_default_queue": "tests"}


@pytest.fixture(scope="session")
def celery_includes():
    return ["guide_tasks"]


@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {"queues": ["tests", "celery"]}
"""

GUIDE_TASKS = """\
from mesh import shared_task


@shared_task
def xsum(numbers):
    return sum(numbers)
"""

TEST_GUIDE = """\
import pytest
from mesh import current_app, chord
from mesh.exceptions import ConfigError


def test_create_task(celery_app, celery_worker):
    # Celery's testing guide, verbatim
    @celery_app.task
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


def test_a_chord_on_the_included_shared_task(celery_app, celery_worker):
    @celery_app.task
    def square(x):
        return x * x

    celery_worker.reload()
    import guide_tasks
    assert chord(square.s(i) for i in range(4))(guide_tasks.xsum.s()).get(timeout=10) == 14


def test_config_and_queues(celery_app, celery_worker):
    assert celery_app.conf.task_default_queue == "tests"
    assert celery_worker.routing.describe() == "celery, tests"


@pytest.mark.celery(task_default_queue="marked")
def test_marker(celery_app):
    assert celery_app.conf.task_default_queue == "marked"


def test_without_a_worker_nothing_is_sent_elsewhere(celery_app):
    # MESH_PEERS is set (to a node nobody runs): the test app does not take it
    @celery_app.task
    def one():
        return 1

    with pytest.raises(ConfigError, match="no nodes to send tasks to"):
        one.delay().get(timeout=10)


def test_session_app_and_worker(celery_session_app, celery_session_worker):
    @celery_session_app.task
    def add(x, y):
        return x + y

    celery_session_worker.reload()
    assert add.delay(2, 3).get(timeout=10) == 5
    assert current_app.main == celery_session_app.main == "celery.tests"
"""

TEST_TRAP = """\
import pytest
from mesh import current_app


@pytest.fixture(scope="session")
def use_celery_app_trap():
    return True


def test_the_trap(celery_app):
    with pytest.raises(RuntimeError, match="depends on current_app"):
        current_app.conf


def test_depends_on_current_app(celery_app, depends_on_current_app):
    assert current_app.main == celery_app.main
"""

TEST_NO_WORKER = """\
def test_no_worker(celery_worker):
    assert celery_worker is None
"""


def _pytest(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, timeout=180, check=False, cwd=cwd,
                          stdin=subprocess.DEVNULL, env=clean_env(PYTHONPATH=str(cwd), **env))


def test_celerys_fixtures_run_a_celery_suite(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "guide_tasks.py").write_text(GUIDE_TASKS)
    (tmp_path / "test_guide.py").write_text(TEST_GUIDE)
    (tmp_path / "test_trap.py").write_text(TEST_TRAP)
    p = _pytest(tmp_path, "test_guide.py", "test_trap.py", MESH_PEERS="tcp://127.0.0.1:9")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "8 passed" in p.stdout, p.stdout


def test_no_worker_starts_none(tmp_path: Path) -> None:
    # Celery's NO_WORKER: the suite runs against a mesh started apart
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "guide_tasks.py").write_text(GUIDE_TASKS)
    (tmp_path / "test_no_worker.py").write_text(TEST_NO_WORKER)
    p = _pytest(tmp_path, "test_no_worker.py", NO_WORKER="1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 passed" in p.stdout, p.stdout


def test_a_task_registered_just_before_it_is_sent_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # the client looks at a fresh member list before it says no node has a task; a
    # task sent within LOOK_SPACING of its last look (made long here) was failed at its
    # retry as if it had looked, though no list had been asked for since the worker's
    # reload() registered the task
    monkeypatch.setattr(routes, "LOOK_SPACING", 5.0)
    app = Mesh("late_registered", set_as_current=False, mdns=False)

    @app.task
    def early(x: int) -> int:
        return x

    with start_worker(app) as worker:
        assert early.delay(1).get(timeout=10) == 1

        @app.task
        def late(x: int) -> int:
            return x * 2

        worker.reload()
        assert late.delay(3).get(timeout=10) == 6


def test_a_pool_the_test_worker_does_not_have_is_said(caplog: pytest.LogCaptureFixture) -> None:
    app = Mesh("prefork_asked", set_as_current=False, mdns=False)
    with caplog.at_level(logging.WARNING, logger="mesh.testing"), start_worker(app, pool="prefork"):
        pass
    assert "pool 'prefork' is not used" in caplog.text


def test_time_limits_the_test_worker_cannot_enforce_are_said(caplog: pytest.LogCaptureFixture) -> None:
    # (Celery's worker kills a task past them; a thread cannot be: they were taken silently)
    app = Mesh("limits_asked", set_as_current=False, mdns=False)
    with caplog.at_level(logging.WARNING, logger="mesh.testing"), \
            start_worker(app, time_limit=5, soft_time_limit=None):
        pass
    assert "time_limit=5 not enforced" in caplog.text and "soft_time_limit" not in caplog.text


def test_the_worker_has_celerys_hostname() -> None:
    # Celery's suites name their worker in control commands' destination by its
    # 'hostname' (an AttributeError on the node before)
    app = Mesh("hostname_asked", set_as_current=False, mdns=False)
    with start_worker(app, hostname="w1@host") as worker:
        assert worker.hostname == "w1@host"
        assert app.control.ping(destination=[worker.hostname], timeout=10) == \
            [{"w1@host": {"ok": "pong"}}]


def test_the_worker_takes_queues_as_one_text_with_commas() -> None:
    # Celery's WorkController splits queues='a,b' (str_to_list), as -Q does: a
    # celery_worker_parameters of {"queues": "high,low"} was one queue named 'high,low'
    # (the node refused it: ConfigError, no worker)
    app = Mesh("queues_text", set_as_current=False, mdns=False)

    @app.task(queue="low")
    def low() -> str:
        return "low"

    with start_worker(app, queues="high,low", exclude_queues="celery") as worker:
        assert worker.routing.describe() == "high, low"
        assert low.delay().get(timeout=10) == "low"


def test_celerys_worker_keywords_are_taken() -> None:
    # Celery's WorkController takes any keyword (celery_worker_parameters such as
    # prefetch_multiplier): a Celery suite's failed here ('unknown keyword(s)'); a
    # name Celery does not know either is still refused
    app = Mesh("worker_keywords", set_as_current=False, mdns=False)

    @app.task
    def one() -> int:
        return 1

    with start_worker(app, prefetch_multiplier=1, task_events=True, max_tasks_per_child=10,
                      without_heartbeat=True):
        assert one.delay().get(timeout=10) == 1
    with pytest.raises(ConfigError, match="prefetch_multiplyer"), \
            start_worker(app, prefetch_multiplyer=1):
        pass


def test_the_worker_imports_the_modules_it_is_given_to_include(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery's start_worker passes include=[...] on to its worker, which imports them
    # (as -I does) before it starts: here it was refused ('unknown keyword(s)
    # ['include']'), so a Celery suite's celery_worker_parameters with include failed
    (tmp_path / "included_tasks.py").write_text(
        "from mesh import shared_task\n\n\n@shared_task\ndef triple(x):\n    return 3 * x\n")
    (tmp_path / "broken_tasks.py").write_text("import not_a_module_anywhere  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Mesh("include_asked", set_as_current=False, mdns=False)
    with start_worker(app, include=["included_tasks"]) as worker:
        assert "included_tasks.triple" in worker.node.app.tasks
        assert app.send_task("included_tasks.triple", (5,)).get(timeout=10) == 15
    with pytest.raises(ConfigError, match=r"module 'no_such_tasks' to include does not import: "
                                          r"ModuleNotFoundError"), \
            start_worker(app, include="included_tasks,no_such_tasks"):
        pass
    with pytest.raises(ConfigError, match=r"module 'broken_tasks' to include does not import: "
                                          r".*not_a_module_anywhere"), \
            start_worker(app, include=["broken_tasks"]):
        pass
