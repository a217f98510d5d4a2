"""mesh: a task queue for Python with no broker."""
from __future__ import annotations

__version__ = "0.1.0"

from mesh import lazy_ssl as _lazy_ssl  # noqa: E402

_lazy_ssl.import_asyncio()   # before anything imports asyncio: see mesh/lazy_ssl.py

from mesh import signals, states  # noqa: E402
from mesh.app import Mesh  # noqa: E402
from mesh.app import new_task_id as uuid  # noqa: E402  (Celery's ``from celery import uuid``)
from mesh.canvas import (  # noqa: E402
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
from mesh.node.commands import control_command, inspect_command  # noqa: E402
from mesh.node.component import Component  # noqa: E402
from mesh.result import AsyncResult, GroupResult  # noqa: E402
from mesh.shared import current_app, current_task, shared_task  # noqa: E402
from mesh.task import Task  # noqa: E402

__all__ = ["Mesh", "AsyncResult", "Component", "GroupResult", "Signature", "Task", "chain",
           "chord", "chunks", "control_command", "current_app", "current_task", "group",
           "inspect_command", "maybe_signature", "shared_task", "signature", "signals",
           "states", "uuid", "xmap", "xstarmap", "__version__"]
