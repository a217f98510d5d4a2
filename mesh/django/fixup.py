"""What a mesh app does when Django is in use (Celery's Django fixup).

Installed by every ``Mesh`` made while DJANGO_SETTINGS_MODULE is set:

* before tasks are discovered (the first read of ``app.tasks``; a node does it as it
  starts), ``django.setup()`` if Django is not set up yet, so task modules can use
  models; ``app.autodiscover_tasks()`` then looks in every installed app;
* in every pool child, as it starts (``worker_process_init``): database connections
  inherited from the node are forgotten, never closed: closing one would talk to the
  database server on a socket the node shares (and a sqlite close may checkpoint a
  file the node has open). The child opens its own on first use;
* around every task in a child (``task_prerun``/``task_postrun``): connections that
  are unusable or past CONN_MAX_AGE are closed (``django.db.close_old_connections``,
  what Django does around each request), and caches closed after, so a child that
  lives for thousands of tasks never reuses a dead or half-configured connection.

The per-task closing runs only in pool children: a task run eagerly (in a test,
inside the test's transaction) leaves the caller's connections alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh import signals
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.app import Mesh

log = safe_logger("mesh.django")

# Connections inherited over fork: kept referenced so that they are never closed (nor
# garbage collected, which would close them) in the child. One per alias per child.
_inherited: list[Any] = []
_in_child = False     # set in pool children (worker_process_init)


class DjangoFixup:
    def __init__(self, app: "Mesh"):
        self.app = app

    def installed_apps(self) -> list[str]:
        """The packages ``autodiscover_tasks()`` looks in: every installed app."""
        from django.apps import apps
        return [config.name for config in apps.get_app_configs()]

    def before_discovery(self) -> None:
        """Set Django up (once) before task modules are imported."""
        from django.apps import apps
        if not apps.ready and not apps.loading:
            import django
            django.setup()


def fixup(app: "Mesh") -> DjangoFixup | None:
    try:
        import django  # noqa: F401
    except ImportError:
        log.warning("DJANGO_SETTINGS_MODULE is set but Django is not installed: "
                    "mesh's Django fixup is not applied")
        return None
    _connect()
    return DjangoFixup(app)


def _connect() -> None:
    # module functions (weakly held is fine), one receiver per process for every app
    signals.worker_process_init.connect(on_process_init, dispatch_uid="mesh.django.fork")
    signals.task_prerun.connect(on_task_prerun, dispatch_uid="mesh.django.prerun")
    signals.task_postrun.connect(on_task_postrun, dispatch_uid="mesh.django.postrun")


def forget_inherited_connections() -> int:
    """Drop this process's references to open connections without closing them; the
    number dropped."""
    from django.db import connections
    n = 0
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _inherited.append(conn.connection)
            conn.connection = None
            n += 1
    return n


def close_caches() -> None:
    from django.core.cache import caches
    caches.close_all()


def on_process_init(**_: Any) -> None:
    global _in_child
    _in_child = True
    n = forget_inherited_connections()
    if n:
        log.debug("child: %d database connection(s) inherited from the node left unused", n)
    close_caches()


def on_task_prerun(**_: Any) -> None:
    if _in_child:
        from django.db import close_old_connections
        close_old_connections()


def on_task_postrun(**_: Any) -> None:
    if _in_child:
        from django.db import close_old_connections
        close_old_connections()
        close_caches()
