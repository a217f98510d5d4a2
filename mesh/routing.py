"""Which queue a task goes to: Celery's ``task_routes``, ``queue=`` and the default queue.

Pure functions of the task's name, its call and the app's settings, so they are
tested with tables (tests/unit/test_routing.py). The queue wins in this order, as in
Celery (its routing guide, "Routers"):

1. ``apply_async(queue=...)`` / ``send_task(queue=...)``;
2. the task's own option, ``@app.task(queue=...)``;
3. ``app.conf.task_routes``: the first router that gives a route;
4. ``app.conf.task_default_queue`` (``"celery"``).

``task_routes`` takes Celery's forms: a dict of task names and globs
(``{"reports.*": {"queue": "reports"}, "tasks.add": "math"}``), a list of pairs in
order (``[("feed.*", {"queue": "feeds"}), ...]``), a router function
``route(name, args, kwargs, options, task=None, **kw)`` returning a route or None, the
dotted path of one (``"proj.routers.route"``), or a list or tuple of any of these,
tried in order. A route is a queue name or a dict with ``"queue"``; its other keys
(``routing_key``, ``exchange``: broker words) are not used by mesh.

A glob's ``*`` stands for one or more characters, as in Celery, but a glob must match
the whole name (Celery's matches a prefix: its ``"*.add"`` also routes
``"x.add_many"``); a compiled regular expression (``re.compile(...)``) is used as
Celery uses it (``match``, from the start of the name).
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.exceptions import ConfigError
from mesh.security.text import safe_logger

log = safe_logger("mesh.routing")

MAX_QUEUE_LEN = 200          # characters in a queue name
Router = Callable[..., Any]   # (name, args, kwargs, options, task=None) -> route | None
_NOT_USED = frozenset({"routing_key", "exchange", "exchange_type", "delivery_mode", "priority"})
_said: set[str] = set()      # routes that name no queue (their broker keys), said once each


def check_queue(queue: Any, where: str) -> str:
    """A queue name as given by the user, checked: a non-empty str of printable
    characters without commas (``meshnode --queues a,b`` splits on them)."""
    if not isinstance(queue, str) or not queue or len(queue) > MAX_QUEUE_LEN \
            or "," in queue or not queue.isprintable() or queue != queue.strip():
        raise ConfigError(f"{where}: a queue name must be a non-empty string of up to "
                          f"{MAX_QUEUE_LEN} printable characters, without commas or "
                          f"surrounding spaces, got {queue!r}")
    return queue


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """A Celery route glob as a regular expression over the whole name: ``*`` is one
    or more characters, everything else stands for itself."""
    return re.compile(".+?".join(re.escape(part) for part in glob.split("*")) + r"\Z")


def _queue_of(route: Any, where: str) -> str | None:
    """The queue a route names (a queue name, or a dict with "queue"), else None."""
    if route is None:
        return None
    if isinstance(route, str):
        return check_queue(route, where)
    if isinstance(route, Mapping):
        queue = route.get("queue")
        extra = set(route) - {"queue"} - _NOT_USED
        if extra:
            raise ConfigError(f"{where}: mesh routes take only 'queue' (and ignores "
                              f"{', '.join(sorted(_NOT_USED))}), got {sorted(extra)}")
        given = ", ".join(f"{k}={route[k]!r}" for k in ("exchange", "routing_key") if k in route)
        if queue is None and given and given not in _said:
            _said.add(given)      # Celery's broker routes by them; here it is not routed
            log.warning("%s: this route names no queue (%s): mesh routes by queue only, so "
                        "the task goes where the next router or task_default_queue says; "
                        "add 'queue': NAME", where, given)
        return None if queue is None else check_queue(queue, where)
    raise ConfigError(f"{where}: a route must be a queue name or a dict with 'queue', "
                      f"got {type(route).__name__}")


@dataclass(frozen=True)
class MapRoute:
    """Celery's MapRoute: exact names first, then globs and regular expressions in
    the order given."""
    exact: Mapping[str, Any]
    patterns: tuple[tuple[re.Pattern[str], Any], ...]

    @classmethod
    def build(cls, items: Any, where: str) -> "MapRoute":
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        exact: dict[str, Any] = {}
        patterns: list[tuple[re.Pattern[str], Any]] = []
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ConfigError(f"{where}: items must be (name or glob, route) pairs, got {pair!r}")
            key, route = pair
            _queue_of(route, f"{where}[{key!r}]")          # a bad route fails now, not per call
            if isinstance(key, re.Pattern):
                patterns.append((key, route))
            elif isinstance(key, str) and "*" in key:
                patterns.append((glob_to_regex(key), route))
            elif isinstance(key, str):
                exact[key] = route
            else:
                raise ConfigError(f"{where}: a key must be a task name, a glob or a compiled "
                                  f"regular expression, got {key!r}")
        return cls(exact, tuple(patterns))

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self.exact:
            return self.exact[name]
        for pattern, route in self.patterns:
            if pattern.match(name):
                return route
        return None


def _import(path: str, where: str) -> Router:
    module, sep, attr = path.replace(":", ".").rpartition(".")
    try:
        if not sep:
            raise ImportError(f"{path!r} is not a dotted path")
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}: cannot import router {path!r}: {e}") from None
    if not callable(obj):
        raise ConfigError(f"{where}: router {path!r} is not callable")
    return obj  # type: ignore[no-any-return]


def prepare(routes: Any, where: str = "task_routes", imports: bool = True) -> tuple[Router, ...]:
    """``task_routes`` as a tuple of routers (Celery's ``prepare``); a bad form is a
    ConfigError naming what is wrong. ``imports=False`` checks a dotted path's shape
    only (a settings module may name a router whose module imports the app: it is
    imported at the first send, as Celery does)."""
    if routes is None:
        return ()
    items = routes if isinstance(routes, (list, tuple)) else (routes,)
    out: list[Router] = []
    for i, r in enumerate(items):
        here = f"{where}[{i}]" if items is routes else where
        if isinstance(r, Mapping):
            out.append(MapRoute.build(r, here))
        elif isinstance(r, (list, tuple)):
            out.append(MapRoute.build(r, here))        # Celery's "items" format
        elif isinstance(r, str):
            if imports:
                out.append(_import(r, here))
            elif "." not in r.replace(":", "."):
                raise ConfigError(f"{here}: a router given by name must be a dotted path "
                                  f"(proj.routers.route), got {r!r}")
        elif callable(r):
            out.append(r)
        else:
            raise ConfigError(f"{here}: a router must be a dict, a list of pairs, a function "
                              f"or its dotted path, got {type(r).__name__}")
    return tuple(out)


def lookup(routers: Sequence[Router], name: str, args: Sequence[Any] = (),
           kwargs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
           task: Any = None) -> str | None:
    """The queue the first router that answers names for this call, or None."""
    for router in routers:
        if isinstance(router, MapRoute):
            route = router(name)
        else:
            route = getattr(router, "route_for_task", None)
            if route is not None:                       # a pre-4.0 Celery router class
                route = route(name, args, kwargs)
            else:
                route = router(name, args, kwargs or {}, dict(options or {}), task=task)
        queue = _queue_of(route, f"the route task_routes gave {name!r}")
        if queue is not None:
            return queue
    return None


def route(name: str, *, call_queue: str | None = None, task_queue: str | None = None,
          routers: Sequence[Router] = (), default_queue: str = "celery",
          args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
          options: Mapping[str, Any] | None = None, task: Any = None) -> str:
    """The queue a call of task ``name`` goes to (the order is in the module's docs)."""
    if call_queue is not None:
        return check_queue(call_queue, "queue")
    if task_queue is not None:
        return task_queue
    queue = lookup(routers, name, args, kwargs, options, task) if routers else None
    return queue if queue is not None else default_queue


class AppRoutes:
    """An app's routing, prepared once per value of its settings: what ``send_task``
    and the node use. Static routes (dicts, pairs) are cached per task name; a router
    function is asked on every call, as Celery does. The settings are read again when
    ``app.conf`` changes (assign ``task_routes`` again after changing the dict in place)."""

    def __init__(self) -> None:
        self._version: Any = None          # app.conf's version the routes were read at
        self._key: tuple[int, int, Any] | None = None
        self._routers: tuple[Router, ...] = ()
        self._static = True
        self._cache: dict[str, str] = {}

    def _refresh(self, task_routes: Any, default_queue: Any) -> None:
        size = len(task_routes) if isinstance(task_routes, (Mapping, list, tuple)) else -1
        key = (id(task_routes), size, default_queue)
        if key == self._key:
            return
        self._routers = prepare(task_routes)
        self._static = all(isinstance(r, MapRoute) for r in self._routers)
        self._default = check_queue(default_queue, "task_default_queue")
        self._cache = {}
        self._key = key

    def queue(self, conf: Mapping[str, Any], name: str, task_queue: str | None = None,
              call_queue: str | None = None, args: Sequence[Any] = (),
              kwargs: Mapping[str, Any] | None = None, task: Any = None) -> str:
        if call_queue is not None:
            return check_queue(call_queue, "queue")
        if task_queue is not None:
            return task_queue
        version = getattr(conf, "version", None)    # app.conf says when a setting changed
        if version is None or version != self._version:
            self._refresh(conf["task_routes"], conf["task_default_queue"])
            self._version = version
        if self._static:
            q = self._cache.get(name)
            if q is None:
                q = self._cache[name] = route(name, routers=self._routers,
                                              default_queue=self._default)
            return q
        return route(name, routers=self._routers, default_queue=self._default, args=args,
                     kwargs=kwargs, options={}, task=task)
