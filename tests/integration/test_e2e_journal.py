"""Nothing lost: the journal, restart recovery, results from any process, acks.

Real nodes on loopback; kill -9 is a real SIGKILL and a restart is a new process on
the same data dir.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import MESHCTL, MESHNODE, ROOT, clean_env, free_port, run_program, wait_until

from mesh import Mesh, states
from mesh.client.control import ControlClient
from mesh.exceptions import MeshError, WorkerLostError
from mesh.wire import codec
from mesh.wire.protocol import ControlReply, Result, Submit, decode, encode

RESULT_TIMEOUT = 60.0


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _reader(node: Any) -> Mesh:
    """Another client, which submitted nothing: it can only look results up."""
    return Mesh("mesh-it-reader", peers=[node.endpoint], mdns=False)


# ---- restart recovery -------------------------------------------------------------------

def test_a_node_killed_with_tasks_runs_them_after_a_restart(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    gate, out = tmp_path / "gate", tmp_path / "runs"
    running = t.wait_for_file.delay(str(gate))
    wait_until(lambda: node.status()["busy"] == 1, what="the gated task to start")
    queued = [t.append_line.delay(str(out), f"line-{i}") for i in range(20)]
    wait_until(lambda: node.status()["queued"] == 20, what="20 tasks to queue behind it")
    node.send_signal(signal.SIGKILL)
    node.wait(10)
    assert _lines(out) == []
    gate.touch()
    node = start_node.restart(node)
    assert running.get(timeout=RESULT_TIMEOUT) == "opened"     # acks_late: it runs again
    assert [r.get(timeout=RESULT_TIMEOUT) for r in queued] == [f"line-{i}" for i in range(20)]
    assert sorted(_lines(out)) == sorted(f"line-{i}" for i in range(20))   # each ran once
    assert ("recovered 21 unfinished task(s): 21 held until the mesh says which run here, "
            "0 group(s)" in node.stderr())


def test_a_client_killed_after_submitting_leaves_results_for_others(
        start_node: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=2)
    gate = tmp_path / "gate"
    ids = [f"orphan-{uuid.uuid4().hex[:8]}-{i}" for i in range(10)]
    script = textwrap.dedent(f"""
        import sys, time
        from mesh import Mesh
        import tasks_app
        app = Mesh("doomed", peers=[{node.endpoint!r}], mdns=False)
        add = app.task(name="tasks_app.add")(tasks_app.add.fun)
        gated = app.task(name="tasks_app.wait_for_file")(tasks_app.wait_for_file.fun)
        rs = [gated.apply_async(({str(gate)!r},), task_id={ids[0]!r})]
        rs += [add.apply_async((i, i), task_id=tid) for i, tid in enumerate({ids[1:]!r}, 1)]
        while any(r.state == "PENDING" for r in rs):
            time.sleep(0.01)
        print("acked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=clean_env(), cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "acked"
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    gate.touch()
    with _reader(node) as app:
        assert app.AsyncResult(ids[0]).get(timeout=RESULT_TIMEOUT) == "opened"
        assert [app.AsyncResult(tid).get(timeout=RESULT_TIMEOUT) for tid in ids[1:]] == \
            [2 * i for i in range(1, 10)]


# ---- results from anywhere ------------------------------------------------------------

def test_another_process_reads_a_result_and_an_unknown_id_is_unknown(
        start_node: Any, make_client: Any) -> None:
    node = start_node()
    t = make_client(node).tasks
    ok = t.add.delay(2, 3)
    bad = t.fail.delay("broken", 7)
    assert ok.get(timeout=RESULT_TIMEOUT) == 5
    with pytest.raises(Exception):
        bad.get(timeout=RESULT_TIMEOUT)
    with _reader(node) as app:
        r = app.AsyncResult(ok.id)
        assert r.state == states.SUCCESS
        assert r.get(timeout=5) == 5
        assert r.node == node.name
        f = app.AsyncResult(bad.id)
        assert f.state == states.FAILURE
        assert "broken" in str(f.result) and "CustomError" in (f.traceback or "")
        unknown = app.AsyncResult(uuid.uuid4().hex)
        assert unknown.state == states.UNKNOWN
        assert not unknown.ready()
    # a separate process, through the CLI
    done = run_program(MESHCTL, "--peers", node.endpoint, "--json", "result", ok.id)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": ok.id, "state": "SUCCESS", "result": 5}
    missing = run_program(MESHCTL, "--peers", node.endpoint, "result", "no-such-task")
    assert missing.returncode == 1 and missing.stdout.strip() == "UNKNOWN"


def test_a_reader_sees_a_running_task_and_gets_its_result_when_done(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    a, b = start_node(concurrency=1), start_node(concurrency=1)
    t = make_client(a, b).tasks
    gate = tmp_path / "gate"
    r = t.wait_for_file.delay(str(gate))
    wait_until(lambda: a.status()["busy"] + b.status()["busy"] == 1, what="the task to start")
    with Mesh("reader", peers=[a.endpoint, b.endpoint], mdns=False) as app:
        other = app.AsyncResult(r.id)
        wait_until(lambda: other.state == states.STARTED, what="the reader to see STARTED")
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(other.get(timeout=RESULT_TIMEOUT)))
        waiter.start()
        # the reader waits (a watcher: the node pushes the result) before the task ends
        wait_until(lambda: any(s.waiters for s in app.client._watched.get(r.id, [])),
                   what="the reader to wait for the result")
        gate.touch()
        waiter.join(RESULT_TIMEOUT)
        assert got == ["opened"]
    assert r.get(timeout=RESULT_TIMEOUT) == "opened"


def test_results_expire(start_node: Any, make_client: Any) -> None:
    node = start_node(result_expires=1)
    t = make_client(node).tasks
    r = t.add.delay(1, 1)
    assert r.get(timeout=RESULT_TIMEOUT) == 2
    with _reader(node) as app:
        assert app.AsyncResult(r.id).state == states.SUCCESS
        wait_until(lambda: app.AsyncResult(r.id).state == states.UNKNOWN, timeout=15,
                   what="the result to expire", interval=0.2)
    assert "expired" in node.stderr()


# ---- dedupe -------------------------------------------------------------------------

def test_a_resend_of_a_finished_task_is_answered_from_the_journal(
        start_node: Any, raw_dealer: Any, tmp_path: Path) -> None:
    node = start_node()
    out = tmp_path / "runs"
    sock = raw_dealer(node.endpoint)
    frame = encode(Submit(task_id="once-1", name="tasks_app.append_line",
                          payload=codec.dump_call((str(out), "ran"), None)))

    def result() -> Result:
        deadline = time.monotonic() + RESULT_TIMEOUT
        while time.monotonic() < deadline:
            if sock.poll(200):
                for f in sock.recv_multipart():
                    msg = decode(f)
                    if isinstance(msg, Result):
                        return msg
        raise AssertionError("no result")

    sock.send(frame)
    first = result()
    sock.send(frame)
    second = result()
    assert first == second and first.state == states.SUCCESS
    assert _lines(out) == ["ran"]
    assert node.status()["answered_from_journal"] == 1


def test_without_a_journal_results_live_in_memory_only(
        start_node: Any, make_client: Any) -> None:
    node = start_node(no_journal=True)
    t = make_client(node).tasks
    r = t.add.delay(20, 22)
    assert r.get(timeout=RESULT_TIMEOUT) == 42
    assert node.status()["journal"] is None
    assert not (node.data_dir / "journal.sqlite3").exists()
    with _reader(node) as app:       # the in-memory journal answers while the node runs
        assert app.AsyncResult(r.id).state == states.SUCCESS
        assert app.AsyncResult(r.id).get(timeout=RESULT_TIMEOUT) == 42
    assert node.stop() == 0
    node = start_node.restart(node)
    assert not (node.data_dir / "journal.sqlite3").exists()
    with _reader(node) as app:       # and nothing survives the node
        assert app.AsyncResult(r.id).state == states.UNKNOWN


def test_a_second_node_on_the_same_data_dir_is_refused(start_node: Any) -> None:
    node = start_node()
    done = run_program(node.argv[0], *node.argv[1:node.argv.index("--bind")],
                       "--bind", f"tcp://127.0.0.1:{free_port()}", "--no-mdns", "--data-dir", str(node.data_dir))
    assert done.returncode == 3
    assert "in use by another node" in done.stderr


# ---- acks ---------------------------------------------------------------------------

def test_reject_on_worker_lost_runs_the_task_again(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    assert t.exit_child_once.delay(str(tmp_path / "marker")).get(timeout=RESULT_TIMEOUT) == 2
    with pytest.raises(WorkerLostError) as info:
        t.exit_child_always.delay().get(timeout=RESULT_TIMEOUT)
    assert "run 4 times" in str(info.value)
    assert t.add.delay(1, 2).get(timeout=RESULT_TIMEOUT) == 3     # the pool goes on


def test_without_reject_on_worker_lost_a_lost_child_fails_the_task(
        start_node: Any, make_client: Any) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    with pytest.raises(WorkerLostError):
        t.exit_child.delay(3).get(timeout=RESULT_TIMEOUT)


# ---- failover -----------------------------------------------------------------------

def test_tasks_on_a_node_killed_with_sigkill_run_on_another(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    a = start_node(concurrency=1)
    b = start_node(concurrency=1, peers=a.endpoint)
    c = make_client(a, b)
    t = c.tasks
    gate, out = tmp_path / "gate", tmp_path / "runs"
    rs = [t.wait_for_file.delay(str(gate)) for _ in range(2)]
    wait_until(lambda: a.status()["busy"] == 1 and b.status()["busy"] == 1,
               what="a long task to run on each node")
    more = [t.append_line.delay(str(out), f"l{i}") for i in range(10)]
    wait_until(lambda: a.status()["queued"] + b.status()["queued"] == 10, what="10 queued tasks")
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    gate.touch()
    assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == ["opened", "opened"]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in more] == [f"l{i}" for i in range(10)]
    assert {r.node for r in rs + more} == {b.name}
    assert sorted(_lines(out)) == sorted(f"l{i}" for i in range(10))
    assert c.app.client.failovers >= 1


def test_an_acks_early_task_on_a_dead_node_fails_instead_of_running_twice(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    a = start_node(concurrency=1)
    b = start_node(concurrency=1, peers=a.endpoint)
    c = make_client(a, b)
    gate = tmp_path / "gate"
    blocker = c.tasks.wait_for_file.delay(str(gate))        # keeps one node busy
    once = c.tasks.wait_for_file_once.delay(str(gate))
    wait_until(lambda: a.status()["busy"] == 1 and b.status()["busy"] == 1,
               what="both tasks to start")
    victim = a if _state_on(a, once.id) == states.STARTED else b
    assert _state_on(victim, once.id) == states.STARTED
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    with pytest.raises(WorkerLostError) as info:
        once.get(timeout=RESULT_TIMEOUT)
    assert "acks_late=False" in str(info.value)
    gate.touch()
    assert blocker.get(timeout=RESULT_TIMEOUT) == "opened"


def _state_on(node: Any, task_id: str) -> str:
    """What one node says of a task (the ``result`` control command)."""
    from mesh.client.control import ControlClient
    with ControlClient() as cc:
        reply = cc.broadcast([node.endpoint], "result", {"task_id": task_id}, timeout=5)
    payload = getattr(reply[node.endpoint], "payload", None)
    assert isinstance(payload, dict), reply
    return str(payload["state"])


# ---- a full disk --------------------------------------------------------------------

@pytest.fixture
def small_disk(start_node: Any, tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs for a node's data dir (root only); its nodes stop before it goes."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        for n in start_node.nodes:
            n.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> Path:
    """Fill the file system at ``mnt`` to its last block; the filler file."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_refuses_tasks_with_a_clear_error_and_loses_nothing(
        start_node: Any, make_client: Any, small_disk: Path) -> None:
    node = start_node(data_dir=str(small_disk / "node"))
    t = make_client(node).tasks
    assert t.add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2
    filler = _fill(small_disk)
    big = "x" * 300_000                    # needs new pages in the journal
    r = t.echo.delay(big)
    with pytest.raises(MeshError) as info:
        r.get(timeout=RESULT_TIMEOUT)
    assert "full" in str(info.value) and node.name in str(info.value)
    for i in range(20):                    # one failed commit each: the log says a few
        with pytest.raises(MeshError):
            t.echo.delay(big + str(i)).get(timeout=RESULT_TIMEOUT)
    assert 1 <= node.stderr().count("journal commit failed") <= 5, node.stderr()
    assert node.ping()                     # the node goes on
    shown = run_program(MESHCTL, "--peers", node.endpoint, "status")   # and says so
    assert f"WARNING: node {node.name}: its journal failed" in shown.stderr
    assert "is full" in shown.stderr, shown.stderr
    filler.unlink()
    assert t.echo.delay(big).get(timeout=RESULT_TIMEOUT) == big


def test_a_workflow_step_started_while_the_disk_is_full_still_runs(
        start_node: Any, make_client: Any, small_disk: Path, tmp_path: Path) -> None:
    # the step after an accepted one is started by the node (no client to resend it):
    # a journal commit that fails must not drop it, or the workflow never ends
    node = start_node(data_dir=str(small_disk / "node"))
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    size = 1_000_000          # the next step's frame: more than any commit so far
    r = (t.blob.si(size, str(gate)) | t.echo.s()).apply_async()
    wait_until(lambda: node.status()["busy"] == 1, what="the first step to start")
    _fill(small_disk)
    gate.touch()
    assert r.get(timeout=30) == "x" * size
    assert "journal commit failed" in node.stderr()


# ---- churn does not grow sockets ------------------------------------------------------

def test_sockets_to_departed_nodes_are_closed(
        start_node: Any, make_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import mesh.client.members
    monkeypatch.setattr(mesh.client.members, "LINK_GRACE", 0.5)
    # --dead-node-reclaim 1: a forgets b 1 s after it is dead (10 s on the test profile),
    # maybe before the client reads an answer that says b is dead (it then takes b as
    # dead when answers stop listing it and its own link to b is down)
    a = start_node(profile="test", dead_node_reclaim=1)
    b = start_node(profile="test", peers=a.endpoint)
    c = make_client(a)
    wait_until(lambda: len(c.app.client.links) == 2, what="the client to learn b")
    wait_until(lambda: a.status()["peer_sockets"] >= 1, what="a to talk to b")
    rs = [c.tasks.add.delay(i, 1) for i in range(20)]         # a copies its tasks to b
    assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == [i + 1 for i in range(20)]
    wait_until(lambda: a.status()["data_sockets"] >= 1, what="a to copy tasks to b")
    b.send_signal(signal.SIGKILL)
    b.wait(10)
    # the client drops its link once b is dead for LINK_GRACE; a drops its socket
    # once membership forgets b (--dead-node-reclaim)
    wait_until(lambda: b.endpoint not in c.app.client.links, timeout=30,
               what="the client to close its link to b")
    wait_until(lambda: a.status()["peer_sockets"] == 0, timeout=60, interval=0.5,
               what="a to close its socket to b")
    assert c.tasks.add.delay(1, 2).get(timeout=RESULT_TIMEOUT) == 3
    wait_until(lambda: a.status()["data_sockets"] == 0, timeout=30, interval=0.5,
               what="a to close its handoff/copy socket to b")


def test_a_node_forgotten_before_the_client_saw_it_dead_still_has_its_tasks_run(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    # --dead-node-reclaim 1: the mesh forgets b about as fast as the client refreshes
    # its members (1 s), so its answers may never say b is dead; they stop listing it.
    # The client, its own link to b down, takes b as dead and sends b's tasks on
    a = start_node(profile="test", dead_node_reclaim=1)
    b = start_node(profile="test", dead_node_reclaim=1, peers=a.endpoint)
    c = make_client(a, b)
    client = c.app.client
    wait_until(lambda: len(client._placeable) == 2, what="the client to use both nodes")
    gate = tmp_path / "gate"
    rs = [c.tasks.wait_for_file.delay(str(gate)) for _ in range(12)]
    wait_until(lambda: any(s.node == b.endpoint and s.state != "PENDING"
                           for s in list(client._slots.values())), what="b to hold some")
    b.send_signal(signal.SIGKILL)
    b.wait(10)

    def listed() -> set[str]:
        reply = a.request("members")
        assert isinstance(reply, ControlReply) and reply.ok, reply
        return {m["node"] for m in reply.payload}
    wait_until(lambda: b.name not in listed(), timeout=30, what="a to forget b")
    gate.touch()
    assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == ["opened"] * 12


def test_tasks_sent_to_a_node_that_just_died_do_not_run_there_when_it_returns(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    # frames queued for a dead node (sent before the client knew) are dropped at
    # failover: the node coming back must not run what already ran elsewhere
    a = start_node(concurrency=1)
    b = start_node(concurrency=1, peers=a.endpoint)
    c = make_client(a, b)
    client = c.app.client
    wait_until(lambda: len(client._placeable) == 2, what="the client to use both nodes")
    gate = tmp_path / "gate"
    gate.touch()                                  # open: these tasks finish at once
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    rs = [c.tasks.wait_for_file_once.delay(str(gate)) for _ in range(20)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == ["opened"] * 20
    assert client.failovers > 0, "no task went to the dead node: the test proved nothing"
    link = client.links[a.endpoint]
    before = link.reconnects
    a = start_node.restart(a)
    wait_until(lambda: link.reconnects > before, what="the client to reconnect to a")
    # a barrier instead of a wait: frames still queued in the client's socket for a would
    # reach a before any task sent on that link now, and a (one child, first in first
    # out) would run them first. Send tasks until some go to a; once they are done,
    # a has run nothing else.
    wait_until(lambda: any(n.endpoint == a.endpoint for n in client._placeable),
               what="the client to place on a again")
    on_a = 0
    while on_a == 0:
        probes = [c.tasks.add.delay(i, i) for i in range(8)]
        assert [p.get(timeout=RESULT_TIMEOUT) for p in probes] == [2 * i for i in range(8)]
        on_a += sum(1 for p in probes if p._slot is not None and p._slot.node == a.endpoint)
    assert a.status()["succeeded"] <= on_a, "a ran tasks that had already run on b"
    assert client.duplicates == 0


def test_a_fresh_reader_with_one_seed_finds_a_result_held_by_another_node(
        start_node: Any, make_client: Any) -> None:
    a = start_node()
    b = start_node(peers=a.endpoint)
    c = make_client(a, b)
    wait_until(lambda: len(c.app.client._placeable) == 2, what="the client to use both nodes")
    rs = [c.tasks.add.delay(i, 1) for i in range(6)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in rs] == [i + 1 for i in range(6)]
    for seed in (a, b):          # whichever node ran a task, asking either one finds it
        with Mesh("fresh-reader", peers=[seed.endpoint], mdns=False) as app:
            assert [app.AsyncResult(r.id).state for r in rs] == [states.SUCCESS] * 6


def test_two_lookups_of_one_task_both_get_its_result(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    r = t.wait_for_file.delay(str(gate))
    wait_until(lambda: node.status()["busy"] == 1, what="the task to start")
    with _reader(node) as app:
        first = app.AsyncResult(r.id)
        assert first.state == states.STARTED
        # nobody waits: the reader forgets its lookup (once a second)
        wait_until(lambda: r.id not in app.client._watched, what="the reader to forget the lookup")
        second = app.AsyncResult(r.id)
        assert second.state == states.STARTED
        got: list[Any] = []
        waiters = [threading.Thread(target=lambda x=x: got.append(x.get(timeout=RESULT_TIMEOUT)))
                   for x in (first, second)]
        for w in waiters:
            w.start()
        wait_until(lambda: sum(1 for s in app.client._watched.get(r.id, []) if s.waiters) == 2,
                   what="both lookups to wait for the result")
        gate.touch()
        for w in waiters:
            w.join(RESULT_TIMEOUT)
        assert got == ["opened", "opened"]


def test_a_task_revoked_before_it_was_sent_reads_as_revoked_elsewhere(
        start_node: Any, make_client: Any) -> None:
    node = start_node()
    c = make_client(node)
    tid = str(uuid.uuid4())
    c.app.control.revoke(tid)
    with pytest.raises(Exception):
        c.tasks.add.apply_async((1, 1), task_id=tid).get(timeout=RESULT_TIMEOUT)
    with _reader(node) as app:
        other = app.AsyncResult(tid)
        assert other.state == states.REVOKED
        with pytest.raises(Exception, match="revoked"):
            other.get(timeout=10)


def test_children_do_not_hold_the_journal_or_its_lock(start_node: Any) -> None:
    # a child outliving a killed node for a moment must not keep a restart out
    import psutil
    node = start_node(concurrency=2)
    data = os.path.realpath(node.data_dir) + os.sep
    children = wait_until(lambda: psutil.Process(node.pid).children(), what="the children")

    def held() -> dict[int, list[str]]:
        return {c.pid: paths for c in children
                if (paths := [f.path for f in c.open_files() if f.path.startswith(data)])}
    # a child closes what it inherited as it sets itself up (before it says it is ready),
    # a moment after the fork: wait for that, then none may hold a file of the data dir
    wait_until(lambda: not held(), what="the children to close the data dir's files")
    assert node.ping() and not held()
    assert any(f.path.startswith(data) for f in psutil.Process(node.pid).open_files())


def test_a_second_node_on_the_same_address_hears_why(tmp_path: Path) -> None:
    """Two nodes started on one address without --data-dir share the default data dir
    (named after host and port): the refusal says the address is likely taken."""
    env = clean_env(XDG_DATA_HOME=str(tmp_path))
    port = free_port()
    first = subprocess.Popen([MESHNODE, "--app", "tasks_app", "--bind", f"tcp://127.0.0.1:{port}",
                              "--no-mdns", "--concurrency", "1"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ControlClient() as cc:
            wait_until(lambda: isinstance(cc.broadcast([f"tcp://127.0.0.1:{port}"], "ping",
                                                       timeout=0.5)[f"tcp://127.0.0.1:{port}"],
                                          ControlReply), what="the first node")
        done = run_program(MESHNODE, "--app", "tasks_app", "--bind", f"tcp://127.0.0.1:{port}",
                           "--no-mdns", "--concurrency", "1", env=env)
        assert done.returncode == 3, done
        assert f"is another node already serving tcp://127.0.0.1:{port}?" in done.stderr, done
    finally:
        first.terminate()
        first.wait(30)
