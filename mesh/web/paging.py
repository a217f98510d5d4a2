"""The mesh's task list, one page at a time: every node's part merged, then cut.

Each node answers ``web.tasks`` with up to ``limit`` held tasks (first page only) and
up to ``limit`` finished ones (newest first, with their journal rowids). A page of
the mesh is at most ``limit`` tasks in all, as Flower's ``limit``: held ones first
(newest received first), then finished ones (newest first). The cursor says where
each node's journal goes on (the rowid of the first of its rows left out, or where
its own page stopped), and, while held tasks were left out, how many were shown
(the next page is then a first page again, past those).
"""
from __future__ import annotations

import base64
import json
from typing import Any


def cursor_in(text: str | None) -> dict[str, Any] | None:
    """The cursor a page gave: ``{"at": {node: rowid | None}, "held": int}``;
    ValueError when it is not one."""
    if not text:
        return None
    c = json.loads(base64.urlsafe_b64decode(text.encode() + b"==="))
    at = c.get("at") if isinstance(c, dict) else None
    held = c.get("held") if isinstance(c, dict) else None
    if (type(held) is int and held >= 0 and isinstance(at, dict)
            and all(isinstance(k, str) and (v is None or type(v) is int) for k, v in at.items())):
        return {"at": at, "held": held}
    raise ValueError("not a cursor")


def cursor_out(at: dict[str, int | None], held: int) -> str | None:
    if not held and not any(v is not None for v in at.values()):
        return None
    text = json.dumps({"at": at, "held": held}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def merge(answers: dict[str, Any], limit: int, held_shown: int = 0) -> dict[str, Any]:
    """One page of at most ``limit`` tasks from the nodes' ``web.tasks`` answers,
    ``held_shown`` held tasks having been shown on the pages before; a task run
    twice (failover) is listed once. Returns ``{"tasks", "cursor", "errors"}``."""
    held: list[dict[str, Any]] = []
    done: list[tuple[float, int, str, dict[str, Any]]] = []
    errors: dict[str, str] = {}
    at: dict[str, int | None] = {}
    for name, a in answers.items():
        if not isinstance(a, dict) or "error" in a:
            errors[name] = str(a.get("error") if isinstance(a, dict) else a)
            continue
        held += a.get("held") or []
        rows = a.get("tasks") or []
        rowids = a.get("rowids") or []
        for i, t in enumerate(rows):
            rowid = rowids[i] if i < len(rowids) and type(rowids[i]) is int else 0
            done.append((t.get("timestamp") or 0.0, rowid, name, t))
        at[name] = a.get("cursor")
    held.sort(key=lambda t: t.get("received") or 0.0, reverse=True)
    held = held[held_shown:]
    done.sort(key=lambda d: (d[0], d[1]), reverse=True)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    shown_held = 0
    for t in held:
        if len(out) >= limit:
            break
        shown_held += 1
        if t["uuid"] not in seen:
            seen.add(t["uuid"])
            out.append(t)
    if shown_held < len(held):               # held tasks left: the next page starts again
        return {"tasks": out, "cursor": cursor_out({}, held_shown + shown_held),
                "errors": errors}
    left_out: dict[str, int] = {}            # node -> its highest rowid not shown
    for _ts, rowid, name, t in done:
        if t["uuid"] in seen:                # (a task run twice: the first is listed)
            continue
        if len(out) >= limit:
            left_out[name] = max(left_out.get(name, 0), rowid)
            continue
        seen.add(t["uuid"])
        out.append(t)
    for name, rowid in left_out.items():
        at[name] = rowid                      # the next page reads from it (inclusive)
    return {"tasks": out, "cursor": cursor_out(at, 0), "errors": errors}
