"""A Celery project moved to mesh by changing its imports (trial_proj/: celery.py with
``config_from_object(..., namespace="CELERY")``, ``autodiscover_tasks``, shared tasks,
``get_task_logger``, a ``beat_schedule``), on real nodes started as the docs say
(``meshnode -A trial_proj --peers ...``, no mDNS), driven from scripts that submit and
exit and from scripts that wait, as a Celery user's would be. Each test is a place
where a Celery user tripped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import (
    MESHCTL,
    MESHNODE,
    ROOT,
    NodeFactory,
    NodeProc,
    clean_env,
    run_program,
    wait_until,
)

from mesh.cli.common import EXIT_START
from mesh.wire.protocol import ControlReply

APP = "trial_proj"
TASKS = "trial_proj.billing.tasks"


@pytest.fixture(scope="module")
def nodes(start_module_node: NodeFactory) -> list[NodeProc]:
    a = start_module_node(app=APP, concurrency=2)
    b = start_module_node(app=APP, concurrency=2, peers=a.endpoint)
    wait_until(lambda: b.name in alive(a) and a.name in alive(b), timeout=30, what="two nodes")
    return [a, b]


def alive(node: NodeProc) -> set[str]:
    reply = node.request("members")
    assert isinstance(reply, ControlReply) and reply.ok, reply
    return {m["node"] for m in reply.payload if m["state"] == "alive"}


def script(nodes: list[NodeProc], code: str, timeout: float = 90.0,
           env: dict[str, str] | None = None) -> Any:
    """Run ``code`` as a user's script (MESH_PEERS names the first node, as the README
    says) and return what it printed as JSON on its last line."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout, check=False, cwd=ROOT, stdin=subprocess.DEVNULL,
                       env=clean_env(MESH_PEERS=nodes[0].endpoint, **(env or {})))
    assert p.returncode == 0, f"the script exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def both_logs(nodes: list[NodeProc]) -> str:
    return "".join(n.stderr() for n in nodes)


def test_a_task_that_sends_tasks_works_on_nodes_started_with_peers(nodes: list[NodeProc]) -> None:
    # add.delay() inside a task: the child reached no node (it looked by mDNS only) and
    # the task failed "no nodes to send tasks to"
    out = script(nodes, f"""
import json
from {TASKS} import fan_out, send_on
from mesh.result import AsyncResult
sent = send_on.delay(21).get(timeout=60)
print(json.dumps([fan_out.delay(4).get(timeout=60), AsyncResult(sent).get(timeout=60)]))
""")
    assert out == [0 + 2 + 4 + 6, 42]


def test_failures_and_retries_are_in_the_node_log(nodes: list[NodeProc]) -> None:
    # a task that failed left no line at all in the node's log (Celery's worker logs
    # "Task x[id] raised unexpected: ..." with the traceback, and each retry)
    out = script(nodes, f"""
import json
from {TASKS} import boom, charge
b = boom.delay("now")
try:
    b.get(timeout=60)
except ValueError:
    pass
c = charge.delay("o-1")
print(json.dumps([b.id, c.id, c.get(timeout=60)]))
""")
    boom_id, charge_id, charged = out
    assert charged == "o-1"
    wait_until(lambda: boom_id in both_logs(nodes), timeout=10, what="the failure logged")
    logs = both_logs(nodes)
    line = next(ln for ln in logs.splitlines() if boom_id in ln and "ERROR" in ln)
    assert f"Task {TASKS}.boom[{boom_id}] raised unexpected: ValueError: boom now" in line
    after = logs[logs.index(line):]
    assert "Traceback (most recent call last)" in after and 'raise ValueError(f"boom {what}")' in after
    assert f"Task {TASKS}.charge[{charge_id}] retry: Retry in 0.2s: GatewayError: gateway down for o-1" \
        in logs
    assert f"INFO {nodes[0].name} {TASKS}] boom now" in logs or \
        f"INFO {nodes[1].name} {TASKS}] boom now" in logs      # get_task_logger's line


def test_beat_schedule_is_not_called_unused(nodes: list[NodeProc]) -> None:
    # app.conf.beat_schedule was logged as "not used by mesh" (the beat_* family's
    # warning), next to the line saying the node carries its entries
    logs = both_logs(nodes)
    assert "beat: 2 periodic entries" in logs
    assert "beat_schedule" not in logs
    assert "  broker_url: mesh has no broker" in logs      # the settings that are not, are


def test_results_and_signatures_by_id_and_name_without_the_app(nodes: list[NodeProc]) -> None:
    # a web view's AsyncResult(task_id) (celery.result's, no app) said UNKNOWN for every
    # id, and signature("name").delay() raised ConfigError: both use the current app
    ids = script(nodes, f"""
import json
from {TASKS} import add
from mesh import group
g = group(add.s(i, i) for i in range(3)).apply_async()
print(json.dumps([add.delay(20, 22).id, g.id]))
""")
    out = script(nodes, f"""
import json
import {APP}                     # the project's app, as a Django project imports it
from mesh import signature
from mesh.result import AsyncResult, GroupResult
r = AsyncResult({ids[0]!r})
value = r.get(timeout=60, interval=0.1, disable_sync_subtasks=False)   # Celery's keywords
g = GroupResult({ids[1]!r})
print(json.dumps([r.state, value, g.get(timeout=60), sorted(g.revoke()),
                  signature("{TASKS}.add", args=(2, 3)).delay().get(timeout=60)]))
""")
    assert out == ["SUCCESS", 42, [0, 2, 4], sorted(n.name for n in nodes), 5]


def test_inspect_answers_in_celerys_shapes(nodes: list[NodeProc]) -> None:
    # registered() gave dicts (a Celery user's set().update(names) raised TypeError),
    # active() had none of Celery's keys (hostname, time_start, worker_pid)
    out = script(nodes, f"""
import json, time
from {APP}.celery import app
from {TASKS} import sleeper, add
running = sleeper.delay(3)
later = add.apply_async((1, 1), countdown=60)
i = app.control.inspect()
for _ in range(100):
    active = [t for ts in (i.active() or {{}}).values() for t in ts]
    if active:
        break
    time.sleep(0.1)
names = set()
for tasks in i.registered().values():
    names.update(tasks)
sched = [t for ts in i.scheduled().values() for t in ts]
limits = [t for ts in i.registered("rate_limit", "max_retries").values() for t in ts]
later.revoke()
running.get(timeout=60)
print(json.dumps([sorted(names), active, sched, limits]))
""")
    names, active, sched, limits = out
    assert f"{TASKS}.add" in names and f"{TASKS}.fan_out" in names
    assert all(isinstance(n, str) for n in names)
    (task,) = active
    assert task["name"] == task["type"] == f"{TASKS}.sleeper"
    assert task["hostname"] in {n.name for n in nodes} and task["hostname"] == task["node"]
    assert task["worker_pid"] == task["pid"] > 0 and task["time_start"] == task["started"] > 0
    assert [s["request"]["name"] for s in sched] == [f"{TASKS}.add"]
    assert f"{TASKS}.charge [max_retries=1]" in limits


def test_revoke_takes_celerys_arguments(nodes: list[NodeProc]) -> None:
    # r.revoke(terminate=True, wait=True, timeout=...) and control.revoke(id,
    # destination=[...]) raised TypeError
    out = script(nodes, f"""
import json, time
from {APP}.celery import app
from {TASKS} import sleeper
from mesh.exceptions import TaskRevokedError
a, b = sleeper.delay(30), sleeper.delay(30)
for _ in range(100):
    running = {{t["id"]: t["hostname"] for ts in app.control.inspect().active().values() for t in ts}}
    if {{a.id, b.id}} <= set(running):
        break
    time.sleep(0.1)
answered = app.control.revoke(b.id, destination=[running[b.id]], terminate=True, signal="SIGTERM")
a.revoke(terminate=True, wait=True, timeout=5)
out = []
for r in (a, b):
    try:
        r.get(timeout=30)
    except TaskRevokedError:
        out.append(r.state)
print(json.dumps([out, sorted(answered) == [running[b.id]]]))
""")
    assert out == [["REVOKED", "REVOKED"], True]


def test_a_second_node_on_the_same_port_says_what_to_do(nodes: list[NodeProc],
                                                        tmp_path: Path) -> None:
    # Celery's workers on one machine share a broker; a second `meshnode -A proj` on
    # the default port said only "Address already in use"
    port = int(nodes[0].endpoint.rsplit(":", 1)[1])
    p = run_program(MESHNODE, "-A", APP, "--bind", nodes[0].endpoint, "--no-mdns",
                    "--data-dir", str(tmp_path / "second"), "-n", "second")
    assert p.returncode == EXIT_START, p.stderr
    assert f"cannot bind {nodes[0].endpoint}: Address already in use" in p.stderr
    assert "another node (or program) has that port; give each node" in p.stderr
    assert f"--bind tcp://127.0.0.1:{port + 1}" in p.stderr


@pytest.mark.parametrize("zone", ["Etc/GMT+9", "Etc/GMT-9"])
def test_a_naive_eta_and_expires_are_utc(nodes: list[NodeProc], zone: str) -> None:
    # Celery reads a naive eta/expires as UTC (maybe_make_aware); mesh read it as the
    # sending machine's local time, so eta=datetime.utcnow() + 1 s waited 9 hours (UTC-9)
    # and expires=datetime.utcnow() + 60 s had expired 9 hours ago (UTC+9)
    out = script(nodes, f"""
import json
from datetime import datetime, timedelta
from mesh.exceptions import TaskRevokedError
from {TASKS} import add
soon = datetime.utcnow() + timedelta(seconds=1)
r = add.apply_async((1, 2), eta=soon, expires=datetime.utcnow() + timedelta(seconds=60))
try:
    print(json.dumps(r.get(timeout=20)))
except TaskRevokedError as e:
    print(json.dumps(str(e)))
""", env={"TZ": zone})
    assert out == 3


def test_a_priority_out_of_range_is_the_callers_error(nodes: list[NodeProc]) -> None:
    # priority=10 (RabbitMQ's x-max-priority=10, common in Celery projects) raised
    # DecodeError, an error that reads as a bad message from a node
    out = script(nodes, f"""
import json
from mesh.exceptions import ConfigError
from {TASKS} import add
try:
    add.apply_async((1, 1), priority=10)
except ConfigError as e:
    print(json.dumps(str(e)))
""")
    assert out.startswith("priority must be 0..9 (9 runs first), got 10")


def test_meshctl_takes_the_app_as_celery_does(nodes: list[NodeProc], tmp_path: Path) -> None:
    # `celery -A proj inspect active` by habit: meshctl said "No such option '-A'";
    # with -A it asks the nodes the app's client would send to
    (tmp_path / "ctl_proj.py").write_text(
        "from mesh import Mesh\n"
        f"app = Mesh('trial_proj', peers=[{nodes[1].endpoint!r}], mdns=False)\n")
    p = subprocess.run([MESHCTL, "-A", "ctl_proj", "--json", "inspect", "registered"],
                       capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
                       env=clean_env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    answers = json.loads(p.stdout)
    assert set(answers) == {n.name for n in nodes}
    assert f"{TASKS}.fan_out" in {t["name"] for t in answers[nodes[0].name]}


def test_a_periodic_entry_goes_to_its_queue(start_node: NodeFactory, tmp_path: Path) -> None:
    # beat_schedule's "options": {"queue": "reports"} (Celery's way to send a periodic
    # task to a queue) was refused: the node would not start
    log = tmp_path / "runs"
    env = {"TRIAL_BEAT_LOG": str(log)}
    other = start_node(app="trial_beat_app", concurrency=1, queues="celery", env=env)
    reports = start_node(app="trial_beat_app", concurrency=1, queues="reports", env=env,
                         peers=other.endpoint)
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, timeout=30,
               what="three runs")
    assert set(log.read_text().splitlines()) == {f"{reports.name} reports"}
    assert "routing_key='reports' is not used by mesh" in reports.stderr()


def test_a_task_that_sends_tasks_on_a_keyed_mesh(start_node: NodeFactory, tmp_path: Path) -> None:
    # the child's client uses the node's keys when the app names none: a task's own
    # sends get through a keyed node's door
    from mesh.security import keys
    d = str(tmp_path / "k")
    keys.init(d)
    node = start_node(app=APP, keys=d, concurrency=2)
    out = script([node], f"""
import json
from {TASKS} import fan_out
print(json.dumps(fan_out.delay(3).get(timeout=60)))
""", env={"MESH_KEYS": d})
    assert out == 0 + 2 + 4
