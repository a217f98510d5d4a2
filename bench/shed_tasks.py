"""The task of bench/shed_kill.py (a module a meshnode can load)."""
from __future__ import annotations

import time

from mesh import Mesh

app = Mesh("shedkill")


@app.task(name="shedkill.nap")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
