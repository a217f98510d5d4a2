"""Tasks end to end: results, errors, the request context, asyncio."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import decimal
import uuid
from pathlib import Path
from typing import Any

import pytest
import tasks_app
from harness import wait_until

from mesh import states
from mesh.exceptions import NotRegistered, RemoteTraceback, TaskError
from mesh.exceptions import TimeoutError as MeshTimeoutError
from mesh.wire.protocol import ControlReply

RESULT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def node(start_module_node: Any) -> Any:
    return start_module_node(concurrency=2)


@pytest.fixture
def client(make_client: Any, node: Any) -> Any:
    return make_client(node)


def test_thousands_of_tasks_across_two_nodes(start_node: Any, make_client: Any) -> None:
    a, b = start_node(concurrency=2), start_node(concurrency=2)
    c = make_client(a, b)
    n = 3000
    results = [c.tasks.add.delay(i, 2 * i) for i in range(n)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [3 * i for i in range(n)]
    assert all(r.state == states.SUCCESS for r in results)
    ran_on = collections.Counter(r.node for r in results)
    assert set(ran_on) == {a.name, b.name}, ran_on
    assert a.status()["succeeded"] + b.status()["succeeded"] == n


def test_values_round_trip(client: Any) -> None:
    value = {
        "int": 2**62, "neg": -7, "float": 1.5, "str": "héllo ✓", "bytes": b"\x00\xff",
        "none": None, "bool": True, "list": [1, [2, [3]]], "tuple": (1, 2),
        "when": dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.UTC),
        "day": dt.date(2024, 5, 17), "span": dt.timedelta(days=1, seconds=2, microseconds=3),
        "money": decimal.Decimal("12.34"), "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }
    expected = dict(value, tuple=[1, 2])   # tuples travel as arrays, as JSON does in Celery
    assert client.tasks.echo.delay(value).get(timeout=RESULT_TIMEOUT) == expected


def test_task_exception_comes_back_with_its_type_and_traceback(client: Any) -> None:
    r = client.tasks.fail.delay("card declined", 402)
    with pytest.raises(tasks_app.CustomError) as info:
        r.get(timeout=RESULT_TIMEOUT)
    err = info.value
    assert type(err) is tasks_app.CustomError
    assert err.args == ("card declined", 402)
    assert r.state == states.FAILURE and r.failed() and r.ready() and not r.successful()
    tb = r.traceback
    assert tb is not None
    assert "Traceback (most recent call last)" in tb
    assert "tasks_app.py" in tb and "in fail" in tb
    assert "CustomError" in tb and "card declined" in tb
    assert isinstance(err.__cause__, RemoteTraceback)
    assert err.__cause__.tb == tb
    # propagate=False and .result hand the exception back instead of raising it
    assert isinstance(r.get(timeout=RESULT_TIMEOUT, propagate=False), tasks_app.CustomError)
    assert isinstance(r.result, tasks_app.CustomError)


def test_an_exception_whose_text_is_not_utf8_comes_back(client: Any) -> None:
    """A lone surrogate in the exception's text (a file name): the task fails with its
    own error, its child does not die over the Result frame (WorkerLostError)."""
    r = client.tasks.fail_file_not_utf8.delay()
    with pytest.raises(ValueError) as info:
        r.get(timeout=RESULT_TIMEOUT)
    assert "cannot read caf" in str(info.value) and ".csv" in str(info.value)
    assert "fail_file_not_utf8" in (r.traceback or "")
    assert r.state == states.FAILURE


def test_builtin_exception_type_comes_back_as_itself(client: Any) -> None:
    r = client.tasks.add.delay("text", 1)
    with pytest.raises(TypeError) as info:
        r.get(timeout=RESULT_TIMEOUT)
    assert "concatenate" in str(info.value)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in add" in (r.traceback or "")


def test_exception_type_not_importable_here_becomes_task_error(client: Any) -> None:
    r = client.tasks.fail_node_only.delay("only the node knows this type")
    with pytest.raises(TaskError) as info:
        r.get(timeout=RESULT_TIMEOUT)
    err = info.value
    assert err.type_name == f"{tasks_app.NODE_ONLY_MODULE}.NodeOnlyError"
    assert "only the node knows this type" in str(err)
    assert err.remote_traceback == r.traceback
    assert "NodeOnlyError" in (r.traceback or "")
    assert isinstance(err.__cause__, RemoteTraceback)


def test_unknown_task_name_fails_fast_with_not_registered(client: Any, node: Any) -> None:
    r = client.app.send_task("tasks_app.no_such_task", args=(1,))
    with pytest.raises(NotRegistered) as info:
        r.get(timeout=RESULT_TIMEOUT)
    assert "tasks_app.no_such_task" in str(info.value)
    assert r.state == states.FAILURE
    # the node is fine and still runs registered tasks
    assert client.tasks.add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2


def test_get_times_out_with_mesh_timeout_error(client: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    r = client.tasks.wait_for_file.delay(str(gate))
    try:
        with pytest.raises(MeshTimeoutError):
            r.get(timeout=0.2)
        assert not r.ready()
    finally:
        gate.touch()
    assert r.get(timeout=RESULT_TIMEOUT) == "opened"


def test_await_result_from_asyncio(client: Any, tmp_path: Path) -> None:
    t = client.tasks
    gate = tmp_path / "gate"

    async def main() -> list[int]:
        values = await asyncio.gather(*[t.add.delay(i, i) for i in range(50)])
        assert await t.add.delay(20, 22) == 42
        with pytest.raises(tasks_app.CustomError):
            await t.fail.delay("async failure", 1)
        # awaiting does not block the event loop: a blocked task times out in wait_for
        blocked = t.wait_for_file.delay(str(gate))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(blocked, 0.2)
        gate.touch()
        assert await blocked == "opened"
        return list(values)

    assert asyncio.run(main()) == [2 * i for i in range(50)]


def test_bound_task_sees_its_request(client: Any, node: Any) -> None:
    r = client.tasks.request_info.apply_async((1, "two"), {"k": "v"}, priority=3,
                                              soft_time_limit=50, time_limit=60)
    info = r.get(timeout=RESULT_TIMEOUT)
    assert info["id"] == r.id
    assert info["task"] == "tasks_app.request_info"
    assert info["args"] == [1, "two"] and info["kwargs"] == {"k": "v"}
    assert info["hostname"] == node.name
    assert info["retries"] == 0 and info["priority"] == 3
    assert info["time_limit"] == 60 and info["soft_time_limit"] == 50
    assert info["called_directly"] is False


def test_plain_call_runs_here(client: Any) -> None:
    import os
    assert client.tasks.add(2, 3) == 5
    info = client.tasks.request_info(7)
    assert info["called_directly"] is True and info["pid"] == os.getpid()
    assert info["args"] == [7]


def test_status_and_ping_describe_the_node(node: Any, control: Any) -> None:
    replies = control.broadcast([node.endpoint], "ping", timeout=5.0)
    reply = replies[node.endpoint]
    assert isinstance(reply, ControlReply) and reply.ok and reply.node == node.name
    assert reply.payload["address"] == node.endpoint
    status = node.status()
    assert status["node"] == node.name and status["state"] == "alive"
    assert status["total"] == 2
    assert "tasks_app.add" in status["registered"]


def test_unknown_control_command_is_refused_politely(node: Any, control: Any) -> None:
    reply = control.broadcast([node.endpoint], "frobnicate", timeout=5.0)[node.endpoint]
    assert isinstance(reply, ControlReply) and not reply.ok
    assert "frobnicate" in (reply.error or "") and "ping" in (reply.error or "")
    wait_until(node.ping, 10, "the node to answer a ping")
