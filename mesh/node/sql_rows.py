"""What the sqlite journal's tables share (mesh/node/sqlite_journal.py is the journal;
copy_journal.py and spill_journal.py add the SQL of the backup's copies and of a deep
backlog's tasks on disk): the connection, one transaction per loop pass, errors told
in a user's words."""
from __future__ import annotations

import sqlite3

from mesh.node.journal import Journal, JournalError


def explain(e: sqlite3.Error, path: str) -> str:
    """What a sqlite error means for the journal at ``path``, in words a user acts on."""
    text = str(e)
    low = text.lower()
    if "full" in low:
        return f"the disk holding {path} is full ({text})"
    if "readonly" in low or "read-only" in low:
        return f"{path} is read-only ({text})"
    if "locked" in low:
        return f"{path} is locked by another process ({text})"
    return f"{path}: {text}"


class SqlRows(Journal):
    """The state and the write path every table of the sqlite journal uses."""

    db: sqlite3.Connection
    path: str
    writes: int
    _in_tx: bool
    _lost: str | None     # why sqlite rolled back this pass's transaction (commit fails)

    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True
        elif not self.db.in_transaction:     # rolled back by sqlite after a failed write:
            self.db.execute("BEGIN")         # later writes wait for commit() too (which fails)

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        try:
            self._begin()
            cur = self.db.execute(sql, params)
        except sqlite3.Error as e:
            raise self._error(e) from e
        self.writes += 1
        return cur.rowcount

    def _error(self, e: sqlite3.Error) -> JournalError:
        """A failed statement. On a full disk sqlite may roll back the whole transaction
        (every write of this pass): then commit() must fail too, saying why."""
        text = explain(e, self.path)
        if self._in_tx and self._lost is None and not self.db.in_transaction:
            self._lost = text
        self.note_error(text)
        return JournalError(text)
