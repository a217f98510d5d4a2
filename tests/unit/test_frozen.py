"""mesh/wire/frozen.py: ``@frozen`` classes behave as ``@dataclass(frozen=True)`` ones
(the control commands' requests and replies, mesh/wire/control.py) and generate
nothing at import (docs/performance.md, "Round 11")."""
from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mesh.wire import control
from mesh.wire.frozen import Frozen, frozen

ROOT = Path(__file__).resolve().parents[2]


def _declare(name: str, base: type) -> Any:
    """The class both sides declare: ``Mine`` made by ``@frozen``, ``Ref`` by
    ``@dataclass(frozen=True)``."""
    class Declared(base):             # type: ignore[misc,valid-type]
        a: str
        b: int = 2
        c: list[int] = field(default_factory=list)
        d: Any = field(default=None, repr=False, compare=False)

        def __post_init__(self) -> None:
            if self.b < 0:
                raise ValueError("b < 0")
            object.__setattr__(self, "c", list(self.c))

    Declared.__name__ = Declared.__qualname__ = name     # (repr, pickle)
    return Declared


Mine = frozen(_declare("Mine", Frozen))
Ref = dataclass(frozen=True)(_declare("Ref", object))


@pytest.mark.parametrize("args,kwargs", [(("x",), {}), (("x", 3), {"c": (1, 2)}),
                                         ((), {"a": "y", "d": 5}), (("x", 0, [1]), {"d": []})])
def test_it_behaves_as_a_frozen_dataclass(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    m, r = Mine(*args, **kwargs), Ref(*args, **kwargs)
    assert repr(m) == repr(r).replace("Ref(", "Mine(")
    assert dataclasses.astuple(m) == dataclasses.astuple(r)
    assert dataclasses.asdict(m) == dataclasses.asdict(r)
    assert m == Mine(*args, **kwargs) and m != Mine("other") and m != r
    assert (m == Mine(m.a, m.b, m.c, d="ignored")) == (r == Ref(r.a, r.b, r.c, d="ignored"))
    assert dataclasses.replace(m, b=7).b == 7 and dataclasses.replace(m) == m
    assert copy.deepcopy(m) == m and pickle.loads(pickle.dumps(m)) == m
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.a = "z"                         # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del m.b                           # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(m)                           # a list field: unhashable, as Ref
    with pytest.raises(TypeError):
        hash(r)


def test_init_errors_and_post_init_are_a_dataclass_s() -> None:
    with pytest.raises(ValueError, match="b < 0"):
        Mine("x", -1)
    with pytest.raises(TypeError, match="'a'"):
        Mine()                            # type: ignore[call-arg]
    with pytest.raises(TypeError, match="zz"):
        Mine("x", zz=1)                   # type: ignore[call-arg]
    assert Mine("x").c is not Mine("x").c
    assert hash(control.PoolArgs(3)) == hash(control.PoolArgs(3)) == hash((3,))
    assert Mine.__init__.__qualname__ == "Mine.__init__"


def test_control_requests_still_parse_and_check() -> None:
    assert control.parse_args(control.RevokeArgs, {"task_ids": "t1"}).ids == ["t1"]
    with pytest.raises(control.BadArgs, match="'n' must be an integer"):
        control.parse_args(control.PoolArgs, {"n": 0})
    with pytest.raises(control.BadArgs, match="needs 'task'"):
        control.parse_args(control.RateLimitArgs, {})
    assert control.to_payload(control.TaskInfo("i", "n", "node", 0, 1.0)) == {
        "id": "i", "name": "n", "node": "node", "priority": 0, "received": 1.0, "args": ""}


def test_only_frozen_subclasses() -> None:
    with pytest.raises(TypeError, match="Frozen"):
        frozen(type("Plain", (), {}))


def test_control_generates_nothing_at_import() -> None:
    code = textwrap.dedent("""
        import dataclasses, mesh, mesh.node.node
        from mesh.wire import control
        made = [n for n, c in vars(control).items() if isinstance(c, type)
                and dataclasses.is_dataclass(c) and "__init__" in c.__dict__]
        print(made)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
