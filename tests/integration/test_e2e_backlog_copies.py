"""A deep backlog's copies on its backup (mesh/node/copies.py): beyond the backup's
window (``--queue-memory``) the copies wait in the backup's journal, not its memory.

Two real nodes, both with a window of 50: a holds a few hundred tasks behind a gated
one (most on its disk), b keeps their copies (most on its disk). b's one child is
busy too, so a has no peer with room to shed its queue to.
"""
from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import occupy, wait_until
from test_e2e_backlog import RESULT_TIMEOUT, WINDOW, _backlog, _lines

from mesh import Mesh

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
