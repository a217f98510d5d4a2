"""GroupResult, and the handles a workflow's ``apply_async`` returns.

A group is run by a coordinator: a task named ``mesh.group`` with the group's id,
which a node runs itself (mesh/node/workflows.py). Its result is the list of the
members' results, in order, once every member succeeded; or the first member's
failure. So ``GroupResult.get()`` waits for one result, whatever the group's size,
and works the same in any process (``app.GroupResult(id)``). The members' ids come
from the group's description (mesh/workflow/describe.py): built here when this
process sent the group, else read from the mesh.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.exceptions import MeshError, TimeoutError
from mesh.result import AsyncResult
from mesh.workflow.describe import group_member_descs
from mesh.workflow.ids import record_id

if TYPE_CHECKING:
    from mesh.app import Mesh

RECORD_WAIT = 10.0     # s GroupResult.results waits for the group's record (the group
                       # may not have reached its coordinator yet)

Handle = Any           # AsyncResult | GroupResult
# how far a state is along, to merge what several nodes say of one id
STATE_ORDER = {states.UNKNOWN: 0, states.PENDING: 1, states.RECEIVED: 2, states.RETRY: 3,
               states.STARTED: 4, states.SUCCESS: 5, states.FAILURE: 5, states.REVOKED: 5}


class GroupResult:
    """The result of a group: ``get()`` (the list, in order), ``ready()``,
    ``successful()``, ``failed()``, ``completed_count()``, ``results`` (each member's
    handle), ``join()``, ``revoke()``. ``app.GroupResult(id)`` in any process."""

    def __init__(self, id: str, results: list[Handle] | None = None, app: "Mesh | None" = None,
                 parent: Handle = None, desc: Mapping[str, Any] | None = None):
        if app is None and results is None and desc is None:   # GroupResult(id): the
            from mesh.shared import current_app  # current app, as Celery
            app = current_app()
        self.id = id
        self.app = app
        self.parent = parent
        self._results = list(results) if results is not None else None
        self._local = results is not None and desc is None    # made here from a list
        self._desc = desc          # the group's description: members made when asked for
        self._coord = AsyncResult(id, app)

    def __repr__(self) -> str:
        n = len(self._results) if self._results is not None else \
            self._desc["n"] if self._desc is not None else "?"
        return f"<GroupResult {self.id} [{n} results]>"

    def __str__(self) -> str:
        """The group's id, as Celery's."""
        return str(self.id)

    def __eq__(self, other: object) -> bool:
        """Equal to a GroupResult of the same id, or to the id itself, as in Celery.
        (Celery also compares the members: a group's id names its members here, read
        from its record, so two handles of one id hold the same; compared only when both
        already know them, so ``==`` asks no node.)"""
        if isinstance(other, GroupResult):
            if other.id != self.id:
                return False
            if self._results is not None and other._results is not None:
                return self._results == other._results
            return True
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    # -- members ----------------------------------------------------------------------
    @property
    def results(self) -> list[Handle]:
        """The members' handles (AsyncResult, or GroupResult for a nested group)."""
        if self._results is None:
            self._results = self._restore()
        return self._results

    children = results

    def _restore(self) -> list[Handle]:
        if self._desc is not None:
            members = group_member_descs(self._desc)
            if members is not None:
                return [handle(self.app, m) for m in members]
        if self.app is None:
            raise MeshError(f"group {self.id}: no app to read its members with")
        try:
            desc = AsyncResult(record_id(self.id), self.app).get(timeout=RECORD_WAIT)
        except TimeoutError:
            raise MeshError(f"group {self.id} is not known to the mesh (its record did not "
                            f"appear within {RECORD_WAIT:g} s)") from None
        members = group_member_descs(desc)
        if members is None:
            raise MeshError(f"group {self.id}: its record has no members")
        return [handle(self.app, m) for m in members]

    def __iter__(self) -> Iterator[Handle]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Handle:
        return self.results[i]

    # -- state ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The coordinator's state: SUCCESS once every member succeeded, FAILURE (or
        REVOKED) once one did not, else a waiting state. (Made here from a list of
        results: no coordinator, the members say.)"""
        if self._local:
            rs = ResultSet(self.results, self.app)
            return states.FAILURE if rs.failed() else states.SUCCESS if rs.successful() \
                else states.PENDING
        return self._coord.state

    def ready(self) -> bool:
        """True when every member has finished (as Celery: all ready)."""
        if self._local:
            return ResultSet(self.results, self.app).ready()
        st = self._coord.state
        if st == states.SUCCESS:
            return True
        if st in states.READY_STATES:
            return all(s in states.READY_STATES for s in self._member_states())
        return False

    def waiting(self) -> bool:
        return not self.ready()

    def successful(self) -> bool:
        if self._local:
            return ResultSet(self.results, self.app).successful()
        return self._coord.state == states.SUCCESS

    def failed(self) -> bool:
        if self._local:
            return ResultSet(self.results, self.app).failed()
        return self._coord.state in (states.FAILURE, states.REVOKED)

    def completed_count(self) -> int:
        """How many members succeeded."""
        if self._local:
            return ResultSet(self.results, self.app).completed_count()
        if self._coord.state == states.SUCCESS:
            return len(self.results)
        return sum(1 for s in self._member_states() if s == states.SUCCESS)

    def _member_states(self) -> list[str]:
        assert self.app is not None
        ids = [r.id for r in self.results]
        known = states_of(self.app, ids)
        return [known.get(i, states.UNKNOWN) for i in ids]

    # -- waiting ----------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, callback: Callable[[str, Any], Any] | None = None,
            no_ack: bool = True, on_message: Callable[[dict[str, Any]], Any] | None = None,
            disable_sync_subtasks: bool = True,
            on_interval: Callable[[], Any] | None = None,
            follow_parents: bool = True) -> list[Any]:
        """The members' results, in order. A failed member: its exception is raised
        (``propagate``), or, with ``propagate=False``, each member's result or
        exception in its place. ``callback``, ``on_message``, ``on_interval``: as
        :meth:`ResultSet.get` (the members waited for one by one, as in Celery)."""
        if callback is not None or on_message is not None or on_interval is not None \
                or self._local:   # (made here from a list of results: no coordinator)
            return ResultSet(self.results, app=self.app).get(
                timeout, propagate, interval, callback, on_message=on_message,
                on_interval=on_interval)
        try:
            value = self._coord.get(timeout=timeout, propagate=True)
        except TimeoutError:
            raise
        except Exception:
            if propagate:
                raise
            return [r.get(timeout=timeout, propagate=False) for r in self.results]
        return list(value) if value is not None else []

    join = get
    join_native = get

    def __await__(self) -> Any:
        if self._local:
            return self._members().__await__()
        return self._coord.__await__()

    async def _members(self) -> list[Any]:
        return [await r for r in self.results]

    def revoke(self, terminate: bool = False, signal: str = "SIGKILL") -> Any:
        """Revoke the group and every member."""
        if self.app is None:
            raise MeshError("this GroupResult has no app to revoke through")
        ids = [self.id] + [r.id for r in self.results]
        return self.app.control.revoke(ids, terminate=terminate, signal=signal)

    def as_tuple(self) -> tuple[str, list[str]]:
        return self.id, [r.id for r in self.results]

    # -- Celery's save/restore: the mesh keeps a group's record from the moment it is sent
    def save(self) -> "GroupResult":
        """Celery's ``save()``, so that ``GroupResult.restore(id)`` finds the group
        later: a group sent to the mesh is kept there already (its record, for
        ``result_expires``), so this only checks that it was sent; a GroupResult made
        here from a list of results was not, and raises MeshError (keep its ids
        yourself, or use a ResultSet)."""
        if self._local:
            raise MeshError(f"GroupResult {self.id} was made here from a list of results, "
                            "not sent as a group: the mesh has no record of it to restore "
                            "(keep the members' ids, or send a group)")
        return self

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: "Mesh | None" = None) -> "GroupResult | None":
        """Celery's ``GroupResult.restore(id)``: the group sent with this id, read from
        the mesh (``app``, else the current app); None when no node knows it (after
        waiting up to RECORD_WAIT for its record, which a group just sent may not
        have yet)."""
        if app is None:
            from mesh.shared import current_app
            app = current_app()
        g = cls(id, None, app)
        try:
            g.results  # noqa: B018  (read its record now: None when there is none)
        except MeshError:
            return None
        return g


class ResultSet:
    """Celery's ResultSet: results of tasks sent one by one, waited for together.
    ``get()``/``join()`` return their values in order (``timeout`` for the whole
    wait), ``ready()``, ``successful()``, ``failed()``, ``waiting()``,
    ``completed_count()``, ``revoke()``; ``add``, ``remove``, ``discard``, ``update``,
    ``clear`` change the set."""

    def __init__(self, results: list[Handle] | None = None, app: "Mesh | None" = None, **_: Any):
        self.results: list[Handle] = list(results or ())
        self.app = app

    def __repr__(self) -> str:
        return f"<ResultSet [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        """Equal to a ResultSet of the same results in the same order, as in Celery."""
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None     # type: ignore[assignment]   # (mutable, as Celery's)

    def add(self, result: Handle) -> None:
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Handle | str) -> None:
        rid = result if isinstance(result, str) else result.id
        for i, r in enumerate(self.results):
            if r.id == rid:
                del self.results[i]
                return
        raise KeyError(rid)                  # as Celery's

    def discard(self, result: Handle | str) -> None:
        try:
            self.remove(result)
        except KeyError:
            pass

    def update(self, results: list[Handle]) -> None:
        self.results.extend(r for r in results if r not in self.results)

    def clear(self) -> None:
        self.results.clear()

    def __iter__(self) -> Iterator[Handle]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Handle:
        return self.results[i]

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, callback: Callable[[str, Any], Any] | None = None,
            no_ack: bool = True, on_message: Callable[[dict[str, Any]], Any] | None = None,
            disable_sync_subtasks: bool = True,
            on_interval: Callable[[], Any] | None = None) -> list[Any]:
        """Each result's value, in order (Celery's ``join``): the first failure is
        raised (``propagate``), else put in its place; ``timeout`` bounds the whole
        wait (TimeoutError); ``callback(task_id, value)`` is called for each instead
        of collecting the values, as in Celery. ``on_message`` is told of each state
        each task reaches (Celery's message: ``task_id``, ``status``, ``result``, ...),
        ``on_interval`` called every ``interval`` s of the wait (AsyncResult.get's).
        (Celery's signature: an unknown keyword is a TypeError, never ignored.)"""
        deadline = time.monotonic() + timeout if timeout is not None else None
        out: list[Any] = []
        for r in self.results:
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"ResultSet: not every result arrived within {timeout} s "
                                       f"({len(out)} of {len(self.results)})")
            if on_message is not None or on_interval is not None:
                value = r.get(timeout=left, propagate=propagate, interval=interval,
                              on_message=on_message, on_interval=on_interval)
            else:
                value = r.get(timeout=left, propagate=propagate)
            if callback is not None:
                callback(r.id, value)
            else:
                out.append(value)
        return out

    join = get
    join_native = get

    def revoke(self, terminate: bool = False, signal: str = "SIGKILL") -> Any:
        if not self.results:
            return None
        app = self.app or next((r.app for r in self.results if r.app is not None), None)
        if app is None:
            raise MeshError("this ResultSet has no app to revoke through")
        return app.control.revoke([r.id for r in self.results], terminate=terminate, signal=signal)


def states_of(app: "Mesh", ids: list[str]) -> dict[str, str]:
    """The most advanced state any node knows for each id (one question per node)."""
    out: dict[str, str] = {}
    if not ids:
        return out
    replies = app.control.broadcast("wf.states", arguments={"ids": ids}, reply=True)
    for reply in replies.values():
        if not isinstance(reply, Mapping) or "states" not in reply:
            continue
        for tid, st in reply["states"].items():
            if STATE_ORDER.get(st, 0) > STATE_ORDER.get(out.get(tid, ""), -1):
                out[tid] = st
    return out


def handle(app: "Mesh | None", desc: Mapping[str, Any], parent: Handle = None) -> Handle:
    """The handle of a described workflow: an AsyncResult (a task; a chain: its last
    step, with ``parent`` links back to the first) or a GroupResult."""
    k = desc.get("k")
    if k == "chain":
        h: Handle = parent
        for step in desc.get("steps", ()):
            h = handle(app, step, h)
        return h
    if k == "group":
        return GroupResult(str(desc["id"]), None, app, parent, desc if "n" in desc else None)
    r = AsyncResult(str(desc["id"]), app)
    r.parent = parent
    if parent is not None and isinstance(parent, AsyncResult):
        parent.children = [*(parent._children or ()), r]      # (no lookup: just sent)
    return r
