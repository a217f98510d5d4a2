"""The project's mesh app (Celery's proj/celery.py).

Run a node for it from this directory:  meshnode -A proj
"""
import os

from mesh import Mesh

# the settings the node (and anything else importing this) uses
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Mesh("proj")

# Settings named MESH_* in settings.py configure the app: MESH_TASK_ALWAYS_EAGER is
# app.conf.task_always_eager.
app.config_from_object("django.conf:settings", namespace="MESH")

# Import tasks.py from every installed app (when a node starts, not now: Django is
# not set up yet while this module is imported).
app.autodiscover_tasks()
