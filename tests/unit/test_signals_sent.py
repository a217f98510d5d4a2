"""Where mesh sends its signals, in process: the child's task runner (the same
``Child`` a node forks, called without the fork) and the publish helpers. The real
processes are tested in tests/integration/test_e2e_signals.py; these cover what a
real node never hands a child (an unknown task, an unreadable frame)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesh import Mesh, signals, states
from mesh.client import publish
from mesh.config import Config
from mesh.exceptions import NotRegistered
from mesh.node.child import Child
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, decode, encode


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, signal: Any = None, **kw: Any) -> None:
        self.calls.append((signal.name, kw))

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


SENT_IN_CHILD = (signals.task_prerun, signals.task_postrun, signals.task_success,
                 signals.task_failure, signals.task_retry, signals.task_unknown,
                 signals.task_rejected)


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    for s in SENT_IN_CHILD:
        s.connect(r, weak=False)
    yield r
    for s in SENT_IN_CHILD:
        s.disconnect(r)


@pytest.fixture
def child() -> Child:
    app = Mesh("unit", peers=["tcp://127.0.0.1:1"], mdns=False)

    @app.task(name="t.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="t.boom")
    def boom() -> None:
        raise KeyError("boom")

    return Child(app, Config.build(), "n1")


def run(child: Child, name: str, *args: Any, **kwargs: Any) -> Result:
    _done, frame = child.run_frame(encode(Submit("id-1", name, codec.dump_call(args, kwargs))))
    res = decode(frame)
    assert isinstance(res, Result)
    return res


def test_success_sends_prerun_success_postrun_in_order(child: Child, rec: Recorder) -> None:
    assert run(child, "t.mul", 6, y=7).state == states.SUCCESS
    assert rec.names() == ["task_prerun", "task_success", "task_postrun"]
    task = child.app.tasks["t.mul"]
    assert rec.calls[0][1] == {"sender": task, "task_id": "id-1", "task": task, "args": [6],
                               "kwargs": {"y": 7}}
    assert rec.calls[1][1] == {"sender": task, "result": 42}
    assert rec.calls[2][1]["retval"] == 42 and rec.calls[2][1]["state"] == states.SUCCESS


def test_failure_sends_task_failure_with_einfo(child: Child, rec: Recorder) -> None:
    assert run(child, "t.boom").state == states.FAILURE
    assert rec.names() == ["task_prerun", "task_failure", "task_postrun"]
    kw = rec.calls[1][1]
    assert isinstance(kw["exception"], KeyError) and kw["einfo"].exception is kw["exception"]
    assert kw["traceback"] is kw["exception"].__traceback__
    assert "KeyError: 'boom'" in str(kw["einfo"])


def test_unknown_task_sends_task_unknown_and_no_task_signal(child: Child, rec: Recorder) -> None:
    res = run(child, "t.nope")
    assert res.state == states.FAILURE and res.exc and res.exc["type"] == "NotRegistered"
    assert rec.names() == ["task_unknown"]
    kw = rec.calls[0][1]
    assert (kw["name"], kw["id"], kw["sender"]) == ("t.nope", "id-1", None)
    assert isinstance(kw["exc"], NotRegistered) and isinstance(kw["message"], Submit)


def test_unreadable_arguments_or_frame_send_task_rejected(child: Child, rec: Recorder) -> None:
    _done, frame = child.run_frame(encode(Submit("id-2", "t.mul", b"\xc1")))
    assert decode(frame).state == states.FAILURE  # type: ignore[attr-defined]
    _done, frame = child.run_frame(b"not a frame")
    assert decode(frame).state == states.FAILURE  # type: ignore[attr-defined]
    assert rec.names() == ["task_rejected", "task_rejected"]


def test_a_raising_receiver_does_not_change_the_outcome(child: Child) -> None:
    def bad(**kw: Any) -> None:
        raise RuntimeError("receiver")
    for s in (signals.task_prerun, signals.task_success, signals.task_postrun):
        s.connect(bad)
    try:
        res = run(child, "t.mul", 2, 3)
    finally:
        for s in (signals.task_prerun, signals.task_success, signals.task_postrun):
            s.disconnect(bad)
    assert res.state == states.SUCCESS and codec.loads(res.result or b"") == 6


def test_publish_headers_keep_only_what_receivers_add_or_change() -> None:
    def add_trace(headers: Any = None, body: Any = None, **kw: Any) -> None:
        headers["traceparent"] = "00-1-2-01"
        headers["parent_id"] = "p-1"          # a describing key given a value: it travels
        headers["id"] = headers["id"]         # unchanged: it does not
        body[0].append(3)
    signals.before_task_publish.connect(add_trace)
    try:
        body, sent, told = publish.before("t.add", "id-9", iter([1, 2]), {}, {"mine": 1}, "celery",
                                          0, eta=None, expires=None, time_limit=None,
                                          soft_time_limit=None)
    finally:
        signals.before_task_publish.disconnect(add_trace)
    assert sent == {"mine": 1, "traceparent": "00-1-2-01", "parent_id": "p-1"}
    assert body[0] == [1, 2, 3]               # a generator of args is read once
    assert told["id"] == "id-9" and told["traceparent"] == "00-1-2-01"   # for after_task_publish
