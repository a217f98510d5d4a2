"""The journal on its own: a real sqlite file in a temp dir."""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.node.journal import FILENAME, Journal, JournalError


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(str(tmp_path / "data"))
    yield j
    j.close()


def test_add_is_false_for_an_id_already_there(journal: Journal) -> None:
    assert journal.add("t1", b"c", b"frame", 1.0)
    assert not journal.add("t1", b"other", b"frame2", 2.0)
    journal.commit()
    assert journal.get("t1") == ("RECEIVED", None)


def test_finish_stores_the_result_and_the_task_is_no_longer_open(journal: Journal) -> None:
    journal.add("t1", b"c", b"frame", 1.0)
    journal.add("t2", b"c", b"frame", 2.0)
    journal.finish("t1", "SUCCESS", b"result", 3.0)
    journal.commit()
    assert journal.get("t1") == ("SUCCESS", b"result")
    assert [r.task_id for r in journal.unfinished()] == ["t2"]


def test_unfinished_is_oldest_first_and_keeps_what_recovery_needs(journal: Journal) -> None:
    journal.add("late", b"c2", b"f2", 5.0)
    journal.add("early", b"c1", b"f1", 1.0)
    journal.started("late")
    journal.commit()
    rows = journal.unfinished()
    assert [(r.task_id, r.client, r.frame, r.state) for r in rows] == [
        ("early", b"c1", b"f1", "RECEIVED"), ("late", b"c2", b"f2", "STARTED")]


def test_update_frame_is_what_a_retry_runs(journal: Journal) -> None:
    journal.add("t", b"c", b"v1", 1.0)
    journal.started("t")
    journal.update_frame("t", b"v2")
    journal.commit()
    assert journal.unfinished()[0][2:4] == (b"v2", "RECEIVED")


def test_remove_forgets_open_tasks_but_never_results(journal: Journal) -> None:
    journal.add("open", b"c", b"f", 1.0)
    journal.add("done", b"c", b"f", 1.0)
    journal.finish("done", "SUCCESS", b"r", 2.0)
    journal.remove(["open", "done"])
    journal.commit()
    assert journal.get("open") is None
    assert journal.get("done") == ("SUCCESS", b"r")


def test_replace_overwrites_a_row(journal: Journal) -> None:
    journal.add("t", b"c", b"f", 1.0)
    journal.finish("t", "FAILURE", b"r", 2.0)
    journal.replace("t", b"c2", b"f2", 3.0)
    journal.commit()
    assert journal.get("t") == ("RECEIVED", None)


def test_expire_deletes_only_old_results(journal: Journal) -> None:
    for i in range(5):
        journal.add(f"t{i}", b"c", b"f", float(i))
        if i < 4:
            journal.finish(f"t{i}", "SUCCESS", b"r", float(i))
    journal.commit()
    assert journal.expire(before=2.5) == 3        # t0, t1, t2
    assert journal.counts() == {"open": 1, "results": 1}
    assert journal.get("t3") is not None and journal.get("t4") is not None


def test_expire_is_bounded_per_call(journal: Journal) -> None:
    for i in range(30):
        journal.add(f"t{i}", b"c", b"f", 0.0)
        journal.finish(f"t{i}", "SUCCESS", b"r", 0.0)
    journal.commit()
    assert journal.expire(before=1.0, limit=10) == 10
    assert journal.counts()["results"] == 20


def test_uncommitted_writes_are_gone_after_a_crash(tmp_path: Path) -> None:
    d = str(tmp_path / "data")

    def crash_midway() -> None:
        j = Journal(d)
        j.add("kept", b"c", b"f", 1.0)
        j.commit()
        j.add("lost", b"c", b"f", 2.0)     # never committed
        os._exit(0)                          # no close, no cleanup: as SIGKILL

    p = multiprocessing.get_context("fork").Process(target=crash_midway)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    j = Journal(d)                           # the lock died with the process
    try:
        assert [r.task_id for r in j.unfinished()] == ["kept"]
    finally:
        j.close()


def test_a_second_journal_on_the_same_dir_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError, match="in use by another node"):
        Journal(journal.directory)


def test_a_journal_from_a_newer_mesh_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "data"
    Journal(str(d)).close()
    db = sqlite3.connect(d / FILENAME)
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer mesh"):
        Journal(str(d))


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / FILENAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(str(d))


def test_a_data_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match="cannot create data dir"):
        Journal(str(blocker / "data"))


def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    j = Journal(d)
    j.add("t", b"c", b"f", 1.0)
    j.close()
    j = Journal(d)
    try:
        assert j.get("t") is not None
    finally:
        j.close()


def test_a_schema_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    db = sqlite3.connect(d / FILENAME)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE tasks (task_id TEXT PRIMARY KEY, client BLOB NOT NULL, frame BLOB NOT NULL,
            state TEXT NOT NULL, received REAL NOT NULL, result BLOB, finished REAL) WITHOUT ROWID;
        INSERT INTO tasks VALUES ('open', x'63', x'66', 'RECEIVED', 1.0, NULL, NULL);
        INSERT INTO tasks VALUES ('done', x'63', x'66', 'SUCCESS', 1.0, x'72', 2.0);
    """)
    db.commit()
    db.close()
    j = Journal(str(d))
    try:
        assert [r.task_id for r in j.unfinished()] == ["open"]
        assert j.get("done") == ("SUCCESS", b"r")
        assert not j.add("done", b"c", b"f", 3.0)       # still recognised as known
    finally:
        j.close()
