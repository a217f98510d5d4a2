"""A backend for Django's Tasks framework that runs the tasks on the mesh.

    TASKS = {"default": {"BACKEND": "mesh.django.TaskBackend"}}
    # OPTIONS: {"app": "proj.mesh:app"} names the mesh app (default: the current app)

Every ``@task`` function defined with this backend becomes a mesh task named by its
module path (``shop.tasks.send_receipt``), registered with every mesh app as a shared
task is: a node that imports the module (``app.autodiscover_tasks()``) can run it,
and only functions so declared can be run: a task name from the network never
imports anything. ``enqueue`` sends it; ``get_result``/``refresh`` ask the mesh, from
any process.

What maps onto what (docs/django.md):

=====================  =====================================================
Django                 mesh
=====================  =====================================================
READY                  PENDING, RECEIVED (held by a node), RETRY
RUNNING                STARTED, or a custom state set with update_state
SUCCESSFUL / FAILED    SUCCESS / FAILURE; REVOKED is FAILED (it never ran)
TaskResultDoesNotExist UNKNOWN (no node knows the id; results expire)
priority -100..100     0..9, order kept (0 -> 5)
run_after              eta (the node holds it until then)
queue_name             only "default": mesh has no named queues yet
worker_ids             the node that ran it
=====================  =====================================================
"""
from __future__ import annotations

import datetime
import threading
import traceback
from collections import OrderedDict
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from mesh import states
from mesh.django import tasks_api as api
from mesh.exceptions import TaskError as MeshTaskError
from mesh.shared import current_app, shared_task

# Per process: the Django tasks declared with this backend (by module path) and what
# this process knows of the results it enqueued. Module-level because Django makes a
# backend object per thread.
_lock = threading.Lock()
_declared: dict[str, Any] = {}                      # module path -> Django Task
# id -> (module path, enqueued_at, the AsyncResult: it follows the task without lookups)
_enqueued: OrderedDict[str, tuple[str, datetime.datetime, Any]] = OrderedDict()
_eager: OrderedDict[str, Any] = OrderedDict()       # id -> final TaskResult (eager mode)
REMEMBER = 10_000                                   # results remembered per process

_STATUS = {
    states.PENDING: "READY", states.RECEIVED: "READY", states.RETRY: "READY",
    states.STARTED: "RUNNING",
    states.SUCCESS: "SUCCESSFUL", states.FAILURE: "FAILED", states.REVOKED: "FAILED",
}
OPTIONS = {"app"}


def mesh_priority(priority: int) -> int:
    """Django's priority (-100..100, higher first) as mesh's (0..9, higher first)."""
    lo, hi = api.TASK_MIN_PRIORITY, api.TASK_MAX_PRIORITY
    return int((priority - lo) * 9 / (hi - lo) + 0.5)


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    with _lock:
        table[key] = value
        while len(table) > REMEMBER:
            table.popitem(last=False)


class TaskBackend(api.BaseTaskBackend):  # type: ignore[misc]
    supports_defer = True          # run_after: the node holds the task until then
    supports_async_task = True     # a coroutine function runs in the child (async_to_sync)
    supports_get_result = True     # from any process, while the nodes keep the result
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]):
        super().__init__(alias, params)
        if self.queues != {api.DEFAULT_TASK_QUEUE_NAME}:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]: mesh has no named queues yet: every node runs every task. "
                f"Leave QUEUES out (or [{api.DEFAULT_TASK_QUEUE_NAME!r}]); got {sorted(self.queues)}")
        unknown = set(self.options) - OPTIONS
        if unknown:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']: unknown {sorted(unknown)}; "
                                       f"mesh.django.TaskBackend knows {sorted(OPTIONS)}")
        self._app_path: str | None = self.options.get("app")

    @property
    def app(self) -> Any:
        """The mesh app that sends the tasks: OPTIONS["app"] ("module:attr"), else the
        current app (the one made by proj/mesh.py)."""
        if self._app_path is None:
            return current_app()
        from django.utils.module_loading import import_string
        return import_string(self._app_path.replace(":", "."))

    # -- declaring ----------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        path = task.module_path
        with _lock:
            new = path not in _declared
            if new:
                _declared[path] = task
        if new:                      # the first time this function is seen: declare it
            shared_task(name=path, bind=True)(_runner(task))

    def _mesh_task(self, task: Any) -> Any:
        app = self.app
        mtask = app._tasks.get(task.module_path)
        if mtask is None:    # only if registering it failed (and said why)
            raise api.InvalidTask(f"{task.module_path} is not known to mesh app {app!r}")
        return mtask

    # -- enqueueing ---------------------------------------------------------------------
    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        args = api.normalize_json(list(args))
        kwargs = api.normalize_json(dict(kwargs))
        mtask = self._mesh_task(task)
        now = timezone.now()
        r = mtask.apply_async(args, kwargs, eta=task.run_after,
                              priority=mesh_priority(task.priority))
        if self.app.conf["task_always_eager"]:     # ran here already: keep it here
            result = self._result(task, r, args, kwargs, enqueued_at=now)
            _remember(_eager, r.id, result)
        else:
            result = api.TaskResult(
                task=task, id=r.id, status=api.TaskResultStatus.READY, enqueued_at=now,
                started_at=None, finished_at=None, last_attempted_at=None, args=args,
                kwargs=kwargs, backend=self.alias, errors=[], worker_ids=[])
            _remember(_enqueued, r.id, (task.module_path, now, r))
        api.task_enqueued.send(type(self), task_result=result)
        return result

    # -- results ------------------------------------------------------------------------
    def get_result(self, result_id: str) -> Any:
        """The task's state as the mesh has it now. Raises TaskResultDoesNotExist for an
        id no node knows (never enqueued, or its result expired: result_expires)."""
        with _lock:
            eager = _eager.get(result_id)
            known = _enqueued.get(result_id)
        if eager is not None:
            return eager
        if known is None and self.app.conf["task_always_eager"]:
            # eager mode has no mesh to ask: what this process ran is all there is
            raise api.TaskResultDoesNotExist(result_id)
        r = known[2] if known else self.app.AsyncResult(result_id)
        state = r.state
        if state == states.UNKNOWN:
            raise api.TaskResultDoesNotExist(result_id)
        name = known[0] if known else getattr(r, "name", None)
        task = _declared.get(name) if name else None
        if task is None:
            raise api.TaskResultDoesNotExist(
                f"{result_id}: " + (f"task {name} is not a Django task known to this process"
                                    if name else "not enqueued by this process, and the "
                                    "mesh did not say which task it is"))
        return self._result(task, r, getattr(r, "args", None) or [],
                            getattr(r, "kwargs", None) or {},
                            enqueued_at=known[1] if known else None)

    def _result(self, task: Any, r: Any, args: Any, kwargs: Any,
                enqueued_at: datetime.datetime | None) -> Any:
        state = r.state
        status = _STATUS.get(state, "RUNNING")    # custom states come from a running task
        done = status in ("SUCCESSFUL", "FAILED")
        node = getattr(r, "node", None) or getattr(r, "worker", None)
        finished = _aware(getattr(r, "date_done", None)) if done else None
        if done and finished is None:
            finished = timezone.now()
        errors = []
        value = None
        if status == "FAILED":
            exc = r.result
            path = (exc.type_name if isinstance(exc, MeshTaskError) and exc.type_name
                    else f"{type(exc).__module__}.{type(exc).__qualname__}")
            if "." not in path:
                path = f"builtins.{path}"
            errors.append(api.TaskError(exception_class_path=path, traceback=r.traceback or ""))
        elif status == "SUCCESSFUL":
            value = r.result
        result = api.TaskResult(
            task=task, id=r.id, status=getattr(api.TaskResultStatus, status),
            enqueued_at=enqueued_at, started_at=None, finished_at=finished,
            last_attempted_at=None, args=args, kwargs=kwargs, backend=self.alias,
            errors=errors, worker_ids=[node] if node else [])
        object.__setattr__(result, "_return_value", value)
        return result


def _aware(value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value if isinstance(value, datetime.datetime) else None


def _runner(task: Any) -> Any:
    """The function the mesh runs for a Django task (in a node's child)."""
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        return execute(task, self.request, list(args), kwargs)
    run.__module__ = task.func.__module__
    run.__name__ = task.func.__name__
    run.__qualname__ = task.func.__qualname__
    run.__doc__ = task.func.__doc__
    return run


def execute(task: Any, request: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run a Django task as Django's own workers do: a RUNNING TaskResult for its
    context, task_started and task_finished sent, the return value made JSON-like
    (a value JSON cannot hold fails the task, as with Django's backends)."""
    now = timezone.now()
    node = request.hostname or "local"
    result = api.TaskResult(
        task=task, id=request.id or "", status=api.TaskResultStatus.RUNNING, enqueued_at=None,
        started_at=now, finished_at=None, last_attempted_at=now, args=args, kwargs=kwargs,
        backend=task.backend, errors=[], worker_ids=[node] * (request.retries + 1))
    api.task_started.send(sender=TaskBackend, task_result=result)
    try:
        if task.takes_context:
            value = task.call(api.TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        value = api.normalize_json(value)
    except BaseException as e:
        object.__setattr__(result, "status", api.TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", timezone.now())
        result.errors.append(api.TaskError(
            exception_class_path=f"{type(e).__module__}.{type(e).__qualname__}",
            traceback="".join(traceback.format_exception(e))))
        api.task_finished.send(sender=TaskBackend, task_result=result)
        raise
    object.__setattr__(result, "status", api.TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "_return_value", value)
    api.task_finished.send(sender=TaskBackend, task_result=result)
    return value
