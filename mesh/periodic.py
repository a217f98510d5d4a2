"""Periodic entries: what ``app.add_periodic_task`` and ``app.conf.beat_schedule`` say,
checked once and turned into plain values every node agrees on.

An :class:`Entry` is a name, a task call (name, args, kwargs, options), a schedule and a
catch-up window. A run of an entry is identified by (entry name, due time): its task id
is ``run_id(name, due)``, a uuid5, so every node derives the same id for the same run.

The schedule is built once per process (``entries(app)``): first the app's
``on_after_configure`` and ``on_after_finalize`` signals are sent (handlers may call
``add_periodic_task``), then ``conf.beat_schedule`` is read and the entries added in
code are laid over it (the same name: the one added in code wins).
"""
from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mesh.conf_names import CALL_OPTIONS
from mesh.digest import sha1
from mesh.exceptions import ConfigError, EncodeError
from mesh.schedules import BaseSchedule, to_schedule, zone
from mesh.security.text import safe_logger
from mesh.wire import codec
from mesh.wire.protocol import Submit

if TYPE_CHECKING:
    from mesh.app import Mesh

log = safe_logger("mesh.beat")

# protocol: changing it changes every periodic run's task id
RUN_NAMESPACE = uuid.UUID("6c3f1f5e-8a52-5b8e-9a3c-2f0d6b1c7e41")

# headers of a periodic run's Submit (the task reads them in self.request.headers)
HEADER_ENTRY = "periodic_entry"
HEADER_DUE = "periodic_due"

ENTRY_KEYS = {"task", "schedule", "args", "kwargs", "options", "relative", "catch_up"}
# apply_async options an entry may carry, and what each means for a run
OPTION_KEYS = {"priority", "expires", "time_limit", "soft_time_limit", "queue"}
REFUSED_OPTIONS = {
    "countdown": "a periodic run starts at its due time; use the schedule to shift it",
    "eta": "a periodic run starts at its due time; use the schedule to shift it",
    "task_id": "a periodic run's id is derived from (entry name, due time)",
    "link": "callbacks are not available in this version of mesh yet",
    "link_error": "callbacks are not available in this version of mesh yet",
}


def _seconds(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ConfigError(f"{what} must be a number of seconds > 0 or a timedelta, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Entry:
    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    priority: int = 0
    expires: float | None = None        # s after the due time: not started later than that
    time_limit: float | None = None
    soft_time_limit: float | None = None
    catch_up: float | None = None       # s: a run later than this is skipped; None: no limit
    queue: str | None = None            # the queue its runs go to (None: task_routes decide)

    def key(self) -> str:
        """Everything that makes the entry what it is, as stable text."""
        return repr((self.name, self.task, self.schedule.key(), self.args,
                     sorted((self.kwargs or {}).items()), self.priority, self.expires,
                     self.time_limit, self.soft_time_limit, self.catch_up,
                     *((self.queue,) if self.queue is not None else ())))

    def run_id(self, due: float) -> str:
        return run_id(self.name, due)

    def submit(self, due: float) -> Submit:
        """The Submit of this entry's run due at ``due``."""
        msg = Submit(
            task_id=self.run_id(due), name=self.task,
            payload=codec.dump_call(list(self.args), dict(self.kwargs or {})),
            priority=self.priority,
            expires=due + self.expires if self.expires is not None else None,
            time_limit=self.time_limit, soft_time_limit=self.soft_time_limit,
            headers={HEADER_ENTRY: self.name, HEADER_DUE: due,
                     **({"queue": self.queue} if self.queue is not None else {})})
        msg.validate()
        return msg

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "schedule": self.schedule.describe(),
                "args": repr(self.args), "kwargs": repr(dict(self.kwargs or {})),
                "catch_up": self.catch_up}


def run_id(name: str, due: float) -> str:
    """The task id of the run of entry ``name`` due at ``due`` (unix time)."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{name}\x00{float(due)!r}"))


def make_entry(name: str, task: str, schedule: Any, args: Any = (), kwargs: Any = None,
               options: Mapping[str, Any] | None = None, catch_up: Any = None) -> Entry:
    """An Entry, checked: a bad value is a ConfigError naming the entry."""
    where = f"periodic entry {name!r}"
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ConfigError(f"a periodic entry needs a name of 1..200 characters, got {name!r}")
    if not isinstance(task, str) or not task:
        raise ConfigError(f"{where}: 'task' must be a task name, got {task!r}")
    try:
        sched = to_schedule(schedule)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise ConfigError(f"{where}: args must be a list or tuple, got {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: kwargs must be a dict, got {type(kwargs).__name__}")
    try:
        codec.dump_call(list(args), dict(kwargs or {}))
    except EncodeError as e:
        raise ConfigError(f"{where}: its arguments cannot be sent: {e}") from None
    opts = dict(options or {})
    for key in [k for k in opts if k in CALL_OPTIONS and k not in OPTION_KEYS]:
        log.warning("%s: option %s=%r is not used by mesh: %s", where, key, opts.pop(key),
                    CALL_OPTIONS[key])      # a broker's (routing_key, exchange...), as apply_async
    for key in opts:
        if key in REFUSED_OPTIONS:
            raise ConfigError(f"{where}: option {key!r} is refused: {REFUSED_OPTIONS[key]}")
        if key not in OPTION_KEYS:
            raise ConfigError(f"{where}: unknown option {key!r} (known: {', '.join(sorted(OPTION_KEYS))})")
    priority = opts.get("priority") or 0
    if type(priority) is not int or not 0 <= priority <= 9:
        raise ConfigError(f"{where}: priority must be 0..9, got {priority!r}")
    queue = opts.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigError(f"{where}: queue must be a queue's name, got {queue!r}")
    return Entry(name=name, task=task, schedule=sched, args=tuple(args),
                 kwargs=dict(kwargs or {}), priority=priority,
                 expires=_seconds(opts.get("expires"), f"{where}: expires"),
                 time_limit=_seconds(opts.get("time_limit"), f"{where}: time_limit"),
                 soft_time_limit=_seconds(opts.get("soft_time_limit"), f"{where}: soft_time_limit"),
                 catch_up=_seconds(catch_up, f"{where}: catch_up"), queue=queue)


def entry_from_signature(schedule: Any, sig: Any, args: Any = (), kwargs: Any = None,
                         name: str | None = None, catch_up: Any = None, **options: Any) -> Entry:
    """What ``app.add_periodic_task`` takes, as in Celery: ``sig`` is a signature
    (``add.s(1, 1)``) or a task; ``args``/``kwargs`` are added to it."""
    # (here: the beat component loads this module before a node forks its children)
    from mesh.canvas import Signature
    if isinstance(sig, Signature):
        sig = sig.clone(args or None, kwargs)
    elif isinstance(getattr(sig, "name", None), str) and callable(sig):
        sig = Signature(sig.name, tuple(args or ()), kwargs or {})
    else:
        raise ConfigError(f"add_periodic_task needs a signature (task.s(...)) or a task, got {sig!r}")
    return make_entry(name or repr(sig), sig.task, schedule, sig.args, dict(sig.kwargs),
                      {**sig.options, **options}, catch_up)


def entry_from_conf(name: str, spec: Any) -> Entry:
    """One item of ``conf.beat_schedule`` (Celery's format)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"beat_schedule[{name!r}] must be a dict with 'task' and 'schedule', "
                          f"got {type(spec).__name__}")
    unknown = set(spec) - ENTRY_KEYS
    if unknown:
        raise ConfigError(f"beat_schedule[{name!r}]: unknown key(s) {sorted(unknown)} "
                          f"(known: {', '.join(sorted(ENTRY_KEYS))})")
    for need in ("task", "schedule"):
        if need not in spec:
            raise ConfigError(f"beat_schedule[{name!r}] needs {need!r}")
    if not isinstance(spec.get("relative", False), bool):
        raise ConfigError(f"beat_schedule[{name!r}]: relative must be True or False")
    # Celery's relative=True runs an interval "by the clock", which mesh's intervals always
    # do (due at fixed multiples of their period); relative=False counts from the beat's
    # start in Celery, which a mesh of peers cannot agree on (docs/periodic.md): the same
    options = spec.get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"beat_schedule[{name!r}]: options must be a dict")
    return make_entry(name, spec["task"], spec["schedule"], spec.get("args") or (),
                      spec.get("kwargs"), options, spec.get("catch_up"))


@dataclass(frozen=True)
class Schedule:
    """An app's periodic entries, their zone, and a digest nodes compare."""
    entries: Mapping[str, Entry]
    timezone: dt.tzinfo
    digest: str


def build(app: "Mesh") -> Schedule:
    """The app's schedule. The first call sends on_after_configure and on_after_finalize."""
    if not app._periodic_signalled:
        app._periodic_signalled = True
        app.on_after_configure.send(sender=app, source=app.conf)
        app.on_after_finalize.send(sender=app)
    conf = app.conf.beat_schedule
    if not isinstance(conf, Mapping):
        raise ConfigError(f"beat_schedule must be a dict of entries, got {type(conf).__name__}")
    entries: dict[str, Entry] = {name: entry_from_conf(name, spec) for name, spec in conf.items()}
    entries.update(app._periodic)
    tz = zone(app.conf.timezone)
    h = sha1(str(tz).encode())
    for name in sorted(entries):
        h.update(entries[name].key().encode())
    return Schedule(entries, tz, h.hexdigest()[:12] if entries else "")


def merge_views(views: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the nodes' answers to the ``beat`` control command (node -> payload, or
    ``{"error": text}``) into ``{"entries": [...], "nodes": {node: summary},
    "errors": {node: text}}``: per entry, the newest last run and last result any node
    knows, ``fires_on`` when every node names the same firing node (else None), and
    ``fires_on_views`` (firing node -> the nodes that see it so; more than one key
    only while membership changes). meshctl beat and the dashboard show this."""
    entries: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for node, view in views.items():
        if not isinstance(view, Mapping) or "error" in view or not isinstance(view.get("entries"), list):
            errors[node] = str(view.get("error") if isinstance(view, Mapping) else view)
            continue
        nodes[node] = {k: view.get(k) for k in ("schedule", "timezone", "settled", "firers",
                                                "fired", "skipped", "resent", "in_flight")}
        for row in view["entries"]:
            if not isinstance(row, Mapping) or not isinstance(row.get("name"), str):
                continue
            merged = entries.setdefault(row["name"], {**row, "fires_on_views": {}})
            merged["fires_on_views"].setdefault(str(row.get("fires_on")), []).append(node)
            merged["waiting"] = max(merged.get("waiting") or 0, row.get("waiting") or 0)
            for key in ("last_run", "last_result"):
                new, best = row.get(key), merged.get(key)
                if isinstance(new, Mapping) and (not isinstance(best, Mapping)
                                                 or new.get("due", 0) > best.get("due", 0)):
                    merged[key] = dict(new)
    out = []
    for name in sorted(entries):
        e = entries[name]
        views_of = e["fires_on_views"]
        e["fires_on"] = next(iter(views_of)) if len(views_of) == 1 else None
        out.append(e)
    return {"entries": out, "nodes": nodes, "errors": errors}


__all__ = ["Entry", "Schedule", "build", "entry_from_conf", "entry_from_signature",
           "make_entry", "merge_views", "run_id", "HEADER_DUE", "HEADER_ENTRY"]
