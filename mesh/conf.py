"""``app.conf``: settings with Celery's names, where mesh has the same idea.

A mapping that also reads and writes as attributes (``app.conf.timezone = "UTC"`` and
``app.conf["timezone"]`` are the same), with ``update``. Only known names are
accepted: a misspelt one fails with the closest known name, and a broker-only setting
(``broker_url``) says what mesh does instead, so nothing set is silently ignored.

Settings that a node uses (``worker_concurrency``, ``task_time_limit``, ...) reach
``meshnode`` too: it imports the app's module, so what the module sets in code is what
the node reads (command-line flags still win).
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from mesh.exceptions import ConfigError

# name -> default. Grouped as Celery's configuration reference groups them.
DEFAULTS: dict[str, Any] = {
    # time and date
    "timezone": "UTC",                  # crontab entries are read in this zone, DST included
    "enable_utc": True,
    # periodic tasks (no beat process: every node carries the schedule)
    "beat_schedule": {},
    # task execution
    "task_routes": None,
    "task_default_queue": "celery",
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_acks_late": True,             # mesh's default (Celery's is False): see docs/design.md
    "task_reject_on_worker_lost": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_default_rate_limit": None,
    "task_ignore_result": False,
    "task_track_started": False,
    "task_send_sent_event": False,
    "task_default_priority": None,
    "task_default_retry_delay": 180,
    "task_max_retries": 3,
    # results
    "result_expires": 86400.0,
    "result_extended": True,            # mesh always keeps name, args, kwargs, worker
    # worker (meshnode)
    "worker_concurrency": None,
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,
    "worker_send_task_events": True,
    "worker_hijack_root_logger": True,
}

# Celery settings that only make sense with a broker or a result backend in the middle.
BROKER_ONLY: dict[str, str] = {
    "broker_url": "mesh has no broker: clients send tasks straight to nodes, found by "
                  "mDNS or given as peers (Mesh(peers=[...]) or MESH_PEERS)",
    "broker_transport_options": "mesh has no broker; see peers and the membership profile",
    "broker_connection_retry_on_startup": "mesh has no broker: clients fail over between nodes",
    "result_backend": "mesh keeps results on the nodes (their journals): no result backend "
                      "is needed; AsyncResult works from any process",
    "worker_prefetch_multiplier": "mesh never prefetches: children ask for work when idle",
    "task_serializer": "mesh always encodes with msgpack (never pickle)",
    "result_serializer": "mesh always encodes with msgpack (never pickle)",
    "accept_content": "mesh always encodes with msgpack (never pickle)",
}
BROKER_ONLY["broker"] = BROKER_ONLY["broker_url"]
BROKER_ONLY["backend"] = BROKER_ONLY["result_backend"]


def check_name(name: str) -> str:
    """The setting's name if mesh knows it, else a ConfigError that says why."""
    if name in DEFAULTS:
        return name
    if name in BROKER_ONLY:
        raise ConfigError(f"setting {name!r} is not used by mesh: {BROKER_ONLY[name]}")
    hint = difflib.get_close_matches(name, list(DEFAULTS), n=1)
    raise ConfigError(f"unknown setting {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))


class Settings(MutableMapping[str, Any]):
    """The app's settings: every known name has a value (its default until set)."""

    def __init__(self, values: Mapping[str, Any] | None = None):
        # each app its own copy of mutable defaults (beat_schedule["x"] = ... on one app
        # must not reach another)
        object.__setattr__(self, "_values", copy.deepcopy(DEFAULTS))
        object.__setattr__(self, "_changed", set())
        if values:
            self.update(values)

    # mapping
    def __getitem__(self, name: str) -> Any:
        return self._values[check_name(name)]

    def __setitem__(self, name: str, value: Any) -> None:
        self._values[check_name(name)] = value
        self._changed.add(name)

    def __delitem__(self, name: str) -> None:
        self._values[check_name(name)] = copy.deepcopy(DEFAULTS[name])
        self._changed.discard(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    # attributes
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except ConfigError as e:
            raise AttributeError(str(e)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def changed(self) -> dict[str, Any]:
        """The settings given a value (by code or configuration), not left at default."""
        return {k: self._values[k] for k in self._values if k in self._changed}

    def __repr__(self) -> str:
        return f"<Settings {self.changed()!r}>"
