"""Task copies kept on disk at a backup (mesh/node/copies.py): the ``copies`` table.

A backup keeps up to ``queue_memory`` copies of other nodes' tasks in memory; beyond
that window a copy is written here instead, one row per task id::

    task_id   the id (primary key: a copy sent again replaces the row)
    holder    the node that holds the task (the one whose death makes this node run it)
    frame     the Submit, as the holder sent it
    received  unix time this node received the copy (a takeover runs them oldest first)

The rows are written in the node's batched transaction, like the results it keeps
for others (committed within 2 ms: mesh/node/copies.py). They go when the node starts
again (``clear_copies``), as the copies in its memory do: see mesh/node/copies.py. An index on ``(holder, received)`` reads one holder's copies back in chunks
when it dies. Kept in the sqlite journal only (``Journal.spills``).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from mesh.node.sql_rows import SqlRows

IN_CHUNK = 500      # ids per ``IN (...)`` (sqlite allows 32,766 variables; small is quick)

SCHEMA = """
CREATE TABLE IF NOT EXISTS copies (
    task_id  TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    frame    BLOB NOT NULL,
    received REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS copies_holder ON copies (holder, received);
"""


class CopyRows(SqlRows):
    """The ``copies`` table's SQL, for :class:`mesh.node.sqlite_journal.SqliteJournal`."""

    def _copies_schema(self) -> None:
        self.db.executescript(SCHEMA)

    def copy_holders(self, task_ids: Sequence[str]) -> dict[str, str]:
        """``task id -> holder`` of those of ``task_ids`` kept on disk here."""
        out: dict[str, str] = {}
        try:
            for s in range(0, len(task_ids), IN_CHUNK):
                part = task_ids[s:s + IN_CHUNK]
                out.update(self.db.execute(
                    f"SELECT task_id, holder FROM copies WHERE task_id IN "
                    f"({','.join('?' * len(part))})", part).fetchall())
        except sqlite3.Error as e:
            raise self._error(e) from e
        return out

    def keep_copies(self, rows: Sequence[tuple[str, str, bytes, float]]) -> None:
        """``(task_id, holder, frame, received)``: kept on disk (over an older row)."""
        try:
            self._begin()
            self.db.executemany("INSERT OR REPLACE INTO copies (task_id, holder, frame, received) "
                                "VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as e:
            raise self._error(e) from e
        self.writes += len(rows)

    def drop_copies(self, task_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Forget the copies of these ids kept on disk; ``(task_id, holder)`` of those
        there were."""
        ids = list(task_ids)
        gone = list(self.copy_holders(ids).items())
        if gone:
            try:
                self._begin()
                self.db.executemany("DELETE FROM copies WHERE task_id=?", [(t,) for t, _ in gone])
            except sqlite3.Error as e:
                raise self._error(e) from e
            self.writes += len(gone)
        return gone

    def copies_by_holder(self, holder: str, limit: int) -> list[tuple[str, bytes, float]]:
        """The oldest ``limit`` copies of ``holder``'s tasks: ``(task_id, frame, received)``."""
        try:
            return [(r[0], bytes(r[1]), r[2]) for r in self.db.execute(
                "SELECT task_id, frame, received FROM copies WHERE holder=? "
                "ORDER BY received LIMIT ?", (holder, limit)).fetchall()]
        except sqlite3.Error as e:
            raise self._error(e) from e

    def clear_copies(self) -> int:
        """Forget every copy on disk (at start); how many there were. Commits."""
        try:
            n = int(self.db.execute("SELECT count(*) FROM copies").fetchone()[0])
            if n:
                self._begin()
                self.db.execute("DELETE FROM copies")
                self.commit()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return n

    def copy_counts(self) -> dict[str, int]:
        """``holder -> copies kept on disk``."""
        try:
            return {r[0]: int(r[1]) for r in self.db.execute(
                "SELECT holder, count(*) FROM copies GROUP BY holder").fetchall()}
        except sqlite3.Error as e:
            raise self._error(e) from e
