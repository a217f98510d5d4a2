"""Django integration against a real node running a real Django site
(tests/integration/django_site): the fixup's database connection handling in pool
children, Django's Tasks framework backend, delay_on_commit."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django", reason="Django is a test extra: pip install -e '.[test]'")

from harness import INTEGRATION_DIR, NodeFactory, NodeProc, clean_env, wait_until

from mesh import Mesh, states

SITE_DIR = INTEGRATION_DIR / "django_site"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Django set up in this process with dsite.settings, on a sqlite file the nodes share."""
    db = str(tmp_path_factory.mktemp("dsite") / "db.sqlite3")
    saved = {k: os.environ.get(k) for k in ("DJANGO_SETTINGS_MODULE", "DSITE_DB")}
    os.environ.update(DJANGO_SETTINGS_MODULE="dsite.settings", DSITE_DB=db)
    sys.path.insert(0, str(SITE_DIR))
    import django
    django.setup()
    yield {"PYTHONPATH": str(SITE_DIR), "DJANGO_SETTINGS_MODULE": "dsite.settings", "DSITE_DB": db}
    sys.path.remove(str(SITE_DIR))
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def node(site: dict[str, str], start_module_node: NodeFactory) -> NodeProc:
    # one child, so that consecutive tasks meet the same child and its connection
    return start_module_node(app="dsite.mesh", concurrency=1,
                             env={**site, "DSITE_CONNECT_IN_NODE": "1"})


@pytest.fixture(scope="module")
def app(node: NodeProc) -> Iterator[Mesh]:
    app = Mesh("dsite-test", peers=[node.endpoint], mdns=False)   # the current app
    yield app
    app.close()


# -- the fixup, in the node's children ---------------------------------------------------

def test_a_child_never_uses_the_connection_it_inherited_from_the_node(app: Mesh) -> None:
    from dsite.jobs.tasks import connection_state
    state = connection_state.delay().get(timeout=30)
    assert state["inherited"] is False
    assert state["open"] is False        # forgotten, and nothing opened it since


def test_a_connection_a_task_left_half_configured_is_closed_before_the_next(app: Mesh) -> None:
    from dsite.jobs.tasks import connection_state, leave_autocommit_off
    left = leave_autocommit_off.delay().get(timeout=30)
    after = connection_state.delay().get(timeout=30)
    assert after["pid"] == left["pid"]   # the same long-lived child
    assert after["autocommit"] is True   # a fresh connection, not the one left behind
    assert after["raw"] != left["raw"] or after["raw"] is None


def test_the_node_sets_django_up_and_discovers_installed_apps_tasks(node: NodeProc) -> None:
    registered = node.status().get("registered") or _registered(node)
    assert "dsite.jobs.tasks.connection_state" in registered     # shared_task
    assert "dsite.jobs.tasks.multiply" in registered              # Django Tasks framework


def _registered(node: NodeProc) -> list[str]:
    reply: Any = node.request("registered", timeout=10)
    return list(reply.payload)


# -- delay_on_commit ---------------------------------------------------------------------

def test_delay_on_commit_sends_when_the_transaction_commits(app: Mesh, tmp_path: Path) -> None:
    from django.db import transaction
    from dsite.jobs.tasks import mark
    out = tmp_path / "marks"
    with transaction.atomic():
        mark.apply_async_on_commit((str(out), "committed"), task_id="commit-1")
        assert app.AsyncResult("commit-1").state == states.UNKNOWN   # not sent yet
    assert app.AsyncResult("commit-1").get(timeout=30) == "committed"


def test_nothing_is_sent_when_the_transaction_rolls_back(app: Mesh, tmp_path: Path) -> None:
    from django.db import transaction
    from dsite.jobs.tasks import mark
    out = tmp_path / "marks"
    with pytest.raises(RuntimeError), transaction.atomic():
        mark.apply_async_on_commit((str(out), "rolled back"), task_id="rollback-1")
        mark.delay_on_commit(str(out), "rolled back too")
        raise RuntimeError("rollback")
    with transaction.atomic():
        mark.apply_async_on_commit((str(out), "after"), task_id="rollback-2")
    assert app.AsyncResult("rollback-2").get(timeout=30) == "after"
    assert app.AsyncResult("rollback-1").state == states.UNKNOWN
    assert out.read_text() == "after\n"


def test_apply_async_on_commit_refuses_an_unknown_option_before_the_commit(app: Mesh) -> None:
    from dsite.jobs.tasks import mark

    from mesh.exceptions import ConfigError
    with pytest.raises(ConfigError, match="countdwn"):
        mark.apply_async_on_commit(("x", "y"), countdwn=3)


# -- Django's Tasks framework --------------------------------------------------------------

def _finished(result: Any) -> Any:
    def done() -> bool:
        result.refresh()
        return bool(result.is_finished)
    wait_until(done, 30, f"task {result.id} to finish (status {result.status})")
    return result


def test_enqueue_runs_on_the_mesh_and_refresh_reads_it_back(app: Mesh, node: NodeProc) -> None:
    from dsite.jobs.tasks import multiply
    result = multiply.enqueue(6, 7)
    assert result.status == "READY" and result.args == [6, 7]
    _finished(result)
    assert result.status == "SUCCESSFUL"
    assert result.return_value == 42
    assert result.worker_ids == [node.name]
    again = multiply.get_result(result.id)
    assert again.return_value == 42 and again.status == "SUCCESSFUL"


def test_a_failure_is_failed_with_the_exception_class_and_traceback(app: Mesh) -> None:
    from dsite.jobs.tasks import Unusual, fail
    result = _finished(fail.enqueue("boom"))
    assert result.status == "FAILED"
    (error,) = result.errors
    assert error.exception_class_path == "dsite.jobs.tasks.Unusual"
    assert error.exception_class is Unusual
    assert "boom" in error.traceback
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018


def test_context_async_and_non_json_values(app: Mesh) -> None:
    from dsite.jobs.tasks import acoro, attempt, not_json
    ctx = _finished(attempt.enqueue(5))
    assert ctx.return_value == {"attempt": 1, "id": ctx.id, "x": 5}
    assert _finished(acoro.enqueue(3)).return_value == 4
    bad = _finished(not_json.enqueue())
    assert bad.status == "FAILED" and bad.errors[0].exception_class is TypeError


def test_run_after_holds_the_task_until_then(app: Mesh) -> None:
    from django.utils import timezone
    from dsite.jobs.tasks import multiply
    when = timezone.now() + datetime.timedelta(seconds=1.5)
    result = multiply.using(run_after=when).enqueue(2, 2)
    _finished(result)
    assert timezone.now() >= when
    assert result.return_value == 4


def test_get_result_from_another_process(app: Mesh, node: NodeProc, site: dict[str, str]) -> None:
    from dsite.jobs.tasks import multiply
    result = _finished(multiply.enqueue(3, 5))
    code = (
        "import json, django; django.setup()\n"
        "from mesh import Mesh\n"
        f"app = Mesh('other', peers=[{node.endpoint!r}], mdns=False)\n"
        "from dsite.jobs.tasks import multiply\n"
        f"r = multiply.get_result({result.id!r})\n"
        "print(json.dumps([r.status, r.return_value, r.worker_ids]))\n"
        "app.close()\n")
    env = clean_env(**site)
    env["PYTHONPATH"] = os.pathsep.join([site["PYTHONPATH"], env["PYTHONPATH"]])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["SUCCESSFUL", 15, [node.name]]


def test_an_id_no_node_knows_does_not_exist(app: Mesh) -> None:
    from dsite.jobs.tasks import multiply

    from mesh.django import tasks_api as api
    with pytest.raises(api.TaskResultDoesNotExist):
        multiply.get_result("no-such-task-id")


def test_priorities_map_onto_mesh_in_order(app: Mesh) -> None:
    from mesh.django.backend import mesh_priority
    assert [mesh_priority(p) for p in (-100, -50, 0, 1, 50, 100)] == [0, 2, 5, 5, 7, 9]
    from dsite.jobs.tasks import urgent
    assert _finished(urgent.enqueue(1)).return_value == 1


def test_what_mesh_does_not_support_is_refused_clearly(app: Mesh) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from dsite.jobs.tasks import multiply

    from mesh.django import tasks_api as api
    from mesh.django.backend import TaskBackend
    with pytest.raises(ImproperlyConfigured, match="no named queues"):
        TaskBackend("x", {"QUEUES": ["default", "emails"]})
    with pytest.raises(ImproperlyConfigured, match="unknown"):
        TaskBackend("x", {"OPTIONS": {"broker": "redis://"}})
    with pytest.raises(api.InvalidTask):
        multiply.using(queue_name="emails")
