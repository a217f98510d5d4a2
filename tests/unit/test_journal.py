"""The journal on its own. The contract tests run over both implementations (a real
sqlite file in a temp dir, and the in-memory one); the rest are sqlite's own."""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.node.journal import Journal as AnyJournal
from mesh.node.journal import JournalError
from mesh.node.memory_journal import MemoryJournal
from mesh.node.sqlite_journal import FILENAME
from mesh.node.sqlite_journal import SqliteJournal as Journal


@pytest.fixture(params=["sqlite", "memory"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyJournal]:
    j: AnyJournal = Journal(str(tmp_path / "data")) if request.param == "sqlite" else MemoryJournal()
    yield j
    j.close()


@pytest.fixture
def sqlite_journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(str(tmp_path / "data"))
    yield j
    j.close()


def test_add_is_false_for_an_id_already_there(journal: AnyJournal) -> None:
    assert journal.add("t1", b"c", b"frame", 1.0)
    assert not journal.add("t1", b"other", b"frame2", 2.0)
    journal.commit()
    assert journal.get("t1") == ("RECEIVED", None)


def test_finish_stores_the_result_and_the_task_is_no_longer_open(journal: AnyJournal) -> None:
    journal.add("t1", b"c", b"frame", 1.0)
    journal.add("t2", b"c", b"frame", 2.0)
    journal.finish("t1", "SUCCESS", b"result", 3.0)
    journal.commit()
    assert journal.get("t1") == ("SUCCESS", b"result")
    assert [r.task_id for r in journal.unfinished()] == ["t2"]


def test_unfinished_is_oldest_first_and_keeps_what_recovery_needs(journal: AnyJournal) -> None:
    journal.add("late", b"c2", b"f2", 5.0)
    journal.add("early", b"c1", b"f1", 1.0)
    journal.started("late")
    journal.commit()
    rows = journal.unfinished()
    assert [(r.task_id, r.client, r.frame, r.state) for r in rows] == [
        ("early", b"c1", b"f1", "RECEIVED"), ("late", b"c2", b"f2", "STARTED")]


def test_update_frame_is_what_a_retry_runs(journal: AnyJournal) -> None:
    journal.add("t", b"c", b"v1", 1.0)
    journal.started("t")
    journal.update_frame("t", b"v2")
    journal.commit()
    assert journal.unfinished()[0][2:4] == (b"v2", "RECEIVED")


def test_remove_forgets_open_tasks_but_never_results(journal: AnyJournal) -> None:
    journal.add("open", b"c", b"f", 1.0)
    journal.add("done", b"c", b"f", 1.0)
    journal.finish("done", "SUCCESS", b"r", 2.0)
    journal.remove(["open", "done"])
    journal.commit()
    assert journal.get("open") is None
    assert journal.get("done") == ("SUCCESS", b"r")


def test_replace_overwrites_a_row(journal: AnyJournal) -> None:
    journal.add("t", b"c", b"f", 1.0)
    journal.finish("t", "FAILURE", b"r", 2.0)
    journal.replace("t", b"c2", b"f2", 3.0)
    journal.commit()
    assert journal.get("t") == ("RECEIVED", None)


def test_expire_deletes_only_old_results(journal: AnyJournal) -> None:
    for i in range(5):
        journal.add(f"t{i}", b"c", b"f", float(i))
        if i < 4:
            journal.finish(f"t{i}", "SUCCESS", b"r", float(i))
    journal.commit()
    assert journal.expire(before=2.5) == 3        # t0, t1, t2
    assert journal.counts() == {"open": 1, "results": 1}
    assert journal.get("t3") is not None and journal.get("t4") is not None


def test_expire_is_bounded_per_call(journal: AnyJournal) -> None:
    for i in range(30):
        journal.add(f"t{i}", b"c", b"f", 0.0)
        journal.finish(f"t{i}", "SUCCESS", b"r", 0.0)
    journal.commit()
    assert journal.expire(before=1.0, limit=10) == 10
    assert journal.counts()["results"] == 20


def test_a_finished_id_is_still_known_to_add(journal: AnyJournal) -> None:
    journal.add("t", b"c", b"f", 1.0)
    journal.finish("t", "SUCCESS", b"r", 2.0)
    journal.commit()
    assert not journal.add("t", b"c", b"f", 3.0)     # a resend gets the stored result
    assert journal.get("t") == ("SUCCESS", b"r")


def test_revokes_are_kept_and_expire(journal: AnyJournal) -> None:
    journal.revoke(["a", "b"], 10.0)
    journal.revoke(["c"], 20.0)
    journal.commit()
    assert journal.revoked_since(0.0) == [("a", 10.0), ("b", 10.0), ("c", 20.0)]
    assert journal.revoked_since(15.0) == [("c", 20.0)]
    assert journal.revoked_since(0.0, limit=1) == [("c", 20.0)]
    journal.expire(before=15.0)
    assert journal.revoked_since(0.0) == [("c", 20.0)]


def test_the_memory_journal_keeps_a_bounded_number_of_results() -> None:
    j = MemoryJournal(max_results=3, max_bytes=1000)
    for i in range(5):
        j.add(f"t{i}", b"c", b"f", 0.0)
        j.finish(f"t{i}", "SUCCESS", b"r", float(i))
    assert j.counts() == {"open": 0, "results": 3}
    assert j.get("t1") is None and j.get("t2") == ("SUCCESS", b"r")   # the oldest went first
    assert j.dropped == 2


def test_the_memory_journal_keeps_a_bounded_number_of_result_bytes() -> None:
    j = MemoryJournal(max_results=100, max_bytes=250)
    for i in range(5):
        j.finish(f"t{i}", "SUCCESS", b"x" * 100, float(i))
    assert j.counts()["results"] == 2
    j.finish("t1", "SUCCESS", b"y" * 10, 9.0)     # a result stored again replaces the old one
    assert j.counts()["results"] == 3 and j.get("t1") == ("SUCCESS", b"y" * 10)


def test_the_memory_journal_keeps_a_bounded_number_of_revokes() -> None:
    j = MemoryJournal(max_revoked=2)
    j.revoke(["a", "b", "c"], 1.0)
    assert [t for t, _ in j.revoked_since(0.0)] == ["b", "c"]


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


def test_a_second_journal_on_the_same_dir_is_refused(sqlite_journal: Journal) -> None:
    journal = sqlite_journal
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


def test_a_schema_2_journal_is_upgraded_to_a_rowid_table(tmp_path: Path) -> None:
    # schema 2 kept tasks WITHOUT ROWID: a lookup near 16 MiB rows read their overflow
    # pages (4 to 15 ms); in schema 3 the ids have an index of their own, and a lookup
    # costs the same whatever the rows hold
    d = tmp_path / "data"
    d.mkdir()
    db = sqlite3.connect(d / FILENAME)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '2');
        CREATE TABLE tasks (task_id TEXT PRIMARY KEY, client BLOB NOT NULL, frame BLOB NOT NULL,
            state TEXT NOT NULL, received REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE results (task_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
            result BLOB NOT NULL, finished REAL NOT NULL);
        CREATE TABLE revoked (task_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
        INSERT INTO tasks VALUES ('open', x'63', x'66', 'RECEIVED', 2.0);
        INSERT INTO tasks VALUES ('older', x'63', x'66', 'RECEIVED', 1.0);
        INSERT INTO tasks VALUES ('done', x'63', x'66', 'RECEIVED', 1.5);
        INSERT INTO results VALUES ('done', 'SUCCESS', x'72', 3.0);
    """)
    db.commit()
    db.close()
    j = Journal(str(d))
    try:
        assert [r.task_id for r in j.unfinished()] == ["older", "open"]
        assert j.get("done") == ("SUCCESS", b"r")
        assert not j.add("open", b"c", b"f", 3.0)        # ids stay unique
        sql = j.db.execute("SELECT sql FROM sqlite_master WHERE name='tasks'").fetchone()[0]
        assert "WITHOUT ROWID" not in sql and "UNIQUE" in sql
        assert j.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "4"
        plan = " ".join(str(r) for r in j.db.execute(
            "EXPLAIN QUERY PLAN SELECT state FROM tasks WHERE task_id=?", ("x",)))
        assert "USING INDEX" in plan                     # the id's own index, not the rows
    finally:
        j.close()


def test_the_journal_and_its_data_dir_are_private(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    (d / FILENAME).touch(mode=0o644)                    # an older node's file
    j = Journal(str(d))
    try:
        j.add("t", b"c", b"f", 1.0)
        j.commit()
        assert oct(os.stat(d).st_mode & 0o777) == oct(0o700)
        for f in d.iterdir():
            assert oct(f.stat().st_mode & 0o777) == oct(0o600), f
    finally:
        j.close()


def test_a_fresh_journal_keeps_tasks_in_a_rowid_table(sqlite_journal: Journal) -> None:
    sql = sqlite_journal.db.execute("SELECT sql FROM sqlite_master WHERE name='tasks'").fetchone()[0]
    assert "WITHOUT ROWID" not in sql
    plan = " ".join(str(r) for r in sqlite_journal.db.execute(
        "EXPLAIN QUERY PLAN SELECT state FROM tasks WHERE task_id=?", ("x",)))
    assert "USING INDEX" in plan


# ---- results of tasks another node ran (this node is their backup) -----------------

def test_a_copied_result_is_served_and_keeps_the_id_from_running_again(journal: AnyJournal) -> None:
    journal.copy_result("t1", "SUCCESS", b"r1", 2.0, "h")
    journal.copy_result("t1", "FAILURE", b"late", 3.0, "h")        # the first one stays
    journal.commit()
    assert journal.get("t1") == ("SUCCESS", b"r1")
    assert not journal.add("t1", b"c", b"f1", 4.0)           # finished on the holder
    assert journal.add("t2", b"c", b"f2", 4.0)
    journal.commit()
    assert [r.task_id for r in journal.unfinished()] == ["t2"]
    assert journal.counts() == {"open": 1, "results": 1}


def test_copied_results_in_one_call_are_kept_as_one_at_a_time(journal: AnyJournal) -> None:
    journal.copy_result("t0", "SUCCESS", b"r0", 1.0, "h")
    journal.copy_results([("t1", "SUCCESS", b"r1", 2.0, "h"), ("t0", "FAILURE", b"late", 2.0, "h"),
                          ("t2", "FAILURE", b"r2", 3.0, "g")])      # the first of t0 stays
    journal.copy_results([])
    journal.commit()
    assert journal.get("t0") == ("SUCCESS", b"r0")
    assert journal.get("t1") == ("SUCCESS", b"r1") and journal.get("t2") == ("FAILURE", b"r2")
    assert not journal.add("t2", b"c", b"f", 4.0)              # finished on its holder
    assert [r[1] for r in journal.results_of_peer("g", 0, 10)] == ["t2"]
    assert journal.counts() == {"open": 0, "results": 3}


def test_copied_results_expire_like_our_own(journal: AnyJournal) -> None:
    journal.copy_result("old", "SUCCESS", b"r", 1.0, "h")
    journal.copy_result("new", "SUCCESS", b"r", 100.0, "h")
    journal.commit()
    assert journal.expire(50.0) == 1
    assert journal.get("old") is None and journal.get("new") == ("SUCCESS", b"r")


def test_results_know_where_their_other_copy_is(journal: AnyJournal) -> None:
    journal.add("t1", b"c", b"f", 1.0)
    journal.finish("t1", "SUCCESS", b"r1", 2.0, "node-b")      # ours, copied to node-b
    journal.copy_result("t2", "SUCCESS", b"r2", 3.0, "node-b")  # node-b's, copied here
    journal.copy_result("t3", "FAILURE", b"r3", 4.0, "node-c")
    journal.finish("t4", "SUCCESS", b"r4", 5.0)                 # kept alone
    journal.commit()
    rows = journal.results_of_peer("node-b", 0, 10)
    assert [(r[1], r[2], r[3]) for r in rows] == [("t1", "SUCCESS", b"r1"), ("t2", "SUCCESS", b"r2")]
    assert [r[1] for r in journal.results_of_peer("node-b", rows[0][0], 10)] == ["t2"]
    assert [r[1] for r in journal.results_of_peer("node-b", 0, 1)] == ["t1"]
    assert [r[1] for r in journal.results_of_peer("", 0, 10)] == ["t4"]
    journal.set_peer(["t1", "t2"], "node-d")
    journal.commit()
    assert journal.results_of_peer("node-b", 0, 10) == []
    assert [r[1] for r in journal.results_of_peer("node-d", 0, 10)] == ["t1", "t2"]


def test_a_journal_without_the_peer_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "d"
    j = Journal(str(path))
    j.close()
    db = sqlite3.connect(str(path / FILENAME))
    db.executescript("DROP TABLE results; CREATE TABLE results (task_id TEXT NOT NULL UNIQUE, "
                     "state TEXT NOT NULL, result BLOB NOT NULL, finished REAL NOT NULL); "
                     "INSERT INTO results VALUES ('old', 'SUCCESS', x'01', 1.0);")
    db.commit()
    db.close()
    j = Journal(str(path))
    try:
        assert [r[1] for r in j.results_of_peer("", 0, 10)] == ["old"]
    finally:
        j.close()


def test_checkpoints_run_on_their_own_thread_not_in_the_nodes_commits(tmp_path: Path) -> None:
    """The node's connection leaves WAL checkpoints to the checkpoint thread (a commit
    that checkpoints a large journal stalled the node for seconds), and what was
    committed is all there after a reopen."""
    import time

    j = Journal(str(tmp_path))
    assert j.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 1000
    for i in range(3000):
        assert j.add(f"t{i}", b"c", b"x" * 200, 1.0)
        if i % 100 == 99:
            j.commit()
    deadline = time.monotonic() + 30
    while j.checkpointer.checkpoints == 0:
        assert time.monotonic() < deadline, "no checkpoint by the checkpoint thread"
        time.sleep(0.01)
    j.close()
    again = Journal(str(tmp_path))
    try:
        assert len(again.unfinished()) == 3000
    finally:
        again.close()


def test_a_schema_3_journal_is_upgraded_and_finds_every_result(tmp_path: Path) -> None:
    # schema 3 (as main wrote it until round 4): results found by a UNIQUE index of the
    # ids in results; schema 4 finds them by their task's row, copies by a partial index
    d = tmp_path / "data"
    d.mkdir()
    db = sqlite3.connect(d / FILENAME)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '3');
        CREATE TABLE tasks (task_id TEXT NOT NULL UNIQUE, client BLOB NOT NULL,
            frame BLOB NOT NULL, state TEXT NOT NULL, received REAL NOT NULL,
            disk INTEGER NOT NULL DEFAULT 0, backup TEXT NOT NULL DEFAULT '');
        CREATE TABLE results (task_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
            result BLOB NOT NULL, finished REAL NOT NULL, peer TEXT NOT NULL DEFAULT '',
            copy INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE revoked (task_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
        CREATE INDEX revoked_at ON revoked (at);
        CREATE INDEX tasks_disk ON tasks (disk) WHERE disk=1;
        INSERT INTO tasks VALUES ('open', x'63', x'66', 'RECEIVED', 2.0, 0, '');
        INSERT INTO tasks VALUES ('done', x'63', x'66', 'RECEIVED', 1.5, 0, '');
        INSERT INTO tasks VALUES ('held', x'63', x'66', 'RECEIVED', 1.6, 0, '');
        INSERT INTO tasks VALUES ('ondisk', x'63', x'66', 'RECEIVED', 1.7, 1, 'b');
        INSERT INTO results VALUES ('done', 'SUCCESS', x'72', 3.0, 'p', 0);
        INSERT INTO results VALUES ('copied', 'FAILURE', x'78', 3.5, 'h', 1);
        INSERT INTO results VALUES ('held', 'SUCCESS', x'79', 3.6, 'h', 1);
        INSERT INTO results VALUES ('orphan', 'SUCCESS', x'7a', 3.7, '', 0);
    """)
    db.commit()
    db.close()
    j = Journal(str(d))
    try:
        assert j.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "4"
        assert j.get("done") == ("SUCCESS", b"r")
        assert j.get("copied") == ("FAILURE", b"x")
        assert j.get("held") == ("SUCCESS", b"y")
        assert j.get("orphan") == ("SUCCESS", b"z")
        assert j.get("open") == ("RECEIVED", None)
        for tid in ("open", "done", "copied", "held", "orphan"):
            assert not j.add(tid, b"c", b"f", 4.0), tid      # ids stay unique
        assert [r.task_id for r in j.unfinished()] == ["open"]
        assert [r.task_id for r in j.spilled(10)] == ["ondisk"]
        assert j.counts() == {"open": 2, "results": 4}
        # finishing order kept (expiry and results_of_peer walk it)
        assert [r[1] for r in j.results_of_peer("h", 0, 10)] == ["copied", "held"]
        assert j.expire(before=3.55) == 2                  # done, copied
        assert j.get("done") is None and j.get("copied") is None
        assert j.get("held") == ("SUCCESS", b"y")
    finally:
        j.close()


def test_a_result_is_found_through_its_tasks_row_not_an_index_of_ids(
        sqlite_journal: Journal) -> None:
    # the lever of schema 4: a finish writes no random page of an index of ids
    indexes = {r[0]: r[1] for r in sqlite_journal.db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='results'")}
    assert set(indexes) == {"results_task", "results_copy"}, indexes
    assert "WHERE copy=1" in indexes["results_copy"]
    sqlite_journal.add("t", b"c", b"f", 1.0)
    sqlite_journal.finish("t", "SUCCESS", b"r", 2.0)
    sqlite_journal.commit()
    assert sqlite_journal.db.execute("SELECT count(*) FROM results WHERE task IS NOT NULL "
                                     "AND copy=0").fetchone()[0] == 1
    assert sqlite_journal.get("t") == ("SUCCESS", b"r")


def test_a_result_of_a_task_with_no_row_is_kept_and_found(sqlite_journal: Journal) -> None:
    sqlite_journal.finish("never-added", "FAILURE", b"e", 2.0)
    sqlite_journal.commit()
    assert sqlite_journal.get("never-added") == ("FAILURE", b"e")
    assert not sqlite_journal.add("never-added", b"c", b"f", 3.0)
    assert sqlite_journal.unfinished() == []


def test_a_copied_result_of_a_task_held_here_too_finishes_it_here(
        sqlite_journal: Journal) -> None:
    # (copies are found by id alone, not through the task's row: both must agree)
    journal = sqlite_journal
    assert journal.add("t", b"c", b"f", 1.0)
    journal.copy_result("t", "FAILURE", b"theirs", 2.0, "h")
    journal.commit()
    assert journal.get("t") == ("FAILURE", b"theirs")
    assert journal.unfinished() == []
    assert journal.counts()["open"] == 0
    assert journal.expire(before=3.0) == 1
    assert journal.get("t") is None                      # the task's row went with it
    assert journal.add("t", b"c", b"f", 4.0)


def test_a_write_that_fills_the_disk_fails_the_whole_pass_and_its_commit_says_why(
        sqlite_journal: Journal) -> None:
    # on a full disk sqlite rolls back the whole transaction by itself: the writes of
    # the pass before the failed one are gone, those after it must not be committed on
    # their own, and commit() must fail with the reason (not "no transaction is active")
    j = sqlite_journal
    j.add("a", b"c", b"x" * 10, 1.0)
    j.commit()
    pages = j.db.execute("PRAGMA page_count").fetchone()[0]
    j.db.execute(f"PRAGMA max_page_count={pages + 2}")      # a disk with two pages left
    j.add("before", b"c", b"y" * 100, 2.0)
    with pytest.raises(JournalError, match="full"):
        j.add("big", b"c", b"z" * 100_000, 2.0)
    j.add("after", b"c", b"w" * 100, 2.0)
    with pytest.raises(JournalError, match="is full"):
        j.commit()
    assert [j.get(t) for t in ("before", "big", "after")] == [None, None, None]
    assert not j.in_tx
    j.db.execute("PRAGMA max_page_count=1073741823")          # room again: it goes on
    j.add("later", b"c", b"v" * 100, 3.0)
    j.commit()
    assert j.get("later") == ("RECEIVED", None)


def test_the_checkpoint_thread_sleeps_while_nothing_is_written_and_a_commit_wakes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle node's checkpoint thread does not wake every INTERVAL: its sleep doubles
    while nothing is written (up to IDLE_MAX), and a commit ends it: what was written
    is checkpointed then, not after the sleep."""
    import time

    from mesh.node import checkpoint

    monkeypatch.setattr(checkpoint, "INTERVAL", 0.01)
    monkeypatch.setattr(checkpoint, "IDLE_MAX", 60.0)
    j = Journal(str(tmp_path))
    try:
        cp = j.checkpointer
        start, rounds = time.monotonic(), cp.rounds
        time.sleep(1.0)
        idle_rounds = cp.rounds - rounds
        # every 10 ms, 100 or so (sleeps only get longer on a loaded machine); doubling
        # from 10 ms, at most 7 in a second
        assert idle_rounds <= 8, (idle_rounds, time.monotonic() - start)
        for n in range(2):           # each commit ends its sleep (not the sleep's end)
            # asleep, for 0.3 s or more (its sleep doubles from 10 ms after a commit)
            deadline = time.monotonic() + 20
            while not (cp._idle and cp.sleep >= 0.3):
                assert time.monotonic() < deadline, "the thread never slept 0.3 s idle"
                time.sleep(0.005)
            slept, done = cp.slept, cp.checkpoints
            assert j.add(f"t{n}", b"c", b"x" * 200, 1.0)
            j.commit()
            deadline = time.monotonic() + 20
            while cp.checkpoints == done:
                assert time.monotonic() < deadline, "no checkpoint after a commit"
                time.sleep(0.005)
            assert cp.slept == slept, "the checkpoint came when the sleep ran out"
        assert cp.woken >= 1
    finally:
        j.close()
    assert cp._thread is None
