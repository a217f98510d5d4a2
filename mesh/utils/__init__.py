"""Celery's ``celery.utils`` names that task code imports (``mesh.utils.log``)."""
