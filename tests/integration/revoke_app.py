"""A task that ignores SIGTERM, for the revoke tests (test_e2e_control.py): a
``revoke --terminate --signal SIGTERM`` leaves it running, and a second revoke with
SIGKILL must still end it."""
from __future__ import annotations

import os
import signal
import time

from mesh import Mesh

app = Mesh("mesh-it-revoke", mdns=False)


@app.task
def stubborn(started: str, timeout: float = 120.0) -> str:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(started, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "not stopped"
