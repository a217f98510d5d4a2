"""Sending a workflow: one message, its first unit, carrying the rest.

The first unit of a workflow (mesh/workflow/plan.py) is sent as an ordinary task (or,
when it is a group, as its coordinator ``mesh.group``, whose payload holds the
members), with the units after it in its headers. From the moment a node
acknowledges it, the mesh owns the whole workflow: the submitter may exit.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mesh.canvas import Canvas, Signature, chain, chord, group
from mesh.exceptions import ConfigError
from mesh.wire import codec
from mesh.workflow.describe import describe
from mesh.workflow.plan import GROUP, callbacks, group_members, kind, members, uid, units, wf_header
from mesh.workflow.results import handle

if TYPE_CHECKING:
    from mesh.app import Mesh

# the Submit fields a unit's options become (the rest are the workflow's business)
CALL = ("countdown", "eta", "expires", "priority", "time_limit", "soft_time_limit", "queue")


def partial(c: Canvas, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None) -> Canvas:
    """Arguments given to apply_async: before a task's own; to every header task of a
    group or chord; to the first task of a chain."""
    if not args and not kwargs:
        return c
    if isinstance(c, Signature):
        return c.clone(args, kwargs)
    if isinstance(c, group):
        return c._with(tasks=tuple(partial(t, args, kwargs) for t in c.tasks))
    if isinstance(c, chord):
        return c._with(header=partial(c.header, args, kwargs))
    if isinstance(c, chain):
        if not c.tasks:
            return c
        return c._with(tasks=(partial(c.tasks[0], args, kwargs), *c.tasks[1:]))
    raise ConfigError(f"cannot apply arguments to {c!r}")


def apply_async(app: "Mesh", c: Canvas, args: Iterable[Any] | None,
                kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]) -> Any:
    c = partial(c, args, kwargs)._merged(options)     # the caller's signature unchanged
    if isinstance(c, Signature) and not any(k in c.options for k in ("link", "link_error")):
        return _plain(app, c)               # a task: as Task.apply_async / send_task
    from mesh.app import new_task_id
    d = c.to_dict(compact=True)
    hid = (d.get("options") or {}).get("task_id") or new_task_id()
    us = units(d, hid)
    first, rest = us[0], us[1:]
    _check_arguments(app, first)
    if app.conf["task_always_eager"]:
        from mesh.workflow.eager import apply
        return apply(app, c)
    headers: dict[str, Any] = {"root_id": hid}
    wf = wf_header(rest, None, callbacks(first))
    desc = describe(d, hid, stubs=False)
    if kind(first) != "group" or len(us) > 1:      # a group keeps its own record
        wf["tree"] = codec.dumps(describe(d, hid, stubs=True))
    if wf:
        headers["wf"] = wf
    send(app, first, headers)
    return handle(app, desc)


def _check_arguments(app: "Mesh", u: Mapping[str, Any]) -> None:
    """Celery's ``typing`` for what is sent now, with the arguments it is sent with:
    a chain's first task, each task of a group (a chord's header). A bad call raises
    TypeError here, before anything is sent. (Later steps get a result first: not
    checked, as in Celery.)"""
    for m in (members(u) if kind(u) == "group" else [u]):
        if kind(m) is not None:
            continue                      # a workflow in a group: sent as its own unit
        name = m.get("task")
        task = app.tasks.get(name) if isinstance(name, str) else None
        if task is not None and task.app is app and task.typed:
            task.check_arguments(m.get("args"), m.get("kwargs"))


def _plain(app: "Mesh", s: Signature) -> Any:
    task = app.tasks.get(s.task)
    opts = {k: v for k, v in s.options.items() if k in CALL or k == "task_id"}
    if task is not None and task.app is app:
        return task.apply_async(s.args, dict(s.kwargs), **opts)
    return send(app, s.to_dict() | {"options": {**opts, "task_id": opts.get("task_id") or
                                                 _new_id()}}, {})


def _new_id() -> str:
    from mesh.app import new_task_id
    return new_task_id()


def send(app: "Mesh", u: Mapping[str, Any], headers: dict[str, Any]) -> Any:
    """Send one unit (the first of a workflow) with its workflow headers."""
    o = u.get("options") or {}
    opts = {k: o[k] for k in CALL if k in o}
    if kind(u) == "group":
        for k in ("countdown", "eta"):     # the members' business (inherited)
            opts.pop(k, None)
        return app.send_task(GROUP, args=[group_members(u)], kwargs={},
                             task_id=uid(u), headers=headers,
                             **{k: v for k, v in opts.items() if k == "priority"})
    name = u["task"]
    task = app.tasks.get(name)
    if task is not None:
        t = task.options
        opts.setdefault("priority", t.priority)
        for k in ("expires", "time_limit", "soft_time_limit"):
            if opts.get(k) is None and getattr(t, k) is not None:
                opts[k] = getattr(t, k)
        if not t.acks_late:
            headers = {**headers, "acks_late": False}
        if opts.get("queue") is None and t.queue is not None:
            opts["queue"] = t.queue
    return app.send_task(name, args=list(u.get("args") or ()), kwargs=dict(u.get("kwargs") or {}),
                         task_id=uid(u), headers=headers, **opts)


def callback_headers(headers: dict[str, Any], task_id: str, link: Any, link_error: Any) -> dict[str, Any]:
    """Headers for a task sent with ``link``/``link_error`` (callbacks the node that
    runs it starts when it ends)."""
    from mesh.canvas import maybe_signature

    def dicts(v: Any) -> list[dict[str, Any]]:
        items = v if isinstance(v, (list, tuple)) else [v]
        return [maybe_signature(x).to_dict() for x in items if x is not None]
    cb = {k: dicts(v) for k, v in (("link", link), ("link_error", link_error)) if v is not None}
    cb = {k: v for k, v in cb.items() if v}
    if not cb:
        return headers
    wf = dict(headers.get("wf") or {})
    old = codec.loads(wf["cb"]) if isinstance(wf.get("cb"), bytes) else {}
    for k, v in cb.items():
        old[k] = [*old.get(k, ()), *v]
    wf["cb"] = codec.dumps(old)
    return {**headers, "root_id": headers.get("root_id") or task_id, "wf": wf}
