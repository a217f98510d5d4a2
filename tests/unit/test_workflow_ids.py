"""Every unit and group member of a workflow gets an id of its own (mesh/workflow/plan.py),
whatever the nesting: two steps with one id are one step to the mesh (the later is
taken for a repeat and never runs)."""
from __future__ import annotations

import itertools
from typing import Any

from mesh import chain, chord, group, signature
from mesh.workflow.describe import describe, task_ids
from mesh.workflow.plan import units, walk_ids


def A(*args: int) -> Any:
    return signature("t.add", args)


def leaves() -> list[Any]:
    return [A(1), chain(A(1), A(2)), group(A(1), A(2)), chord([A(1), A(2)], A(3)),
            chord([A(1)], chain(A(2), A(3)))]


def shapes() -> list[Any]:
    out: list[Any] = []
    for x, y in itertools.product(leaves(), repeat=2):
        out += [chain(A(0), x, y), chain(x, y), chain(A(0), chain(x, y)),
                chord([x, y], A(9)), chord([A(0)], chain(A(1), x)), chord([x], chord([y], A(9))),
                group(chain(A(0), x), chain(A(0), y)), group(x, y) | chord([y], A(9))]
    return out


def test_no_two_steps_of_a_workflow_share_an_id() -> None:
    for c in shapes():
        d = c.to_dict(compact=True)
        ids = [i for i, _, _ in walk_ids(units(d, "HID"))]
        assert len(ids) == len(set(ids)), c
        tree = [i for i, k in task_ids(describe(d, "HID", stubs=False)) if k != "chain"]
        assert len(tree) == len(set(tree)), c


def test_the_last_step_carries_the_workflows_id() -> None:
    for c in shapes():
        assert units(c.to_dict(compact=True), "HID")[-1]["options"]["task_id"] == "HID", c
