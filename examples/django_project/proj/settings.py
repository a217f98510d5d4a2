"""Settings for the example project: a shop whose orders are processed on the mesh."""
import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "shop",
]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")   # the backport of Django 6's django.tasks

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "proj.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# sqlite files, so that nodes (other processes) see what the web process commits. The
# test database is a file too, for the same reason: `manage.py test` against real
# nodes starts them with PROJ_DB pointing at PROJ_TEST_DB.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("PROJ_DB", str(BASE_DIR / "db.sqlite3")),
        "TEST": {"NAME": os.environ.get("PROJ_TEST_DB", str(BASE_DIR / "test_db.sqlite3"))},
        "OPTIONS": {"timeout": 30},
    },
}

# mesh: app.config_from_object("django.conf:settings", namespace="MESH") reads these.
# Nodes to send to: MESH_PEERS in the environment (or mDNS on the LAN).
MESH_TASK_ALWAYS_EAGER = os.environ.get("PROJ_EAGER") == "1"   # tests without nodes
MESH_TASK_EAGER_PROPAGATES = True

# Django's Tasks framework, run on the mesh
TASKS = {"default": {"BACKEND": "mesh.django.TaskBackend"}}
