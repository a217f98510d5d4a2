"""Eager mode: ``Task.apply()`` and the setting ``task_always_eager``, for test suites.

The task runs here, now, in the calling thread, through the same tracer as on a node
(mesh/trace.py): handlers run, ``update_state`` moves the EagerResult's state,
``retry()`` runs the task again at once (countdown and eta are not waited for, as in
Celery) until it succeeds or its retries are used up, and arguments and the result go
through the codec, so a test in eager mode fails on an argument that the mesh could not
send (a model instance, a set) instead of hiding it, as Celery's eager mode does.

With ``task_always_eager``, ``delay``/``apply_async``/``send_task`` (for a task this
process has registered) return an EagerResult; ``task_eager_propagates`` makes a
failure raise at the call, as ``apply(throw=True)`` does.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import socket
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.exceptions import MeshError, ResultIgnored
from mesh.security.text import safe_logger
from mesh.task import Request, Task
from mesh.trace import Outcome, execute, execute_async, is_async_task
from mesh.wire import codec

if TYPE_CHECKING:
    from mesh.einfo import ExceptionInfo

log = safe_logger("mesh.eager")

def apply(task: Task, args: Iterable[Any] | None, kwargs: dict[str, Any] | None, *,
          task_id: str | None, retries: int, throw: bool | None,
          headers: dict[str, Any] | None, shadow: str | None,
          ignore_result: bool | None) -> "EagerResult":
    from mesh.app import new_task_id
    tid = task_id or new_task_id()
    hdr = dict(headers or {})
    if shadow is not None:
        hdr["shadow"] = shadow
    if ignore_result is not None:
        hdr["ignore_result"] = ignore_result
    result = EagerResult(tid, task.name)
    if throw is None:
        throw = bool(task.app.conf["task_eager_propagates"])
    try:            # as on the mesh: what cannot be encoded cannot be sent
        call_args, call_kwargs = codec.load_call(codec.dump_call(args, kwargs))
        if hdr.get("errback") is True:      # a workflow's link_error (mesh/workflow/eager.py)
            from mesh.workflow.errback import errback_args
            call_args = errback_args(task, call_args)
    except Exception as e:
        if throw:
            raise
        result._finish(Outcome(states.FAILURE, e, exc=e), [], {}, retries)
        return result
    result.args, result.kwargs = call_args, call_kwargs
    while True:
        req = Request(id=tid, task=task.name, args=call_args, kwargs=call_kwargs, retries=retries,
                      hostname=f"eager@{socket.gethostname()}", headers=hdr,
                      called_directly=False, is_eager=True)
        req.state_sink = result._set_state
        outcome = _execute_async(task, req) if is_async_task(task) else execute(task, req)
        if outcome.state != states.RETRY:
            break
        result._set_state(states.RETRY, None)
        retries += 1                        # eager retries run at once, as in Celery
        if outcome.call is not None:
            call_args, call_kwargs = codec.load_call(codec.dump_call(*outcome.call))
    result._finish(outcome, call_args, call_kwargs, retries)
    if task.app.conf["task_store_eager_result"]:
        keep(task.app, result)
    if throw and outcome.state == states.FAILURE and outcome.exc is not None:
        raise outcome.exc
    return result


EAGER_KEPT_MAX = 10_000     # eager results one app keeps with task_store_eager_result


def keep(app: Any, result: "EagerResult") -> None:
    """``task_store_eager_result``: keep an eager run's result in this process, as the
    nodes keep a task's, so that ``AsyncResult(id)`` here (a view that shows a task's
    state by id, in a test run in eager mode) finds it instead of asking the nodes
    (Celery stores it in its result backend). The newest ``EAGER_KEPT_MAX`` are kept."""
    from mesh.node.child import exc_info_of
    from mesh.slot import Slot
    from mesh.wire.protocol import Result, Submit, encode
    o = result._outcome
    if o is None:
        return
    exc = exc_info_of(o.exc) if o.state == states.FAILURE and o.exc is not None else None
    slot = Slot(result.id, None, name=result.name)
    slot.submit = encode(Submit(task_id=result.id, name=result.name, retries=result.retries,
                                payload=codec.dump_call(result.args or [], result.kwargs or {})))
    slot.complete(Result(task_id=result.id, state=o.state, result=o.encoded, exc=exc,
                         traceback=o.traceback, node=result.worker, retries=result.retries,
                         date_done=time.time()))
    kept = app._eager_kept
    kept.pop(result.id, None)
    kept[result.id] = slot
    while len(kept) > EAGER_KEPT_MAX:
        del kept[next(iter(kept))]


def _execute_async(task: Task, req: Request) -> Outcome:
    """An async def task, run to the end here: on a new event loop, or on a thread of
    its own when this thread already runs one (apply() called from async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(execute_async(task, req))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mesh-eager") as ex:
        return ex.submit(asyncio.run, execute_async(task, req)).result()


class EagerResult:
    """The result of a task run here (``Task.apply``); AsyncResult's interface."""

    def __init__(self, task_id: str, name: str):
        self.id = task_id
        self.task_id = task_id
        self.name = name
        self.args: list[Any] | None = None
        self.kwargs: dict[str, Any] | None = None
        self.retries = 0
        self.worker = f"eager@{socket.gethostname()}"
        self.date_done: datetime.datetime | None = None
        self._state = states.PENDING
        self._meta: Any = None
        self._outcome: Outcome | None = None
        self._value: Any = None
        self.parent: Any = None          # the previous step of a workflow run eagerly
        self.children: list[Any] | None = None

    def __repr__(self) -> str:
        return f"<EagerResult {self.id} {self._state}>"

    def __str__(self) -> str:
        return str(self.id)

    def __eq__(self, other: object) -> bool:
        """Equal to a result of the same id, or to the id itself, as in Celery."""
        if isinstance(other, str):
            return other == self.id
        other_id = getattr(other, "id", None)
        if isinstance(other_id, str) and hasattr(other, "get"):
            return other_id == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def _set_state(self, state: str, meta: bytes | None) -> None:
        self._state = state
        self._meta = codec.loads(meta) if meta is not None else None

    def _finish(self, o: Outcome, args: list[Any], kwargs: dict[str, Any], retries: int) -> None:
        self._outcome, self._state, self.retries = o, o.state, retries
        self.args, self.kwargs = args, kwargs
        self.date_done = datetime.datetime.fromtimestamp(time.time(), datetime.UTC)
        if o.state == states.SUCCESS and o.encoded is not None:
            self._value = codec.loads(o.encoded)     # what a caller of the mesh would get

    # -- AsyncResult's interface ---------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    status = state

    def ready(self) -> bool:
        return self._state in states.READY_STATES

    def successful(self) -> bool:
        return self._state == states.SUCCESS

    def failed(self) -> bool:
        return self._state == states.FAILURE

    @property
    def result(self) -> Any:
        o = self._outcome
        if o is None:
            return self._meta
        return self._value if o.state == states.SUCCESS else o.exc

    info = result

    @property
    def traceback(self) -> str | None:
        o = self._outcome
        return o.traceback if o is not None else None

    @property
    def einfo(self) -> "ExceptionInfo | None":
        return self._outcome.einfo if self._outcome is not None else None

    @property
    def node(self) -> str:
        return self.worker

    def get(self, timeout: float | None = None, propagate: bool = True,
            disable_sync_subtasks: bool = True, **kwargs: Any) -> Any:
        o = self._outcome
        if o is None:
            raise MeshError(f"eager task {self.id} has not finished")
        if o.state == states.SUCCESS:
            if o.encoded is None:
                if propagate:
                    raise ResultIgnored(f"task {self.name}[{self.id}] succeeded, but it ignores "
                                        "its result (ignore_result=True): no value was kept")
                return None
            return self._value
        if o.state == states.IGNORED:
            if propagate:
                raise ResultIgnored(f"task {self.name}[{self.id}] raised Ignore: it has no result")
            return None
        if propagate and o.exc is not None:
            raise o.exc
        return o.exc

    wait = get

    def __await__(self) -> Generator[Any, None, Any]:
        if False:        # a generator that returns at once: await needs no loop turn
            yield
        return self.get()

    def forget(self) -> None:
        """Nothing to forget: an eager result is kept only in this object."""

    def revoke(self, terminate: bool = False, signal: str = "SIGKILL") -> None:
        """An eager task has run already; revoking it changes nothing (as in Celery)."""
