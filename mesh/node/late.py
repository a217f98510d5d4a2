"""The node's components whose module is imported as they start: the beat and the
workflows. The pool forks the node's first children as it starts (mesh/node/executor.py),
before these, so the children do not carry those modules: each KiB of the node's heap
at the fork counts again in every child's RSS (docs/performance.md, rounds 11, 14, 15).

Both still start on every node (a node with no periodic entries gossips its empty
schedule's digest; a workflow's step may arrive any time): only the import moves.
``node.beat`` and ``node.workflows`` are the real components, set by their ``start``;
``node.by_name["beat"]`` is the stand-in below, its ``part`` the real one.
"""
from __future__ import annotations

import importlib
from typing import Any

from mesh.node.component import Component


class Late(Component):
    """Stands in for the component ``target`` (``"module:Class"``, built with no
    arguments) until it starts; then passes each hook on to it."""

    target = ""

    def __init__(self) -> None:
        self.part: Component | None = None

    async def start(self, node: Any) -> None:
        module, _, cls = self.target.partition(":")
        self.part = getattr(importlib.import_module(module), cls)()
        await self.part.start(node)

    async def stop(self, node: Any) -> None:
        if self.part is not None:
            await self.part.stop(node)

    def close(self, node: Any) -> None:
        if self.part is not None:
            self.part.close(node)


class LateWorkflows(Late):
    """The workflows component (mesh/node/workflows.py: ``Workflows``)."""

    name = "workflows"
    requires = ("journal", "front", "control", "pool")
    target = "mesh.node.workflows:Workflows"


class LateBeat(Late):
    """The beat component (mesh/node/beat.py: ``Beat``)."""

    name = "beat"
    requires = ("membership", "journal", "control")
    target = "mesh.node.beat:Beat"
