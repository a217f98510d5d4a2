"""Deterministic ids: a workflow step's id is derived from (its parent's id, position).

A chain step, a group member, a chord body, a callback: each gets
``derive(parent_id, key)``, a UUID-shaped id computed the same way by the client that
builds a workflow and by any node that drives it. So a node that drives a workflow a
second time (it took it over from a node that died) asks for the same ids again, and a
node that already holds or finished one of them answers instead of running it twice.
"""
from __future__ import annotations

from mesh.digest import blake2b

# keys under which a node keeps a workflow's own records (not tasks)
RECORD = "m"        # derive(workflow id, RECORD): the workflow's description (tree, members)
# A record is internal: no event, no count, no row in the dashboard's history
# (docs/workflows.md). Its journal row is marked by this owner in place of a client's
# routing id (no link is named so: a client's are its id and a number, a peer's its name).
RECORD_NAME = "mesh.record"
RECORD_OWNER = b"\xffmesh.record"
# names the node looks for in every task (here: a node loads the rest of
# mesh.workflow only where it drives a workflow: docs/performance.md, round 15)
GROUP = "mesh.group"            # the coordinator's task name (run by the node, never a child)
REPLACED_BY = "replaced_by"     # header of a task that called replace(sig): sig's map
                                # (its node coordinates it as a group of one)


def derive(parent: str, key: str | int) -> str:
    """The id of child ``key`` of ``parent``: 128 bits of BLAKE2b over both, shaped as a
    version-5-style UUID. Stable across processes, machines and Python versions."""
    d = bytearray(blake2b(f"{parent}\0{key}".encode(), digest_size=16).digest())
    d[6] = (d[6] & 0x0F) | 0x50     # version 5 (name-based)
    d[8] = (d[8] & 0x3F) | 0x80     # RFC 4122 variant
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def record_id(workflow_id: str) -> str:
    """Where a workflow's description is kept (``meshctl result ID --tree``,
    ``app.GroupResult(id)`` from another process)."""
    return derive(workflow_id, RECORD)
