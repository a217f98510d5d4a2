"""What a node takes and tells at run time: Celery's ``add_consumer`` and
``cancel_consumer`` (the queues it takes: mesh/node/routes.py) and ``enable_events``
and ``disable_events`` (whether it publishes task events: mesh/node/events.py).

Answers are Celery's (``{"ok": "add consumer foo"}``...). As in Celery, none of this
outlives the node: a restart takes the queues and events its flags say.
"""
from __future__ import annotations

from typing import Any

from mesh.node.commands import ControlState, register
from mesh.wire.control import QueueArgs


@register("add_consumer", "control", QueueArgs, builtin=True)
def add_consumer(state: ControlState, req: QueueArgs) -> dict[str, Any]:
    """Take tasks routed to ``queue`` from now on (until a restart)."""
    state.node.routing.add(req.queue)
    return {"ok": f"add consumer {req.queue}"}


@register("cancel_consumer", "control", QueueArgs, builtin=True)
def cancel_consumer(state: ControlState, req: QueueArgs) -> dict[str, Any]:
    """Take no more tasks routed to ``queue`` (those it holds still run; until a restart)."""
    state.node.routing.cancel(req.queue)
    return {"ok": f"no longer consuming from {req.queue}"}
