"""Django integration. Imported only when Django is in use (DJANGO_SETTINGS_MODULE is
set when a ``Mesh`` is made, or Django names ``mesh.django.TaskBackend``): mesh itself
never imports Django.

* fixup.py      -- what a node does for Django (Celery's fixup): django.setup() before
                   tasks are discovered, the installed apps for autodiscover_tasks(),
                   stale database connections closed around every task in a child
* transaction.py -- Task.delay_on_commit / apply_async_on_commit
* backend.py    -- ``TaskBackend``, a backend for Django's Tasks framework
                   (``django.tasks``, or the ``django-tasks`` backport)

See docs/django.md.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TaskBackend"]


def __getattr__(name: str) -> Any:
    # the backend imports Django's Tasks framework: only when asked for
    if name == "TaskBackend":
        from mesh.django.backend import TaskBackend
        return TaskBackend
    raise AttributeError(f"module 'mesh.django' has no attribute {name!r}")
