"""Purge (Celery's ``celery purge`` / ``app.control.purge()``) on real nodes: every
queued task that has not started is revoked, in memory and on disk, by queue; its
owner's wait ends in TaskRevokedError, its backup's copy goes (a node that dies after
a purge does not run them elsewhere); running and scheduled tasks stay."""
from __future__ import annotations

import re
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import MESHCTL, frames_until, run_program, wait_until

from mesh import Mesh, states
from mesh.cli.common import EXIT_FAILURE, EXIT_OK
from mesh.exceptions import TaskRevokedError
from mesh.wire import codec
from mesh.wire.protocol import Control, ControlReply, Result, Submit, decode, encode

RESULT_TIMEOUT = 60.0


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _gated(node: Any, t: Any, tmp_path: Path) -> tuple[Any, Path, Path]:
    """The node's one child held by a task waiting for the gate file: what is sent
    next queues."""
    gate, out = tmp_path / "gate", tmp_path / "runs"
    running = t.wait_for_file.delay(str(gate))
    wait_until(lambda: node.status()["busy"] == 1, what="the gated task to start")
    return running, gate, out


def _revoked(r: Any) -> bool:
    with pytest.raises(TaskRevokedError, match="purged"):
        r.get(timeout=RESULT_TIMEOUT)
    return r.state == states.REVOKED


def test_meshctl_purge_revokes_queued_tasks_and_leaves_running_and_scheduled_ones(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    t = make_client(node).tasks
    running, gate, out = _gated(node, t, tmp_path)
    queued = [t.append_line.delay(str(out), f"q{i}") for i in range(20)]
    later = t.append_line.apply_async((str(out), "later"), countdown=120)
    wait_until(lambda: node.status()["queued"] == 20 and node.status()["scheduled"] == 1,
               what="20 queued tasks and one scheduled")
    # without --force it asks; no answer (stdin closed) purges nothing
    asked = run_program(MESHCTL, "--peers", node.endpoint, "purge")
    assert asked.returncode != EXIT_OK and "Revoke every task waiting in every queue" in asked.stderr
    assert node.status()["queued"] == 20
    done = run_program(MESHCTL, "--peers", node.endpoint, "purge", "-f")
    assert done.returncode == EXIT_OK, done.stderr
    assert f"{node.name}: 20 task(s) purged" in done.stdout
    assert "20 task(s) purged on 1 node(s)" in done.stdout
    assert all(_revoked(r) for r in queued)
    st = node.status()
    assert st["queued"] == 0 and st["scheduled"] == 1 and st["busy"] == 1   # those stay
    gate.touch()
    assert running.get(timeout=RESULT_TIMEOUT) == "opened"       # running: not purged
    assert later.state == states.RECEIVED                        # scheduled: not purged
    later.revoke()
    assert _lines(out) == []                                     # no purged task ran
    assert "purge: 20 queued task(s) revoked" in node.stderr()


def test_purge_by_queue_through_app_control(start_node: Any, make_client: Any,
                                            tmp_path: Path) -> None:
    node = start_node(concurrency=1, queues="celery,bulk")
    t = make_client(node).tasks
    running, gate, out = _gated(node, t, tmp_path)
    bulk = [t.append_line.apply_async((str(out), f"b{i}"), queue="bulk") for i in range(5)]
    plain = [t.append_line.delay(str(out), f"p{i}") for i in range(3)]
    wait_until(lambda: node.status()["queued"] == 8, what="8 queued tasks")
    control = Mesh("ctl", peers=[node.endpoint], mdns=False).control
    assert control.purge(queues=["bulk"]) == 5
    assert all(_revoked(r) for r in bulk)
    assert control.purge(exclude="celery") == 0                 # nothing else on bulk
    gate.touch()
    assert running.get(timeout=RESULT_TIMEOUT) == "opened"
    assert [r.get(timeout=RESULT_TIMEOUT) for r in plain] == ["p0", "p1", "p2"]
    assert sorted(_lines(out)) == ["p0", "p1", "p2"]
    # a bad argument is a clear error, and a bad flag too
    bad = run_program(MESHCTL, "--peers", node.endpoint, "purge", "-f", "-Q", ",")
    assert bad.returncode != EXIT_OK and "give one or more queue names" in bad.stderr


def test_purged_tasks_waiting_on_disk_are_revoked_too(start_node: Any, make_client: Any,
                                                      tmp_path: Path) -> None:
    node = start_node(concurrency=1, queue_memory=10)
    t = make_client(node).tasks
    running, gate, out = _gated(node, t, tmp_path)
    queued = [t.append_line.delay(str(out), f"q{i}") for i in range(60)]
    wait_until(lambda: node.status()["queued"] == 60 and node.status()["queued_on_disk"] > 0,
               what="60 tasks queued, some on disk")     # ("queued" counts those on disk)
    answers = Mesh("ctl", peers=[node.endpoint], mdns=False).control.ask("purge")
    a = answers[node.name]
    assert a["on_disk"] > 0 and a["purged"] + a["on_disk"] == 60, a
    assert all(_revoked(r) for r in queued)
    wait_until(lambda: node.status()["queued_on_disk"] == 0 and node.status()["queued"] == 0,
               what="the disk part purged")
    gate.touch()
    assert running.get(timeout=RESULT_TIMEOUT) == "opened"
    assert t.append_line.delay(str(out), "after").get(timeout=RESULT_TIMEOUT) == "after"
    assert _lines(out) == ["after"]
    assert f"purge: {a['on_disk']} task(s) waiting on disk revoked" in node.stderr()


def test_a_purged_task_does_not_run_on_the_backup_when_its_holder_dies(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    a = start_node(concurrency=1)
    b = start_node(concurrency=1, peers=a.endpoint)
    c = make_client(a, b)
    gate, out = tmp_path / "gate", tmp_path / "runs"
    blockers = [c.tasks.wait_for_file.delay(str(gate)) for _ in range(2)]
    wait_until(lambda: a.status()["busy"] == 1 and b.status()["busy"] == 1, what="both nodes busy")
    queued = [c.tasks.append_line.delay(str(out), f"q{i}") for i in range(10)]
    # (a node may shed a few to the other on a load gossiped before its child was busy:
    # a task in a handoff in flight is in neither queue and escapes a purge, as
    # documented; wait until the counts have held still with no handoff in flight.
    # Under load the purge counted 8 of 10 here.)
    since: list[float] = []

    def settled() -> bool:
        sa, sb = a.status(), b.status()
        ok = (sa["queued"] + sb["queued"] == 10 and sa["copies_kept"] + sb["copies_kept"] == 12
              and sa["handoffs_in_flight"] == 0 and sb["handoffs_in_flight"] == 0)
        if not ok:
            since.clear()
            return False
        since.append(time.monotonic())
        return since[-1] - since[0] >= 1.0
    wait_until(settled, what="10 queued tasks, each node keeping copies of the other's, "
               "no handoff in flight for 1 s")
    a_ids = {t["id"] for t in c.app.control.inspect().active()[a.name]}
    assert c.app.control.purge() == 10
    assert all(_revoked(r) for r in queued)
    wait_until(lambda: a.status()["copies_kept"] == 1 and b.status()["copies_kept"] == 1,
               what="each node to keep only the copy of the other's gated task")
    a.send_signal(signal.SIGKILL)       # b would run the copies of a's queued tasks
    a.wait(10)
    wait_until(lambda: re.search(rf"node {a.name} is dead: running \d+ of", b.stderr()), 30,
               "b to take over a's tasks")
    m = re.search(rf"node {a.name} is dead: running (\d+) of", b.stderr())
    assert m is not None and int(m.group(1)) <= 1     # a's gated task at most (acks_late)
    gate.touch()
    on_b = [r for r in blockers if r.id not in a_ids]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in on_b] == ["opened"]
    wait_until(lambda: b.status()["held"] == 0, what="b to have run all it took over")
    assert _lines(out) == []                                    # none of the purged ran


def test_purge_with_no_node_answering_is_an_error(tmp_path: Path) -> None:
    # A port bound here and never listened on: a connection to it is refused, and no
    # other process can listen on it while the test runs. (It used port 9, assumed
    # closed: once something listened there.)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        peer = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
        out = run_program(MESHCTL, "--peers", peer, "--timeout", "0.5", "purge", "-f")
    assert out.returncode == EXIT_FAILURE, out
    assert f"{peer}: ERROR no answer" in out.stdout, out


def _submit(tid: str, out: Path, line: str) -> bytes:
    return encode(Submit(tid, "tasks_app.append_line", codec.dump_call((str(out), line), {})))


def _results(got: list[Any], tid: str) -> list[str]:
    return [f.state for f in got if isinstance(f, Result) and f.task_id == tid]


@pytest.mark.parametrize("queue_memory", [0, 10], ids=["in-memory", "going-to-disk"])
def test_a_task_submitted_with_the_purge_in_one_pass_is_purged_once_and_never_runs(
        start_node: Any, make_client: Any, raw_dealer: Any, tmp_path: Path,
        queue_memory: int) -> None:
    """SUBMIT then CONTROL purge in one ZeroMQ message: the node takes both in one loop
    pass, the task accepted but not yet in the queue (``Ledger.pending``), or, while
    the backlog spills, in ``Spill.candidates`` on its way to disk. The purge must take
    it (its owner sent it before the purge), finish it once, and it must not run."""
    node = start_node(concurrency=1, **({"queue_memory": queue_memory} if queue_memory else {}))
    t = make_client(node).tasks
    running, gate, out = _gated(node, t, tmp_path)
    backlog = [t.append_line.delay(str(out), f"b{i}") for i in range(30)]
    wait_until(lambda: node.status()["queued"] == 30, what="30 queued tasks")
    if queue_memory:
        assert node.status()["queued_on_disk"] > 0
    sock = raw_dealer(node.endpoint)
    tid = f"purge-same-pass-{uuid.uuid4()}"
    sock.send_multipart([_submit(tid, out, "same-pass"), encode(Control("p-1", "purge", {}))])
    got = frames_until(sock, lambda fs: any(isinstance(f, ControlReply) for f in fs)
                       and _results(fs, tid))
    reply = next(f for f in got if isinstance(f, ControlReply))
    assert reply.ok, reply
    assert reply.payload["purged"] + reply.payload["on_disk"] == 31, reply.payload
    assert all(_revoked(r) for r in backlog)
    wait_until(lambda: node.status()["queued"] == 0, what="nothing queued")
    gate.touch()
    assert running.get(timeout=RESULT_TIMEOUT) == "opened"
    later = f"after-{uuid.uuid4()}"
    sock.send(_submit(later, out, "later"))
    got += frames_until(sock, lambda fs: bool(_results(fs, later)))
    while sock.poll(300):                      # whatever else came for it
        got += [decode(f) for f in sock.recv_multipart()]
    assert _results(got, tid) == [states.REVOKED]      # once, and never run
    assert _lines(out) == ["later"]


def test_a_node_stopped_while_it_purges_its_disk_does_not_run_those_tasks_after_a_restart(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """SIGTERM just after a purge's reply, while the tasks on disk are being walked:
    the walk must not simply stop there (the rest waited on disk and ran when the node
    started again, after its reply had counted them purged)."""
    node = start_node(concurrency=1, queue_memory=10)
    t = make_client(node).tasks
    running, gate, out = _gated(node, t, tmp_path)
    queued = [t.append_line.delay(str(out), f"q{i}") for i in range(10000)]
    wait_until(lambda: node.status()["queued"] == 10000, what="10000 tasks queued")
    a = Mesh("ctl", peers=[node.endpoint], mdns=False).control.ask("purge")[node.name]
    node.send_signal(signal.SIGTERM)
    gate.touch()
    assert a["on_disk"] > 9900, a
    node.wait(60)
    assert "purge: the node is stopping" in node.stderr()
    node = start_node.restart(node)
    wait_until(lambda: node.status()["queued"] == 0 and node.status()["held"] == 0,
               what="nothing left on the restarted node")
    assert running.get(timeout=RESULT_TIMEOUT) == "opened"
    assert all(_revoked_or_purged(r) for r in queued)
    assert t.append_line.delay(str(out), "after").get(timeout=RESULT_TIMEOUT) == "after"
    assert _lines(out) == ["after"]


def _revoked_or_purged(r: Any) -> bool:
    with pytest.raises(TaskRevokedError):
        r.get(timeout=RESULT_TIMEOUT)
    return r.state == states.REVOKED
