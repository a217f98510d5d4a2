"""A node's components in the test's process: fast tests of the node's logic.

    async with running_node(app, concurrency=1, autorun=False) as node:
        ...                       # node is the real Node: ledger, control, shedder, ...

The node is the real one (intake, ledger, journal, control, membership, shedding,
events) on loopback TCP sockets bound to ephemeral ports, with a ``SoloPool``
(mesh/testing/solo.py) instead of forked children, the in-memory journal unless
``journal=True``, the ``test`` membership profile, no mDNS and no signal handlers.
Clients talk to it as to any node (``Mesh(peers=[node.address])``); their results
can be awaited in the test's loop (``await result``). Real ``meshnode`` processes
stay the reference: these tests sit next to them, not instead of them.

(Loopback TCP rather than inproc endpoints: a client owns its own zmq Context, and
endpoints are checked to be tcp://. Time: the node's timers are asyncio's; the
decisions that depend on time take it as an argument, e.g. ``shedder.shed(now)`` and
``expiry.expire(now)``, so a test passes the time it wants.)
"""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from mesh.config import Config
from mesh.node.announce import Announcer
from mesh.node.component import Component
from mesh.node.executor import Executor
from mesh.node.node import BUILTIN, Node
from mesh.ratelimit import TokenBucket, parse_rate
from mesh.testing.solo import SoloPool

if TYPE_CHECKING:
    from mesh.app import Mesh

READY_TIMEOUT = 10.0


class SoloExecutor(Executor):
    """The ``pool`` component with a SoloPool."""

    def __init__(self, autorun: bool = True):
        self.autorun = autorun

    async def start(self, node: "Node") -> None:
        pool = SoloPool(node.app, node.config, node.name, node.ledger, node.config.pool_size,
                        autorun=self.autorun)
        for name, task in node.app.tasks.items():
            rate = parse_rate(task.options.rate_limit)
            if rate is not None:
                pool.limits[name] = TokenBucket(rate)
        node.pool = pool
        node.spawn(pool.run(), name="pool")


def solo_components(autorun: bool = True) -> list[Component]:
    """The node's own components, with the solo pool and without mDNS."""
    out: list[Component] = []
    for cls in BUILTIN:
        if cls is Executor:
            out.append(SoloExecutor(autorun))
        elif cls is not Announcer:
            out.append(cls())
    return out


@contextlib.asynccontextmanager
async def running_node(app: "Mesh", *, autorun: bool = True, name: str = "solo",
                       **options: Any) -> AsyncIterator[Node]:
    """Run a node in this event loop until the block ends (then stop it warmly)."""
    with contextlib.ExitStack() as stack:
        if "data_dir" not in options:
            options["data_dir"] = stack.enter_context(tempfile.TemporaryDirectory())
        options.setdefault("journal", False)
        options.setdefault("concurrency", 2)
        options.setdefault("shutdown_timeout", 1.0)
        options.setdefault("bind", "tcp://127.0.0.1:*")   # (a restart: the old address)
        config = Config.build(env={}, name=name, mdns=False, profile="test", **options)
        node = Node(app, config, components=solo_components(autorun), handle_signals=False)
        # nodes in one process stall together (a test that holds the loop): none is
        # declared dead for it by another (mesh/node/fence.py)
        node.reclaim.fence.watch_loop = False
        task = asyncio.create_task(node.run(), name=f"node {name}")
        ready = asyncio.create_task(node.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=READY_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if task.done():
                task.result()              # raises what stopped it
            task.cancel()
            raise TimeoutError(f"in-process node {name} was not ready in {READY_TIMEOUT} s")
        try:
            yield node
        finally:
            if not task.done():
                node.stop()
                await asyncio.wait_for(task, READY_TIMEOUT)


async def crash(node: Node) -> None:
    """End a running in-process node as abruptly as this process allows: no stop
    hooks, no goodbye to the mesh (its loops are cancelled, its sockets closed)."""
    node.crash()
    await node.finished()


async def until(pred: Callable[[], Any], what: str, timeout: float = 10.0,
                interval: float = 0.002) -> Any:
    """Wait in the event loop until ``pred()`` is true, and return it; AssertionError
    naming ``what`` after ``timeout`` seconds. For tests with ``running_node``."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
    return value
