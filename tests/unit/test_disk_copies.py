"""The walk that copies a deep backlog's tasks on disk again (mesh/node/disk_copies.py)
in-process, on a real sqlite journal: a fast check of which rows it copies, the
throttle and the journal's record, next to tests/integration/test_e2e_backlog_recopy.py
(real nodes). What stands in for the node is only what the walk reads: membership
states, the spill's counters, the REPLICATE batches the copies go into."""
from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.membership import MemberState
from mesh.node import disk_copies
from mesh.node.disk_copies import DiskCopies
from mesh.node.naps import Nap
from mesh.node.sqlite_journal import SqliteJournal
from mesh.rendezvous import backup_for
from mesh.wire.protocol import Submit, decode, encode

STATES = {"b": MemberState.ALIVE, "c": MemberState.ALIVE, "d": MemberState.DEAD,
          "l": MemberState.LEFT, "s": MemberState.SUSPECT}
BOOTS = {"b": "b1", "c": "c1"}


class _Replicas:
    """What DiskCopies uses of Replicas: the alive peers and the backup it picks now
    (the first alive one, here: its ``choice``), the next REPLICATE per backup."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.choice = self
        self.enabled = True
        self._boot_of: dict[str, Any] = {}
        self.out: dict[str, dict[str, bytes]] = {}
        self.nap = Nap()

    def alive_ids(self) -> list[str]:
        return sorted(m for m, s in STATES.items() if s == MemberState.ALIVE)

    def backup_now(self, task_id: str, msg: Submit) -> str:
        return self.alive_ids()[0] if self.alive_ids() else ""

    def _queue(self, backup: str) -> Any:
        return types.SimpleNamespace(tasks=self.out.setdefault(backup, {}))


@pytest.fixture
def dc(tmp_path: Path) -> Iterator[DiskCopies]:
    journal = SqliteJournal(str(tmp_path / "d"))
    node: Any = types.SimpleNamespace(
        name="a", journal=journal, stopping=False,
        spill=types.SimpleNamespace(on_disk=0, candidates={}),
        reclaim=types.SimpleNamespace(disk={}),
        membership=types.SimpleNamespace(
            member=lambda n: types.SimpleNamespace(state=STATES[n], meta={"boot": BOOTS.get(n)})
            if n in STATES else None),
        front=types.SimpleNamespace(schedule_flush=journal.commit))
    d = DiskCopies(_Replicas(node))     # type: ignore[arg-type]
    yield d
    journal.close()


def _restarted(dc: DiskCopies) -> DiskCopies:
    """The same journal, a new DiskCopies (this node started again)."""
    return DiskCopies(_Replicas(dc.node))    # type: ignore[arg-type]


def _spill(dc: DiskCopies, backups: list[str], start: int = 0) -> list[str]:
    j = dc.node.journal
    ids = []
    for i, backup in enumerate(backups, start):
        tid = f"t{i}"
        assert j.add_spilled(tid, b"o", encode(Submit(tid, "x", b"\x92\x90\x80")), float(i))
        if backup:
            j.set_backups([(backup, tid)])
        ids.append(tid)
    j.commit()
    dc.node.spill.on_disk += len(backups)
    return ids


def _backups(dc: DiskCopies) -> dict[str, str]:
    return {t: b for _, t, b in dc.node.journal.disk_walk(0, 1000)}


def test_the_walk_copies_the_tasks_whose_copy_is_lost_and_records_their_new_backup(
        dc: DiskCopies) -> None:
    ids = _spill(dc, ["b", "", "d", "l", "s", "c", "r"])
    dc.node.spill.candidates["t0"] = object()          # (still in memory: its copy is made)
    dc.walk(stale=["r"])                                # r restarted
    dc.tick(1.0)
    sent = dc.replicas.out["b"]                         # the backup picked now
    # lost: none (""), dead, left, restarted; kept: alive, suspect
    assert sorted(sent) == ["t1", "t2", "t3", "t6"]
    assert decode(sent["t1"]) == Submit("t1", "x", b"\x92\x90\x80")
    assert dc.status() == {"recopying_disk": True, "recopied_from_disk": 0}
    dc.tick(1.1)                                        # unconfirmed: no next chunk yet
    assert _backups(dc)["t1"] == ""
    dc.confirmed("c", ["t1"])                           # (not where it went: ignored)
    dc.confirmed("b", list(sent))
    assert _backups(dc) == dict(zip(ids, ["b", "b", "b", "b", "s", "c", "b"]))
    assert dc.recopied == 4 and not dc.inflight
    dc.tick(1.2)                                        # nothing after: the walk ends
    assert dc.status() == {"recopying_disk": False, "recopied_from_disk": 4}
    assert not dc.stale


def test_the_walk_waits_while_the_tasks_on_disk_wait_for_the_reclaim_answers(
        dc: DiskCopies) -> None:
    # Back after a crash, this node asks the others which of its recovered tasks they
    # hold now (mesh/node/reclaim.py). One it copied meanwhile replaced, at the backup,
    # the copy its new holder had made there; that holder died, nobody took it over,
    # this node dropped it as held elsewhere: it never ran (test_e2e_backlog_recopy).
    _spill(dc, ["", "d"])
    dc.node.reclaim.disk = {"t0": (b"o", 10), "t1": (b"o", 10)}
    dc.walk()
    dc.tick(1.0)
    assert not dc.replicas.out and dc.walking           # waits
    dc.node.reclaim.disk = {}                           # answered: t1 is held elsewhere
    dc.node.journal.remove(["t1"])
    dc.node.journal.commit()
    dc.tick(1.1)
    assert sorted(dc.replicas.out["b"]) == ["t0"]       # what stays is copied then


def test_the_walk_copies_no_revoked_task(dc: DiskCopies) -> None:
    """``meshnode --purge`` revokes the recovered tasks waiting on disk (they finish
    REVOKED when read back), and the members asked dropped their copies. Copied again,
    a backup would keep one and run it if this node died before reading it back."""
    _spill(dc, ["", "", "d"])
    dc.node.journal.revoke(["t0", "t2"], 1.0)
    dc.node.journal.commit()
    dc.walk()
    dc.tick(1.0)
    assert sorted(dc.replicas.out["b"]) == ["t1"]
    dc.confirmed("b", ["t1"])
    dc.tick(1.1)
    assert dc.status() == {"recopying_disk": False, "recopied_from_disk": 1}
    assert _backups(dc) == {"t0": "", "t1": "b", "t2": "d"}


def test_a_chunk_at_a_time_each_once_the_last_is_confirmed(
        dc: DiskCopies, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_copies, "CHUNK", 3)
    _spill(dc, [""] * 7)
    dc.walk()
    for expect in (["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]):
        dc.replicas.out.clear()
        dc.tick(0.0)
        assert sorted(dc.replicas.out["b"]) == expect
        dc.confirmed("b", expect)
    dc.tick(0.0)
    assert not dc.walking and dc.recopied == 7


def test_rows_added_at_the_end_are_walked_from_where_the_walk_was(dc: DiskCopies) -> None:
    """A takeover puts a dead holder's copies on this node's disk with no backup: the
    walk goes on from its position (mesh/node/copies.py calls walk(from_start=False))."""
    _spill(dc, ["", "b"])
    dc.walk()
    dc.tick(0.0)
    dc.confirmed("b", ["t0"])
    dc.tick(0.0)
    assert not dc.walking
    _spill(dc, ["", ""], start=2)
    dc.replicas.out.clear()
    dc.walk(from_start=False)
    dc.tick(0.0)
    assert sorted(dc.replicas.out["b"]) == ["t2", "t3"]     # not t0 again


def test_unconfirmed_copies_are_sent_again_to_a_backup_alive_now(
        dc: DiskCopies, monkeypatch: pytest.MonkeyPatch) -> None:
    _spill(dc, [""])
    dc.walk()
    dc.tick(10.0)
    dc.replicas.out.clear()
    dc.tick(10.0 + disk_copies.RESEND_AFTER / 2)
    assert not dc.replicas.out                          # not yet
    monkeypatch.setitem(STATES, "b", MemberState.DEAD)  # its backup died meanwhile
    dc.tick(11.0)
    assert list(dc.replicas.out) == ["c"] and dc.inflight["t0"][0] == "c"


def test_membership_starts_walks_and_none_runs_with_nobody_to_copy_to(
        dc: DiskCopies, monkeypatch: pytest.MonkeyPatch) -> None:
    dc.check({"b"}, set())                  # alive after alone: a walk, if tasks are on disk
    assert not dc.walking                   # (none are)
    _spill(dc, ["d"])
    dc.replicas.enabled = False             # --replicas 1: no copies, no walk
    dc.walk()
    assert not dc.walking
    dc.replicas.enabled = True
    dc.replicas._boot_of.update({"b": 1, "d": 1})
    dc.pos = 99                              # (where a last walk ended)
    dc.check({"b"}, set())
    assert dc.walking and dc.pos == 0        # d is dead: from the first task on disk
    dc.walking = False
    dc.check({"b"}, set())
    assert not dc.walking                    # once per departure
    dc.check({"b"}, {"b"})                   # b restarted
    assert dc.walking and dc.stale == {"b", "d"}       # (d since its death's walk)
    monkeypatch.setattr(dc.replicas, "alive_ids", lambda: [])
    dc.tick(0.0)
    assert dc.walking and not dc.replicas.out          # waits for a node to copy to


def test_a_backup_declared_dead_and_back_by_the_walks_tick_gets_its_rows_again(
        dc: DiskCopies, monkeypatch: pytest.MonkeyPatch) -> None:
    """b declared dead (a slow restart): the walk that starts then copies the rows
    naming b, even when b is alive again (its new process, which dropped the copies at
    its start) by the walk's first tick, before this node's next membership check sees
    b's new boot id. Skipped as "alive" (until 2026-12), they had one copy, this
    node's journal: killed then, it lost them (test_e2e_backlog_recopy: 57, and 70 of
    500 tasks in a CI run)."""
    _spill(dc, ["b", "c", ""])
    dc.replicas._boot_of.update({"b": "b1", "c": "c1"})
    dc._alone = False
    monkeypatch.setitem(STATES, "b", MemberState.DEAD)
    dc.check({"c"}, set())                   # b is dead: a walk
    assert dc.walking
    monkeypatch.setitem(STATES, "b", MemberState.ALIVE)   # back before the tick
    monkeypatch.setitem(BOOTS, "b", "b2")                 # (not seen by a check yet)
    dc.tick(0.0)
    assert sorted(dc.replicas.out["b"]) == ["t0", "t2"]   # b's row too, to b again
    dc.confirmed("b", ["t0", "t2"])
    dc.tick(0.0)
    assert not dc.walking and not dc.stale


def test_a_backup_restarted_while_this_node_was_down_is_told_by_its_boot_id(
        dc: DiskCopies, monkeypatch: pytest.MonkeyPatch) -> None:
    _spill(dc, ["b", "c"])
    dc.replicas._boot_of.update({"b": "b1", "c": "c1"})
    dc.check({"b", "c"}, set())              # (a walk: alive after alone; nothing is due)
    dc.tick(0.0)
    dc.tick(0.0)
    assert not dc.walking and not dc.replicas.out
    dc.check({"b", "c"}, set())              # the boot ids its copies were made to are kept
    dc.node.journal.commit()
    assert dc.node.journal.backup_boots() == {"b": "b1", "c": "c1"}
    # this node stops; b restarts meanwhile; this node starts again
    monkeypatch.setitem(BOOTS, "b", "b2")
    again = _restarted(dc)
    again._alone = False
    again.check({"b", "c"}, set())
    assert again.walking and again.stale == {"b"}
    again.tick(0.0)
    assert list(again.replicas.out) == ["b"] and list(again.replicas.out["b"]) == ["t0"]
    again.confirmed("b", ["t0"])
    again.tick(0.0)                          # the walk is over: b's new boot id is kept
    assert not again.walking
    again.check({"b", "c"}, set())
    assert not again.walking
    dc.node.journal.commit()
    assert dc.node.journal.backup_boots() == {"b": "b2", "c": "c1"}
    third = _restarted(dc)                   # started again, b not restarted: no walk
    third._alone = False
    third.check({"b", "c"}, set())
    assert not third.walking


def test_a_joiner_gets_the_copies_it_outranks_their_backup_for_and_the_old_drops_them(
        dc: DiskCopies, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that joins ranks first (rendezvous hashing) for some tasks on disk whose
    copy is kept, alive, elsewhere: a walk copies those to it, and once it confirmed
    the old backup drops its copy (an owner fails a task over to where the ranking
    says; the old copy would run it a second time at the takeover)."""
    drops, ids = _ranked_on_b(dc, monkeypatch)
    monkeypatch.setitem(STATES, "j", MemberState.ALIVE)
    dc.check({"b", "c", "j"}, set(), missed={"c"})      # j joins; c: a suspect back
    assert dc.walking
    dc.tick(1.0)
    to_j = sorted(t for t in ids if backup_for(t, ["b", "c", "j"], "a") == "j")
    assert 0 < len(to_j) < len(ids) and sorted(dc.replicas.out) == ["j"]
    assert sorted(dc.replicas.out["j"]) == to_j     # (not those c ranks first for: not a joiner)
    assert not any(drops.values())                  # (the old keeps its copy until then)
    dc.confirmed("j", to_j)
    assert sorted(drops["b"]) == to_j
    assert _backups(dc) == {t: "j" if t in to_j else "b" for t in ids}
    dc.tick(1.1)
    assert not dc.walking and not dc.joined and dc.recopied == len(to_j)


def test_a_joiner_that_dies_before_it_confirms_leaves_the_copies_where_they_were(
        dc: DiskCopies, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies moving to a joiner that is gone before it confirmed them stay with
    their old backup (which never dropped them): not sent to it again, nothing left
    remembered of the move (``_old``)."""
    drops, ids = _ranked_on_b(dc, monkeypatch)
    monkeypatch.setitem(STATES, "j", MemberState.ALIVE)
    dc.check({"b", "j"}, set())
    dc.tick(1.0)
    assert dc.replicas.out.get("j") and dc.inflight
    monkeypatch.setitem(STATES, "j", MemberState.DEAD)      # gone before it confirmed
    dc.replicas.out.clear()
    dc.tick(1.0 + disk_copies.RESEND_AFTER + 0.1)
    assert not dc.inflight and not dc._old
    assert not dc.replicas.out.get("b") and not any(drops.values())
    assert _backups(dc) == {t: "b" for t in ids}


def _ranked_on_b(dc: DiskCopies, monkeypatch: pytest.MonkeyPatch,
                 ) -> tuple[dict[str, dict[str, str]], list[str]]:
    """40 tasks on disk, their copies on b, the backups ranked by rendezvous hashing
    over the alive members (a joiner outranks b for some): the drops sent per backup,
    the ids."""
    drops: dict[str, dict[str, str]] = {}
    dc.replicas._queue = lambda b: types.SimpleNamespace(      # type: ignore[method-assign]
        tasks=dc.replicas.out.setdefault(b, {}), drop=drops.setdefault(b, {}))
    dc.node.ledger = types.SimpleNamespace(held={})
    monkeypatch.setattr(dc.replicas, "backup_now",
                        lambda tid, msg: backup_for(tid, dc.replicas.alive_ids(), "a"))
    ids = _spill(dc, ["b"] * 40)
    dc.check({"b"}, set())                      # (the first check: no joiner; alive
    dc.tick(0.5)                                # after alone, a walk: nothing is lost)
    dc.tick(0.6)
    assert not dc.walking and not dc.replicas.out
    return drops, ids
