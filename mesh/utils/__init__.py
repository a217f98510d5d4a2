"""Celery's ``celery.utils`` names that task code imports (``mesh.utils.log``, and
``uuid``: ``from celery.utils import uuid`` becomes ``from mesh.utils import uuid``)."""
from __future__ import annotations

from mesh.app import new_task_id as uuid

__all__ = ["uuid"]
