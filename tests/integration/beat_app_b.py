"""beat_app's tasks with one more entry: a different schedule digest, so nodes running
this and nodes running beat_app both fire ``tick`` (each group on its own), and the
mesh must still run each of its runs once (test_e2e_beat.py)."""
from __future__ import annotations

from beat_app import app, tick  # noqa: F401  (the same tasks, registered under the same names)

from mesh.schedules import crontab

app.conf.beat_schedule = {"yearly": {"task": "beat_app.tick", "schedule": crontab(0, 0, day_of_month=1, month_of_year=1)}}
