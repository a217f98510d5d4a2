"""Task history, read from a node's journal through a read-only sqlite connection.

The node writes its journal (mesh/node/journal.py); this module only reads it, on one
worker thread of its own (never the node's loop), so a query over a million rows
never holds up intake. sqlite's WAL mode lets a reader see the last committed state
while the node goes on writing.

Finished tasks are the rows of ``results`` (appended in the order tasks finish, so
the rowid order is the finishing order), joined with their ``tasks`` row (the Submit:
name, arguments, received time). Pages are read newest first in windows of rowids:
a page stops when it has ``limit`` matches, when the time budget is spent, or at the
oldest row; its ``cursor`` says where the next page starts. Response time is thus
bounded whatever the size of the history and however rare the matches. (A free-text
search decodes each frame: its windows are as many rows as the budget left affords at
the pace measured, from SEARCH_FIRST, not WINDOW.)

Filters: state (sqlite compares a column), name (the encoded name is searched in the
Submit frame by sqlite's ``instr``, then checked on the decoded frame), free text (in the
task's name and its arguments' repr texts, as the page shows them: ``frame_matches``,
a function of the connection, decodes each frame; bytes of the frame would miss every
number, msgpack keeps those in binary, and find the task's id), received time.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from typing import Any

import msgpack

from mesh import states
from mesh.exceptions import DecodeError
from mesh.node.events import short_repr
from mesh.security.text import safe_logger
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, decode
from mesh.workflow.ids import RECORD_OWNER

log = safe_logger("mesh.web.history")

WINDOW = 20_000            # rowids scanned per sqlite query
SEARCH_FIRST = 100         # ... by a free-text search's first query (it decodes each frame
                           # in Python: the next ones look at what the budget left affords)
BUDGET = 0.25              # s a page may spend scanning before it returns what it found
SUMMARY_TTL = 10.0         # s a summary (counts by state: full scans) is reused
LIST_REPR = 200            # characters of args/result text in a list row
INFO_REPR = 20_000         # ... on a task's own page
FINAL = (states.SUCCESS, states.FAILURE, states.REVOKED)
# latency bins (s) for the charts' percentiles: counted by sqlite, per time bucket
BINS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


# a workflow's record (mesh/workflow/ids.py) is not a task: no row, no count, no chart
NOT_RECORD = "coalesce(t.client, x'') != :rec"

_WHEN = {states.SUCCESS: "succeeded", states.FAILURE: "failed", states.REVOKED: "revoked"}


class HistoryError(Exception):
    """The journal cannot be read (no journal, locked, corrupt): the text says which."""


@dataclasses.dataclass(frozen=True)
class Query:
    """What a task list asks for. ``since``/``until`` bound the received time."""
    states: frozenset[str] = frozenset()     # empty: any
    name: str | None = None
    search: str | None = None
    since: float | None = None
    until: float | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "Query":
        """From JSON/msgpack arguments (a control command's, or the HTTP API's);
        ValueError with a reason for anything malformed."""
        st = args.get("states") or []
        if isinstance(st, str):
            st = [s for s in st.split(",") if s]
        if not isinstance(st, list) or not all(isinstance(s, str) and len(s) < 40 for s in st):
            raise ValueError("states must be a list of state names")
        out: dict[str, Any] = {"states": frozenset(s.upper() for s in st)}
        for key in ("name", "search"):
            v = args.get(key)
            if v in (None, ""):
                continue
            if not isinstance(v, str) or len(v) > 500:
                raise ValueError(f"{key} must be a text of at most 500 characters")
            out[key] = v
        for key in ("since", "until"):
            v = args.get(key)
            if v in (None, ""):
                continue
            try:
                out[key] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a unix time in seconds, got {v!r}") from None
        return cls(**out)

    def to_args(self) -> dict[str, Any]:
        return {"states": sorted(self.states), "name": self.name, "search": self.search,
                "since": self.since, "until": self.until}

    def wants_finished(self) -> bool:
        return not self.states or any(s in FINAL for s in self.states)

    def matches_open(self, name: str, state: str, received: float) -> bool:
        """For a task the node holds (not in ``results``): does it match?"""
        if self.states and state not in self.states:
            return False
        if self.name is not None and name != self.name:
            return False
        if self.since is not None and received < self.since:
            return False
        return self.until is None or received <= self.until


def submit_fields(frame: bytes | None, width: int) -> dict[str, Any]:
    """What a Submit frame tells about a task (name, args, ...), for a list or a page."""
    if frame is None:
        return {}
    try:
        msg = decode(frame)
    except DecodeError as e:
        return {"args": f"<undecodable: {e}>"}
    if not isinstance(msg, Submit):
        return {}
    out: dict[str, Any] = {"name": msg.name, "retries": msg.retries, "eta": msg.eta,
                           "expires": msg.expires, "priority": msg.priority,
                           "parent_id": msg.headers.get("parent_id"),
                           "sent": msg.headers.get("sent_at")}
    try:
        args, kwargs = codec.load_call(msg.payload)
        out["args"], out["kwargs"] = short_repr(tuple(args), width), short_repr(kwargs, width)
    except Exception as e:
        out["args"], out["kwargs"] = f"<undecodable: {e}>", ""
    return out


def result_fields(blob: bytes | None, width: int) -> dict[str, Any]:
    """What a Result frame tells: runtime, node, result text or exception and traceback."""
    if blob is None:
        return {}
    try:
        res = decode(blob)
    except DecodeError as e:
        return {"exception": f"<undecodable result: {e}>"}
    if not isinstance(res, Result):
        return {}
    out: dict[str, Any] = {"runtime": res.runtime, "worker": res.node or None}
    if res.state == states.SUCCESS:
        try:
            out["result"] = short_repr(codec.loads(res.result) if res.result else None, width)
        except Exception as e:
            out["result"] = f"<undecodable: {e}>"
    else:
        exc = res.exc or {}
        out["exception"] = f"{exc.get('type', 'Exception')}({str(exc.get('message', ''))[:width]!r})"
        out["traceback"] = res.traceback
    return out


def task_row(task_id: str, state: str, finished: float | None, frame: bytes | None,
             received: float | None, blob: bytes | None, node: str, width: int) -> dict[str, Any]:
    """One task as the API shows it (Flower's field names where it has them)."""
    t: dict[str, Any] = {"uuid": task_id, "state": state, "worker": node, "received": received,
                         "started": None, "timestamp": finished or received}
    t.update(submit_fields(frame, width))
    t.update({k: v for k, v in result_fields(blob, width).items() if v is not None})
    if finished is not None:
        t[_WHEN.get(state, state.lower())] = finished     # Flower's: succeeded/failed/revoked
        rt = t.get("runtime")
        if isinstance(rt, (int, float)) and rt > 0:
            t["started"] = finished - rt
    return t


def frame_matches(frame: bytes | None, text: str) -> int:
    """The free-text filter, as sqlite's ``mesh_search(frame, text)``: 1 when ``text`` is
    in the task's name or its arguments' repr texts (what the page shows and the filter
    of held tasks reads: mesh/web/commands.py), else 0. Never raises (inside sqlite)."""
    try:
        f = submit_fields(frame, INFO_REPR)
        return int(text in f"{f.get('name', '')} {f.get('args', '')} {f.get('kwargs', '')}")
    except Exception:
        return 0


def _affordable(looked: int, spent: float, left: float, window: int) -> int:
    """Rows the next query of a search may look at: as many as the ``left`` of the
    budget affords at the pace of the last one (``looked`` rows in ``spent`` s), and
    WINDOW at most (twice the last window when it took no measurable time)."""
    if looked <= 0 or spent <= 0:
        return min(WINDOW, 2 * window)
    return max(1, min(WINDOW, int(looked * left / spent)))


class JournalReader:
    """Read-only queries on one journal file. Use it from one thread only."""

    def __init__(self, path: str, node: str, clock: Any = time.monotonic):
        self.path = path
        self.node = node
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._summary: tuple[float, dict[str, Any]] | None = None
        self._series: dict[int, tuple[float, int, dict[int, list[float]]]] = {}
        self._lag: tuple[float, int] = (0.0, 0)         # (max lag seen, up to this rowid)

    # -- the connection -----------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            if not os.path.exists(self.path):
                raise HistoryError(f"no journal at {self.path} (node started with --no-journal?)")
            try:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0)
                db.execute("PRAGMA query_only=1")
                db.execute("PRAGMA cache_size=-16384")
                db.create_function("mesh_search", 2, frame_matches, deterministic=True)
                db.execute("SELECT 1 FROM results LIMIT 1").fetchall()
            except sqlite3.Error as e:
                raise HistoryError(f"cannot read the journal {self.path}: {e}") from e
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _run(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            self.close()                       # a fresh connection next time
            raise HistoryError(f"reading the journal {self.path} failed: {e}") from e

    # -- pages --------------------------------------------------------------------------
    def first_rowid_at(self, t: float) -> int:
        """The smallest results rowid finished at or after ``t`` (rowids are in
        finishing order): a binary search of point reads."""
        lo = self._run("SELECT min(rowid) FROM results")[0][0]    # (one aggregate each:
        hi = self._run("SELECT max(rowid) FROM results")[0][0]    # sqlite reads one row)
        if lo is None or hi is None:
            return 0
        hi += 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._run("SELECT rowid, finished FROM results WHERE rowid >= ? "
                            "ORDER BY rowid LIMIT 1", (mid,))
            if not row:
                hi = mid
            elif row[0][1] < t:
                lo = row[0][0] + 1
            else:
                hi = mid
        return int(lo)

    def page(self, q: Query, limit: int = 100, cursor: int | None = None,
             budget: float = BUDGET) -> dict[str, Any]:
        """Finished tasks matching ``q``, newest first, from below ``cursor`` (a rowid;
        None: the newest). Returns ``{"tasks", "rowids", "cursor", "scanned"}``
        (``rowids``: each task's, so a page cut shorter goes on from the first left out);
        ``cursor`` is None when the oldest row was reached."""
        if not q.wants_finished():
            return {"tasks": [], "rowids": [], "cursor": None, "scanned": 0}
        top = self._run("SELECT max(rowid) FROM results")[0][0]
        if top is None:
            return {"tasks": [], "rowids": [], "cursor": None, "scanned": 0}
        hi = top if cursor is None else min(cursor, top)
        if q.until is not None:     # nothing received by then finished later than max_lag
            hi = min(hi, self.first_rowid_at(q.until + self.max_lag() + 1.0))
        floor = self.first_rowid_at(q.since) if q.since is not None else 1
        where = ["r.rowid <= :hi", "r.rowid > :lo", "r.copy = 0", NOT_RECORD]   # (copy: another node ran it)
        params: dict[str, Any] = {"rec": RECORD_OWNER}
        states_ = [s for s in q.states if s in FINAL]
        if states_:
            marks = ",".join(f":s{i}" for i in range(len(states_)))
            where.append(f"r.state IN ({marks})")
            params.update({f"s{i}": s for i, s in enumerate(states_)})
        if q.name is not None:
            where.append("instr(t.frame, :name) > 0")
            params["name"] = msgpack.packb(q.name)
        if q.search is not None:
            where.append("mesh_search(t.frame, :search)")
            params["search"] = q.search
        if q.since is not None:
            where.append("t.received >= :since")
            params["since"] = q.since
        if q.until is not None:
            where.append("t.received <= :until")
            params["until"] = q.until
        sql = ("SELECT r.rowid, r.task_id, r.state, r.finished, t.frame, t.received, r.result "
               "FROM results r LEFT JOIN tasks t ON t.task_id = r.task_id WHERE "
               + " AND ".join(where) + " ORDER BY r.rowid DESC LIMIT :n")
        out: list[dict[str, Any]] = []
        rowids: list[int] = []
        deadline = self._clock() + budget
        start = hi
        window = WINDOW if q.search is None else SEARCH_FIRST
        while hi >= floor and len(out) < limit:
            lo = max(hi - window, floor - 1)
            want = limit - len(out)
            top, began = hi, self._clock() if q.search is not None else 0.0
            rows = self._run(sql, {**params, "hi": hi, "lo": lo, "n": want})
            for rowid, tid, state, finished, frame, received, blob in rows:
                t = task_row(tid, state, finished, frame, received, blob, self.node, LIST_REPR)
                if q.name is not None and t.get("name") != q.name:
                    continue                  # the name's bytes were in the arguments
                out.append(t)
                rowids.append(rowid)
            # the window goes on below the last row read when LIMIT cut it short
            hi = rows[-1][0] - 1 if len(rows) == want else lo
            now = self._clock()
            if now > deadline:
                break
            if q.search is not None:    # (a window of 20,000 decoded frames took seconds)
                window = _affordable(top - hi, now - began, deadline - now, window)
        return {"tasks": out, "rowids": rowids, "cursor": hi if hi >= max(floor, 1) else None,
                "scanned": start - hi}

    def max_lag(self) -> float:
        """The longest received -> finished time in the journal (so a page bounded by a
        received time knows where to start): one scan, then only the rows since."""
        rows = self._run("SELECT max(r.finished - t.received), max(r.rowid) FROM results r "
                         "LEFT JOIN tasks t ON t.task_id = r.task_id WHERE r.rowid > ? "   # LEFT: results outer
                         "AND r.copy = 0",
                         (self._lag[1],))
        lag, last = rows[0]
        if last is not None:
            self._lag = (max(self._lag[0], lag or 0.0), int(last))
        return self._lag[0]

    def task(self, task_id: str) -> dict[str, Any] | None:
        """One task, in full (arguments and result up to INFO_REPR characters)."""
        rows = self._run("SELECT t.task_id, coalesce(r.state, t.state), r.finished, t.frame, "
                         "t.received, r.result FROM tasks t LEFT JOIN results r "
                         "ON r.task_id = t.task_id WHERE t.task_id = ?", (task_id,))
        copy = False
        if not rows:      # a result alone: another node ran the task (this one keeps a copy)
            rows = self._run("SELECT task_id, state, finished, NULL, NULL, result FROM results "
                             "WHERE task_id = ?", (task_id,))
            copy = bool(rows)
        if not rows:
            return None
        tid, state, finished, frame, received, blob = rows[0]
        t = task_row(tid, state, finished, frame, received, blob, self.node, INFO_REPR)
        if copy:
            t["copy"] = True
        return t

    # -- charts -------------------------------------------------------------------------
    def series(self, since: float, step: int) -> list[list[float]]:
        """Per ``step``-second bucket from ``since``: [bucket start, tasks finished,
        mean latency, max latency, p50, p95] where latency is received -> finished on
        this node (queue wait + run). Kept per step and brought up to date with only
        the rows finished since the last call."""
        step = max(1, int(step))
        cached = self._series.get(step)
        if cached is None or cached[0] > since:
            start_row = self.first_rowid_at(since)
            buckets: dict[int, list[float]] = {}
            last = start_row - 1
        else:
            _, last, buckets = cached
        bins = ", ".join(f"sum(lat < {b})" for b in BINS)
        rows = self._run(
            "SELECT b, count(*), sum(lat), max(lat), max(rid), " + bins + " FROM ("
            "SELECT CAST(r.finished / :step AS INTEGER) AS b, r.rowid AS rid, "
            "max(0, r.finished - coalesce(t.received, r.finished)) AS lat "
            "FROM results r LEFT JOIN tasks t ON t.task_id = r.task_id WHERE r.rowid > :last "
            "AND r.copy = 0 AND " + NOT_RECORD + ") GROUP BY b",
            {"step": step, "last": last, "rec": RECORD_OWNER})
        for b, n, total, mx, rid, *counts in rows:
            acc = buckets.get(b)
            if acc is None:
                buckets[b] = [n, total or 0.0, mx or 0.0, *counts]
            else:
                acc[0] += n
                acc[1] += total or 0.0
                acc[2] = max(acc[2], mx or 0.0)
                for i, c in enumerate(counts):
                    acc[3 + i] += c
            last = max(last, rid)
        first = int(since // step)
        for b in [b for b in buckets if b < first]:
            del buckets[b]
        self._series[step] = (float(first * step), last, buckets)
        out = []
        for b in sorted(buckets):
            n, total, mx, *counts = buckets[b]
            out.append([b * step, n, total / n if n else 0.0, mx,
                        _quantile(counts, n, 0.5, mx), _quantile(counts, n, 0.95, mx)])
        return out

    # -- totals -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Finished tasks by state, open rows, and the journal's size on disk (full
        scans: reused for SUMMARY_TTL seconds)."""
        now = self._clock()
        if self._summary is not None and now - self._summary[0] < SUMMARY_TTL:
            return self._summary[1]
        by_state = {s: int(n) for s, n in self._run(
            "SELECT r.state, count(*) FROM results r LEFT JOIN tasks t ON t.rowid = r.task "
            "WHERE r.copy = 0 AND " + NOT_RECORD + " GROUP BY r.state", {"rec": RECORD_OWNER})}
        tasks = int(self._run("SELECT count(*) FROM tasks WHERE client != ?", (RECORD_OWNER,))[0][0])
        oldest = self._run("SELECT finished FROM results ORDER BY rowid LIMIT 1")
        out = {"finished": by_state, "rows": tasks, "open_rows": max(0, tasks - sum(by_state.values())),
               "oldest": oldest[0][0] if oldest else None, "bytes": self.size()}
        self._summary = (now, out)
        return out

    def size(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total


def _quantile(counts: list[float], n: float, q: float, mx: float) -> float:
    """The q-quantile from cumulative bin counts (counts[i] = how many below BINS[i]):
    the upper edge of the first bin that holds it (the max if beyond the last bin)."""
    if not n:
        return 0.0
    want = q * n
    for edge, c in zip(BINS, counts):
        if c >= want:
            return min(edge, mx) if mx else edge
    return mx
