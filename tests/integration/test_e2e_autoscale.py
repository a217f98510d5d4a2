"""Autoscaling on real nodes (docs/pools.md): the pool grows under a backlog and shrinks
when idle, the autoscale command (app.control and meshctl), pool_grow/pool_shrink
within the range, and a policy an app put in place of mesh's."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import MESHCTL, run_program, wait_until

from mesh import Mesh
from mesh.cli.common import EXIT_OK

RESULT_TIMEOUT = 60.0
# a short keep-alive so that shrinking is quick; CPU never holds growth back (other
# tests share this machine's 2 cores: the CPU gate is table-tested in tests/unit)
FAST = {"autoscale_keepalive": 1, "autoscale_max_cpu": 100}


def _control(node: Any) -> Any:
    return Mesh("ctl", peers=[node.endpoint], mdns=False).control


def _pool(node: Any) -> tuple[int, int, int]:
    s = node.status()
    return s["busy"], s["total"], s["queued"]


def test_pool_grows_under_a_backlog_and_shrinks_when_idle(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=None, autoscale="4,1", **FAST)
    assert _pool(node) == (0, 1, 0)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    backlog = [t.wait_for_file.delay(str(gate)) for _ in range(12)]
    # four children (the max) take four of the twelve; the rest wait
    wait_until(lambda: _pool(node) == (4, 4, 8), what="four busy children, eight waiting")
    gate.touch()
    assert [r.get(timeout=RESULT_TIMEOUT) for r in backlog] == ["opened"] * 12
    wait_until(lambda: _pool(node) == (0, 1, 0), what="the pool back at its min")
    # the pool's size drops at once; the children told to leave exit and are reaped
    # a moment later (docs/pools.md: idle children leave at once), and are counted
    # in "children" until then (2 were, once, on a loaded machine)
    wait_until(lambda: node.status()["children"] == 1, what="the children told to leave to exit")
    assert node.status()["children_started"] == 4
    assert "autoscale: 1 -> 4 workers" in node.stderr()
    assert t.add.delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4


def test_the_threads_pool_autoscales_its_threads(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=None, pool="threads", autoscale="3,1", **FAST)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    backlog = [t.wait_for_file.delay(str(gate)) for _ in range(5)]
    wait_until(lambda: _pool(node) == (3, 3, 2), what="three busy threads, two waiting")
    gate.touch()
    assert [r.get(timeout=RESULT_TIMEOUT) for r in backlog] == ["opened"] * 5
    wait_until(lambda: _pool(node) == (0, 1, 0), what="one thread's worth again")
    assert node.status()["children_started"] == 1                 # threads, not children


def test_autoscale_command_sets_the_range_at_run_time(start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1, **FAST)
    ctl = _control(node)
    assert node.status()["pool_autoscale"] is False
    reply = ctl.autoscale(3, 2)[node.name]
    assert reply == {"ok": "autoscale now max=3 min=2", "max": 3, "min": 2, "size": 2}
    s = node.status()
    assert (s["pool_range"], s["pool_autoscale"], s["total"]) == ([2, 3], True, 2)
    # pool_grow and pool_shrink move the pool within the range
    assert ctl.pool_grow(5)[node.name] == {"size": 3}
    assert ctl.pool_shrink(5)[node.name] == {"size": 2}
    assert "min <= max" in ctl.autoscale(2, 3)[node.name]["error"]
    done = run_program(MESHCTL, "--peers", node.endpoint, "control", "autoscale", "5", "1")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert "autoscale now max=5 min=1" in done.stdout
    assert node.status()["pool_range"] == [1, 5]
    # idle, it goes down to the new min after the keep-alive
    wait_until(lambda: _pool(node) == (0, 1, 0), what="the pool down to one")
    assert make_client(node).tasks.add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2


def test_an_app_can_put_its_own_policy_in_place_of_meshs(start_node: Any, tmp_path: Path) -> None:
    marker = tmp_path / "decisions"
    node = start_node(app="autoscale_app", concurrency=None, autoscale="3,1",
                      env={"AUTOSCALE_MARKER": str(marker)}, **FAST)
    # no load at all, yet its policy keeps the pool at the max
    wait_until(lambda: node.status()["total"] == 3, what="the pool at 3 with no work")
    s = node.status()
    assert s["components"].count("autoscaler") == 1                # replaced, not added
    assert marker.read_text().splitlines()[0] == "1 3"
    assert "the app's AlwaysMax replaces mesh's" in node.stderr()
