"""A workflow's description: its shape and ids, without arguments.

Kept in the mesh as a result under ``record_id(workflow id)``: the node that takes a
workflow's first step stores the workflow's (``meshctl result ID --tree``), and each
group's coordinator stores its group's (``app.GroupResult(id)`` in any process). The
client builds the same description to make the handles ``apply_async`` returns.

    {"k": "task",  "id": ID, "name": NAME}
    {"k": "chain", "id": ID, "steps": [description, ...]}        # units, in order
    {"k": "group", "id": ID, "n": SIZE, "m": [description, ...]}  # members
    {"k": "group", "id": ID, "n": SIZE, "name": NAME}   # n plain tasks named NAME, with
                                                        # derived ids (member i: derive(ID, i))
    {"k": "group", "id": ID, "n": SIZE}                 # a stub: see the group's own record
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mesh.workflow.ids import derive
from mesh.workflow.plan import group_members, kind, member_id, uid, units


def describe(d: Mapping[str, Any], hid: str, stubs: bool = True) -> dict[str, Any]:
    """The description of ``d`` (a to_dict() map) whose handle id is ``hid``; with
    ``stubs``, nested groups are stubs (their coordinator keeps their record)."""
    us = units(d, hid)
    if len(us) == 1:
        return _unit(us[0], top=True, stubs=stubs)
    return {"k": "chain", "id": hid, "steps": [_unit(u, top=False, stubs=stubs) for u in us]}


def describe_group(g: Mapping[str, Any]) -> dict[str, Any]:
    """A group unit's own record (members described, their groups as stubs)."""
    return _unit(g, top=True, stubs=True)


def _unit(u: Mapping[str, Any], top: bool, stubs: bool) -> dict[str, Any]:
    i = uid(u)
    if kind(u) != "group":
        return {"k": "task", "id": i, "name": u.get("task")}
    ms = group_members(u)
    if stubs and not top:
        return {"k": "group", "id": i, "n": len(ms)}
    names = {m.get("task") for m in ms}
    plain = all(kind(m) is None and not (m.get("options") or {}).get("task_id") for m in ms)
    if ms and plain and len(names) == 1:
        return {"k": "group", "id": i, "n": len(ms), "name": names.pop()}
    return {"k": "group", "id": i, "n": len(ms),
            "m": [describe(m, member_id(i, j, m), stubs) for j, m in enumerate(ms)]}


def group_member_descs(desc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The members of a group description; None for a stub."""
    if "m" in desc:
        return list(desc["m"])
    if "name" in desc:
        gid, name = desc["id"], desc["name"]
        return [{"k": "task", "id": derive(gid, j), "name": name} for j in range(int(desc["n"]))]
    return None


def task_ids(desc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(id, kind) of everything in a description, depth first (stubs: the group only)."""
    k = desc.get("k")
    yield str(desc["id"]), str(k)
    if k == "chain":
        for s in desc.get("steps", ()):
            yield from task_ids(s)
    elif k == "group":
        for m in group_member_descs(desc) or ():
            yield from task_ids(m)
