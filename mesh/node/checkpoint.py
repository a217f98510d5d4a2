"""WAL checkpoints of the sqlite journal on a thread of their own.

In WAL mode a commit appends to the ``-wal`` file; a *checkpoint* copies those pages
into the database file and syncs it. sqlite runs one inside whichever commit finds
the WAL past ``wal_autocheckpoint`` pages, so with a large journal (a backlog of a
million tasks: a database of hundreds of MB, pages written all over it) one commit
on the node's loop could take seconds, and the node answered nobody meanwhile
(measured: clients saw no answer for 5 to 8 s). Here a second connection runs
PASSIVE checkpoints at most every ``INTERVAL`` on a daemon thread (sqlite releases the
GIL while it works), and the node's connection checkpoints by itself only past
``BACKSTOP_PAGES``, should this thread ever fall behind. A PASSIVE checkpoint never
blocks the writer and never waits for it; what it could not copy, the next one does.
While nothing is written (an idle node) the thread sleeps: the journal's commits wake
it (``written``), and it checkpoints anyway after a wait that doubles, from
``INTERVAL`` up to ``IDLE_MAX`` (a write it was not told of: at most that late).
Under load (a commit every round) it checkpoints every ``INTERVAL``, as before.
Nothing about durability changes: a commit is durable when it is in the WAL.
"""
from __future__ import annotations

import sqlite3
import threading

from mesh.security.text import safe_logger

log = safe_logger("mesh.journal")

INTERVAL = 0.25            # s between checkpoints, at least
IDLE_MAX = 2.0             # s between checkpoints at most, while nothing is written
BACKSTOP_PAGES = 65536     # the node's own connection checkpoints past this (256 MiB of WAL)


class Checkpointer:
    def __init__(self, path: str, interval: float | None = None, idle_max: float | None = None):
        self.path = path
        self.interval = INTERVAL if interval is None else interval
        self.idle_max = IDLE_MAX if idle_max is None else idle_max
        self.checkpoints = 0       # that copied pages
        self.rounds = 0            # checkpoints tried
        self.woken = 0             # idle sleeps a commit ended
        self.slept = 0             # idle sleeps that ran out (nothing written meanwhile)
        self.sleep = 0.0           # s of the idle sleep now (or the last)
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._dirty = True         # written since the last checkpoint
        self._idle = False         # the thread sleeps until written to (or idle_max)
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

    def written(self) -> None:
        """(The journal, after a commit) the WAL grew: checkpoint soon. Two attribute
        accesses on the hot path; the thread is woken only when it sleeps idle."""
        self._dirty = True
        if self._idle:
            self._wake.set()

    def _run(self, db: sqlite3.Connection) -> None:
        idle, pace = self.interval, True
        try:
            while not (pace and self._stop.wait(self.interval)):   # at most one per interval
                pace = True
                if not self._dirty:
                    # nothing written since the last one: sleep until a commit says so
                    # (``written`` sees _idle, or this sees _dirty: no write is missed),
                    # or a wait that doubles each time, as a backstop
                    self._idle = True
                    if not self._dirty:
                        self.sleep = idle
                        if self._wake.wait(idle):
                            self.woken += 1
                        else:                  # (one wake-up a round while idle)
                            self.slept += 1
                            idle, pace = min(idle * 2, self.idle_max), False
                    self._idle = False
                    self._wake.clear()
                    if self._stop.is_set():
                        break
                if self._dirty:
                    idle = self.interval
                self._dirty = False
                self.rounds += 1
                try:
                    row = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:
                    self._dirty, pace = True, True         # (tried again next round)
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
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
