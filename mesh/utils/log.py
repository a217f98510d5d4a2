"""``get_task_logger`` and ``get_logger``, where Celery code imports them from
(``from celery.utils.log import get_task_logger`` becomes
``from mesh.utils.log import get_task_logger``).

They are plain :mod:`logging` loggers: a task's lines go to the node's log (the
children inherit its handlers and format, ``worker_log_format``), as any logger's do.
Unlike Celery's, a task logger's lines are not prefixed with the task's name and id
by a task format (mesh has no ``worker_task_log_format``): a task that wants them logs
``self.request.id``.
"""
from __future__ import annotations

import logging

__all__ = ["get_logger", "get_task_logger"]


def get_logger(name: str) -> logging.Logger:
    """The logger called ``name`` (``logging.getLogger``), as Celery's ``get_logger``."""
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """The logger for a task module (``get_task_logger(__name__)``)."""
    return logging.getLogger(name)
