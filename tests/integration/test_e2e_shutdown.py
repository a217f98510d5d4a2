"""Warm shutdown: SIGTERM/SIGINT drain running work, hand the rest to another node,
exit 0 (tests/integration/test_e2e_handoff.py has submitters that exit first)."""
from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest
import zmq
from harness import wait_until

from mesh.cli.common import EXIT_OK
from mesh.exceptions import WorkerLostError
from mesh.wire.protocol import Moved, Submit, decode, encode

RESULT_TIMEOUT = 60.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_idle_node_exits_0_on_a_signal(start_node: Any, sig: int) -> None:
    node = start_node(concurrency=2)
    node.send_signal(sig)
    assert node.wait(30) == EXIT_OK
    assert "stopped" in node.stderr()


def _meshed(a: Any, b: Any) -> None:
    names = {a.name, b.name}
    wait_until(lambda: all({m["node"] for m in n.request("members").payload
                            if m["state"] == "alive"} == names for n in (a, b)),
               what="the two nodes to form a mesh")


def _resend_to(endpoint: str, task_ids: list[str]) -> list[Any]:
    """Send SUBMITs of these ids to a node, as an owner resending them; its replies."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        for tid in task_ids:
            s.send(encode(Submit(tid, "tasks_app.add", b"\x92\x92\x01\x02\x80")))
        out = []
        while len(out) < len(task_ids) and s.poll(5000):
            out.append(decode(s.recv()))
        return out
    finally:
        s.close()


def test_sigterm_finishes_running_work_and_a_second_node_takes_the_rest(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    a = start_node(concurrency=1)
    b = start_node(concurrency=1, peers=a.endpoint)
    _meshed(a, b)
    c = make_client(a, b)
    t = c.tasks
    gate = tmp_path / "gate"
    # one long task per node (the client alternates between the nodes) ...
    running = [t.wait_for_file.delay(str(gate)) for _ in range(2)]
    try:
        wait_until(lambda: a.status()["busy"] == 1 and b.status()["busy"] == 1,
                   what="a long task to run on each node")
        # ... and work queued behind them on both
        queued = [t.add.delay(i, 100) for i in range(10)]
        wait_until(lambda: a.status()["queued"] + b.status()["queued"] == 10,
                   what="ten tasks to queue on the two nodes")
        on_a = a.status()["queued"]
        assert on_a >= 1
        a.send_signal(signal.SIGTERM)
        # a hands its unstarted tasks to b, node to node
        # (while a is still draining: queued work must not wait out a's shutdown timeout)
        wait_until(lambda: b.status()["queued"] == 10, timeout=15,
                   what="the handed tasks to reach b while a drains")
        assert a.proc.poll() is None, "a must wait for its running task"
        assert a.status()["state"] == "left"
        # b counts them queued before its HANDOFF_ACK reaches a (b copies them to its
        # backup, a, first); until then a still holds them and says so (a fresh-clone CI
        # run asked in that gap: every reply was Release)
        wait_until(lambda: a.status()["handoffs_in_flight"] == 0, timeout=15,
                   what="a to hear that b holds the handed tasks")
        # a, stopping, asked again for the tasks it handed on, says where they went
        # (MOVED), not "given back": given back, an owner sent them again to a node
        # that pointed back at a (a beat run went round that loop, test_e2e_beat)
        replies = _resend_to(a.endpoint, [r.id for r in queued])
        # (a task a is still taking back from its child when asked is given back: one
        # in a fresh-clone run)
        moved = [m for m in replies if isinstance(m, Moved)]
        assert moved and {m.target_node for m in moved} == {b.name}, replies
    finally:
        gate.touch()
    assert [r.get(timeout=RESULT_TIMEOUT) for r in running] == ["opened", "opened"]
    assert {r.node for r in running} == {a.name, b.name}
    assert a.wait(30) == EXIT_OK
    assert [r.get(timeout=RESULT_TIMEOUT) for r in queued] == [i + 100 for i in range(10)]
    assert {r.node for r in queued} == {b.name}
    # node to node: at the stop, or some just before it by shedding (b's queue was
    # shorter: once, 2 shed and 3 at the stop); b may shed one to a after on_a was read,
    # which a hands back (a CI run: 6 handed, 5 counted), so at least on_a; and none
    # sent again by the client
    handed = re.findall(rf"handed (\d+) task\(s\) to {re.escape(b.name)} ", a.stderr())
    assert sum(map(int, handed)) >= on_a, handed
    assert c.app.client.failovers == 0 and c.app.client.resent == 0


def test_a_task_running_past_the_shutdown_timeout_goes_to_another_node(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    # acks_late (the default): a task interrupted by shutdown is not done; the node
    # hands it to another node, where it runs from the start
    a = start_node(concurrency=1, shutdown_timeout=0.5)
    b = start_node(concurrency=1, peers=a.endpoint)
    _meshed(a, b)
    t = make_client(a, b).tasks
    gate = tmp_path / "gate"
    rs = [t.wait_for_file.delay(str(gate)) for _ in range(2)]
    wait_until(lambda: a.status()["busy"] == 1 and b.status()["busy"] == 1,
               what="a long task to run on each node")
    a.send_signal(signal.SIGTERM)
    assert a.wait(30) == EXIT_OK
    wait_until(lambda: b.status()["queued"] == 1, what="the interrupted task to reach b")
    gate.touch()
    assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == ["opened", "opened"]
    assert {r.node for r in rs} == {b.name}
    assert "interrupted" in a.stderr()


def test_an_acks_early_task_running_past_the_shutdown_timeout_is_lost(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1, shutdown_timeout=0.5)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    r = t.wait_for_file_once.delay(str(gate))
    wait_until(lambda: node.status()["busy"] == 1, what="the task to start")
    node.send_signal(signal.SIGTERM)
    with pytest.raises(WorkerLostError) as info:
        r.get(timeout=RESULT_TIMEOUT)
    assert "shut down" in str(info.value)
    assert node.wait(30) == EXIT_OK


def test_a_second_sigterm_cuts_the_drain_short(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1)                 # default shutdown timeout: 30 s
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    r = t.wait_for_file_once.delay(str(gate))
    wait_until(lambda: node.status()["busy"] == 1, what="the task to start")
    node.send_signal(signal.SIGTERM)
    wait_until(lambda: node.status()["state"] == "left", what="the node to begin draining")
    node.send_signal(signal.SIGTERM)
    with pytest.raises(WorkerLostError):
        r.get(timeout=RESULT_TIMEOUT)
    assert node.wait(20) == EXIT_OK
