"""The task of bench/rerun_kill.py (a module a meshnode can load)."""
from __future__ import annotations

import time
from typing import Any

from mesh import Mesh

app = Mesh("rerun")


@app.task(name="rerun.mark", bind=True)
def mark(self: Any, path: str, seconds: float) -> str:
    """Sleep, then append this task's id to ``path``: one line per run."""
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{self.request.id}\n")
    return str(self.request.id)
