"""Control commands: typed arguments and replies (mesh/wire/control.py) and the
registry users add to with @control_command / @inspect_command."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from mesh import control_command, inspect_command
from mesh.exceptions import ConfigError
from mesh.node import (
    commands,
    remote,  # noqa: F401  (registers mesh's own commands)
)
from mesh.wire.control import (
    BadArgs,
    PoolArgs,
    RevokeArgs,
    TaskInfo,
    TaskStateReply,
    TimeLimitArgs,
    parse_args,
    to_args,
    to_payload,
)


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[commands.Registry]:
    reg = commands.registry.copy()
    monkeypatch.setattr(commands, "registry", reg)
    yield reg


@pytest.mark.parametrize("args, words", [
    ({"task_ids": 5}, "'task_ids' must be"),
    ({"task_ids": []}, "a list of 1 to"),
    ({"task_ids": ["x"], "signal": "SIGNOPE"}, "unknown or unusable signal"),
    ({"task_ids": ["x"], "signal": "SIGSTOP"}, "unknown or unusable signal"),
    ({"task_ids": ["x"], "terminate": "yes"}, "'terminate' must be bool"),
    ({}, "revoke needs 'task_ids'"),
])
def test_bad_revoke_arguments_say_what_is_wrong(args: dict[str, Any], words: str) -> None:
    with pytest.raises(BadArgs, match=words):
        parse_args(RevokeArgs, args, "revoke")


def test_arguments_are_parsed_into_their_dataclass() -> None:
    req = parse_args(RevokeArgs, {"task_ids": "one", "noreply": True, "future": 1}, "revoke")
    assert req.ids == ["one"] and req.terminate is False and req.signal == "SIGKILL"
    assert parse_args(PoolArgs, {}, "pool_grow") == PoolArgs(1)
    for n in (0, 1001, True, 2.0):
        with pytest.raises(BadArgs, match="'n'"):
            parse_args(PoolArgs, {"n": n}, "pool_grow")
    with pytest.raises(BadArgs, match="must not exceed"):
        parse_args(TimeLimitArgs, {"task": "t", "soft": 5, "hard": 1}, "time_limit")
    assert parse_args(TimeLimitArgs, {"task": "t", "soft": 1}, "time_limit").soft == 1


def test_replies_become_maps_without_their_optional_empty_keys() -> None:
    assert to_payload(TaskStateReply("t", "RECEIVED")) == {"task_id": "t", "state": "RECEIVED"}
    assert to_payload(TaskStateReply("t", "SUCCESS", b"r"))["result"] == b"r"
    info = to_payload([TaskInfo("i", "n", "node", 0, 1.0, "()", "{}", 0, eta=5.0)])
    assert info == [{"id": "i", "name": "n", "node": "node", "priority": 0, "received": 1.0,
                     "args": "()", "kwargs": "{}", "retries": 0, "eta": 5.0}]
    assert to_args(RevokeArgs(["a"], True)) == {"task_ids": ["a"], "terminate": True,
                                                 "signal": "SIGKILL", "forwarded": False}


def test_user_commands_get_typed_arguments(fresh_registry: commands.Registry) -> None:
    @control_command(args=[("n", int)])
    def bump(state: Any, n: int | None = 1) -> dict[str, Any]:
        return {"n": n, "node": state.hostname}

    @inspect_command
    def echo(state: Any, text: str, times: int = 2) -> str:
        return text * times

    cmd = fresh_registry.get("bump")
    assert cmd is not None and cmd.kind == "control" and not cmd.builtin
    state = commands.ControlState(node=type("N", (), {"name": "n1"})(), sender=b"x")
    assert cmd.handler(state, parse_args(cmd.request, {"n": 3})) == {"n": 3, "node": "n1"}
    assert cmd.handler(state, parse_args(cmd.request, {})) == {"n": 1, "node": "n1"}
    with pytest.raises(BadArgs, match="'n' must be"):
        parse_args(cmd.request, {"n": "3"})
    echo_cmd = fresh_registry.get("echo")
    assert echo_cmd is not None and echo_cmd.kind == "inspect"
    assert [f.name for f in dataclasses.fields(echo_cmd.request)] == ["text", "times"]
    assert echo_cmd.handler(state, parse_args(echo_cmd.request, {"text": "ab"})) == "abab"
    with pytest.raises(BadArgs, match="echo needs 'text'"):
        parse_args(echo_cmd.request, {}, "echo")


def test_a_user_command_cannot_take_the_name_of_one_of_meshs(
        fresh_registry: commands.Registry) -> None:
    with pytest.raises(ConfigError, match="one of mesh's own"):
        control_command(lambda state: None, name="revoke")
    with pytest.raises(ConfigError, match="cannot be sent"):
        control_command(lambda state, *a: None, name="varargs")
    assert {"ping", "status", "revoke", "result", "shutdown"} <= set(fresh_registry.names())
