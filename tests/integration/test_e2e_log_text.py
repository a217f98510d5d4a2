"""What a peer says never forges a line in a node's log (a real node, raw frames).

Every log line of mesh that prints peer-supplied text (a member's name, a handoff's
reason, an error's message, a task's name...) goes through one filter
(mesh/security/text.py, ``safe_logger``): a record's message with a line feed or a
terminal escape in it is escaped to one line. Here a raw DEALER sends the node
handoffs whose sender's name and reason carry a made-up log line after a line feed
(and an ANSI escape); the node logs them (a refusal, a take) on one line each.
"""
from __future__ import annotations

import re
import uuid
from typing import Any

from harness import wait_until

from mesh.wire import codec
from mesh.wire.protocol import Control, ControlReply, Handoff, Submit, decode, encode

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
