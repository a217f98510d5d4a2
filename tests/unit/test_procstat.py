"""mesh/node/procstat.py: the heartbeat's and the autoscaler's figures from /proc, as
psutil gives them (psutil is not imported by the node on Linux: its import is ~0.9 MiB
in the node and again in each child; docs/performance.md, "Round 11")."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mesh.node import procstat
from mesh.node.procstat import Proc, ProcessGone, machine_cpu_percent

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not procstat.LINUX, reason="reads /proc")


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@linux_only
def test_rss_and_cpu_percent_are_psutils() -> None:
    mine, ps = Proc(), psutil.Process()
    assert mine.cpu_percent() == 0.0           # the first call, as psutil's
    ps.cpu_percent(None)
    _spin(0.3)
    a, b = mine.cpu_percent(), ps.cpu_percent(None)
    assert a > 0 and b > 0 and abs(a - b) <= max(2.0, b / 4), (a, b)   # (loaded: not 100)
    assert abs(mine.rss() - ps.memory_info().rss) < 2**20
    times = ps.cpu_times()
    assert abs(procstat._cpu_seconds(os.getpid()) - (times.user + times.system)) < 0.05


@linux_only
def test_another_process_and_its_end() -> None:
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nend = time.process_time() + 0.5\n"
                              "while time.process_time() < end: pass\ntime.sleep(30)"])
    try:
        p, ps = Proc(child.pid), psutil.Process(child.pid)
        p.cpu_percent()
        ps.cpu_percent(None)
        time.sleep(0.3)
        a, b = p.cpu_percent(), ps.cpu_percent(None)
        assert abs(a - b) < 20, (a, b)
        assert abs(p.rss() - ps.memory_info().rss) < 2**20
    finally:
        child.kill()
        child.wait()
    with pytest.raises(ProcessGone):
        p.rss()
    with pytest.raises(ProcessGone):
        p.cpu_percent()
    with pytest.raises(ProcessGone):
        Proc(child.pid)


@linux_only
def test_machine_cpu_percent_is_psutils() -> None:
    machine_cpu_percent()
    psutil.cpu_percent(None)
    _spin(0.3)
    a, b = machine_cpu_percent(), psutil.cpu_percent(None)
    assert 0 <= a <= 100 and abs(a - b) < 20, (a, b)


def test_a_stat_line_whose_name_holds_spaces_and_parentheses() -> None:
    """The command name (field 2) may hold ') (': the times come after its last ')'."""
    if not procstat.LINUX:
        pytest.skip("reads /proc")
    code = ("import sys, time\n"
            "with open('/proc/self/comm', 'w') as f: f.write('x) (y z')\n"
            "print('named', flush=True)\ntime.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "named"
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            assert b"(x) (y z)" in f.read()
        assert Proc(child.pid).cpu_percent() == 0.0
        assert 0 <= procstat._cpu_seconds(child.pid) < 60
        assert Proc(child.pid).rss() > 2**20
    finally:
        child.kill()
        child.communicate()


@linux_only
def test_the_node_does_not_import_psutil() -> None:
    out = subprocess.run([sys.executable, "-c",
                          "import sys, mesh, mesh.node.node, mesh.cli.meshnode, bench.tasks\n"
                          "print('psutil' in sys.modules)"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
