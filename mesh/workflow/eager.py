"""Workflows in eager mode (``task_always_eager``, or ``sig.apply()``): run here, now.

The same plan as on the mesh (mesh/workflow/plan.py: the same units, ids, callbacks
and failure rules), each task run by ``Task.apply`` (mesh/eager.py): a chain passes
each value on, a group runs its members in order, a failed header gives the body's
id a ChordError without running it, errbacks get ``(request, exc, traceback)``.
Every task must be registered in this process (there is no node to run it).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.eager import EagerResult
from mesh.exceptions import ChordError, NotRegistered
from mesh.trace import Outcome
from mesh.workflow.ids import derive
from mesh.workflow.plan import (
    GROUP,
    callbacks,
    group_members,
    kind,
    member_id,
    uid,
    units,
    walk_ids,
)

if TYPE_CHECKING:
    from mesh.app import Mesh

_NO = object()      # no value from a parent


class EagerGroupResult:
    """A group run here: GroupResult's interface over EagerResults."""

    def __init__(self, id: str, results: list[Any], parent: Any = None,
                 failure: BaseException | None = None):
        self.id = id
        self.results = results
        self.children = results
        self.parent = parent
        self._failure = failure

    def __repr__(self) -> str:
        return f"<EagerGroupResult {self.id} [{len(self.results)} results]>"

    def __str__(self) -> str:
        return str(self.id)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Any:
        return self.results[i]

    @property
    def state(self) -> str:
        return states.SUCCESS if self._failure is None else states.FAILURE

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self._failure is None

    def failed(self) -> bool:
        return self._failure is not None

    def waiting(self) -> bool:
        return False

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def get(self, timeout: float | None = None, propagate: bool = True, **kw: Any) -> list[Any]:
        if self._failure is not None and propagate:
            raise self._failure
        return [r.get(propagate=propagate) for r in self.results]

    join = get


class _Run:
    def __init__(self, app: "Mesh"):
        self.app = app

    def task(self, u: Mapping[str, Any], value: Any, headers: dict[str, Any]) -> EagerResult:
        name = str(u["task"])
        t = self.app.tasks.get(name)
        if t is None:
            raise NotRegistered(f"eager mode runs workflows here, and task {name!r} is not "
                                "registered in this process")
        args = list(u.get("args") or ())
        if value is not _NO and not u.get("immutable"):
            args = [value, *args]
        return t.apply(args, dict(u.get("kwargs") or {}), task_id=uid(u), headers=headers,
                       throw=False)

    def units(self, us: Sequence[Mapping[str, Any]], value: Any, parent: Any, root: str,
              report: bool = False) -> tuple[Any, BaseException | None]:
        """Run ``us`` in order; the handle of the last, and the failure if one failed."""
        handle: Any = parent
        for i, u in enumerate(us):
            pid = handle.id if handle is not None else None
            headers = {"root_id": root, "parent_id": pid}
            cb = callbacks(u)
            if kind(u) == "group":
                handle, failure, member = self.group(u, value, handle, root)
                if failure is not None:
                    err = ChordError(f"Dependency {member} raised {failure!r}")
                    self._errbacks(cb, uid(u), {"id": uid(u), "task": GROUP}, failure, None, root)
                    if i + 1 < len(us):
                        body = us[i + 1]
                        self._errbacks(callbacks(body), uid(body),
                                       {"id": uid(body), "task": body.get("task")}, err, None, root)
                    return self._fail_rest(us[i + 1:], handle, err), failure
                value = handle.get(propagate=False)
            else:
                r = self.task(u, value, headers)
                r.parent = handle
                handle = r
                if r.state != states.SUCCESS:
                    exc = r.result if isinstance(r.result, BaseException) else None
                    if r.state != states.IGNORED:
                        req = {"id": r.id, "task": r.name, "args": r.args, "kwargs": r.kwargs,
                               "root_id": root, "parent_id": pid}
                        self._errbacks(cb, r.id, req, exc, r.traceback, root)
                    return self._fail_rest(us[i + 1:], handle, exc), exc or ChordError(r.state)
                value = r.get(propagate=False)
            for j, link in enumerate(cb.get("link", ())):
                self.workflow(link, derive(uid(u), f"link{j}"), value, handle, root)
        return handle, None

    def group(self, u: Mapping[str, Any], value: Any, parent: Any, root: str
              ) -> tuple[EagerGroupResult, BaseException | None, str]:
        gid = uid(u)
        results: list[Any] = []
        failure: BaseException | None = None
        failed = ""
        for i, m in enumerate(group_members(u)):
            mid = member_id(gid, i, m)
            h, f = self.units(units(m, mid), value, None, root)
            results.append(h)
            if f is not None and failure is None:
                failure, failed = f, mid
        return EagerGroupResult(gid, results, parent, failure), failure, failed

    def workflow(self, d: Mapping[str, Any], hid: str, value: Any, parent: Any, root: str) -> Any:
        return self.units(units(d, hid), value, parent, root)[0]

    def _errbacks(self, cb: dict[str, list[Any]], tid: str, request: dict[str, Any],
                  exc: BaseException | None, tb: str | None, root: str) -> None:
        from mesh.node.child import exc_info_of
        ebs = [*cb.get("link_error", ()), *cb.get("chain_link_error", ())]
        for j, eb in enumerate(ebs):
            us = units(eb, derive(tid, f"err{j}"))
            first = dict(us[0])
            if kind(first) is None and not first.get("immutable"):
                info = exc_info_of(exc) if exc is not None else {}
                first["args"] = [request, info, tb, *(first.get("args") or ())]
                t = self.app.tasks.get(str(first["task"]))
                if t is None:
                    raise NotRegistered(f"errback {first['task']!r} is not registered here")
                t.apply(first["args"], dict(first.get("kwargs") or {}), task_id=uid(first),
                        headers={"root_id": root, "parent_id": tid, "errback": True}, throw=False)
                self.units(us[1:], _NO, None, root)
            else:
                self.units(us, _NO, None, root)

    def _fail_rest(self, rest: Sequence[Mapping[str, Any]], handle: Any,
                   exc: BaseException | None) -> Any:
        """The units after a failure: EagerResults that failed without running."""
        for fid, name, _ in walk_ids(rest):
            r = EagerResult(fid, name)
            e = exc if exc is not None else ChordError("a previous step did not succeed")
            r._finish(Outcome(states.FAILURE, None, exc=e), [], {}, 0)
            r.parent = handle
            if fid in {uid(u) for u in rest}:
                handle = r
        return handle


def apply(app: "Mesh", c: Any) -> Any:
    """Run workflow ``c`` here and now; its handle (EagerResult, EagerGroupResult)."""
    from mesh.app import new_task_id
    from mesh.workflow.builtins import register_builtins
    register_builtins(app)          # task.map/starmap/chunks run here too
    d = c.to_dict(compact=True)
    hid = (d.get("options") or {}).get("task_id") or new_task_id()
    return _Run(app).workflow(d, hid, _NO, None, hid)


__all__ = ["EagerGroupResult", "apply"]
