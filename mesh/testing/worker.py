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
import concurrent.futures
import contextlib
import importlib
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from mesh.exceptions import ConfigError
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.node.node import Node

log = safe_logger("mesh.testing")

START_TIMEOUT = 30.0
# Celery's start_worker keywords that have no use here: its broker, logging and the
# worker's own knobs; taken, as Celery's tests pass them (celery_worker_parameters):
# start_worker's own, then its WorkController's (setup_defaults, setup_instance), which
# Celery takes whatever they are
TIME_LIMITS = ("time_limit", "soft_time_limit", "task_time_limit", "task_soft_time_limit")
NOT_USED = frozenset({"loglevel", "logfile", "perform_ping_check", "ping_task_timeout",
                      "shutdown_timeout", "pool", "without_heartbeat", "without_mingle",
                      "without_gossip",
                      "task_events", "consumer_cls", "timer_cls", "timer_precision",
                      "autoscaler_cls", "pool_putlocks", "pool_restarts", "optimization", "O",
                      "statedb", "state_db", "time_limit", "soft_time_limit", "task_time_limit",
                      "task_soft_time_limit", "scheduler", "scheduler_cls", "schedule_filename",
                      "pool_cls", "max_tasks_per_child", "prefetch_multiplier",
                      "disable_rate_limits", "worker_lost_wait", "max_memory_per_child",
                      "ready_callback", "pidfile", "use_eventloop"})


class TestWorker:
    """What ``start_worker`` yields: the node (``node``; its attributes read through,
    e.g. ``address``, ``name``), Celery's ``hostname`` and ``reload()``."""

    __test__ = False    # (not a pytest test class)

    def __init__(self, node: "Node", loop: asyncio.AbstractEventLoop):
        self.node = node
        self._loop = loop
        self._known = dict(node.app.tasks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)

    @property
    def hostname(self) -> str:
        """The node's name, as Celery's worker's ``hostname``: what control commands'
        ``destination`` takes (``inspect(destination=[celery_worker.hostname])``)."""
        return self.node.name

    def reload(self, modules: Iterable[str] | None = None, reload: bool = False,
               reloader: Any = None) -> None:
        """Celery's ``worker.reload()``: import ``modules`` (again, with ``reload``),
        then serve every task the app has now, such as tasks a test defined after the
        worker started (Celery's testing guide does so); clients see them at their next
        look at the membership (a task sent meanwhile waits for it)."""
        for name in modules or ():
            module = importlib.import_module(name)
            if reload:
                importlib.reload(module)
        from mesh.node.reload import serve_tasks
        before, self._known = self._known, dict(self.node.app.tasks)
        done = concurrent.futures.Future[None]()

        def refresh() -> None:
            try:
                serve_tasks(self.node, before)
                done.set_result(None)
            except BaseException as e:     # said to the caller, not lost in the loop
                done.set_exception(e)
        self._loop.call_soon_threadsafe(refresh)
        done.result(START_TIMEOUT)


def import_modules(names: Iterable[str] | str, where: str) -> None:
    """Import the modules ``names`` (a text: names with commas, as Celery's worker
    ``-I`` takes them), for the tasks (and signal handlers) they define; a module that
    does not import is a ConfigError naming it and why, said by ``where``."""
    for name in names.split(",") if isinstance(names, str) else names:
        name = name.strip() if isinstance(name, str) else name
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: a module to include is a module name, got {name!r}")
        try:
            importlib.import_module(name)
        except Exception as e:      # (ImportError, or what the module raised as it ran)
            raise ConfigError(f"{where}: module {name!r} to include does not import: "
                              f"{type(e).__name__}: {e}") from e


@contextlib.contextmanager
def start_worker(app: "Mesh", concurrency: int = 1, *, queues: Iterable[str] | str = (),
                 exclude_queues: Iterable[str] | str = (), hostname: str = "start_worker",
                 include: Iterable[str] | str = (), **kwargs: Any) -> Iterator[TestWorker]:
    """Run a node for ``app`` in a thread of this process until the block ends; yields
    the worker (its ``address`` is where ``app`` sends meanwhile). Celery's keywords
    (``perform_ping_check``, ``pool``, ``loglevel``, ``shutdown_timeout``...) are taken;
    the pool is always the solo pool, ``concurrency`` its slots; ``queues`` (and
    ``exclude_queues``) are the queues it takes, as ``meshnode -Q`` (``-X``): names, or
    one text of names with commas, as Celery takes them. ``include``: modules imported
    before the node starts, as Celery's worker ``include`` (``-I``) does, so that it
    serves the tasks they define; one that does not import is a ConfigError."""
    unknown = set(kwargs) - NOT_USED
    if unknown:
        raise ConfigError(f"start_worker: unknown keyword(s) {sorted(unknown)}")
    import_modules(include, "start_worker")
    if kwargs.get("pool") not in (None, "solo"):
        log.warning("start_worker: pool %r is not used: a test worker runs its tasks in this "
                    "process (the solo pool)", kwargs["pool"])
    limits = {k: v for k in TIME_LIMITS if (v := kwargs.get(k)) is not None}
    if limits:
        log.warning("start_worker: %s not enforced: a test worker runs its tasks in a thread of "
                    "this process, which no time limit can stop (a real meshnode enforces them)",
                    ", ".join(f"{k}={v!r}" for k, v in limits.items()))
    started = threading.Event()
    box: dict[str, Any] = {}
    options: dict[str, Any] = {"concurrency": concurrency}
    for key, value in (("queues", queues), ("exclude_queues", exclude_queues)):
        if value:
            # (a text is NAME,NAME as Celery's WorkController takes it: str_to_list)
            options[key] = tuple(value.split(",")) if isinstance(value, str) else tuple(value)

    def run() -> None:
        async def main() -> None:
            from mesh.testing.node import running_node
            try:
                async with running_node(app, name=hostname, **options) as node:
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
    app_options = app._options
    app.close(patient=False)
    app._options = {**app_options, "peers": [node.address], "mdns": False}
    app._config_version = -1
    try:
        yield TestWorker(node, box["loop"])
    finally:
        app.close(patient=False)
        app._options = app_options
        app._config_version = -1
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(START_TIMEOUT)
