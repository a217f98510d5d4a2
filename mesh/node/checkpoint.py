"""WAL checkpoints of the sqlite journal on a thread of their own.

In WAL mode a commit appends to the ``-wal`` file; a *checkpoint* copies those pages
into the database file and syncs it. sqlite runs one inside whichever commit finds
the WAL past ``wal_autocheckpoint`` pages, so with a large journal (a backlog of a
million tasks: a database of hundreds of MB, pages written all over it) one commit
on the node's loop could take seconds, and the node answered nobody meanwhile
(measured: clients saw no answer for 5 to 8 s). Here a second connection runs
PASSIVE checkpoints every ``INTERVAL`` on a daemon thread (sqlite releases the GIL
while it works), and the node's connection checkpoints by itself only past
``BACKSTOP_PAGES``, should this thread ever fall behind. A PASSIVE checkpoint never
blocks the writer and never waits for it; what it could not copy, the next one does.
Nothing about durability changes: a commit is durable when it is in the WAL.
"""
from __future__ import annotations

import sqlite3
import threading

from mesh.security.text import safe_logger

log = safe_logger("mesh.journal")

INTERVAL = 0.25            # s between checkpoints
BACKSTOP_PAGES = 65536     # the node's own connection checkpoints past this (256 MiB of WAL)


class Checkpointer:
    def __init__(self, path: str, interval: float = INTERVAL):
        self.path = path
        self.interval = interval
        self.checkpoints = 0       # that copied pages
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Open the second connection and start; False if it could not be opened."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=2000")
        except sqlite3.Error as e:
            log.warning("journal: no checkpoint thread (%s); sqlite checkpoints in commits", e)
            return False
        self._thread = threading.Thread(target=self._run, args=(db,), name="journal-checkpoint",
                                        daemon=True)
        self._thread.start()
        return True

    def _run(self, db: sqlite3.Connection) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    row = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:
                    self.failures += 1
                    if self.failures <= 3:
                        log.warning("journal: checkpoint failed: %s", e)
                    continue
                if row is not None and row[2] > 0:
                    self.checkpoints += 1
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
