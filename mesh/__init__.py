"""mesh: a task queue for Python with no broker.

The public names (``from mesh import Mesh, group, ...``) are imported on first use
(PEP 562): ``meshctl`` and other tools that import a submodule (``mesh.cli``,
``mesh.client.control``) then load what they use, not the app, the canvas and the
node's commands (a third of meshctl's start). ``import mesh`` still imports asyncio
first, with mesh/lazy_ssl.py's stand-in for ``ssl``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from mesh import lazy_ssl as _lazy_ssl  # noqa: E402

_lazy_ssl.import_asyncio()   # before anything imports asyncio: see mesh/lazy_ssl.py

from mesh import signals, states  # noqa: E402

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.app import new_task_id as uuid
    from mesh.canvas import (
        Signature,
        chain,
        chord,
        chunks,
        group,
        maybe_signature,
        signature,
        xmap,
        xstarmap,
    )
    from mesh.node.commands import control_command, inspect_command
    from mesh.node.component import Component
    from mesh.result import AsyncResult, GroupResult
    from mesh.shared import current_app, current_task, shared_task
    from mesh.task import Task

# public name -> the module that defines it (and its name there, when another)
_WHERE = {
    "Mesh": "mesh.app", "uuid": "mesh.app:new_task_id",   # (Celery's ``from celery import uuid``)
    "Signature": "mesh.canvas", "chain": "mesh.canvas", "chord": "mesh.canvas",
    "chunks": "mesh.canvas", "group": "mesh.canvas", "signature": "mesh.canvas",
    "maybe_signature": "mesh.canvas", "xmap": "mesh.canvas", "xstarmap": "mesh.canvas",
    "control_command": "mesh.node.commands", "inspect_command": "mesh.node.commands",
    "Component": "mesh.node.component",
    "AsyncResult": "mesh.result", "GroupResult": "mesh.result",
    "current_app": "mesh.shared", "current_task": "mesh.shared", "shared_task": "mesh.shared",
    "Task": "mesh.task",
}

__all__ = ["Mesh", "AsyncResult", "Component", "GroupResult", "Signature", "Task", "chain",
           "chord", "chunks", "control_command", "current_app", "current_task", "group",
           "inspect_command", "maybe_signature", "shared_task", "signature", "signals",
           "states", "uuid", "xmap", "xstarmap", "__version__"]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'mesh' has no attribute {name!r}")
    import importlib
    module, _, attr = where.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value          # once: the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
