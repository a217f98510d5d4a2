"""Priority, eta/countdown and expiry, observed through what the tasks record."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from harness import wait_until

from mesh import states
from mesh.exceptions import TaskRevokedError
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, decode, encode

RESULT_TIMEOUT = 60.0
CLOCK_SLACK = 0.05   # s: timers may fire a hair early relative to the wall clock


def test_higher_priority_runs_first(start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    blocker = t.wait_for_file.delay(str(gate))
    try:
        wait_until(lambda: node.status()["busy"] == 1, what="the blocker to occupy the only child")
        low = [t.seq.apply_async(priority=0) for _ in range(3)]
        mid = [t.seq.apply_async(priority=5) for _ in range(3)]
        high = [t.seq.apply_async(priority=9) for _ in range(3)]
        wait_until(lambda: node.status()["queued"] == 9, what="all nine tasks to queue on the node")
    finally:
        gate.touch()
    assert blocker.get(timeout=RESULT_TIMEOUT) == "opened"
    order = {name: [r.get(timeout=RESULT_TIMEOUT) for r in rs]
             for name, rs in (("low", low), ("mid", mid), ("high", high))}
    assert max(order["high"]) < min(order["mid"]), order
    assert max(order["mid"]) < min(order["low"]), order
    # equal priorities keep their order of arrival
    assert all(v == sorted(v) for v in order.values()), order


def test_the_tasks_of_one_batch_start_highest_priority_first(start_node: Any,
                                                             raw_dealer: Any) -> None:
    """Three SUBMITs in one zmq message reach the node in one loop pass, its only child
    free: the pass's tasks go to the pool together (Ledger.flush dispatches once per
    pass), so the highest priority starts first, not the first to arrive."""
    node = start_node(concurrency=1)
    raw = raw_dealer(node.endpoint)

    def submit(tid: str, name: str, priority: int = 0) -> bytes:
        return encode(Submit(task_id=tid, name=name, payload=codec.dump_call((), None),
                             priority=priority))

    def results(ids: set[str]) -> dict[str, Any]:
        got: dict[str, Any] = {}
        deadline = time.monotonic() + RESULT_TIMEOUT
        while not ids <= got.keys():
            left = deadline - time.monotonic()
            assert left > 0 and raw.poll(int(left * 1000)), f"results missing: have {got}"
            for frame in raw.recv_multipart():
                msg = decode(frame)
                if isinstance(msg, Result):
                    assert msg.state == states.SUCCESS, msg
                    got[msg.task_id] = codec.loads(msg.result)
        return got

    raw.send_multipart([submit("warm", "tasks_app.pid")])
    results({"warm"})                      # the child is up and idle
    raw.send_multipart([submit(f"p{p}", "tasks_app.seq", p) for p in (0, 5, 9)])
    order = results({"p0", "p5", "p9"})
    assert order == {"p9": 1, "p5": 2, "p0": 3}, order


def test_countdown_does_not_start_before_its_eta(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    sent = time.time()
    r = t.stamp.apply_async(countdown=1)
    now = t.stamp.delay()                        # not held up by the scheduled one
    started_now = now.get(timeout=RESULT_TIMEOUT)
    started = r.get(timeout=RESULT_TIMEOUT)
    assert started >= sent + 1 - CLOCK_SLACK
    assert started_now < started


def test_eta_datetime_does_not_start_before_it(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    r = t.stamp.apply_async(eta=eta)
    wait_until(lambda: r.ready() or node.status()["scheduled"] == 1,
               what="the node to hold the task as scheduled")
    assert r.get(timeout=RESULT_TIMEOUT) >= eta.timestamp() - CLOCK_SLACK


@pytest.mark.parametrize("expires", [
    pytest.param(lambda: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10), id="datetime"),
    pytest.param(lambda: time.time() - 10, id="unix-time"),
])
def test_expires_in_the_past_is_revoked(start_node: Any, make_client: Any, expires: Any) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    r = t.add.apply_async((1, 2), expires=expires())
    with pytest.raises(TaskRevokedError, match=rf"^task tasks_app\.add\[{r.id}\] expired"):
        r.get(timeout=RESULT_TIMEOUT)
    assert r.state == states.REVOKED and r.ready() and not r.successful()
    assert node.status()["revoked"] == 1
    assert t.add.delay(1, 2).get(timeout=RESULT_TIMEOUT) == 3


def test_a_task_that_expires_while_queued_is_revoked(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    blocker = t.wait_for_file.delay(str(gate))
    try:
        wait_until(lambda: node.status()["busy"] == 1, what="the blocker to start")
        expiring = t.add.apply_async((1, 2), expires=0.5)
        fresh = t.add.apply_async((3, 4), expires=600)
        wait_until(lambda: node.status()["queued"] == 2, what="both tasks to queue")
        expiry = time.time() + 0.5
        wait_until(lambda: time.time() > expiry + CLOCK_SLACK, what="the first task's expiry to pass")
    finally:
        gate.touch()
    assert blocker.get(timeout=RESULT_TIMEOUT) == "opened"
    with pytest.raises(TaskRevokedError):
        expiring.get(timeout=RESULT_TIMEOUT)
    assert expiring.state == states.REVOKED
    assert fresh.get(timeout=RESULT_TIMEOUT) == 7
