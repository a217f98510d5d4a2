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

from mesh.exceptions import CeleryError, TaskRevokedError
from mesh.workflow.ids import derive

RESULT_TIMEOUT = 60.0


def test_children_of_a_task_are_its_link_callbacks_results(start_node: Any,
                                                           make_client: Any) -> None:
    node = start_node(concurrency=1)
    c = make_client(node)
    add = c.tasks.add
    r = add.apply_async((1, 2), link=[add.s(10), add.s(100)])
    assert r.get(timeout=RESULT_TIMEOUT) == 3
    kids = r.children
    assert kids is not None
    assert [k.id for k in kids] == [derive(r.id, "link0"), derive(r.id, "link1")]
    assert [k.get(timeout=RESULT_TIMEOUT) for k in kids] == [13, 103]
    # another process, by id: the node's copy of the task names its callbacks
    code = (f"import sys\nfrom mesh import Mesh\n"
            f"app = Mesh('mesh-it', peers=[{node.endpoint!r}], mdns=False)\n"
            f"r = app.AsyncResult({r.id!r})\n"
            f"print([k.get(timeout=60) for k in r.children])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90,
                       check=False, cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[13, 103]"
    # a task without callbacks has none; a failed one starts none (Celery: link runs on success)
    assert add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2
    plain = add.delay(2, 2)
    plain.get(timeout=RESULT_TIMEOUT)
    assert plain.children is None
    failed = c.tasks.fail.apply_async(("no", 1), link=add.s(1))
    wait_until(lambda: failed.ready(), what="the failing task to end")
    assert failed.children is None


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
