"""The prefork pool under real processes: crashes, time limits, recycling, fairness."""
from __future__ import annotations

import collections
import sys
from pathlib import Path
from typing import Any

import pytest
import tasks_app
from harness import wait_until

from mesh import states
from mesh.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError

RESULT_TIMEOUT = 60.0


def test_children_inherit_the_frozen_heap_of_the_node(start_node: Any, make_client: Any) -> None:
    """meshnode freezes what it loaded (modules, the app) before its children are
    forked: the cyclic collector never walks those objects again (mesh/cli/meshnode.py)."""
    node = start_node(concurrency=1)
    assert make_client(node).tasks.gc_frozen.delay().get(timeout=RESULT_TIMEOUT) > 10_000


# optional dependencies a node imports only for the feature that needs them (mDNS, the
# dashboard and /metrics, crontab schedules, --autoreload): each MB the node holds
# when it forks counts again in every child's RSS (docs/performance.md, "Memory")
OPTIONAL = ["zeroconf", "ifaddr", "aiohttp", "prometheus_client", "croniter", "dateutil",
            "watchfiles"]
# and what only a rare path of the node uses (docs/performance.md, "Round 14"): a wrong
# MESH_* name's hint (difflib), key files (zmq.auth: only with --keys), the machine's
# addresses (psutil: only for a wildcard bind with a seed on its own port; not at all
# for the node's CPU and RSS on Linux, mesh/node/procstat.py), signatures (mesh.canvas:
# the beat component's mesh.periodic loads it for add_periodic_task only)
RARE = ["difflib", "zmq.auth", "mesh.canvas",
        *(["psutil"] if sys.platform.startswith("linux") else [])]
# and what a node never imports (round 15): AsyncResult's module (mesh.result: a node
# needs only mesh/slot.py's helpers) and the workflows' results
NOT_IN_NODE = ["mesh.result", "mesh.workflow.results"]


def test_children_of_a_plain_node_carry_no_optional_dependency(start_node: Any,
                                                                make_client: Any) -> None:
    a = start_node(concurrency=1)                  # --no-mdns, no --http, no beat, no reload
    b = start_node(concurrency=1, peers=a.endpoint)          # one seeded, as in the bench
    for node in (a, b):
        assert make_client(node).tasks.loaded.delay(OPTIONAL + RARE + NOT_IN_NODE).get(
            timeout=RESULT_TIMEOUT) == []


def test_child_exit_fails_its_task_and_the_pool_keeps_working(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    first = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    crash = t.exit_child.delay(3)
    queued_behind = [t.add.delay(i, 1) for i in range(10)]
    with pytest.raises(WorkerLostError) as info:
        crash.get(timeout=RESULT_TIMEOUT)
    assert crash.id in str(info.value)
    assert crash.state == states.FAILURE
    assert [r.get(timeout=RESULT_TIMEOUT) for r in queued_behind] == [i + 1 for i in range(10)]
    second = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    assert second != first
    assert node.status()["children_started"] == 2


def test_child_segfault_fails_its_task_and_the_child_is_replaced(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    first = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    r = t.segfault.delay()
    with pytest.raises(WorkerLostError) as info:
        r.get(timeout=RESULT_TIMEOUT)
    assert "SIGSEGV" in str(info.value)
    second = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    assert second != first
    assert [r.get(timeout=RESULT_TIMEOUT) for r in [t.add.delay(i, i) for i in range(20)]] == \
        [2 * i for i in range(20)]
    assert node.ping(timeout=5.0)


def test_soft_time_limit_from_the_node_flag_reaches_the_task(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1, soft_time_limit=0.5)
    t = make_client(node).tasks
    before = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    assert t.spin_until_soft_limit.delay().get(timeout=RESULT_TIMEOUT) == tasks_app.SOFT_LIMIT_MARKER
    # not caught: the task fails with SoftTimeLimitExceeded, and its child lives on
    with pytest.raises(SoftTimeLimitExceeded):
        t.spin.delay(30).get(timeout=RESULT_TIMEOUT)
    assert t.pid.delay().get(timeout=RESULT_TIMEOUT) == before
    assert t.add.delay(1, 2).get(timeout=RESULT_TIMEOUT) == 3


def test_soft_time_limit_per_task(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    r = t.spin_until_soft_limit.apply_async(soft_time_limit=0.3)
    assert r.get(timeout=RESULT_TIMEOUT) == tasks_app.SOFT_LIMIT_MARKER
    # a task without a limit is not interrupted by one that had a limit before it
    assert t.spin.delay(0.6).get(timeout=RESULT_TIMEOUT) == "finished"


@pytest.mark.parametrize("where", ["node flag", "per task"])
def test_hard_time_limit_kills_the_child_and_a_new_one_takes_over(
        start_node: Any, make_client: Any, where: str) -> None:
    node = start_node(concurrency=1, **({"time_limit": 1} if where == "node flag" else {}))
    t = make_client(node).tasks
    before = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    options = {"time_limit": 1} if where == "per task" else {}
    r = t.sleep.apply_async((60,), **options)
    later = [t.add.delay(i, 10) for i in range(5)]
    with pytest.raises(TimeLimitExceeded) as info:
        r.get(timeout=RESULT_TIMEOUT)
    assert r.id in str(info.value)
    assert [x.get(timeout=RESULT_TIMEOUT) for x in later] == [i + 10 for i in range(5)]
    assert t.pid.delay().get(timeout=RESULT_TIMEOUT) != before
    assert node.status()["children_started"] == 2


def test_hard_time_limit_with_a_soft_one_lets_the_task_clean_up(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1, time_limit=5, soft_time_limit=0.3)
    t = make_client(node).tasks
    before = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    assert t.spin_until_soft_limit.delay().get(timeout=RESULT_TIMEOUT) == tasks_app.SOFT_LIMIT_MARKER
    assert t.pid.delay().get(timeout=RESULT_TIMEOUT) == before   # nobody was killed


def test_a_long_task_does_not_block_short_ones(start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=2)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    long = t.wait_for_file.delay(str(gate))      # runs until the test opens the gate
    try:
        wait_until(lambda: node.status()["busy"] == 1, what="the long task to start")
        short = [t.add.delay(i, i) for i in range(20)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in short] == [2 * i for i in range(20)]
        assert not long.ready()                  # all 20 finished while the long one ran
        assert node.status()["busy"] == 1
    finally:
        gate.touch()
    assert long.get(timeout=RESULT_TIMEOUT) == "opened"


def test_max_tasks_per_child_recycles_children(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=2, max_tasks_per_child=3)
    t = make_client(node).tasks
    pids = [r.get(timeout=RESULT_TIMEOUT) for r in [t.pid.delay() for _ in range(24)]]
    per_child = collections.Counter(pids)
    assert len(per_child) > 2
    assert max(per_child.values()) <= 3, per_child
    assert len(per_child) >= 8            # 24 tasks, at most 3 per child
    # every child that ran its 3 tasks retired and was replaced as it left
    retired = sum(1 for n in per_child.values() if n == 3)
    assert node.status()["children_started"] == 2 + retired, per_child


def test_max_memory_per_child_recycles_a_child(start_node: Any, make_client: Any) -> None:
    limit_kib = 96 * 1024
    node = start_node(concurrency=1, max_memory_per_child=limit_kib)
    t = make_client(node).tasks
    first = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    assert t.pid.delay().get(timeout=RESULT_TIMEOUT) == first    # below the limit: kept
    rss_kib = t.hog.delay(128).get(timeout=RESULT_TIMEOUT)
    assert rss_kib > limit_kib
    second = t.pid.delay().get(timeout=RESULT_TIMEOUT)
    assert second != first
    assert t.pid.delay().get(timeout=RESULT_TIMEOUT) == second
    assert node.status()["children_started"] == 2
