"""Time, passed in: code that waits or schedules takes a Clock, tests pass a FakeClock."""
from __future__ import annotations

import time


class Clock:
    """Wall and monotonic time from the OS."""

    def time(self) -> float:
        """Unix time (for eta/expires that cross machines)."""
        return time.time()

    def monotonic(self) -> float:
        """Monotonic seconds (for durations and deadlines on one machine)."""
        return time.monotonic()


class FakeClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_000_000.0):
        self._now = start

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
