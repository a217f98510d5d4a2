"""Celery's ``typing``: a task's arguments are checked against its function's
parameters when it is sent, and a bad call raises TypeError in the caller, before
anything is sent (mesh/task.py ``check_arguments``). ``typing=False`` on a task, or
``Mesh(strict_typing=False)``, turns it off. Eager mode runs the good calls here."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesh import Mesh, chain, chord, group


@pytest.fixture
def app() -> Iterator[Mesh]:
    a = Mesh("typing-t", peers=["tcp://127.0.0.1:9"], mdns=False)
    a.conf.task_always_eager = True        # the calls that pass run here
    yield a
    a.close()


def tasks(app: Mesh) -> Any:
    class T:
        @staticmethod
        @app.task(name="ty.add")
        def add(x: int, y: int) -> int:
            return x + y

        @staticmethod
        @app.task(name="ty.bound", bind=True)
        def bound(self: Any, x: int, *, k: int = 1) -> int:
            return x * k

        @staticmethod
        @app.task(name="ty.loose", typing=False)
        def loose(x: int) -> int:
            return x

        @staticmethod
        @app.task(name="ty.star")
        def star(*args: int, **kwargs: int) -> int:
            return sum(args) + sum(kwargs.values())

        @staticmethod
        @app.task(name="ty.tsum")
        def tsum(xs: list[int]) -> int:
            return sum(xs)
    return T


@pytest.mark.parametrize("call, said", [
    (lambda t: t.add.delay(1), "add() missing 1 required positional argument: 'y'"),
    (lambda t: t.add.delay(1, 2, 3), "add() takes 2 positional arguments but 3 were given"),
    (lambda t: t.add.apply_async((1,), {"z": 2}), "add() got an unexpected keyword argument 'z'"),
    (lambda t: t.bound.delay(), "bound() missing 1 required positional argument: 'x'"),
    (lambda t: t.bound.delay(1, 2), "bound() takes 1 positional argument but 2 were given"),
    (lambda t: t.add.s(1).delay(), "add() missing 1 required positional argument: 'y'"),
    (lambda t: t.add.si(1, 2, 3).apply_async(), "add() takes 2 positional"),
    (lambda t: chain(t.add.s(1), t.add.s(2)).delay(), "add() missing 1 required"),
    (lambda t: group(t.add.s(1, 2), t.add.s(1)).delay(), "add() missing 1 required"),
    (lambda t: chord([t.add.s(1, 2), t.add.s(3)], t.tsum.s()).delay(), "add() missing 1"),
])
def test_a_bad_call_raises_type_error_when_sent(app: Mesh, call: Any, said: str) -> None:
    t = tasks(app)
    with pytest.raises(TypeError, match=said.replace("(", r"\(").replace(")", r"\)")):
        call(t)


def test_good_calls_pass(app: Mesh) -> None:
    t = tasks(app)
    assert t.add.delay(1, 2).get() == 3
    assert t.add.apply_async(kwargs={"x": 1, "y": 4}).get() == 5
    assert t.add.apply_async(iter([2, 3])).get() == 5          # a generator: read once
    assert t.bound.delay(3, k=2).get() == 6
    assert t.star.delay(1, 2, z=3).get() == 6
    assert chain(t.add.s(1, 2), t.add.s(10)).delay().get() == 13   # a later step: not checked
    assert t.add.typed and not t.loose.typed


def test_typing_false_on_the_task_or_the_app_sends_as_called(app: Mesh) -> None:
    t = tasks(app)
    with pytest.raises(TypeError, match="takes 1 positional argument but 2"):
        t.loose.delay(1, 2).get()           # not checked when sent: the run fails
    loose = Mesh("typing-loose", peers=["tcp://127.0.0.1:9"], mdns=False, strict_typing=False)
    try:
        loose.conf.task_always_eager = True
        add = loose.task(name="ty.add2")(lambda x, y: x + y)
        assert not add.typed
        r = add.apply(args=(1,))             # eager: the run is what fails
        assert r.failed()
        with pytest.raises(TypeError, match="missing 1 required positional argument"):
            add.delay(1).get()
    finally:
        loose.close()


def test_a_class_based_task_is_checked_against_run(app: Mesh) -> None:
    class Resize(app.Task):                  # type: ignore[name-defined,misc]
        name = "ty.resize"

        def run(self, path: str, width: int = 100) -> str:
            return f"{path}@{width}"
    task = app.register_task(Resize())
    assert task.delay("a.png", width=5).get() == "a.png@5"
    with pytest.raises(TypeError, match=r"run\(\) missing 1 required positional argument: 'path'"):
        task.delay()
