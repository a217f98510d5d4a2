"""``meshctl result ID --tree``: a workflow's steps and the state of each.

The workflow's description is kept in the mesh under ``record_id(ID)`` (by the node
that took its first step; each group's coordinator keeps its group's); the states
come from every node at once (the ``wf.states`` command). A group of many members
is summed up by state rather than listed.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import click

from mesh import states
from mesh.exceptions import MeshError, TimeoutError
from mesh.security.text import json_text
from mesh.workflow.describe import group_member_descs, task_ids
from mesh.workflow.ids import record_id
from mesh.workflow.results import states_of

LIST_AT_MOST = 20        # members of a group listed one by one; more are summed up
RECORD_WAIT = 5.0
MAX_GROUPS = 1_000       # nested group records read at most


def tree(app: Any, task_id: str, as_json: bool) -> int:
    desc = _record(app, task_id)
    if desc is None:
        desc = {"k": "task", "id": task_id, "name": None}
    budget = [MAX_GROUPS]
    desc = _resolve(app, desc, budget)
    ids = [i for i, _ in task_ids(desc)]
    st = states_of(app, ids)
    annotated = _annotate(desc, st)
    if as_json:
        click.echo(json_text(annotated, indent=2, default=str))
    else:
        for line in _render(annotated, 0):
            click.echo(line)
    return 0 if annotated["state"] != states.UNKNOWN else 1


def _record(app: Any, wid: str) -> dict[str, Any] | None:
    r = app.AsyncResult(record_id(wid))
    if r.state != states.SUCCESS:
        return None
    try:
        value = r.get(timeout=RECORD_WAIT)
    except (MeshError, TimeoutError):
        return None
    return value if isinstance(value, dict) else None


def _resolve(app: Any, desc: dict[str, Any], budget: list[int]) -> dict[str, Any]:
    """Groups kept as stubs are read from their own records (while budget lasts)."""
    k = desc.get("k")
    if k == "chain":
        return {**desc, "steps": [_resolve(app, s, budget) for s in desc.get("steps", ())]}
    if k == "group":
        if group_member_descs(desc) is None and budget[0] > 0:
            budget[0] -= 1
            rec = _record(app, str(desc["id"]))
            if rec is not None:
                desc = rec
        members = group_member_descs(desc)
        if members is not None and "m" in desc:
            return {**desc, "m": [_resolve(app, m, budget) for m in members]}
    return desc


def _annotate(desc: dict[str, Any], st: dict[str, str]) -> dict[str, Any]:
    k = desc.get("k")
    out = dict(desc)
    if k == "chain":
        out["steps"] = [_annotate(s, st) for s in desc.get("steps", ())]
        out["state"] = out["steps"][-1]["state"] if out["steps"] else states.UNKNOWN
        return out
    out["state"] = st.get(str(desc["id"]), states.UNKNOWN)
    if k == "group":
        members = group_member_descs(desc)
        if members is not None:
            annotated = [_annotate(m, st) for m in members]
            out["counts"] = dict(Counter(m["state"] for m in annotated))
            if "m" in desc or len(annotated) <= LIST_AT_MOST:
                out["m"] = annotated
            out.pop("name", None) if "m" in out else None
    return out


def _render(d: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    k = d.get("k")
    if k == "chain":
        lines = [f"{pad}chain {d['id']} {d['state']}"]
        for s in d.get("steps", ()):
            lines += _render(s, depth + 1)
        return lines
    if k == "group":
        counts = ", ".join(f"{s} {n}" for s, n in sorted(d.get("counts", {}).items()))
        name = f" x {d['name']}" if d.get("name") else ""
        lines = [f"{pad}group {d['id']} ({d.get('n', '?')} members{name}) {d['state']}"
                 + (f": {counts}" if counts else "")]
        for m in d.get("m", ()):
            lines += _render(m, depth + 1)
        return lines
    name = f" {d['name']}" if d.get("name") else ""
    return [f"{pad}task {d['id']}{name} {d['state']}"]
