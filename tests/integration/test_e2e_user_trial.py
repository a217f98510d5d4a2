"""A new user's mistakes, as session 22's trial made them (a Celery project moved over,
a Django site): each is one line on stderr saying what and where, exit 2, never a
traceback through mesh. Real meshnode processes on code written to tmp_path."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from harness import MESHCTL, MESHNODE, clean_env, free_port, run_program, wait_until

from mesh.cli.common import EXIT_OK, EXIT_USAGE

APP = """\
from mesh import Mesh as Celery

app = Celery("trial", include=[{include}])
app.config_from_object("trial_settings", namespace="CELERY")
{extra}
"""


def _start(tmp_path: Path, files: dict[str, str], env: dict[str, str] | None = None) -> str:
    """meshnode -A trial_app on those files; the one line it printed, exit 2."""
    code = tmp_path / "code"
    for name, text in files.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(text)
    env = clean_env(PYTHONPATH=os.pathsep.join([str(code), clean_env()["PYTHONPATH"]]),
                    **(env or {}))
    p = run_program(MESHNODE, "-A", "trial_app", "--bind", f"tcp://127.0.0.1:{free_port()}",
                    "--no-mdns", "--data-dir", str(tmp_path / "data"), env=env)
    assert p.returncode == EXIT_USAGE, p
    lines = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert lines[0].startswith("meshnode: error: "), lines[0]
    return lines[0]


def _files(settings: str = "", include: str = "'trial_tasks'", extra: str = "",
           tasks: str = "") -> dict[str, str]:
    return {"trial_app.py": APP.format(include=include, extra=extra),
            "trial_settings.py": "CELERY_TIMEZONE = 'UTC'\n" + settings,
            "trial_tasks.py": "from trial_app import app\n\n@app.task\ndef add(x, y):\n"
                              "    return x + y\n" + tasks}


def test_a_misspelt_namespaced_setting_is_named_as_written_with_its_source(tmp_path: Path) -> None:
    """CELERY_TASK_ACKS_LAET in a CELERY-namespaced module said "unknown setting
    'task_acks_laet'", a name found nowhere in the user's files, and not where it came from."""
    line = _start(tmp_path, _files(settings="CELERY_TASK_ACKS_LAET = True\n"))
    assert "config_from_object('trial_settings', namespace='CELERY')" in line, line
    assert "CELERY_TASK_ACKS_LAET" in line and "did you mean CELERY_TASK_ACKS_LATE?" in line, line


def test_a_bad_namespaced_value_names_the_setting_as_written(tmp_path: Path) -> None:
    line = _start(tmp_path, _files(settings="CELERY_TASK_ACKS_LATE = 'yes please'\n"))
    assert "namespace='CELERY'): CELERY_TASK_ACKS_LATE: task_acks_late must be" in line, line


def test_settings_that_raise_say_where(tmp_path: Path) -> None:
    """Django's settings.py reading a variable that is not set (a KeyError as the settings
    are read) was a traceback through mesh's conf and Django's lazy settings."""
    files = _files(settings="import os\n\nSECRET = os.environ['TRIAL_NOT_SET']\n")
    line = _start(tmp_path, files)
    assert "config_from_object('trial_settings', namespace='CELERY'): KeyError: 'TRIAL_NOT_SET'" in line
    assert f"(at {tmp_path / 'code' / 'trial_settings.py'} line 4)" in line, line


@pytest.mark.parametrize("tasks, words, lineno", [
    pytest.param("import os\nKEY = os.environ['TRIAL_NOT_SET']\n", "KeyError: 'TRIAL_NOT_SET'", 7,
                 id="raises"),
    pytest.param("import trial_no_such_dependency\n",
                 "No module named 'trial_no_such_dependency'", 6, id="missing dependency"),
])
def test_an_included_tasks_module_that_fails_to_import_says_where(
        tmp_path: Path, tasks: str, words: str, lineno: int) -> None:
    """include=['proj.tasks'] whose module raised said "cannot import 'proj.tasks':
    KeyError: ..." without the file and line (the -A module itself said them)."""
    line = _start(tmp_path, _files(tasks=tasks))
    assert "cannot import 'trial_tasks'" in line and words in line, line
    assert f"(at {tmp_path / 'code' / 'trial_tasks.py'} line {lineno})" in line, line


def test_an_autodiscovered_tasks_module_that_raises_says_where(tmp_path: Path) -> None:
    """app.autodiscover_tasks() (Django's way) whose tasks module raised was a
    traceback through meshnode, click and importlib."""
    files = _files(include="", extra="app.autodiscover_tasks(['trial_pkg'])\n")
    files["trial_pkg/__init__.py"] = ""
    files["trial_pkg/tasks.py"] = "import os\n\nKEY = os.environ['TRIAL_NOT_SET']\n"
    line = _start(tmp_path, files)
    assert "autodiscover_tasks()" in line and "KeyError: 'TRIAL_NOT_SET'" in line, line
    assert f"(at {tmp_path / 'code' / 'trial_pkg' / 'tasks.py'} line 3)" in line, line


def test_mesh_peers_without_tcp_names_the_variable_and_the_fix(tmp_path: Path) -> None:
    """MESH_PEERS=127.0.0.1:7700 (host:port, as Redis URLs taught) said only "endpoint
    '127.0.0.1:7700' must look like tcp://HOST:PORT": not which variable, nor the fix."""
    port = free_port()
    line = _start(tmp_path, _files(), env={"MESH_PEERS": f"127.0.0.1:{port}"})
    assert line.startswith(f"meshnode: error: MESH_PEERS: endpoint '127.0.0.1:{port}'"), line
    assert f"(did you mean 'tcp://127.0.0.1:{port}'?)" in line, line
    # meshctl (without -A: no app's config to name) says so too
    out = run_program(MESHCTL, "status", env={**clean_env(), "MESH_PEERS": f"127.0.0.1:{port}"})
    assert out.returncode == EXIT_USAGE, out
    assert out.stderr.startswith(f"meshctl: error: MESH_PEERS: endpoint '127.0.0.1:{port}'"), out


@pytest.mark.skipif(importlib.util.find_spec("celery") is not None, reason="Celery is installed here")
def test_a_celery_import_left_behind_says_what_to_change(tmp_path: Path) -> None:
    """One `from celery import shared_task` left in a moved tasks module said only
    "No module named 'celery'"; now the file and line, and that mesh has the names."""
    line = _start(tmp_path, _files(tasks="from celery import shared_task\n"))
    assert "No module named 'celery'" in line, line
    assert f"(at {tmp_path / 'code' / 'trial_tasks.py'} line 6)" in line, line
    assert "from mesh import Mesh as Celery, shared_task" in line, line
    assert "docs/migrating-from-celery.md" in line, line


@pytest.mark.parametrize("how", ["include", "autodiscover"])
def test_a_misspelt_task_option_names_the_file_and_line(tmp_path: Path, how: str) -> None:
    """@app.task(max_retry=3) in an included or autodiscovered module said "unknown task
    option 'max_retry'; did you mean 'max_retries'?" and not which of the app's modules."""
    task = "\n@app.task(bind=True, max_retry=3)\ndef fetch(self, url):\n    return url\n"
    if how == "include":
        files = _files(tasks=task)
        where = tmp_path / "code" / "trial_tasks.py"
    else:
        files = _files(include="", extra="app.autodiscover_tasks(['trial_pkg'])\n")
        files["trial_pkg/__init__.py"] = ""
        files["trial_pkg/tasks.py"] = "from trial_app import app\n" + task
        where = tmp_path / "code" / "trial_pkg" / "tasks.py"
    line = _start(tmp_path, files)
    assert "unknown task option 'max_retry'; did you mean 'max_retries'?" in line, line
    assert f"at {where} line {7 if how == 'include' else 3}" in line, line


def test_meshctl_takes_its_options_after_the_command(start_node: Any) -> None:
    """`meshctl status --peers tcp://...` (options where Celery users put -A and where
    meshctl already took --json and --timeout) said "No such option '--peers'"."""
    node = start_node(concurrency=1)
    p = run_program(MESHCTL, "status", "--peers", node.endpoint, "--json")
    assert p.returncode == EXIT_OK, p
    assert [r["node"] for r in json.loads(p.stdout)] == [node.name]
    p = run_program(MESHCTL, "call", "tasks_app.add", "--args", "[2, 3]", "--wait",
                    f"--peers={node.endpoint}")
    assert p.returncode == EXIT_OK and p.stdout.strip() == "5", p


def test_meshctl_revoke_of_an_id_no_node_holds_says_so(start_node: Any) -> None:
    """A typo'd id (or a finished task's) got "n1: revoked" from every node and exit 0:
    it looked done. Now a line says that no node held it and what that means."""
    node = start_node(concurrency=1)
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.add", "--args",
                    "[2, 3]", "--countdown", "60")
    assert p.returncode == EXIT_OK, p
    waiting = p.stdout.strip()
    p = run_program(MESHCTL, "--peers", node.endpoint, "revoke", waiting, "no-such-id")
    assert p.returncode == EXIT_OK, p
    lines = p.stdout.strip().splitlines()
    assert lines[0] == f"{node.name}: revoked (dropped: {waiting})", p.stdout
    assert lines[-1].startswith("no node that answered held no-such-id: nothing stopped"), p.stdout
    assert waiting not in lines[-1], p.stdout


def test_two_nodes_started_with_one_name_are_told_so(start_node: Any) -> None:
    """`meshnode -n worker1` twice (a copied unit file, `-n w1@%h` twice on one host):
    the two took each other's place in every member list (meshctl status showed one
    of them; the other's tasks and copies went astray) and nothing was logged but an
    mDNS warning on one side. Now each logs one ERROR naming the other's address."""
    first = start_node(name="twin", concurrency=1)
    other = start_node(name="other", concurrency=1, peers=first.endpoint)
    second = start_node(name="twin", concurrency=1, peers=other.endpoint)
    said = "another node runs with this node's id 'twin', at {}: node ids must be unique"
    for node, twin in ((first, second), (second, first)):
        wait_until(lambda node=node, twin=twin: said.format(twin.endpoint) in
                   node.stderr_path.read_text(errors="replace"),
                   what=f"{node.endpoint} to say that {twin.endpoint} has its id")
        assert node.stderr_path.read_text().count(said.format(twin.endpoint)) == 1


def test_meshctl_call_of_a_misspelt_task_name_suggests_the_registered_one(start_node: Any) -> None:
    """`meshctl call proj.tasks.ad` said that no node has 'proj.tasks.ad', and no more."""
    node = start_node(concurrency=1)
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.ad", "--args", "[2, 3]",
                    "--wait")
    assert p.returncode == 1, p
    assert "NotRegistered" in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "meshctl: did you mean 'tasks_app.add'? (meshctl inspect registered lists the nodes' "
        "tasks)"), p.stderr
    # a name like none of the module's is given no hint (the module's name alone made
    # 'tasks_app.nope' close to 'tasks_app.seq')
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.nope", "--wait")
    assert p.returncode == 1 and "NotRegistered" in p.stderr, p
    assert "did you mean" not in p.stderr, p.stderr
