import os

import django

SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["dsite.jobs"]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")    # the backport of django.tasks
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DSITE_DB", "/tmp/dsite.sqlite3"),
        # persistent connections: what the node's per-task closing must cope with
        "CONN_MAX_AGE": None,
    },
}
TASKS = {"default": {"BACKEND": "mesh.django.TaskBackend"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
