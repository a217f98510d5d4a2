"""The dashboard's questions to a node, answered by every node (with or without --http).

A dashboard shows the whole mesh: it asks each alive node for its part with these
control commands (docs/protocol.md lists them), and answers the same questions for
its own node in-process:

    web.tasks    tasks matching a filter: held ones (from memory) and finished ones
                 (from the journal, a page at a time: ``cursor``)
    web.task     one task in full (arguments, result or traceback, timeline)
    web.series   throughput and latency per time bucket, from the journal
    web.summary  counts: finished by state (journal), held, the journal's size

Journal reads run on one worker thread per node, never on the loop, so the answer
comes later than the request: the asker sends ``req`` (its request id) and
``noreply: true`` in the arguments, and the node sends the ControlReply itself when
the answer is ready. They are registered in the node's command registry
(mesh/node/commands.py) by the ``history`` component, with ``request=dict``: they
check their own arguments.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mesh import states
from mesh.node.commands import Command, ControlState
from mesh.node.component import Component
from mesh.security.text import safe_logger
from mesh.web.chartlines import chart_lines
from mesh.web.history import (
    INFO_REPR,
    LIST_REPR,
    HistoryError,
    JournalReader,
    Query,
    frame_matches,
    submit_fields,
)
from mesh.wire.protocol import ControlReply, encode

if TYPE_CHECKING:
    from mesh.node.ledger import Entry
    from mesh.node.node import Node

log = safe_logger("mesh.web")

T = TypeVar("T")
MAX_LIMIT = 1000
SEARCHED_MIN = 200              # held tasks (the newest) a text filter looks at, on the loop,
HELD_BUDGET = 0.05              # then for this many seconds at most (1-2 ms a task with large
SEARCHED_HELD = 2 * MAX_LIMIT   # arguments, 60 us a small one), and this many at most
MAX_STEP_BUCKETS = 2000          # a chart asks for at most this many buckets
COMMANDS = ("web.tasks", "web.task", "web.series", "web.summary")


class HistoryService:
    """One node's answers to the dashboard's questions."""

    def __init__(self, node: "Node"):
        self.node = node
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader: JournalReader | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # set by the HTTP server when it runs here: task id -> events seen (timeline)
        self.timeline: Callable[[str], list[dict[str, Any]]] | None = None
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "web.tasks": self.tasks, "web.task": self.task, "web.series": self.series,
            "web.summary": self.summary}

    # -- journal reads on a thread of their own -----------------------------------------
    async def read(self, fn: Callable[[JournalReader], T]) -> T:
        """Run ``fn(reader)`` on the journal thread."""
        journal = self.node.journal
        if journal.path is None:
            raise HistoryError(f"node {self.node.name} keeps no journal (--no-journal): "
                               "it has no history")
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mesh-history")
            self._reader = JournalReader(journal.path, self.node.name)
        reader = self._reader
        assert reader is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, reader)

    def close(self) -> None:
        for t in self._pending:
            t.cancel()
        if self._pool is not None:
            reader = self._reader
            if reader is not None:
                self._pool.submit(reader.close)
            self._pool.shutdown(wait=False)
            self._pool = None

    # -- control commands ---------------------------------------------------------------
    def install(self) -> None:
        """Register the web.* commands in the node's command registry (their arguments
        are checked here, so they take the args map as it came: ``request=dict``)."""
        for name, fn in self.handlers.items():
            self.node.control.commands.add(Command(
                name, "inspect", self._deferred(name, fn), dict, builtin=True,
                help=f"the dashboard's {name} question (docs/dashboard.md)"))

    def _deferred(self, name: str, fn: Callable[[dict[str, Any]], Awaitable[Any]]
                  ) -> Callable[[ControlState, Any], None]:
        def handler(state: ControlState, args: Any) -> None:
            ident = state.sender
            req = args.get("req")
            if args.get("noreply") is not True or not isinstance(req, str) or len(req) > 200:
                raise ValueError(f"{name} is answered when ready: send args 'req' (the "
                                 "request id) and 'noreply': true")
            task = asyncio.get_running_loop().create_task(self._answer(ident, req, name, fn, args))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return handler

    async def _answer(self, ident: bytes, req: str, name: str,
                      fn: Callable[[dict[str, Any]], Awaitable[Any]], args: dict[str, Any]) -> None:
        node = self.node
        try:
            reply = ControlReply(req, True, node.name, await fn(args))
        except (ValueError, HistoryError) as e:
            reply = ControlReply(req, False, node.name, None, f"{name}: {e}")
        except Exception as e:
            log.exception("%s failed", name)
            reply = ControlReply(req, False, node.name, None, f"{name}: {type(e).__name__}: {e}")
        node.front.reply(ident, encode(reply))

    # -- the questions ------------------------------------------------------------------
    def describe(self, e: "Entry", width: int = LIST_REPR) -> dict[str, Any]:
        """A held task as the API shows it."""
        state = states.STARTED if e.started else states.RETRY if e.retried else states.RECEIVED
        t: dict[str, Any] = {"uuid": e.task_id, "state": state, "worker": self.node.name,
                             "received": e.received, "started": e.started,
                             "timestamp": e.started or e.received}
        t.update(submit_fields(e.frame, width))
        t["name"] = e.name
        return t

    def held(self, q: Query, limit: int) -> list[dict[str, Any]]:
        """Held tasks matching ``q``, newest first (from memory: on the loop)."""
        found = []
        for e in self.node.ledger.held.values():
            state = states.STARTED if e.started else states.RETRY if e.retried else states.RECEIVED
            if q.matches_open(e.name, state, e.received):
                found.append(e)
        found.sort(key=lambda e: e.received, reverse=True)
        if q.search is None:
            return [self.describe(e) for e in found[:limit]]
        # newest first, as the journal's are searched (frame_matches), SEARCHED_MIN at
        # least, then as many as HELD_BUDGET allows on the loop, SEARCHED_HELD at most:
        # not the newest 2 x limit, which missed a match a few tasks older than a small page
        out = []
        stop = time.monotonic() + HELD_BUDGET
        for n, e in enumerate(found[:SEARCHED_HELD]):
            if n >= SEARCHED_MIN and time.monotonic() > stop:
                break
            if frame_matches(e.frame, q.search):
                out.append(self.describe(e))
                if len(out) == limit:
                    break
        return out

    async def tasks(self, args: dict[str, Any]) -> dict[str, Any]:
        q = Query.from_args(args)
        limit = _int(args, "limit", 100, 1, MAX_LIMIT)
        cursor = args.get("cursor")
        if cursor is not None and type(cursor) is not int:
            raise ValueError("cursor must be an integer from a previous page")
        out: dict[str, Any] = {"node": self.node.name, "held": [], "tasks": [], "rowids": [],
                               "cursor": None}
        if cursor is None:
            out["held"] = self.held(q, limit)
        if q.wants_finished() and self.node.journal.path is not None:
            page = await self.read(lambda r: r.page(q, limit, cursor))
            out.update(page)
        return out

    async def task(self, args: dict[str, Any]) -> dict[str, Any] | None:
        tid = args.get("task_id")
        if not isinstance(tid, str) or not 0 < len(tid) <= 200:
            raise ValueError("web.task needs 'task_id'")
        entry = self.node.ledger.held.get(tid)
        t: dict[str, Any] | None
        if entry is not None:
            t = self.describe(entry, INFO_REPR)
        elif self.node.journal.path is not None:
            t = await self.read(lambda r: r.task(tid))
        else:
            t = None
        if t is not None and tid in self.node.control.revoked and t["state"] not in states.READY_STATES:
            t["revoked_at"] = self.node.control.revoked[tid]
        if self.timeline is not None:
            events = self.timeline(tid)
            if t is None and events:
                t = {"uuid": tid, "state": states.UNKNOWN, "worker": self.node.name}
            if t is not None:
                t["events"] = events
        return t

    async def series(self, args: dict[str, Any]) -> dict[str, Any]:
        since = args.get("since")
        step = _int(args, "step", 10, 1, 86400)
        if not isinstance(since, (int, float)) or isinstance(since, bool):
            raise ValueError("web.series needs 'since' (unix time)")
        if (time.time() - since) / step > MAX_STEP_BUCKETS:
            raise ValueError(f"at most {MAX_STEP_BUCKETS} buckets: a longer step, or a later since")
        points = await self.read(lambda r: r.series(float(since), step))
        lines = chart_lines(points, float(since), time.time(), step, self.node.started_at)
        return {"node": self.node.name, "step": step, "series": points, "lines": lines,
                "up_since": self.node.started_at}

    async def summary(self, args: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        busy, total, queued = node.load()
        out: dict[str, Any] = {"node": node.name, "held": len(node.ledger.held), "busy": busy,
                               "total": total, "queued": queued,
                               "counts": {k: v for k, v in node.ledger.counts.items()},
                               "journal": None, "journal_error": None}
        if node.journal.path is not None:
            try:
                out["journal"] = await self.read(lambda r: r.summary())
            except HistoryError as e:
                out["journal_error"] = str(e)
        return out


def _int(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = args.get(key, default)
    if v is None:
        return default
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{key} must be an integer from {lo} to {hi}, got {v!r}")
    return v


class History(Component):
    """Every node answers the dashboard's web.* questions (with or without --http)."""

    name = "history"
    requires = ("journal", "control")

    async def start(self, node: "Node") -> None:
        node.history = self.service = HistoryService(node)
        self.service.install()

    def close(self, node: "Node") -> None:
        self.service.close()
