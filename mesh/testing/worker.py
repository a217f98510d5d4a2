"""``start_worker(app)``: Celery's ``celery.contrib.testing.worker.start_worker`` for
a test suite: a node for ``app`` in this process (a thread of its own, with the solo
pool: tasks run here, so tasks defined in the test itself run too), and ``app`` sends
to it until the block ends.

    from mesh.testing import start_worker      # was: celery.contrib.testing.worker

    with start_worker(app, perform_ping_check=False):
        assert add.delay(2, 2).get(timeout=10) == 4

The node is mesh's real one (mesh/testing/node.py ``running_node``): its journal in
memory, the ``test`` membership profile, no mDNS, loopback only.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mesh.exceptions import ConfigError

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.node.node import Node

START_TIMEOUT = 30.0
# Celery's start_worker keywords that have no use here: its broker, logging and the
# worker's own knobs; taken, as Celery's tests pass them
NOT_USED = frozenset({"loglevel", "logfile", "perform_ping_check", "ping_task_timeout",
                      "shutdown_timeout", "pool", "without_heartbeat", "without_mingle",
                      "without_gossip"})


@contextlib.contextmanager
def start_worker(app: "Mesh", concurrency: int = 1, **kwargs: Any) -> Iterator["Node"]:
    """Run a node for ``app`` in a thread of this process until the block ends; yields
    the node (its ``address`` is where ``app`` sends meanwhile). Celery's keywords
    (``perform_ping_check``, ``pool``, ``loglevel``, ``shutdown_timeout``...) are taken;
    the pool is always the solo pool, ``concurrency`` its slots."""
    unknown = set(kwargs) - NOT_USED
    if unknown:
        raise ConfigError(f"start_worker: unknown keyword(s) {sorted(unknown)}")
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            from mesh.testing.node import running_node
            try:
                async with running_node(app, name="start_worker", concurrency=concurrency) as node:
                    box["node"], box["loop"], box["stop"] = node, asyncio.get_running_loop(), asyncio.Event()
                    started.set()
                    await box["stop"].wait()
            except BaseException as e:       # said to the test's thread, not lost here
                box["error"] = e
                started.set()
        asyncio.run(main())

    thread = threading.Thread(target=run, name="mesh start_worker", daemon=True)
    thread.start()
    if not started.wait(START_TIMEOUT) or "error" in box:
        raise RuntimeError(f"start_worker: the node did not start: {box.get('error')!r}")
    node = box["node"]
    options = app._options
    app.close(patient=False)
    app._options = {**options, "peers": [node.address], "mdns": False}
    app._config_version = -1
    try:
        yield node
    finally:
        app.close(patient=False)
        app._options = options
        app._config_version = -1
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(START_TIMEOUT)
