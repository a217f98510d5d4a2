"""The application object: a task registry plus a client for the mesh."""
from __future__ import annotations

import datetime as _dt
import functools
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, overload

from mesh import shared, signals
from mesh.conf import Settings
from mesh.conf_names import CALL_OPTIONS, TASK_OPTIONS, ignore_options
from mesh.config import Config
from mesh.einfo import failure_text, raised_at
from mesh.exceptions import ConfigError, EncodeError, NotRegistered
from mesh.loader import Discovery
from mesh.node.component import Components
from mesh.routing import AppRoutes
from mesh.signals import Signal
from mesh.slot import Slot
from mesh.task import CALL_KNOWN, OPTION_PROPERTIES, Task
from mesh.wire import codec
from mesh.wire.protocol import MAX_TIME_LIMIT, encode_submit

if TYPE_CHECKING:
    from mesh.result import AsyncResult


class _TaskIds:
    """Task ids, shaped like a UUID (8-4-4-4-12 hex digits): the time in milliseconds
    (48 bits, the first 12 digits) then 80 random bits. Nobody can guess another id from
    one they saw (an id names a task to revoke and a result to read): the random part is
    as long as a UUID4's would be without its fixed digits. The time first keeps a node's
    indexes of ids in order: a new id goes at the end of the b-tree, not to a random page
    of it (a journal holding a million ids takes tasks at the same rate as an empty one;
    docs/design.md). The OS's random source is read for ``BATCH`` ids at a time: once per
    id (uuid4) cost more than the rest of a submit. Safe across threads (``list.pop`` is
    atomic) and fork (a child never hands out its parent's unused random parts)."""

    BATCH = 256

    def __init__(self) -> None:
        self._random: list[str] = []           # the random parts, dashes in place
        self._stamp = (-1, "")                 # (ms, its part: "xxxxxxxx-xxxx-")
        os.register_at_fork(after_in_child=self._random.clear)

    def _refill(self) -> None:
        h = os.urandom(10 * self.BATCH).hex()
        self._random.extend([f"{h[i:i + 4]}-{h[i + 4:i + 8]}-{h[i + 8:i + 20]}"
                             for i in range(0, len(h), 20)])

    def __call__(self) -> str:
        while True:
            try:
                r = self._random.pop()
                break
            except IndexError:
                self._refill()
        ms = time.time_ns() // 1_000_000
        stamp = self._stamp                    # (one tuple: threads never mix two halves)
        if stamp[0] != ms:
            t = f"{ms:012x}"
            stamp = self._stamp = (ms, f"{t[:8]}-{t[8:]}-")
        return stamp[1] + r


new_task_id = _TaskIds()


def _forget_client(ref: "weakref.ref[Mesh]") -> None:
    app = ref()
    if app is not None:
        app._client = None
        app._client_lock = threading.Lock()

# eta/expires numbers below this are taken as "seconds from now", above as unix time
_UNIX_TIME_THRESHOLD = 1e9


def aware(value: _dt.datetime) -> _dt.datetime:
    """A naive datetime is UTC, as in Celery (``maybe_make_aware``): code that passes
    ``eta=datetime.utcnow() + ...`` runs when it meant on a machine in any zone."""
    return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value


def _abs_time(value: Any, now: float, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return aware(value).timestamp()
    if isinstance(value, _dt.timedelta):
        return now + value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value >= _UNIX_TIME_THRESHOLD else now + float(value)
    raise ConfigError(f"{what} must be a datetime, timedelta or number, got {type(value).__name__}")


class Mesh:
    """A mesh application: ``@app.task`` registers tasks; ``send_task``/``delay`` run
    them on the nodes named by ``peers`` (or MESH_PEERS, or the ``peers`` setting).

    Celery's constructor arguments that mean something here are taken: ``include``
    (modules meshnode imports), ``config_source`` (``config_from_object``),
    ``namespace`` (for it), ``task_cls`` (the base class of every task); ``broker``
    and ``backend`` are accepted and logged as not used (mesh has neither)."""

    def __init__(self, main: str = "", *, peers: Iterable[str] | str | None = None,
                 mdns: bool | None = None, broker: Any = None, backend: Any = None,
                 include: Iterable[str] | None = None, config_source: Any = None,
                 namespace: str | None = None, task_cls: type[Task] | str | None = None,
                 set_as_current: bool = True, strict_typing: bool = True, **options: Any):
        self.main = main
        # (Celery's) a task's arguments are checked against its function's parameters
        # when it is sent, unless the task says ``typing=False`` (mesh/task.py)
        self.strict_typing = bool(strict_typing)
        self.origin: str | None = None   # where meshnode found this app (module:attr)
        self._options = {"peers": peers, "mdns": mdns, **options}
        self._config = Config.build(**self._options)   # a bad option fails here, at once
        self._config_version = -1
        self.conf = Settings()           # Celery's setting names (mesh/conf.py)
        self.namespace = namespace
        if isinstance(task_cls, str):
            from mesh.conf_sources import import_object
            task_cls = import_object(task_cls)
        if task_cls is not None and not (isinstance(task_cls, type) and issubclass(task_cls, Task)):
            raise ConfigError(f"task_cls must be a subclass of mesh.Task, got {task_cls!r}")
        base = task_cls or Task
        # the app's own Task class: subclass it for handlers and shared options
        self.Task: type[Task] = type("Task", (base,), {"_app": self, "__module__": base.__module__,
                                                       "__qualname__": f"{base.__qualname__}"})
        self._tasks: dict[str, Task] = {}
        self.components = Components()   # the app's own node components (mesh.Component)
        self._routes = AppRoutes()       # task_routes, prepared (mesh/routing.py)
        self._sent_event = (-1, False)   # (app.conf's version, task_send_sent_event)
        self._client: Any = None
        self._eager_kept: dict[str, Slot] = {}   # task_store_eager_result (mesh/eager.py)
        self._client_lock = threading.Lock()
        self._security: Any = None
        for kwarg, setting, value in (("broker", "broker_url", broker),
                                      ("backend", "result_backend", backend),
                                      ("include", "include", include)):
            if value is not None:
                self.conf._set({setting: value}, f"Mesh({main!r}, {kwarg}={value!r})")
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        # periodic tasks (mesh/periodic.py): entries added in code, and Celery's app signals,
        # sent when the schedule is first built (handlers may add entries)
        self._periodic: dict[str, Any] = {}
        self._periodic_signalled = False
        self.on_after_configure = Signal("on_after_configure", ("source",))
        self.on_after_finalize = Signal("on_after_finalize")
        # threads do not survive fork: a child process makes its own client when it needs one
        os.register_at_fork(after_in_child=functools.partial(_forget_client, weakref.ref(self)))
        self._discovery = Discovery()    # autodiscover_tasks(): done when tasks are first read
        self.fixups: list[Any] = []
        if os.environ.get("DJANGO_SETTINGS_MODULE"):   # Django in use: mesh/django/fixup.py
            from mesh.django.fixup import fixup
            self.fixups.append(fixup(self))
        shared.app_created(self, set_as_current)    # every @shared_task declared so far

    def __repr__(self) -> str:
        return f"<Mesh {self.main or '?'} tasks={len(self._tasks)}>"

    # -- configuration ----------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The client's configuration: defaults < app.conf (peers, mdns...) < MESH_*
        variables < the keyword arguments given to Mesh()."""
        if self._client is None and self._config_version != self.conf.version:
            self._config = Config.build(defaults=self.conf.client_options(), **self._options)
            self._config_version = self.conf.version
        return self._config

    def config_from_object(self, obj: Any, namespace: str | None = None,
                           force: bool = False, silent: bool = False) -> None:
        """Read settings from a module, an object, a dict, or their name as a string
        (``"celeryconfig"``, ``"proj.settings:Config"``, ``"django.conf:settings"``).
        With ``namespace="MESH"`` only ``MESH_*`` names are read (``MESH_TASK_ALWAYS_EAGER``
        is ``task_always_eager``). Read at the first use of app.conf (``force``: now);
        ``silent``: a source that cannot be imported is skipped."""
        from mesh.conf_sources import read_object
        namespace = namespace if namespace is not None else self.namespace
        what = f"config_from_object({obj!r}" + (f", namespace={namespace!r})" if namespace else ")")

        def load() -> dict[str, Any]:
            try:
                return read_object(obj, namespace)
            except ConfigError:
                if silent:
                    return {}
                raise
        prefix = namespace.rstrip("_").upper() + "_" if namespace else ""
        self.conf.add_source(what, load, force=force,
                             spell=(lambda name: prefix + name.upper()) if prefix else None)

    def config_from_envvar(self, variable_name: str, silent: bool = False,
                           force: bool = False) -> bool:
        """config_from_object with the module named by an environment variable; False
        (with ``silent``) when the variable is not set."""
        from mesh.conf_sources import read_envvar
        loader = read_envvar(variable_name, silent=silent)
        if loader is None:
            return False
        self.conf.add_source(f"config_from_envvar({variable_name!r})", loader, force=force)
        return True

    def import_modules(self) -> list[str]:
        """Import the modules of the settings ``imports`` and ``include`` (meshnode does,
        after the app's own module): their tasks register on this app."""
        from mesh.conf_sources import import_object
        names = list(dict.fromkeys([*self.conf["imports"], *self.conf["include"]]))
        for name in names:
            if name not in sys.modules:
                try:
                    import_object(name)
                except ConfigError as e:   # the module's own (a misspelt task option): where
                    at = raised_at(e)
                    if not at:
                        raise
                    raise ConfigError(f"{e} (importing {name!r}{at.replace(' (', ', ', 1)}") from e
                except Exception as e:
                    raise ConfigError(f"cannot import {name!r} (from the imports/include "
                                      f"settings): {failure_text(e)}") from e
        return names

    # -- registry ---------------------------------------------------------------------
    @property
    def tasks(self) -> dict[str, Task]:
        """The registered tasks, by name. The first read imports the modules asked for
        by ``autodiscover_tasks`` (and sets Django up first, when Django is in use)."""
        if self._discovery.pending:
            self._discovery.run(self)
        return self._tasks

    def autodiscover_tasks(self, packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
                           related_name: str = "tasks", force: bool = False) -> None:
        """Import ``<package>.<related_name>`` for each package (Celery's): with Django
        and no ``packages``, every installed app. Lazily, when ``app.tasks`` is first
        read (a node reads it as it starts), unless ``force``. A package without such a
        module is skipped; an error inside one is raised."""
        if packages is None:
            if not self.fixups:
                raise ConfigError("autodiscover_tasks() without packages needs Django "
                                  "(DJANGO_SETTINGS_MODULE); otherwise name the packages")
            packages = self.fixups[0].installed_apps
        self._discovery.add(packages, related_name)
        if force:
            self._discovery.run(self)

    def set_current(self) -> None:
        """Make this the app that ``@shared_task`` proxies send through."""
        shared.set_current(self)

    def set_default(self) -> None:
        """Celery's ``app.set_default()`` (Flask's Celery guide calls it): the same as
        ``set_current`` (mesh has one current app per process, not one per thread)."""
        shared.set_current(self)

    @property
    def current_task(self) -> Task | None:
        """Celery's ``app.current_task``: the task running here, None outside a task."""
        return shared.running_task()

    @property
    def current_worker_task(self) -> Task | None:
        """Celery's: the task a node's worker runs here; None outside one (and in eager
        mode, ``Task.apply``)."""
        task = shared.running_task()
        request = getattr(task, "request", None) if task is not None else None
        return None if request is None or request.is_eager else task

    @property
    def timezone(self) -> _dt.tzinfo:
        """Celery's: the zone of ``conf.timezone`` (UTC unless set), in which crontab
        entries are read."""
        from mesh.schedules import zone
        return zone(self.conf.timezone)

    def now(self) -> _dt.datetime:
        """Celery's: the time now, aware, in the app's ``timezone``."""
        return _dt.datetime.now(self.timezone)

    def uses_utc_timezone(self) -> bool:
        """Celery's: True when the app's timezone is UTC."""
        return str(self.timezone) in ("UTC", "Etc/UTC")

    def finalize(self, auto: bool = False) -> None:
        """Celery's: tasks are registered as they are declared here, so what is left is
        what Celery's sends then: ``on_after_configure`` and ``on_after_finalize``, once
        (the periodic entries their receivers add are read then)."""
        self.periodic_schedule()

    @overload
    def task(self, fun: Callable[..., Any]) -> Task: ...
    @overload
    def task(self, fun: None = None, **options: Any) -> Callable[[Callable[..., Any]], Task]: ...

    def task(self, fun: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a task; usable bare or with options (and ``base=``,
        a subclass of ``app.Task`` whose handlers and class options it takes)."""
        def register(f: Callable[..., Any]) -> Task:
            opts = dict(options)
            base = opts.pop("base", None) or self.Task
            if not (isinstance(base, type) and issubclass(base, Task)):
                raise ConfigError(f"base must be a subclass of app.Task, got {base!r}")
            ignore_options({k: opts.pop(k) for k in list(opts) if k in TASK_OPTIONS},
                           TASK_OPTIONS, "@app.task", "", self.conf._warned)
            name = opts.pop("name", None) or base.name or f"{f.__module__}.{f.__qualname__}"
            if name in self._tasks and getattr(self._tasks[name], "fun", None) is not f:
                raise ConfigError(f"a different task is already registered as {name!r}")
            # a class per task, as Celery makes: its attributes read the task's own options
            cls: type[Task] = type(f.__name__, (base,), {
                **OPTION_PROPERTIES, "__module__": f.__module__, "__qualname__": f.__qualname__})
            t = object.__new__(cls)
            t._bind(self, f, name, opts)
            init = type(t).__init__
            if init is not Task.__init__:
                init(t)               # a base class's own __init__, called as Celery does
            self._tasks[name] = t
            return t
        if fun is not None:
            if options:
                raise ConfigError("use @app.task or @app.task(option=...), not both")
            return register(fun)
        return register

    def register_task(self, task: Task | type[Task], **options: Any) -> Task:
        """Register a class-based task (a subclass of app.Task with a ``run`` method and
        a ``name``), as Celery's ``app.register_task``."""
        t = task() if isinstance(task, type) else task
        if not isinstance(t, Task):
            raise ConfigError(f"register_task needs a Task subclass or instance, got {task!r}")
        cls = type(t)
        name = options.pop("name", None) or cls.name or f"{cls.__module__}.{cls.__qualname__}"
        if name in self._tasks and self._tasks[name] is not t:
            raise ConfigError(f"a different task is already registered as {name!r}")
        t._bind(self, None, name, options)
        self._tasks[name] = t
        return t

    # -- periodic tasks (docs/periodic.md) ----------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Iterable[Any] = (),
                          kwargs: dict[str, Any] | None = None, name: str | None = None,
                          **options: Any) -> str:
        """Run ``sig`` (``task.s(...)``) on ``schedule`` (a crontab, an interval, seconds
        or a timedelta) on the mesh; no beat process: the nodes fire it. ``options``:
        priority, expires, time_limit, soft_time_limit, and mesh's ``catch_up`` (seconds
        after which a missed run is skipped). Returns the entry's name."""
        from mesh.periodic import entry_from_signature
        entry = entry_from_signature(schedule, sig, args, kwargs, name, **options)
        self._periodic[entry.name] = entry
        return entry.name

    def periodic_schedule(self) -> Any:
        """The periodic entries (``mesh.periodic.Schedule``); the first call sends
        ``on_after_configure`` and ``on_after_finalize``."""
        from mesh.periodic import build
        self.tasks  # noqa: B018  (discovery first: task modules may connect on_after_finalize)
        return build(self)

    # -- client -----------------------------------------------------------------------
    @property
    def security(self) -> Any:
        """How this app's sockets are secured (``mesh.security.curve.Security``): with
        ``keys=DIR`` (or MESH_KEYS), CurveZMQ as a client key of that directory."""
        if self._security is None:
            from mesh.security.curve import Security
            from mesh.security.keys import CLIENT
            self._security = Security.load(self.config.keys, CLIENT, self.config.key_name)
        return self._security

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    from mesh.client.io import Client
                    from mesh.conf import CLIENT_OPTIONS
                    # nodes found by mDNS are this app's mesh's; given peers say which mesh
                    mdns = not self.config.peers and self.config.mdns
                    self._client = Client(self.config, self._seeds(),
                                          mesh=self.main if mdns else None, security=self.security)
                    self.conf.freeze(CLIENT_OPTIONS, "this app's client already runs with the "
                                     "old value; set it before the first task is sent")
        return self._client

    def _in_node(self, seeds: list[str], keys: str) -> None:
        """This process is a node's child: a task that sends tasks (``add.delay()`` in a
        task) reaches the mesh through its node (its front door, then its seeds) unless
        the app names peers of its own, and with the node's keys unless it has its own.
        Without this a child looked for nodes by mDNS only, and a node started with
        ``--peers``/``--no-mdns`` failed every task that sends one."""
        cfg = self.config
        if not cfg.peers:
            self._options = {**self._options, "peers": seeds, "mdns": False}
        if keys and not cfg.keys:
            self._options = {**self._options, "keys": keys, "key_name": "mesh"}
        self._config_version = -1       # rebuilt from the new options at the next use
        self._client, self._security = None, None

    def _seeds(self) -> list[str]:
        """Where the client starts: configured peers, else the nodes of this app's mesh
        (``Mesh("billing")``: nodes of mesh billing) found by mDNS."""
        if self.config.peers or not self.config.mdns:
            return list(self.config.peers)
        from mesh.discovery.mdns import browse_sync
        others: set[str] = set()
        found = list(browse_sync(timeout=self.config.discovery_timeout,
                                 interfaces=list(self.config.mdns_interfaces) or None,
                                 mesh=self.main, ignored=others).values())
        if not found:      # say what mDNS saw: a node whose app has another name is no peer
            seen = (f" (only nodes of mesh {', '.join(map(repr, sorted(others)))}: a node "
                    "serves the mesh its app is named for, Mesh(NAME))" if others else "")
            raise ConfigError(
                f"no nodes to send tasks to: mDNS found no node of mesh {self.main!r} within "
                f"{self.config.discovery_timeout:g} s{seen}; start a node with this app, or "
                "pass peers=['tcp://HOST:PORT'] to Mesh, set MESH_PEERS or the app's 'peers' "
                "setting (CELERY_PEERS in Django's settings read with namespace='CELERY'; "
                "there is no broker_url)")
        return found

    def send_task(self, name: str, args: Iterable[Any] | None = None,
                  kwargs: dict[str, Any] | None = None, task_id: str | None = None,
                  countdown: float | None = None, eta: Any = None, expires: Any = None,
                  priority: int | None = None, time_limit: float | None = None,
                  soft_time_limit: float | None = None, link: Any = None,
                  link_error: Any = None, headers: dict[str, Any] | None = None,
                  shadow: str | None = None, ignore_result: bool | None = None,
                  queue: str | None = None, **options: Any) -> AsyncResult:
        """Send a task by name (the code need not be importable here). It goes to a
        node serving its queue (``queue``, else ``task_routes``, else
        ``task_default_queue``) that registered it (docs/routing.md). With the setting
        ``task_always_eager`` a task registered here runs here (an EagerResult).
        ``link`` and ``link_error``: signatures run when it succeeds or fails
        (docs/workflows.md)."""
        ignore_options(options, CALL_OPTIONS, "send_task", CALL_KNOWN, self.conf._warned)
        if self.conf["task_always_eager"]:
            task = self.tasks.get(name) if isinstance(name, str) else None
            if task is None:
                raise NotRegistered(f"task_always_eager is set, so send_task runs tasks here, "
                                    f"and task {name!r} is not registered in this process")
            return task.apply(args, kwargs, task_id=task_id, headers=headers,  # type: ignore[return-value]
                              shadow=shadow, ignore_result=ignore_result)
        hdr = dict(headers or {})
        if shadow is not None:
            hdr["shadow"] = shadow
        if ignore_result is not None:
            hdr["ignore_result"] = ignore_result
        return self._send(name, args, kwargs, task_id, countdown, eta, expires, priority,
                          time_limit, soft_time_limit, link, link_error, hdr or None,
                          queue=queue)

    def _send(self, name: str, args: Iterable[Any] | None = None,
              kwargs: dict[str, Any] | None = None, task_id: str | None = None,
              countdown: float | None = None, eta: Any = None, expires: Any = None,
              priority: int | None = None, time_limit: float | None = None,
              soft_time_limit: float | None = None, link: Any = None,
              link_error: Any = None, headers: dict[str, Any] | None = None,
              queue: str | None = None) -> AsyncResult:
        if not isinstance(name, str) or not name:
            raise NotRegistered(f"task name must be a non-empty string, got {name!r}")
        if priority is not None and (type(priority) is not int or not 0 <= priority <= 9):
            raise ConfigError(f"priority must be 0..9 (9 runs first), got {priority!r}: mesh "
                              "has no broker's range (RabbitMQ's x-max-priority, Redis's steps)")
        for what, limit in (("time_limit", time_limit), ("soft_time_limit", soft_time_limit)):
            if limit is not None and not 0 < limit < MAX_TIME_LIMIT:
                raise ConfigError(f"{what} must be > 0 and under {MAX_TIME_LIMIT:g} s, got {limit!r}")
        now = time.time()
        if countdown is not None and eta is not None:
            raise ConfigError("give countdown or eta, not both")
        eta_t = now + float(countdown) if countdown is not None else _abs_time(eta, now, "eta")
        if eta_t is not None and eta_t <= now:
            eta_t = None
        if kwargs is not None and not isinstance(kwargs, dict):
            raise EncodeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        headers = dict(headers) if headers else {}
        task_id = task_id or new_task_id()
        if link is not None or link_error is not None:
            from mesh.workflow.submit import callback_headers
            headers = callback_headers(headers, task_id, link, link_error)
        if args is not None and not isinstance(args, (list, tuple)):
            args = list(args)          # read once: a router may look at them too
        q = self._routes.queue(self.conf, name, call_queue=queue, args=args or (),
                               kwargs=kwargs, task=self.tasks.get(name))
        headers["queue"] = q
        conf = self.conf
        if self._sent_event[0] != conf.version:       # (read again when app.conf changes)
            self._sent_event = (conf.version, bool(conf.task_send_sent_event))
        if self._sent_event[1]:                       # the node publishes task-sent for us
            headers["sent_at"] = now
            headers["sent_by"] = f"{socket.gethostname()}:{os.getpid()}"
        expires_t = _abs_time(expires, now, "expires")
        body = None                        # the publish signals' body, when someone listens
        if signals.before_task_publish.has_receivers() or signals.after_task_publish.has_receivers():
            from mesh.client import publish
            body, headers, told = publish.before(        # with the queue the task was routed to
                name, task_id, args or (), kwargs if kwargs is not None else {}, headers, q,
                priority or 0, eta=eta_t, expires=expires_t, time_limit=time_limit,
                soft_time_limit=soft_time_limit)
            args, kwargs = body[0], body[1]
        # encode(Submit(...)) with its checks, without the message object
        # (with the largest frame this client reads: no node sends it a bigger one)
        limit = self.config.max_message_size
        frame = encode_submit(task_id, name, codec.dump_call(args, kwargs), priority or 0, eta_t,
                              expires_t, time_limit, soft_time_limit, 0, headers, limit)
        if self._client is not None and self._client.lookup(task_id):
            raise ConfigError(f"task id {task_id} is already outstanding in this client")
        if len(frame) > limit:
            raise EncodeError(f"task {name} is {len(frame)} bytes encoded, over the limit of "
                              f"{limit} (max_message_size)")
        slot = Slot(task_id, frame, name=name, queue=q)
        self.client.submit(slot)
        if body is not None:
            from mesh.client import publish
            publish.after(name, body, told, q)
        from mesh.result import AsyncResult  # not in a node before it forks (round 15)
        return AsyncResult(task_id, self, slot)

    @property
    def control(self) -> Any:
        """Remote control and inspection of every node (``mesh.client.control.Controller``)."""
        from mesh.client.control import Controller
        return Controller(self._seeds, security=self.security)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        from mesh.result import AsyncResult
        return AsyncResult(task_id, self)

    def GroupResult(self, group_id: str, results: list[Any] | None = None) -> Any:
        """A group's result by id, in any process (its members are read from the mesh
        when asked for)."""
        from mesh.workflow.results import GroupResult
        return GroupResult(group_id, results, self)

    def signature(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """``signature(...)`` sent through this app (``app.signature("tasks.add", (2, 2))``)."""
        from mesh.canvas import signature
        kwargs["app"] = self
        return signature(task, *args, **kwargs)

    def _lookup_slot(self, task_id: str) -> Slot | None:
        kept = self._eager_kept.get(task_id) if self._eager_kept else None
        if kept is not None:
            return kept
        return self._client.lookup(task_id) if self._client is not None else None

    def start(self, argv: Iterable[str] | None = None) -> int:
        """Celery's: run a command for this app, ``argv`` being what follows ``celery``
        (``sys.argv`` when None): ``worker ...`` runs ``meshnode -A <this app> ...``,
        anything else ``meshctl -A <this app> ...`` (``inspect active``), here, in this
        process. So ``if __name__ == '__main__': app.start()`` at the end of
        ``proj/celery.py`` makes ``python -m proj.celery worker -l INFO`` a node.
        Returns 0 once the command ended well; exits with its status otherwise."""
        from mesh.cli.start import start
        return start(self, argv)

    def worker_main(self, argv: Iterable[str] | None = None) -> int:
        """Celery's: ``app.worker_main(['worker', '--loglevel=INFO'])`` runs a node for
        this app (``meshnode -A <this app> --loglevel=INFO``); see ``start``."""
        args = list(sys.argv if argv is None else argv)
        if "worker" not in args:
            raise ValueError("The worker sub-command must be specified in argv.\n"
                             "Use app.start() to programmatically start other commands.")
        return self.start(args)

    def close(self, patient: bool = True) -> None:
        """Stop the client's I/O thread and close its sockets, once nodes have taken
        every task sent: for as long as they keep taking them (tasks waiting for room
        under the nodes' quotas go as earlier ones finish; up to 10 minutes), or with
        ``patient=False`` for 5 s at most (a server's shutdown with a deadline)."""
        if self._client is not None:
            self._client.close(patient=patient)
            self._client = None

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
