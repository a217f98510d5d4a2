"""A machine's wall clock set back or forward, for one process under test.

Put this directory first on a meshnode's PYTHONPATH with CLOCK_SHIFT_FILE naming a
file: the process's ``time.time`` is then the real time plus the number of seconds in
that file (read every 50 ms; 0 when it is missing or empty), and ``time.monotonic``
is left alone, as when an operator or NTP steps the clock of a running machine. Used
by tests/integration/test_e2e_beat.py (a clock set back while the node runs); the
product has no hook for this.
"""
from __future__ import annotations

import os
import threading
import time

_PATH = os.environ.get("CLOCK_SHIFT_FILE")


def _install(path: str) -> None:
    real_time, real_sleep = time.time, time.sleep
    offset = [0.0]

    def read() -> None:
        try:
            with open(path) as f:
                offset[0] = float(f.read().strip() or 0.0)
        except (OSError, ValueError):
            pass

    def poll() -> None:
        while True:
            read()
            real_sleep(0.05)

    read()
    time.time = lambda: real_time() + offset[0]
    threading.Thread(target=poll, name="clock-shift", daemon=True).start()


if _PATH:
    _install(_PATH)
