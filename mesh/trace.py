"""Running one task as a node runs it (Celery's tracer): the request context, the
handlers, and what the run comes to (an :class:`Outcome`).

The child that runs a task on a node (mesh/node/child.py) and ``Task.apply`` (eager
mode, mesh/eager.py) both run tasks through :func:`execute` (``async def`` tasks
through :func:`execute_async`, the same steps on an event loop), so a test suite in eager
mode sees what the mesh does: the handlers, retries, autoretry, Reject and Ignore, and
arguments and results that must survive the codec.

Order, as in Celery: the ``task_prerun`` signal; ``before_start`` (an exception there
fails the task); the task (through ``__call__`` when a base class overrides it, as
Flask's app-context tasks do); ``on_success``, ``on_retry`` or ``on_failure``, then
``after_return`` for every outcome; then the signals ``task_success``, ``task_retry``
or ``task_failure``, and ``task_postrun``. An exception in a handler (but
``before_start``) or a signal receiver is logged with its traceback and changes
nothing. Eager mode sends the signals too, as Celery's does.
"""
from __future__ import annotations

import dataclasses
import inspect
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mesh import signals, states
from mesh.einfo import ExceptionInfo
from mesh.exceptions import EncodeError, Ignore, Reject, Replace, Retry
from mesh.retry import backoff_delay
from mesh.security.text import safe_logger
from mesh.task import Request, Task, _current_request
from mesh.wire import codec

log = safe_logger("mesh.trace")

REPLACED = states.REPLACED  # internal: the task called replace(sig) (not a task's state)
REQUEUE_DELAY = 1.0     # s before a task that raised Reject(requeue=True) runs again
SMALL_RESULT = 1 << 20  # bytes: a result this small needs no look at max_message_size
RESULT_HEADROOM = 64 * 1024   # bytes of a RESULT frame besides the value (ids, names)


@dataclasses.dataclass(slots=True)
class Outcome:
    """What one run of a task came to."""
    state: str                              # SUCCESS FAILURE RETRY IGNORED REPLACED
    value: Any = None                       # SUCCESS: the return value; else the exception
    encoded: bytes | None = None            # SUCCESS: codec bytes of value; None: not kept
                                            # (REPLACED: of the replacement's map)
    exc: BaseException | None = None        # the exception (for RETRY: its cause)
    einfo: ExceptionInfo | None = None
    countdown: float | None = None          # RETRY: seconds until the next run
    call: tuple[list[Any], dict[str, Any]] | None = None   # RETRY: new arguments, if changed
    keep: bool = True                       # the node keeps the result in its journal
    retry: Retry | None = None              # RETRY: the Retry raised (its reason)
    expected: bool = False                  # FAILURE: an error of the task's ``throws``

    @property
    def traceback(self) -> str | None:
        return self.einfo.traceback if self.einfo is not None else None


def is_async_task(task: Any) -> bool:
    """An ``async def`` task: its function (or a Task subclass's ``run``) is a
    coroutine function, run with :func:`execute_async` (a node's child runs it on its
    event loop)."""
    if inspect.iscoroutinefunction(getattr(task, "fun", None)):
        return True
    return inspect.iscoroutinefunction(getattr(type(task), "run", None))


def ignores_result(task: Task, req: Request) -> bool:
    flag = req.headers.get("ignore_result") if req.headers else None
    return flag if isinstance(flag, bool) else task.options.ignore_result


def execute(task: Task, req: Request, soft_time_limit: float | None = None) -> Outcome:
    """Run ``task`` under ``req`` (its id, arguments, retries...) and its handlers.
    ``soft_time_limit``: seconds until SoftTimeLimitExceeded is raised in the task
    (SIGALRM: only in a process's main thread, as a node's children are)."""
    token = _current_request.set(req)
    try:
        handlers = task.handlers()
        signals.task_prerun.send(sender=task, task_id=req.id, task=task, args=req.args,
                                 kwargs=req.kwargs)
        outcome = _run(task, req, soft_time_limit, handlers.get("before_start"))
        if handlers:
            _handlers(task, req, outcome, handlers)
        _signals(task, req, outcome)
        return outcome
    finally:
        _current_request.reset(token)


def _signals(task: Task, req: Request, o: Outcome) -> None:
    """Celery's task signals for the outcome, after the handlers, as its tracer sends
    them (receivers that raise are logged by Signal.send and change nothing)."""
    retval = o.retry if o.state == states.RETRY else o.value
    if o.state == states.SUCCESS:
        signals.task_success.send(sender=task, result=o.value)
    elif o.state == states.RETRY:
        signals.task_retry.send(sender=task, request=req, reason=o.retry, einfo=_retry_einfo(o))
    elif o.state == states.FAILURE and o.exc is not None:
        signals.task_failure.send(sender=task, task_id=req.id, exception=o.exc, args=req.args,
                                  kwargs=req.kwargs, traceback=o.exc.__traceback__,
                                  einfo=o.einfo)
    signals.task_postrun.send(sender=task, task_id=req.id, task=task, args=req.args,
                              kwargs=req.kwargs, retval=retval, state=_celery_state(o))


def _retry_einfo(o: Outcome) -> ExceptionInfo | None:
    """The Retry's info, with the cause's traceback (what Celery gives on_retry)."""
    if o.retry is None:
        return o.einfo
    tb = o.retry.__traceback__ or (o.exc.__traceback__ if o.exc is not None else None)
    return ExceptionInfo((Retry, o.retry, tb))


def _invoke(task: Task, req: Request) -> Any:
    if type(task).__call__ is not Task.__call__:    # a base class wraps every run
        return task(*req.args, **req.kwargs)
    req.entered = True
    return task.run(*req.args, **req.kwargs)


def _run(task: Task, req: Request, soft: float | None,
         before_start: Callable[..., Any] | None) -> Outcome:
    try:
        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        try:
            if before_start is not None:
                before_start(req.id, req.args, req.kwargs)
            value = _invoke(task, req)
        finally:
            if soft:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return _returned(task, req, value)
    except BaseException as e:       # the task's failure, whatever it is, is its result
        return _raised(task, req, e)


async def execute_async(task: Task, req: Request,
                        run: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None) -> Outcome:
    """:func:`execute` for an ``async def`` task, on the running event loop: the same
    handlers, signals and outcomes; the coroutine the task returns is awaited, through
    ``run(coroutine)`` when given (the child wraps it to raise a soft time limit in it)."""
    token = _current_request.set(req)        # this asyncio task's own context
    try:
        handlers = task.handlers()
        signals.task_prerun.send(sender=task, task_id=req.id, task=task, args=req.args,
                                 kwargs=req.kwargs)
        try:
            before_start = handlers.get("before_start")
            if before_start is not None:
                before_start(req.id, req.args, req.kwargs)
            value = _invoke(task, req)
            if inspect.isawaitable(value):
                value = await (run(value) if run is not None else value)
            outcome = _returned(task, req, value)
        except BaseException as e:   # CancelledError too: the caller tells why it came
            outcome = _raised(task, req, e)
        if handlers:
            _handlers(task, req, outcome, handlers)
        _signals(task, req, outcome)
        return outcome
    finally:
        _current_request.reset(token)


def _returned(task: Task, req: Request, value: Any) -> Outcome:
    """The task returned ``value`` (a ``retry(throw=False)`` in it still retries)."""
    if req.retry_later is not None:
        return _raised(task, req, req.retry_later)
    ignore = ignores_result(task, req)
    feeds = "wf" in req.headers     # a workflow's step passes its value on even when its
    data = None if ignore and not feeds else codec.dumps(value)   # result is not kept
    if data is not None and len(data) > SMALL_RESULT:
        _check_size(task, data)
    return Outcome(states.SUCCESS, value, data, keep=not ignore)


def _check_size(task: Task, data: bytes) -> None:
    """A value too big for a RESULT frame could never reach anyone: every receiver
    refuses frames over max_message_size (the sender waited until its timeout, and
    ZeroMQ cut its link off past twice that). The task fails instead, saying why."""
    limit = task.app.config.max_message_size - RESULT_HEADROOM
    if len(data) > limit:
        raise EncodeError(f"the result of {task.name} is {len(data):,} bytes encoded, more "
                          f"than a result may be ({limit:,}: max_message_size less "
                          f"{RESULT_HEADROOM:,}); return a reference to it (a path, a key) "
                          "instead, or raise max_message_size on every node and client")


def _raised(task: Task, req: Request, e: BaseException) -> Outcome:
    """The task raised ``e``: a retry, Ignore, Reject, an autoretry, or its failure."""
    if isinstance(e, Retry):
        return _retry(e)
    if isinstance(e, Replace):
        return _replaced(task, req, e)
    if isinstance(e, Ignore):
        if req.final is not None:    # update_state(SUCCESS or FAILURE, meta) came first
            return _final(task, req, *req.final)
        return Outcome(states.IGNORED, None, exc=e, keep=False)
    failed = e
    try:
        if isinstance(e, Reject):
            _requeue(task, e)
        else:
            _autoretry(task, req, e)
    except Retry as again:           # retried: retry() raises Retry
        return _retry(again)
    except BaseException as final:   # no retries left: the task fails with this
        failed = final
    return _failure(task, failed, ignores_result(task, req))


def _final(task: Task, req: Request, state: str, meta: Any) -> Outcome:
    """Celery's recipe ``self.update_state(state=SUCCESS or FAILURE, meta=...)`` then
    ``raise Ignore()``: the task ends in that state, SUCCESS with ``meta`` as its value,
    FAILURE with the exception ``meta`` describes in Celery's keys (``exc_type``,
    ``exc_message``, ``exc_module``; else an Exception of its text)."""
    from mesh.result import rebuild_exception
    req.final = None
    if state == states.SUCCESS:
        return _returned(task, req, meta)
    info = meta if isinstance(meta, Mapping) else {}
    message = info.get("exc_message", meta)
    args = list(message) if isinstance(message, (list, tuple)) else [message]
    err = rebuild_exception({"type": str(info.get("exc_type") or "Exception"),
                             "module": str(info.get("exc_module") or "builtins"),
                             "message": " ".join(str(a) for a in args),
                             "args": codec.dumps(args)}, None)
    return _failure(task, err, ignores_result(task, req))


def _replaced(task: Task, req: Request, e: Replace) -> Outcome:
    """``raise self.replace(sig)``: on a node, REPLACED (the node runs ``sig`` in the
    task's place, mesh/workflow/replace.py); in eager mode ``sig`` runs here and its
    value is the task's."""
    if not req.is_eager:
        return Outcome(REPLACED, None, codec.dumps(e.sig), exc=e)
    from mesh.workflow.replace import run_eagerly
    try:
        value = run_eagerly(e, task.app)
    except BaseException as failed:      # the replacement's failure is the task's
        return _failure(task, failed, ignores_result(task, req))
    return _returned(task, req, value)


def _failure(task: Task, e: BaseException, ignore: bool) -> Outcome:
    o = task.options
    keep = not ignore or o.store_errors_even_if_ignored
    return Outcome(states.FAILURE, e, exc=e, einfo=ExceptionInfo.of(e), keep=keep,
                   expected=bool(o.throws) and isinstance(e, o.throws))


def _retry(r: Retry) -> Outcome:
    cause = r.exc if r.exc is not None else r
    return Outcome(states.RETRY, cause, exc=cause, einfo=ExceptionInfo.of(cause),
                   countdown=r.countdown if r.countdown is not None else 0.0, call=r.call,
                   retry=r)


def _autoretry(task: Task, req: Request, e: BaseException) -> None:
    """Raise Retry if the task retries ``e`` by itself (autoretry_for, not
    dont_autoretry_for), or ``e`` when no retries are left; else return."""
    o = task.options
    if not o.autoretry_for or not isinstance(e, o.autoretry_for):
        return
    if o.dont_autoretry_for and isinstance(e, o.dont_autoretry_for):
        return
    kw: dict[str, Any] = dict(o.retry_kwargs)
    if o.retry_backoff or ("countdown" not in kw and "eta" not in kw):
        kw["countdown"] = backoff_delay(
            req.retries, backoff=o.retry_backoff, backoff_max=o.retry_backoff_max,
            jitter=o.retry_jitter, default_delay=o.default_retry_delay)
    task.retry(exc=e, **kw)          # raises Retry, or e when retries are used up


def _requeue(task: Task, e: Reject) -> None:
    """Reject(requeue=True): run again after REQUEUE_DELAY, counted as a retry."""
    if e.requeue:
        task.retry(exc=e, countdown=REQUEUE_DELAY)


def _handlers(task: Task, req: Request, o: Outcome, handlers: dict[str, Callable[..., Any]]) -> None:
    tid, args, kwargs = req.id, req.args, req.kwargs
    if o.state == states.SUCCESS:
        _call(task, handlers, "on_success", o.value, tid, args, kwargs)
    elif o.state == states.RETRY:
        _call(task, handlers, "on_retry", o.exc, tid, args, kwargs, _retry_einfo(o))
    elif o.state == states.FAILURE:
        _call(task, handlers, "on_failure", o.exc, tid, args, kwargs, o.einfo)
    _call(task, handlers, "after_return", _celery_state(o), o.value, tid, args, kwargs,
          o.einfo)


def _celery_state(o: Outcome) -> str:
    """The state handlers and signals see: a replaced task's is IGNORED (Celery's
    replace raises Ignore)."""
    return states.IGNORED if o.state == REPLACED else o.state


def _call(task: Task, handlers: dict[str, Callable[..., Any]], name: str, *args: Any) -> None:
    fn = handlers.get(name)
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("%s of task %s[%s] raised (ignored: the task's outcome stands)",
                      name, task.name, args[1] if name != "after_return" else args[2])
