"""Tasks: the decorated functions, their options, and the request context."""
from __future__ import annotations

import contextvars
import dataclasses
import datetime
import difflib
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mesh.exceptions import ConfigError, MaxRetriesExceededError, Retry
from mesh.ratelimit import parse_rate

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.canvas import Signature
    from mesh.result import AsyncResult


@dataclass(frozen=True)
class TaskOptions:
    """Options given to ``@app.task``. Limits are seconds; None means the node's default."""
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

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 9:
            raise ConfigError(f"priority must be 0..9, got {self.priority}")
        if self.max_retries is not None and (type(self.max_retries) is not int or self.max_retries < 0):
            raise ConfigError(f"max_retries must be an integer >= 0 or None, got {self.max_retries!r}")
        if not all(isinstance(c, type) and issubclass(c, BaseException) for c in self.autoretry_for):
            raise ConfigError("autoretry_for must be a tuple of exception classes")
        if self.default_retry_delay < 0 or self.retry_backoff_max < 0 or self.retry_backoff < 0:
            raise ConfigError("retry delays must be >= 0")
        parse_rate(self.rate_limit)
        for n in ("time_limit", "soft_time_limit", "expires"):
            v = getattr(self, n)
            if v is not None and v <= 0:
                raise ConfigError(f"{n} must be > 0 seconds, got {v}")


# Options of the public contract that later versions implement. Accepting them
# silently would lie to the user, so they are refused with this message for now.
_NOT_YET = {"ignore_result": "ignore_result"}


def make_options(name: str, kwargs: dict[str, Any]) -> TaskOptions:
    known = {f.name for f in dataclasses.fields(TaskOptions)}
    for key in kwargs:
        if key in _NOT_YET:
            raise ConfigError(f"task option {key!r} ({_NOT_YET[key]}) is not available in this "
                              "version of mesh yet")
        if key not in known:
            hint = difflib.get_close_matches(key, known | set(_NOT_YET), n=1)
            raise ConfigError(f"unknown task option {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    if "autoretry_for" in kwargs:
        kwargs = {**kwargs, "autoretry_for": tuple(kwargs["autoretry_for"])}
    return TaskOptions(**{**kwargs, "name": name})


class Request:
    """What a running task knows about its own call (``self.request`` with bind=True)."""

    __slots__ = ("id", "task", "args", "kwargs", "retries", "eta", "expires", "hostname",
                 "priority", "time_limit", "soft_time_limit", "headers", "called_directly")

    def __init__(self, id: str | None = None, task: str = "", args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, retries: int = 0, eta: float | None = None,
                 expires: float | None = None, hostname: str | None = None, priority: int = 0,
                 time_limit: float | None = None, soft_time_limit: float | None = None,
                 headers: dict[str, Any] | None = None, called_directly: bool = True):
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
    def group(self) -> str | None:
        rep = (self.headers.get("wf") or {}).get("report") if isinstance(self.headers.get("wf"), dict) \
            else None
        return rep[0] if isinstance(rep, list) and rep else self.headers.get("group")


_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "mesh_current_request", default=None)


class Task:
    """A registered task. Call it to run it here; ``delay``/``apply_async`` to run it
    on the mesh."""

    def __init__(self, app: "Mesh", fun: Callable[..., Any], options: TaskOptions):
        self.app = app
        self.fun = fun
        self.options = options
        self.name = options.name
        functools.update_wrapper(self, fun)

    def __repr__(self) -> str:
        return f"<@task {self.name}>"

    @property
    def request(self) -> Request:
        """The current call's context; a default one outside a node."""
        req = _current_request.get()
        if req is None or req.task != self.name:
            return Request(task=self.name)
        return req

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, in this process, as a plain call."""
        token = _current_request.set(Request(task=self.name, args=args, kwargs=kwargs))
        try:
            return self.run(*args, **kwargs)
        finally:
            _current_request.reset(token)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self.options.bind:
            return self.fun(self, *args, **kwargs)
        return self.fun(*args, **kwargs)

    def retry(self, exc: BaseException | None = None, countdown: float | None = None,
              eta: Any = None, max_retries: int | None = None) -> Retry:
        """Ask for this call to run again later (use as ``raise self.retry(...)``).

        After ``max_retries`` (the task's option unless given) it raises ``exc`` if
        given, else MaxRetriesExceededError. Outside a node (a plain call) it raises
        ``exc``, or Retry. The delay is ``countdown``, ``eta`` (datetime or unix
        time), or the task's default_retry_delay."""
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
                when = eta.timestamp() if isinstance(eta, datetime.datetime) else float(eta)
                countdown = max(0.0, when - time.time())
            else:
                countdown = self.options.default_retry_delay
        raise Retry(f"retry in {countdown:g} s" + (f": {exc!r}" if exc is not None else ""),
                    exc=exc, countdown=countdown)

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
                    link: Any = None, link_error: Any = None) -> "AsyncResult":
        """Send the task to a node. ``eta`` is a datetime or unix time; ``expires`` a
        datetime, unix time or seconds from now (numbers under 10**9 are seconds)."""
        o = self.options
        return self.app.send_task(
            self.name, args=args, kwargs=kwargs, task_id=task_id, countdown=countdown, eta=eta,
            expires=expires if expires is not None else o.expires,
            priority=priority if priority is not None else o.priority,
            time_limit=time_limit if time_limit is not None else o.time_limit,
            soft_time_limit=soft_time_limit if soft_time_limit is not None else o.soft_time_limit,
            link=link, link_error=link_error,
            headers=None if o.acks_late else {"acks_late": False})
