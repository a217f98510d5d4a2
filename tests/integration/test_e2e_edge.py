"""No silent loss at the edge (real processes): a submitter that cannot reach any
node says so, once, with the endpoints it tried; at exit it says how many tasks no
node acknowledged; ``meshctl call`` and ``result`` exit 4 (no node could be reached)
in --timeout, not after --result-timeout; ``AsyncResult.state`` raises
UnreachableError instead of saying UNKNOWN; and ``get()``
without a timeout keeps waiting but says when no node holds the task. A submitter
that reaches a node exits quietly, and its fire-and-forget task runs."""
from __future__ import annotations

import json
from typing import Any

from harness import MESHCTL, free_port, run_program, run_python

from mesh.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE

SUBMIT_AND_EXIT = """
import logging, sys, time
logging.basicConfig(level=logging.WARNING, format="LOG %(name)s %(message)s")
import tasks_app
import mesh.client.members
if len(sys.argv) > 4:                # s without a frame before it says so (5 by default)
    mesh.client.members.UNREACHABLE_AFTER = float(sys.argv[4])
from mesh import Mesh
app = Mesh("edge", peers=[sys.argv[1]], mdns=False)
add = app.task(name="tasks_app.add")(tasks_app.add.fun)
ids = [add.delay(i, i).id for i in range(int(sys.argv[2]))]
print(" ".join(ids))
time.sleep(float(sys.argv[3]))       # long enough for the client to notice (or not)
"""

GET_FOREVER = """
import logging, sys, threading
logging.basicConfig(level=logging.WARNING, format="LOG %(name)s %(message)s")
import mesh.result
mesh.result.UNHELD_LOG_AFTER = 0.5
import tasks_app
from mesh import Mesh
app = Mesh("edge", peers=[sys.argv[1]], mdns=False)
if sys.argv[2] == "own":
    r = app.task(name="tasks_app.add")(tasks_app.add.fun).delay(1, 1)
else:
    r = app.AsyncResult(sys.argv[2])
threading.Thread(target=r.get, daemon=True).start()    # no timeout: waits for ever
threading.Event().wait(float(sys.argv[3]))
print("still waiting", flush=True)
import os; os._exit(0)      # no exit report: only what get() said is checked here
"""


def _dead() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def test_a_submitter_that_reaches_no_node_says_so_and_counts_at_exit() -> None:
    dead = _dead()
    # said after 1 s without a frame, not 5: the I/O thread checks every second and runs
    # on through the 5 s exit wait as well, so the sleep (2 s) and that wait leave it
    # seven chances to say it once more, as before (7 s of sleep, and the exit wait)
    p = run_python(SUBMIT_AND_EXIT, dead, "3", "2", "1")
    lines = p.stderr.splitlines()
    unreachable = [ln for ln in lines if "cannot reach any mesh node" in ln]
    assert len(unreachable) == 1, p.stderr          # once, not every second
    assert dead in unreachable[0]
    report = [ln for ln in lines if "not acknowledged by any node" in ln]
    assert len(report) == 1 and "3 task(s)" in report[0] and dead in report[0], p.stderr


def test_a_submitter_that_reaches_a_node_exits_quietly_and_its_task_runs(
        start_node: Any, make_client: Any) -> None:
    node = start_node()
    p = run_python(SUBMIT_AND_EXIT, node.endpoint, "3", "0")
    assert "acknowledged" not in p.stderr and "cannot reach" not in p.stderr, p.stderr
    c = make_client(node)
    ids = p.stdout.split()
    assert [c.app.AsyncResult(t).get(timeout=30) for t in ids] == [0, 2, 4]


def _says_unreachable(p: Any, dead: str) -> None:
    assert p.returncode == EXIT_UNREACHABLE, p
    assert p.stdout == "", p                     # no UNKNOWN, no {"state": ...}, no task id
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshctl: error: no mesh node could be "
                                                   "reached") and dead in lines[0], p.stderr


def test_meshctl_call_and_result_exit_4_when_no_node_can_be_reached(start_node: Any) -> None:
    dead = _dead()
    # --timeout 0.5: how long meshctl waits for a ping's answer (2 s by default); nothing
    # listens on ``dead``, so no wait can turn into an answer, only make the test longer
    quick = ("--peers", dead, "--timeout", "0.5")
    for wait in ([], ["--wait"]):     # --wait: at once, not after --result-timeout (60 s)
        p = run_program(MESHCTL, *quick, "call", "tasks_app.add", "--args", "[1, 2]",
                        *wait, timeout=40)
        _says_unreachable(p, dead)
    tid = "01a22f7a-63ef-eaf0-2fab-7cf25ef72963"
    _says_unreachable(run_program(MESHCTL, *quick, "result", tid), dead)
    _says_unreachable(run_program(MESHCTL, *quick, "--json", "result", tid), dead)
    node = start_node()
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "tasks_app.add", "--args", "[1, 2]")
    assert p.returncode == EXIT_OK, p
    assert p.stderr == "", p.stderr
    p = run_program(MESHCTL, "--peers", node.endpoint, "--json", "result", tid)
    assert p.returncode == EXIT_FAILURE and json.loads(p.stdout)["state"] == "UNKNOWN", p


def test_state_raises_when_no_node_can_be_reached(start_node: Any) -> None:
    from mesh import Mesh, states
    from mesh.exceptions import UnreachableError
    dead = _dead()
    tid = "01a22f7a-63ef-eaf0-2fab-7cf25ef72963"
    with Mesh("edge-state", peers=[dead], mdns=False) as app:
        try:
            state = app.AsyncResult(tid).state
        except UnreachableError as e:
            assert dead in str(e) and "no mesh node could be reached" in str(e)
        else:
            raise AssertionError(f"state was {state} with no node reachable")
    node = start_node()
    with Mesh("edge-state", peers=[node.endpoint], mdns=False) as app:
        assert app.AsyncResult(tid).state == states.UNKNOWN     # asked, and none knows it


def test_get_without_timeout_says_when_no_node_acknowledged_the_task() -> None:
    dead = _dead()
    p = run_python(GET_FOREVER, dead, "own", "3")
    assert "still waiting" in p.stdout
    said = [ln for ln in p.stderr.splitlines() if "no node has acknowledged it" in ln]
    assert said and dead in said[0], p.stderr


def test_get_without_timeout_says_when_no_node_holds_a_task(start_node: Any) -> None:
    node = start_node()
    p = run_python(GET_FOREVER, node.endpoint, "no-such-task-id", "4")
    said = [ln for ln in p.stderr.splitlines() if "no node holds it" in ln]
    assert said and node.endpoint in said[0], p.stderr


def test_get_with_a_timeout_says_why_nothing_finished_the_task() -> None:
    from mesh import Mesh
    from mesh.exceptions import TimeoutError as MeshTimeout
    dead = _dead()
    with Mesh("edge-timeout", peers=[dead], mdns=False) as app:
        r = app.send_task("tasks_app.add", (1, 2))
        try:
            r.get(timeout=0.5)
        except MeshTimeout as e:
            text = str(e)
        else:
            raise AssertionError("get() returned for a task no node could have run")
        app.client.close(linger=0)
    assert "state PENDING" in text and f"no node has acknowledged it (nodes tried: {dead})" in text
