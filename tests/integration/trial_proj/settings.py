CELERY_BROKER_URL = "redis://localhost:6379/0"
CELERY_RESULT_BACKEND = "redis://localhost:6379/1"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ROUTES = {"trial_proj.billing.tasks.charge": {"queue": "billing"}}
