"""Celery's Task API on real nodes (tasks in compat_app.py): handlers in the child,
update_state seen by the sender and by other processes, track_started, ignore_result,
forget, result_extended fields, retry with new arguments, autoretry, Reject/Ignore,
headers and shadow, and settings made in code reaching meshnode."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import compat_app
import pytest
from harness import ClientHandle, NodeFactory, NodeProc, clean_env, make_client_app, wait_until

from mesh import Mesh, states
from mesh.exceptions import MeshError, Reject, ResultIgnored

APP = "compat_app"


@pytest.fixture(scope="module")
def node(start_module_node: NodeFactory) -> NodeProc:
    return start_module_node(app=APP, concurrency=3)


@pytest.fixture
def client(node: NodeProc) -> Iterator[ClientHandle]:
    c = make_client_app([node.endpoint], compat_app)
    yield c
    c.close()


@pytest.fixture
def other(node: NodeProc) -> Iterator[Mesh]:
    """Another client: it did not submit the tasks, it looks them up."""
    app = Mesh("another-process", peers=[node.endpoint], mdns=False)
    yield app
    app.close()


@pytest.fixture
def gate(tmp_path: Path) -> Callable[[str], str]:
    def make(name: str) -> str:
        return str(tmp_path / f"gate-{name}-{uuid.uuid4().hex[:6]}")
    return make


def open_gate(path: str) -> None:
    Path(path).write_text("open")


def read_log(path: Path) -> list[list[Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def look_up_from_a_new_process(node: NodeProc, task_id: str) -> dict[str, Any]:
    """state, info, name, args, worker of a task, as a fresh Python process sees them."""
    script = (
        "import json, sys\n"
        "from mesh import Mesh\n"
        f"app = Mesh('lookup', peers=[{node.endpoint!r}], mdns=False)\n"
        f"r = app.AsyncResult({task_id!r})\n"
        "out = {'state': r.state, 'info': r.info if r.state not in ('FAILURE',) else repr(r.info),\n"
        "       'name': r.name, 'args': r.args, 'kwargs': r.kwargs, 'worker': r.worker}\n"
        "print(json.dumps(out, default=repr))\n"
        "app.close()\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       env=clean_env(), check=False)
    assert p.returncode == 0, p.stderr
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


# ---- handlers ------------------------------------------------------------------------

def test_handlers_run_in_the_child_in_celerys_order(client: ClientHandle, tmp_path: Path) -> None:
    log = tmp_path / "ok.log"
    r = client.tasks.handled.apply_async(("ok",), {"log": str(log)})
    value = r.get(timeout=60)
    assert value["mode"] == "ok" and value["pid"] != os.getpid()
    assert read_log(log) == [["before_start", r.id, ["ok"], 0], ["on_success", value, r.id],
                             ["after_return", states.SUCCESS]]

    log = tmp_path / "fail.log"
    r = client.tasks.handled.apply_async(("fail",), {"log": str(log)})
    with pytest.raises(ValueError, match="handled failure"):
        r.get(timeout=60)
    events = read_log(log)
    assert [e[0] for e in events] == ["before_start", "on_failure", "after_return"]
    assert events[1][1:4] == ["ValueError", "handled failure", True] and events[1][4] != os.getpid()
    assert events[2] == ["after_return", states.FAILURE]


def test_on_retry_then_the_second_run(client: ClientHandle, tmp_path: Path) -> None:
    log = tmp_path / "retry.log"
    r = client.tasks.handled.apply_async(("retry",), {"log": str(log)})
    assert r.get(timeout=60)["retries"] == 1
    assert [e[:2] for e in read_log(log)] == [
        ["before_start", r.id], ["on_retry", "OSError"], ["after_return", states.RETRY],
        ["before_start", r.id], ["on_success", {"mode": "retry", "retries": 1,
                                                "pid": read_log(log)[4][1]["pid"]}],
        ["after_return", states.SUCCESS]]


def test_a_base_class_call_wraps_the_run_on_the_node(client: ClientHandle) -> None:
    r = client.tasks.wrapped.delay()
    assert r.get(timeout=60) == ["inside", r.id]


# ---- states before the end -----------------------------------------------------------

def test_progress_is_seen_by_the_sender_and_by_other_processes(
        client: ClientHandle, other: Mesh, node: NodeProc, gate: Callable[[str], str]) -> None:
    prefix = gate("progress")
    r = client.tasks.progress.delay(prefix, 2)
    try:
        wait_until(lambda: r.state == "PROGRESS" and r.info == {"done": 0, "of": 2},
                   what="the sender to see PROGRESS 0/2")
        seen = other.AsyncResult(r.id)
        wait_until(lambda: seen.state == "PROGRESS" and seen.info == {"done": 0, "of": 2},
                   what="another client to see PROGRESS 0/2")
        fresh = look_up_from_a_new_process(node, r.id)
        assert (fresh["state"], fresh["info"]) == ("PROGRESS", {"done": 0, "of": 2})
        assert (fresh["name"], fresh["args"]) == ("compat_app.progress", [prefix, 2])
        open_gate(f"{prefix}.0")
        wait_until(lambda: r.info == {"done": 1, "of": 2}, what="the sender to see 1/2")
        wait_until(lambda: other.AsyncResult(r.id).info == {"done": 1, "of": 2},
                   what="another client to see 1/2")
    finally:
        open_gate(f"{prefix}.0")
        open_gate(f"{prefix}.1")
    assert r.get(timeout=60) == "finished"
    assert (r.state, r.info) == (states.SUCCESS, "finished")
    assert other.AsyncResult(r.id).get(timeout=60) == "finished"


def test_a_waiting_watcher_sees_progress_then_the_result(
        client: ClientHandle, other: Mesh, gate: Callable[[str], str]) -> None:
    prefix = gate("watch")
    r = client.tasks.progress.delay(prefix, 1)
    try:
        seen = other.AsyncResult(r.id)
        wait_until(lambda: seen.state == "PROGRESS", what="the watcher to see PROGRESS")
    finally:
        open_gate(f"{prefix}.0")
    assert seen.get(timeout=60) == "finished" and seen.state == states.SUCCESS


def test_track_started_shows_started_with_pid_and_hostname(
        client: ClientHandle, other: Mesh, node: NodeProc, gate: Callable[[str], str]) -> None:
    g = gate("started")
    r = client.tasks.tracked.delay(g)
    try:
        wait_until(lambda: r.state == states.STARTED, what="the sender to see STARTED")
        assert r.info["hostname"] == node.name and r.info["pid"] != os.getpid()
        wait_until(lambda: other.AsyncResult(r.id).state == states.STARTED,
                   what="another client to see STARTED")
    finally:
        open_gate(g)
    assert r.get(timeout=60) == "tracked"


def test_track_started_from_the_app_s_settings_applies_on_the_node(
        client: ClientHandle, gate: Callable[[str], str]) -> None:
    g = gate("annotated")
    r = client.tasks.annotated.delay(g)
    try:
        wait_until(lambda: r.state == states.STARTED, what="STARTED from task_annotations")
    finally:
        open_gate(g)
    assert r.get(timeout=60) == "annotated"


def test_without_track_started_the_sender_sees_received(
        client: ClientHandle, gate: Callable[[str], str]) -> None:
    g = gate("received")
    r = client.tasks.gated.delay(g)
    try:
        wait_until(lambda: r.state == states.RECEIVED, what="RECEIVED")
        assert r.info is None
    finally:
        open_gate(g)
    assert r.get(timeout=60) == "opened"


def test_a_task_looked_up_by_id_in_the_process_that_just_sent_it_is_never_unknown(
        node: NodeProc, gate: Callable[[str], str]) -> None:
    # A web app's POST /jobs sends a task and a GET /jobs/{id} from the same worker looks
    # it up at once (the FastAPI example's test, on a loaded machine: a 404). A brand-new
    # client's first task waits for the I/O thread (and the node's handshake): looked up
    # by id before that, the nodes were asked and, not knowing it yet, said UNKNOWN.
    fresh = make_client_app([node.endpoint], compat_app)
    g = gate("lookup")
    try:
        sent, seen = [], []
        for _ in range(20):
            sent.append(fresh.tasks.gated.delay(g))
            seen.append(fresh.app.AsyncResult(sent[-1].id).state)
        assert states.UNKNOWN not in seen, seen
        open_gate(g)
        assert [fresh.app.AsyncResult(r.id).get(timeout=60) for r in sent] == ["opened"] * 20
    finally:
        open_gate(g)
        fresh.close()


# ---- results kept, ignored, forgotten --------------------------------------------------

def test_ignore_result_keeps_nothing_and_get_says_so(
        client: ClientHandle, other: Mesh) -> None:
    r = client.tasks.quiet.delay(21)
    wait_until(r.ready, what="the ignored task to finish")
    assert r.state == states.SUCCESS and r.result is None
    with pytest.raises(ResultIgnored, match="ignore_result"):
        r.get(timeout=60)
    assert other.AsyncResult(r.id).state == states.UNKNOWN       # no node kept anything
    kept = client.tasks.quiet_failure.delay()
    with pytest.raises(KeyError):
        kept.get(timeout=60)
    assert other.AsyncResult(kept.id).state == states.FAILURE    # store_errors_even_if_ignored
    per_call = client.tasks.add.apply_async((1, 2), ignore_result=True)
    wait_until(per_call.ready, what="a per-call ignore_result task to finish")
    with pytest.raises(ResultIgnored):
        per_call.get(timeout=60)


def test_forget_drops_the_result_everywhere(
        client: ClientHandle, other: Mesh, gate: Callable[[str], str]) -> None:
    r = client.tasks.add.delay(1, 2)
    assert r.get(timeout=60) == 3
    assert other.AsyncResult(r.id).state == states.SUCCESS
    r.forget()
    assert r.state == states.UNKNOWN
    assert other.AsyncResult(r.id).state == states.UNKNOWN
    g = gate("forget")
    running = client.tasks.gated.delay(g)
    try:
        wait_until(lambda: running.state == states.RECEIVED, what="the gated task to be held")
        with pytest.raises(MeshError, match="still running"):
            running.forget()
    finally:
        open_gate(g)
    assert running.get(timeout=60) == "opened"


def test_result_extended_fields_for_the_sender_and_other_processes(
        client: ClientHandle, other: Mesh, node: NodeProc) -> None:
    r = client.tasks.add.apply_async((2,), {"y": 3})
    assert r.get(timeout=60) == 5
    for res in (r, other.AsyncResult(r.id)):
        assert (res.name, res.args, res.kwargs, res.worker) == ("compat_app.add", [2], {"y": 3}, node.name)
        assert res.date_done is not None and res.date_done.tzinfo is not None
        assert res.retries == 0
    fresh = look_up_from_a_new_process(node, r.id)
    assert (fresh["state"], fresh["info"], fresh["name"], fresh["args"], fresh["kwargs"],
            fresh["worker"]) == ("SUCCESS", 5, "compat_app.add", [2], {"y": 3}, node.name)


# ---- retries, Reject, Ignore, headers ---------------------------------------------------

def test_retry_with_new_arguments_runs_with_them(client: ClientHandle) -> None:
    r = client.tasks.halve_until_small.delay(8)
    assert r.get(timeout=60) == {"n": 1, "retries": 3}
    assert r.args == [1]            # the Submit the client keeps follows the retries


def test_autoretry_with_retry_kwargs_and_dont_autoretry_for(client: ClientHandle) -> None:
    r = client.tasks.auto.delay("os")
    with pytest.raises(OSError, match="os at 2"):
        r.get(timeout=60)
    assert r.retries == 2
    r = client.tasks.auto.delay("missing")
    with pytest.raises(FileNotFoundError, match="missing at 0"):
        r.get(timeout=60)


def test_ignore_and_reject(client: ClientHandle, other: Mesh) -> None:
    r = client.tasks.skip.delay()
    wait_until(r.ready, what="the ignored task to end")
    assert r.state == states.IGNORED
    with pytest.raises(ResultIgnored, match="Ignore"):
        r.get(timeout=60)
    assert other.AsyncResult(r.id).state == states.UNKNOWN
    r = client.tasks.refuse.delay("malformed order")
    with pytest.raises(Reject, match="malformed order"):
        r.get(timeout=60)
    assert r.state == states.FAILURE


def test_headers_and_shadow_reach_the_task(client: ClientHandle) -> None:
    r = client.tasks.headers_seen.apply_async(headers={"trace": "t-1"}, shadow="alias")
    assert r.get(timeout=60) == {"shadow": "alias", "trace": "t-1"}


# ---- settings made in code reach meshnode ----------------------------------------------

def test_worker_concurrency_set_in_code_reaches_meshnode_and_a_flag_wins(
        start_node: NodeFactory) -> None:
    from_code = start_node(app=APP, concurrency=None)
    assert from_code.status()["total"] == 3          # app.conf.worker_concurrency = 3
    flagged = start_node(app=APP, concurrency=1)
    assert flagged.status()["total"] == 1


def test_ignored_results_leave_no_row_in_the_journal(
        start_node: NodeFactory, other: Mesh) -> None:
    n = start_node(app=APP, concurrency=1)
    c = make_client_app([n.endpoint], compat_app)
    try:
        quiet = c.tasks.quiet.delay(1)
        wait_until(quiet.ready, what="the ignored task to finish")
        kept = c.tasks.add.delay(1, 1)
        assert kept.get(timeout=60) == 2
    finally:
        c.close()
    assert n.stop() == 0
    db = sqlite3.connect(n.data_dir / "journal.sqlite3")
    try:
        results = {row[0] for row in db.execute("SELECT task_id FROM results")}
        tasks = {row[0] for row in db.execute("SELECT task_id FROM tasks")}
    finally:
        db.close()
    assert kept.id in results and kept.id in tasks
    assert quiet.id not in results and quiet.id not in tasks


def test_meshctl_call_of_an_ignored_result_says_so_and_exits_0(node: NodeProc) -> None:
    from harness import MESHCTL, run_program
    p = run_program(MESHCTL, "--peers", node.endpoint, "call", "compat_app.quiet", "--args", "[3]",
                    "--wait")
    assert p.returncode == 0, p
    assert "ignore_result" in p.stderr
