"""Chaos: nodes killed with SIGKILL (and restarted) under load, with real processes.

a. three nodes, a stream of thousands of short tasks, one node killed a tenth of the
   way in (the client fails its tasks over to the others);
b. one node killed with a queue behind gated children, restarted on its data dir;
c. a node killed with a queue, its tasks failed over, then restarted on its data dir:
   both copies run, and both results reach the client.

What must hold whatever is killed: every task gets a result, the right one, and each
result is delivered once (a second result for a task, from a resend or a journal
replay, is dropped by the client and counted in ``client.duplicates``). Tasks may run
more than once (at least once, not exactly once): the test task appends a line per run
to a file (appends under 4 KiB with O_APPEND are atomic), so runs are counted, and a
task may run again only where the mesh had a reason to (the killed node held it).

Each test prints one line (``pytest -s``; ``sent`` counts the append_line tasks, not
the gates; ``duplicate_results_dropped`` is ``client.duplicates``, gates included;
``late_results_dropped`` is ``client.foreign``: results from a node the client had
failed the task over from, which no longer speaks for it)::

    [chaos <name>] sent=... received=... duplicates_executed=... duplicate_results_dropped=...
    late_results_dropped=... failovers=... resent=... lost=...

The default versions are short; ``-m slow`` runs the big one (MESH_CHAOS_TASKS tasks,
default 20000).
"""
from __future__ import annotations

import collections
import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import ClientHandle, NodeFactory, NodeProc, wait_until

from mesh.node.sqlite_journal import FILENAME
from mesh.result import AsyncResult
from mesh.wire.protocol import ControlReply, Result

SHORT_TASKS = 2000
SLOW_TASKS = int(os.environ.get("MESH_CHAOS_TASKS", "20000"))
RATE = 400.0           # tasks due per second in variant a (the nodes manage several times that)


# ---- helpers ----------------------------------------------------------------------------

def journal_open_ids(data_dir: Path) -> set[str]:
    """Ids of the tasks a (dead) node's journal holds unfinished: what it runs again
    when it restarts. Read-only, while the node is down."""
    from mesh.node.sqlite_journal import SqliteJournal as Journal
    journal = Journal(str(data_dir))          # the node is down: its lock is free
    try:
        return {row.task_id for row in journal.unfinished()}
    finally:
        journal.close()


def journal_ids(data_dir: Path) -> set[str]:
    """Ids of every task a (dead) node's journal holds, finished or not: the tasks it
    held, and could have run or copied to its backup. Read-only, while it is down."""
    uri = f"file:{data_dir / FILENAME}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        return {row[0] for row in db.execute("SELECT task_id FROM tasks")}


def members(node: NodeProc) -> dict[str, str]:
    """node id -> state, as ``node`` sees the mesh."""
    reply = node.request("members")
    assert isinstance(reply, ControlReply) and reply.ok, reply
    return {m["node"]: m["state"] for m in reply.payload}


def mesh_formed(nodes: list[NodeProc]) -> Callable[[], bool]:
    everyone = {n.name: "alive" for n in nodes}
    return lambda: all(members(n) == everyone for n in nodes)


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> bool:
    """Like wait_until, but says whether it happened instead of failing (the report is
    printed before the asserts, so a failed run still shows its figures)."""
    try:
        wait_until(predicate, timeout=timeout, interval=interval)
        return True
    except AssertionError:
        return False


class Tracker:
    """Submits ``append_line`` tasks from one client and watches what it delivers.

    A waiter on each task's slot counts completions (``Slot.complete`` calls waiters
    once, for the first result; a duplicate must not call them again), and the first
    Result object delivered is kept, to check that no later result replaced it."""

    def __init__(self, client: ClientHandle, out: Path):
        self.client = client
        self.out = out
        self.results: list[tuple[AsyncResult, str]] = []    # (result, the line it must return)
        self.by_id: dict[str, AsyncResult] = {}
        self.delivered: collections.Counter[str] = collections.Counter()
        self.first: dict[str, Result | None] = {}
        self.others: set[str] = set()      # watched tasks that are not append_line (gates)
        self.count = 0                     # append_line tasks with a result
        self._lock = threading.Lock()
        # every resend the client makes (failover, release, reconnect): endpoint -> ids.
        # A peer that still believes a killed node alive may shed tasks to it, and the
        # client sends them into the dead node's link; zmq keeps them queued there and
        # delivers them if the node comes back on its endpoint (see variant c).
        self.sent_to: collections.defaultdict[str, set[str]] = collections.defaultdict(set)
        mesh, send = self.mesh, self.mesh._send

        def spy(slot: Any, link: Any) -> None:
            self.sent_to[link.endpoint].add(slot.task_id)
            send(slot, link)
        mesh._send = spy

    @property
    def mesh(self) -> Any:
        return self.client.app.client

    def submit(self, line: str, eta: float | None = None) -> AsyncResult:
        r = self.client.tasks.append_line.apply_async((str(self.out), line), eta=eta)
        self._watch(r)
        self.results.append((r, line))
        self.by_id[r.id] = r
        return r

    def watch(self, r: AsyncResult) -> None:
        """Count the deliveries of a task submitted some other way (a gate)."""
        self.others.add(r.id)
        self._watch(r)

    def _watch(self, r: AsyncResult) -> None:
        slot = r._slot            # the client's record of the task (tests may look inside)
        assert slot is not None

        def delivered() -> None:
            with self._lock:
                self.delivered[r.id] += 1
                self.first.setdefault(r.id, slot.msg)
                if self.delivered[r.id] == 1 and r.id not in self.others:
                    self.count += 1
        if not slot.add_waiter(delivered):      # already complete
            delivered()

    def received(self) -> int:
        """append_line tasks with a result (gates not counted)."""
        return self.count

    def outstanding(self) -> list[AsyncResult]:
        return [r for r, _ in self.results if r._slot is not None and r._slot.msg is None]

    def on_node(self, endpoint: str) -> set[str]:
        """Ids of tasks without a result that the client last sent to ``endpoint``."""
        return {r.id for r in self.outstanding() if r._slot is not None and r._slot.node == endpoint}

    def runs(self) -> collections.Counter[str]:
        """line -> how many times a task wrote it."""
        text = self.out.read_text() if self.out.exists() else ""
        return collections.Counter(text.splitlines())

    def report(self, name: str, sent: int) -> dict[str, int]:
        runs = self.runs()
        figures = {
            "sent": sent,
            "received": self.received(),
            "duplicates_executed": sum(n - 1 for n in runs.values() if n > 1),
            "duplicate_results_dropped": self.mesh.duplicates,
            "late_results_dropped": self.mesh.foreign,
            "failovers": self.mesh.failovers,
            "resent": self.mesh.resent,
            "lost": sent - self.received(),
        }
        print(f"\n[chaos {name}] " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
        return figures

    def check_delivered_once(self, expected: dict[str, Any]) -> None:
        """Every task: one delivery, get() returns the expected value, and the Result the
        slot holds is still the first one delivered (a duplicate replaced nothing)."""
        twice = {tid: n for tid, n in self.delivered.items() if n != 1}
        assert not twice, f"results delivered more than once: {dict(list(twice.items())[:10])}"
        missing = set(expected) - set(self.delivered)
        assert not missing, f"{len(missing)} task(s) without a result, e.g. {sorted(missing)[:5]}"
        wrong = {}
        for tid, want in expected.items():
            r = self.by_id[tid]
            got = r.get(timeout=5)
            if got != want:
                wrong[tid] = (got, want)
            assert r._slot is not None and r._slot.msg is self.first[tid], \
                f"the result of {tid} changed after it was delivered"
        assert not wrong, f"{len(wrong)} wrong result(s), e.g. {list(wrong.items())[:5]}"

    def check_runs(self, may_run_twice: set[str]) -> collections.Counter[str]:
        """Every task ran at least once; only tasks in ``may_run_twice`` (ids) ran more
        than once, and none more than twice; no line the test did not ask for."""
        runs = self.runs()
        lines = {line: r.id for r, line in self.results}
        unknown = set(runs) - set(lines)
        assert not unknown, f"lines nobody asked for: {sorted(unknown)[:5]}"
        never = [line for line in lines if runs[line] == 0]
        assert not never, f"{len(never)} task(s) never ran, e.g. {never[:5]}"
        again = {line: n for line, n in runs.items() if n > 1}
        unexpected = {line: n for line, n in again.items() if lines[line] not in may_run_twice}
        assert not unexpected, (f"{len(unexpected)} task(s) ran again though the killed node never "
                                f"held them: {dict(list(unexpected.items())[:10])}")
        assert all(n <= 2 for n in runs.values()), \
            f"tasks ran more than twice: {[(k, n) for k, n in runs.items() if n > 2][:10]}"
        return runs

    def wait_idle(self, nodes: list[NodeProc], timeout: float = 30.0) -> None:
        """Until the nodes hold nothing (every result they will produce is sent), so that
        late duplicates have had their chance to arrive before the checks."""
        wait_until(lambda: all(n.status()["held"] == 0 for n in nodes), timeout=timeout,
                   what="the nodes to hold no task", interval=0.05)


# ---- a: kill -9 one of three nodes under a stream of tasks ----------------------------

def _views_agree_for(tracker: Tracker, nodes: list[NodeProc], hold: float) -> Callable[[], bool]:
    """A predicate: for ``hold`` s, each node's count of queued tasks has equalled the
    number of tracked tasks (not the watched gates) the client last sent to it and has
    no result for."""
    since: list[float | None] = [None]

    def agree() -> bool:
        now = time.monotonic()
        for n in nodes:
            st = n.status()
            if st["queued"] != len(tracker.on_node(n.endpoint)):
                since[0] = None
                return False
        if since[0] is None:
            since[0] = now
        return now - since[0] >= hold
    return agree


def _kill_one_of_three(start_node: NodeFactory, make_client: Callable[..., ClientHandle],
                       tmp_path: Path, n: int, name: str, result_timeout: float) -> None:
    """The nodes here run a few thousand short tasks a second, so a burst of 2000 is over
    in half a second, quicker than a loaded test process reacts. The stream is paced by
    the clock instead: task i is due at start + i / RATE (an eta), so that the tasks run
    over a few seconds whatever the machine's speed, while the client submits them all
    from a thread as fast as it can. Until due they wait on the nodes (accepted,
    journalled, acknowledged), so the node killed holds many, some running and most
    waiting; the ones it held go to the others with the same eta."""
    a = start_node(concurrency=2)
    b = start_node(concurrency=2, peers=a.endpoint)
    c = start_node(concurrency=2, peers=b.endpoint)          # chained: a <- b <- c
    nodes = [a, b, c]
    wait_until(mesh_formed(nodes), timeout=20, what="a mesh of three", interval=0.1)
    client = make_client(a, b, c)
    tracker = Tracker(client, tmp_path / "runs")
    start = time.time() + 0.5

    done_submitting, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            for i in range(n):
                if stop.is_set():
                    break
                tracker.submit(f"t{i}", eta=start + i / RATE)
        except BaseException as e:  # noqa: BLE001  (reported by the test thread)
            errors.append(e)
        finally:
            done_submitting.set()
    # only this thread appends to the tracker's lists; the test thread reads them as they
    # grow (the kill may come while tasks are still being submitted)
    thread = threading.Thread(target=submitter, name="chaos-submitter", daemon=True)
    thread.start()
    try:
        _kill_and_check(nodes, tracker, n, name, result_timeout, done_submitting, errors,
                        kill_due=start + max(50, n // 10) / RATE)
    finally:       # a failed test must not leave it submitting while the client closes
        stop.set()
        thread.join(30)


def _kill_and_check(nodes: list[NodeProc], tracker: Tracker, n: int, name: str,
                    result_timeout: float, done_submitting: threading.Event,
                    errors: list[BaseException], kill_due: float = 0.0) -> None:
    kill_at = max(50, n // 10)
    # sleep until the kill_at-th task is due rather than poll from its start: on a loaded
    # machine the polls (each reads the runs file) competed with the submitter thread
    # for the GIL and saw the count only when 1,604 of 2,000 had run
    time.sleep(max(0.0, kill_due - time.time()))

    def ran() -> int:
        k = len(tracker.runs())
        return k if k >= kill_at else 0
    ran_at_kill = wait_until(ran, timeout=result_timeout, interval=0.01, what=f"{kill_at} tasks to run")
    held = {nd.endpoint: len(tracker.on_node(nd.endpoint)) for nd in nodes}
    victim = max(nodes, key=lambda nd: held[nd.endpoint])
    tracker.sent_to.clear()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    received_at_kill = tracker.received()
    on_victim = tracker.on_node(victim.endpoint)     # it can run nothing more from here on
    survivors = [nd for nd in nodes if nd is not victim]
    assert ran_at_kill < n * 0.6, f"the kill came too late to matter ({ran_at_kill} of {n} ran)"

    assert done_submitting.wait(result_timeout), "the submitter did not finish"
    assert not errors, errors
    complete = poll(lambda: tracker.received() == n, timeout=result_timeout)
    if complete:
        tracker.wait_idle(survivors)
    figures = tracker.report(name, n)
    print(f"[chaos {name}] killed {victim.name} when {ran_at_kill} tasks had run and the client had "
          f"{received_at_kill} results, {len(on_victim)} of them on it; results by node: "
          f"{dict(collections.Counter(r.node for r, _ in tracker.results))}")
    assert figures["lost"] == 0, (
        f"{figures['lost']} task(s) got no result within {result_timeout} s, e.g. "
        f"{[(r.id, r._slot.node if r._slot else None, r.state) for r in tracker.outstanding()[:5]]}")
    tracker.check_delivered_once({r.id: line for r, line in tracker.results})
    # a task runs twice only if the killed node held it: the client had it there, or
    # sent it there after the kill, or a survivor handed it there as the kill came (the
    # victim journalled it, and ran it or copied it to its backup, but its answer was
    # lost: the sender gave the handoff up and ran it too, at least once, as
    # docs/handoff.md says; the victim's journal names those)
    tracker.check_runs(may_run_twice=on_victim | tracker.sent_to[victim.endpoint]
                       | journal_ids(victim.data_dir))
    assert tracker.mesh.failovers >= 1, "the client never failed the dead node's tasks over"
    # a task runs again only when the client sent it again
    assert figures["duplicates_executed"] <= tracker.mesh.failovers + tracker.mesh.resent
    # with no restart, a second result needs a second run
    assert figures["duplicate_results_dropped"] <= figures["duplicates_executed"] + tracker.mesh.resent


def test_kill_9_one_of_three_nodes_under_a_stream_of_tasks(
        start_node: NodeFactory, make_client: Callable[..., ClientHandle], tmp_path: Path) -> None:
    _kill_one_of_three(start_node, make_client, tmp_path, SHORT_TASKS, "kill-1-of-3", 60.0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_one_of_three_nodes_under_a_big_stream_of_tasks(
        start_node: NodeFactory, make_client: Callable[..., ClientHandle], tmp_path: Path) -> None:
    _kill_one_of_three(start_node, make_client, tmp_path, SLOW_TASKS, f"kill-1-of-3-x{SLOW_TASKS}",
                       max(120.0, SLOW_TASKS / 20))


# ---- b: kill -9 a node with a queue, restart it on its data dir ------------------------

def test_kill_9_a_node_with_queued_work_and_restart_it(
        start_node: NodeFactory, make_client: Callable[..., ClientHandle], tmp_path: Path) -> None:
    """One node and no other: the client has nowhere to fail over to, so everything the
    node had accepted can only come back from its journal, and the client's resend on
    reconnect (same ids) must be recognised as tasks the node already holds. So each
    queued task must run exactly once; a second node would let the client run them
    elsewhere too (that is variant c)."""
    node = start_node(concurrency=2)
    client = make_client(node)
    tracker = Tracker(client, tmp_path / "runs")
    gate = tmp_path / "gate"
    gates = [client.tasks.wait_for_file.delay(str(gate)) for _ in range(2)]
    for g in gates:
        tracker.watch(g)
    wait_until(lambda: node.status()["busy"] == 2, what="both children to wait at the gate")
    m = 300
    for i in range(m):
        tracker.submit(f"q{i}")
    wait_until(lambda: node.status()["queued"] == m, what=f"{m} tasks to queue behind the gate")

    node.send_signal(signal.SIGKILL)
    node.wait(10)
    assert tracker.runs() == {}, "a queued task ran before the gate opened"
    node = start_node.restart(node)
    assert f"recovered {m + 2} unfinished task(s)" in node.stderr()
    # the client saw the link come back and sent its tasks again (same ids); the gate is
    # still shut, so they are all still held there and must only be acknowledged
    wait_until(lambda: tracker.mesh.resent >= m + 2, what="the client to resend on reconnect")
    gate.touch()

    complete = poll(lambda: tracker.received() == m and all(tracker.delivered[g.id] for g in gates),
                    timeout=60)
    if complete:
        tracker.wait_idle([node])
    figures = tracker.report("kill-restart-queued", m)
    assert figures["lost"] == 0
    expected: dict[str, Any] = {r.id: line for r, line in tracker.results}
    tracker.by_id.update({g.id: g for g in gates})
    expected.update({g.id: "opened" for g in gates})
    tracker.check_delivered_once(expected)
    runs = tracker.check_runs(may_run_twice=set())
    assert sorted(runs) == sorted(f"q{i}" for i in range(m)) and set(runs.values()) == {1}
    assert {r.node for r, _ in tracker.results} == {node.name}
    # the only way to a second result here is a resend answered from the journal
    assert figures["duplicate_results_dropped"] == node.status()["answered_from_journal"]
    assert tracker.mesh.failovers == 0


# ---- c: restarted quickly, after the client failed its tasks over ---------------------

def test_kill_9_restart_after_failover_runs_nothing_b_holds_twice(
        start_node: NodeFactory, make_client: Callable[..., ClientHandle], tmp_path: Path) -> None:
    """Node a is killed holding queued work; the client fails it over to b; a comes back
    on its data dir with those tasks in its journal, asks b first (mesh/node/reclaim.py)
    and runs none of them: b holds them. (Until the reclaim, a ran them all again and
    the client dropped the second results as duplicates.) Only what the client sent
    into a's link while a was dead may run twice."""
    b = start_node(concurrency=2)
    a = start_node(concurrency=2, peers=b.endpoint)    # restarted, it rejoins through b
    wait_until(mesh_formed([a, b]), timeout=20, what="a mesh of two", interval=0.1)
    client = make_client(a, b)
    tracker = Tracker(client, tmp_path / "runs")
    gate = tmp_path / "gate"
    gates = [client.tasks.wait_for_file.delay(str(gate)) for _ in range(4)]
    for g in gates:
        tracker.watch(g)
    wait_until(lambda: a.status()["busy"] == 2 and b.status()["busy"] == 2,
               what="both children of both nodes to wait at the gate")
    m = 200
    for i in range(m):
        tracker.submit(f"q{i}")
    wait_until(lambda: a.status()["queued"] + b.status()["queued"] == m and a.status()["queued"] > 0,
               what=f"{m} tasks to queue on the two nodes")
    # a node may shed a few tasks to its peer on a load it gossiped a moment ago (before
    # its children were busy); the owner learns it by a MOVED a moment later. Kill a
    # only once the client's view of where each task is has matched both nodes' counts
    # for a while (fresh loads show no room: no shedding after that), so that a's
    # journal holds only what the client knows is on a (CI: 4 tasks b had just shed
    # to a were in a's journal while the client still had them on b)
    wait_until(_views_agree_for(tracker, [a, b], 0.5), timeout=30, interval=0.05,
               what="the client's view of where the tasks are to match the nodes'")

    tracker.sent_to.clear()
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    in_journal = journal_open_ids(a.data_dir)      # what a will run again once restarted
    gates_on_a = {g.id for g in gates} & in_journal
    on_a = tracker.on_node(a.endpoint)
    assert gates_on_a and in_journal - gates_on_a, in_journal
    # every task a had journalled, the client knows is on a (a sheds only what it forgot)
    assert in_journal - gates_on_a <= on_a, sorted(in_journal - gates_on_a - on_a)[:5]
    wait_until(lambda: tracker.mesh.failovers > 0, timeout=30,
               what="the client to fail a's tasks over to b", interval=0.05)
    assert not tracker.on_node(a.endpoint)           # all of them at once
    link = tracker.mesh.links[a.endpoint]
    reconnects = link.reconnects
    a = start_node.restart(a)
    assert f"recovered {len(in_journal)} unfinished task(s)" in a.stderr()
    # results a sends before the client is connected again would be dropped by its ROUTER:
    # open the gate once the client is back on a, so that both copies are seen
    wait_until(lambda: link.reconnects > reconnects, what="the client to reconnect to a")
    gate.touch()

    complete = poll(lambda: tracker.received() == m and all(tracker.delivered[g.id] for g in gates),
                    timeout=60)
    # (a decides about what it recovered once b has answered, a few seconds at most)
    wait_until(lambda: a.status()["reclaim_waiting"] == 0, what="a to have asked b")
    if complete:
        tracker.wait_idle([a, b])
    figures = tracker.report("kill-failover-restart", m)
    sent_to_dead_a = tracker.sent_to[a.endpoint] - in_journal
    print(f"[chaos kill-failover-restart] a's journal held {len(in_journal) - len(gates_on_a)} queued + "
          f"{len(gates_on_a)} gated task(s) when it was killed; {len(sent_to_dead_a)} more were "
          "sent to it after it died")
    assert figures["lost"] == 0
    expected: dict[str, Any] = {r.id: line for r, line in tracker.results}
    tracker.by_id.update({g.id: g for g in gates})
    expected.update({g.id: "opened" for g in gates})
    tracker.check_delivered_once(expected)
    # a ran none of what its journal held (b held it all when a asked), only, maybe,
    # what the client sent into its link while it was dead (a peer may shed to a node
    # it does not suspect yet): zmq keeps those queued and delivers them on reconnect
    st = a.status()
    assert st["reclaim_run_here"] == 0, st
    # (b may shed some of them back to a, restarted with room, before a asks: a holds
    # those as handed, not settled by the answers; seen once under load, 4 of 98)
    assert st["reclaim_held_elsewhere"] + st["reclaim_finished_elsewhere"] \
        + st["reclaim_handed_here"] == len(in_journal), st
    tracker.check_runs(may_run_twice=sent_to_dead_a)
    assert figures["failovers"] >= len(in_journal)
    dropped = figures["duplicate_results_dropped"] + figures["late_results_dropped"]
    assert dropped <= tracker.mesh.failovers + tracker.mesh.resent
    assert figures["duplicates_executed"] <= tracker.mesh.failovers
