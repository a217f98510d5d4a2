"""Task.replace(sig) on real meshnode processes: a task replaced by a task, a chain, a
group or a chord; as a chain's step, a group's member, a chord's header; failing
replacements; nesting; a node killed (-9) while the replaced task waits.

Tasks are tests/integration/wf_app.py (``wf.replaced``); runs are counted in files.
"""
from __future__ import annotations

import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness import run_python, wait_until

from mesh import Mesh, chain, chord, group, signature

APP = "wf_app"
TIMEOUT = 60.0


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def S(app: Mesh, name: str, *args: Any, **kwargs: Any) -> Any:
    return signature(name, args, kwargs, app=app)


def client(*nodes: Any) -> Mesh:
    return Mesh("replace-it", peers=[n.endpoint for n in nodes], mdns=False)


def test_a_task_replaced_by_a_task_a_chain_a_group_a_chord(start_node: Any, tmp_path: Path) -> None:
    a = start_node(app=APP)
    b = start_node(app=APP, peers=a.endpoint)
    runs = tmp_path / "runs"
    with client(a, b) as app:
        rs = {how: S(app, "wf.replaced", x, how, str(runs)).delay()
              for x, how in ((1, "task"), (2, "chain"), (3, "group"), (4, "chord"))}
        assert rs["task"].get(timeout=TIMEOUT) == 101
        assert rs["chain"].get(timeout=TIMEOUT) == 13
        assert rs["group"].get(timeout=TIMEOUT) == [3, 4, 5]        # a list, in order
        assert rs["chord"].get(timeout=TIMEOUT) == 4 + 5 + 6
        assert all(r.state == "SUCCESS" for r in rs.values())
    assert sorted(lines(runs)) == ["replaced 1 0", "replaced 2 0", "replaced 3 0", "replaced 4 0"]
    # another process, which sent nothing, reads each result under the replaced task's id
    ids = ",".join(r.id for r in rs.values())
    out = run_python(textwrap.dedent(f"""
        from mesh import Mesh
        with Mesh("reader", peers=["{b.endpoint}"], mdns=False) as app:
            print([app.AsyncResult(i).get(timeout=60) for i in "{ids}".split(",")])
    """))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[101, 13, [3, 4, 5], 15]"


def test_a_replaced_step_of_a_chain_group_and_chord_gives_its_replacement_s_value(
        start_node: Any, tmp_path: Path) -> None:
    node = start_node(app=APP)
    linked = tmp_path / "linked"
    with client(node) as app:
        r = chain(S(app, "wf.add", 1, 1), S(app, "wf.replaced", "chain"), S(app, "wf.add", 1000)).delay()
        assert r.get(timeout=TIMEOUT) == 2 + 1 + 10 + 1000       # later steps get its value
        assert r.parent.get(timeout=TIMEOUT) == 13               # the replaced step's own id
        g = group(S(app, "wf.replaced", 1, "task"), S(app, "wf.add", 2, 2),
                  S(app, "wf.replaced", 3, "group")).delay()
        assert g.get(timeout=TIMEOUT) == [101, 4, [3, 4, 5]]
        c = chord([S(app, "wf.replaced", 1, "task"), S(app, "wf.replaced", 2, "chain")],
                  S(app, "wf.tsum")).delay()
        assert c.get(timeout=TIMEOUT) == 101 + 13
        t = S(app, "wf.replaced", 7, "task").apply_async(link=S(app, "wf.record", str(linked)))
        assert t.get(timeout=TIMEOUT) == 107
        wait_until(lambda: lines(linked), what="the link callback")
        assert lines(linked) == ["linked 107"]                  # the callback follows


def test_a_failing_replacement_fails_the_task_and_runs_the_chain_s_errback(
        start_node: Any, tmp_path: Path) -> None:
    node = start_node(app=APP)
    errors = tmp_path / "errors"
    with client(node) as app:
        r = S(app, "wf.replaced", 5, "fail").delay()
        with pytest.raises(Exception) as info:
            r.get(timeout=TIMEOUT)
        assert "StepError: boom [5]" in str(info.value)          # wf_app.StepError
        assert r.state == "FAILURE"
        c = chain(S(app, "wf.replaced", 6, "fail"), S(app, "wf.add", 1)).on_error(
            S(app, "wf.on_error", str(errors))).delay()
        with pytest.raises(Exception) as info:
            c.get(timeout=TIMEOUT)
        assert "StepError: boom [6]" in str(info.value)
        wait_until(lambda: lines(errors), what="the chain's errback")
        assert lines(errors) == [f"error {c.parent.id} wf.replaced StepError boom [6]"]


def test_nested_replacements_count_and_endless_ones_end(start_node: Any, tmp_path: Path) -> None:
    node = start_node(app=APP)
    runs = tmp_path / "runs"
    with client(node) as app:
        assert S(app, "wf.replaced", 4, "twice", str(runs)).delay().get(timeout=TIMEOUT) == 104
        assert lines(runs) == ["replaced 4 0", "replaced 4 1"]
        r = S(app, "wf.replaced", 8, "forever").delay()
        with pytest.raises(Exception) as info:
            r.get(timeout=TIMEOUT)
        assert type(info.value).__name__ == "ReplaceNestingError", info.value
        assert "more than 50 times over" in str(info.value)


def _replaced_then_killed(start_node: Any, runs: Path, nodes: list[Any], b: Any,
                          how: str = "kill") -> Any:
    """``wf.replaced`` (queue tq: not node ``b``) replaces itself with ``wf.slow`` of
    queue slowq (only ``b``); once the replacement runs, the node coordinating the
    replaced task is killed (-9), or stopped (``how="stop"``: SIGTERM). Its id, and
    the node killed."""
    with client(*nodes) as app:
        wait_until(lambda: len(app.control.ping()) == len(nodes), what="the mesh to form")
        r = S(app, "wf.replaced", 9, "slow", str(runs), 2.0).set(queue="tq").delay()
        wait_until(lambda: "start 9" in lines(runs), what="the replacement to start")
        holder = next(n for n in nodes if n.status()["workflow_groups"] == 1)
        assert holder is not b and holder.status()["workflow_replaced"] == 1
        if how == "stop":                   # a graceful stop hands it on
            holder.send_signal(signal.SIGTERM)
            assert holder.wait(60) == 0
        else:
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
        return r.id, holder


def test_the_holder_killed_and_restarted_while_its_task_waits_for_its_replacement(
        start_node: Any, tmp_path: Path) -> None:
    """Node a, holding the replaced task T (queue tq), is killed (-9) while T's
    replacement runs on node b (queue slowq), and started again: its journal has T
    with its replacement (the ``replaced_by`` header), so it coordinates T again
    without running T again, finds the replacement held on b (WF_PULL) and does not
    start it again; T's result arrives, the replacement ran once."""
    a = start_node(app=APP, queues="celery,tq")
    b = start_node(app=APP, queues="celery,slowq", peers=a.endpoint)
    runs = tmp_path / "runs"
    tid, dead = _replaced_then_killed(start_node, runs, [a, b], b)
    start_node.restart(dead)
    with client(a, b) as reader:
        assert reader.AsyncResult(tid).get(timeout=TIMEOUT) == 9
    assert sorted(lines(runs)) == ["member 9", "replaced 9 0", "start 9"]


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_the_holder_killed_for_good_or_stopped_while_its_task_waits_for_its_replacement(
        start_node: Any, tmp_path: Path, how: str) -> None:
    """As above, on three nodes, the holder never restarted: T's backup (the other
    node of queue tq) has T's copy with its replacement and coordinates it; or the
    holder stops (SIGTERM) and hands T, coordinated, to that node (handoff)."""
    a = start_node(app=APP, queues="celery,tq")
    c = start_node(app=APP, queues="celery,tq", peers=a.endpoint)
    b = start_node(app=APP, queues="celery,slowq", peers=a.endpoint)
    runs = tmp_path / "runs"
    tid, dead = _replaced_then_killed(start_node, runs, [a, c, b], b, how)
    alive = [n for n in (a, c, b) if n is not dead]
    with client(*alive) as reader:
        assert reader.AsyncResult(tid).get(timeout=TIMEOUT) == 9
    assert sorted(lines(runs)) == ["member 9", "replaced 9 0", "start 9"]
    other = next(n for n in (a, c) if n is not dead).status()     # T's node now
    if how == "stop":               # handed on by the stopping node, not taken over later
        assert (other["taken_from_peers"], other["taken_over"]) == (1, 0), other
    else:
        assert other["taken_over"] == 1, other
