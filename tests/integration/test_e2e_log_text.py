"""What a peer says never forges a line in a node's log (a real node, raw frames).

Every log line of mesh that prints peer-supplied text (a member's name, a handoff's
reason, an error's message, a task's name...) goes through one filter
(mesh/security/text.py, ``safe_logger``): a record's message with a line feed or a
terminal escape in it is escaped to one line. Here a raw DEALER sends the node
handoffs whose sender's name and reason carry a made-up log line after a line feed
(and an ANSI escape); the node logs them (a refusal, a take) on one line each.

A task's exception text is logged cut (mesh.security.text.clipped): a message of
megabytes makes no line of megabytes; the client still gets it whole.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import tasks_app
from harness import wait_until

from mesh import states
from mesh.wire import codec
from mesh.wire.protocol import Control, ControlReply, Handoff, Submit, decode, encode

MIB = 1024 * 1024
LONGEST = 1000      # characters of a log line at most (mesh.security.text.LOG_KEPT: 300
                    # of a task's exception message, with the line's head)
TIMEOUT = 60.0
FORGED = "\n[2026-01-01 00:00:00,000 ERROR forged mesh.node] the node is compromised\x1b[2J"


def _barrier(sock: Any) -> None:
    """Until the node answered a ping sent last (it reads one peer's frames in order)."""
    req = f"barrier-{uuid.uuid4().hex}"
    sock.send(encode(Control(req, "ping")))
    while True:
        assert sock.poll(10_000), "the node did not answer a ping"
        if any(isinstance(m, ControlReply) and m.req_id == req
               for m in (decode(f) for f in sock.recv_multipart())):
            return


def test_peer_text_with_line_feeds_and_escapes_stays_on_one_log_line(
        start_node: Any, raw_dealer: Any) -> None:
    a = start_node(concurrency=1, profile="test")
    b = start_node(concurrency=1, peers=a.endpoint, profile="test")

    def b_alive_at_a() -> bool:
        reply = a.request("members")
        return isinstance(reply, ControlReply) and any(
            m["node"] == b.name and m["state"] == "alive" for m in reply.payload)
    wait_until(b_alive_at_a, what="a to see b")
    raw = raw_dealer(a.endpoint)
    task = Submit(f"log-{uuid.uuid4().hex}", "tasks_app.add", codec.dump_call((1, 2), None))
    # sent to "an earlier run" at a's address: refused, the sender named in the log
    raw.send(encode(Handoff("evil-1", "evil" + FORGED, "tcp://127.0.0.1:9", [encode(task)],
                            "x", "an-earlier-boot")))
    # claiming to be b (its name and address are public): taken, the reason logged
    raw.send(encode(Handoff("evil-2", b.name, b.endpoint, [encode(task)],
                            "shed" + FORGED, "")))
    _barrier(raw)
    wait_until(lambda: "took 1 task(s) from" in a.stderr(), what="a to take the task")
    log = a.stderr()
    forged = [ln for ln in log.splitlines() if re.match(r"\[2026-01-01 .*forged", ln)]
    assert not forged and "\x1b" not in log, forged
    # (logged all the same, escaped)
    assert "refused a handoff of 1 task(s) from evil\\n[2026-01-01" in log, log[-3000:]
    assert "the node is compromised\\x1b[2J" in log


def test_a_tasks_huge_exception_message_is_logged_cut_and_returned_whole(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """A task that retries for, then one that fails with, an exception of a 2 MiB
    message: the node logs each (the retry line, the failure line and its traceback)
    with the start of the message and its length, no line over ``LONGEST`` characters;
    the client gets the exception and the traceback whole, as before. (Before: a line
    of 2 MiB in the node's log for each.)"""
    node = start_node(concurrency=1)
    c = make_client(node)
    counter, gate = tmp_path / "runs", tmp_path / "gate"
    r = c.tasks.retry_loudly.delay(2 * MIB, str(counter), str(gate))
    wait_until(lambda: r.state == states.RETRY, TIMEOUT, "the client to hear of the retry")
    assert str(r.info) == "r" * 2 * MIB and isinstance(r.info, ValueError)
    assert r.traceback is not None and r.traceback.rstrip().endswith("r" * 2 * MIB)
    gate.touch()
    assert r.get(timeout=TIMEOUT) == "done after 1 retry"
    huge = "f" * 2 * MIB
    failed = c.tasks.fail.delay(huge, 7)
    with pytest.raises(tasks_app.CustomError) as e:
        failed.get(timeout=TIMEOUT)
    assert e.value.args == (huge, 7)
    assert failed.traceback is not None and huge in failed.traceback
    log = node.stderr()
    longest = max(log.splitlines(), key=len)
    assert len(longest) <= LONGEST, longest[:LONGEST]
    said = f"ValueError: {'r' * 300}... ({2 * MIB:,} characters)"
    assert f"Task tasks_app.retry_loudly[{r.id}] retry: Retry in 0.05s: {said}" in log
    # the failure's line, and its traceback's last line (the exception, again)
    cut = r"CustomError: \('f{200,}\.\.\. \(2,097,1\d\d characters\)\n"
    assert re.search(rf"Task tasks_app\.fail\[{failed.id}\] raised unexpected: {cut}", log)
    assert re.search(rf"Traceback \(most recent call last\):\n(.*\n)*?.*{cut}",
                     log[log.index(failed.id):]), log[-3000:]
