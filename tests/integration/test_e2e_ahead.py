"""Tasks sent ahead to a child (mesh/node/pool_ahead.py), with real meshnode processes.

When more tasks wait than there are children and a task name's recent runs were all
short, the node sends queued tasks to a busy child, behind the task it runs. These
tests hold a child on a gated task (``step`` with a gate file) while a deep queue
waits behind it, so tasks are sent ahead, then check that nothing sent ahead is lost
or run against orders: a revoked one is skipped, the ones ahead of a child that dies
or retires run elsewhere, and long tasks are never sent ahead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tasks_app  # noqa: F401 - the nodes' app: its tasks come back under the same names
from harness import wait_until

from mesh.exceptions import TaskRevokedError, WorkerLostError

WARM = 12         # short runs first, so the name's tasks may go ahead (SHORT_RUNS is 8)


def _warm(c: Any, log: Path) -> None:
    for r in [c.tasks.step.delay(str(log), -1 - i) for i in range(WARM)]:
        assert r.get(timeout=60) < 0


def _ran(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def _held_behind_a_gate(node: Any, c: Any, tmp_path: Path, n: int, die: bool = False
                        ) -> tuple[Any, list[Any], Path, Path]:
    """One child runs a gated ``step``; ``n`` more wait, some of them sent ahead to it.
    Tasks go ahead only after their name's last 8 runs each took under 5 ms in the
    child: on a loaded machine one warm-up run can take longer (CI), and none goes
    ahead. Then the round is drained and tried again, with a new log and gate."""
    for attempt in range(3):
        log, gate = tmp_path / f"ran-{attempt}.log", tmp_path / f"gate-{attempt}"
        _warm(c, log)
        blocker = c.tasks.step.delay(str(log), 1000, gate=str(gate), die=die)
        rest = [c.tasks.step.delay(str(log), i) for i in range(n)]
        try:
            wait_until(lambda: node.status()["ahead"] >= 2, 20, "tasks sent ahead to the busy child")
            return blocker, rest, log, gate
        except AssertionError:
            if attempt == 2:
                raise
        gate.touch()
        for r in [blocker, *rest]:
            try:
                r.get(timeout=60)
            except WorkerLostError:
                pass
    raise AssertionError("unreachable")


def test_tasks_sent_ahead_all_run_once_and_a_revoked_one_is_skipped(start_node: Any, make_client: Any,
                                                                     tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    c = make_client(node)
    blocker, rest, log, gate = _held_behind_a_gate(node, c, tmp_path, 30)
    skipped = rest[0]                 # the first queued: sent ahead, not started (gate shut)
    c.app.control.revoke(skipped.id)
    gate.touch()
    assert blocker.get(timeout=60) == 1000
    with pytest.raises(TaskRevokedError):
        skipped.get(timeout=60)
    assert [r.get(timeout=60) for r in rest[1:]] == list(range(1, 30))
    ran = _ran(log)
    assert 0 not in ran                                   # skipped in the child: never ran
    assert sorted(x for x in ran if x >= 0) == [*range(1, 30), 1000]   # each once
    assert node.status()["sent_ahead"] >= 2


def test_tasks_sent_ahead_of_a_child_that_dies_run_on_its_replacement(start_node: Any, make_client: Any,
                                                                      tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    c = make_client(node)
    blocker, rest, log, gate = _held_behind_a_gate(node, c, tmp_path, 20, die=True)
    gate.touch()                      # the child exits with tasks sent ahead of it
    with pytest.raises(WorkerLostError):
        blocker.get(timeout=60)
    assert [r.get(timeout=60) for r in rest] == list(range(20))
    assert sorted(x for x in _ran(log) if x >= 0) == list(range(20))     # each once


def test_tasks_sent_ahead_of_a_retiring_child_run_on_its_replacement(start_node: Any, make_client: Any,
                                                                     tmp_path: Path) -> None:
    node = start_node(concurrency=1, max_tasks_per_child=3)
    c = make_client(node)
    log = tmp_path / "ran.log"
    _warm(c, log)
    results = [c.tasks.step.delay(str(log), i) for i in range(200)]
    assert [r.get(timeout=60) for r in results] == list(range(200))
    assert sorted(x for x in _ran(log) if x >= 0) == list(range(200))
    st = node.status()
    assert st["sent_ahead"] > 0 and st["children_started"] > 10


def test_long_tasks_are_never_sent_ahead(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    c = make_client(node)
    results = [c.tasks.sleep.delay(0.02) for _ in range(40)]   # each longer than SHORT_TASK
    assert [r.get(timeout=60) for r in results] == [0.02] * 40
    assert node.status()["sent_ahead"] == 0
