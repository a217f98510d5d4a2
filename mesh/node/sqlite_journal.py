"""The node's journal in sqlite (``Journal``, mesh/node/journal.py, is the interface).

A task is written here before the node acknowledges it, and its result is written
before the node sends it, so a node killed with SIGKILL and started again on the same
data dir runs every task it had accepted and not finished, and still serves the
results of the ones it had finished.

Writes are batched: the node writes what one pass of its event loop produced (many
intakes and results under load) inside one transaction, and commits it before any ACK
or RESULT of that pass leaves (``Node._flush``). sqlite runs in WAL mode with
``synchronous=NORMAL``: a commit is an append to the WAL with no fsync, which survives
the node process dying (SIGKILL, a crash, an OOM kill) but not the machine losing
power in the same instant (then the tasks are still held by their clients, which
resend them when the node is declared dead). ``durable=True`` (``synchronous=FULL``)
fsyncs every commit, for those who want the journal to survive power loss too.

A row per task id::

    task_id   the id (primary key: a resend of the same id is recognised)
    client    the routing id of the owner's link, to reply to after a restart
    frame     the Submit as it must run (a retry rewrites retries and eta)
    state     RECEIVED, STARTED (acks_late=False tasks, before they start) or final
    received  unix time of intake
    disk      1 while the task waits on disk only, not in the node's memory (a deep
              backlog: mesh/node/spill.py); a partial index keeps those rows in order
    backup    the node that kept its copy when it went to disk ('' none or unknown)
    finished  unix time of the result (results expire after ``result_expires``)

and in the results table (a row per finished id, in finishing order) three more:

    task      the rowid of the task's row in tasks (NULL for a copy: ``copy`` below,
              found by its id in a partial index of the copies)
    peer      the node that keeps the other copy of the result (mesh/node/replicas.py)
    copy      1 when another node ran the task and this one keeps the copy (no row in
              tasks then); the dashboard's history counts only what this node ran

Schema 4 finds a result by its task's row (``task``, an index of integers that grow
as tasks arrive: its inserts land on its last pages) rather than by a UNIQUE index of
the ids in results (random ids: every finish dirtied a random page of that index, which
the next commit wrote to the WAL). Only copies (``copy=1``, no task row) are indexed by
id, in a partial index. Measured (bench/journal_layout.py: 10,000 adds and finishes in
batches of 64): 17.8 us of CPU and 6.1 KiB of WAL per task against 22.9 us and 10.9 KiB
with schema 3 over 100,000 finished tasks, 23.7 against 41.4 us over 1,000,000.

Errors from sqlite (a full disk, a read-only file, a corrupt database) become
:class:`JournalError` with a message that says what happened and where.

The SQL of a deep backlog's tasks on disk is in mesh/node/spill_journal.py, that of
the copies a backup keeps in mesh/node/copy_journal.py, and what all three share (the
transaction of a loop pass, errors in words) in mesh/node/sql_rows.py. (Over 500
lines: the schema's upgrades live with the rest of the tasks' and results' SQL.)
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence

from mesh.node.checkpoint import BACKSTOP_PAGES, Checkpointer
from mesh.node.copy_journal import CopyRows
from mesh.node.journal import DataDirInUse, JournalError, Row, Stored
from mesh.node.spill_journal import SpillRows
from mesh.node.sql_rows import explain as _explain
from mesh.security.files import private_dir, private_file
from mesh.security.text import safe_logger

log = safe_logger("mesh.journal")

SCHEMA_VERSION = 4
FILENAME = "journal.sqlite3"
LOCKNAME = "node.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id  TEXT NOT NULL UNIQUE,
    client   BLOB NOT NULL,
    frame    BLOB NOT NULL,
    state    TEXT NOT NULL,
    received REAL NOT NULL,
    disk     INTEGER NOT NULL DEFAULT 0,
    backup   TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS results (
    task     INTEGER,
    task_id  TEXT NOT NULL,
    state    TEXT NOT NULL,
    result   BLOB NOT NULL,
    finished REAL NOT NULL,
    peer     TEXT NOT NULL DEFAULT '',
    copy     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revoked (task_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_at ON revoked (at);
"""

# after the migrations (an older results table has no ``task`` column)
_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS results_task ON results (task);
CREATE UNIQUE INDEX IF NOT EXISTS results_copy ON results (task_id) WHERE copy=1;
CREATE INDEX IF NOT EXISTS tasks_disk ON tasks (disk) WHERE disk=1;
"""

# a result of this id: of its task's row, or a copy of one another node ran
_RESULT_OF = ("(SELECT r.state, r.result FROM tasks t JOIN results r ON r.task=t.rowid "
              "WHERE t.task_id=?1 UNION ALL SELECT state, result FROM results "
              "WHERE task_id=?1 AND copy=1)")


CACHE_KIB = 2048    # sqlite's page cache per journal connection (PRAGMA cache_size)

LOCK_WAIT = 2.0     # s a starting node waits for the data dir lock: the children of a node
                    # killed a moment ago may still be going away


def _flock(fd: int, wait: float) -> bool:
    """Take an exclusive flock on ``fd``, trying for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)




class SqliteJournal(CopyRows, SpillRows):
    """One node's journal in a sqlite file in its data dir. Not thread-safe: the node's
    event loop is its only user."""

    path: str

    def __init__(self, directory: str, durable: bool = False):
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self._lockfd = -1
        self._in_tx = False
        self._lost: str | None = None
        self.writes = 0            # statements since the last commit
        self.commits = 0
        self._changes = 0          # rows changed by the commits the checkpointer knows of
        # checkpoints off the node's loop (mesh/node/checkpoint.py), started once open
        self.checkpointer = Checkpointer(self.path)
        try:
            private_dir(directory)
        except OSError as e:
            raise JournalError(f"cannot create data dir {directory}: {e.strerror}") from e
        self._lock()
        try:
            private_file(self.path)             # 0600 before sqlite makes its -wal and -shm
        except OSError as e:
            self._unlock()
            raise JournalError(f"cannot create {self.path}: {e.strerror}") from e
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self.db.execute("PRAGMA busy_timeout=2000")
            # NORMAL locking (not EXCLUSIVE): the node is the only writer (the flock
            # above), and readers (the dashboard, mesh/web/history.py) can open the
            # file while it runs. Measured: about 4 us more per commit.
            # 2 MiB of page cache (sqlite's default size): with task ids in time order
            # the pages in use are the ends of the b-trees; a larger cache only kept
            # pages written once (64 MiB before: 5 MiB more RSS at the headline's peak,
            # ~70 MiB more at 300k queued, and no faster; docs/performance.md round 6)
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.db.executescript(_SCHEMA)
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
            if "peer" not in cols and "task_id" in cols:   # the node holding the other copy (mesh/node/replicas.py)
                self.db.execute("ALTER TABLE results ADD COLUMN peer TEXT NOT NULL DEFAULT ''")
            if "copy" not in cols and "task_id" in cols:   # 1: another node ran it
                self.db.execute("ALTER TABLE results ADD COLUMN copy INTEGER NOT NULL DEFAULT 0")
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) == 1:
                self._migrate_from_1()
            elif int(row[0]) == 2:
                self._migrate_from_2()
            elif int(row[0]) > SCHEMA_VERSION:
                raise JournalError(f"{self.path} was written by a newer mesh (schema {row[0]}, "
                                   f"this one reads {SCHEMA_VERSION})")
            tcols = {r[1] for r in self.db.execute("PRAGMA table_info(tasks)")}
            if "disk" not in tcols:  # 1: waiting on disk only (mesh/node/spill.py)
                self.db.execute("ALTER TABLE tasks ADD COLUMN disk INTEGER NOT NULL DEFAULT 0")
            if "backup" not in tcols:
                self.db.execute("ALTER TABLE tasks ADD COLUMN backup TEXT NOT NULL DEFAULT ''")
            self._results_by_task()
            # tasks_disk: only the rows on disk are in it, in arrival (rowid) order,
            # nothing to keep up to date for the rest
            self.db.executescript(_INDEXES)
            self._copies_schema()    # copies kept for other nodes (mesh/node/copy_journal.py)
        except sqlite3.Error as e:
            self._unlock()
            raise JournalError(f"cannot open the journal: {_explain(e, self.path)}") from e
        if self.checkpointer.start():
            try:
                self.db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            except sqlite3.Error as e:
                log.warning("journal: could not leave checkpoints to their thread: %s", e)

    def _migrate_from_1(self) -> None:
        """Version 1 kept results in the tasks rows (an UPDATE per result, which cost
        more than an INSERT into a table of their own)."""
        db = self.db
        db.execute("BEGIN")
        db.execute("ALTER TABLE tasks RENAME TO tasks1")
        db.execute("CREATE TABLE tasks (task_id TEXT NOT NULL UNIQUE, client BLOB NOT NULL, "
                   "frame BLOB NOT NULL, state TEXT NOT NULL, received REAL NOT NULL, "
                   "disk INTEGER NOT NULL DEFAULT 0, backup TEXT NOT NULL DEFAULT '')")
        db.execute("INSERT INTO tasks (task_id, client, frame, state, received) SELECT "
                   "task_id, client, frame, state, received FROM tasks1 ORDER BY received")
        db.execute("INSERT INTO results (task, task_id, state, result, finished) "
                   "SELECT t.rowid, o.task_id, o.state, o.result, o.finished FROM tasks1 o "
                   "JOIN tasks t ON t.task_id=o.task_id WHERE o.finished IS NOT NULL "
                   "ORDER BY o.finished")
        db.execute("DROP TABLE tasks1")
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
        log.info("journal: %s upgraded from schema 1 to %d", self.path, SCHEMA_VERSION)

    def _migrate_from_2(self) -> None:
        """Version 2 kept tasks in a WITHOUT ROWID table: the rows live in the b-tree of
        the key, so a lookup near rows of 16 MiB read their overflow pages (4 to 15 ms a
        lookup, measured); a rowid table with an index of the ids costs the same
        whatever the rows hold (7 us)."""
        db = self.db
        db.execute("BEGIN")
        self._new_tasks_table()
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
        log.info("journal: %s upgraded from schema 2 to %d", self.path, SCHEMA_VERSION)

    def _migrate_from_3(self) -> None:
        """Version 3 found results by a UNIQUE index of the ids in results: a random
        page of it written per finish (see the module docstring)."""
        db = self.db
        db.execute("BEGIN")
        self._new_results_table()
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
        log.info("journal: %s upgraded from schema 3 to %d", self.path, SCHEMA_VERSION)

    def _results_by_task(self) -> None:
        """A results table of schema 2 or 3 (found by id), whatever the version says."""
        if "task" not in {r[1] for r in self.db.execute("PRAGMA table_info(results)")}:
            self._migrate_from_3()

    def _new_results_table(self) -> None:
        """Results of schema 2 or 3 (found by id) rebuilt in finishing order, each with
        its task's rowid; a result of ours whose task row is gone gets one back (a row
        with no frame, in its final state), so it is still found by id."""
        db = self.db
        cols = {r[1] for r in db.execute("PRAGMA table_info(results)")}
        peer = "r.peer" if "peer" in cols else "''"
        copy = "r.copy" if "copy" in cols else "0"
        db.execute(f"INSERT INTO tasks (task_id, client, frame, state, received) "
                   f"SELECT r.task_id, x'', x'', r.state, r.finished FROM results r "
                   f"WHERE {copy}=0 AND NOT EXISTS "
                   f"(SELECT 1 FROM tasks t WHERE t.task_id=r.task_id) ORDER BY r.rowid")
        db.execute("ALTER TABLE results RENAME TO results3")
        db.execute("CREATE TABLE results (task INTEGER, task_id TEXT NOT NULL, "
                   "state TEXT NOT NULL, result BLOB NOT NULL, finished REAL NOT NULL, "
                   "peer TEXT NOT NULL DEFAULT '', copy INTEGER NOT NULL DEFAULT 0)")
        db.execute(f"INSERT INTO results (task, task_id, state, result, finished, peer, copy) "
                   f"SELECT CASE WHEN {copy}=1 THEN NULL ELSE t.rowid END, r.task_id, r.state, "
                   f"r.result, r.finished, {peer}, {copy} "
                   f"FROM results3 r LEFT JOIN tasks t ON t.task_id=r.task_id ORDER BY r.rowid")
        db.execute("DROP TABLE results3")

    def _new_tasks_table(self) -> None:
        db = self.db
        db.execute("CREATE TABLE tasks3 (task_id TEXT NOT NULL UNIQUE, client BLOB NOT NULL, "
                   "frame BLOB NOT NULL, state TEXT NOT NULL, received REAL NOT NULL, "
                   "disk INTEGER NOT NULL DEFAULT 0, backup TEXT NOT NULL DEFAULT '')")
        db.execute("INSERT INTO tasks3 (task_id, client, frame, state, received) SELECT "
                   "task_id, client, frame, state, received FROM tasks ORDER BY received")
        db.execute("DROP TABLE tasks")
        db.execute("ALTER TABLE tasks3 RENAME TO tasks")

    # -- the data dir lock ------------------------------------------------------------
    def _lock(self) -> None:
        """One node per data dir: a second one would run the same tasks twice."""
        lockpath = os.path.join(self.directory, LOCKNAME)
        try:
            fd = os.open(lockpath, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise JournalError(f"cannot open {lockpath}: {e.strerror}") from e
        if not _flock(fd, LOCK_WAIT):
            holder = ""
            try:
                holder = os.pread(fd, 100, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            raise DataDirInUse(f"data dir {self.directory} is in use by another node"
                               + (f" (pid {holder})" if holder else "")
                               + "; give each node its own --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lockfd = fd

    def _unlock(self) -> None:
        if self._lockfd >= 0:
            os.close(self._lockfd)
            self._lockfd = -1

    def release_memory(self) -> bool:
        """Empty sqlite's page cache (``PRAGMA shrink_memory``): it fills as the
        journal is used, up to ``cache_size`` (``CACHE_KIB``), and is never given back
        otherwise. Pages are read again from the file (the OS's cache) as they are
        needed."""
        if self._in_tx:                     # a commit is due: after it
            return False
        try:
            self.db.execute("PRAGMA shrink_memory")
        except sqlite3.Error as e:
            log.debug("journal: shrink_memory failed: %s", e)
        return True

    def claim(self, mesh: str) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='mesh'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('mesh', ?)", (mesh,))
                return None
        except sqlite3.Error as e:
            raise JournalError(f"cannot read the journal's mesh: {_explain(e, self.path)}") from e
        return None if row[0] == mesh else str(row[0])

    def close(self) -> None:
        self.checkpointer.stop()
        try:
            if self._in_tx:
                self.commit()
        except JournalError as e:
            log.error("journal: last commit failed at close: %s", e)
        try:
            self.db.close()
        except sqlite3.Error:
            pass
        self._unlock()

    # -- writes (batched: call commit() before telling anyone) -------------------------
    def add(self, task_id: str, client: bytes, frame: bytes, received: float) -> bool:
        """Record an accepted task; False if the id is already in the journal (held,
        or finished: here, or on a node this one backs up)."""
        return self._write("INSERT OR IGNORE INTO tasks (task_id, client, frame, state, received) "
                           "SELECT ?, ?, ?, 'RECEIVED', ? WHERE NOT EXISTS "
                           "(SELECT 1 FROM results WHERE task_id=? AND copy=1)",
                           (task_id, client, frame, received, task_id)) == 1

    def add_spilled(self, task_id: str, client: bytes, frame: bytes, received: float) -> bool:
        """``add``, marked as waiting on disk only (read back with ``spilled``)."""
        return self._write("INSERT OR IGNORE INTO tasks (task_id, client, frame, state, received, "
                           "disk) SELECT ?, ?, ?, 'RECEIVED', ?, 1 WHERE NOT EXISTS "
                           "(SELECT 1 FROM results WHERE task_id=? AND copy=1)",
                           (task_id, client, frame, received, task_id)) == 1

    def replace(self, task_id: str, client: bytes, frame: bytes, received: float) -> None:
        """Record an accepted task, over whatever an older row of that id said."""
        self._write("DELETE FROM results WHERE task=(SELECT rowid FROM tasks WHERE task_id=?)",
                    (task_id,))
        self._write("DELETE FROM results WHERE task_id=? AND copy=1", (task_id,))
        self._write("INSERT OR REPLACE INTO tasks (task_id, client, frame, state, received) "
                    "VALUES (?, ?, ?, 'RECEIVED', ?)", (task_id, client, frame, received))

    def started(self, task_id: str) -> None:
        self._write("UPDATE tasks SET state='STARTED' WHERE task_id=?", (task_id,))

    def update_frame(self, task_id: str, frame: bytes) -> None:
        """A retry: the task runs again with this Submit (retries + 1, a new eta)."""
        self._write("UPDATE tasks SET frame=?, state='RECEIVED' WHERE task_id=?", (frame, task_id))

    def finish(self, task_id: str, state: str, result: bytes, finished: float,
               peer: str = "") -> None:
        """The final result. Results are appended in the order they finish (rowid),
        which is what expiry walks; the task's row stays until its result expires, so
        a resend of the id is recognised by add(). A task with no row (none is known
        to finish so, but a result is never dropped) gets one, with no frame."""
        if self._write("INSERT OR REPLACE INTO results (task, task_id, state, result, finished, "
                       "peer) SELECT rowid, task_id, ?, ?, ?, ? FROM tasks WHERE task_id=?",
                       (state, result, finished, peer, task_id)) == 0:
            self._write("INSERT OR IGNORE INTO tasks (task_id, client, frame, state, received) "
                        "VALUES (?, x'', x'', ?, ?)", (task_id, state, finished))
            self._write("INSERT OR REPLACE INTO results (task, task_id, state, result, finished, "
                        "peer) SELECT rowid, task_id, ?, ?, ?, ? FROM tasks WHERE task_id=?",
                        (state, result, finished, peer, task_id))

    def remove(self, task_ids: Iterable[str]) -> None:
        """Forget tasks given back to their owners unstarted (they run elsewhere)."""
        for tid in task_ids:
            self._write("DELETE FROM tasks WHERE task_id=? AND NOT EXISTS "
                        "(SELECT 1 FROM results WHERE results.task=tasks.rowid) AND NOT EXISTS "
                        "(SELECT 1 FROM results WHERE task_id=? AND copy=1)", (tid, tid))

    def forget(self, task_id: str) -> bool:
        n = self._write("DELETE FROM results WHERE task=(SELECT rowid FROM tasks WHERE task_id=?)",
                        (task_id,))
        if n + self._write("DELETE FROM results WHERE task_id=? AND copy=1", (task_id,)) == 0:
            return False
        self._write("DELETE FROM tasks WHERE task_id=?", (task_id,))
        return True

    def revoke(self, task_ids: Iterable[str], at: float) -> None:
        """Remember revoked ids (a revoked task that arrives later is not run)."""
        for tid in task_ids:
            self._write("INSERT OR REPLACE INTO revoked VALUES (?, ?)", (tid, at))

    def copy_result(self, task_id: str, state: str, result: bytes, finished: float,
                    peer: str) -> None:
        """A result from a node this one backs up: a row in results (no task row; add()
        looks at results too, so the id is not run here again)."""
        self.copy_results([(task_id, state, result, finished, peer)])

    def copy_results(self, rows: Sequence[tuple[str, str, bytes, float, str]]) -> None:
        """(executemany: about a quarter less per row than an execute each, measured.)
        A copy is found by its id alone (``task`` is NULL, ``results_copy``): a second
        copy of an id is ignored; one of a task this node holds too marks it finished
        here (``unfinished``, ``spilled``), and a result of this node's own is served
        before it. (Looking up the task's row here too cost ~2 us per copy, measured.)"""
        try:
            self._begin()
            self.db.executemany(
                "INSERT OR IGNORE INTO results (task_id, state, result, finished, peer, copy) "
                "VALUES (?, ?, ?, ?, ?, 1)", rows)
        except sqlite3.Error as e:
            raise self._error(e) from e
        self.writes += len(rows)

    def results_of_peer(self, peer: str, after: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        """(No index on peer: this runs when a node is gone, a range scan by rowid.)"""
        try:
            return [(r[0], r[1], r[2], r[3]) for r in self.db.execute(
                "SELECT rowid, task_id, state, result FROM results WHERE rowid > ? AND peer = ? "
                "ORDER BY rowid LIMIT ?", (after, peer, limit)).fetchall()]
        except sqlite3.Error as e:
            raise JournalError(_explain(e, self.path)) from e

    def set_peer(self, task_ids: Iterable[str], peer: str) -> None:
        for tid in task_ids:
            if self._write("UPDATE results SET peer=? WHERE task=(SELECT rowid FROM tasks "
                           "WHERE task_id=?)", (peer, tid)) == 0:
                self._write("UPDATE results SET peer=? WHERE task_id=? AND copy=1", (peer, tid))

    def revoked_since(self, since: float, limit: int = 100_000) -> list[tuple[str, float]]:
        try:
            return [(r[0], r[1]) for r in self.db.execute(
                "SELECT task_id, at FROM revoked WHERE at >= ? ORDER BY at DESC LIMIT ?",
                (since, limit)).fetchall()][::-1]
        except sqlite3.Error as e:
            raise JournalError(_explain(e, self.path)) from e

    @property
    def in_tx(self) -> bool:
        """Writes are waiting for commit()."""
        return self._in_tx

    def commit(self) -> None:
        if not self._in_tx:
            return
        if self._lost is not None:           # sqlite rolled the transaction back already
            lost = self._lost
            self.rollback()
            raise JournalError(lost)
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self.rollback()
            raise self._error(e) from e
        self._in_tx = False
        self.writes = 0
        self.commits += 1
        changes = self.db.total_changes      # (a commit that changed no row, such as
        if changes != self._changes:         # the expiry's each second on an idle node,
            self._changes = changes          # added nothing to the WAL)
            self.checkpointer.written()

    def rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._in_tx = False
        self._lost = None
        self.writes = 0

    # -- reads ------------------------------------------------------------------------
    def get(self, task_id: str) -> Stored | None:
        try:
            row = self.db.execute("SELECT * FROM " + _RESULT_OF, (task_id,)).fetchone()
            if row is None:
                row = self.db.execute("SELECT state, NULL FROM tasks WHERE task_id=?",
                                      (task_id,)).fetchone()
        except sqlite3.Error as e:
            raise JournalError(_explain(e, self.path)) from e
        return Stored(row[0], row[1]) if row else None

    def frame(self, task_id: str) -> bytes | None:
        try:
            row = self.db.execute("SELECT frame FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        except sqlite3.Error as e:
            raise JournalError(_explain(e, self.path)) from e
        return bytes(row[0]) if row else None

    def unfinished(self) -> list[Row]:
        """Tasks accepted and not finished, oldest first (restart recovery): one scan
        at start, cheaper than an index of open tasks updated on every intake and
        result. Not the ones waiting on disk only (``spilled``): those are read back
        in order as the queue drains."""
        try:
            rows = self.db.execute(
                "SELECT task_id, client, frame, state, received FROM tasks WHERE disk=0 AND "
                "NOT EXISTS (SELECT 1 FROM results WHERE results.task=tasks.rowid) AND NOT EXISTS "
                "(SELECT 1 FROM results WHERE results.task_id=tasks.task_id AND copy=1) "
                "ORDER BY received").fetchall()
        except sqlite3.Error as e:
            raise JournalError(_explain(e, self.path)) from e
        return [Row(*r) for r in rows]

    def expire(self, before: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` of the oldest results (and their tasks) finished
        before ``before``; how many went. Results are in finishing order (rowid), so
        this is a range delete done inside sqlite, and nothing at all when the
        oldest result is still young."""
        try:
            first = self.db.execute("SELECT finished FROM results ORDER BY rowid LIMIT 1").fetchone()
            if first is None or first[0] >= before:
                upto = None
            else:
                row = self.db.execute(
                    "SELECT rowid FROM results WHERE rowid IN "
                    "(SELECT rowid FROM results ORDER BY rowid LIMIT ?) AND finished < ? "
                    "ORDER BY rowid DESC LIMIT 1", (limit, before)).fetchone()
                upto = row[0] if row else None
        except sqlite3.Error as e:
            raise JournalError(_explain(e, self.path)) from e
        n = 0
        if upto is not None:
            self._write("DELETE FROM tasks WHERE rowid IN "
                        "(SELECT task FROM results WHERE rowid <= ?)", (upto,))
            # a task held here too whose copied result expires (unless it has ours)
            self._write("DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM results "
                        "WHERE rowid <= ? AND copy=1) AND NOT EXISTS "
                        "(SELECT 1 FROM results r WHERE r.task=tasks.rowid)", (upto,))
            n = self._write("DELETE FROM results WHERE rowid <= ?", (upto,))
        self._write("DELETE FROM revoked WHERE task_id IN (SELECT task_id FROM revoked "
                    "WHERE at < ? LIMIT ?)", (before, limit))
        self.commit()
        return n

    def counts(self) -> dict[str, int]:
        try:
            tasks = self.db.execute("SELECT count(*) FROM tasks WHERE NOT EXISTS (SELECT 1 FROM "
                                    "results WHERE results.task=tasks.rowid) AND NOT EXISTS "
                                    "(SELECT 1 FROM results WHERE results.task_id=tasks.task_id "
                                    "AND copy=1)").fetchone()[0]
            results = self.db.execute("SELECT count(*) FROM results").fetchone()[0]
        except sqlite3.Error as e:
            raise JournalError(_explain(e, self.path)) from e
        return {"open": int(tasks), "results": int(results)}
