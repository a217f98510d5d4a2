"""Celery's ``AsyncResult.children`` for ``link`` callbacks, on a real node: once the
parent succeeded, its children are the callbacks' results, in the sending process and
in any other (a script that looks the parent up by id); ``except CeleryError`` (moved
by its import) catches what mesh raises; ``group.skew`` spaces a group's members out."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from harness import ROOT, clean_env, wait_until

from mesh import chain, group
from mesh.exceptions import CeleryError, TaskRevokedError
from mesh.result import AsyncResult, GroupResult
from mesh.workflow.ids import derive

RESULT_TIMEOUT = 60.0


def test_children_of_a_task_are_its_link_callbacks_results(start_node: Any,
                                                           make_client: Any) -> None:
    node = start_node(concurrency=1)
    c = make_client(node)
    add = c.tasks.add
    # one callback: its result
    one = add.apply_async((1, 1), link=add.s(10))
    assert one.get(timeout=RESULT_TIMEOUT) == 2
    kids = one.children
    assert kids is not None and [type(k) for k in kids] == [AsyncResult], kids
    assert kids[0].id == derive(one.id, "link0") and kids[0].get(timeout=RESULT_TIMEOUT) == 12
    # two or more (Celery's worker applies them as one group): a GroupResult of them
    r = add.apply_async((1, 2), link=[add.s(10), add.s(100)])
    assert r.get(timeout=RESULT_TIMEOUT) == 3
    kids = r.children
    assert kids is not None and [type(k) for k in kids] == [GroupResult], kids
    assert [k.id for k in kids[0].results] == [derive(r.id, "link0"), derive(r.id, "link1")]
    assert kids[0].get(timeout=RESULT_TIMEOUT) == [13, 103]
    # another process, by id: the node's copy of the task names its callbacks
    code = (f"import sys\nfrom mesh import Mesh\n"
            f"app = Mesh('mesh-it', peers=[{node.endpoint!r}], mdns=False)\n"
            f"r = app.AsyncResult({r.id!r})\n"
            f"print([type(k).__name__ for k in r.children], r.children[0].get(timeout=60))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90,
                       check=False, cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "['GroupResult'] [13, 103]"
    # a group among them is applied alone, first; the chain's next step comes last
    # (Celery: a worker applies the callbacks, then the chain's next step)
    s = chain(add.s(1, 1).set(link=[add.s(10), group(add.s(1), add.s(2)), add.s(100)]),
              add.s(1000))
    last = s.apply_async()
    assert last.get(timeout=RESULT_TIMEOUT) == 1002
    first = app_result(c, last.parent.id)
    kids = wait_until(lambda: first.children, what="the first step's children")
    assert [type(k) for k in kids] == [GroupResult, GroupResult, AsyncResult], kids
    assert kids[0].get(timeout=RESULT_TIMEOUT) == [3, 4]
    assert kids[1].get(timeout=RESULT_TIMEOUT) == [12, 102]
    assert kids[2].id == last.id
    here = last.parent.children               # the same, where the chain was sent
    assert here is not None and [k.id for k in here] == [k.id for k in kids]
    assert here[2] is last                    # (the handle apply_async returned)
    # a task without callbacks has none; a failed one starts none (Celery: link runs on success)
    assert add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2
    plain = add.delay(2, 2)
    plain.get(timeout=RESULT_TIMEOUT)
    assert plain.children is None
    failed = c.tasks.fail.apply_async(("no", 1), link=add.s(1))
    wait_until(lambda: failed.ready(), what="the failing task to end")
    assert failed.children is None


def app_result(c: Any, task_id: str) -> AsyncResult:
    """A fresh handle for ``task_id``: what this process knows of it is not used."""
    return AsyncResult(task_id, c.app)


def test_celery_error_catches_what_mesh_raises(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    c = make_client(node)
    r = c.tasks.add.apply_async((1, 1), countdown=60)
    r.revoke()
    with pytest.raises(CeleryError) as info:          # Celery's habit: except CeleryError
        r.get(timeout=RESULT_TIMEOUT)
    assert isinstance(info.value, TaskRevokedError)


def test_group_skew_spaces_the_members_out(start_node: Any, make_client: Any) -> None:
    from mesh import group
    node = start_node(concurrency=2)
    c = make_client(node)
    g = group(c.tasks.stamp.s() for _ in range(3)).skew(start=0, step=1.5)
    assert [t.options["countdown"] for t in g.tasks] == [0.0, 1.5, 3.0]
    stamps = g.apply_async().get(timeout=RESULT_TIMEOUT)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(1.2 < gap < 3.0 for gap in gaps), gaps       # each started ~1.5 s later
