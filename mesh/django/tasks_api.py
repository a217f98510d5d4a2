"""Django's Tasks framework, wherever it is installed: ``django.tasks`` (Django 6+) or
the ``django-tasks`` backport (same API; Python 3.11, Django 4.2-5.2)."""
from __future__ import annotations

from typing import Any

try:   # Django 6
    from django.tasks import base as _base
    from django.tasks import exceptions as _exceptions
    from django.tasks import signals as _signals
    from django.tasks.backends.base import BaseTaskBackend as _BaseTaskBackend
    from django.utils.json import normalize_json as _normalize_json
    InvalidTask: Any = _exceptions.InvalidTask
except ImportError:
    try:
        from django_tasks import base as _base
        from django_tasks import exceptions as _exceptions
        from django_tasks import signals as _signals
        from django_tasks.backends.base import (
            BaseTaskBackend as _BaseTaskBackend,
        )
        from django_tasks.utils import normalize_json as _normalize_json
        InvalidTask = _exceptions.InvalidTaskError
    except ImportError as e:
        raise ImportError("mesh.django.TaskBackend needs Django's Tasks framework: Django 6 "
                          "(django.tasks), or the django-tasks package before it") from e

BaseTaskBackend: Any = _BaseTaskBackend
Task: Any = _base.Task
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
TaskError: Any = _base.TaskError
TaskContext: Any = _base.TaskContext
DEFAULT_TASK_QUEUE_NAME: str = _base.DEFAULT_TASK_QUEUE_NAME
TASK_MIN_PRIORITY: int = _base.TASK_MIN_PRIORITY
TASK_MAX_PRIORITY: int = _base.TASK_MAX_PRIORITY
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
normalize_json: Any = _normalize_json
