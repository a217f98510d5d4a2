"""A signature called as a function (``sig()``), as Celery's: a task's signature, and
``task.map(it)`` / ``task.starmap(it)`` (the mesh.map/mesh.starmap builtins) run here,
inline, with no node; chain, group, chunks and chord are sent (``apply_async``), or run
here with ``task_always_eager``. tests/unit/test_workflows_inprocess.py sends them to a
node."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesh import Mesh, chain, chord, group
from mesh.canvas import xmap
from mesh.exceptions import ConfigError, NotRegistered

CALLS: list[Any] = []


@pytest.fixture
def app() -> Iterator[Mesh]:
    a = Mesh("canvas-call", mdns=False)      # no peers: nothing can be sent
    CALLS.clear()

    @a.task(name="cc.add")
    def add(x: int, y: int = 0) -> int:
        CALLS.append((x, y))
        return x + y

    @a.task(name="cc.xsum")
    def xsum(xs: list[int]) -> int:
        return sum(xs)
    yield a
    a.close()


def test_map_and_starmap_called_run_the_task_here_on_each_item(app: Mesh) -> None:
    add, xsum = app.tasks["cc.add"], app.tasks["cc.xsum"]
    assert "mesh.map" not in app.tasks                   # a plain client app
    assert xsum.map([[1, 2], [3], []])() == [3, 3, 0]
    assert add.starmap([(1, 2), (3, 4)])() == [3, 7]
    assert CALLS == [(1, 2), (3, 4)]                      # in this process, in order
    assert add.starmap(iter([(5, 5)]))() == [10]          # a generator is read once, at once
    assert add.map([])() == []
    # the signature's own arguments are not used (immutable, as Celery's xmap)
    assert add.map([1, 2])(100) == [1, 2]


def test_a_map_over_a_task_not_registered_here_says_so(app: Mesh) -> None:
    sig = xmap(app.signature("cc.elsewhere"), [1])
    with pytest.raises(NotRegistered, match="cc.elsewhere"):
        sig()


def test_chunks_parts_are_starmaps_and_chunks_called_is_sent(app: Mesh) -> None:
    add = app.tasks["cc.add"]
    ch = add.chunks(zip(range(5), range(5)), 2)
    assert [part() for part in ch.tasks] == [[0, 2], [4, 6], [8]]
    with pytest.raises(ConfigError, match="no nodes"):   # called: sent, as Celery's
        ch()
    app.conf.task_always_eager = True
    assert ch().get() == [[0, 2], [4, 6], [8]]


def test_workflows_called_are_sent_and_run_here_when_eager(app: Mesh) -> None:
    add, xsum = app.tasks["cc.add"], app.tasks["cc.xsum"]
    for call in (lambda: chain(add.s(1, 1), add.s(2))(), lambda: group(add.s(1, 1))(),
                 lambda: chord([add.s(1, 1)])(xsum.s())):
        with pytest.raises(ConfigError, match="no nodes"):
            call()
    app.conf.task_always_eager = True
    assert chain(add.s(1), add.s(2))(5).get() == 8        # arguments of the first task
    assert chain(add.s(1), add.s(2))(y=5).get() == 8      # keywords too
    assert group(add.s(1), add.s(2))(10).get() == [11, 12]   # partial arguments
    # a group's keywords are options (Celery's group(...)(**options)), not arguments
    assert group(add.s(1, 1), add.s(2, 2))(priority=3, countdown=0).get() == [2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)])(xsum.s()).get() == 6
