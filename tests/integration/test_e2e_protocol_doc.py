"""docs/protocol.md section 5.6/5.7 against a running node: the commands it documents
are the ones a node knows, and each reply has exactly the keys the document lists
(a node that adds a key must document it; the unit test of the page checks the rest)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness import free_port, wait_until

from mesh.client.control import ControlClient
from mesh.wire.protocol import ControlReply

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
REPLIES = DOC[DOC.index("### 5.7 CONTROL_REPLY"):DOC.index("### 5.8 ")]
RESULT_TIMEOUT = 60.0


def documented_keys() -> dict[str, list[set[str]]]:
    """``#### `cmd`[, `cmd2`]`` headings of section 5.7 -> the keys of each of their
    tables (``members`` has two: a member, and its ``meta``)."""
    out: dict[str, list[set[str]]] = {}
    for block in re.split(r"^#### ", REPLIES, flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        tables = [set(re.findall(r"^\| `([a-z_]+)` \|", t, re.M)) for t in body.split("\n\n")]
        for cmd in re.findall(r"`([a-z_]+)`", heading):
            out[cmd] = [t for t in tables if t] or [set()]
    return out


def documented_commands() -> set[str]:
    section = DOC[DOC.index("### 5.6 CONTROL"):DOC.index("### 5.7 ")]
    out: set[str] = set()
    for cell in re.findall(r"^\| (`[^|]+) \|", section, re.M):
        out.update(re.findall(r"`([a-z_.\-]+)`", cell))
    return out


def ask(control: ControlClient, node: Any, command: str, **args: Any) -> Any:
    reply = control.broadcast([node.endpoint], command, args, timeout=10.0)[node.endpoint]
    assert isinstance(reply, ControlReply) and reply.ok, (command, reply)
    return reply.payload


def test_control_replies_have_exactly_the_documented_keys(
        start_node: Any, make_client: Any, control: ControlClient, tmp_path: Path) -> None:
    tables = documented_keys()
    keys = {cmd: t[0] for cmd, t in tables.items()}
    node = start_node(concurrency=1, http=f"127.0.0.1:{free_port()}")   # web.* too
    t = make_client(node).tasks
    done = t.add.delay(1, 2)
    assert done.get(timeout=RESULT_TIMEOUT) == 3
    gate = tmp_path / "gate"
    running = t.wait_for_file.delay(str(gate))
    waiting = t.add.delay(2, 2)
    later = t.add.apply_async((3, 3), countdown=600)
    wait_until(lambda: ask(control, node, "active") and ask(control, node, "reserved")
               and ask(control, node, "scheduled"), what="a running, a queued and a scheduled task")

    unknown = control.broadcast([node.endpoint], "no_such_command", timeout=10.0)[node.endpoint]
    assert isinstance(unknown, ControlReply) and unknown.error
    known = set(re.findall(r"[a-z_.\-]+", unknown.error.split("known:", 1)[1]))
    assert documented_commands() == known

    assert set(ask(control, node, "ping")) == keys["ping"]
    assert set(ask(control, node, "status")) == keys["status"]
    assert set(ask(control, node, "active_queues")) == keys["active_queues"]
    members = ask(control, node, "members")
    assert members and all(set(m) == keys["members"] for m in members)
    assert all(set(m["meta"]) == tables["members"][1] for m in members)

    # result, meta and submit are there only when they apply (the table says when)
    finished = set(ask(control, node, "result", task_id=done.id))
    held = set(ask(control, node, "result", task_id=running.id))
    assert {"task_id", "state", "result"} <= finished <= keys["result"]
    assert {"task_id", "state"} <= held <= keys["result"] - {"result"}
    item = keys["active"]
    assert all(set(e) == item - {"eta"} for e in ask(control, node, "active"))
    assert all(set(e) == item - {"eta", "started", "pid"} for e in ask(control, node, "reserved"))
    assert all(set(e) == item - {"started", "pid"} for e in ask(control, node, "scheduled"))
    assert all(set(e) == keys["registered"] for e in ask(control, node, "registered"))
    assert all(isinstance(i, str) for i in ask(control, node, "revoked"))
    assert set(ask(control, node, "revoke", task_ids=[later.id])) == keys["revoke"]
    assert set(ask(control, node, "rate_limit", task="tasks_app.add", rate="100/s")) == keys["rate_limit"]
    assert set(ask(control, node, "time_limit", task="tasks_app.add", soft=None, hard=None)) == \
        keys["time_limit"]
    assert set(ask(control, node, "pool_grow", n=1)) == keys["pool_grow"]
    assert set(ask(control, node, "pool_shrink", n=1)) == keys["pool_shrink"]
    assert ask(control, node, "duplicate", task_id=done.id) is None
    assert set(ask(control, node, "forget", task_ids=[done.id])) == keys["forget"]
    assert set(ask(control, node, "beat")) == keys["beat"]
    gate.touch()
    assert running.get(timeout=RESULT_TIMEOUT) == "opened"
    assert waiting.get(timeout=RESULT_TIMEOUT) == 4
    assert set(ask(control, node, "shutdown")) == keys["shutdown"]
    assert node.wait(30) == 0
