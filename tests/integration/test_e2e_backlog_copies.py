"""A deep backlog's copies on its backup (mesh/node/copies.py): beyond the backup's
window (``--queue-memory``) the copies wait in the backup's journal, not its memory.

Two real nodes, both with a window of 50: a holds a few hundred tasks behind a gated
one (most on its disk), b keeps their copies (most on its disk). b's one child is
busy too, so a has no peer with room to shed its queue to.
"""
from __future__ import annotations

import re
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import zmq
from harness import frames_until, occupy, wait_until
from test_e2e_backlog import RESULT_TIMEOUT, WINDOW, _backlog, _lines, _result_of, _submit

from mesh import Mesh
from mesh.wire import codec
from mesh.wire.protocol import Ack, Release, Result, Submit, encode

N = 400


def _pair(start_node: Any, make_client: Any, tmp_path: Path, n: int = N,
          ) -> tuple[Any, Any, Any, Any, list[Any], Path, int]:
    """a holding a backlog of ``n`` (acknowledged), b keeping its copies, most on b's disk."""
    a = start_node(concurrency=1, queue_memory=WINDOW, replicas=2, profile="test")
    b = start_node(concurrency=1, queue_memory=WINDOW, peers=a.endpoint, replicas=2, profile="test")
    wait_until(lambda: "kept in two copies" in a.stderr(), what="a to see b")
    b_busy = occupy(b, make_client(b), tmp_path / "gate")
    c = make_client(a)
    _running, rs, _gate, out = _backlog(a, c, tmp_path, n=n, prefix=f"k{uuid.uuid4().hex[:6]}")
    assert c.app.client.flush(RESULT_TIMEOUT) == 0      # acknowledged: the promise is made
    # (the client places some of its tasks on b: a holds the rest, most of them on disk)
    wait_until(lambda: a.status()["queued_on_disk"] >= 50, what="a's disk part")
    # a's count and b's read together, each time (a may shed or read back meanwhile);
    # on a time-out, what each says (seen once under load, 2026-12-01, not explained:
    # the kept journals showed nothing missing on disk, the in-memory part is gone)
    seen: list[Any] = []

    def copied() -> bool:
        sa, sb = a.status(), b.status()
        seen[:] = [sa, sb]
        return sa["handoffs_in_flight"] == 0 and sb["copies_kept_for"].get(a.name, 0) >= sa["held"]
    try:
        wait_until(copied, what="b to keep a copy of each")
    except AssertionError as e:
        keys = ("held", "queued", "queued_on_disk", "busy", "copies_kept", "copies_on_disk",
                "copies_kept_for", "handed_off", "taken_from_peers", "handoffs_in_flight",
                "copies_waiting", "single_copy_acks", "read_back_from_disk")
        raise AssertionError(f"{e}; " + "; ".join(
            f"{n}: {({k: st.get(k) for k in keys})}" for n, st in zip("ab", seen))) from None
    held = seen[0]["held"]
    st = b.status()
    # beyond b's window the copies are on b's disk: at most WINDOW of them in memory
    assert st["copies_on_disk"] >= held - WINDOW > 0, st
    assert st["copies_kept"] - st["copies_on_disk"] <= WINDOW, st
    return a, b, c, b_busy, rs, out, held


def _still(a: Any, b: Any) -> tuple[dict[str, Any], int]:
    """a's status and b's count of tasks taken from peers, read with no handoff of a's
    in flight and b's count the same before and after a's read."""
    seen: list[Any] = []

    def read() -> bool:
        taken = b.status()["taken_from_peers"]
        st = a.status()
        seen[:] = [st, taken]
        return st["handoffs_in_flight"] == 0 and b.status()["taken_from_peers"] == taken
    wait_until(read, what="a with no handoff in flight")
    return seen[0], seen[1]


def _lines_once(out: Path) -> list[str]:
    return sorted(_lines(out))


def test_copies_beyond_the_window_wait_on_the_backups_disk_and_results_drop_them(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    a, b, c, b_busy, rs, out, held = _pair(start_node, make_client, tmp_path)
    (tmp_path / "gate").touch()
    assert sorted(r.get(timeout=RESULT_TIMEOUT) for r in rs) == sorted(f"line-{i}" for i in range(N))
    assert {r.get(timeout=RESULT_TIMEOUT) for r in b_busy} == {"opened"}
    assert _lines_once(out) == sorted(f"line-{i}" for i in range(N))
    # each result replaced its copy: none is left, in memory or on disk
    wait_until(lambda: b.status()["copies_kept"] == 0 and b.status()["copies_on_disk"] == 0,
               what="b to drop every copy")
    assert b.status()["taken_over"] == 0


@pytest.mark.parametrize("submitter", ["gone", "resends"])
def test_the_holder_killed_the_backup_runs_each_task_once_from_its_disk(
        start_node: Any, make_client: Any, tmp_path: Path, submitter: str) -> None:
    """``gone``: nobody resends, b runs a's tasks from its copies alone (those on its
    disk go to its own disk queue, read back as it drains). ``resends``: the owner
    resends them to b meanwhile; a task is still run once."""
    a, b, c, b_busy, rs, out, held = _pair(start_node, make_client, tmp_path)
    ids = [r.id for r in rs]
    if submitter == "gone":
        c.close()
    # read again just before the kill: a may have shed some to b since _pair read it
    # (once under load: 208 taken over, 210 held at _pair's read; not traced further).
    # Not while a handoff is in flight: its tasks count in a's held until b's answer
    # reaches a, and in b's taken_from_peers from when b took them (a fresh-clone CI
    # run read a's 201 held, 2 of them on the way, and b's count after it took them:
    # 198 taken over + 0 shed, one short of the bound)
    before, shed_before = _still(a, b)
    held, started = before["held"], before["busy"] + before["ahead"]
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    wait_until(lambda: "more kept on disk follow" in b.stderr(), what="b to take a's tasks over")
    (tmp_path / "gate").touch()
    other = Mesh("mesh-it-other", peers=[b.endpoint], mdns=False)
    try:
        assert sorted(other.AsyncResult(t).get(timeout=RESULT_TIMEOUT) for t in ids) \
            == sorted(f"line-{i}" for i in range(N))
    finally:
        other.close()
    assert {r.get(timeout=RESULT_TIMEOUT) for r in b_busy} == {"opened"}
    assert _lines_once(out) == sorted(f"line-{i}" for i in range(N))     # each ran once
    wait_until(lambda: b.status()["held"] == 0, what="b to hold nothing")
    st = b.status()
    assert st["copies_kept"] == 0 and st["copies_on_disk"] == 0 and st["queued_on_disk"] == 0, st
    if submitter == "gone":
        # all of a's but those it had started (the gated one running, one sent ahead to its
        # child: once under load, 198 taken over of 200 held), taken over or shed to b
        # between the read and the kill (a fresh-clone run: 199 taken over, 2 shed, of 201)
        shed = st["taken_from_peers"] - shed_before
        assert st["taken_over"] + shed >= held - max(1, started), (
            {k: before[k] for k in ("held", "busy", "ahead", "queued", "queued_on_disk")},
            {k: st[k] for k in ("taken_over", "taken_from_peers")})


def _same_twice(read: Any) -> tuple[Any] | None:
    """``(value,)`` when two reads 0.2 s apart agree, else None."""
    first = read()
    time.sleep(0.2)
    return (first,) if read() == first else None


def test_a_restarted_backup_drops_its_copies_on_disk_and_its_holder_copies_again(
        start_node: Any, make_client: Any, tmp_path: Path) -> None:
    """As with the copies in its memory: its holder sends nothing more for the old
    ones, so kept, they could run a task again long after it finished."""
    a, b, c, b_busy, rs, out, held = _pair(start_node, make_client, tmp_path)
    # a paused while b's count is read and b killed: a shed to b between the two changed
    # b's copies (a fresh-clone run: 150 on disk, 152 counted a moment before)
    a.send_signal(signal.SIGSTOP)
    try:
        on_disk = wait_until(lambda: _same_twice(lambda: b.status()["copies_on_disk"]),
                             what="b's copies on disk to settle")[0]
        copied = a.stderr().count("task(s) to their backups now")
        b.send_signal(signal.SIGKILL)
        b.wait(10)
    finally:
        a.send_signal(signal.SIGCONT)
    db = sqlite3.connect(str(b.data_dir / "journal.sqlite3"))   # committed before the kill
    try:
        assert db.execute("SELECT count(*) FROM copies").fetchone()[0] == on_disk
    finally:
        db.close()
    b = start_node.restart(b)
    assert f"journal: dropped {on_disk} copie(s) of other nodes' tasks" in b.stderr()
    # (not "copies_on_disk == 0" now: a, seeing b back, may have copied again already,
    # and beyond b's window those copies are on its disk again)
    # a copies its held tasks to b again: b's boot id changed ("backup b restarted"), or,
    # on a loaded machine, a saw b suspect meanwhile and held them with one copy ("tasks
    # held with one copy") until b was alive again
    wait_until(lambda: a.stderr().count("task(s) to their backups now") > copied,
               what="a to copy again")
    (tmp_path / "gate").touch()
    assert sorted(r.get(timeout=RESULT_TIMEOUT) for r in rs) == sorted(f"line-{i}" for i in range(N))
    assert _lines_once(out) == sorted(f"line-{i}" for i in range(N))
    wait_until(lambda: b.status()["copies_kept"] == 0, what="b to drop every copy")
    assert b.status()["taken_over"] == 0


def test_a_stopping_node_acknowledges_a_resent_task_that_waits_on_its_disk(
        start_node: Any, raw_dealer: Any, tmp_path: Path) -> None:
    """A stopping node keeps the tasks waiting on its disk (they run at its next start,
    or their backups run their copies once it is gone for their LEFT_GRACE plus their
    shutdown timeout: docs/handoff.md). One sent to it again while it stops (its owner
    through another link) is acknowledged, as any resend of a task it holds, and its
    result goes to that link. Until 2026-12 it was given back (RELEASE): its owner sent
    it to another node, which ran it, while the node ran it at its next start (its
    reclaim did not ask a node it did not see yet) or a backup that kept its copy ran
    it as well (the node gone for good, the owner's pick not that backup)."""
    a = start_node(name="a", concurrency=1, queue_memory=WINDOW, shutdown_timeout=60,
                   profile="test")
    b = start_node(name="b", concurrency=1, peers=a.endpoint, profile="test")
    wait_until(lambda: "kept in two copies" in a.stderr(), what="a to see b")
    old = raw_dealer(a.endpoint)
    ctx: zmq.Context[Any] = zmq.Context()
    new: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)     # a routing id of its own, as a
    new.setsockopt(zmq.ROUTING_ID, b"owner-" + uuid.uuid4().bytes)   # client's: a's
    new.setsockopt(zmq.LINGER, 0)                       # next run answers it too
    new.connect(a.endpoint)
    try:
        _resent_while_stopping(start_node, a, b, old, raw_dealer(b.endpoint), new, tmp_path)
    finally:
        new.close(linger=0)
        ctx.term()


def _resent_while_stopping(start_node: Any, a: Any, b: Any, old: Any, to_b: Any, new: Any,
                           tmp_path: Path) -> None:
    gate, out = tmp_path / "gate", tmp_path / "runs"
    old.send(encode(Submit("gate", "tasks_app.wait_for_file", codec.dump_call((str(gate),), {}))))
    wait_until(lambda: a.status()["busy"] == 1, what="the gated task to start")
    b_gate = tmp_path / "b-gate"              # b busy: a sheds none of its queue to it
    to_b.send(encode(Submit("b-gate", "tasks_app.wait_for_file", codec.dump_call((str(b_gate),), {}))))
    wait_until(lambda: b.status()["busy"] == 1, what="b's gated task to start")
    frames = {i: _submit(f"s-{i}", out, f"line-{i}") for i in range(2 * WINDOW)}
    for frame in frames.values():
        old.send(frame)
    wait_until(lambda: a.status()["queued_on_disk"] > 0 and a.status()["copies_waiting"] == 0
               and not a.status()["recopying_disk"], what="the disk part, its copies confirmed")
    last = 2 * WINDOW - 1                     # (the last sent: on disk, not shed)
    a.send_signal(signal.SIGTERM)             # it waits for its running task (the gate)
    wait_until(lambda: "stopping: finishing running tasks" in a.stderr(), what="a to stop")
    new.send(frames[last])                    # its owner, through another link
    got = frames_until(new, lambda fs: any(isinstance(f, (Ack, Release)) for f in fs), timeout=30)
    assert [type(f).__name__ for f in got if isinstance(f, (Ack, Release))] == ["Ack"], got
    old.close(linger=0)
    gate.touch()
    assert a.wait(60) == 0
    a2 = start_node.restart(a)                # back on its data dir: it runs its disk part
    b_gate.touch()
    wait_until(lambda: f"line-{last}" in _lines(out), timeout=RESULT_TIMEOUT, what="the task to run")
    new.send(frames[last])     # (a client sends its tasks again on a new link; the RESULT
    # of the run may have gone before this link was connected to a's new run)
    result = frames_until(new, _result_of(f"s-{last}"), timeout=RESULT_TIMEOUT)
    # (once or twice: the run's own RESULT, when the link was connected to a's new run by
    # then, and the answer to the resend; the same run's, as the count below says)
    assert {f.node for f in result if isinstance(f, Result) and f.task_id == f"s-{last}"} == {"a"}
    wait_until(lambda: a2.status()["held"] + b.status()["held"] == 0, what="a and b to be done")
    assert _lines(out).count(f"line-{last}") == 1


@pytest.mark.parametrize(("timeout", "reclaim"), [(1, None), (3, 5)],
                         ids=["before-reclaim", "after-reclaim"])
def test_a_stopping_nodes_backup_runs_its_disk_part_after_the_grace_the_node_says(
        start_node: Any, raw_dealer: Any, tmp_path: Path, timeout: int,
        reclaim: int | None) -> None:
    """A stopping node keeps its disk part and says how long its backups wait for it:
    ``LEFT_GRACE`` + its ``--shutdown-timeout`` (how long it may run tasks once it has
    left). Its backup waits that, whatever its own ``--shutdown-timeout``: the node says
    its own in the gossiped meta (``stop``). Here a (1 s, or 3 s) and b (60 s): a says
    16 s (18 s), and b runs the copies after that, saying so; with 18 s, after b's
    membership has forgotten a (``--dead-node-reclaim 5``: the ``local`` profile's 30 s
    made this case wait 35 s), b still waits a's grace.
    (Before: b waited 15 + its own 60 s, and a's message named a bound no backup used;
    b forgot a at 30 s and ran them then, as a node "unknown to the mesh".)"""
    a = start_node(name="a", concurrency=1, queue_memory=WINDOW, shutdown_timeout=timeout,
                   profile="local")
    b = start_node(name="b", concurrency=1, peers=a.endpoint, shutdown_timeout=60,
                   profile="local", dead_node_reclaim=reclaim)
    wait_until(lambda: "kept in two copies" in a.stderr(), what="a to see b")
    to_a, to_b = raw_dealer(a.endpoint), raw_dealer(b.endpoint)
    gate, b_gate, out = tmp_path / "gate", tmp_path / "b-gate", tmp_path / "runs"
    to_a.send(encode(Submit("gate", "tasks_app.wait_for_file", codec.dump_call((str(gate),), {}))))
    wait_until(lambda: a.status()["busy"] == 1, what="the gated task to start")
    to_b.send(encode(Submit("b-gate", "tasks_app.wait_for_file",   # b busy: a sheds
                            codec.dump_call((str(b_gate),), {}))))   # nothing to it
    wait_until(lambda: b.status()["busy"] == 1, what="b's gated task to start")
    for i in range(2 * WINDOW):
        to_a.send(_submit(f"g-{i}", out, f"line-{i}"))
    wait_until(lambda: a.status()["queued_on_disk"] > 0 and a.status()["copies_waiting"] == 0
               and not a.status()["recopying_disk"], what="the disk part, its copies confirmed")
    on_disk = a.status()["queued_on_disk"]
    a.send_signal(signal.SIGTERM)
    gate.touch()
    assert a.wait(60) == 0
    said = re.search(r"(\d+) queued task\(s\) wait on disk in the journal .*: they run when this "
                     r"node starts again, or on the nodes that keep their copies if it is not "
                     r"back within (\d+) s", a.stderr())
    assert said is not None, a.stderr_tail()
    grace = 15 + timeout
    assert (int(said[1]), int(said[2])) == (on_disk, grace)
    took = r"node a (left (\d+) s ago without handing them on|is unknown to the mesh): running"
    wait_until(lambda: re.search(took, b.stderr()), timeout=120, what="b to take a's tasks over")
    assert re.search(took, b.stderr())[1] == f"left {grace} s ago without handing them on"
    b_gate.touch()
    wait_until(lambda: len(_lines(out)) >= 2 * WINDOW, timeout=RESULT_TIMEOUT,
               what="a's tasks to run on b")
    assert sorted(_lines(out)) == sorted(f"line-{i}" for i in range(2 * WINDOW))
