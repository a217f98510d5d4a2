"""``Task.replace(sig)`` (Celery's): a running task ends without a result of its own
and ``sig`` (a task, chain, group or chord) runs in its place; what ``sig`` comes to
becomes the task's result, under the task's id.

On a node the child raises :class:`~mesh.exceptions.Replace` with ``sig``'s map; the
tracer makes it an internal ``REPLACED`` outcome, and the node keeps the task held
and coordinates it as a group of one (mesh/node/wf_groups.py): the replacement is
started with an id derived from the task's, and the task finishes with its value
(or its failure), so a chain's later steps, a group's report and the task's
callbacks follow as for any end. In eager mode (``Task.apply``) the tracer runs
``sig.apply().get()`` and that is the task's value.

A task that replaces itself again and again nests: each replacement's tasks carry
``replaced_task_nesting`` (Celery's request field; a key of each task's map, a
header of its Submit), one more than the task they replace; past ``MAX_NESTING`` replace() raises :class:`ReplaceNestingError` (the
task fails with it) instead of running for ever.
"""
from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mesh.exceptions import ConfigError, Replace, ReplaceNestingError
from mesh.workflow.plan import kind, units

if TYPE_CHECKING:
    from mesh.task import Request, Task

MAX_NESTING = 50      # replacements of replacements, at most (eager mode nests
                      # Python calls: ~12 frames a level, under the recursion limit)
NESTING = "replaced_task_nesting"      # the header and the signature option
_eager_depth: contextvars.ContextVar[int] = contextvars.ContextVar("mesh_replace_depth",
                                                                   default=0)


def nesting(req: "Request") -> int:
    """How many replacements deep ``req``'s task runs (Celery's replaced_task_nesting)."""
    n = _eager_depth.get() if req.is_eager else req.headers.get(NESTING)
    return n if type(n) is int and n >= 0 else 0


def replacement(task: "Task", req: "Request", sig: Any) -> Replace:
    """The Replace that ends ``task``'s run (``req``) with ``sig`` in its place."""
    from mesh.canvas import Canvas, maybe_signature
    if req.called_directly:
        raise ConfigError(f"replace() needs a task run by a node or by apply(): "
                          f"{task.name} was called directly (as a plain function)")
    if isinstance(sig, Mapping):
        sig = maybe_signature(sig)
    if not isinstance(sig, Canvas):
        raise ConfigError(f"replace() takes a signature, chain, group or chord, got "
                          f"{type(sig).__name__}")
    n = nesting(req)
    if n >= MAX_NESTING:
        raise ReplaceNestingError(
            f"{task.name}[{req.id}] would replace itself more than {MAX_NESTING} times over "
            f"(replaced_task_nesting={n}): a replacement that replaces itself for ever?")
    d = sig.to_dict(compact=True)
    opts = dict(d.get("options") or {})
    opts.pop("task_id", None)       # its id is derived from the task's (a rerun: the same)
    d["options"] = opts
    d = _nested(d, n + 1)
    from mesh.workflow.submit import _check_arguments
    # a bad map, or arguments its first task does not take (Celery's typing, as when
    # it is sent), fail the task here, with the reason
    _check_arguments(task.app, units(d, "check")[0])
    e = Replace(f"Replaced by new task ({sig!r})", d)
    e.canvas = sig
    return e


def _nested(d: Mapping[str, Any], n: int, depth: int = 0) -> dict[str, Any]:
    """``d`` with ``replaced_task_nesting: n`` in the map of each of its tasks."""
    out = dict(d)
    kw = d.get("kwargs")
    k = kind(d)
    if depth < 64 and isinstance(kw, Mapping):
        if k in ("chain", "group") and isinstance(kw.get("tasks"), list):
            out["kwargs"] = {**kw, "tasks": [_nested(t, n, depth + 1) if isinstance(t, Mapping)
                                             else t for t in kw["tasks"]]}
        elif k == "chord":
            out["kwargs"] = {**kw, **{p: _nested(kw[p], n, depth + 1) for p in ("header", "body")
                                      if isinstance(kw.get(p), Mapping)}}
    if k is None:
        out[NESTING] = n
    return out


def run_eagerly(e: Replace, app: Any) -> Any:
    """Eager mode: the replacement runs here and now; its value (or its failure,
    raised) is the task's."""
    from mesh.canvas import Canvas
    assert isinstance(e.canvas, Canvas)
    token = _eager_depth.set(_eager_depth.get() + 1)
    try:
        return e.canvas.apply(app=app).get()
    finally:
        _eager_depth.reset(token)
