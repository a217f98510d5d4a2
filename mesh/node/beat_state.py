"""The beat's pure parts and its memory: who fires (rendezvous hashing), which run is
due (no backlog, a catch-up window), and the last firing of every entry (kept in a small
sqlite file next to the journal, and told to peers).
"""
from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeGuard

from mesh.digest import blake2b, sha1
from mesh.schedules import BaseSchedule
from mesh.security.files import private_file
from mesh.security.text import safe_logger

AHEAD_MAX = 10.0       # s: a firing due further ahead of this node's clock is not learnt
                       # (from a peer: mesh/node/beat_peers.py) nor loaded (from disk)

log = safe_logger("mesh.beat")

STORE_FILE = "beat.sqlite3"
LAST_TIME = 32_503_680_000.0   # 3000-01-01 (unix time): a peer's due or time past it is no time


def hrw(key: str, candidates: Iterable[str]) -> str | None:
    """Rendezvous (highest random weight) hashing: the candidate with the highest
    hash of (key, candidate). Every node with the same candidates picks the same one,
    and when a candidate goes, only the keys it won move (to their second choice)."""
    best, best_score = None, b""
    for c in candidates:
        score = blake2b(f"{key}\x00{c}".encode(), digest_size=16).digest()
        if best is None or score > best_score:
            best, best_score = c, score
    return best


def due_to_fire(sched: BaseSchedule, tz: dt.tzinfo, now: float, last_due: float | None,
                floor: float, catch_up: float | None) -> tuple[float | None, float | None]:
    """``(fire, skipped)``: the run to fire now, and a run skipped for lateness.

    Only the latest run due at or before ``now`` is considered (no backlog: runs
    missed before it are never fired). It is fired if it is newer than the last known
    firing ``last_due`` (or, with none known, not older than ``floor``: the time this
    node began carrying the entry), unless it is more than ``catch_up`` seconds late."""
    due = sched.last_at_or_before(now, tz)
    if due is None:
        return None, None
    if last_due is not None and due <= last_due:
        return None, None
    if last_due is None and due < floor:
        return None, None
    if catch_up is not None and now - due > catch_up:
        return None, due
    return due, None


def handed_runs(sched: BaseSchedule, tz: dt.tzinfo, now: float, last_due: float | None,
                since: float, catch_up: float | None,
                cap: int) -> tuple[list[float], list[float], list[float]]:
    """``(fire, over, late)`` for an entry a peer handed to this node as it settled: the
    runs due in (``last_due``, ``now``], and after ``since``, oldest first. The peer fired
    every run due until it counted this node as a firer (``last_due`` is its last), and
    none after, so each run here fell due during the handover and no node fired it.
    ``fire`` holds the newest ``cap`` of them not more than ``catch_up`` seconds late;
    ``over``, older ones beyond the cap; ``late``, those beyond ``catch_up``."""
    lower = since if last_due is None else max(last_due, since)
    dues: list[float] = []
    t = sched.next_after(lower, tz)
    while t <= now:                 # (a solar event that never happens: inf, none)
        dues.append(t)
        t = sched.next_after(t, tz)
    late = [d for d in dues if catch_up is not None and now - d > catch_up]
    timely = [d for d in dues if d not in late]
    return timely[-cap:], timely[:-cap], late


class Fired(NamedTuple):
    """The last firing of an entry: its run due at ``due`` was sent as ``task_id`` by
    ``node`` at ``at``; ``key`` names the entry's definition (a hash of Entry.key())."""
    entry: str
    due: float
    task_id: str
    node: str
    at: float
    key: str

    def to_wire(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_wire(cls, d: Any) -> "Fired":
        """From a peer's message; ValueError if it is not one."""
        if not isinstance(d, dict):
            raise ValueError("a firing is a map")
        def text(name: str) -> str:
            v = d.get(name)
            if not isinstance(v, str) or len(v) > 200 or (not v and name != "task_id"):
                raise ValueError(f"firing field {name!r} is missing or bad: {v!r}"[:200])
            return v

        def number(name: str) -> float:
            v = d.get(name)
            if not is_time(v):
                raise ValueError(f"firing field {name!r} is missing or bad: {v!r}"[:200])
            return float(v)
        return cls(text("entry"), number("due"), text("task_id"), text("node"), number("at"),
                   text("key"))


def is_time(v: Any) -> TypeGuard[float]:
    """A unix time: not inf, nan or 1e300, which, learnt as a firing's due, stopped its
    entry on every node (no run after it) and made each one's `beat` view raise, also
    after a restart (kept in beat.sqlite3)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= v <= LAST_TIME


def entry_key(key_text: str) -> str:
    return sha1(key_text.encode()).hexdigest()[:12]


class LastFirings:
    """entry name -> the newest Fired known here; written through to sqlite when
    ``directory`` is given (a node's data dir), so a restarted node knows them."""

    def __init__(self, directory: str | None, now: float | None = None):
        self.last: dict[str, Fired] = {}
        now = time.time() if now is None else now
        self._db: sqlite3.Connection | None = None
        if directory is None:
            return
        path = os.path.join(directory, STORE_FILE)
        try:
            private_file(path)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS fired (entry TEXT PRIMARY KEY, due REAL, "
                       "task_id TEXT, node TEXT, at REAL, key TEXT)")
            for row in db.execute("SELECT entry, due, task_id, node, at, key FROM fired"):
                if not (is_time(row[1]) and is_time(row[4])):
                    # (learnt before peers' times were checked: is_time)
                    log.warning("beat: %s: the last firing of %r kept there is not at a "
                                "time (due %r, at %r): left out", path, row[0], row[1], row[4])
                elif row[1] > now + AHEAD_MAX:
                    # kept while this machine's clock (or a peer's, before AHEAD_MAX was
                    # checked) was ahead, and corrected since: loaded, it would stop the
                    # entry on this node until the clock gets there
                    log.warning("beat: %s: the last firing of %r kept there is due %.0f s "
                                "ahead of this machine's clock (a clock corrected since?): "
                                "left out", path, row[0], row[1] - now)
                else:
                    self.last[row[0]] = Fired(*row)
            self._db = db
        except (sqlite3.Error, OSError) as e:
            log.error("beat: cannot use %s (%s): last firings are kept in memory only", path, e)

    def get(self, entry: str) -> Fired | None:
        return self.last.get(entry)

    def learn(self, f: Fired) -> bool:
        """Keep ``f`` if it is newer than what is known; True if it was."""
        old = self.last.get(f.entry)
        if old is not None and (old.due, old.at) >= (f.due, f.at):
            return False
        self.last[f.entry] = f
        if self._db is not None:
            try:
                self._db.execute("INSERT OR REPLACE INTO fired VALUES (?, ?, ?, ?, ?, ?)", f)
            except sqlite3.Error as e:
                log.error("beat: could not store the last firing of %s: %s", f.entry, e)
        return True

    def forget(self, entry: str) -> None:
        """Forget the last firing of ``entry`` (due ahead of a clock set back)."""
        self.last.pop(entry, None)
        if self._db is not None:
            try:
                self._db.execute("DELETE FROM fired WHERE entry=?", (entry,))
            except sqlite3.Error as e:
                log.error("beat: could not forget the last firing of %s: %s", entry, e)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
