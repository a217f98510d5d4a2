from datetime import timedelta

from mesh import Mesh as Celery  # was: from celery import Celery
from mesh.schedules import crontab  # was: from celery.schedules import crontab

app = Celery("trial_proj")
app.config_from_object("trial_proj.settings", namespace="CELERY")
app.autodiscover_tasks(["trial_proj.billing"])

app.conf.beat_schedule = {
    "nightly": {"task": "trial_proj.billing.tasks.add", "schedule": crontab(hour=3, minute=0),
                "args": (1, 1)},
    "hourly": {"task": "trial_proj.billing.tasks.add", "schedule": timedelta(hours=1),
               "args": (2, 2)},
}
