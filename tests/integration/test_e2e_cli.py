"""meshnode and meshctl as users run them: real programs, named exit codes."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import MESHCTL, MESHNODE, clean_env, free_port, occupy, run_program, wait_until
from test_e2e_chaos import mesh_formed

from mesh.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_START, EXIT_USAGE


@pytest.fixture(scope="module")
def node(start_module_node: Any) -> Any:
    return start_module_node(concurrency=2)


def _one_error_line(stderr: str, prog: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


def _dead_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


# ---- meshnode -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    pytest.param(["--app", "tasks_app", "--no-such-flag"], id="unknown flag"),
    pytest.param(["--app", "tasks_app", "--concurrency", "0"], id="concurrency 0"),
    pytest.param(["--app", "tasks_app", "--time-limit", "soon"], id="time limit not a number"),
    # (it started, and each task failed: OverflowError from the child's timer)
    pytest.param(["--app", "tasks_app", "--soft-time-limit", "inf"], id="soft time limit inf"),
    pytest.param(["--app", "tasks_app", "--bind", "localhost:7700"], id="bind without tcp://"),
    pytest.param(["--app", "tasks_app", "--loglevel", "LOUD"], id="unknown loglevel"),
    pytest.param(["--concurrency", "1"], id="no --app"),
    pytest.param(["--app", "tasks_app", "-Q", ""], id="-Q naming no queue"),    # was every queue
    pytest.param(["--app", "tasks_app", "--queues", " , "], id="--queues of commas"),
])
def test_meshnode_bad_usage_exits_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    p = run_program(MESHNODE, *args, "--data-dir", str(tmp_path / "data"), "--no-mdns")
    assert p.returncode == EXIT_USAGE, p
    _one_error_line(p.stderr, "meshnode")


SEMICOLON_PEERS = "tcp://127.0.0.1:17701;tcp://127.0.0.1:17702"


@pytest.mark.parametrize("program, args, env", [
    pytest.param(MESHNODE, ["--app", "tasks_app", "--no-mdns", "--peers", SEMICOLON_PEERS], {},
                 id="meshnode --peers"),
    pytest.param(MESHNODE, ["--app", "tasks_app", "--no-mdns"], {"MESH_PEERS": SEMICOLON_PEERS},
                 id="meshnode MESH_PEERS"),
    pytest.param(MESHCTL, ["--peers", SEMICOLON_PEERS, "ping"], {}, id="meshctl --peers"),
    pytest.param(MESHCTL, ["ping"], {"MESH_PEERS": SEMICOLON_PEERS}, id="meshctl MESH_PEERS"),
])
def test_peers_not_separated_by_commas_exit_2_naming_the_comma(
        program: str, args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    if program == MESHNODE:
        args = [*args, "--bind", _dead_endpoint(), "--data-dir", str(tmp_path / "data")]
    p = run_program(program, *args, env=clean_env(**env), timeout=30)
    assert p.returncode == EXIT_USAGE, p
    line = _one_error_line(p.stderr, "meshnode" if program == MESHNODE else "meshctl")
    assert "';'" in line and "separated by commas" in line, line


@pytest.mark.parametrize("spec, words", [
    pytest.param("mesh_it_no_such_module", "cannot import", id="module missing"),
    pytest.param("tasks_app:no_such_attr", "no_such_attr", id="attribute missing"),
    pytest.param("tasks_app:SOFT_LIMIT_MARKER", "not a mesh.Mesh", id="not an app"),
])
def test_meshnode_app_that_does_not_load_exits_2_with_one_line(
        spec: str, words: str, tmp_path: Path) -> None:
    p = run_program(MESHNODE, "--app", spec, "--bind", _dead_endpoint(), "--no-mdns",
                    "--data-dir", str(tmp_path / "data"))
    assert p.returncode == EXIT_USAGE, p
    assert words in _one_error_line(p.stderr, "meshnode")


def test_meshnode_app_that_raises_at_import_names_the_line(tmp_path: Path) -> None:
    """A bug in the app's module (a setting read, a missing dependency) said only
    'cannot import 'app': KeyError: ...': where, in which of its files, is the question."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "raising_app.py").write_text("from raising_helper import VALUE\n")
    (code / "raising_helper.py").write_text("import os\n\nVALUE = os.environ['MESH_IT_NOT_SET']\n")
    (code / "missing_dep_app.py").write_text("from mesh import Mesh\nimport mesh_it_no_such_dep\n")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(code), clean_env()["PYTHONPATH"]]))
    for app, words, at in (("raising_app", "KeyError: 'MESH_IT_NOT_SET'", "raising_helper.py line 3"),
                           ("missing_dep_app", "No module named 'mesh_it_no_such_dep'",
                            "missing_dep_app.py line 2")):
        p = run_program(MESHNODE, "--app", app, "--bind", _dead_endpoint(), "--no-mdns",
                        "--data-dir", str(tmp_path / "data"), env=env)
        assert p.returncode == EXIT_USAGE, p
        line = _one_error_line(p.stderr, "meshnode")
        assert words in line and f"(at {code / at})" in line, line


def test_meshnode_on_a_port_in_use_exits_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = run_program(MESHNODE, "--app", "tasks_app", "--bind", f"tcp://127.0.0.1:{port}",
                        "--no-mdns", "--concurrency", "1", "--data-dir", str(tmp_path / "data"))
    assert p.returncode == EXIT_START, p
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("meshnode: error: ") and str(port) in last, p.stderr


def test_meshnode_with_an_unusable_data_dir_exits_3(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    p = run_program(MESHNODE, "--app", "tasks_app", "--bind", _dead_endpoint(), "--no-mdns",
                    "--concurrency", "1", "--data-dir", str(blocker / "data"))
    assert p.returncode == EXIT_START, p
    assert p.stderr.strip().splitlines()[-1].startswith("meshnode: error: "), p.stderr


def test_meshnode_help_exits_0() -> None:
    p = run_program(MESHNODE, "--help")
    assert p.returncode == EXIT_OK, p
    assert "--concurrency" in p.stdout and "--max-memory-per-child" in p.stdout


# ---- meshctl against a live node ------------------------------------------------------

def test_meshctl_ping(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "ping")
    assert p.returncode == EXIT_OK, p
    assert node.name in p.stdout


def test_meshctl_ping_json(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "--json", "ping")
    assert p.returncode == EXIT_OK, p
    assert json.loads(p.stdout)[node.endpoint]["node"] == node.name


def test_meshctl_status_table(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "status")
    assert p.returncode == EXIT_OK, p
    header, *rows = p.stdout.strip().splitlines()
    assert header.split()[:3] == ["NODE", "ADDRESS", "STATE"]
    mine = [r for r in rows if r.split()[:1] == [node.name]]
    assert len(mine) == 1, p.stdout
    assert node.endpoint in mine[0] and "alive" in mine[0]


def test_meshctl_status_json(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "--json", "status")
    assert p.returncode == EXIT_OK, p
    rows = json.loads(p.stdout)
    assert [(r["node"], r["address"], r["state"]) for r in rows] == [(node.name, node.endpoint, "alive")]
    assert rows[0]["total"] == 2


def test_meshctl_takes_json_after_the_command_too(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "status", "--json")
    assert p.returncode == EXIT_OK, p
    assert [r["node"] for r in json.loads(p.stdout)] == [node.name]
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.add", "--args",
                    "[2, 3]", "--wait", "--json")
    assert p.returncode == EXIT_OK and json.loads(p.stdout)["result"] == 5, p


def test_meshctl_status_with_one_node_down_still_exits_0(node: Any) -> None:
    dead = _dead_endpoint()
    p = run_program(MESHCTL, "--peers", f"{node.endpoint},{dead}", "--timeout", "1", "--json", "status")
    assert p.returncode == EXIT_OK, p
    states = {r["address"]: r["state"] for r in json.loads(p.stdout)}
    assert states == {node.endpoint: "alive", dead: "unreachable"}


def test_meshctl_finds_nodes_through_mesh_peers(node: Any) -> None:
    p = run_program(MESHCTL, "ping", env=clean_env(MESH_PEERS=node.endpoint))
    assert p.returncode == EXIT_OK, p
    assert node.name in p.stdout


def test_meshctl_call_and_wait_prints_the_result(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.add",
                    "--args", "[2, 3]", "--wait")
    assert p.returncode == EXIT_OK, p
    assert json.loads(p.stdout) == 5


def test_meshctl_call_with_kwargs_and_json_output(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "--json", "call", "tasks_app.add",
                    "--args", "[2]", "--kwargs", '{"y": 40}', "--wait")
    assert p.returncode == EXIT_OK, p
    out = json.loads(p.stdout)
    assert out["result"] == 42 and out["state"] == "SUCCESS"


def test_meshctl_call_without_wait_prints_the_task_id(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.add", "--args", "[1, 1]")
    assert p.returncode == EXIT_OK, p
    uuid.UUID(p.stdout.strip())


def test_meshctl_call_of_a_failing_task_exits_1(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.fail",
                    "--args", '["card declined", 402]', "--wait")
    assert p.returncode == EXIT_FAILURE, p
    assert "CustomError" in p.stderr and "card declined" in p.stderr
    assert "Traceback" in p.stderr          # the remote traceback is shown


def test_meshctl_call_of_an_unknown_task_exits_1(node: Any) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.nope", "--wait")
    assert p.returncode == EXIT_FAILURE, p
    assert "tasks_app.nope" in p.stderr


def test_meshctl_call_of_an_unknown_task_without_wait_exits_1(node: Any) -> None:
    """No node took it and none ever will: a script that calls without --wait must not
    be told it went well (it exited 0, with only the client's warning on stderr)."""
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.nope")
    assert p.returncode == EXIT_FAILURE, p
    uuid.UUID(p.stdout.strip())              # the id is still printed
    assert "NotRegistered" in p.stderr and "tasks_app.nope" in p.stderr, p.stderr


@pytest.mark.parametrize("flag, value", [
    pytest.param("--args", "[1, 2", id="args not JSON"),
    pytest.param("--args", '{"x": 1}', id="args not an array"),
    pytest.param("--kwargs", "[1]", id="kwargs not an object"),
    # refused by send_task before it went (tracebacks before)
    pytest.param("--queue", "", id="queue empty"),
    pytest.param("--queue", "a,b", id="queue with a comma"),
    pytest.param("--args", "[100000000000000000000000, 1]", id="int past msgpack"),
    pytest.param("", "", id="task name empty"),
])
def test_meshctl_call_with_bad_json_exits_2(node: Any, flag: str, value: str) -> None:
    call = ["call", "tasks_app.add", flag, value] if flag else ["call", ""]
    p = run_program(MESHCTL, "--peers", node.endpoint, *call, "--wait")
    assert p.returncode == EXIT_USAGE, p
    _one_error_line(p.stderr, "meshctl")


# ---- meshctl without a live node ------------------------------------------------------

@pytest.mark.parametrize("command", ["ping", "status"])
def test_meshctl_with_no_live_node_exits_1(command: str) -> None:
    p = run_program(MESHCTL, "--peers", _dead_endpoint(), "--timeout", "0.5", command)
    assert p.returncode == EXIT_FAILURE, p


@pytest.mark.parametrize("command", ["ping", "status"])
def test_meshctl_with_no_peers_and_no_node_on_mdns_exits_1(command: str) -> None:
    # no --peers, no MESH_PEERS: meshctl browses mDNS (on loopback here) and finds none
    # of a mesh no node serves (without --mesh it would take any mesh's nodes, and other
    # tests' nodes advertise on loopback at the same time: CI saw one found)
    nobody = f"cli-nobody-{uuid.uuid4().hex[:8]}"
    p = run_program(MESHCTL, "--timeout", "0.5", "--mesh", nobody, command)
    assert p.returncode == EXIT_FAILURE, p
    line = _one_error_line(p.stderr, "meshctl")
    assert "MESH_PEERS" in line and nobody in line, line


@pytest.mark.parametrize("args", [
    pytest.param(["--no-such-flag", "ping"], id="unknown flag"),
    pytest.param(["--peers", "localhost:7700", "ping"], id="peer without tcp://"),
    pytest.param(["--peers", "tcp://127.0.0.1:1", "frobnicate"], id="unknown command"),
    # (nan passed click's ranges: -t nan and -t inf ended in a traceback as meshctl
    # waited for answers; call --countdown nan sent the task, which ran at once)
    pytest.param(["--peers", "tcp://127.0.0.1:1", "-t", "nan", "status"], id="timeout nan"),
    pytest.param(["--peers", "tcp://127.0.0.1:1", "-t", "inf", "ping"], id="timeout inf"),
    pytest.param(["--peers", "tcp://127.0.0.1:1", "call", "t", "--countdown", "nan"],
                 id="countdown nan"),
])
def test_meshctl_bad_usage_exits_2(args: list[str]) -> None:
    p = run_program(MESHCTL, *args)
    assert p.returncode == EXIT_USAGE, p
    _one_error_line(p.stderr, "meshctl")


def test_meshctl_status_shows_no_stale_load_for_a_dead_node(start_node: Any, make_client: Any,
                                                            tmp_path: Path) -> None:
    # found by a new user: a killed node's row said "2/2 24" (its last gossiped load)
    # after the survivor had taken its tasks over: 24 tasks that read as stuck
    a = start_node(concurrency=1)
    b = start_node(concurrency=1, peers=a.endpoint)
    wait_until(mesh_formed([a, b]), what="the two to see each other")
    client = make_client(b)
    occupy(b, client, tmp_path / "gate")
    wait_until(lambda: b.status()["busy"] == 1, what="b busy")

    def b_row() -> dict[str, Any]:
        p = run_program(MESHCTL, "--peers", a.endpoint, "--timeout", "1", "status")
        line = next(x for x in p.stdout.splitlines() if x.startswith(b.name + " "))
        cells = line.split()
        return {"state": cells[2], "busy": cells[7], "waiting": cells[8]}

    wait_until(lambda: b_row()["busy"] == "1/1", what="b's load gossiped to a")
    b.send_signal(signal.SIGKILL)
    row = wait_until(lambda: (r := b_row())["state"] == "dead" and r, timeout=30, what="b dead")
    assert (row["busy"], row["waiting"]) == ("-", "-"), row
    # a took b's task over and runs it: open its gate, so that a stops at once at
    # teardown (not after the harness's 10 s grace for a node whose task still runs)
    (tmp_path / "gate").touch()
    wait_until(lambda: a.status()["busy"] == 0, what="a to finish b's task")


@pytest.mark.parametrize("module", ["mesh.cli.meshctl", "mesh.cli.meshnode"])
def test_the_programs_run_as_python_modules(module: str) -> None:
    # `python -m mesh.cli.meshctl` failed with a circular ImportError (its subcommands'
    # modules import mesh.cli.meshctl, which was not the copy running as __main__)
    p = run_program(sys.executable, "-m", module, "--help")
    assert p.returncode == 0, p.stderr
    assert f"Usage: {module.rsplit('.', 1)[1]}" in p.stdout, p.stdout


def test_meshnode_names_a_misspelt_mesh_variable(start_node: Any) -> None:
    # MESH_REPLICA=1 (for MESH_REPLICAS) was ignored without a word: the node ran with
    # two copies and the operator believed it ran with one
    node = start_node(concurrency=1, env={"MESH_REPLICA": "1"})
    assert ("environment variable MESH_REPLICA is not one mesh reads: ignored (did you mean "
            "MESH_REPLICAS?)") in node.stderr()


def test_a_bad_mesh_variable_is_named_not_blamed_on_the_app(tmp_path: Path) -> None:
    # the app's Mesh(...) reads MESH_* as it is imported: the error was "Invalid value
    # for --app: cannot import 'tasks_app': ConfigError: ...", as if --app were wrong
    p = run_program(MESHNODE, "--app", "tasks_app", "--bind", _dead_endpoint(), "--no-mdns",
                    "--data-dir", str(tmp_path / "data"),
                    env=clean_env(MESH_CONCURRENCY="abc"))
    assert p.returncode == EXIT_USAGE, p
    line = _one_error_line(p.stderr, "meshnode")
    assert line.startswith("meshnode: error: MESH_CONCURRENCY: bad value 'abc'"), line
    assert "--app" not in line and "while importing the app's module 'tasks_app'" in line
