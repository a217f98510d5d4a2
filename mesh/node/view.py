"""NodeView: what an app's component sees of the node it runs in.

A narrow, documented surface (docs/components.md), so that the node's insides can
change without breaking users' components::

    view.name            the node's id (also view.hostname, Celery's name for it)
    view.address         its front door, tcp://HOST:PORT
    view.config          the node's frozen mesh.config.Config
    view.app             the Mesh app the node serves
    view.stopping        True once the node is shutting down
    view.stats()         the ``status`` report (the dict ``meshctl status --json`` shows)
    view.members()       every member this node knows (the ``members`` command)
    view.publish(type, **fields)   an event on the node's event stream
    view.submit(name, args, kwargs, **options) -> AsyncResult   a task into the mesh
    view.spawn(coro, name=...)     a loop in the node's TaskGroup

Everything here runs on the node's event loop: never block it (no ``result.get()``,
use ``await result``; run blocking work with ``asyncio.to_thread``). An exception in
a loop started with ``spawn`` is logged and ends that loop only.
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.config import Config
    from mesh.node.node import Node
    from mesh.result import AsyncResult

log = safe_logger("mesh.components")


class NodeView:
    def __init__(self, node: "Node", component: str = ""):
        self._node = node
        self._component = component

    def __repr__(self) -> str:
        return f"<NodeView of node {self.name}>"

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def hostname(self) -> str:
        """The node's id (Celery's ``worker.hostname``)."""
        return self._node.name

    @property
    def address(self) -> str:
        return self._node.address

    @property
    def config(self) -> "Config":
        return self._node.config

    @property
    def app(self) -> "Mesh":
        return self._node.app

    @property
    def stopping(self) -> bool:
        return self._node.stopping

    def stats(self) -> dict[str, Any]:
        """This node's ``status`` report: load, counts, resources, registered tasks."""
        return self._node.status()

    def members(self) -> list[dict[str, Any]]:
        """Every member this node knows: node, endpoint, state, load, meta."""
        return self._node.members()

    def publish(self, type_: str, **fields: Any) -> None:
        """Send an event on this node's stream (built only if someone subscribed to a
        prefix of ``type_``). Fields must be msgpack-able: str, numbers, lists, dicts."""
        if not isinstance(type_, str) or not type_:
            raise ValueError("an event type is a non-empty string, e.g. 'exporter-tick'")
        self._node.events.emit(type_, **fields)

    def submit(self, name: str, args: Iterable[Any] | None = None,
               kwargs: dict[str, Any] | None = None, **options: Any) -> "AsyncResult":
        """Send a task by name into the mesh (``app.send_task``'s options), from a
        client owned by this node: it goes to this node or a peer. The result's
        ``get()`` blocks: in a component, ``await`` it instead."""
        return self._node.submitter().send_task(name, args, kwargs, **options)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> "asyncio.Task[Any]":
        """Run ``coro`` in the node's TaskGroup until it returns or the node stops (it
        is cancelled after every component's stop). What it raises is logged."""
        label = name or str(getattr(coro, "__qualname__", "loop"))
        return self._node.spawn(_guarded(coro, self._component, label), name=label)


async def _guarded(coro: Coroutine[Any, Any, Any], component: str, name: str) -> Any:
    try:
        return await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("component %s: its loop %s failed (the node goes on without it)",
                      component, name)
        return None
