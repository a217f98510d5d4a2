"""Tasks: the decorated functions, their options, and the request context.

A task is an instance of ``app.Task`` (or of the class given as ``base=``), as in
Celery: a subclass may set options as class attributes (``max_retries = 5``) and
define handlers (``on_success``, ``on_failure``, ``on_retry``, ``after_return``,
``before_start``), which run in the child that runs the task (mesh/trace.py). A task's
options are, highest first: ``task_annotations``, the decorator's keywords, the class's
attributes, the app's ``task_*`` settings (``task_acks_late``...), mesh's defaults.
(Just over 500 lines: Celery's Task API is one class, and users read it as one.)
"""
from __future__ import annotations

import contextvars
import dataclasses
import datetime
import functools
import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.conf_names import CALL_OPTIONS, ignore_options
from mesh.exceptions import ConfigError, MaxRetriesExceededError, OperationalError, Replace, Retry
from mesh.ratelimit import parse_rate
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.canvas import Signature
    from mesh.eager import EagerResult
    from mesh.result import AsyncResult

log = safe_logger("mesh.task")


@dataclass(frozen=True)
class TaskOptions:
    """A task's options. Limits are seconds; None means the node's default."""
    name: str = ""
    bind: bool = False
    priority: int = 0                  # 0..9, higher runs first
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | None = None       # seconds after sending, after which it is not run
    # -- retries (Celery's names and defaults) --
    max_retries: int | None = 3        # None: retry forever
    default_retry_delay: float = 180.0  # s before a retry, when no countdown/backoff says
    autoretry_for: tuple[type[BaseException], ...] = ()  # retry on these exceptions by itself
    dont_autoretry_for: tuple[type[BaseException], ...] = ()  # ... but never on these
    throws: tuple[type[BaseException], ...] = ()  # expected errors: the task fails, and the
                                       # node logs it at INFO without a traceback (Celery's)
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)  # for autoretry: countdown,
                                       # max_retries (the task's own otherwise)
    retry_backoff: bool | float = False  # exponential backoff: True (1, 2, 4 s...) or a factor
    retry_backoff_max: float = 600.0   # s, the cap of the backoff
    retry_jitter: bool = True          # randomise backoff delays in [0, delay]
    # -- acknowledgement (docs/design.md, "Acks") --
    acks_late: bool = True             # done only when its result is journalled: a node that
                                       # dies mid-run runs it again after a restart, and its
                                       # owner resends it elsewhere. False: at most once
    reject_on_worker_lost: bool = False  # acks_late and the child died mid-run: run it again
                                       # (up to MAX_REDELIVERIES) instead of WorkerLostError
    rate_limit: str | float | None = None  # "100/m", "10/s", "5/h" or per second; per node
    mesh_rate_limit: str | float | None = None  # the same notation, for the whole mesh: shared
                                       # out between the nodes that run it (docs/routing.md)
    queue: str | None = None           # the queue it goes to (docs/routing.md); None: routes
    # -- results --
    ignore_result: bool = False        # the value is not kept (nor sent); get() says so
    store_errors_even_if_ignored: bool = False  # ignore_result, but keep failures
    track_started: bool = False        # the caller sees STARTED when a child takes it
    typing: bool | None = None         # check the arguments against the function's
                                       # parameters when sent: a bad call raises TypeError
                                       # in the caller (Celery's); None: the app's
                                       # strict_typing (True unless Mesh(strict_typing=False))

    def __post_init__(self) -> None:
        if type(self.priority) is not int or not 0 <= self.priority <= 9:
            raise ConfigError(f"priority must be 0..9, got {self.priority}")
        if self.max_retries is not None and (type(self.max_retries) is not int or self.max_retries < 0):
            raise ConfigError(f"max_retries must be an integer >= 0 or None, got {self.max_retries!r}")
        for n in _TUPLES:
            if not all(isinstance(c, type) and issubclass(c, BaseException) for c in getattr(self, n)):
                raise ConfigError(f"{n} must be a tuple of exception classes")
        if not isinstance(self.retry_kwargs, Mapping) or not set(self.retry_kwargs) <= _RETRY_KWARGS:
            raise ConfigError(f"retry_kwargs must be a dict with keys among "
                              f"{sorted(_RETRY_KWARGS)}, got {self.retry_kwargs!r}")
        if self.default_retry_delay < 0 or self.retry_backoff_max < 0 or self.retry_backoff < 0:
            raise ConfigError("retry delays must be >= 0")
        parse_rate(self.rate_limit)
        parse_rate(self.mesh_rate_limit)
        if self.queue is not None:
            from mesh.routing import check_queue
            check_queue(self.queue, f"task {self.name!r}: queue")
        for n in ("time_limit", "soft_time_limit", "expires"):
            v = getattr(self, n)
            if v is not None and v <= 0:
                raise ConfigError(f"{n} must be > 0 seconds, got {v}")


_RETRY_KWARGS = {"countdown", "max_retries", "eta"}
OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TaskOptions)) - {"name"}
_TUPLES = ("autoretry_for", "dont_autoretry_for", "throws")

# app.conf settings that give a task option its default (Celery's Task.from_config)
FROM_CONF = {"acks_late": "task_acks_late", "reject_on_worker_lost": "task_reject_on_worker_lost",
             "ignore_result": "task_ignore_result", "track_started": "task_track_started",
             "store_errors_even_if_ignored": "task_store_errors_even_if_ignored",
             "rate_limit": "task_default_rate_limit", "priority": "task_default_priority"}
HANDLERS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


def make_options(name: str, kwargs: Mapping[str, Any], what: str = "task option") -> TaskOptions:
    for key in kwargs:
        if key not in OPTION_NAMES:
            import difflib
            hint = difflib.get_close_matches(key, OPTION_NAMES, n=1)
            raise ConfigError(f"unknown {what} {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    values = dict(kwargs)
    for key in _TUPLES:
        if key in values:
            v = values[key]
            values[key] = tuple(v) if isinstance(v, (list, tuple, set)) else (v,)
    return TaskOptions(**{**values, "name": name})


class Request:
    """What a running task knows about its own call (``self.request`` with bind=True)."""

    __slots__ = ("id", "task", "args", "kwargs", "retries", "eta", "expires", "hostname",
                 "priority", "time_limit", "soft_time_limit", "headers", "called_directly",
                 "is_eager", "shadow", "state_sink", "retry_later", "entered", "final")

    def __init__(self, id: str | None = None, task: str = "", args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, retries: int = 0, eta: float | None = None,
                 expires: float | None = None, hostname: str | None = None, priority: int = 0,
                 time_limit: float | None = None, soft_time_limit: float | None = None,
                 headers: dict[str, Any] | None = None, called_directly: bool = True,
                 is_eager: bool = False):
        self.id = id
        self.task = task
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.retries = retries
        self.eta = eta
        self.expires = expires
        self.hostname = hostname
        self.priority = priority
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.headers = headers or {}
        self.called_directly = called_directly
        self.is_eager = is_eager
        self.shadow: str | None = self.headers.get("shadow")
        # where update_state reports (state, codec bytes of meta): set by the child or by
        # Task.apply; None in a plain call
        self.state_sink: Callable[[str, bytes | None], None] | None = None
        self.retry_later: Retry | None = None   # retry(throw=False): retried when it returns
        self.entered = False                    # Task.__call__ already ran for this request
        # update_state(SUCCESS or FAILURE, meta) then raise Ignore(): the task ends so
        # (Celery's recipe: its backend keeps what update_state stored)
        self.final: tuple[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Request {self.task}[{self.id}] retries={self.retries} on {self.hostname}>"

    # a workflow's step (mesh/workflow/plan.py): Celery's names, read from the headers
    @property
    def root_id(self) -> str | None:
        return self.headers.get("root_id")

    @property
    def parent_id(self) -> str | None:
        return self.headers.get("parent_id")

    @property
    def replaced_task_nesting(self) -> int:
        """How many replacements deep this task runs (``Task.replace``): 0 for a task
        that replaces none."""
        from mesh.workflow.replace import nesting
        return nesting(self)

    @property
    def group(self) -> str | None:
        rep = self._report()
        return rep[0] if rep else self.headers.get("group")

    @property
    def group_index(self) -> int | None:
        """This task's place in its group (Celery's ``group_index``), else None."""
        rep = self._report()
        return rep[1] if rep and len(rep) > 1 and type(rep[1]) is int else None

    def _report(self) -> list[Any] | None:
        wf = self.headers.get("wf")
        rep = wf.get("report") if isinstance(wf, dict) else None
        return rep if isinstance(rep, list) and rep else None

    # Celery's other request fields that code reads (``self.request.delivery_info[...]``)
    @property
    def delivery_info(self) -> dict[str, Any]:
        """Celery's ``delivery_info``: ``routing_key`` and ``queue`` are the queue the
        task was sent to (mesh has no exchanges: ``exchange`` is ``""``), ``priority``
        its priority; in eager mode ``is_eager`` is True, as in Celery."""
        q = self.headers.get("queue")
        info: dict[str, Any] = {"exchange": "", "routing_key": q, "queue": q,
                                "priority": self.priority}
        if self.is_eager:
            info["is_eager"] = True
        return info

    @property
    def correlation_id(self) -> str | None:
        """The task's id, as in Celery."""
        return self.id

    @property
    def timelimit(self) -> tuple[float | None, float | None]:
        """``(time_limit, soft_time_limit)``, Celery's pair."""
        return self.time_limit, self.soft_time_limit

    def get(self, key: str, default: Any = None) -> Any:
        """``self.request.get("x", default)``, as Celery's Context: a field, else
        ``default``."""
        if key.startswith("_"):
            return default
        return getattr(self, key, default)


_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "mesh_current_request", default=None)


def _option_property(name: str) -> property:
    def get(self: "Task") -> Any:
        return getattr(self.options, name)
    return property(get, doc=f"The task's effective {name} (see TaskOptions).")


class Task:
    """A registered task. Call it to run it here; ``delay``/``apply_async`` to run it
    on the mesh; ``apply`` to run it here as the mesh would (an EagerResult)."""

    name: str = ""
    _app: "Mesh | None" = None        # set on app.Task, the app's own subclass
    # Celery's, for `except add.MaxRetriesExceededError` and the Calling guide's
    # `except add.OperationalError` around delay() (mesh never raises the latter: a
    # client keeps what no node took yet and says so)
    MaxRetriesExceededError = MaxRetriesExceededError
    OperationalError = OperationalError
    _header: Callable[..., None] | None = None   # check_arguments' function, once built

    def __init__(self, app: "Mesh | None" = None, fun: Callable[..., Any] | None = None,
                 options: TaskOptions | None = None):
        if app is None:                # Celery style: MyTask() then app.register_task
            return
        self._bind(app, fun, options.name if options else self.name,
                   {k: getattr(options, k) for k in OPTION_NAMES} if options else {})

    def _bind(self, app: "Mesh", fun: Callable[..., Any] | None, name: str,
              given: Mapping[str, Any]) -> None:
        self.app = app
        self.fun = fun if fun is not None else self._run_method()
        self.name = name
        self._given = dict(given)
        # (conf version, options, handlers from annotations, task_always_eager)
        self._cache: tuple[int, TaskOptions, dict[str, Any], bool] | None = None
        if fun is not None:
            functools.update_wrapper(self, fun)
        make_options(name, {**self._class_options(), **self._given})   # fail early

    def _run_method(self) -> Callable[..., Any]:
        run = type(self).run
        if run is Task.run:
            raise ConfigError(f"task class {type(self).__name__} has no run() method")
        return functools.partial(run, self)

    @classmethod
    def _class_options(cls) -> dict[str, Any]:
        """Options set as class attributes on subclasses (``class T(app.Task): x = 1``)."""
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if klass is Task or not issubclass(klass, Task):
                continue
            for k, v in vars(klass).items():
                if k in OPTION_NAMES and not isinstance(v, property):
                    out[k] = v
        return out

    # -- options ----------------------------------------------------------------------
    @property
    def options(self) -> TaskOptions:
        """The effective options (see the module docstring); follows app.conf."""
        version = self.app.conf.version
        cache = self._cache
        if cache is None or cache[0] != version:
            cache = self._cache = (version, *self._resolve())
        return cache[1]

    def _resolve(self) -> tuple[TaskOptions, dict[str, Any], bool]:
        conf = self.app.conf
        values = {opt: conf[setting] for opt, setting in FROM_CONF.items()
                  if conf[setting] is not None}
        values.update(self._class_options())
        values.update(self._given)
        annotated: dict[str, Any] = {}
        for ann in _annotations(conf["task_annotations"], self):
            for k, v in ann.items():
                (annotated if k in HANDLERS else values)[k] = v
        if conf["worker_disable_rate_limits"]:
            values["rate_limit"] = values["mesh_rate_limit"] = None
        handlers: dict[str, Callable[..., Any]] = {}    # only those that do something
        for name in HANDLERS:
            if name in annotated:
                handlers[name] = functools.partial(annotated[name], self)
            elif getattr(type(self), name) is not getattr(Task, name):
                handlers[name] = getattr(self, name)
        return (make_options(self.name, values, "task_annotations/option"), handlers,
                bool(conf["task_always_eager"]))

    def handlers(self) -> dict[str, Callable[..., Any]]:
        """The handlers that run (from task_annotations, else the class's own), by
        name; a handler left as Task's (it does nothing) is not there."""
        self.options  # noqa: B018  (refreshes the cache when app.conf changed)
        assert self._cache is not None
        return self._cache[2]

    def __repr__(self) -> str:
        return f"<@task {self.name}>"

    # -- handlers (Celery's; they run in the child that ran the task) -------------------
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Before the task runs. An exception here fails the task."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """The task returned ``retval``. Exceptions here are logged, never change the result."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """The task failed with ``exc`` (``einfo``: mesh.einfo.ExceptionInfo)."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        """The task will run again (``exc``: why)."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """After every run, whatever its state (``retval``: value or exception)."""

    # -- running ----------------------------------------------------------------------
    @property
    def request(self) -> Request:
        """The current call's context; a default one outside a node."""
        req = _current_request.get()
        if req is None or req.task != self.name:
            return Request(task=self.name)
        return req

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, in this process, as a plain call. (On a node, or in
        apply(), the first call through here runs under the task's own request.)"""
        req = _current_request.get()
        if req is not None and req.task == self.name and not req.called_directly and not req.entered:
            req.entered = True
            return self.run(*args, **kwargs)
        token = _current_request.set(Request(task=self.name, args=args, kwargs=kwargs))
        try:
            return self.run(*args, **kwargs)
        finally:
            _current_request.reset(token)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self.options.bind:
            return self.fun(self, *args, **kwargs)
        return self.fun(*args, **kwargs)

    def retry(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True, eta: Any = None,
              countdown: float | None = None, max_retries: int | None = None,
              **options: Any) -> Retry:
        """Ask for this call to run again later (use as ``raise self.retry(...)``).

        ``args``/``kwargs``: the next run's arguments (default: the same). After
        ``max_retries`` (the task's option unless given) it raises ``exc`` if given,
        else MaxRetriesExceededError. Outside a node (a plain call) it raises ``exc``,
        or Retry. The delay is ``countdown``, ``eta`` (datetime or unix time), or the
        task's default_retry_delay. ``throw=False``: return instead of raising; the
        task is retried when it returns (its return value is dropped)."""
        if options:
            raise ConfigError(f"retry() options {sorted(options)} are not available in mesh "
                              "(countdown, eta, max_retries, args, kwargs, exc, throw are)")
        req = self.request
        if req.called_directly:
            raise exc if exc is not None else Retry("retry() in a plain local call")
        limit = max_retries if max_retries is not None else self.options.max_retries
        if limit is not None and req.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{req.id}]: {req.retries} retries, max_retries={limit}")
        if countdown is None:
            if eta is not None:
                if isinstance(eta, datetime.datetime):
                    if eta.tzinfo is None:               # naive: UTC, as in Celery
                        eta = eta.replace(tzinfo=datetime.UTC)
                    when = eta.timestamp()
                else:
                    when = float(eta)
                countdown = max(0.0, when - time.time())
            else:
                countdown = self.options.default_retry_delay
        r = Retry(f"retry in {countdown:g} s" + (f": {exc!r}" if exc is not None else ""),
                  exc=exc, countdown=countdown)
        if args is not None or kwargs is not None:
            r.call = (list(args) if args is not None else list(req.args),
                      dict(kwargs) if kwargs is not None else dict(req.kwargs))
        if not throw:
            req.retry_later = r
            return r
        raise r

    def replace(self, sig: Any) -> Replace:
        """End this run without a result of its own: ``sig`` (a signature, chain, group
        or chord) runs in its place and its result becomes this task's, under this
        task's id (use as ``raise self.replace(sig)``; it raises by itself, so
        ``return self.replace(sig)`` does the same). A chain's later steps, a group
        this task belongs to and its callbacks get the replacement's value. Eager
        mode runs ``sig.apply().get()`` here. A plain call raises ConfigError
        (docs/workflows.md, "Replacing a task")."""
        from mesh.workflow.replace import replacement
        raise replacement(self, self.request, sig)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Tell the task's caller (and anyone looking it up) a custom state such as
        ``"PROGRESS"`` and its ``meta`` (``r.state``, ``r.info``). Only the running
        task's own state; a plain call has nobody to tell, so it does nothing."""
        req = self.request
        if task_id is not None and task_id != req.id:
            raise ConfigError("update_state can only set the state of the task that is running "
                              f"({req.id}), not of {task_id}")
        if not isinstance(state, str) or not 0 < len(state) <= 100:
            raise ConfigError(f"update_state needs state=: a string of 1..100 characters, got {state!r}")
        if state in _NOT_SETTABLE:
            raise ConfigError(f"update_state cannot set {state}: a task ends by returning "
                              "(SUCCESS), raising (FAILURE) or retry() (RETRY); SUCCESS or "
                              "FAILURE followed by raise Ignore() ends it in that state")
        from mesh.wire import codec
        encoded = codec.dumps(meta) if meta is not None else None   # as on the wire
        if state in _FINAL_BY_IGNORE:        # kept until the task ends (mesh/trace.py)
            req.final = (state, meta)
            return
        if req.state_sink is not None:
            req.state_sink(state, encoded)

    # -- sending ----------------------------------------------------------------------
    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        """A signature of this task with these arguments (``add.s(1, 1)``)."""
        from mesh.canvas import Signature
        return Signature(self.name, args, kwargs).bind(self.app)

    def si(self, *args: Any, **kwargs: Any) -> "Signature":
        """An immutable signature: a workflow does not pass it a parent's result."""
        from mesh.canvas import Signature
        return Signature(self.name, args, kwargs, immutable=True).bind(self.app)

    def signature(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                  **options: Any) -> "Signature":
        from mesh.canvas import Signature
        immutable = bool(options.pop("immutable", False))
        return Signature(self.name, tuple(args or ()), kwargs or {}, options, immutable).bind(self.app)

    subtask = signature

    def map(self, it: Iterable[Any]) -> "Signature":
        """One task that runs this one on each item of ``it`` (``mesh.map``)."""
        from mesh.canvas import xmap
        return xmap(self.s(), it)

    def starmap(self, it: Iterable[Any]) -> "Signature":
        """One task that runs ``this(*item)`` for each item of ``it`` (``mesh.starmap``)."""
        from mesh.canvas import xstarmap
        return xstarmap(self.s(), it)

    def chunks(self, it: Iterable[Any], n: int) -> Any:
        """A group of ``mesh.starmap`` tasks over ``it`` in parts of ``n`` items."""
        from mesh.canvas import chunks
        return chunks(self.s(), it, n)

    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        """Run on the mesh with these arguments; shortcut for apply_async."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    task_id: str | None = None, countdown: float | None = None,
                    eta: Any = None, expires: Any = None, priority: int | None = None,
                    time_limit: float | None = None, soft_time_limit: float | None = None,
                    link: Any = None, link_error: Any = None,
                    headers: dict[str, Any] | None = None, shadow: str | None = None,
                    ignore_result: bool | None = None, queue: str | None = None,
                    **options: Any) -> "AsyncResult":
        """Send the task to a node. ``eta`` is a datetime or unix time; ``expires`` a
        datetime, unix time or seconds from now (numbers under 10**9 are seconds).
        ``queue``: only nodes serving it take the task (else the task's own queue,
        ``task_routes``, ``task_default_queue``: docs/routing.md). With the setting
        ``task_always_eager`` it runs here instead (``apply``)."""
        if options:
            ignore_options(options, CALL_OPTIONS, "apply_async", CALL_KNOWN,
                           self.app.conf._warned)
        o = self.options                          # (cached until app.conf changes)
        assert self._cache is not None
        if o.typing if o.typing is not None else self.app.strict_typing:
            if args is not None and type(args) is not tuple and type(args) is not list:
                args = tuple(args)                # (a generator: read once, here)
            self.check_arguments(args, kwargs)
        if self._cache[3]:                        # task_always_eager
            return self.apply(args, kwargs, task_id=task_id, headers=headers, shadow=shadow,  # type: ignore[return-value]
                              ignore_result=ignore_result)
        hdr = None
        if headers or not o.acks_late or shadow is not None or ignore_result is not None:
            hdr = dict(headers or {})
            if not o.acks_late:
                hdr["acks_late"] = False
            if shadow is not None:
                hdr["shadow"] = shadow
            if ignore_result is not None and ignore_result != o.ignore_result:
                hdr["ignore_result"] = ignore_result
        return self.app._send(
            self.name, args=args, kwargs=kwargs, task_id=task_id, countdown=countdown, eta=eta,
            queue=queue if queue is not None else o.queue,
            expires=expires if expires is not None else o.expires,
            priority=priority if priority is not None else o.priority,
            time_limit=time_limit if time_limit is not None else o.time_limit,
            soft_time_limit=soft_time_limit if soft_time_limit is not None else o.soft_time_limit,
            link=link, link_error=link_error, headers=hdr)

    @property
    def typed(self) -> bool:
        """Its arguments are checked when it is sent (``typing``, else the app's
        ``strict_typing``)."""
        typing = self.options.typing
        return typing if typing is not None else self.app.strict_typing

    def check_arguments(self, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None) -> None:
        """Raise TypeError, as calling the task's function would, if it does not take
        these arguments (Celery's ``typing``; ``self`` left out for ``bind=True``)."""
        check = self._header
        if check is None:
            from mesh.call_check import header_of
            check = self._header = header_of(self.fun, self.options.bind and
                                             not isinstance(self.fun, functools.partial))
        check(*(args or ()), **(kwargs or {}))

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              task_id: str | None = None, retries: int = 0, throw: bool | None = None,
              headers: dict[str, Any] | None = None, shadow: str | None = None,
              ignore_result: bool | None = None, **options: Any) -> "EagerResult":
        """Run the task here and now, as a node would (arguments and result go through
        the codec, handlers run, retries run at once), and return an EagerResult.
        ``throw`` (default: the setting ``task_eager_propagates``) raises a failure."""
        from mesh.eager import apply
        ignore_options(options, CALL_OPTIONS, "apply", CALL_KNOWN, self.app.conf._warned)
        return apply(self, args, kwargs, task_id=task_id, retries=retries, throw=throw,
                     headers=headers, shadow=shadow, ignore_result=ignore_result)

    def AsyncResult(self, task_id: str) -> "AsyncResult":
        return self.app.AsyncResult(task_id)

    # -- Django: send when the transaction commits (Celery's DjangoTask) ----------------
    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay`` once the current Django transaction commits (at once outside
        one); nothing is sent if it rolls back. Returns None, as Celery's: the task
        does not exist yet. Needs Django (mesh/django/)."""
        from mesh.django.transaction import on_commit
        on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, args: Iterable[Any] | None = None,
                              kwargs: dict[str, Any] | None = None,
                              using: str | None = None, **options: Any) -> None:
        """``apply_async`` once the transaction on database ``using`` (Django's default
        one unless given) commits; see ``delay_on_commit``."""
        from mesh.django.transaction import on_commit
        try:   # a misspelt option fails now, not after the commit
            inspect.signature(self.apply_async).bind(args, kwargs, **options)
        except TypeError as e:
            raise ConfigError(f"apply_async_on_commit: {e}") from None
        on_commit(functools.partial(self.apply_async, args, kwargs, **options), using=using)


CALL_KNOWN = ("args, kwargs, task_id, countdown, eta, expires, priority, time_limit, "
              "soft_time_limit, link, link_error, headers, shadow, ignore_result, queue")
_FINAL_BY_IGNORE = frozenset({states.SUCCESS, states.FAILURE})
_NOT_SETTABLE = frozenset({*states.READY_STATES, states.PENDING, states.UNKNOWN,
                           states.RETRY}) - _FINAL_BY_IGNORE

# task.max_retries etc. read the effective options (a task's class holds these, over any
# class attribute of its base)
OPTION_PROPERTIES = {_name: _option_property(_name) for _name in OPTION_NAMES - {"bind"}}
for _name, _prop in OPTION_PROPERTIES.items():
    setattr(Task, _name, _prop)


def _annotations(value: Any, task: Task) -> list[Mapping[str, Any]]:
    """The task_annotations that apply to ``task``, in order (later ones win)."""
    if value is None:
        return []
    out = []
    for a in (value if isinstance(value, (list, tuple)) else [value]):
        if isinstance(a, Mapping):
            for key in ("*", task.name):
                if key in a:
                    out.append(a[key])
        elif hasattr(a, "annotate"):
            got = a.annotate(task)
            if got:
                out.append(got)
    return out
