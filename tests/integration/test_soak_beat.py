"""Soak: three nodes, an entry every second, the firing node killed with SIGKILL every
minute (and started again 20 s later) for 10 minutes. Reports duplicates, missed runs
and takeover times; the figures are in docs/periodic.md.

    timeout 900 .venv/bin/python -m pytest -m slow -s tests/integration/test_soak_beat.py

BEAT_SOAK_SECONDS changes the length (default 600), BEAT_SOAK_PROFILE the membership
profile (default lan, mesh's default).
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from tests.integration.harness import NodeFactory, NodeProc, wait_until
from tests.integration.test_e2e_beat import beat_view, firing_node, read_runs_timed

pytestmark = pytest.mark.slow

KILL_EVERY = 60.0
RESTART_AFTER = 20.0


@pytest.mark.timeout(1200)
def test_soak_firing_node_killed_every_minute(start_node: NodeFactory, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    log_path = tmp_path / "runs.log"
    monkeypatch.setenv("BEAT_LOG", str(log_path))
    seconds = float(os.environ.get("BEAT_SOAK_SECONDS", "600"))
    prof = os.environ.get("BEAT_SOAK_PROFILE", "lan")
    first = start_node(app="beat_app", concurrency=1, profile=prof, name="soak-0")
    nodes = [first] + [start_node(app="beat_app", concurrency=1, profile=prof, name=f"soak-{i}",
                                  peers=first.endpoint) for i in (1, 2)]
    firing_node(nodes)
    start = time.time()
    end = start + seconds
    kills: list[tuple[float, str]] = []
    down: list[tuple[float, NodeProc]] = []
    next_kill = start + KILL_EVERY
    while time.time() < end:
        now = time.time()
        for t, victim in list(down):
            if now >= t + RESTART_AFTER:
                down.remove((t, victim))
                nodes.append(start_node.restart(victim))
        if now >= next_kill:
            next_kill += KILL_EVERY
            victim = firing_node(nodes)
            killed_at = time.time()
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            nodes.remove(victim)
            down.append((killed_at, victim))
            kills.append((killed_at, victim.name))
        time.sleep(0.2)
    wait_until(lambda: any(d > end for d, *_ in read_runs_timed(log_path)), 30, "the last runs")
    runs = [r for r in read_runs_timed(log_path) if start + 1 < r[0] <= end]
    executed: dict[float, list[float]] = {}
    for due, _pid, _tid, ran in runs:
        executed.setdefault(due, []).append(ran)
    duplicates = {d: len(v) for d, v in executed.items() if len(v) > 1}
    expected = [float(s) for s in range(int(start) + 2, int(end) + 1)]
    missed = [d for d in expected if d not in executed]
    takeovers, lost_per_kill = [], []
    for killed_at, _name in kills:
        after = sorted((min(v), d) for d, v in executed.items() if d > killed_at)
        if after:
            takeovers.append(round(after[0][0] - killed_at, 2))
        lost_per_kill.append(sum(1 for d in missed if killed_at < d <= killed_at + 15))
    lateness = [min(v) - d for d, v in executed.items()]
    report = {
        "profile": prof, "seconds": seconds, "kills": len(kills), "runs_expected": len(expected),
        "runs_executed": len(executed), "duplicates": len(duplicates), "missed": len(missed),
        "missed_per_kill": lost_per_kill, "takeover_s": takeovers,
        "takeover_median_s": statistics.median(takeovers) if takeovers else None,
        "takeover_max_s": max(takeovers, default=None),
        "lateness_median_s": round(statistics.median(lateness), 3) if lateness else None,
        "lateness_p99_s": round(sorted(lateness)[int(len(lateness) * 0.99) - 1], 3) if lateness else None,
        "missed_outside_kills": [d for d in missed
                                 if not any(k < d <= k + 15 for k, _ in kills)],
        "fired_by_node": {n.name: beat_view(n)["fired"] for n in nodes},
    }
    print("BEAT SOAK " + json.dumps(report, indent=2))
    out = os.environ.get("BEAT_SOAK_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=2))
    assert not duplicates, f"runs executed twice: {duplicates}"
    assert not report["missed_outside_kills"], report
