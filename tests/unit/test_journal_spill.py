"""The journal's side of a deep backlog (mesh/node/spill.py): tasks marked as waiting
on disk only, read back in arrival order, a chunk at a time."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.node.memory_journal import MemoryJournal
from mesh.node.sqlite_journal import FILENAME
from mesh.node.sqlite_journal import SqliteJournal as Journal


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(str(tmp_path / "data"))
    yield j
    j.close()


def test_tasks_on_disk_are_read_back_in_arrival_order_a_chunk_at_a_time(journal: Journal) -> None:
    for i in range(10):            # every third one stays in memory (not marked)
        if i % 3 == 0:
            assert journal.add(f"m{i}", b"c", b"f", float(i))
        else:
            assert journal.add_spilled(f"d{i}", b"c", b"f%d" % i, float(i))
    journal.commit()
    first = journal.spilled(3)
    assert [r.task_id for r in first] == ["d1", "d2", "d4"]
    assert first[0].frame == b"f1" and first[0].client == b"c" and first[0].received == 1.0
    journal.commit()
    # read back once: the next read goes on from there
    assert [r.task_id for r in journal.spilled(100)] == ["d5", "d7", "d8"]
    assert journal.spilled(100) == []


def test_restart_recovery_leaves_the_disk_part_on_disk(journal: Journal) -> None:
    journal.add("m1", b"c", b"f", 1.0)
    journal.add_spilled("d1", b"c", b"f", 2.0)
    journal.add_spilled("d2", b"c", b"f", 3.0)
    journal.commit()
    assert [r.task_id for r in journal.unfinished()] == ["m1"]
    assert journal.counts()["open"] == 3
    [row] = journal.spilled(1)
    journal.commit()
    assert row.task_id == "d1"
    assert [r.task_id for r in journal.unfinished()] == ["m1", "d1"]   # in memory now


def test_a_row_read_back_says_if_it_is_finished_or_revoked(journal: Journal) -> None:
    for t in ("a", "b", "c"):
        journal.add_spilled(t, b"c", b"f", 1.0)
    journal.finish("b", "SUCCESS", b"r", 2.0)
    journal.revoke(["c"], 2.0)
    journal.commit()
    rows = {r.task_id: (r.done, r.revoked) for r in journal.spilled(10)}
    assert rows == {"a": (False, False), "b": (True, False), "c": (False, True)}


def test_a_task_on_disk_is_known_by_id_and_can_be_taken_alone(journal: Journal) -> None:
    journal.add_spilled("a", b"owner", b"fa", 1.0)
    journal.add_spilled("b", b"owner", b"fb", 2.0)
    journal.add("m", b"owner", b"fm", 3.0)
    journal.commit()
    assert journal.on_disk("a") == b"owner"
    assert journal.on_disk("m") is None and journal.on_disk("nope") is None
    assert not journal.add("a", b"x", b"f", 4.0)          # a resend is no new task
    journal.set_client("a", b"new-link")
    assert journal.on_disk("a") == b"new-link"
    row = journal.take_from_disk("a")
    assert row is not None and (row.task_id, row.frame, row.client) == ("a", b"fa", b"new-link")
    assert journal.on_disk("a") is None and journal.take_from_disk("a") is None
    assert [r.task_id for r in journal.spilled(10)] == ["b"]


def test_a_task_on_disk_remembers_where_its_copy_is(journal: Journal) -> None:
    journal.add_spilled("a", b"c", b"f", 1.0)
    journal.add_spilled("b", b"c", b"f", 2.0)
    journal.set_backups([("node-x", "a")])
    journal.commit()
    assert [(r.task_id, r.backup) for r in journal.spilled(10)] == [("a", "node-x"), ("b", "")]


def test_the_owners_of_the_disk_part_are_counted_for_their_quotas(journal: Journal) -> None:
    journal.add_spilled("a", b"c1", b"12345", 1.0)
    journal.add_spilled("b", b"c1", b"123", 2.0)
    journal.add_spilled("c", b"c2", b"1", 3.0)
    journal.add("m", b"c1", b"1234567", 4.0)
    journal.commit()
    assert sorted(journal.disk_senders()) == [(b"c1", 2, 8), (b"c2", 1, 1)]


@pytest.mark.parametrize("query", [
    # the read back (spilled)
    "SELECT t.rowid FROM tasks t INDEXED BY tasks_disk WHERE t.disk=1 ORDER BY t.rowid LIMIT 5",
    # the walk that copies tasks on disk again (disk_walk)
    "SELECT rowid, task_id, backup FROM tasks INDEXED BY tasks_disk WHERE disk=1 AND rowid > 5 "
    "ORDER BY rowid LIMIT 5"])
def test_the_reads_use_the_partial_index_not_a_scan(journal: Journal, query: str) -> None:
    plan = journal.db.execute("EXPLAIN QUERY PLAN " + query).fetchall()
    assert "tasks_disk" in str(plan) and "TEMP B-TREE" not in str(plan)


def test_a_journal_without_the_disk_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "d"
    Journal(str(path)).close()
    db = sqlite3.connect(str(path / FILENAME))
    db.executescript("DROP INDEX tasks_disk; DROP TABLE tasks; CREATE TABLE tasks (task_id TEXT "
                     "NOT NULL UNIQUE, client BLOB NOT NULL, frame BLOB NOT NULL, state TEXT NOT "
                     "NULL, received REAL NOT NULL); INSERT INTO tasks VALUES "
                     "('old', x'63', x'66', 'RECEIVED', 1.0);")
    db.commit()
    db.close()
    j = Journal(str(path))
    try:
        assert [r.task_id for r in j.unfinished()] == ["old"]
        assert j.add_spilled("new", b"c", b"f", 2.0)
        j.set_backups([("n", "new")])
        assert [(r.task_id, r.backup) for r in j.spilled(10)] == [("new", "n")]
    finally:
        j.close()


def test_the_walk_over_the_disk_part_goes_in_arrival_order_from_a_position(journal: Journal) -> None:
    """mesh/node/disk_copies.py: which tasks on disk name which backup, a chunk at a
    time; the frames of the ones to copy again, not those finished or in memory."""
    for i in range(8):
        if i % 4 == 0:
            assert journal.add(f"m{i}", b"c", b"f", float(i))        # in memory: not walked
        else:
            assert journal.add_spilled(f"d{i}", b"c", b"f%d" % i, float(i))
    journal.set_backups([("b", "d1"), ("x", "d2"), ("b", "d3"), ("b", "d5")])
    journal.commit()
    first = journal.disk_walk(0, 3)
    assert [(t, b) for _, t, b in first] == [("d1", "b"), ("d2", "x"), ("d3", "b")]
    rest = journal.disk_walk(first[-1][0], 100)        # goes on after the position reached
    assert [(t, b) for _, t, b in rest] == [("d5", "b"), ("d6", ""), ("d7", "")]
    assert journal.disk_walk(rest[-1][0], 100) == []
    # d3 finished (its copy's result came back), d5 revoked stays due, d6 read back
    journal.finish("d3", "SUCCESS", b"r", 9.0)
    journal.copy_results([("d7", "SUCCESS", b"r", 9.0, "b")])    # run by another node
    assert journal.take_from_disk("d6") is not None
    pos = {t: p for p, t, _ in first + rest}
    assert journal.disk_frames([pos[t] for t in ("d1", "d3", "d5", "d6", "d7")]) \
        == [("d1", b"f1"), ("d5", b"f5")]
    assert journal.disk_frames([]) == []
    many = journal.disk_frames([p for p, _, _ in journal.disk_walk(0, 100)] * 300)   # > IN_CHUNK
    assert [t for t, _ in many][:3] == ["d1", "d2", "d5"]
    journal.set_backups([("y", "d1")])                  # the new backup, once confirmed
    assert journal.disk_walk(0, 1)[0][1:] == ("d1", "y")


def test_the_boot_ids_of_backups_are_kept_beside_the_schema(journal: Journal) -> None:
    journal.set_backup_boot("b", "x")
    journal.set_backup_boot("b", "y")
    journal.set_backup_boot("c:9", "z")
    journal.commit()
    assert journal.backup_boots() == {"b": "y", "c:9": "z"}     # not the schema's row


def test_the_memory_journal_keeps_nothing_on_disk() -> None:
    j = MemoryJournal()
    assert not j.spills
    assert j.spilled(10) == [] and j.on_disk("x") is None and j.disk_senders() == []
    assert j.disk_walk(0, 10) == [] and j.disk_frames([1]) == [] and j.backup_boots() == {}
