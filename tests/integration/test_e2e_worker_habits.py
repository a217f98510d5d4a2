"""A Celery project's worker startup, moved over (the trial of session 13): its logging
and startup signals (``from celery.signals import setup_logging``: no such name, so the
project did not import), and the worker flags of its systemd unit or Procfile
(``--logfile``, ``--pidfile``, ``-E``, ``-O fair``, ``--without-gossip``..., ``--hostname``:
"No such option", so the node did not start). Real nodes, loading
tests/integration/worker_habits_app.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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

from mesh.cli.common import EXIT_USAGE

APP = "worker_habits_app"


def records(directory: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    path = directory / "habits.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out.setdefault(rec["signal"], []).append(rec)
    return out


def script(code: str, *argv: str) -> str:
    """Run ``code`` as a user's script; what it printed (it must exit 0)."""
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       timeout=90, check=False, cwd=ROOT, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return p.stdout


def last_json(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


def say(node: NodeProc, text: str) -> None:
    code = (f"import {APP}\n{APP}.app.conf.peers = [{node.endpoint!r}]\n"
            f"assert {APP}.say.delay({text!r}).get(timeout=60) == {text!r}\n")
    script(code)


def test_startup_and_logging_signals_are_sent_in_celerys_order(start_node: NodeFactory,
                                                                tmp_path: Path) -> None:
    node = start_node(app=APP, concurrency=1, env={"HABITS_DIR": str(tmp_path)})
    wait_until(lambda: "celeryd_after_setup" in records(tmp_path), timeout=30,
               what="celeryd_after_setup")
    got = records(tmp_path)
    assert [r["sender"] for r in got["import_modules"]] == ["habits"]
    (root,) = got["after_setup_logger"]
    assert (root["logger"], root["loglevel"], root["logfile"]) == ("root", 20, None)
    assert [r["logger"] for r in got["after_setup_task_logger"]] == ["mesh.task"]
    (init,) = got["celeryd_init"]
    assert (init["sender"], init["instance"], init["concurrency"], init["conf"]) == \
        (node.name, node.name, 1, True)
    (after,) = got["celeryd_after_setup"]
    assert (after["sender"], after["instance"], after["conf"]) == (node.name, node.name, True)
    assert all(r["pid"] == node.pid for rs in got.values() for r in rs)   # in the node itself
    order = [json.loads(ln)["signal"] for ln in (tmp_path / "habits.jsonl").read_text().splitlines()]
    assert order == ["import_modules", "after_setup_logger", "after_setup_task_logger",
                     "celeryd_init", "celeryd_after_setup"]
    # a signal mesh never sends says so, where Celery would have called the receiver
    said = [ln for ln in node.stderr().splitlines() if "signal task_received is never sent" in ln]
    assert len(said) == 1 and "received will not run" in said[0], node.stderr()


def test_a_setup_logging_receiver_configures_logging_itself(start_node: NodeFactory,
                                                            tmp_path: Path) -> None:
    # Celery's rule: with a setup_logging receiver, the worker configures no logging
    node = start_node(app=APP, concurrency=1,
                      env={"HABITS_DIR": str(tmp_path), "HABITS_SETUP_LOGGING": "1"})
    say(node, "hello")
    own = (tmp_path / "own.log").read_text()
    assert f"HABITS INFO mesh.node node {node.name} ready" in own, own
    assert "HABITS WARNING worker_habits_app task says hello" in own, own   # from the child
    assert f"{node.name} mesh.node] node {node.name} ready" not in node.stderr()
    got = records(tmp_path)
    assert [(r["loglevel"], r["logfile"]) for r in got["setup_logging"]] == [(20, None)]
    assert "after_setup_logger" not in got and "after_setup_task_logger" not in got


def test_a_systemd_units_worker_flags(start_node: NodeFactory, tmp_path: Path) -> None:
    # celery -A proj worker --hostname ... --logfile=/var/log/celery/%n%I.log
    #   --pidfile=/run/celery/%n.pid -E -O fair --without-gossip --without-mingle
    #   --without-heartbeat --prefetch-multiplier 1
    node = start_node(app=APP, concurrency=1, name="w1@%h",
                      logfile=str(tmp_path / "%n%I.log"), pidfile=str(tmp_path / "%n.pid"),
                      task_events=True, O="fair", without_gossip=True, without_mingle=True,
                      without_heartbeat=True, prefetch_multiplier=1)
    assert node.name == "w1@%h"
    host = socket.gethostname()
    assert (tmp_path / "w1.pid").read_text() == f"{node.pid}\n"
    say(node, "to the file")
    log = tmp_path / "w1.log"
    text = log.read_text()
    assert f"w1@{host} mesh.node] node w1@{host} ready" in text, text
    assert "worker_habits_app] task says to the file" in text, text     # the child's line
    assert "ready on" not in node.stderr()                              # not on stderr
    (flags,) = [ln for ln in text.splitlines() if "Celery's worker flags not used" in ln]
    for flag in ("-E:", "-O:", "--without-gossip:", "--without-mingle:", "--without-heartbeat:",
                 "--prefetch-multiplier:"):
        assert flag in flags, flags
    assert node.stop() == 0
    assert not (tmp_path / "w1.pid").exists()       # removed at exit, as Celery's


def test_a_logfile_the_apps_own_handlers_keep_it_from_is_said(start_node: NodeFactory,
                                                              tmp_path: Path) -> None:
    """worker_hijack_root_logger=False and handlers of the app's: they decide where lines
    go (as Celery, whose --logfile then adds nothing), and the node says so."""
    logfile = tmp_path / "node.log"
    node = start_node(app=APP, concurrency=1, logfile=str(logfile),
                      env={"HABITS_DIR": str(tmp_path), "HABITS_OWN_HANDLERS": "1"})
    own = (tmp_path / "own.log").read_text()
    assert f"OWN WARNING mesh.node --logfile {logfile} is not used" in own
    assert "worker_hijack_root_logger" in own
    assert f"node {node.name} ready" in (tmp_path / "own.log").read_text()
    assert not logfile.exists()


def test_a_pidfile_of_a_running_process_refuses_the_start(tmp_path: Path) -> None:
    pidfile = tmp_path / "node.pid"
    pidfile.write_text(f"{os.getpid()}\n")          # this process runs
    p = run_program(MESHNODE, "-A", APP, "--no-mdns", "--bind", "tcp://127.0.0.1:9",
                    "--data-dir", str(tmp_path / "data"), "--pidfile", str(pidfile),
                    timeout=20)
    assert p.returncode == EXIT_USAGE, p.stderr
    assert f"pidfile {pidfile} already exists and its process {os.getpid()} runs" in p.stderr
    assert pidfile.read_text() == f"{os.getpid()}\n"


def test_detach_and_hostname() -> None:
    p = run_program(MESHNODE, "-A", APP, "--detach")
    assert p.returncode == EXIT_USAGE, p.stderr
    assert "meshnode does not detach" in p.stderr and "systemd" in p.stderr
    p = run_program(MESHNODE, "-A", APP, "--hostname", "w@%q")   # --hostname is -n
    assert p.returncode == EXIT_USAGE, p.stderr
    assert "node name 'w@%q': unknown pattern %q" in p.stderr, p.stderr


def test_celerys_other_everyday_names(start_node: NodeFactory) -> None:
    # names a Celery project imports or calls that mesh lacked: ImportError at the
    # import line, or TypeError ("unexpected keyword argument 'reply'") at the call
    node = start_node(app=APP, concurrency=1)
    code = f"""
import json
from mesh import maybe_signature, uuid, xmap, xstarmap
from mesh.result import allow_join_result
from mesh.states import PROPAGATE_STATES
from mesh.utils import uuid as utils_uuid
from {APP} import app, say
app.conf.peers = [{node.endpoint!r}]
task_id = uuid()
r = say.apply_async(("x",), task_id=task_id)
with allow_join_result():
    got = [r.id == task_id, r.get(timeout=60)]
got.append(maybe_signature(say.s("m").to_dict()).delay().get(timeout=60))
got.append(xmap(say, ["a", "b"]).delay().get(timeout=60))
got.append(xstarmap(say, [["c"]]).delay().get(timeout=60))
got.append(app.control.rate_limit(say.name, "10/s", reply=True, timeout=5))
got.append(app.control.rate_limit(say.name, None, reply=False))
got.append(app.control.revoke(utils_uuid(), terminate=True, reply=False))
got.append(sorted(PROPAGATE_STATES))
print(json.dumps(got))
"""
    got = last_json(script(code))
    assert got == [True, "x", "m", ["a", "b"], ["c"],
                   {node.name: {"task": f"{APP}.say", "rate_per_s": 10.0}}, None, None,
                   ["FAILURE", "REVOKED"]]


def test_celery_call_options_on_meshctl_call(start_node: NodeFactory) -> None:
    # celery -A proj call proj.tasks.add -a '[2, 2]' --countdown 30 --queue q: "No such
    # option '-a'", and no --countdown, --eta, --expires or --queue
    node = start_node(app=APP, concurrency=1)
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", f"{APP}.say", "-a", '["now"]',
                    "-k", "{}", "-Q", "celery", "--wait")
    assert (p.returncode, p.stdout.strip()) == (0, '"now"'), p.stderr
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", f"{APP}.say", "-a", '["later"]',
                    "--countdown", "600", "--expires", "900")
    assert p.returncode == 0, p.stderr
    task_id = p.stdout.strip()
    scheduled = node.control.broadcast([node.endpoint], "scheduled")[node.endpoint]
    assert [t["id"] for t in scheduled.payload] == [task_id], scheduled
    assert 590 < scheduled.payload[0]["eta"] - time.time() <= 600
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", f"{APP}.say", "-a", '["x"]',
                    "--eta", "2020-01-01T00:00:00", "--wait")   # in the past: runs now
    assert (p.returncode, p.stdout.strip()) == (0, '"x"'), p.stderr


def test_get_on_message_reports_progress(start_node: NodeFactory) -> None:
    # Celery's progress recipe: r.get(on_message=print_progress, propagate=False) was a
    # TypeError ("unexpected keyword argument 'on_message'"). Seen by the sender (states
    # pushed to it) and by a process that only has the id (looked up at each interval);
    # the two watch at the same time, their tasks each on a child of the node's two
    node = start_node(app=APP, concurrency=2)
    watch = f"""
import json, sys
from mesh.result import AsyncResult
from {APP} import app, steps
app.conf.peers = [{node.endpoint!r}]
seen, ticks = [], []
r = steps.delay(20, 0.3) if len(sys.argv) < 2 else AsyncResult(sys.argv[1])
value = r.get(timeout=60, interval=0.1, propagate=False, on_interval=lambda: ticks.append(1),
              on_message=lambda m: seen.append([m["status"], m["result"], m["task_id"] == r.id]),
              callback=lambda task_id, v: seen.append(["callback", v, task_id == r.id]))
print(json.dumps([value, seen, len(ticks) > 0]))
"""

    with ThreadPoolExecutor(2) as pool:
        by_sender = pool.submit(script, watch)
        by_id = pool.submit(lambda: script(watch, submit_and_exit(node)))
        outs = [by_sender.result(), by_id.result()]
    for value, seen, ticked in map(last_json, outs):
        assert value == 20 and ticked, seen
        assert seen[-2:] == [["SUCCESS", 20, True], ["callback", 20, True]], seen
        progress = [s[1]["current"] for s in seen if s[0] == "PROGRESS"]
        assert progress and progress == sorted(set(progress)), seen
        assert all(s[2] for s in seen), seen


def test_resultset_and_group_get_take_celerys_callbacks(start_node: NodeFactory) -> None:
    # ResultSet.get(on_message=..., on_interval=...) took them and ignored them without
    # a word (a **kwargs); GroupResult.get(callback=...) was a TypeError. Now each
    # member's states reach on_message, and callback gets each (id, value), as Celery
    node = start_node(app=APP, concurrency=2)
    code = f"""
import json
from mesh import group
from mesh.result import ResultSet
from {APP} import app, steps
app.conf.peers = [{node.endpoint!r}]
seen, ticks, called = [], [], []
rs = ResultSet([steps.delay(4, 0.2), steps.delay(3, 0.2)])
values = rs.get(timeout=60, interval=0.1, on_interval=lambda: ticks.append(1),
                on_message=lambda m: seen.append([m["task_id"], m["status"]]))
g = group(steps.s(2, 0.1), steps.s(1, 0.1)).apply_async()
gvalues = g.get(timeout=60, callback=lambda task_id, v: called.append([task_id, v]))
ids = [r.id for r in rs.results]
try:
    rs.get(timeout=5, on_mesage=print)
    typo = "ignored"
except TypeError as e:
    typo = "TypeError"
print(json.dumps([values, ids, seen, len(ticks) > 0, gvalues, called,
                  [r.id for r in g.results], typo]))
"""
    values, ids, seen, ticked, gvalues, called, gids, typo = last_json(script(code))
    assert values == [4, 3] and ticked, seen
    # waited for in order, as Celery's join: the first's progress, then each one's end
    # (the second may be done by the time the first is)
    assert "PROGRESS" in [st for i, st in seen if i == ids[0]], seen
    assert [st for i, st in seen if st == "SUCCESS"] == ["SUCCESS", "SUCCESS"], seen
    assert [i for i, st in seen if st == "SUCCESS"] == ids, seen
    assert gvalues == [] and called == [[gids[0], 2], [gids[1], 1]], called
    assert typo == "TypeError"


def test_a_get_timing_out_on_a_rate_limited_task_says_so(start_node: NodeFactory) -> None:
    # "did not finish within 2 s (state RECEIVED)" left the user to guess why
    node = start_node(app=APP, concurrency=2)
    code = f"""
import json
from mesh.exceptions import TimeoutError
from {APP} import app, slowly
app.conf.peers = [{node.endpoint!r}]
first, second = slowly.delay(1), slowly.delay(2)
value = first.get(timeout=30)
try:
    second.get(timeout=2)
    why = "finished"
except TimeoutError as e:
    why = str(e)
print(json.dumps([value, why]))
"""
    value, why = last_json(script(code))
    assert value == 1
    assert "state RECEIVED" in why and "has rate_limit '1/m'" in why, why


def submit_and_exit(node: NodeProc) -> str:
    code = (f"from {APP} import app, steps\napp.conf.peers = [{node.endpoint!r}]\n"
            "print(steps.delay(20, 0.3).id)\n")
    return script(code).strip().splitlines()[-1]


def test_inspect_query_task(start_node: NodeFactory) -> None:
    # app.control.inspect().query_task(task_id): AttributeError
    node = start_node(app=APP, concurrency=1)
    code = f"""
import json, time
from mesh.exceptions import TimeoutError
from {APP} import app, say, steps
app.conf.peers = [{node.endpoint!r}]
running = steps.delay(30, 0.2)
later = say.apply_async(("later",), countdown=600)
for _ in range(200):
    if app.control.inspect().active()[{node.name!r}]:
        break
    time.sleep(0.05)
answer = app.control.inspect().query_task(running.id, [later.id, "no-such-id"])
running.revoke(terminate=True)
later.revoke()
print(json.dumps([running.id, later.id, answer]))
"""
    running, later, answer = last_json(script(code))
    assert set(answer) == {node.name}, answer
    got = answer[node.name]
    assert sorted(got) == sorted([running, later]), got
    assert got[running][0] == "active" and got[running][1]["name"] == f"{APP}.steps"
    assert got[later][0] == "reserved" and got[later][1]["type"] == f"{APP}.say"


def test_a_hard_time_limit_is_logged_as_an_error(start_node: NodeFactory) -> None:
    # Celery's worker logs "Hard time limit (1s) exceeded for NAME[ID]" at ERROR: a
    # project alerting on ERROR lines saw only WARNINGs in the node's log for such a task
    node = start_node(app=APP, concurrency=1)
    code = f"""
from mesh.exceptions import TimeLimitExceeded
from {APP} import app, overruns
app.conf.peers = [{node.endpoint!r}]
r = overruns.delay()
try:
    r.get(timeout=60)
except TimeLimitExceeded:
    print(r.id)
"""
    task_id = script(code).strip().splitlines()[-1]
    (line,) = [ln for ln in node.stderr().splitlines() if task_id in ln and " ERROR " in ln]
    assert f"Hard time limit (1s) exceeded for {APP}.overruns[{task_id}]: killing child" in line


def test_a_task_sent_from_worker_ready_runs(start_node: NodeFactory, tmp_path: Path) -> None:
    # @worker_ready.connect def at_start(sender, **kw): sender.app.send_task(...) -- on a
    # node started with --no-mdns (or --peers) and an app without peers, the node
    # process had no node to send to: "no nodes to send tasks to", logged by the signal
    node = start_node(app=APP, concurrency=1,
                      env={"HABITS_DIR": str(tmp_path), "HABITS_AT_START": "1"})
    wait_until(lambda: "at_start" in records(tmp_path), timeout=30, what="at_start")
    (rec,) = records(tmp_path)["at_start"]
    code = (f"from mesh.result import AsyncResult\nfrom {APP} import app\n"
            f"app.conf.peers = [{node.endpoint!r}]\n"
            f"print(AsyncResult({rec['task_id']!r}).get(timeout=60))\n")
    assert script(code).strip() == "at start"
    assert "receiver at_start raised" not in node.stderr()
