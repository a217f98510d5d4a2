"""A beat_schedule entry with Celery's ``options: {"queue": ...}`` (and a broker's
``routing_key``) for test_e2e_celery_trial.py: ``where`` appends the node that ran it to
the file named by TRIAL_BEAT_LOG."""
from __future__ import annotations

import os
from typing import Any

from mesh import Mesh

app = Mesh("trial-beat", mdns=False)
app.conf.beat_schedule = {
    "to-reports": {"task": "trial_beat_app.where", "schedule": 1.0,
                   "options": {"queue": "reports", "routing_key": "reports"}},
}


@app.task(bind=True)
def where(self: Any) -> str:
    path = os.environ.get("TRIAL_BEAT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{self.request.hostname} {self.request.headers.get('queue')}\n")
    return str(self.request.hostname)
