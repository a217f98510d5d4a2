"""Celery's add_consumer / cancel_consumer on real nodes: a running node starts and
stops taking a queue, the mesh's clients follow (membership gossip), active_queues
shows it, and a restart goes back to the node's flags, as Celery's worker does."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness import MESHCTL, NodeProc, run_program, wait_until

from mesh.cli.common import EXIT_OK
from mesh.exceptions import MeshError

RESULT_TIMEOUT = 60.0


def _meta_queues(asked: NodeProc, of: NodeProc) -> Any:
    """What ``asked`` knows (by gossip) of the queues ``of`` takes."""
    reply = asked.request("members")
    assert not isinstance(reply, str) and reply.ok, reply
    meta = next(m["meta"] for m in reply.payload if m["node"] == of.name)
    return meta.get("queues"), meta.get("xq")


def _ran_on(client: Any, queue: str, n: int = 4) -> set[str]:
    """The nodes that ran ``n`` tasks sent to ``queue``."""
    rs = [client.tasks.request_info.apply_async(queue=queue) for _ in range(n)]
    return {r.get(timeout=RESULT_TIMEOUT)["hostname"] for r in rs}


def _eventually_ran_on(client: Any, queue: str, want: set[str]) -> None:
    """Clients learn the change at their next membership refresh (about a second):
    wait for that, then every task of the queue must go where ``want`` says."""
    deadline = time.monotonic() + 20
    while True:
        try:
            got = _ran_on(client, queue)
        except MeshError:
            got = set()
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert got == want
    assert _ran_on(client, queue, 8) == want


def _queue_names(control: Any, node: NodeProc) -> list[str]:
    return [q["name"] for q in control.inspect().active_queues()[node.name]]


def test_add_and_cancel_consumer_move_a_queue_between_running_nodes(
        start_node: Any, make_client: Any) -> None:
    a = start_node(concurrency=1, queues="celery")
    b = start_node(concurrency=1, queues="celery", peers=a.endpoint)
    c = make_client(a, b)
    control = c.app.control
    wait_until(lambda: _meta_queues(a, b)[0] == ["celery"], what="a to know b")
    with pytest.raises(MeshError, match="serving queue .extra."):    # no node takes it yet
        c.tasks.request_info.apply_async(queue="extra").get(timeout=RESULT_TIMEOUT)

    # b takes "extra" from now on (a control from another process: meshctl)
    out = run_program(MESHCTL, "--peers", a.endpoint, "--json", "control", "add_consumer",
                      "extra", "-d", b.name)
    assert out.returncode == EXIT_OK, out.stderr
    assert json.loads(out.stdout) == {b.name: {"ok": "add consumer extra"}}
    assert _queue_names(control, b) == ["celery", "extra"]
    assert _queue_names(control, a) == ["celery"]
    wait_until(lambda: _meta_queues(a, b)[0] == ["celery", "extra"], what="gossip of b's queues")
    _eventually_ran_on(c, "extra", {b.name})

    # then a takes it too, and b gives it up: every task of it goes to a
    assert control.add_consumer("extra", destination=[a.name], reply=True) == \
        {a.name: {"ok": "add consumer extra"}}
    assert control.cancel_consumer("extra", destination=[b.name], reply=True) == \
        {b.name: {"ok": "no longer consuming from extra"}}
    assert _queue_names(control, b) == ["celery"]
    _eventually_ran_on(c, "extra", {a.name})
    assert _ran_on(c, "celery", 2) <= {a.name, b.name}          # the rest is as it was

    # a gives it up too: no node takes it, as before add_consumer
    control.cancel_consumer("extra", destination=[a.name])
    wait_until(lambda: _meta_queues(b, a)[0] == ["celery"], what="gossip of a's queues")
    deadline = time.monotonic() + 20
    while True:
        try:
            c.tasks.request_info.apply_async(queue="extra").get(timeout=RESULT_TIMEOUT)
        except MeshError:
            break
        assert time.monotonic() < deadline, "a task of a queue no node takes still ran"
        time.sleep(0.3)


def test_cancel_consumer_on_a_node_of_every_queue_and_a_restart_forgets_it(
        start_node: Any, make_client: Any) -> None:
    a = start_node(concurrency=1)                          # every queue
    b = start_node(concurrency=1, peers=a.endpoint)
    c = make_client(a, b)
    control = c.app.control
    assert control.cancel_consumer("bulk", destination=[a.name]) == \
        {a.name: {"ok": "no longer consuming from bulk"}}
    assert _meta_queues(b, a) is not None
    wait_until(lambda: _meta_queues(b, a) == (None, ["bulk"]), what="gossip of a's exclusion")
    _eventually_ran_on(c, "bulk", {b.name})
    assert _ran_on(c, "celery", 6) <= {a.name, b.name}
    assert "bulk" not in _queue_names(control, a)
    status = a.status()
    assert (status["queues"], status["excluded_queues"]) == (None, ["bulk"])
    # idempotent, as Celery's
    assert control.cancel_consumer("bulk", destination=[a.name]) == \
        {a.name: {"ok": "no longer consuming from bulk"}}
    # a bad queue name is a clear error, not a change
    bad = control.add_consumer("a,b", destination=[a.name])
    assert "comma" in bad[a.name]["error"]
    # a restart goes back to the flags (Celery's add/cancel_consumer do not outlive the worker)
    a.stop()
    a = start_node.restart(a)
    wait_until(lambda: _meta_queues(b, a) == (None, []), what="a's restart to be gossiped")
    assert a.status()["excluded_queues"] == []


# ---- enable_events / disable_events -----------------------------------------------------

def _task_events(recv: Any, client: Any, n: int = 3) -> set[str]:
    """The task ids of ``n`` tasks run now whose task-succeeded the receiver saw (it
    reads for a second after the last one: the stream is quicker than that)."""
    rs = [client.tasks.echo.delay(i) for i in range(n)]
    ids = {r.id for r in rs}
    for r in rs:
        r.get(timeout=RESULT_TIMEOUT)
    seen: set[str] = set()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        ev = recv.next_event(max(0.0, end - time.monotonic()))
        if ev is not None and ev["type"] == "task-succeeded" and ev.get("uuid") in ids:
            seen.add(ev["uuid"])
    return seen


def _is_heartbeat(ev: Any) -> bool:
    return ev is not None and ev["type"] == "node-heartbeat"


def _until_task_events(recv: Any, client: Any) -> None:
    """Until the receiver's subscription reaches the node (it sees a task's events)."""
    wait_until(lambda: bool(_task_events(recv, client, 1)), timeout=30,
               what="the subscriber to see task events")


def test_disable_and_enable_events_stop_and_bring_back_task_events(
        start_node: Any, make_client: Any) -> None:
    from mesh.monitor.receiver import EventReceiver
    node = start_node(concurrency=1)
    c = make_client(node)
    control = c.app.control
    with EventReceiver([node.endpoint]) as recv:
        _until_task_events(recv, c)
        assert control.disable_events() == {node.name: {"ok": "task events disabled"}}
        # meshctl's spelling as its other subcommands (it was "unknown command")
        out = run_program(MESHCTL, "--peers", node.endpoint, "--json", "control",
                          "disable-events", "-d", node.name)
        assert out.returncode == EXIT_OK, out.stderr
        assert json.loads(out.stdout) == {node.name: {"ok": "task events already disabled"}}
        assert _task_events(recv, c) == set()              # tasks run, no task events
        wait_until(lambda: _is_heartbeat(recv.next_event(0.5)), timeout=20,   # node events go on
                   what="a node-heartbeat while task events are off")
        assert control.enable_events() == {node.name: {"ok": "task events enabled"}}
        assert len(_task_events(recv, c)) == 3
        assert control.enable_events() == {node.name: {"ok": "task events already enabled"}}


def test_enable_events_on_a_node_started_without_events(start_node: Any, make_client: Any) -> None:
    from mesh.monitor.receiver import EventReceiver
    node = start_node(concurrency=1, no_events=True)
    c = make_client(node)
    assert node.request("ping").payload["events"] == ""
    out = run_program(MESHCTL, "--peers", node.endpoint, "--json", "control", "enable_events")
    assert out.returncode == EXIT_OK, out.stderr
    assert json.loads(out.stdout) == {node.name: {"ok": "task events enabled"}}
    assert node.request("ping").payload["events"].startswith("tcp://127.0.0.1:")
    with EventReceiver([node.endpoint]) as recv:
        _until_task_events(recv, c)


