"""Tasks waiting on disk only, a deep backlog's (mesh/node/spill.py): their SQL over the
``tasks`` table, for :class:`mesh.node.sqlite_journal.SqliteJournal`.

A task beyond the node's ``--queue-memory`` is written with ``disk=1``; a partial
index (``tasks_disk``) holds only those rows, in arrival (rowid) order, so reading
them back is a walk from its start. A row keeps its mark until the read back walks
past it, also when the task finished meanwhile (revoked before it left memory, or run
by another node): ``_FINISHED`` tells those apart.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mesh.node.copy_journal import IN_CHUNK
from mesh.node.journal import DiskRow
from mesh.node.sql_rows import SqlRows

# the task of row ``t`` has a result here: its own, or a copy of one another node ran
_FINISHED = ("(EXISTS (SELECT 1 FROM results r WHERE r.task=t.rowid) OR "
             "EXISTS (SELECT 1 FROM results r WHERE r.task_id=t.task_id AND r.copy=1))")
_BOOT = "backup-boot:"     # meta keys: a backup's boot id (``backup_boots``)


class SpillRows(SqlRows):
    """The SQL of the tasks waiting on disk only."""

    spills = True

    def spilled(self, limit: int) -> list[DiskRow]:
        """The oldest ``limit`` tasks waiting on disk only, in arrival order; each is
        in memory from now on (its mark is cleared: commit with the next batch)."""
        try:
            rows = self.db.execute(
                f"SELECT t.rowid, t.task_id, t.client, t.frame, t.received, {_FINISHED}, "
                "EXISTS (SELECT 1 FROM revoked v WHERE v.task_id=t.task_id), t.backup "
                "FROM tasks t INDEXED BY tasks_disk WHERE t.disk=1 ORDER BY t.rowid "
                "LIMIT ?", (limit,)).fetchall()
            if rows:      # the first rows on disk: all of them up to the last one read
                self._begin()
                self.db.execute("UPDATE tasks INDEXED BY tasks_disk SET disk=0 "
                                "WHERE disk=1 AND rowid <= ?", (rows[-1][0],))
                self.writes += len(rows)
        except sqlite3.Error as e:
            raise self._error(e) from e
        return [DiskRow(r[1], bytes(r[2]), bytes(r[3]), r[4], bool(r[5]), bool(r[6]), r[7])
                for r in rows]

    def on_disk(self, task_id: str) -> bytes | None:
        """The owner's routing id of a task waiting on disk only, or None."""
        try:
            row = self.db.execute("SELECT client FROM tasks WHERE task_id=? AND disk=1",
                                  (task_id,)).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return bytes(row[0]) if row else None

    def take_from_disk(self, task_id: str) -> DiskRow | None:
        """One task waiting on disk only, in memory from now on (a revoke). Not one
        finished already (its mark goes when the read back walks past it)."""
        try:
            row = self.db.execute(
                "SELECT t.rowid, t.task_id, t.client, t.frame, t.received, t.backup FROM tasks t "
                f"WHERE t.task_id=? AND t.disk=1 AND NOT {_FINISHED}", (task_id,)).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        if row is None:
            return None
        self._write("UPDATE tasks SET disk=0 WHERE rowid=?", (row[0],))
        return DiskRow(row[1], bytes(row[2]), bytes(row[3]), row[4], False, False, row[5])

    def set_backups(self, rows: Sequence[tuple[str, str]]) -> None:
        """``(backup, task_id)``: the node that kept each copy when it went to disk."""
        try:
            self._begin()
            self.db.executemany("UPDATE tasks SET backup=? WHERE task_id=?", rows)
        except sqlite3.Error as e:
            raise self._error(e) from e
        self.writes += len(rows)

    def set_client(self, task_id: str, client: bytes) -> None:
        """A task waiting on disk is resent through another link: reply there."""
        self._write("UPDATE tasks SET client=? WHERE task_id=?", (client, task_id))

    def disk_tasks(self) -> list[tuple[str, bytes, int]]:
        """``(task id, owner, bytes)`` of the tasks waiting on disk only, unfinished (a
        holder back after a crash asks the mesh about them: mesh/node/reclaim.py)."""
        try:
            return [(str(r[0]), bytes(r[1]), int(r[2])) for r in self.db.execute(
                "SELECT task_id, client, length(frame) FROM tasks t INDEXED BY tasks_disk "
                f"WHERE disk=1 AND NOT {_FINISHED} ORDER BY rowid").fetchall()]
        except sqlite3.Error as e:
            raise self._error(e) from e

    def disk_senders(self) -> list[tuple[bytes, int, int]]:
        """``(owner, tasks, bytes)`` of the tasks waiting on disk only (their owners'
        quotas, at start). Not those finished already (revoked before they left
        memory, or run by another node): their marks go as they are read past."""
        try:
            return [(bytes(r[0]), int(r[1]), int(r[2])) for r in self.db.execute(
                "SELECT client, count(*), sum(length(frame)) FROM tasks t INDEXED BY "
                f"tasks_disk WHERE disk=1 AND NOT {_FINISHED} GROUP BY client").fetchall()]
        except sqlite3.Error as e:
            raise self._error(e) from e

    def disk_walk(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """``(position, task_id, backup)`` of the next ``limit`` tasks waiting on disk
        only after position ``after`` (0: from the first), in arrival order: a walk of
        the partial index, for copying again those whose backup is gone
        (mesh/node/disk_copies.py). Finished ones are told apart by ``disk_frames``."""
        try:
            return [(int(r[0]), r[1], r[2]) for r in self.db.execute(
                "SELECT rowid, task_id, backup FROM tasks INDEXED BY tasks_disk "
                "WHERE disk=1 AND rowid > ? ORDER BY rowid LIMIT ?", (after, limit)).fetchall()]
        except sqlite3.Error as e:
            raise self._error(e) from e

    def disk_last(self) -> int:
        """The position of the newest task waiting on disk only (0: none)."""
        try:
            row = self.db.execute("SELECT max(rowid) FROM tasks INDEXED BY tasks_disk "
                                  "WHERE disk=1").fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return int(row[0]) if row and row[0] is not None else 0

    def disk_frames(self, positions: Sequence[int], revoked: bool = True
                    ) -> list[tuple[str, bytes]]:
        """``(task_id, frame)`` of the rows at these positions (from ``disk_walk``) that
        still wait on disk only and have no result, in arrival order; with ``revoked``
        False, not those revoked either (they finish REVOKED when read back)."""
        out: list[tuple[str, bytes]] = []
        unrevoked = "" if revoked else \
            " AND NOT EXISTS (SELECT 1 FROM revoked v WHERE v.task_id=t.task_id)"
        try:
            for s in range(0, len(positions), IN_CHUNK):
                part = positions[s:s + IN_CHUNK]
                out.extend((r[0], bytes(r[1])) for r in self.db.execute(
                    f"SELECT t.task_id, t.frame FROM tasks t WHERE t.rowid IN "
                    f"({','.join('?' * len(part))}) AND t.disk=1 AND NOT {_FINISHED}"
                    f"{unrevoked} ORDER BY t.rowid", part).fetchall())
        except sqlite3.Error as e:
            raise self._error(e) from e
        return out

    def backup_boots(self) -> dict[str, str]:
        """``backup -> boot id`` it had when the copies of the tasks on disk that name
        it were last known to be there (``set_backup_boot``): a backup that restarted
        while this node was down is told by its boot id (mesh/node/disk_copies.py)."""
        try:
            return {r[0][len(_BOOT):]: r[1] for r in self.db.execute(
                "SELECT key, value FROM meta WHERE key >= ? AND key < ?",
                (_BOOT, _BOOT[:-1] + chr(ord(_BOOT[-1]) + 1))).fetchall()}
        except sqlite3.Error as e:
            raise self._error(e) from e

    def set_backup_boot(self, backup: str, boot: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_BOOT + backup, boot))
