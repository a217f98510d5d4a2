"""Autoreload (``meshnode --autoreload``): when a source file of the app changes, the
node imports the new code and replaces its children, losing and failing no task
(docs/pools.md).

Children are forked from the node, so the new code is imported *in the node* first:
the app's own modules (those loaded from the directory the ``--app`` module came
from, never installed packages nor mesh) are dropped from ``sys.modules`` and the
``--app`` module is imported again. Then the node serves the new app (its task
registry, what intake accepts, ``registered``, the gossiped digest all follow), and
the pool replaces every child with one forked from the new code; a child running
tasks finishes them on the old code first, and queued tasks run on the new children.

New code that does not import (a syntax error, an ImportError, an exception at
module level) changes nothing: the old modules are put back, the error is logged
with its file and line, the children keep running the old code, and the next change
(the fix) reloads. Files are watched with watchfiles (inotify on Linux).
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mesh.node.commands import registry as default_registry
from mesh.node.component import Component
from mesh.node.gossip import tasks_digest
from mesh.ratelimit import TokenBucket, parse_rate
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.node.node import Node

log = safe_logger("mesh.reload")

RETRY = 2.0          # s before watching again after the watcher failed


class ReloadError(Exception):
    """The app's new code does not import; the message says where."""


class Reloader(Component):
    """The ``reloader`` component: watches the app's source (with --autoreload)."""

    name = "reloader"
    requires = ("pool", "control", "membership")

    def __init__(self) -> None:
        self.reloads = 0                       # new code loaded
        self.failures = 0                      # new code that did not load
        self.error: str | None = None          # the latest failure, until a reload works
        self.watching: list[str] = []          # directories watched

    async def start(self, node: "Node") -> None:
        self.node = node
        node.reloader = self
        if not node.config.autoreload:
            return
        if not node.config.app:
            log.error("autoreload: the app's module is not known (run meshnode --app ...): "
                      "not watching anything")
            return
        self.spec = node.config.app
        self.roots = app_roots(self.spec)
        logging.getLogger("watchfiles").setLevel(logging.WARNING)   # we log what changed
        node.spawn(self._loop(), name="reloader")

    def report(self) -> dict[str, Any]:
        return {"autoreload": bool(self.node.config.autoreload), "reloads": self.reloads,
                "reload_error": self.error}

    async def _loop(self) -> None:
        while not self.node.stopping:
            try:
                await self._watch()
            except Exception:              # a directory gone, a watcher error: never the
                log.exception("autoreload: watching failed; trying again in %g s", RETRY)
                await asyncio.sleep(RETRY)  # node's end

    async def _watch(self) -> None:
        from watchfiles import awatch
        self.watching = watch_dirs(app_modules(self.roots).values())
        log.info("autoreload: watching the app's code in %s", ", ".join(self.watching))
        async for changes in awatch(*self.watching, watch_filter=_python_file, recursive=False):
            if self.node.stopping:
                return
            if self.reload(sorted({path for _, path in changes})):
                return                     # its modules may live in other directories now

    def reload(self, files: list[str]) -> bool:
        """Load the app's code again after ``files`` changed; True if it loaded."""
        node = self.node
        names = ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
        log.info("autoreload: %s changed: importing the app's code again", names)
        for f in files:                        # a rewrite within the same second, of the
            _drop_bytecode(f)                  # same size, would pass for the cached one
        try:
            app = import_fresh(self.spec, self.roots)
        except ReloadError as e:
            self.failures += 1
            self.error = str(e)
            log.error("autoreload: the new code does not load: %s. The node keeps serving "
                      "with the code it had; fix the file and it reloads.", e)
            return False
        from mesh.workflow.builtins import register_builtins
        register_builtins(app)         # mesh.map, mesh.starmap: a node's, as Node() does
        old = node.app
        node.app = app
        replaced = node.pool.reload(app)
        serve_tasks(node, old.tasks)
        node.control.commands = default_registry.copy()   # the app's commands, as re-registered
        self.reloads += 1
        self.error = None
        added, gone = sorted(set(app.tasks) - set(old.tasks)), sorted(set(old.tasks) - set(app.tasks))
        log.info("autoreload: new code loaded (%d tasks%s%s); %d child(ren) replaced: running "
                 "tasks finish on the old code, queued ones run on the new", len(app.tasks),
                 f", new: {', '.join(added)}" if added else "",
                 f", gone: {', '.join(gone)}" if gone else "", replaced)
        return True


def _python_file(change: Any, path: str) -> bool:
    return path.endswith(".py")


def _drop_bytecode(path: str) -> None:
    try:
        os.remove(importlib.util.cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass


def serve_tasks(node: "Node", before: Mapping[str, Any]) -> None:
    """The node serves its app's tasks as they are now (new code loaded, or tasks
    registered since it started: mesh.testing's ``worker.reload()``): a task whose
    rate_limit is new or changed since ``before`` (name -> task) gets it, and the
    gossiped digest and the task names peers and clients see follow."""
    app = node.app
    limits = node.pool.limits
    for name, task in app.tasks.items():
        rate = parse_rate(task.options.rate_limit)
        was = before.get(name)
        if was is not None and parse_rate(was.options.rate_limit) == rate:
            continue
        if rate is None:
            limits.pop(name, None)
        else:
            limits[name] = TokenBucket(rate)
    node.tasks_digest = tasks_digest(app.tasks)
    node.routing.refresh(app)               # the task names peers and clients see
    node.membership.update_local_meta()


# ---- which modules are the app's -------------------------------------------------------

def _excluded() -> list[str]:
    """Where code that is not the app's lives: the interpreter, installed packages, mesh."""
    import sysconfig  # only with --autoreload: not in every child

    import mesh
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(mesh.__file__)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    return sorted(os.path.realpath(p) + os.sep for p in paths)


def app_roots(spec: str) -> list[str]:
    """The directory the ``--app`` module was imported from (for a package, the
    directory holding the package)."""
    top = spec.partition(":")[0].split(".")[0]
    mod = sys.modules.get(top)
    if mod is None:
        mod = importlib.import_module(top)
    file = getattr(mod, "__file__", None)
    if file:
        d = os.path.dirname(os.path.realpath(file))
        if os.path.basename(file) == "__init__.py":
            d = os.path.dirname(d)
    else:                                     # a namespace package
        d = os.path.dirname(os.path.realpath(next(iter(getattr(mod, "__path__", ["."])))))
    return [d]


def app_modules(roots: list[str]) -> dict[str, ModuleType]:
    """The loaded modules whose file is under ``roots`` and is not installed code."""
    prefixes = [os.path.join(r, "") for r in roots]
    excluded = _excluded()
    out = {}
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if not isinstance(file, str):
            continue
        path = os.path.realpath(file)
        if any(path.startswith(p) for p in prefixes) and not any(path.startswith(x) for x in excluded):
            out[name] = mod
    return out


def watch_dirs(modules: Iterable[ModuleType]) -> list[str]:
    return sorted({os.path.dirname(os.path.realpath(str(m.__file__))) for m in modules})


def import_fresh(spec: str, roots: list[str]) -> "Mesh":
    """Import the ``--app`` module again, with every app module fresh; on failure put
    the old modules back and raise ReloadError naming the file and line."""
    from mesh.cli.common import find_app
    saved = app_modules(roots)
    for name in saved:
        del sys.modules[name]
    for mod in saved.values():     # (a file saved again within the second it was
        file = mod.__file__            # compiled, to the same size, passes for its .pyc)
        if file is not None and file.endswith(".py"):
            _drop_bytecode(file)
    importlib.invalidate_caches()
    try:
        try:               # found as meshnode -A found it: -A proj is proj.celery's app
            app: Mesh = find_app(spec)[0]
        except LookupError as e:           # what the import raised, with its file and line
            cause = e.__context__
            raise ReloadError(where(cause, roots) if cause is not None
                              else f"--app {spec}: {e}") from cause
        more = getattr(app, "import_modules", None)    # the app's include/imports settings
        if callable(more):
            more()
        return app
    except (Exception, SystemExit) as e:
        for name in app_modules(roots):
            if name not in saved:
                del sys.modules[name]
        sys.modules.update(saved)
        if isinstance(e, ReloadError):
            raise
        raise ReloadError(where(e, roots)) from e


def where(e: BaseException, roots: list[str]) -> str:
    """``FILE line N: Type: message`` for an exception raised while importing."""
    what = f"{type(e).__name__}: {e}"
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename} line {e.lineno}: {type(e).__name__}: {e.msg}"
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if any(os.path.realpath(f.filename).startswith(os.path.join(r, "")) for r in roots)]
    if frames:
        return f"{frames[-1].filename} line {frames[-1].lineno}: {what}"
    return what
