"""An errback's arguments, made in the child that runs it (Celery 5's rule).

The node that saw a step fail starts each ``link_error`` signature as a task whose
first three arguments are plain data: the failed task's request (a map), its
exception (the RESULT ``exc`` map) and its traceback (text), with the header
``errback``. Here they become Celery's: a task whose function takes three
positional arguments or more (``def on_error(request, exc, traceback)``) gets a
``Request``, the exception rebuilt (its own type when importable, else TaskError)
and the text; a task that takes fewer gets the failed task's id only (Celery's old
style, ``def on_error(task_id)``). The signature's own arguments follow.
"""
from __future__ import annotations

import inspect
from typing import Any

from mesh.result import rebuild_exception
from mesh.task import Request


def takes_request(fun: Any, bound: bool) -> bool:
    """True if ``fun`` takes (request, exc, traceback): three positional arguments
    (after ``self`` when bound) or *args."""
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return True
    if bound and params:
        params = params[1:]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def errback_args(task: Any, args: list[Any]) -> list[Any]:
    if len(args) < 3 or not isinstance(args[0], dict):
        return args
    req, exc, tb, rest = args[0], args[1], args[2], args[3:]
    if not takes_request(task.fun, bool(getattr(task.options, "bind", False))):
        return [req.get("id"), *rest]
    request = Request(id=req.get("id"), task=str(req.get("task") or ""),
                      args=req.get("args") or (), kwargs=req.get("kwargs") or {},
                      retries=int(req.get("retries") or 0), hostname=req.get("hostname"),
                      headers={"root_id": req.get("root_id"), "parent_id": req.get("parent_id"),
                               "group": req.get("group")})
    error = rebuild_exception(exc if isinstance(exc, dict) else {}, tb if isinstance(tb, str) else None)
    return [request, error, tb, *rest]
