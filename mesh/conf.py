"""``app.conf``: settings with Celery's names, where mesh has the same idea.

A mapping that also reads and writes as attributes (``app.conf.timezone = "UTC"`` and
``app.conf["timezone"]`` are the same), with ``update``. Only known names are
accepted: a misspelt one fails with the closest known name. A Celery setting that
mesh has no use for (``broker_url``, ``result_backend``, ``task_serializer``...) is
accepted, so a Celery configuration moves over unchanged, and logged once as a warning
that says what mesh does instead (mesh/conf_names.py): nothing set is silently ignored.

Values come in three layers, as in Celery: the defaults, then what configuration
sources gave (``app.config_from_object``, ``app.config_from_envvar``, in call order),
then what code set (``app.conf.x = ...``, ``app.conf.update(...)``), which wins
whatever the order of the calls. Sources are read lazily, at the first use of
``app.conf`` after the call (so ``config_from_object("django.conf:settings")`` can run
before Django's settings are ready), or at once with ``force=True``.

Settings a node uses (``worker_concurrency``, ``task_time_limit``...) reach
``meshnode`` too: it imports the app's module, so what the module sets in code is what
the node reads; its command-line flags and ``MESH_*`` variables still win
(``node_options``).
"""
from __future__ import annotations

import copy
import datetime
import math
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from mesh.conf_names import FIXED, NOT_USED, NOT_USED_PREFIXES, NOT_YET
from mesh.einfo import failure_text
from mesh.exceptions import ConfigError
from mesh.security.text import MULTILINE, printable, safe_logger

log = safe_logger("mesh.conf")

# name -> default. Grouped as Celery's configuration reference groups them.
DEFAULTS: dict[str, Any] = {
    # time and date
    "timezone": "UTC",                  # crontab entries are read in this zone, DST included
    # periodic tasks (no beat process: every node carries the schedule)
    "beat_schedule": {},
    # task defaults (a task's own option wins; task_annotations win over both)
    "task_annotations": None,
    "task_always_eager": False,         # apply_async/delay run here, now (Task.apply)
    "task_eager_propagates": False,     # ... and an eager failure raises at once
    "task_store_eager_result": False,   # ... and AsyncResult(id) in this process finds its
                                        # result (kept here: mesh/eager.py)
    "task_acks_late": True,             # mesh's default (Celery's is False): docs/design.md
    "task_reject_on_worker_lost": False,
    "task_ignore_result": False,
    "task_store_errors_even_if_ignored": False,
    "task_track_started": False,
    "task_default_rate_limit": None,
    "task_default_priority": None,
    "task_routes": None,                # routers: which queue a task goes to (docs/routing.md)
    "task_default_queue": "celery",     # the queue of a task nothing routes elsewhere
    "task_send_sent_event": False,      # the node publishes task-sent for this client's
                                        # tasks (docs/events.md)
    "task_time_limit": None,            # the node's default hard limit (meshnode --time-limit)
    "task_soft_time_limit": None,
    # results
    "result_expires": 86400.0,          # s, or a timedelta; None: never (meshnode --result-expires)
    # worker (meshnode)
    "imports": (),                      # modules meshnode imports after the app (tasks elsewhere)
    "include": (),
    "worker_concurrency": None,
    "worker_pool": None,                # prefork, threads or solo (meshnode --pool)
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,  # KiB, as in Celery
    "worker_disable_rate_limits": False,
    "worker_send_task_events": True,    # mesh builds events only when someone subscribes
    "worker_hijack_root_logger": True,
    "worker_log_format": None,          # the node's log line format (logging % style)
    # mesh's own options (mesh.config.Config), so one settings file holds everything:
    # with config_from_object("django.conf:settings", namespace="MESH") a MESH_PEERS
    # setting is the same as the MESH_PEERS environment variable
    "peers": None,
    "mdns": None,
    "mdns_interfaces": None,
    "discovery_timeout": None,
    "result_timeout": None,
    "max_message_size": None,
}

# conf name -> mesh.config.Config field: what a node (meshnode) or a client takes
# from app.conf when neither a flag nor a MESH_* variable says otherwise
NODE_OPTIONS = {
    "worker_concurrency": "concurrency", "worker_pool": "pool",
    "worker_max_tasks_per_child": "max_tasks_per_child",
    "worker_max_memory_per_child": "max_memory_per_child", "task_time_limit": "time_limit",
    "task_soft_time_limit": "soft_time_limit", "result_expires": "result_expires",
    "worker_send_task_events": "events", "peers": "peers", "mdns": "mdns",
    "mdns_interfaces": "mdns_interfaces", "max_message_size": "max_message_size",
}
CLIENT_OPTIONS = ("peers", "mdns", "mdns_interfaces", "discovery_timeout", "result_timeout",
                  "max_message_size")


def not_taken(name: str) -> str | None:
    """Why mesh does not take a Celery setting (None if it does, or knows no such name)."""
    r = _not_taken(name)
    return None if r is None else f"setting {name!r} {r[0]}: {r[1]}"


def _not_taken(name: str) -> tuple[str, str] | None:
    """(``used``: how it is not taken, why) of a Celery setting mesh does not take."""
    if name in DEFAULTS:
        return None          # taken, even where its family is not (beat_schedule, beat_*)
    if name in NOT_USED:
        return "is not used by mesh", NOT_USED[name]
    if name in NOT_YET:
        return "is not available in this version of mesh yet", NOT_YET[name]
    for prefix, why in NOT_USED_PREFIXES.items():
        if name.startswith(prefix):
            return "is not used by mesh", why
    return None


def check_name(name: str, spell: Callable[[str], str] = repr) -> str:
    """The setting's name if mesh knows it (Celery's, taken or not), else a ConfigError
    naming the closest known one, both as ``spell`` writes them (a namespaced source's
    ``CELERY_TASK_ACKS_LATE``: the name the user wrote, not ``'task_acks_late'``)."""
    if name in DEFAULTS or name in FIXED:
        return name
    if not isinstance(name, str):
        raise ConfigError(f"setting names are strings, got {name!r}")
    if not_taken(name) is not None:
        return name
    import difflib
    hint = difflib.get_close_matches(name, setting_names(), n=1)
    raise ConfigError(f"unknown setting {spell(name)}"
                      + (f"; did you mean {spell(hint[0])}?" if hint else ""))


def setting_names() -> list[str]:
    """Every setting name mesh knows (Celery's, taken or not): the hints of a typo."""
    return [*DEFAULTS, *FIXED, *NOT_USED, *NOT_YET]


# ---- values ---------------------------------------------------------------------------

def _seconds(name: str, v: Any, none_ok: bool = True) -> float | None:
    if v is None and none_ok:
        return None
    if isinstance(v, datetime.timedelta):
        v = v.total_seconds()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isnan(v):
        raise ConfigError(f"{name} must be a number of seconds > 0 (or a timedelta)"
                          + (" or None" if none_ok else "") + f", got {v!r}")
    return float(v)


def _count(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if type(v) is not int or v < 1:
        raise ConfigError(f"{name} must be an integer >= 1 or None, got {v!r}")
    return v


def _pool(name: str, v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str) and v in ("prefork", "threads", "solo"):
        return v
    raise ConfigError(f"{name} must be 'prefork', 'threads' or 'solo', got {v!r} (mesh has no "
                      "eventlet or gevent pool: async def tasks run on an event loop in every "
                      "pool; docs/pools.md)")


def _flag(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be True or False, got {v!r}")
    return v


def _modules(name: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = (v,)
    if not isinstance(v, (list, tuple, set, frozenset)) or not all(isinstance(m, str) for m in v):
        raise ConfigError(f"{name} must be a list of module names, got {v!r}")
    return tuple(v)


def _timezone(name: str, v: Any) -> Any:
    if isinstance(v, datetime.tzinfo):
        return v
    if not isinstance(v, str) or not v:
        raise ConfigError(f"timezone must be a zone name like 'Europe/Berlin', got {v!r}")
    import zoneinfo
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"timezone {v!r} is not a zone this machine knows ({e})") from None
    return v


def _result_expires(name: str, v: Any) -> float:
    if v is None:
        return math.inf               # Celery: None keeps results for ever
    s = _seconds(name, v, none_ok=False)
    assert s is not None
    return s


def _dict(name: str, v: Any) -> Any:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{name} must be a dict, got {type(v).__name__}")
    return v


def _annotations(name: str, v: Any) -> Any:
    if v is None:
        return None
    items = v if isinstance(v, (list, tuple)) else [v]
    for a in items:
        if hasattr(a, "annotate"):
            continue
        if not isinstance(a, Mapping) or not all(isinstance(o, Mapping) for o in a.values()):
            raise ConfigError("task_annotations must be a dict {task name or '*': {option: "
                              f"value}}, an object with annotate(task), or a list of them, got {v!r}")
    return v


def _rate(name: str, v: Any) -> Any:
    from mesh.ratelimit import parse_rate
    parse_rate(v)
    return v


def _routes(name: str, v: Any) -> Any:
    from mesh.routing import prepare
    prepare(v, name, imports=False)
    return v


def _queue(name: str, v: Any) -> Any:
    from mesh.routing import check_queue
    return check_queue(v, name)


def _priority(name: str, v: Any) -> Any:
    if v is not None and (type(v) is not int or not 0 <= v <= 9):
        raise ConfigError(f"{name} must be 0..9 or None, got {v!r}")
    return v


def _log_format(name: str, v: Any) -> Any:
    if v is not None and (not isinstance(v, str) or "%(message)" not in v):
        raise ConfigError(f"{name} must be a logging format string with %(message)s, got {v!r}")
    return v


def _passthrough(name: str, v: Any) -> Any:
    return v                          # checked where it is used (mesh.config.Config)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "timezone": _timezone, "beat_schedule": _dict, "task_annotations": _annotations,
    "task_default_rate_limit": _rate, "task_default_priority": _priority,
    "task_routes": _routes, "task_default_queue": _queue,
    "task_time_limit": _seconds, "task_soft_time_limit": _seconds,
    "result_expires": _result_expires, "imports": _modules, "include": _modules,
    "worker_concurrency": _count, "worker_pool": _pool, "worker_max_tasks_per_child": _count,
    "worker_max_memory_per_child": _count, "worker_log_format": _log_format,
}
for _name, _default in DEFAULTS.items():
    if isinstance(_default, bool):
        _CHECKS[_name] = _flag
    _CHECKS.setdefault(_name, _passthrough)


def check_value(name: str, value: Any) -> Any:
    """The value as mesh keeps it, or a ConfigError that says what is wrong."""
    check = _CHECKS.get(name)
    return value if check is None else check(name, value)


WHERE_TO_READ = 'docs/configuration.md, "Names that are not mesh\'s"'


def _ignored(name: str, value: Any) -> tuple[str, str] | None:
    """(the setting as shown, why mesh does not use it), or None if mesh uses it."""
    if name in FIXED:
        fixed, why = FIXED[name]
        return None if value == fixed else (f"{name}={value!r}", f"mesh takes only {fixed!r}: {why}")
    r = _not_taken(name)
    if r is None:
        return None
    used, why = r
    return name, (why if used == "is not used by mesh" else f"{used.removeprefix('is ')}: {why}")


def ignored_summary(values: Mapping[str, Any], what: str = "") -> str | None:
    """The warning for the settings of ``values`` mesh does not take: a line that says
    how many are ignored and where to read about it, then one line per reason with the
    settings it covers (a Celery config module sets several: one warning, not one per
    setting, in every process that loads it); None when mesh takes them all."""
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        r = _ignored(name, value)
        if r is not None:
            groups.setdefault(r[1], []).append(printable(r[0]))
    if not groups:
        return None
    n = sum(len(shown) for shown in groups.values())
    head = (f"{what}: " if what else "") + (
        f"{n} settings are ignored, mesh does not use them" if n > 1 else
        "1 setting is ignored, mesh does not use it") + f" ({WHERE_TO_READ}):"
    return "\n".join([head, *(f"  {', '.join(shown)}: {why}" for why, shown in groups.items())])


# ---- the settings ---------------------------------------------------------------------

class Settings(MutableMapping[str, Any]):
    """The app's settings: every known name has a value (its default until set)."""

    def __init__(self, values: Mapping[str, Any] | None = None):
        object.__setattr__(self, "_changes", {})     # set by code: wins
        object.__setattr__(self, "_sourced", {})     # from config_from_object/envvar
        object.__setattr__(self, "_pending", [])     # sources not read yet: (what, loader)
        object.__setattr__(self, "_version", 0)      # bumped on every change
        object.__setattr__(self, "_frozen", {})      # name -> why it can no longer change
        object.__setattr__(self, "_warned", set())   # settings mesh does not use, logged once
        # each app its own copy of mutable defaults (beat_schedule["x"] = ... on one app
        # must not reach another)
        object.__setattr__(self, "_defaults", copy.deepcopy(DEFAULTS))
        if values:
            self.update(values)

    # -- layers -----------------------------------------------------------------------
    def _load(self) -> None:
        pending = self._pending
        while pending:
            what, loader, spell = pending.pop(0)
            try:
                values = dict(loader())
            except ConfigError as e:
                raise ConfigError(f"{what}: {e}") from None
            except Exception as e:     # the settings' own code (Django's settings.py) raised
                raise ConfigError(f"{what}: {failure_text(e)}") from e
            checked = self._checked(values, what, spell)
            self._sourced.update(checked)
            self._bump(checked)

    def add_source(self, what: str, loader: Callable[[], Mapping[str, Any]],
                   force: bool = False, spell: Callable[[str], str] | None = None) -> None:
        """Read settings from ``loader()`` at the next use (now with ``force``); they
        sit under what code sets. ``what`` names the source in error messages, and
        ``spell`` a setting as the source writes it (``CELERY_TASK_ACKS_LATE``)."""
        self._pending.append((what, loader, spell))
        if force:
            self._load()

    def _checked(self, values: Mapping[str, Any], what: str = "",
                 spell: Callable[[str], str] | None = None) -> dict[str, Any]:
        """Every name and value checked before any is kept: all or nothing. A source's
        error says which source (``what``), and the name as it writes it (``spell``)."""
        out = {}
        for name, value in values.items():
            try:
                check_name(name, spell or repr)
                why = self._frozen.get(name)
                if why is not None and value != self._get(name):
                    raise ConfigError(f"setting {name!r} can no longer change: {why}")
                out[name] = check_value(name, value)
            except ConfigError as e:
                if not what:
                    raise
                written = f" {spell(name)}:" if spell and not str(e).startswith("unknown") else ""
                raise ConfigError(f"{what}:{written} {e}") from None
        new = {n: v for n, v in out.items() if n not in self._warned}
        said = ignored_summary(new, what)
        if said is not None:
            self._warned.update(n for n, v in new.items() if _ignored(n, v) is not None)
            log.warning("%s", said, extra=MULTILINE)
        return out

    def _bump(self, names: Mapping[str, Any]) -> None:
        if names:
            object.__setattr__(self, "_version", self._version + 1)

    def _get(self, name: str) -> Any:
        if name in self._changes:
            return self._changes[name]
        if name in self._sourced:
            return self._sourced[name]
        if name in DEFAULTS:
            return self._defaults[name]
        return FIXED[name][0] if name in FIXED else None   # a Celery setting mesh does not use

    @property
    def version(self) -> int:
        """Changes with every setting made; caches built from settings compare it."""
        if self._pending:
            self._load()
        version: int = self._version
        return version

    def freeze(self, names: tuple[str, ...], why: str) -> None:
        """These settings were used in a way that cannot follow a change (the
        client's peers once it runs): changing them from now on is an error."""
        for n in names:
            self._frozen[n] = why

    # -- mapping ----------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        if self._pending:
            self._load()
        return self._get(check_name(name))

    def __setitem__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set several settings at once: all are checked before any is set."""
        self._set(dict(*args, **kwargs))

    def _set(self, values: Mapping[str, Any], what: str = "") -> None:
        if self._pending:
            self._load()
        checked = self._checked(values, what)
        self._changes.update(checked)
        self._bump(checked)

    def __delitem__(self, name: str) -> None:
        if self._pending:
            self._load()
        check_name(name)
        self._changes.pop(name, None)
        self._sourced.pop(name, None)
        if name in DEFAULTS:
            self._defaults[name] = copy.deepcopy(DEFAULTS[name])
        self._bump({name: None})

    def __iter__(self) -> Iterator[str]:
        return iter([*DEFAULTS, *FIXED])

    def __len__(self) -> int:
        return len(DEFAULTS) + len(FIXED)

    def __contains__(self, name: object) -> bool:
        return name in DEFAULTS or name in FIXED

    # -- attributes -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            check_name(name)
        except ConfigError as e:
            raise AttributeError(str(e)) from None
        return self[name]        # a configuration source that fails says so (ConfigError)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def changed(self) -> dict[str, Any]:
        """The settings given a value (by code or a configuration source)."""
        if self._pending:
            self._load()
        return {**self._sourced, **self._changes}

    def __repr__(self) -> str:
        return f"<Settings {self.changed()!r}>"

    # -- what the node and the client take from here ----------------------------------
    def node_options(self) -> dict[str, Any]:
        """mesh.config.Config fields for a node, from the settings given a value."""
        changed = self.changed()
        return {field: changed[name] for name, field in NODE_OPTIONS.items()
                if changed.get(name) is not None}

    def client_options(self) -> dict[str, Any]:
        changed = self.changed()
        return {name: changed[name] for name in CLIENT_OPTIONS if changed.get(name) is not None}
