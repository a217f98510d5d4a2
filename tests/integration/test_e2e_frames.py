"""A node refuses garbage on its front door and keeps serving everyone else."""
from __future__ import annotations

import random
import time
from typing import Any

import msgpack
import pytest
import zmq

from mesh import states
from mesh.wire import codec
from mesh.wire.protocol import Ack, Error, Result, Submit, decode, encode

RESULT_TIMEOUT = 60.0
MIB = 1024 * 1024


def _submit(task_id: str, **fields: Any) -> bytes:
    return encode(Submit(task_id=task_id, name="tasks_app.add",
                         payload=codec.dump_call((1, 2), None), **fields))


Garbage = tuple[str, list[bytes], list[tuple[str, "str | None"]], dict[str, int]]


def _garbage() -> list[Garbage]:
    """(what, frames of one zmq message, expected Errors as (code, ref), task ids the
    node must still run from that message with their results).

    Each frame of a multipart zmq message is one protocol message (a batch), so a bad
    frame in a batch is refused alone and the good frames around it still run."""
    rng = random.Random(20240517)
    valid = _submit("truncated-1")
    return [
        ("random bytes", [rng.randbytes(64)], [("decode", None)], {}),
        ("an empty frame", [b""], [("decode", None)], {}),
        ("truncated msgpack", [valid[: len(valid) // 2]], [("decode", None)], {}),
        ("msgpack that is not an array", [msgpack.packb({"version": 1})], [("decode", None)], {}),
        ("a future protocol version", [msgpack.packb([99, 1, "wrong-version", "tasks_app.add", b""])],
         [("decode", "wrong-version")], {}),
        ("an unknown message type", [msgpack.packb([1, 250, "unknown-type"])],
         [("decode", "unknown-type")], {}),
        ("a field of the wrong type", [msgpack.packb([1, 1, "bad-field", 42, b""])],
         [("decode", "bad-field")], {}),
        ("a Submit that fails validation", [_submit("bad-priority", priority=99)],
         [("decode", "bad-priority")], {}),
        ("a msgpack extension type", [msgpack.packb([1, 1, msgpack.ExtType(7, b"x")])],
         [("decode", None)], {}),
        ("a message only nodes send", [encode(Ack(["x"], "impostor"))], [("bad-request", None)], {}),
        ("a batch with a bad frame between good ones",
         [_submit("batch-1"), b"\xc1garbage", _submit("batch-2")], [("decode", None)],
         {"batch-1": 3, "batch-2": 3}),
        ("a REQ-style envelope", [b"", _submit("envelope-1")], [("decode", None)], {"envelope-1": 3}),
        ("a frame over the 16 MiB limit", [b"\x00" * (17 * MIB)], [("too-large", None)], {}),
    ]


def _collect(sock: zmq.Socket[bytes], errors: int, results: set[str],
             timeout: float = 30.0) -> tuple[list[Error], dict[str, Result]]:
    """Read replies until ``errors`` Errors and a Result for each of ``results`` came."""
    got_errors: list[Error] = []
    got_results: dict[str, Result] = {}
    deadline = time.monotonic() + timeout
    while len(got_errors) < errors or not results <= got_results.keys():
        left = deadline - time.monotonic()
        assert left > 0 and sock.poll(int(left * 1000), zmq.POLLIN), \
            f"replies missing: have {got_errors} and {sorted(got_results)}"
        for frame in sock.recv_multipart():
            msg = decode(frame)
            if isinstance(msg, Error):
                got_errors.append(msg)
            elif isinstance(msg, Result):
                got_results[msg.task_id] = msg
            else:
                assert isinstance(msg, Ack), msg
    return got_errors, got_results


def test_garbage_frames_are_refused_while_a_client_keeps_working(
        start_node: Any, make_client: Any, raw_dealer: Any) -> None:
    node = start_node(concurrency=2)
    c = make_client(node)
    raw = raw_dealer(node.endpoint)
    garbage = _garbage()
    for k, (what, frames, want_errors, want_results) in enumerate(garbage):
        batch = [c.tasks.add.delay(i, k) for i in range(20)]
        raw.send_multipart(frames)
        errors, results = _collect(raw, len(want_errors), set(want_results))
        assert [(e.code, e.ref) for e in errors] == want_errors, f"{what}: got {errors}"
        assert all(e.message for e in errors)
        for tid, value in want_results.items():
            assert results[tid].state == states.SUCCESS, f"{what}: {results[tid]}"
            assert codec.loads(results[tid].result) == value
        assert [r.get(timeout=RESULT_TIMEOUT) for r in batch] == [i + k for i in range(20)], what
    assert node.ping(timeout=5.0)
    status = node.status()
    assert status["refused_frames"] == sum(len(e) for _, _, e, _ in garbage)
    assert status["state"] == "alive"


def test_a_frame_over_the_transport_limit_drops_only_that_peer(
        start_node: Any, make_client: Any, raw_dealer: Any) -> None:
    """Over twice max_message_size ZeroMQ itself cuts the sender off; nobody else notices."""
    node = start_node(concurrency=1)
    c = make_client(node)
    before = [c.tasks.add.delay(i, 1) for i in range(10)]
    raw_dealer(node.endpoint).send(b"\x01" * (40 * MIB))
    after = [c.tasks.add.delay(i, 2) for i in range(10)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in before + after] == \
        [i + 1 for i in range(10)] + [i + 2 for i in range(10)]
    assert node.ping(timeout=5.0)


def test_a_flood_of_garbage_does_not_starve_a_client(
        start_node: Any, make_client: Any, raw_dealer: Any) -> None:
    count = 500
    node = start_node(concurrency=2)
    c = make_client(node)
    raw = raw_dealer(node.endpoint)
    rng = random.Random(7)
    results = []
    for i in range(count):
        raw.send(rng.randbytes(rng.randrange(1, 200)))
        if i % 10 == 0:
            results.append((i, c.tasks.add.delay(i, 1)))
    assert [r.get(timeout=RESULT_TIMEOUT) for _, r in results] == [i + 1 for i, _ in results]
    errors, _ = _collect(raw, count, set())
    assert len(errors) == count
    assert node.status()["refused_frames"] == count


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096 / MIB


def test_a_frame_of_empty_containers_does_not_blow_the_node_up(
        start_node: Any, make_client: Any, raw_dealer: Any) -> None:
    """Under the size limit, msgpack expands an empty array (one byte) to a list of
    ~60 bytes, tracked by the collector: a 2 MiB frame of them was 2 million lists,
    ~150 MiB and seconds of a blocked loop (16 MiB, the limit: over a GiB, a minute).
    A frame past 64 KiB may hold one container per 16 bytes, else it is refused
    (decode) before the rest is built. The RSS peak is sampled while the node reads it."""
    node = start_node(concurrency=1)
    c = make_client(node)
    assert c.tasks.add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2
    base = peak = _rss_mib(node.pid)
    frame = b"\x93\x01\x01\xdd" + (2 * MIB).to_bytes(4, "big") + b"\x90" * (2 * MIB)
    raw = raw_dealer(node.endpoint)
    raw.send(frame)
    deadline = time.monotonic() + 120
    while not raw.poll(20, zmq.POLLIN):
        peak = max(peak, _rss_mib(node.pid))
        assert time.monotonic() < deadline, "no answer to the frame"
    errors, _ = _collect(raw, 1, set())
    assert [e.code for e in errors] == ["decode"]
    print(f"RSS {base:.0f} -> peak {peak:.0f} MiB")
    assert peak - base < 48, f"the node's RSS grew by {peak - base:.0f} MiB for one 2 MiB frame"
    assert c.tasks.add.delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4


def test_a_result_too_big_to_send_fails_the_task_saying_so(
        start_node: Any, make_client: Any, tmp_path: Any) -> None:
    """A task whose value encodes to more than max_message_size (16 MiB) could never
    reach its sender: the client refused the frame, and the sender waited until its
    timeout ('no mesh node could be reached'). It fails, with the reason, and the
    client's link keeps serving."""
    from mesh.exceptions import EncodeError
    node = start_node(concurrency=1)
    c = make_client(node)
    gate = tmp_path / "gate"
    gate.touch()
    r = c.tasks.blob.delay(17 * MIB, str(gate))
    with pytest.raises(EncodeError, match="max_message_size"):
        r.get(timeout=20)
    assert r.state == states.FAILURE
    assert c.tasks.blob.delay(1000, str(gate)).get(timeout=RESULT_TIMEOUT) == "x" * 1000
    assert c.tasks.add.delay(1, 2).get(timeout=RESULT_TIMEOUT) == 3
