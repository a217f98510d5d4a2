"""The journal's side of a backup's copies beyond its window (mesh/node/copies.py):
the ``copies`` table (mesh/node/copy_journal.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.node.journal import JournalError
from mesh.node.memory_journal import MemoryJournal
from mesh.node.sqlite_journal import SqliteJournal as Journal


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(str(tmp_path / "data"))
    yield j
    j.close()


def test_copies_are_kept_counted_per_holder_and_found_by_id(journal: Journal) -> None:
    journal.keep_copies([("t1", "a", b"f1", 3.0), ("t2", "a", b"f2", 1.0), ("t3", "b", b"f3", 2.0)])
    journal.commit()
    assert journal.copy_counts() == {"a": 2, "b": 1}
    assert sorted(journal.copy_holders(["t1", "t3", "nope"])) == [("t1", "a"), ("t3", "b")]
    # a copy sent again by its holder (a retry's new Submit) replaces its row
    journal.keep_copies([("t1", "a", b"f1'", 3.5)])
    assert journal.copy_counts() == {"a": 2, "b": 1}
    # another holder's copy of the same id is a row of its own: each holder's drop
    # takes only its own (a race left two nodes holding it: mesh/node/copies.py)
    journal.keep_copies([("t1", "b", b"f1''", 4.0)])
    assert journal.copy_counts() == {"a": 2, "b": 2}
    assert journal.copies_by_holder("b", 10) == [("t3", b"f3", 2.0), ("t1", b"f1''", 4.0)]
    assert sorted(journal.copy_holders(["t1"])) == [("t1", "a"), ("t1", "b")]
    assert journal.drop_copy_pairs([("t1", "b"), ("t2", "b")]) == [("t1", "b")]
    assert journal.copies_by_holder("a", 10) == [("t2", b"f2", 1.0), ("t1", b"f1'", 3.5)]
    assert sorted(journal.drop_copies(["t1", "t3"])) == [("t1", "a"), ("t3", "b")]
    assert journal.copy_counts() == {"a": 1}


def test_a_copies_table_keyed_by_the_id_alone_is_made_again(tmp_path: Path) -> None:
    """(Before 2026-12 a row per id: a second holder's copy replaced the first's.) Its
    rows would go at the start anyway (``clear_copies``): the table is made again."""
    j = Journal(str(tmp_path / "d"))
    j.db.executescript("DROP INDEX copies_holder; DROP TABLE copies; CREATE TABLE copies ("
                       "task_id TEXT PRIMARY KEY, holder TEXT NOT NULL, frame BLOB NOT NULL, "
                       "received REAL NOT NULL) WITHOUT ROWID;")
    j.db.execute("INSERT INTO copies VALUES ('old', 'a', x'00', 1.0)")
    j.close()
    j = Journal(str(tmp_path / "d"))
    try:
        assert j.copy_counts() == {}
        j.keep_copies([("t", "a", b"f", 1.0), ("t", "b", b"f", 2.0)])
        assert j.copy_counts() == {"a": 1, "b": 1}
        assert "copies_holder" in {r[0] for r in j.db.execute(
            "SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        j.close()


def test_a_holders_copies_are_read_oldest_first_a_chunk_at_a_time(journal: Journal) -> None:
    journal.keep_copies([(f"t{i}", "a", b"f%d" % i, float(100 - i)) for i in range(10)]
                        + [("x", "b", b"fx", 0.0)])
    first = journal.copies_by_holder("a", 3)
    assert [r[0] for r in first] == ["t9", "t8", "t7"]
    assert sorted(journal.drop_copies([r[0] for r in first])) == [("t7", "a"), ("t8", "a"), ("t9", "a")]
    assert [r[0] for r in journal.copies_by_holder("a", 3)] == ["t6", "t5", "t4"]
    assert journal.copy_counts() == {"a": 7, "b": 1}


def test_dropping_says_which_copies_were_there_and_whose(journal: Journal) -> None:
    journal.keep_copies([(f"t{i}", "a" if i % 2 else "b", b"f", 1.0) for i in range(1200)])
    gone = journal.drop_copies([f"t{i}" for i in range(0, 1200, 3)] + ["nope"])   # > IN_CHUNK
    assert sorted(gone) == sorted((f"t{i}", "a" if i % 2 else "b") for i in range(0, 1200, 3))
    assert sum(journal.copy_counts().values()) == 800
    assert journal.drop_copies(["t0", "nope"]) == []


def test_copies_are_in_the_nodes_transaction_and_survive_a_restart(tmp_path: Path) -> None:
    j = Journal(str(tmp_path / "d"))
    j.keep_copies([("kept", "a", b"f", 1.0)])
    assert j.in_tx
    j.commit()
    j.keep_copies([("lost", "a", b"f", 2.0)])
    j.rollback()                    # (not committed: as if the node died here)
    j.close()
    j = Journal(str(tmp_path / "d"))
    try:
        assert j.copy_counts() == {"a": 1}
        assert j.copies_by_holder("a", 10) == [("kept", b"f", 1.0)]
    finally:
        j.close()


def test_the_read_by_holder_uses_its_index(journal: Journal) -> None:
    plan = " ".join(str(r) for r in journal.db.execute(
        "EXPLAIN QUERY PLAN SELECT task_id, frame, received FROM copies WHERE holder=? "
        "ORDER BY received LIMIT 5", ("a",)).fetchall())
    assert "copies_holder" in plan and "TEMP B-TREE" not in plan, plan


def test_the_memory_journal_keeps_no_copies_on_disk() -> None:
    j = MemoryJournal()
    assert not j.spills and j.copy_counts() == {} and j.copy_holders(["t"]) == []
    assert j.drop_copies(["t"]) == [] and j.copies_by_holder("a", 5) == []
    assert j.drop_copy_pairs([("t", "a")]) == []
    with pytest.raises(JournalError):
        j.keep_copies([("t", "a", b"f", 1.0)])


def test_clearing_forgets_every_copy_and_says_how_many(journal: Journal) -> None:
    journal.keep_copies([(f"t{i}", "a", b"f", 1.0) for i in range(7)])
    journal.commit()
    assert journal.clear_copies() == 7
    assert not journal.in_tx and journal.copy_counts() == {}
    assert journal.clear_copies() == 0
