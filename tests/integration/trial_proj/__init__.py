"""A Celery project as people write one, moved to mesh by changing its imports only
(test_e2e_celery_trial.py): the app in celery.py configured from a Django-style
settings module with the CELERY namespace, tasks found by autodiscover_tasks, shared
tasks, get_task_logger, a beat_schedule."""
from .celery import app as celery_app

__all__ = ("celery_app",)
