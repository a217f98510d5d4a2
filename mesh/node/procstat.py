"""The CPU and RSS of a process, and the machine's CPU, for the heartbeat and the
autoscaler: read from ``/proc`` on Linux, from psutil elsewhere.

Not psutil on Linux because of what importing it costs: ~0.9 MiB of heap in the node,
which each of its children inherits at the fork and counts in its RSS again (2.7 MiB
for a node and two children; docs/performance.md, "Round 11"). The figures are
psutil's: ``Process.cpu_percent(None)`` (the process's CPU time since the last call
over the wall time, in % of one CPU, 0.0 on the first call), ``memory_info().rss``
(``/proc/PID/statm``'s resident pages) and ``psutil.cpu_percent(None)`` (the
machine's busy time over its total since the last call, in %).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

LINUX = sys.platform.startswith("linux") and os.path.exists("/proc/self/stat")
_TICKS = os.sysconf("SC_CLK_TCK") if LINUX else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if LINUX else 4096


class ProcessGone(OSError):
    """The process ended (or cannot be read)."""


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` (every thread), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProcessGone(f"process {pid}: {e}") from e
    # the name (field 2) may hold spaces and parentheses: fields after its last ')'
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS     # utime, stime (fields 14, 15)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError) as e:
        raise ProcessGone(f"process {pid}: {e}") from e


class Proc:
    """One process (this one by default): ``cpu_percent()`` and ``rss()``.
    Both raise :class:`ProcessGone` once it has ended."""

    __slots__ = ("pid", "_last", "_ps")

    def __init__(self, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        self._last: tuple[float, float] | None = None     # (monotonic, CPU seconds)
        self._ps: Any = None
        if not LINUX:
            import psutil
            try:
                self._ps = psutil.Process(self.pid)
            except psutil.Error as e:
                raise ProcessGone(str(e)) from e
        elif not os.path.exists(f"/proc/{self.pid}"):
            raise ProcessGone(f"no process {self.pid}")

    def cpu_percent(self) -> float:
        """% of one CPU used since the last call (0.0 on the first)."""
        if self._ps is not None:
            return float(self._call("cpu_percent", None))
        now, cpu = time.monotonic(), _cpu_seconds(self.pid)
        last, self._last = self._last, (now, cpu)
        if last is None or now <= last[0]:
            return 0.0
        return round((cpu - last[1]) / (now - last[0]) * 100, 1)

    def rss(self) -> int:
        """Resident bytes."""
        if self._ps is not None:
            return int(self._call("memory_info").rss)
        return _rss(self.pid)

    def _call(self, name: str, *args: Any) -> Any:
        import psutil
        try:
            return getattr(self._ps, name)(*args)
        except psutil.Error as e:
            raise ProcessGone(str(e)) from e


_machine_last: tuple[int, int] | None = None     # (busy, total) jiffies at the last call


def machine_cpu_percent() -> float:
    """% of the machine's CPU time that was busy since the last call (the first call
    measures since boot), as ``psutil.cpu_percent(None)``."""
    global _machine_last
    if not LINUX:
        import psutil
        return float(psutil.cpu_percent(None))
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    # in user and nice already (psutil leaves it out of the total too)
    total = sum(fields[:8])
    busy = total - fields[3] - fields[4]
    last, _machine_last = _machine_last, (busy, total)
    if last is None:
        return round(busy / total * 100, 1) if total else 0.0
    d_total = total - last[1]
    if d_total <= 0:
        return 0.0
    return round(min(100.0, max(0.0, (busy - last[0]) / d_total * 100)), 1)
