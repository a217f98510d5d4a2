"""Promises made by docs/design.md and docs/protocol.md, each tested on the path the
product runs, with real nodes. Each test names the line it guards: a mutation
spot-check changed these lines and the tests before these did not notice.

* placement: a task submitted after a node died goes to a live node (the client's
  ``_update_placeable``, not ``placement.candidates``, which the client never calls);
* intake: a revoked id never runs, also on a ``--no-journal`` node (the intake, mesh/node/intake.py);
* retries: ``autoretry_for`` waits ``factor * 2**retries`` seconds (``_autoretry`` in mesh/trace.py);
* front door: a frame over 2 x max message size is never read (``zmq.MAXMSGSIZE``);
* journal: a task is acknowledged only once it is committed (``Ledger.flush``), and one
  a node cannot journal goes to another node (``Client._on_journal_error``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import tasks_app
import zmq
from harness import clean_env, frames_until, wait_until
from zmq.utils.monitor import parse_monitor_message

from mesh import states
from mesh.exceptions import TaskRevokedError
from mesh.wire import codec
from mesh.wire.protocol import Ack, Control, Error, Result, Submit, decode, encode

RESULT_TIMEOUT = 60.0


def members_of(node: Any) -> dict[str, str]:
    from mesh.client.control import ControlClient
    with ControlClient() as cc:
        reply = cc.broadcast([node.endpoint], "members", timeout=5)[node.endpoint]
    return {m["node"]: m["state"] for m in getattr(reply, "payload", None) or []}



# ---- (a) placement: nodes that are not alive take no new task -------------------------

def test_tasks_submitted_after_a_node_died_go_to_the_live_one(
        start_node: Any, make_client: Any) -> None:
    b = start_node(concurrency=2, profile="test")
    a = start_node(concurrency=2, profile="test", peers=b.endpoint)
    wait_until(lambda: members_of(b) == {a.name: "alive", b.name: "alive"}, what="a mesh of two")
    c = make_client(a, b)
    client = c.app.client
    wait_until(lambda: sorted(n["state"] for n in client.nodes()) == ["alive", "alive"]
               and len(client._placeable) == 2, what="the client to place on both nodes")
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    wait_until(lambda: {n["endpoint"]: n["state"] for n in client.nodes()}[a.endpoint] == "dead",
               what="the client to learn that a is dead")
    rs = [c.tasks.add.delay(i, 1) for i in range(30)]        # power of two choices: with a
    deadline = time.monotonic() + RESULT_TIMEOUT              # placeable, about half go there
    for i, r in enumerate(rs):
        assert r.get(timeout=max(1.0, deadline - time.monotonic())) == i + 1
    assert all(r._slot is not None and r._slot.node == b.endpoint for r in rs)


def test_a_script_that_sends_a_burst_and_exits_spreads_it_over_the_mesh(
        start_node: Any) -> None:
    # the first tasks of a new client wait (FIRST_PLACE_WAIT at most) for the first
    # members answer: sent at once, a burst all went to the one seed the script knew
    # (176 of 200 ran there, 24 shed to the other node)
    b = start_node(concurrency=1, profile="test")
    a = start_node(concurrency=1, profile="test", peers=b.endpoint)
    wait_until(lambda: members_of(a) == {a.name: "alive", b.name: "alive"}, what="a mesh of two")
    code = ("from tasks_app import sleep\n"
            "ids = [sleep.delay(0.02).id for _ in range(40)]\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=90, cwd=Path(tasks_app.__file__).parent, stdin=subprocess.DEVNULL,
                       env=clean_env(MESH_PEERS=a.endpoint))
    assert p.returncode == 0, p.stderr
    wait_until(lambda: a.status()["succeeded"] + b.status()["succeeded"] == 40,
               timeout=RESULT_TIMEOUT, what="the 40 tasks to run")
    ran = sorted([a.status()["succeeded"], b.status()["succeeded"]])
    assert ran[0] >= 12, f"ran {ran}: the burst stayed on the seed"


# ---- (c) intake: a revoked id does not run, journal or not ----------------------------

@pytest.mark.parametrize("journal", [False, True], ids=["no-journal", "journal"])
def test_a_task_revoked_before_it_arrives_never_runs(
        start_node: Any, make_client: Any, tmp_path: Path, journal: bool) -> None:
    node = start_node(concurrency=1, no_journal=not journal)
    c = make_client(node)
    out = tmp_path / "runs"
    tid = f"revoked-early-{uuid.uuid4()}"
    reply = c.app.control.revoke(tid)
    assert reply, "no node answered the revoke"
    r = c.tasks.append_line.apply_async((str(out), "revoked"), task_id=tid)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=RESULT_TIMEOUT)
    assert r.state == states.REVOKED
    # a later task on the same (only) child has run: the revoked one would have by now
    assert c.tasks.append_line.delay(str(out), "later").get(timeout=RESULT_TIMEOUT) == "later"
    assert out.read_text().splitlines() == ["later"]
    if journal:                 # refused at the door: the journal never held it (the check
        node.stop()             # after the journal, in Ledger.flush, would stop it too late)
        from mesh.node.sqlite_journal import SqliteJournal
        j = SqliteJournal(str(node.data_dir))
        try:
            assert j.get(tid) is None, j.get(tid)
        finally:
            j.close()


def test_a_task_revoked_in_the_same_message_as_its_submit_never_runs(
        start_node: Any, raw_dealer: Any, tmp_path: Path) -> None:
    """SUBMIT then CONTROL revoke in one ZeroMQ message: the node takes both in one loop
    pass, so the task is accepted (not yet revoked at intake) and revoked before it
    reaches the pool (the check in ``Ledger.flush``)."""
    node = start_node(concurrency=1, no_journal=True)
    sock = raw_dealer(node.endpoint)
    out = tmp_path / "runs"
    tid = f"revoked-same-pass-{uuid.uuid4()}"
    sock.send_multipart([
        encode(Submit(tid, "tasks_app.append_line", codec.dump_call((str(out), "revoked"), {}))),
        encode(Control("r-1", "revoke", {"task_ids": [tid]}))])
    got = frames_until(sock, lambda fs: any(isinstance(f, Result) and f.task_id == tid for f in fs))
    assert [f.state for f in got if isinstance(f, Result)] == [states.REVOKED]
    later = f"after-{uuid.uuid4()}"
    sock.send(encode(Submit(later, "tasks_app.append_line", codec.dump_call((str(out), "later"), {}))))
    frames_until(sock, lambda fs: any(isinstance(f, Result) and f.task_id == later for f in fs))
    assert out.read_text().splitlines() == ["later"]


# ---- (d) retries: the backoff the child computes reaches the node ---------------------

def test_autoretry_backoff_doubles_with_each_retry_up_to_its_cap(
        start_node: Any, raw_dealer: Any) -> None:
    node = start_node(concurrency=1)
    sock = raw_dealer(node.endpoint)
    for retries in (0, 3, 8, 9, 10, 13):
        tid = f"backoff-{retries}-{uuid.uuid4()}"
        sent = time.time()
        sock.send(encode(Submit(tid, "tasks_app.always_retry", codec.dump_call((), {}),
                                retries=retries)))
        got = frames_until(sock, lambda fs, tid=tid: any(
            isinstance(f, Result) and f.task_id == tid for f in fs))
        back = time.time()
        res = next(f for f in got if isinstance(f, Result) and f.task_id == tid)
        assert res.state == states.RETRY and res.retries == retries and res.eta is not None
        want = min(2.0 ** retries, tasks_app.BACKOFF_MAX)
        # the node sets eta = now + countdown between our send and our receive
        assert res.eta - back - 0.01 <= want <= res.eta - sent + 0.01, (retries, res.eta - sent)


# ---- (e) the front door never reads a frame over twice the max message size -----------

def test_a_frame_over_twice_the_limit_drops_the_connection_unread(
        start_node: Any, raw_dealer: Any) -> None:
    node = start_node(concurrency=1)
    refused = node.status()["refused_frames"]
    sock = raw_dealer(node.endpoint)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    try:
        sock.send(b"\x00" * (40 * 1024 * 1024))           # 40 MiB > 2 x 16 MiB
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + RESULT_TIMEOUT
        outcome = None
        while outcome is None:
            assert time.monotonic() < deadline, "neither a reply nor a disconnect"
            for s, _ in poller.poll(1000):
                if s is sock:
                    outcome = ("answered", [decode(f) for f in sock.recv_multipart()])
                elif parse_monitor_message(monitor.recv_multipart())["event"] == zmq.EVENT_DISCONNECTED:
                    outcome = ("dropped", None)
        assert outcome == ("dropped", None), outcome
    finally:
        sock.disable_monitor()
        monitor.close(0)
    assert node.status()["refused_frames"] == refused     # the node never read it
    assert node.ping(timeout=5.0)


# ---- journal: no ACK before the task is committed -------------------------------------

def test_a_task_whose_commit_fails_is_refused_and_never_acknowledged(
        start_node: Any, raw_dealer: Any) -> None:
    """The node's files may not grow past 512 KiB (fsize_app): a 700 KB task fits the
    journal's transaction in memory, and its commit fails writing the WAL. The node
    must answer ERROR `journal` and never ACK it (an ACK sent before the commit is a
    promise the journal did not keep). No root needed (the full-disk test needs it)."""
    node = start_node(app="fsize_app", concurrency=1, env={"FSIZE_LIMIT": str(512 * 1024)})
    sock = raw_dealer(node.endpoint)
    small = f"small-{uuid.uuid4()}"
    sock.send(encode(Submit(small, "tasks_app.add", codec.dump_call((1, 2), {}))))
    got = frames_until(sock, lambda fs: any(isinstance(f, Result) for f in fs))
    assert [f.state for f in got if isinstance(f, Result)] == [states.SUCCESS]

    big = f"big-{uuid.uuid4()}"
    sock.send(encode(Submit(big, "tasks_app.echo", codec.dump_call((os.urandom(700_000),), {}))))
    got = frames_until(sock, lambda fs: any(isinstance(f, (Error, Result)) for f in fs))
    acked = [t for f in got if isinstance(f, Ack) for t in f.task_ids]
    errors = [f for f in got if isinstance(f, Error)]
    assert errors and errors[0].code == "journal" and errors[0].ref == big, got
    assert big not in acked, "the node acknowledged a task its journal could not commit"
    assert "commit failed" in node.stderr()           # (not refused at the INSERT already)
    assert node.ping(timeout=5.0)


def test_a_task_one_node_cannot_journal_runs_on_another(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """``good`` is busy with a gated task; ``bad`` cannot grow its files (fsize_app), so
    the client (the less loaded of two) sends a big task to ``bad``, which refuses it
    with ERROR `journal`: the client must try ``good``, not fail the task."""
    good = start_node(concurrency=1, profile="test")
    c = make_client(good)                      # knows only good: the gated task goes there
    client = c.app.client
    gate = tmp_path / "gate"
    blocker = c.tasks.wait_for_file.delay(str(gate))
    wait_until(lambda: good.status()["busy"] == 1, what="the gated task to start on good")
    bad = start_node(app="fsize_app", concurrency=1, profile="test", peers=good.endpoint,
                     env={"FSIZE_LIMIT": str(512 * 1024)})
    wait_until(lambda: len(client._placeable) == 2, what="the client to learn of bad")
    wait_until(lambda: {n["endpoint"]: n["busy"] for n in client.nodes()}.get(good.endpoint) == 1,
               what="the client to know that good is busy")
    big = c.tasks.echo.delay("x" * 700_000)
    wait_until(lambda: "journal write failed" in bad.stderr() or "journal commit failed" in bad.stderr(),
               what="bad to refuse the task")
    gate.touch()
    assert big.get(timeout=RESULT_TIMEOUT) == "x" * 700_000
    assert blocker.get(timeout=RESULT_TIMEOUT) == "opened"
    assert big._slot is not None and big._slot.node == good.endpoint
