"""meshctl as a user runs it (a subprocess) against a node that answers oddly: a
bare ROUTER answering CONTROLs with a status missing fields and numbers that are
inf or nan (an older node, another implementation, a hostile one). The table
prints ``-`` in those cells, never a traceback; ``--json`` is strict JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from mesh.wire.protocol import Control, ControlReply, decode, encode

STATUS: dict[str, Any] = {"node": "odd", "busy": float("inf"), "queued": float("nan"),
                          "rss_bytes": "lots", "uptime": None}     # no total, no version...
PING: Any = {"ok": "pong", "version": "odd"}
MEMBERS = [{"node": "odd", "endpoint": "", "state": "alive", "incarnation": 0,
            "load": [float("inf"), 2, 0]}]


@pytest.fixture
def odd_node() -> Iterator[str]:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not sock.poll(50):
                continue
            ident, *frames = sock.recv_multipart()
            for frame in frames:
                try:
                    msg = decode(frame)
                except Exception:
                    continue
                if isinstance(msg, Control):
                    members = [{**m, "endpoint": m.get("endpoint") or endpoint}
                               for m in MEMBERS]
                    payload = {"status": STATUS, "members": members,
                               "ping": PING}.get(msg.command, {})
                    sock.send_multipart([ident, encode(ControlReply(msg.req_id, True, "odd",
                                                                    payload))])
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield endpoint
    stop.set()
    thread.join(5)
    sock.close(0)
    ctx.term()


def _meshctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return subprocess.run([sys.executable, "-m", "mesh.cli.meshctl", *args], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL, env=env)


def test_status_of_an_odd_node_prints_a_row(odd_node: str) -> None:
    p = _meshctl("--peers", odd_node, "status")
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 0, p.stdout + p.stderr
    row = next(line for line in p.stdout.splitlines() if line.startswith("odd"))
    assert odd_node in row and "-/-" in row, row
    assert "1 of 1 node(s) answered" in p.stdout


def test_status_json_is_strict_json(odd_node: str) -> None:
    p = _meshctl("--peers", odd_node, "status", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = json.loads(p.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert rows[0]["node"] == "odd" and rows[0]["busy"] is None and rows[0]["queued"] is None


@pytest.mark.parametrize("status,members", [
    pytest.param([1, 2], MEMBERS, id="status a list"),
    pytest.param("text", MEMBERS, id="status a text"),
    # two records of one member: an incarnation and a state that are not comparable
    pytest.param(STATUS, [{"node": "odd", "state": [1], "incarnation": "x"},
                          {"node": "odd", "state": "alive", "incarnation": 1}], id="odd members"),
    # a name that is not text (a list: not a key of a set or a map)
    pytest.param({**STATUS, "node": [1]}, MEMBERS, id="a status naming a list"),
    pytest.param(STATUS, [*MEMBERS, {"node": [1], "state": "alive",
                                     "endpoint": "tcp://127.0.0.1:9"}],
                 id="a member named by a list"),
    # another member's gossiped load, shorter than [busy, total, queued]
    pytest.param(STATUS, [*MEMBERS, {"node": "other", "state": "suspect", "load": [1],
                                     "endpoint": "tcp://127.0.0.1:9"}],
                 id="a short load"),
    pytest.param(STATUS, [{**MEMBERS[0], "state": [1]}], id="a state that is a list"),
])
def test_status_of_a_node_answering_what_is_not_a_status(
        status: Any, members: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    monkeypatch.setattr(sys.modules[__name__], "STATUS", status)
    monkeypatch.setattr(sys.modules[__name__], "MEMBERS", members)
    odd = request.getfixturevalue("odd_node")
    p = _meshctl("--peers", odd, "status")
    assert "Traceback" not in p.stderr, p.stderr
    assert odd in p.stdout, p.stdout


@pytest.mark.parametrize("ping", [[1, 2], "text", None], ids=["a list", "a text", "none"])
def test_ping_of_a_node_answering_what_is_not_a_map(
        ping: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.setattr(sys.modules[__name__], "PING", ping)
    odd = request.getfixturevalue("odd_node")
    p = _meshctl("--peers", odd, "ping")
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stdout.startswith(f"{odd}: pong from odd"), p.stdout


def test_json_of_data_nested_deeper_than_json_can_write() -> None:
    # msgpack decodes a hostile peer's frame nested 1,000 levels deep; json.dumps raises
    # RecursionError on it, and meshctl --json and the dashboard's API write with json_text
    from mesh.security.text import JSON_DEPTH, json_text
    deep: Any = [1]
    for _ in range(2000):
        deep = [deep]
    out = json.loads(json_text({"status": {"odd": deep, "busy": float("inf")}}))
    assert out["status"]["busy"] is None
    inner = out["status"]["odd"]
    for _ in range(JSON_DEPTH - 3):       # the list at depth 2 (a map, a map, it)
        inner = inner[0]
    assert inner == ["..."]
