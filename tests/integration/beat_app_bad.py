"""An app whose periodic schedule is wrong: a node must refuse to start, saying why."""
from __future__ import annotations

from beat_app import app, tick  # noqa: F401

app.conf.beat_schedule = {"broken": {"task": "beat_app.tick", "schedule": 5, "options": {"countdown": 3}}}
