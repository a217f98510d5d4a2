"""Task discovery: ``app.autodiscover_tasks()`` imports each package's ``tasks``
module (Celery's rules), lazily: when the app's tasks are first read."""
from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mesh.app import Mesh

Packages = Iterable[str] | Callable[[], Iterable[str]]


def find_related_module(package: str, related_name: str) -> ModuleType | None:
    """Import ``package.related_name``; None if the package has no such module. A
    package that does not exist, or an import error inside the module (a nested
    import that fails), is raised: a typo or a broken tasks module is never skipped."""
    importlib.import_module(package)
    if not related_name:
        return importlib.import_module(package)
    name = f"{package}.{related_name}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:              # the package simply has no such module
            return None
        raise


class Discovery:
    """The discovery requests of one app, run once each, in order."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._requests: list[tuple[Packages, str]] = []
        self._running = False
        self.imported: list[str] = []     # modules imported so far, for inspection

    @property
    def pending(self) -> bool:
        return bool(self._requests)

    def add(self, packages: Packages, related_name: str) -> None:
        with self._lock:
            self._requests.append((packages, related_name))

    def run(self, app: "Mesh") -> None:
        """Run the pending requests (fixups first: Django is set up before its apps'
        modules are imported). A request that fails stays pending and fails again
        on the next read, so the error is never lost. Another thread reading the
        tasks meanwhile waits; a read from inside an imported module returns at once."""
        with self._lock:
            if self._running or not self._requests:
                return
            self._running = True
            try:
                for fixup in app.fixups:
                    fixup.before_discovery()
                while self._requests:
                    packages, related_name = self._requests[0]
                    names = packages() if callable(packages) else packages
                    for package in names:
                        module = find_related_module(package, related_name)
                        if module is not None and module.__name__ not in self.imported:
                            self.imported.append(module.__name__)
                    self._requests.pop(0)
            finally:
                self._running = False


def discover_tasks(app: "Mesh") -> None:
    """Run ``app``'s pending ``autodiscover_tasks`` imports now (meshnode, as it
    starts): a tasks module whose own code raises (a setting read, a missing
    dependency), or a package that is not there, is a ConfigError saying what and
    where, one line for the command to print instead of a traceback through mesh."""
    from mesh.einfo import failure_text, raised_at
    from mesh.exceptions import ConfigError
    try:
        _ = app.tasks          # reading them runs the pending imports
    except ConfigError as e:    # a module's own (a misspelt task option): say where
        at = raised_at(e)
        if not at:
            raise
        raise ConfigError(f"autodiscover_tasks(): {e}{at}") from e
    except Exception as e:
        at = raised_at(e)
        if not at and not isinstance(e, ImportError):
            raise                       # not the app's code: mesh's own, keep the traceback
        raise ConfigError(f"autodiscover_tasks(): {failure_text(e)}") from e
