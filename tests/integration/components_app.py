"""The test tasks (tasks_app) plus components and node signal receivers, for
test_e2e_components.py. Everything a receiver or component sees is written to files
in the node's data dir, which the test reads."""
from __future__ import annotations

import asyncio
import os
from typing import Any

from tasks_app import app  # noqa: F401  (the node serves tasks_app's tasks)

from examples.stats_exporter import StatsExporter
from mesh import Component, signals


def _note(node: Any, line: str) -> None:
    os.makedirs(node.config.data_path, exist_ok=True)   # worker_init comes before the journal
    with open(os.path.join(node.config.data_path, "notes.log"), "a") as f:
        f.write(line + "\n")


class BrokenStart(Component):
    requires = ("pool",)

    async def start(self, node: Any) -> None:
        raise RuntimeError("broken on purpose at start")


class NeedsBroken(Component):
    requires = (BrokenStart,)

    async def start(self, node: Any) -> None:
        _note(node, "needs-broken started")      # must never happen


class BrokenLoopAndStop(Component):
    name = "broken-loop"

    async def start(self, node: Any) -> None:
        node.spawn(self._loop(), name="doomed")
        _note(node, f"broken-loop started on {node.hostname}")

    async def _loop(self) -> None:
        await asyncio.sleep(0.05)
        raise ValueError("broken on purpose in a loop")

    async def stop(self, node: Any) -> None:
        raise RuntimeError("broken on purpose at stop")


class Submitter(Component):
    """Sends a task into the mesh from inside the node and awaits its result."""
    requires = ("stats-exporter",)

    async def start(self, node: Any) -> None:
        node.spawn(self._run(node), name="submitter")

    async def _run(self, node: Any) -> None:
        r = node.submit("tasks_app.add", (40, 2))
        _note(node, f"submitted add: {await r}")


app.components.add(StatsExporter)
app.components.add(BrokenStart)
app.components.add(NeedsBroken)
app.components.add(BrokenLoopAndStop)
app.components.add(Submitter)


@signals.worker_init.connect
def on_init(sender: Any = None, **kw: Any) -> None:
    _note(sender, f"worker_init pid={os.getpid()}")


@signals.worker_ready.connect
def on_ready(sender: Any = None, **kw: Any) -> None:
    _note(sender, f"worker_ready pid={os.getpid()} members={len(sender.members())}")


@signals.worker_ready.connect
def raises_on_ready(sender: Any = None, **kw: Any) -> None:
    raise RuntimeError("a receiver that raises")


@signals.worker_shutdown.connect
def on_shutdown(sender: Any = None, **kw: Any) -> None:
    _note(sender, f"worker_shutdown pid={os.getpid()}")


# ---- control commands the app registers (test_e2e_components.py) ------------------------

from mesh import control_command, inspect_command  # noqa: E402

BUMPS = {"total": 0}


@control_command(args=[("n", int)])
def bump(state: Any, n: int | None = 1) -> dict[str, int]:
    BUMPS["total"] += n or 1
    return {"bumped": BUMPS["total"]}


@control_command
def note(state: Any, text: str) -> None:
    """Write a line to the node's notes (arguments typed from the annotations)."""
    _note(state.node, text)


@inspect_command(name="component-names")
def component_names(state: Any) -> list[str]:
    names: list[str] = state.node.stats()["components"]
    return names


@inspect_command()
def explodes(state: Any) -> None:
    raise RuntimeError("a command that raises")
