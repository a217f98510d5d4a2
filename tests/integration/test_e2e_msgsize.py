"""A client whose max_message_size is below its node's, and a result bigger than it:
the get() ends with ResultTooLarge naming the sizes (not a timeout), the client's link
to that node keeps serving, and the result stays stored on the node, where a client
with a larger limit reads it by id (docs/protocol.md, section 9, ``reply-too-large``).

Before: a result over twice the client's limit made libzmq end the client's
connection for good (its I/O thread died on the next send and was taken over, and the
node's tasks waited until their get() timed out); one between once and twice the
limit was dropped as a bad frame, and its get() timed out."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from harness import wait_until

from mesh import states
from mesh.exceptions import ResultTooLarge

MIB = 1024 * 1024
RESULT_TIMEOUT = 60.0
ENDS_WITHIN = 20.0       # s: a get() that ends at all ends long before (a timeout = the bug)


def _gate(tmp_path: Path, name: str = "gate", opened: bool = True) -> Path:
    gate = tmp_path / name
    if opened:
        gate.touch()
    return gate


@pytest.mark.parametrize("size", [3 * MIB, 3 * MIB // 2], ids=["over-twice", "between"])
def test_a_result_over_the_clients_limit_fails_saying_so_and_the_link_keeps_serving(
        start_node: Any, make_client: Any, tmp_path: Path, size: int) -> None:
    node = start_node(concurrency=1)
    c = make_client(node, max_message_size=MIB)
    r = c.tasks.blob.delay(size, str(_gate(tmp_path)))
    with pytest.raises(ResultTooLarge) as e:
        r.get(timeout=ENDS_WITHIN)
    text = str(e.value)
    assert f"the result of task {r.id} is " in text, text
    assert f"bytes, over this client's max_message_size ({MIB:,})" in text, text
    assert f"stored on node {node.name}" in text, text
    assert "raise the client's max_message_size" in text and "smaller result" in text, text
    assert r.state == states.FAILURE
    # the same client, the same node: its link still serves
    assert c.tasks.add.delay(1, 2).get(timeout=RESULT_TIMEOUT) == 3
    assert c.tasks.blob.delay(1000, str(_gate(tmp_path))).get(timeout=RESULT_TIMEOUT) == "x" * 1000
    assert c.app.client.takeovers == 0          # its I/O thread never failed
    assert node.status()["replies_too_large"] >= 1
    # the result is stored on the node: a client at the default limit reads it by id
    big = make_client(node)
    assert big.app.AsyncResult(r.id).get(timeout=RESULT_TIMEOUT) == "x" * size
    # and one at 1 MiB asking by id is told why it cannot, at once
    other = make_client(node, max_message_size=MIB)
    with pytest.raises(ResultTooLarge, match=f"max_message_size \\({MIB:,}\\)"):
        other.app.AsyncResult(r.id).get(timeout=ENDS_WITHIN)


def test_a_watcher_below_the_limit_is_told_when_the_task_it_waits_for_ends_too_big(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """A process looking a task up by id (not its owner) while it runs: the node sends
    it the RESULT when the task ends; too big for it, an ERROR goes instead."""
    node = start_node(concurrency=1)
    owner = make_client(node)
    gate = _gate(tmp_path, opened=False)
    r = owner.tasks.blob.delay(3 * MIB, str(gate))
    small = make_client(node, max_message_size=MIB)
    watched = small.app.AsyncResult(r.id)
    wait_until(lambda: watched.state in (states.RECEIVED, states.STARTED), RESULT_TIMEOUT,
               "the node to hold the task (asked by id while it runs)")
    gate.touch()
    with pytest.raises(ResultTooLarge, match=r.id):
        watched.get(timeout=ENDS_WITHIN)
    assert owner.tasks.blob.delay(3, str(gate)).get(timeout=RESULT_TIMEOUT) == "xxx"
    assert r.get(timeout=RESULT_TIMEOUT) == "x" * 3 * MIB
    assert small.tasks.add.delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4


def test_a_retry_notice_over_the_clients_limit_does_not_fail_the_task(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """A task retries for an exception whose message (or traceback) is over the client's
    max_message_size: the RETRY is not final, the task runs again on the node, so the
    client must not fail it. The node sends the RETRY trimmed (its state, when, the
    next run's arguments; the cause's type and the start of its message) and the final
    result follows. (Before: the node sent ERROR reply-too-large instead, and the client
    failed the task with ResultTooLarge while it ran again.)"""
    node = start_node(concurrency=1)
    limit = 64 * 1024                       # (a cause of 40 KiB: the RETRY carries it in its
    c = make_client(node, max_message_size=limit)   # message, args and traceback: ~120 KiB)
    counter, gate = tmp_path / "runs", _gate(tmp_path, opened=False)
    r = c.tasks.retry_loudly.delay(40 * 1024, str(counter), str(gate))
    wait_until(lambda: counter.exists() and counter.read_text() == "2", RESULT_TIMEOUT,
               "the second run to start")
    wait_until(lambda: r.state not in (states.PENDING, states.RECEIVED), RESULT_TIMEOUT,
               "the client to hear of the retry")
    assert r.state == states.RETRY, r.state     # (the second run waits for the gate)
    info = r.info
    assert isinstance(info, ValueError), info
    assert str(info).startswith("r" * 200 + "... [cut: this RETRY notice was "), str(info)[:300]
    assert f"over this client's max_message_size ({limit:,})" in str(info), str(info)[-300:]
    assert r.traceback is not None and r.traceback.startswith("...")
    gate.touch()
    assert r.get(timeout=RESULT_TIMEOUT) == "done after 1 retry"
    assert c.app.client.duplicates == 0
    assert node.status()["replies_too_large"] == 1


def test_a_members_answer_over_the_clients_limit_is_said_once_and_tasks_still_go(
        start_node: Any, make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The client asks a node for the mesh's members each second; an answer over its
    max_message_size (here a node serving many queues, a client at the least limit) is
    an ERROR reply-too-large each time. The client says so once, with what to do, and
    keeps sending its tasks to the node it knows; the node logs it once too. (Before: a
    WARNING every second, in the client and in the node, for as long as it ran.)"""
    caplog.set_level(logging.DEBUG, "mesh.client")
    queues = ",".join(["celery", *(f"queue-{i:02d}-" + "q" * 40 for i in range(30))])
    node = start_node(concurrency=1, queues=queues)
    c = make_client(node, max_message_size=1024)
    assert c.tasks.add.delay(1, 2).get(timeout=RESULT_TIMEOUT) == 3
    wait_until(lambda: node.status()["replies_too_large"] >= 4, RESULT_TIMEOUT,
               "four members answers too large for the client")
    assert c.tasks.add.delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4
    said = [r for r in caplog.records if r.levelno >= logging.WARNING
            and "members answer" in r.getMessage()]
    assert len(said) == 1, [r.getMessage()[:200] for r in said]
    text = said[0].getMessage()
    assert "over this client's max_message_size (1,024)" in text, text
    assert "Raise the client's max_message_size" in text and "Said once" in text, text
    assert sum(1 for r in caplog.records if "members answer" in r.getMessage()) >= 3
    assert node.stderr().count("instead of a reply of") == 1, node.stderr_tail(20)
    assert c.app.client.takeovers == 0
