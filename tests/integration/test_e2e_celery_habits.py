"""A web developer's Celery project moved to mesh (the trial of session 10): places where
a Celery habit met silence or a puzzle, on real nodes started with the project's app
(tests/integration/trial_proj, ``namespace="CELERY"`` with Celery's broker settings)
and scripts that submit and exit, as a web request does."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest
from harness import MESHCTL, MESHNODE, ROOT, NodeFactory, NodeProc, clean_env, run_program

from mesh.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

APP = "trial_proj"
TASKS = "trial_proj.billing.tasks"


@pytest.fixture(scope="module")
def node(start_module_node: NodeFactory) -> NodeProc:
    return start_module_node(app=APP, concurrency=1)


def run(node: NodeProc, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` as a user's script that submits and exits (MESH_PEERS names the node)."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=90, check=False, cwd=ROOT, stdin=subprocess.DEVNULL,
                       env=clean_env(MESH_PEERS=node.endpoint))
    assert p.returncode == 0, f"the script exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


def test_a_task_no_node_has_sent_by_a_process_that_exits_is_not_silent(node: NodeProc) -> None:
    # send_task("a name no node registered") from a web request that returns at once:
    # the client failed the task (NotRegistered, seen only by a get() nobody makes),
    # the process exited without a word, and AsyncResult(id) elsewhere said UNKNOWN.
    # Celery's worker logs "Received unregistered task" at ERROR.
    p = run(node, f"""
import {APP}
from mesh.result import AsyncResult
from {APP}.celery import app
ids = [app.send_task("{TASKS}.no_such_task", args=(i,)).id for i in range(3)]
print(ids[0])
""")
    task_id = p.stdout.strip().splitlines()[-1]
    said = [ln for ln in p.stderr.splitlines() if "will not run" in ln]
    assert len(said) == 1, p.stderr                 # once for the name, not once per task
    assert f"{TASKS}.no_such_task[{task_id}]" in said[0]
    assert "NotRegistered" in said[0] and "is not registered on any alive node" in said[0]


def test_get_inside_a_task_that_times_out_says_why(node: NodeProc) -> None:
    # .get() in a task on a node whose only worker it holds: the task it waits for stays
    # queued, and the TimeoutError said only "did not finish within 1 s (state RECEIVED)"
    # (Celery raises "Never call result.get() within a task!" at once)
    p = run(node, f"""
import json
from {TASKS} import waits_on_add
try:
    waits_on_add.delay(1).get(timeout=60)
except Exception as e:
    print(json.dumps([type(e).__name__, str(e)]))
""")
    kind, message = json.loads(p.stdout.strip().splitlines()[-1])
    assert kind == "TimeoutError", message
    assert f"runs inside task {TASKS}.waits_on_add[" in message, message
    assert "prefer a chain or a chord" in message


def test_current_task_in_a_helper_on_a_node(node: NodeProc) -> None:
    # `from celery import current_task` in a helper a task calls: no such name in mesh
    p = run(node, f"""
import json
from {TASKS} import whoami
r = whoami.delay()
print(json.dumps([r.id, r.get(timeout=60)]))
""")
    task_id, (seen_id, name, hostname) = json.loads(p.stdout.strip().splitlines()[-1])
    assert (seen_id, name, hostname) == (task_id, f"{TASKS}.whoami", node.name)


def test_meshctl_with_the_app_does_not_repeat_its_unused_settings(node: NodeProc) -> None:
    # `meshctl -A proj inspect ping` (a liveness probe) printed the paragraph about
    # broker_url and result_backend on every run; the node logs it, once
    p = subprocess.run([MESHCTL, "-A", APP, "--peers", node.endpoint, "inspect", "ping"],
                       capture_output=True, text=True, timeout=60, check=False,
                       cwd=ROOT / "tests" / "integration", env=clean_env(),
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "OK pong" in p.stdout
    assert "settings are ignored" not in p.stderr, p.stderr
    assert "  broker_url: mesh has no broker" in node.stderr()


def test_the_settings_mesh_ignores_are_one_readable_warning_in_the_nodes_log(
        node: NodeProc) -> None:
    # a new user (session 16): the warning came out bare, above the node's first line
    # (no time, level or node: logged as the app was imported, before meshnode set up
    # its logging), the settings and reasons run together with "; "
    log = node.stderr().splitlines()
    i = next(i for i, line in enumerate(log) if "settings are ignored" in line)
    assert re.fullmatch(
        rf"\[\S+ \S+ WARNING {node.name} mesh.conf\] config_from_object\('trial_proj.settings', "
        r"namespace='CELERY'\): 2 settings are ignored, mesh does not use them "
        r"\(docs/configuration.md, \"Names that are not mesh's\"\):", log[i]), log[i]
    assert log[i + 1].startswith("  broker_url: mesh has no broker: "), log
    assert log[i + 2].startswith("  result_backend: mesh keeps results on the nodes "), log


def test_meshctl_takes_timeout_after_the_command(node: NodeProc) -> None:
    # `celery -A proj inspect active --timeout 5` moved over: "No such option '--timeout'"
    # (it was meshctl's, before the command, only)
    p = run_program(MESHCTL, "--peers", node.endpoint, "inspect", "active", "--timeout", "5",
                    "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {node.name: []}


def test_meshctl_takes_celerys_short_options_after_the_command(start_node: NodeFactory,
                                                               node: NodeProc) -> None:
    # `celery -A proj inspect active -t 5 -j -d w1@h,w2@h`, moved over: "No such option
    # -t" (and -j, -d); Celery's --destination is a comma-separated list
    other = start_node(concurrency=1, name="habits-other")
    peers = f"{node.endpoint},{other.endpoint}"
    p = run_program(MESHCTL, "--peers", peers, "inspect", "ping", "-t", "5", "-j",
                    "-d", f"{node.name},{other.name}")
    assert p.returncode == 0, p.stderr
    assert set(json.loads(p.stdout)) == {node.name, other.name}
    p = run_program(MESHCTL, "--peers", peers, "inspect", "ping", "-t")    # its value left out
    assert p.returncode == EXIT_USAGE and "requires an argument" in p.stderr, p.stderr
    p = run_program(MESHCTL, "--peers", peers, "inspect", "active", "-j", "-d", other.name)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {other.name: []}
    # a command for one node reaches that node only (it reached every node, and only
    # the replies were filtered: this shut the whole mesh down)
    p = run_program(MESHCTL, "--peers", peers, "-j", "control", "shutdown",
                    "--destination", other.name)
    assert p.returncode == 0, p
    assert other.wait(30) == 0
    assert node.proc.poll() is None and node.status()["state"] == "alive"


def test_a_destination_that_is_no_node_says_so_and_names_the_nodes(node: NodeProc) -> None:
    # `meshctl inspect active -d nosuch` (a new user, session 16) printed "nosuch: ERROR
    # no such node answered"; with a real node named too, it exited 0
    for dest, rc in (("nosuch", EXIT_FAILURE), (f"nosuch,{node.name}", EXIT_FAILURE)):
        p = run_program(MESHCTL, "--peers", node.endpoint, "inspect", "active", "-d", dest)
        assert p.returncode == rc, p
        assert f"nosuch: ERROR no such node named 'nosuch'; the mesh's nodes: {node.name}" \
            in p.stdout.splitlines(), p
    p = run_program(MESHCTL, "--peers", node.endpoint, "-j", "control", "pool-grow", "-d", "nosuch")
    assert p.returncode == EXIT_FAILURE, p
    assert json.loads(p.stdout) == {"nosuch": {
        "error": f"no such node named 'nosuch'; the mesh's nodes: {node.name}"}}
    assert run_program(MESHCTL, "--peers", node.endpoint, "inspect", "active", "-d",
                       node.name).returncode == EXIT_OK


@pytest.mark.parametrize("argv, said", [
    (["worker", "-l", "INFO"], "meshnode is the worker"),
    (["beat"], "no beat process"),
])
def test_celerys_subcommands_get_a_hint(argv: list[str], said: str) -> None:
    # `meshnode -A proj worker -l INFO` (the celery command with the program changed)
    # said only "Got unexpected extra argument (worker)"
    p = run_program(MESHNODE, "-A", APP, *argv)
    assert p.returncode == EXIT_USAGE, p.stderr
    assert said in p.stderr, p.stderr


def test_celerys_embedded_beat_flag_and_hostname_pattern(start_node: NodeFactory) -> None:
    # a systemd unit's `celery -A proj worker -B -n worker1@%h`, moved over: -B was
    # "No such option", and %h was kept as is: the node's log format (which holds its
    # name) raised "not enough arguments for format string" at every line, and every
    # machine's node would have had the same name. (%% is a percent sign, as in Celery.)
    node = start_node(app=APP, name="worker1@%h%%", beat=True)
    host = socket.gethostname()
    assert node.status()["node"] == f"worker1@{host}%"
    assert f"node worker1@{host}% ready" in node.stderr()
    assert "-B (Celery's embedded beat) is not used by mesh" in node.stderr()


def test_a_name_pattern_celery_does_not_have_is_refused() -> None:
    p = run_program(MESHNODE, "-A", APP, "-n", "w@%q")
    assert p.returncode == EXIT_USAGE, p.stderr
    assert "%q" in p.stderr


def test_a_node_name_longer_than_the_wire_takes_is_refused() -> None:
    # Nodes name each other in every message (a membership update, a ping's source, a
    # beat firing), and refuse a name over 200 characters: a node so named started,
    # then every peer refused its frames ("source must be 1..200 characters") and it
    # never joined; at 250 it could not even send its periodic runs to itself.
    p = run_program(MESHNODE, "-A", APP, "-n", "w" * 199 + "@%h", "--no-mdns", timeout=30)
    assert p.returncode == EXIT_USAGE, p.stderr
    assert "name must be at most 200 characters" in p.stderr, p.stderr


def test_a_call_with_the_wrong_arguments_fails_in_the_caller(node: NodeProc) -> None:
    # Celery checks a call against the task's parameters when it is sent (``typing``,
    # on by default): add.delay(1) raises TypeError in the web request, nothing is
    # queued. mesh sent it, and the failure came back only to a get() nobody made.
    p = run(node, f"""
import {APP}
from {APP}.billing.tasks import add
try:
    add.delay(1)
except TypeError as e:
    print("TypeError:", e)
print(add.delay(2, 3).get(timeout=30))
""")
    assert p.stdout.splitlines() == ["TypeError: add() missing 1 required positional argument: 'y'",
                                     "5"]
