"""Signals with real nodes: each is sent in the process where Celery sends it, with
Celery's arguments. The node runs ``signals_app``, whose receivers append a JSON line
per call to a file in the test's tmp dir (tests/integration/signals_app.py)."""
from __future__ import annotations

import collections
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import signals_app
import tasks_app
from harness import wait_until

from mesh import signals
from mesh.exceptions import TaskRevokedError, WorkerLostError

RESULT_TIMEOUT = 60.0


def records(directory: Path, name: str | None = None) -> list[dict[str, Any]]:
    path = directory / signals_app.RECORDS
    if not path.exists():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in out if name is None or r["signal"] == name]


def one(directory: Path, name: str, task_id: str) -> dict[str, Any]:
    """The single record of ``name`` for ``task_id`` (waiting for it to be written)."""
    found = wait_until(lambda: [r for r in records(directory, name) if r.get("task_id") == task_id],
                       what=f"{name} for {task_id}")
    assert len(found) == 1, found
    return found[0]


def signal_node(start_node: Any, tmp_path: Path, **flags: Any) -> Any:
    env = {"SIGNALS_TEST_DIR": str(tmp_path), **flags.pop("env", {})}
    return start_node(app="signals_app", env=env, **flags)


@pytest.fixture(scope="module")
def shared(start_module_node: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One node (one child) for the tests that only read records of their own tasks."""
    directory = tmp_path_factory.mktemp("signals")
    return signal_node(start_module_node, directory, concurrency=1), directory


def test_worker_process_init_runs_once_in_every_child_recycled_and_replaced_ones_too(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = signal_node(start_node, tmp_path, concurrency=2, max_tasks_per_child=3)
    t = make_client(node).tasks
    ran = [r.get(timeout=RESULT_TIMEOUT) for r in [t.pid.delay() for _ in range(14)]]
    with pytest.raises(WorkerLostError):                  # a child dies mid-task
        t.exit_child.delay(3).get(timeout=RESULT_TIMEOUT)
    # and one is killed from outside: one that has run its init (a child killed as it is
    # forked, before its worker_process_init, would leave the count short forever)
    def an_initialised_child() -> list[psutil.Process]:
        # (not one retiring: its worker_process_shutdown runs as it goes, and a
        # fresh-clone run picked one that had just been told to retire)
        inited = {r["pid"] for r in records(tmp_path, "worker_process_init")}
        log = node.stderr()
        return [c for c in psutil.Process(node.pid).children() if c.pid in inited
                and f"child pid {c.pid} retires" not in log]
    victim = wait_until(an_initialised_child, what="a child that ran its init")[0]
    victim.kill()
    wait_until(lambda: victim.pid not in [c.pid for c in psutil.Process(node.pid).children()]
               and len(psutil.Process(node.pid).children()) == 2, what="the killed child replaced")
    ran += [r.get(timeout=RESULT_TIMEOUT) for r in [t.pid.delay() for _ in range(4)]]

    started = node.status()["children_started"]
    assert started >= 2 + 14 // 3 + 2                     # recycled and replaced children
    inits = wait_until(lambda: (lambda rs: rs if len(rs) >= started else None)(
        records(tmp_path, "worker_process_init")), what=f"{started} worker_process_init")
    assert len(inits) == started
    counts = collections.Counter(r["pid"] for r in inits)
    assert set(counts.values()) == {1}, counts            # exactly once in each child
    assert {r["ppid"] for r in inits} == {node.pid}       # in the children, not the node
    assert set(ran) <= set(counts)
    # before its first task: a child's init line comes before its first prerun
    lines = records(tmp_path)
    for pid in set(ran):
        mine = [r["signal"] for r in lines if r["pid"] == pid]
        assert mine[0] == "worker_process_init", mine

    # recycled children exit cleanly and say so; the killed ones cannot
    shutdowns = {r["pid"]: r for r in records(tmp_path, "worker_process_shutdown")}
    assert victim.pid not in shutdowns
    recycled = [p for p, n in collections.Counter(ran).items() if n == 3]
    assert recycled
    for pid in recycled:
        wait_until(lambda pid=pid: pid in {r["pid"] for r in records(tmp_path, "worker_process_shutdown")},
                   what=f"worker_process_shutdown of recycled child {pid}")
    # a node stopping cleanly stops its idle children cleanly: each sends it
    alive = {c.pid for c in psutil.Process(node.pid).children()}
    node.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0
    shutdowns = {r["pid"]: r for r in records(tmp_path, "worker_process_shutdown")}
    for pid in alive | set(recycled):
        assert shutdowns[pid]["exitcode"] == 0 and shutdowns[pid]["arg_pid"] == pid
    assert victim.pid not in shutdowns


def test_task_signals_fire_in_the_child_with_celerys_arguments(
        shared: tuple[Any, Path], make_client: Any, tmp_path: Path) -> None:
    node, records_dir = shared
    t = make_client(node).tasks
    child = t.pid.delay().get(timeout=RESULT_TIMEOUT)

    ok = t.add.apply_async((2,), {"y": 3})
    assert ok.get(timeout=RESULT_TIMEOUT) == 5
    pre = one(records_dir, "task_prerun", ok.id)
    assert pre == {"signal": "task_prerun", "pid": child, "sender": "tasks_app.add", "task_id": ok.id,
                   "task": "tasks_app.add", "args": [2], "kwargs": {"y": 3}, "request_id": ok.id}
    assert one(records_dir, "task_success", ok.id)["result"] == 5
    post = one(records_dir, "task_postrun", ok.id)
    assert (post["retval"], post["state"], post["args"], post["kwargs"]) == (5, "SUCCESS", [2], {"y": 3})
    order = [r["signal"] for r in records(records_dir) if r.get("task_id") == ok.id]
    assert order == ["task_prerun", "task_success", "task_postrun"]

    bad = t.fail.delay("boom", 7)
    with pytest.raises(tasks_app.CustomError):
        bad.get(timeout=RESULT_TIMEOUT)
    f = one(records_dir, "task_failure", bad.id)
    assert (f["sender"], f["exception"], f["args"], f["kwargs"]) == ("tasks_app.fail", "CustomError", ["boom", 7], {})
    assert f["traceback_is_tb"] and f["einfo_exception_is_it"]
    assert "CustomError" in f["einfo_text"] and "raise CustomError" in f["einfo_text"]
    post = one(records_dir, "task_postrun", bad.id)
    assert post["state"] == "FAILURE" and "CustomError" in post["retval"]
    assert not [r for r in records(records_dir, "task_success") if r["task_id"] == bad.id]

    # self.retry(): task_retry, then a second run that succeeds
    flaky = t.flaky.delay(str(tmp_path / "flaky.count"), 1)
    assert flaky.get(timeout=RESULT_TIMEOUT) == {"retries": 1}
    r = one(records_dir, "task_retry", flaky.id)
    assert (r["retries"], r["reason"], r["einfo_type"]) == (0, "Retry", "Retry")   # as Celery
    assert "flaky, attempt 1" in r["reason_exc"]
    states = [p["state"] for p in records(records_dir, "task_postrun") if p["task_id"] == flaky.id]
    assert states == ["RETRY", "SUCCESS"]

    # autoretry_for: the same signal, its reason a Retry carrying the exception
    auto = t.auto_flaky.delay(str(tmp_path / "auto.count"), 1)
    assert auto.get(timeout=RESULT_TIMEOUT) == 2
    r = one(records_dir, "task_retry", auto.id)
    assert (r["reason"], r["einfo_type"]) == ("Retry", "Retry") and "auto flaky" in r["reason_exc"]


def test_task_revoked_fires_in_the_child_terminated_with_sigterm(
        shared: tuple[Any, Path], make_client: Any, tmp_path: Path) -> None:
    node, records_dir = shared
    t = make_client(node).tasks
    running = t.wait_for_file.delay(str(tmp_path / "never-opened"))
    pre = one(records_dir, "task_prerun", running.id)
    reply = running.revoke(terminate=True, signal="SIGTERM")
    assert running.id in str(reply)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=RESULT_TIMEOUT)
    rev = one(records_dir, "task_revoked", running.id)
    assert (rev["pid"], rev["sender"], rev["terminated"], rev["signum"], rev["expired"]) == \
        (pre["pid"], "tasks_app.wait_for_file", True, signal.SIGTERM, False)
    assert not [p for p in records(records_dir, "task_postrun") if p["task_id"] == running.id]
    # the child died of it (no clean shutdown), and a new one took over
    assert pre["pid"] not in {r["pid"] for r in records(records_dir, "worker_process_shutdown")}
    assert t.add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2


def test_task_revoked_fires_in_the_node_for_a_task_terminated_with_sigkill(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """SIGKILL (mesh's default signal for terminate) cannot be caught by the child: the
    node sends task_revoked(terminated=True, signum=9), as Celery's main process does."""
    node = signal_node(start_node, tmp_path, concurrency=1)
    t = make_client(node).tasks
    running = t.wait_for_file.delay(str(tmp_path / "never-opened"))
    pre = one(tmp_path, "task_prerun", running.id)
    running.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=RESULT_TIMEOUT)
    rev = one(tmp_path, "task_revoked", running.id)
    assert (rev["pid"], rev["sender"], rev["terminated"], rev["signum"], rev["expired"]) == \
        (node.proc.pid, "tasks_app.wait_for_file", True, signal.SIGKILL, False)
    assert rev["pid"] != pre["pid"]


def test_task_revoked_fires_in_the_node_for_a_queued_task_revoked_or_expired(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """A task revoked or expired before any child ran it: the node sends task_revoked
    (terminated False; expired True for the expired one), as Celery's worker does."""
    node = signal_node(start_node, tmp_path, concurrency=1)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    blocker = t.wait_for_file.delay(str(gate))
    one(tmp_path, "task_prerun", blocker.id)                    # the one child is busy
    queued = t.add.delay(1, 2)
    expires_at = time.time() + 1.0
    expiring = t.add.apply_async((3, 4), expires=1.0)
    wait_until(lambda: node.status()["queued"] == 2, what="two tasks queued behind the gate")
    queued.revoke()
    with pytest.raises(TaskRevokedError):
        queued.get(timeout=RESULT_TIMEOUT)
    rev = one(tmp_path, "task_revoked", queued.id)
    assert (rev["pid"], rev["sender"], rev["terminated"], rev["signum"], rev["expired"]) == \
        (node.proc.pid, "tasks_app.add", False, None, False)
    wait_until(lambda: time.time() > expires_at, what="the second task's expiry to pass")
    gate.touch()                                   # the expired one is dropped, never run
    assert blocker.get(timeout=RESULT_TIMEOUT) == "opened"
    with pytest.raises(TaskRevokedError):
        expiring.get(timeout=RESULT_TIMEOUT)
    rev = one(tmp_path, "task_revoked", expiring.id)
    assert (rev["pid"], rev["terminated"], rev["expired"]) == (node.proc.pid, False, True)
    assert not [r for r in records(tmp_path, "task_prerun") if r["task_id"] in (queued.id, expiring.id)]


def test_a_receiver_that_raises_is_logged_and_the_task_still_succeeds(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = signal_node(start_node, tmp_path, concurrency=1, env={"SIGNALS_TEST_RAISE": "1"})
    t = make_client(node).tasks
    ok = t.add.delay(20, 22)
    assert ok.get(timeout=RESULT_TIMEOUT) == 42
    with pytest.raises(tasks_app.CustomError):            # its own error, not the receiver's
        t.fail.delay("still mine", 1).get(timeout=RESULT_TIMEOUT)
    assert t.flaky.delay(str(tmp_path / "count"), 1).get(timeout=RESULT_TIMEOUT) == {"retries": 1}
    # the other receivers still ran, in the same child that survived a raising init
    assert [r["signal"] for r in records(tmp_path) if r.get("task_id") == ok.id] == \
        ["task_prerun", "task_success", "task_postrun"]
    assert len(records(tmp_path, "worker_process_init")) == 1
    log = wait_until(lambda: (lambda s: s if "receiver of task_postrun raised" in s else None)(
        node.stderr()), what="the receivers' errors in the node's log")
    for name in ("worker_process_init", "task_prerun", "task_success", "task_failure", "task_retry"):
        assert f"signal {name}: receiver" in log and f"receiver of {name} raised on purpose" in log


class PublishLog:
    """Receivers for the publish signals, connected for one test."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def before(self, **kw: Any) -> None:
        self.calls.append(("before", kw))
        if kw["sender"] == "signals_app.headers":
            kw["headers"]["trace"] = "00-abc-01"           # travels to the task
        if kw["sender"] == "tasks_app.add":
            kw["body"][1]["y"] = 41                        # arguments are encoded after this

    def after(self, **kw: Any) -> None:
        self.calls.append(("after", kw))

    @staticmethod
    def explode(**kw: Any) -> None:
        raise RuntimeError("a publish receiver raised on purpose")


def test_publish_signals_fire_in_the_client_with_celerys_arguments(
        shared: tuple[Any, Path], make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    node, _ = shared
    c = make_client(node)
    got = PublishLog()
    signals.before_task_publish.connect(got.explode, weak=False)
    signals.before_task_publish.connect(got.before)
    signals.after_task_publish.connect(got.after)
    try:
        r = c.app.send_task("signals_app.headers", countdown=0.05)
        seen = r.get(timeout=RESULT_TIMEOUT)
        added = c.tasks.add.apply_async((1,), {"y": 1}).get(timeout=RESULT_TIMEOUT)
    finally:
        signals.before_task_publish.disconnect(got.explode)
        signals.before_task_publish.disconnect(got.before)
        signals.after_task_publish.disconnect(got.after)
    # a receiver's header, and none of Celery's own (mesh's queue header: docs/routing.md)
    assert seen == {"trace": "00-abc-01", "queue": "celery"}
    assert added == 42
    assert [k for k, _ in got.calls] == ["before", "after", "before", "after"]
    before, after = got.calls[0][1], got.calls[1][1]
    assert before["sender"] == after["sender"] == "signals_app.headers"
    assert before["body"] is after["body"] and before["body"][:2] == ([], {})
    # Celery's signals guide: `info = headers if 'task' in headers else body; info['id']`
    # in an after_task_publish receiver (mesh sent it no headers: TypeError, logged)
    assert after["headers"] is before["headers"] and after["headers"]["id"] == r.id
    assert before["exchange"] == after["exchange"] == ""
    assert before["routing_key"] == after["routing_key"] == "celery"
    h = before["headers"]
    assert (h["id"], h["task"], h["lang"], h["retries"]) == (r.id, "signals_app.headers", "py", 0)
    assert h["eta"] is not None and h["expires"] is None and h["origin"].startswith(f"{os.getpid()}@")
    assert before["properties"]["correlation_id"] == r.id
    assert before["declare"] == [] and before["retry_policy"] is None
    assert "a publish receiver raised on purpose" in caplog.text   # logged, and the task went
