"""Task copies kept on disk at a backup (mesh/node/copies.py): the ``copies`` table.

A backup keeps up to ``queue_memory`` copies of other nodes' tasks in memory; beyond
that window a copy is written here instead, one row per task id and holder::

    task_id   the id
    holder    the node that holds the task (the one whose death makes this node run it)
              (the key is both: two nodes that both hold an id, after a race, each
              have their copy; a copy one of them sends again replaces its own row)
    frame     the Submit, as the holder sent it
    received  unix time this node received the copy (a takeover runs them oldest first)

The rows are written in the node's batched transaction, like the results it keeps
for others (committed within 2 ms: mesh/node/copies.py). They go when the node starts
again (``clear_copies``), as the copies in its memory do: see mesh/node/copies.py. An index on ``(holder, received)`` reads one holder's copies back in chunks
when it dies. Kept in the sqlite journal only (``Journal.spills``).

Until 2026-12 the key was the task id alone: a second holder's copy replaced the
first one's, and its drop then left the first holder's task with no copy. A table of
that layout is dropped and made again when the journal opens (``_copies_schema``):
the rows go at every start anyway (``clear_copies``), so nothing is lost, and no
schema version is needed (a journal of this layout opened by an older mesh works:
it clears the table and keeps at most a row per id and holder, as before).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from mesh.node.sql_rows import SqlRows

IN_CHUNK = 500      # ids per ``IN (...)`` (sqlite allows 32,766 variables; small is quick)

SCHEMA = """
CREATE TABLE IF NOT EXISTS copies (
    task_id  TEXT NOT NULL,
    holder   TEXT NOT NULL,
    frame    BLOB NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (task_id, holder)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS copies_holder ON copies (holder, received);
"""


class CopyRows(SqlRows):
    """The ``copies`` table's SQL, for :class:`mesh.node.sqlite_journal.SqliteJournal`."""

    def _copies_schema(self) -> None:
        cols = {r[1]: r[5] for r in self.db.execute("PRAGMA table_info(copies)")}
        if cols and not cols.get("holder"):     # keyed by the id alone (before 2026-12)
            self.db.executescript("DROP INDEX IF EXISTS copies_holder; DROP TABLE copies;")
        self.db.executescript(SCHEMA)

    def copy_holders(self, task_ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(task id, holder)`` of the copies of ``task_ids`` kept on disk here (an id
        may have a copy for each of several holders)."""
        out: list[tuple[str, str]] = []
        try:
            for s in range(0, len(task_ids), IN_CHUNK):
                part = task_ids[s:s + IN_CHUNK]
                out += self.db.execute(
                    f"SELECT task_id, holder FROM copies WHERE task_id IN "
                    f"({','.join('?' * len(part))})", part).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return out

    def keep_copies(self, rows: Sequence[tuple[str, str, bytes, float]]) -> None:
        """``(task_id, holder, frame, received)``: kept on disk (over an older row of
        the same id and holder)."""
        try:
            self._begin()
            self.db.executemany("INSERT OR REPLACE INTO copies (task_id, holder, frame, received) "
                                "VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as e:
            raise self._error(e) from e
        self.writes += len(rows)

    def drop_copies(self, task_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Forget the copies of these ids kept on disk, every holder's; ``(task_id,
        holder)`` of those there were."""
        return self.drop_copy_pairs(self.copy_holders(list(task_ids)))

    def drop_copy_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Forget these ``(task_id, holder)`` copies kept on disk; those there were."""
        gone: list[tuple[str, str]] = []
        if pairs:
            try:
                self._begin()
                for pair in pairs:
                    if self.db.execute("DELETE FROM copies WHERE task_id=? AND holder=?",
                                       pair).rowcount:
                        gone.append((pair[0], pair[1]))
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
