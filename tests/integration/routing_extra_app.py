"""tasks_app with one more task (test_e2e_routing.py): nodes running this and nodes
running tasks_app are one mesh ("mesh-it"), and only these have ``extra.only_here``."""
from __future__ import annotations

from typing import Any

from tasks_app import app  # noqa: F401  (the same app and tasks, one more below)


@app.task(name="extra.only_here", bind=True)
def only_here(self: Any, x: int) -> list[Any]:
    return [self.request.hostname, x]
