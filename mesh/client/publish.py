"""The publish signals, sent in the client process by ``Mesh.send_task`` (so also by
``delay``/``apply_async``), with Celery's arguments. mesh has no broker, so the AMQP
words are given the meaning they have here (docs/signals.md):

* ``body``: ``(args, kwargs, embed)`` as in Celery's message protocol 2; ``embed`` is
  ``{"callbacks": None, "errbacks": None, "chain": None, "chord": None}``. The task's
  arguments are encoded after ``before_task_publish``, so a receiver may change the
  ``args`` list or the ``kwargs`` dict in place and the task gets what it left there.
* ``exchange``: always ``""``: there is no exchange, the client sends to a node.
* ``routing_key``: the name of the queue the task is routed to (docs/routing.md).
* ``headers``: Celery's message headers (``lang``, ``task``, ``id``, ``eta``,
  ``expires``, ``retries``, ``timelimit``, ``argsrepr``, ``kwargsrepr``, ``origin``,
  ...) plus the call's own ``headers``. Keys a receiver adds or changes travel with
  the task and reach it as ``self.request.headers`` (tracing context, say); the
  describing keys are only a description: changing ``id`` does not change the id.
* ``properties``: ``{"correlation_id": task_id, "priority": priority}``.
* ``declare``: always ``[]`` (nothing to declare); ``retry_policy``: always None (the
  client owns the task and resends it until a node has it: docs/protocol.md s. 12).

``after_task_publish`` is sent once the task is handed to the client's I/O thread,
which sends it (the client owns it from then on), with the same ``body`` and
``headers`` (Celery's signals guide reads ``headers["id"]`` there).
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
from typing import Any

from mesh import signals

EXCHANGE = ""


def _iso(t: float | None) -> str | None:
    return None if t is None else _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat()


def describe(name: str, task_id: str, args: Any, kwargs: dict[str, Any], *, eta: float | None,
             expires: float | None, time_limit: float | None,
             soft_time_limit: float | None) -> dict[str, Any]:
    """Celery's protocol 2 headers for this call."""
    return {"lang": "py", "task": name, "id": task_id, "shadow": None, "eta": _iso(eta),
            "expires": _iso(expires), "group": None, "group_index": None, "retries": 0,
            "timelimit": [time_limit, soft_time_limit], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(tuple(args)), "kwargsrepr": repr(kwargs),
            "origin": f"{os.getpid()}@{socket.gethostname()}", "ignore_result": False}


def before(name: str, task_id: str, args: Any, kwargs: dict[str, Any],
           headers: dict[str, Any], routing_key: str, priority: int, **times: Any
           ) -> tuple[tuple[Any, dict[str, Any], dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Send before_task_publish; return the body (its args and kwargs are what to
    encode), the headers to send with the task, and the message headers the receivers
    saw (for after_task_publish)."""
    args = list(args)                      # (any iterable: read it once)
    described = describe(name, task_id, args, kwargs, **times)
    message_headers = {**described, **headers}
    body = (args, kwargs,
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    signals.before_task_publish.send(
        sender=name, body=body, exchange=EXCHANGE, routing_key=routing_key,
        headers=message_headers, properties={"correlation_id": task_id, "priority": priority},
        declare=[], retry_policy=None)
    _missing = object()
    sent = {k: v for k, v in message_headers.items()
            if k in headers or described.get(k, _missing) != v}
    return body, sent, message_headers


def after(name: str, body: Any, headers: dict[str, Any], routing_key: str) -> None:
    signals.after_task_publish.send(sender=name, body=body, headers=headers, exchange=EXCHANGE,
                                    routing_key=routing_key)
