"""Tasks every app has: ``mesh.map`` and ``mesh.starmap`` (Celery's ``celery.map`` and
``celery.starmap``), behind ``task.map(it)``, ``task.starmap(it)`` and ``task.chunks``.

Each runs one task function over many items in one child, in the order given, and
returns the list of results; the task is named in a signature map, so it must be
registered on the node that runs the builtin (it is, on a mesh of identical nodes).
They are registered in the app a node runs (``Node`` does it before its children
fork) and, for eager mode, in the app that runs a workflow here; a client that only
sends them needs nothing. The functions are the same objects for every app, so
registering them again, or copying an app's tasks into another, is harmless.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mesh.exceptions import NotRegistered

if TYPE_CHECKING:
    from mesh.app import Mesh

NAMES = ("mesh.map", "mesh.starmap")


def user_tasks(tasks: Mapping[str, Any]) -> list[str]:
    """The names of an app's own tasks, sorted: what ``status`` and ``inspect
    registered`` show, like Celery's, which leaves out its ``celery.*`` builtins."""
    return sorted(n for n in tasks if n not in NAMES)


def _target(self: Any, task: Any) -> Any:
    name = task.get("task") if isinstance(task, Mapping) else task
    fn = self.app.tasks.get(name) if isinstance(name, str) else None
    if fn is None:
        raise NotRegistered(f"task {name!r} is not registered here, so it cannot be mapped")
    return fn


def xmap(self: Any, task: Any, it: list[Any]) -> list[Any]:
    fn = _target(self, task)
    return [fn(item) for item in it]


def xstarmap(self: Any, task: Any, it: list[Any]) -> list[Any]:
    fn = _target(self, task)
    return [fn(*item) for item in it]


def register_builtins(app: "Mesh") -> None:
    if "mesh.map" not in app.tasks:
        app.task(name="mesh.map", bind=True)(xmap)
    if "mesh.starmap" not in app.tasks:
        app.task(name="mesh.starmap", bind=True)(xstarmap)
