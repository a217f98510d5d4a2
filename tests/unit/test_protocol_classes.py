"""What a message class is, now that mesh/wire/message.py generates neither repr, eq,
hash nor frozen-ness per class (Message has them once) and makes each class's
``__init__`` and decoder on first use (docs/performance.md, "Round 11"): the same
behaviour as ``dataclass(frozen=True, slots=True)`` gave, and nothing generated at
import.
"""
from __future__ import annotations

import copy
import dataclasses
import enum
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mesh.wire import protocol
from mesh.wire.protocol import (
    Ack,
    ChildDone,
    Message,
    PingNack,
    ReplicateAck,
    Result,
    Submit,
    decode,
    encode,
)
from tests.unit.test_protocol import SAMPLES

ROOT = Path(__file__).resolve().parents[2]


def _dataclass_repr(msg: Message) -> str:
    fields = ", ".join(f"{f.name}={getattr(msg, f.name)!r}" for f in dataclasses.fields(msg))
    return f"{type(msg).__qualname__}({fields})"


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_a_message_is_a_frozen_slotted_dataclass(msg: Message) -> None:
    assert dataclasses.is_dataclass(msg)
    assert [f.name for f in dataclasses.fields(msg)] == [s[0] for s in type(msg)._spec]
    assert not hasattr(msg, "__dict__")
    name = dataclasses.fields(msg)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(msg, name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(msg, name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.not_a_field = 1             # type: ignore[attr-defined]
    assert repr(msg) == _dataclass_repr(msg)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_equality_copies_and_pickles(msg: Message) -> None:
    same = dataclasses.replace(msg)
    assert same == msg and same is not msg and not (same != msg)
    assert copy.copy(msg) == msg and copy.deepcopy(msg) == msg
    assert pickle.loads(pickle.dumps(msg)) == msg
    first = dataclasses.fields(msg)[0]
    other = dataclasses.replace(msg, **{first.name: _another(getattr(msg, first.name))})
    assert other != msg
    assert msg != tuple(type(msg)._values(msg))        # other types: never equal


def _another(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, bytes):
        return value + b"x"
    if isinstance(value, list):
        return [*value, 0]
    return None


def test_hash_is_the_fields_hash_and_unhashable_fields_refuse_it() -> None:
    assert hash(ReplicateAck("b", "n")) == hash(("b", "n"))
    assert hash(PingNack(1, "n")) == hash(PingNack(1, "n"))
    assert {ReplicateAck("b", "n"), ReplicateAck("b", "n")} == {ReplicateAck("b", "n")}
    with pytest.raises(TypeError):
        hash(Ack(["a"], "n"))           # a list field, as a frozen dataclass's hash


def test_init_takes_positions_keywords_defaults_and_fresh_factories() -> None:
    s = Submit("t1", "bench.inc", b"\x92\x90\x80")
    assert (s.priority, s.eta, s.retries, s.headers) == (0, None, 0, {})
    assert Submit("t1", "bench.inc", b"", 3, headers={"a": 1}).priority == 3
    assert Submit(task_id="t", name="n", payload=b"").name == "n"
    assert Submit("a", "n", b"").headers is not Submit("b", "n", b"").headers
    assert Ack(["x"], "n").load is not Ack(["y"], "n").load
    d = ChildDone("t", "SUCCESS", keep=False)
    assert (d.runtime, d.retire, d.keep) == (0.0, None, False)
    with pytest.raises(TypeError, match="payload"):
        Submit("t", "n")                 # type: ignore[call-arg]
    with pytest.raises(TypeError, match="nope"):
        Submit("t", "n", b"", nope=1)    # type: ignore[call-arg]
    assert Submit.__init__.__qualname__ == "Submit.__init__"
    r = dataclasses.replace(Result("t", "SUCCESS", b"\x01"), eta=5.0)
    assert (r.result, r.eta) == (b"\x01", 5.0)
    assert decode(encode(r)) == r


def test_messages_are_not_subclassed_with_their_own_init() -> None:
    with pytest.raises(TypeError, match="__init__"):
        @protocol.message
        class Bad(Message):              # noqa: F841
            TYPE = protocol.MsgType.SUBMIT

            def __init__(self) -> None:
                pass


Names = list[str]          # a name only this module knows


class _Elsewhere(enum.IntEnum):
    TYPE = 990


def test_annotations_are_read_in_the_module_that_declares_the_message() -> None:
    """The machinery (mesh/wire/message.py) reads ``from __future__ import annotations``
    text in the declaring module's names: the schema's in mesh.wire.protocol, these
    here, not its own."""
    try:
        @protocol.message
        class Declared(Message):
            TYPE = _Elsewhere.TYPE
            names: Names
            more: dict[str, Any] = dataclasses.field(default_factory=dict)

        assert decode(encode(Declared(["a"]))) == Declared(["a"], {})   # type: ignore[call-arg]
        with pytest.raises(protocol.DecodeError, match="Declared.names must be list"):
            decode(encode(Declared([1])))                                # type: ignore[call-arg]
    finally:
        protocol._REGISTRY.pop(990, None)


def test_nothing_is_generated_at_import_only_on_first_use() -> None:
    """Importing the protocol compiles no code per class: a child, a client or meshctl
    uses a few of the ~30 types (~120 ms and ~0.5 MiB per process when every class
    had its dataclass methods and decoder generated at import)."""
    code = textwrap.dedent("""
        from mesh.wire import protocol as p
        def generated(cls):
            return (cls.__init__ is not p._lazy_init,
                    "_lazy_build" not in cls._build.__qualname__)
        print(sorted(c.__name__ for c in p._REGISTRY.values() if any(generated(c))))
        p.decode(p.encode(p.Submit("t", "n", b"")))
        print(sorted(c.__name__ for c in p._REGISTRY.values() if any(generated(c))))
        print(generated(p.Submit))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    # (mesh's own import decodes nothing and builds no message)
    assert lines[:3] == ["[]", "['Submit']", "(True, True)"]


def test_what_a_child_uses_is_generated_before_the_fork() -> None:
    """mesh/node/child.py, imported by the node before it forks, generates what a
    child decodes and builds: a child that generated them would map the compiler's
    code too (+0.6 MiB of RSS per child, measured)."""
    code = textwrap.dedent("""
        import mesh.node.child
        from mesh.wire import protocol as p
        for c in (p.Submit, p.ChildCancel, p.ChildReady, p.ChildDone, p.ChildState, p.Result):
            assert c.__init__ is not p._lazy_init, c
            assert not hasattr(c._build, "hints"), c
        assert p.Ping.__init__ is p._lazy_init and hasattr(p.Ping._build, "hints")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
