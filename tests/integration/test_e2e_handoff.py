"""Nothing depends on the submitter (real processes; every submitter is a process that
exits right after its tasks are acknowledged).

* shedding: a busy node hands queued tasks to an idle one, node to node;
* a graceful stop hands queued and countdown tasks to another node (countdowns kept);
* a retry that comes due while a node stops runs on another node;
* a node stopping with no peer alive keeps its queue in its journal and runs it when it
  starts again;
* the holder killed with -9 and never restarted: its backup runs what was not finished
  and serves every result, to any process (``app.AsyncResult``, ``meshctl result``).

Every result is read from a third process (the test, or meshctl) and checked.
"""
from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

from harness import (
    MESHCTL,
    ClientHandle,
    NodeFactory,
    NodeProc,
    run_program,
    run_python,
    wait_until,
)

from mesh.cli.common import EXIT_OK
from mesh.node import shedding
from mesh.wire.protocol import ControlReply

RESULT_TIMEOUT = 60.0

# argv: peers (comma-separated), then a JSON list of [task name, args, options]; prints
# the task ids as JSON and exits (the client waits for every acknowledgement at exit)
SUBMITTER = """
import json, sys
from mesh import Mesh
app = Mesh("submitter", peers=sys.argv[1].split(","), mdns=False)
ids = [app.send_task(name, args=args, **opts).id for name, args, opts in json.loads(sys.argv[2])]
print(json.dumps(ids))
"""


def submit_and_exit(peers: list[NodeProc], calls: list[tuple[str, list[Any], dict[str, Any]]]) -> list[str]:
    """Submit ``calls`` from a process that exits at once; the task ids."""
    p = run_python(SUBMITTER, ",".join(n.endpoint for n in peers), json.dumps(calls))
    assert "not acknowledged" not in p.stderr, p.stderr
    ids: list[str] = json.loads(p.stdout)
    return ids


def alive_members(node: NodeProc) -> set[str]:
    reply = node.request("members")
    assert isinstance(reply, ControlReply) and reply.ok, reply
    return {m["node"] for m in reply.payload if m["state"] == "alive"}


def form_mesh(*nodes: NodeProc) -> None:
    names = {n.name for n in nodes}
    wait_until(lambda: all(alive_members(n) == names for n in nodes), what="the mesh to form")


def results(reader: ClientHandle, ids: list[str]) -> list[Any]:
    return [reader.app.AsyncResult(t).get(timeout=RESULT_TIMEOUT) for t in ids]


def nodes_of(reader: ClientHandle, ids: list[str]) -> list[str | None]:
    """The node that ran each task (from its result)."""
    out = []
    for t in ids:
        r = reader.app.AsyncResult(t)
        r.get(timeout=RESULT_TIMEOUT)
        out.append(r.node)
    return out


def test_shedding_hands_queued_tasks_to_an_idle_node(start_node: NodeFactory,
                                                     make_client: Any) -> None:
    a = start_node(name="a", concurrency=1)
    # all sent to a while it is alone (a submitter that knew b would place some there
    # itself: seen under load in CI), then b joins, idle, and a sheds to it
    ids = submit_and_exit([a], [("tasks_app.sleep", [0.2], {})] * 40)
    b = start_node(name="b", concurrency=1, peers=a.endpoint)
    form_mesh(a, b)
    reader = make_client(b)          # a third process's view: it did not submit them
    assert results(reader, ids) == [0.2] * 40
    ran = nodes_of(reader, ids)
    assert ran.count("b") > 0, "nothing was shed"
    assert set(ran) == {"a", "b"}
    sa, sb = a.status(), b.status()      # (b may shed some back to a)
    assert sb["taken_from_peers"] - sb["handed_off"] == ran.count("b")
    assert sa["handed_off"] - sa["taken_from_peers"] == ran.count("b")


def test_two_full_nodes_do_not_pass_tasks_back_and_forth(start_node: NodeFactory,
                                                         make_client: Any, tmp_path: Path) -> None:
    """Two nodes of 2 children, six long tasks all sent to a: a sheds three to b (then
    each runs two and has one queued, equally loaded) and nothing more moves, either
    way, while they run. Before, room was 2*total - busy - queued: a sent b four (b,
    all busy with an empty queue, had "room" for 2), and b, seeing a all busy with an
    empty queue, sent two back once they had waited there SHED_HOLD, and so on (6 tasks
    of 20 s: 14 handoffs in 20 s; here a handed 4 at once, and b sent tasks back within
    the wait below). The tasks wait on a gate, so none finishes (and legitimately frees
    a child) while the handoffs are counted."""
    # all sent to a while it is alone (a submitter that knew b would place some there
    # itself, as b's load in a's view is a moment old: a then sent b one, and b one
    # back, legitimately by its fresher view), then b joins, idle, and a sheds to it
    a = start_node(name="a", concurrency=2, profile="test")
    gate = tmp_path / "gate"
    ids = submit_and_exit([a], [("tasks_app.wait_for_file", [str(gate)], {})] * 6)
    wait_until(lambda: a.status()["queued"] == 4, what="two running on a, four queued")
    b = start_node(name="b", concurrency=2, peers=a.endpoint, profile="test")
    form_mesh(a, b)
    wait_until(lambda: a.status()["busy"] == 2 and b.status()["busy"] == 2,
               what="both nodes' children busy")
    # long enough for a task that came by shedding, and a peer that shed here, to be
    # shed to again (SHED_HOLD, PEER_HOLD), and for fresh reports both ways
    time.sleep(shedding.SHED_HOLD + shedding.PEER_HOLD + 1.0)
    sa, sb = a.status(), b.status()
    moved = {"a": (sa["handed_off"], sa["taken_from_peers"]),
             "b": (sb["handed_off"], sb["taken_from_peers"])}
    assert moved == {"a": (3, 0), "b": (0, 3)}, moved          # three each, moved once
    assert (sa["held"], sb["held"]) == (3, 3)
    gate.touch()
    reader = make_client(b)
    assert results(reader, ids) == ["opened"] * 6
    assert sorted(nodes_of(reader, ids)) == ["a"] * 3 + ["b"] * 3


def _a_busy_with_work_then_b(start_node: NodeFactory, gate: Path, countdown: float) -> Any:
    """a running a gated task, 10 queued and 5 with ``countdown``, all sent to a alone,
    then b joins; (a, b, ids, t0), or None when b's start took so long that a
    countdown came due on a first (both are stopped then)."""
    a = start_node(name="a", concurrency=1)
    running = submit_and_exit([a], [("tasks_app.wait_for_file", [str(gate)], {})])
    wait_until(lambda: a.status()["busy"] == 1, what="the gated task to run on a")
    t0 = time.time()
    queued = submit_and_exit([a], [("tasks_app.add", [i, 1000], {}) for i in range(10)])
    later = submit_and_exit([a], [("tasks_app.stamp", [], {"countdown": countdown}) for _ in range(5)])
    b = start_node(name="b", concurrency=1, peers=a.endpoint)   # (they were all sent to a)
    form_mesh(a, b)
    if a.status()["scheduled"] == 5:
        return a, b, (running, queued, later), t0
    assert time.time() - t0 > countdown - 1.0, a.status()    # (due already, or lost)
    b.stop()
    a.stop(grace=0.1)            # (its child waits for a gate that never opens)
    return None


def test_a_graceful_stop_hands_queued_and_countdown_tasks_to_another_node(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    # The countdowns must not come due before the stop: b's start must end first. On a
    # loaded machine a node took 26 s to start (the countdowns ran on a: "scheduled 0").
    # Then the set-up is made again with a countdown longer than that took, up to 3 times.
    countdown, setup = 6.0, None
    for attempt in range(3):
        t = time.time()
        setup = _a_busy_with_work_then_b(start_node, tmp_path / f"gate-{attempt}", countdown)
        if setup is not None:
            break
        countdown = 2 * (time.time() - t) + 6.0
    assert setup is not None, "b's start took longer than the countdowns 3 times"
    a, b, (running, queued, later), t0 = setup
    gate = tmp_path / f"gate-{attempt}"
    a.send_signal(signal.SIGTERM)
    # a's unstarted tasks move to b while a still drains its running task
    wait_until(lambda: b.status()["held"] + b.status()["succeeded"] >= 15, timeout=30,
               what="a's queued and countdown tasks to reach b")
    assert a.proc.poll() is None
    gate.touch()
    assert a.wait(60) == EXIT_OK
    reader = make_client(b)
    assert results(reader, running) == ["opened"]
    assert results(reader, queued) == [i + 1000 for i in range(10)]
    stamps = results(reader, later)
    assert all(s >= t0 + countdown - 0.05 for s in stamps), (t0, stamps)   # the countdown is kept
    assert set(nodes_of(reader, queued + later)) == {"b"}
    assert "handed" in a.stderr() and "kept in the journal" not in a.stderr()


def test_a_retry_that_comes_due_during_a_stop_runs_on_another_node(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    a = start_node(name="a", concurrency=1)
    gate, marker = tmp_path / "gate", tmp_path / "marker"
    ids = submit_and_exit([a], [("tasks_app.retry_after_gate", [str(gate), str(marker), 0.5], {})])
    wait_until(lambda: a.status()["busy"] == 1, what="the task to run on a")
    b = start_node(name="b", concurrency=1, peers=a.endpoint)
    form_mesh(a, b)
    a.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in a.stderr(), what="a to begin its shutdown")
    gate.touch()             # now it asks for a retry, while a drains
    assert a.wait(60) == EXIT_OK
    reader = make_client(b)
    assert results(reader, ids) == [{"retries": 1, "node": "b"}]
    assert marker.read_text() == "a"


def test_a_node_stopping_alone_keeps_its_queue_and_runs_it_after_a_restart(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    a = start_node(name="a", concurrency=1)
    assert "one copy" in a.stderr()           # a one-node mesh says so at start
    gate = tmp_path / "gate"
    running = submit_and_exit([a], [("tasks_app.wait_for_file", [str(gate)], {})])
    wait_until(lambda: a.status()["busy"] == 1, what="the gated task to run")
    queued = submit_and_exit([a], [("tasks_app.add", [i, 1], {}) for i in range(5)])
    later = submit_and_exit([a], [("tasks_app.add", [i, 2], {"countdown": 2.0}) for i in range(3)])
    a.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in a.stderr(), what="a to begin its shutdown")
    gate.touch()
    assert a.wait(60) == EXIT_OK
    assert "kept in the journal" in a.stderr()
    assert "8 unstarted task(s)" in a.stderr()
    a2 = start_node.restart(a)
    reader = make_client(a2)
    assert results(reader, running) == ["opened"]
    assert results(reader, queued) == [i + 1 for i in range(5)]
    assert results(reader, later) == [i + 2 for i in range(3)]


def test_the_holder_killed_for_good_loses_no_task_and_no_result(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    a = start_node(name="a", concurrency=2)
    b = start_node(name="b", concurrency=2, peers=a.endpoint)
    form_mesh(a, b)
    done = submit_and_exit([a], [("tasks_app.add", [i, i], {}) for i in range(30)])
    # a may shed some of them to b: count both
    wait_until(lambda: a.status()["succeeded"] + b.status()["succeeded"] >= 30,
               what="the first tasks to finish")
    gate = tmp_path / "gate"
    held = submit_and_exit([a], [("tasks_app.wait_for_file", [str(gate)], {})] * 4
                           + [("tasks_app.add", [i, 100], {}) for i in range(20)]
                           + [("tasks_app.add", [i, 200], {"countdown": 3.0}) for i in range(5)])
    wait_until(lambda: a.status()["busy"] >= 1, what="gated tasks to run on a")
    assert a.status()["held"] >= 2
    a.proc.kill()                     # -9, never restarted (its disk may as well be gone)
    a.proc.wait(10)
    gate.touch()
    reader = make_client(b)           # another process, which submitted nothing
    assert results(reader, done) == [i + i for i in range(30)]
    assert results(reader, held) == (["opened"] * 4 + [i + 100 for i in range(20)]
                                     + [i + 200 for i in range(5)])
    assert b.status()["taken_over"] >= 2
    # meshctl, from yet another process
    p = run_program(MESHCTL, "--peers", b.endpoint, "--json", "result", done[7])
    assert p.returncode == EXIT_OK, p
    assert json.loads(p.stdout)["result"] == 14


def test_an_owner_sends_a_dead_holders_tasks_to_their_backup_where_they_run_once(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    # the owner stays: when the holder dies, it sends each task to the node that kept
    # its copy (rendezvous over the nodes alive), which took it over: one run each
    a = start_node(name="a", concurrency=1)
    b = start_node(name="b", concurrency=1, peers=a.endpoint)
    c = start_node(name="c", concurrency=1, peers=a.endpoint)
    form_mesh(a, b, c)
    owner = make_client(a)
    wait_until(lambda: len(owner.app.client._placeable) == 3, what="the owner to see all three")
    out = tmp_path / "runs"
    rs = [owner.tasks.append_line.apply_async((str(out), f"t{i}"), countdown=4.0)
          for i in range(60)]
    wait_until(lambda: all(r.state == "RECEIVED" for r in rs), what="every task acknowledged")
    on_a = [r for r in rs if r._slot.node == a.endpoint]
    assert on_a, "no task went to a"
    a.proc.kill()
    a.proc.wait(10)
    assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == [f"t{i}" for i in range(60)]
    wait_until(lambda: b.status()["held"] + c.status()["held"] == 0, what="b and c to be done")
    runs = out.read_text().splitlines()
    assert sorted(runs) == sorted(f"t{i}" for i in range(60)), "a task ran twice, or never"
    assert owner.app.client.failovers >= len(on_a)


def test_tasks_held_with_one_copy_are_copied_when_a_peer_comes_and_survive_the_holder(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    """A node alone holds its tasks with one copy (and does not look for backups while
    alone); once a peer is alive they are copied to it, so killing the holder then
    loses none of them. (Scheduled tasks: queued ones would be shed to the peer.)"""
    a = start_node(name="a", concurrency=1)
    gate = tmp_path / "gate"
    running = submit_and_exit([a], [("tasks_app.wait_for_file", [str(gate)], {})])
    wait_until(lambda: a.status()["busy"] == 1, what="the gated task to run")
    # due well after b joins (a loaded machine may take seconds to form the mesh): due
    # ones would be shed to b, and their copies with them
    later = submit_and_exit([a], [("tasks_app.add", [i, 1], {"countdown": 10.0}) for i in range(5)])
    wait_until(lambda: a.status()["held"] == 6, what="a to hold six tasks")
    b = start_node(name="b", concurrency=1, peers=a.endpoint)
    form_mesh(a, b)
    wait_until(lambda: b.status()["copies_kept"] == 6, what="b to keep a copy of each of a's tasks")
    a.send_signal(signal.SIGKILL)
    a.wait(30)
    gate.touch()
    reader = make_client(b)
    assert results(reader, later) == [i + 1 for i in range(5)]
    assert results(reader, running) == ["opened"]


def test_a_node_killed_right_after_tasks_were_shed_to_it_loses_none(
        start_node: NodeFactory, make_client: Any) -> None:
    # The new user's report: two nodes, the submitter gone, the node that just took
    # shed tasks killed with -9 and never restarted. Its backup for those tasks is the
    # node that shed them (the only other one): it must have kept their copies, and
    # run them. (Before: 1 or 2 of 8 stayed UNKNOWN on the survivor.)
    # The test profile sees the kill in about a second (the lan profile: ~3 s), and the
    # tasks last 1 s: the survivor runs most of the ten one after the other (concurrency
    # 1); the receiver cannot have finished what it took when it is killed (four
    # children, the kill follows its log line at once: a second wave still runs).
    # All ten go to a while it is alone (a submitter that knows b places some there
    # itself; with work on both, each may see the other with room at once: a crossing,
    # refused, and nothing is shed at all: ci at stop 29), then b joins, idle, and a
    # sheds to it.
    a = start_node(name="a", concurrency=1, profile="test")
    ids = submit_and_exit([a], [("tasks_app.sleep", [1.0], {})] * 10)
    b = start_node(name="b", concurrency=4, peers=a.endpoint, profile="test")
    form_mesh(a, b)
    shed = re.compile(r"handed (\d+) task\(s\) to (a|b) ")
    first: list[tuple[NodeProc, str]] = []

    def a_shed() -> bool:
        for node in (a, b):
            m = shed.search(node.stderr())
            if m:
                first.append((node, m.group(2)))
                return True
        return False
    wait_until(a_shed, what="a node to shed tasks to the other")
    giver, to = first[0]
    receiver = a if to == "a" else b
    receiver.proc.kill()                 # -9 at once, never restarted
    receiver.proc.wait(10)
    reader = make_client(giver)          # a process that submitted nothing
    assert results(reader, ids) == [1.0] * 10
    assert giver.status()["taken_over"] >= 1
