"""The ledger: every task a node holds, from intake until its result is sent.

One place owns a held task's lifecycle: ``accept`` (held, journalled, handed to the
pool once the journal has it), ``finish`` (final result: journalled, sent to the
owner and the watchers, published), ``retry`` (not final: the owner is told, the task
waits here again), ``release`` (given back unstarted: the owner sends it elsewhere)
and ``forget`` (no longer ours, in memory and in the journal). The pool reports to the
ledger (it implements :class:`mesh.node.pool.PoolEvents`), and so do remote control
(revokes) and shedding.

Journal writes are batched per loop pass: :meth:`Ledger.flush` commits a batch with
new tasks before any ACK of that pass leaves, and only then gives those tasks to the
pool; a batch with only results is committed within ``RESULT_COMMIT_DELAY``.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from mesh import signals, states
from mesh.exceptions import revoked_message
from mesh.node import taskstate
from mesh.node.events import FINAL_EVENTS, received_fields, result_fields, sent_fields
from mesh.node.journal import JournalError
from mesh.security.text import safe_logger
from mesh.slot import retry_meta
from mesh.task import Request
from mesh.wire import codec
from mesh.wire.protocol import Release, Result, Submit, decode, encode
from mesh.workflow.ids import GROUP, REPLACED_BY  # coordinated by the node itself

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

MAX_REDELIVERIES = 3       # reject_on_worker_lost: runs of a task whose child keeps dying
MAX_WATCHERS = 64          # processes told of one task's result when it is done
MAX_EARLY = 10_000         # ids not held here yet that someone waits for (a workflow's
                           # later steps); the oldest are forgotten first
EARLY_TTL = 60.0           # s such a wait is remembered (the waiter asks again every second)
RESULT_COMMIT_DELAY = 0.002  # s a batch of results may wait for its journal commit


class Entry:
    """A task held by the node, from intake until its result is sent."""

    __slots__ = ("task_id", "name", "client", "frame", "priority", "eta", "expires",
                 "time_limit", "received", "started", "timer", "acks_late", "redelivered",
                 "retried", "reserved", "size", "progress", "wf", "fresh", "backup", "queue")

    def __init__(self, task_id: str, name: str, client: bytes, frame: bytes, priority: int,
                 eta: float | None, expires: float | None, time_limit: float | None,
                 acks_late: bool = True):
        self.task_id = task_id
        self.name = sys.intern(name)          # one string per task name, not one per task
        self.client = client
        self.frame = frame
        self.priority = priority
        self.eta = eta
        self.expires = expires
        self.time_limit = time_limit
        self.received = time.time()
        self.started: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.acks_late = acks_late            # False: journalled as STARTED before it starts
        self.redelivered = 0                  # runs again after its child died (reject_on_worker_lost)
        self.retried = False                  # waiting for a retry (state RETRY)
        self.reserved = False                 # holds a rate-limit reservation: starts when due
        self.size = len(frame)                # bytes counted against its sender's quota
        self.progress: tuple[str, bytes | None] | None = None   # its latest reported state
                                              # (track_started, update_state) and meta
        self.wf: dict[str, Any] | None = None  # a workflow's unit: its Submit headers
                                              # (mesh/node/workflows.py drives what follows)
        self.fresh = False                    # a group sent here now, a task replaced here
                                              # now (not recovered, taken over or handed
                                              # on: those ask the mesh first)
        # two copies (mesh/node/replicas.py), kept here rather than in dicts keyed by
        # task id: one record per held task (docs/performance.md, "Memory")
        self.backup: str | None = None        # the node its copy goes to ("" none; None:
                                              # not tracked: --replicas 1, finished, spilled)
        self.queue: str | None = None         # its queue (routing), once asked


def _headers(frame: bytes) -> dict[str, Any]:
    try:
        msg = decode(frame)
    except Exception:
        return {}
    return msg.headers if isinstance(msg, Submit) else {}


class _RateLimitedLog:
    """Log at most ``burst`` messages per ``window`` seconds; count the rest."""

    def __init__(self, what: str, burst: int = 20, window: float = 10.0):
        self.what = what
        self.burst, self.window = burst, window
        self.start, self.count, self.suppressed = 0.0, 0, 0

    def warning(self, fmt: str, *args: Any) -> None:
        self.log(logging.WARNING, fmt, *args)

    def info(self, fmt: str, *args: Any) -> None:
        self.log(logging.INFO, fmt, *args)

    def log(self, level: int, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.start > self.window:
            if self.suppressed:
                log.warning("... %d more %s not logged", self.suppressed, self.what)
            self.start, self.count, self.suppressed = now, 0, 0
        self.count += 1
        if self.count <= self.burst:
            log.log(level, fmt, *args)
        else:
            self.suppressed += 1


class Ledger:
    """The tasks one node holds (``held``) and what happens to each."""

    def __init__(self, node: "Node"):
        self.node = node
        self.held: dict[str, Entry] = {}          # accepted, not finished
        self.senders: dict[bytes, list[int]] = {}  # owner's routing id -> [held, bytes] (quotas)
        self.counts: collections.Counter[str] = collections.Counter()
        self.watchers: dict[str, set[bytes]] = {}  # task id -> who asked to hear its result
        self.pending: list[Entry] = []             # accepted this pass: to the pool once journalled
        self.submitted: set[str] = set()           # of them, sent by a process that sends a
                                                   # refused task elsewhere (intake's SUBMITs)
        self.early: dict[str, float] = {}          # id not held here -> when a watcher asked
        self.spread: dict[str, Any] = {}           # accepted here, to go to this member once
                                                   # journalled (a group's members: handoff)
        self._commit_timer: asyncio.Handle | None = None
        self.faillog = _RateLimitedLog("tasks refused at intake")
        # a full disk fails every pass's commit (hundreds a minute under load)
        self.commitlog = _RateLimitedLog("failed journal commits", burst=5)

    # -- accept -----------------------------------------------------------------------
    def accept(self, entry: Entry, msg: Submit | None = None, submitted: bool = False) -> None:
        """Hold a task the journal has (or will have in this pass); it goes to the
        pool at the end of the pass (``flush``), once the journal has committed it.
        ``submitted``: its sender sends it elsewhere if the commit fails (a SUBMIT)."""
        self.held[entry.task_id] = entry
        if submitted:
            self.submitted.add(entry.task_id)
        q = self.senders.get(entry.client)
        if q is None:
            q = self.senders[entry.client] = [0, 0]
        q[0] += 1
        q[1] += entry.size
        self.pending.append(entry)
        headers = msg.headers if msg is not None else _headers(entry.frame)
        if "wf" in headers or entry.name == GROUP or REPLACED_BY in headers:
            entry.wf = headers
        self.node.replicas.accepted(entry, msg)  # a copy to the backup; replies wait for it
        self.node.handoff.taken_back(entry.task_id)
        ev = self.node.events
        if msg is not None and "sent_at" in msg.headers and ev.wants("task-sent"):
            sent = sent_fields(entry.task_id, entry.name, msg)     # the client opted in
            if sent is not None:
                ev.emit("task-sent", **sent)
        if msg is not None and ev.wants("task-received"):
            ev.emit("task-received", **received_fields(entry.task_id, entry.name, msg))

    def flush(self) -> None:
        """End of a loop pass, before replies go out: commit what must be committed,
        then hand the tasks accepted in this pass to the pool."""
        journal = self.node.journal
        if journal.in_tx:
            if self.pending:        # no task is acknowledged before it is journalled
                self.commit()
            elif self._commit_timer is None:
                # only results (and forgets) in this batch: they go out now and are
                # committed within RESULT_COMMIT_DELAY, with the next intake's commit
                # if one comes sooner. A node killed in that window runs those tasks
                # again after a restart (at least once), and their owners already
                # have their results.
                self._commit_timer = asyncio.get_running_loop().call_later(
                    RESULT_COMMIT_DELAY, self._commit_due)
        if self.pending:
            pending, self.pending = self.pending, []
            self.submitted.clear()
            revoked = self.node.control.revoked
            pool = self.node.pool
            spread = self.spread
            disk = self.node.spill.candidates     # to wait on disk: not to the pool
            away: dict[str, tuple[Any, list[Entry]]] = {}
            held = self.held
            queued = False
            for entry in pending:
                if held.get(entry.task_id) is not entry:   # finished in this pass already
                    if spread:                   # (a purge: mesh/node/purge.py): not run
                        spread.pop(entry.task_id, None)
                    continue
                if entry.task_id in revoked:     # revoked in the same loop pass
                    # (the revoke finished it already if it was going to disk: once)
                    self.task_failed(entry, "TaskRevokedError",
                                     revoked_message(entry.task_id, entry.name), states.REVOKED)
                elif disk and entry.task_id in disk:
                    continue
                elif (entry.name == GROUP or (entry.wf is not None and REPLACED_BY in entry.wf)) \
                        and self.node.workflows is not None:
                    self.node.workflows.begin(entry)     # coordinated here, not in a child
                elif spread and entry.task_id in spread:
                    m = spread.pop(entry.task_id)
                    away.setdefault(m.id, (m, []))[1].append(entry)
                else:
                    pool.submit(entry, dispatch=False)
                    queued = True
            if queued:          # once for the pass, not per task: the pass's tasks start
                pool.dispatch()  # highest priority first, then in order (round 16)
            for m, entries in away.values():
                self.node.handoff.hand(entries, "a group's members go over the mesh", m)

    def _commit_due(self, deferred: bool = False) -> None:
        """RESULT_COMMIT_DELAY is over. A timer due in a loop pass runs before the
        pass's flush (asyncio runs due timers before what the pass's reads scheduled):
        if replies wait for that flush, commit right after it instead, so a commit is
        not on the way of a reply (measured: ~30 us on a lone round trip, 1 in 3)."""
        if not deferred and self.node.front.flush_pending:
            self._commit_timer = asyncio.get_running_loop().call_soon(self._commit_due, True)
            return
        self.commit()

    def commit(self) -> None:
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        try:
            self.node.journal.commit()
        except JournalError as e:
            self.journal_failed(e)

    def journal_failed(self, e: JournalError) -> None:
        """A batch did not reach the journal: refuse the tasks of this batch that came
        in a SUBMIT (their senders try another node or report the error); results
        already went to their owners. The others (a workflow's next step, a takeover, a
        handoff taken, a recovered task) have nobody to send them again: they run from
        memory, as a result that cannot be journalled is still delivered."""
        self.commitlog.log(logging.ERROR, "journal commit failed: %s", e)
        node = self.node
        pending, self.pending = self.pending, []
        submitted, self.submitted = self.submitted, set()
        for entry in pending:
            if entry.task_id not in submitted:
                self.pending.append(entry)        # to the pool at the end of this pass
                continue
            self.drop(entry.task_id)
            self.watchers.pop(entry.task_id, None)
            node.front.refuse(entry.client, "journal", f"node {node.name} cannot write its "
                              f"journal, so it did not accept task {entry.task_id}: {e}",
                              entry.task_id)
            node.events.emit("task-rejected", uuid=entry.task_id, name=entry.name,
                             requeue=True, reason=f"journal: {e}")
        if self.pending:
            log.warning("%d task(s) this node took on itself (a workflow's next step, a "
                        "takeover, a handoff) are not in its journal: they run from memory "
                        "(a restart before they finish would not know them)", len(self.pending))

    # -- who holds what: senders' quotas ------------------------------------------------
    def drop(self, task_id: str) -> Entry | None:
        """A task leaves the ledger (finished, given back, refused)."""
        entry = self.held.pop(task_id, None)
        if entry is not None:
            self._unquota(entry)
        return entry

    def _unquota(self, entry: Entry) -> None:
        self.unquota(entry.client, entry.size)

    def unquota(self, client: bytes, size: int) -> None:
        """A task of ``size`` bytes from ``client`` no longer counts for its quota."""
        q = self.senders.get(client)
        if q is not None:
            q[0] -= 1
            q[1] -= size
            if q[0] <= 0:
                del self.senders[client]

    def move(self, entry: Entry, client: bytes) -> None:
        """A held task's owner now speaks through another link (it resent the task)."""
        if entry.client != client:
            self._unquota(entry)
            entry.client = client
            q = self.senders.setdefault(client, [0, 0])
            q[0] += 1
            q[1] += entry.size

    def over_quota(self, client: bytes, size: int) -> str | None:
        """Why a sender may not have one more task of ``size`` bytes held here, or None."""
        q = self.senders.get(client)
        if q is None:
            return None
        cfg = self.node.config
        if q[0] >= cfg.quota_tasks:
            return (f"node {self.node.name} holds {q[0]} tasks from this sender already, its "
                    f"limit (quota_tasks, --quota-tasks); wait for some to finish")
        if q[1] + size > cfg.quota_bytes:
            return (f"node {self.node.name} holds {q[1]} bytes of tasks from this sender; "
                    f"{size} more would pass its limit of {cfg.quota_bytes} (quota_bytes, "
                    "--quota-bytes)")
        return None

    # -- finish -----------------------------------------------------------------------
    def finish(self, task_id: str, client: bytes, state: str, result_frame: bytes,
               name: str = "", keep: bool = True, **event: Any) -> None:
        """A held task's final result: journal it (unless the task keeps none:
        ignore_result, Ignore), then tell its owner and watchers; a workflow's unit
        then starts what comes after it (mesh/node/workflows.py)."""
        node = self.node
        entry = self.drop(task_id)
        self.counts[state] += 1
        replicas = node.replicas
        wf = node.workflows if entry is not None and entry.wf is not None else None
        # the result replaces the backup's copy (a task that keeps none: the copy goes);
        # a workflow step's, once what it starts is copied
        backup = replicas.finished(task_id, state, result_frame if keep else None,
                                   hold=wf is not None, entry=entry)
        try:
            if keep:
                node.journal.finish(task_id, state, result_frame, time.time(), backup)
            else:
                node.journal.remove([task_id])
        except JournalError as e:
            log.error("journal: the result of task %s was not stored: %s", task_id, e)
        if client:                 # b"": a task this node owns (a workflow's step)
            replicas.reply(task_id, client, result_frame)   # once the backup has the task
        self.notify(task_id, result_frame, name, state, client, **event)
        if wf is not None and entry is not None:
            started: list[str] = []
            try:
                started = wf.finished(entry, state, result_frame)
            finally:
                replicas.release(task_id, started)

    def notify(self, task_id: str, result_frame: bytes, name: str, state: str,
               client: bytes = b"", internal: bool = False, **event: Any) -> None:
        """A result is known: events (none for an ``internal`` one: a workflow's
        record), and the processes watching the id."""
        node = self.node
        self.early.pop(task_id, None)
        ev = node.events
        if ev.prefixes or ev.listeners:
            ev.publish_result(task_id, result_frame)
            kind = FINAL_EVENTS.get(state)
            if kind is not None and not internal and ev.wants(kind):
                if state == states.REVOKED:
                    event = {"expired": False, "terminated": False, **event}
                ev.emit(kind, **result_fields(task_id, result_frame), name=name, **event)
        watchers = self.watchers.pop(task_id, None)
        if watchers:
            for ident in watchers:
                if ident != client:
                    node.replicas.reply(task_id, ident, result_frame)

    def failure(self, task_id: str, state: str, exc_type: str, message: str,
                runtime: float = 0.0) -> bytes:
        """The encoded Result of a failure decided by the node (a mesh exception);
        ``runtime``: how long it ran before the node stopped it or lost its child."""
        exc = {"type": exc_type, "module": "mesh.exceptions", "message": message,
               "args": codec.dumps([message])}
        return encode(Result(task_id=task_id, state=state, exc=exc, node=self.node.name,
                             runtime=runtime, date_done=time.time()))

    def fail(self, ident: bytes, task_id: str, exc_type: str, message: str,
             state: str = states.FAILURE, held: bool = False, name: str = "",
             logged: bool = True, runtime: float = 0.0, **event: Any) -> None:
        """Fail a task with a mesh exception: a held one through ``finish``; one refused
        at intake (never held) with a reply only. ``logged=False``: the caller logs a
        summary instead of a line per task (a purge)."""
        if held:
            if logged:
                log.info("task %s %s: %s", task_id, state.lower(), message)
        else:                     # refused at intake: a stream of these must not flood the log
            self.faillog.warning("task %s %s: %s", task_id, state.lower(), message[:300])
        frame = self.failure(task_id, state, exc_type, message, runtime)
        if state == states.REVOKED and not event.get("terminated"):
            self.revoked_signal(task_id, name, expired=bool(event.get("expired")))
        if held:
            self.finish(task_id, ident, state, frame, name, **event)
        else:
            self.counts[state] += 1
            self.node.front.reply(ident, frame)

    def revoked_signal(self, task_id: str, name: str, expired: bool = False,
                       signum: int | None = None) -> None:
        """Celery's ``task_revoked``, in the node: for a task revoked or expired before
        any child ran it, and for one terminated with a signal its child cannot catch
        (SIGKILL: ``signum``, ``terminated=True``). A child terminated with a signal it
        can catch sends its own (mesh/node/child.py). A receiver that raises is logged."""
        sig = signals.task_revoked
        if not sig.has_receivers():
            return
        task = self.node.app.tasks.get(name)
        req = Request(id=task_id, task=name, hostname=self.node.name)
        sig.send(sender=task, request=req, terminated=signum is not None, signum=signum,
                 expired=expired)

    # -- retry ------------------------------------------------------------------------
    def retry(self, entry: Entry, result_frame: bytes, countdown: float) -> None:
        """The task asked to run again: tell its owner (state RETRY, not final) and
        queue it here with retries + 1 after ``countdown`` seconds."""
        node = self.node
        self.counts[states.RETRY] += 1
        msg = decode(entry.frame)
        assert isinstance(msg, Submit)
        eta = time.time() + countdown
        res = decode(result_frame)            # tell the owner when, so a resend keeps it
        payload = msg.payload
        if isinstance(res, Result):
            result_frame = encode(dataclasses.replace(res, eta=eta))
            payload = res.payload or payload  # retry(args=, kwargs=): the next run's call
        node.front.reply(entry.client, result_frame)
        if node.events.wants("task-retried"):
            node.events.emit("task-retried", **result_fields(entry.task_id, result_frame),
                             name=entry.name, eta=eta, retries=msg.retries + 1)
        entry.frame = encode(dataclasses.replace(msg, retries=msg.retries + 1, eta=eta,
                                                 payload=payload))
        entry.eta, entry.started, entry.received = eta, None, time.time()
        # lookups see RETRY with its cause (taskstate.held_state) until it runs again
        entry.progress = (states.RETRY, retry_meta(res)) if isinstance(res, Result) else None
        entry.retried = True
        try:
            node.journal.update_frame(entry.task_id, entry.frame)
        except JournalError as e:
            log.error("journal: the retry of task %s was not stored: %s", entry.task_id, e)
        node.replicas.updated(entry)
        if node.stopping:       # stopping: another node runs it
            node.handoff.give_away([entry])
        else:
            node.pool.submit(entry)

    # -- release, forget --------------------------------------------------------------
    def forget(self, entries: list[Entry], to: str | None = None) -> None:
        """These tasks are no longer ours (handed to node ``to``, or given back
        unstarted): out of the ledger, out of the journal, their copies dropped."""
        gone = []
        wf = self.node.workflows
        for e in entries:
            gone.append(self.drop(e.task_id) or e)
            self.watchers.pop(e.task_id, None)
            if wf is not None and e.task_id in wf.groups.groups:
                wf.groups.ended(e.task_id)   # its coordinator is the taker's now: no pull
                                             # rounds or restarts of members from here
        self.node.replicas.forgotten(gone, to)
        if entries:
            try:
                self.node.journal.remove(e.task_id for e in entries)
            except JournalError as e:
                log.error("journal: could not forget %d released task(s): %s", len(entries), e)

    def release(self, entries: list[Entry], reason: str, target: str | None = None,
                quiet: bool = False) -> None:
        """Give unstarted tasks back to their owners (RELEASE), who resend them:
        to ``target`` when given (shedding), else to another node. Tasks this node owns
        (a workflow's steps: no client) stay held and journalled: nobody would resend
        them (they run here when the node starts again)."""
        node = self.node
        kept = [e for e in entries if not e.client]
        if kept:
            entries = [e for e in entries if e.client]
            log.info("kept %d workflow step(s) this node owns in its journal (%s)", len(kept), reason)
        self.forget(entries)
        by_client: dict[bytes, list[str]] = {}
        for e in entries:
            by_client.setdefault(e.client, []).append(e.task_id)
        for ident, ids in by_client.items():
            node.front.reply(ident, encode(Release(ids, node.name, reason, target)))
        if node.events.wants("task-rejected"):
            extra = {"target": target} if target is not None else {}
            for e in entries:
                node.events.emit("task-rejected", uuid=e.task_id, name=e.name, requeue=True,
                                 **extra, reason=reason)
        if entries and not quiet:
            log.info("gave back %d unstarted task(s) to %d client(s): %s", len(entries),
                     len(by_client), reason)

    # -- what the pool reports (PoolEvents) -------------------------------------------
    def task_done(self, entry: Entry, state: str, result_frame: bytes, runtime: float,
                  countdown: float | None = None, keep: bool = True) -> None:
        if state == states.RETRY:
            self.retry(entry, result_frame, countdown or 0.0)
            return
        if state == states.REPLACED:        # replace(sig): sig runs in its place
            if self.node.workflows is not None:
                self.node.workflows.replaced(entry, result_frame)
            else:
                self.task_failed(entry, "ConfigError", "replace() needs a node that runs workflows")
            return
        self.finish(entry.task_id, entry.client, state, result_frame, entry.name, keep=keep)

    def task_progress(self, entry: Entry, state: str, meta: bytes | None) -> None:
        taskstate.progress(self.node, entry, state, meta)

    def task_failed(self, entry: Entry, exc_type: str, message: str,
                    state: str = states.FAILURE, logged: bool = True, **event: Any) -> None:
        # a task stopped mid-run (hard time limit, revoke --terminate, its child lost)
        # ran until now: the dashboard showed a runtime of 0 for a task killed at 1 s
        runtime = max(0.0, time.time() - entry.started) if entry.started else 0.0
        self.fail(entry.client, entry.task_id, exc_type, message, state, held=True,
                  name=entry.name, logged=logged, runtime=runtime, **event)

    def task_lost(self, entry: Entry, message: str, shutdown: bool = False) -> None:
        """Its child died mid-run. acks_late tasks go back to their owner at shutdown
        (they run elsewhere) and, with reject_on_worker_lost, run again here (a few
        times at most: a task that kills its child every time must not loop forever).
        Otherwise the task fails with WorkerLostError."""
        node = self.node
        task = node.app.tasks.get(entry.name)
        opts = task.options if task is not None else None
        if opts is not None and opts.acks_late:
            if shutdown:
                entry.started = None
                node.handoff.give_away([entry], "node is shutting down; the task was interrupted")
                return
            if opts.reject_on_worker_lost and not node.stopping:
                if entry.redelivered < MAX_REDELIVERIES:
                    entry.redelivered += 1
                    entry.started = None
                    log.warning("%s; running it again (reject_on_worker_lost, %d/%d)",
                                message, entry.redelivered, MAX_REDELIVERIES)
                    node.pool.submit(entry)
                    return
                message += f" (it was run {MAX_REDELIVERIES + 1} times and lost its child each time)"
        self.task_failed(entry, "WorkerLostError", message)

    def task_started(self, entry: Entry, pid: int) -> None:
        ev = self.node.events
        if ev.wants("task-started"):
            ev.emit("task-started", uuid=entry.task_id, name=entry.name, pid=pid)

    def task_starting(self, entry: Entry) -> None:
        """acks_late=False: journal that it started, so a restart never runs it twice."""
        journal = self.node.journal
        try:
            journal.started(entry.task_id)
            journal.commit()
        except JournalError as e:
            log.error("journal: could not record that task %s started: %s", entry.task_id, e)
            self.journal_failed(e)    # tasks accepted this pass were rolled back too

    # -- lookups ----------------------------------------------------------------------
    def processed(self) -> int:
        """Tasks finished here (succeeded, failed or revoked) since start."""
        c = self.counts
        return c[states.SUCCESS] + c[states.FAILURE] + c[states.REVOKED]

    def task_state(self, ident: bytes, task_id: str, watch: bool) -> dict[str, Any]:
        """What this node knows of a task id (the ``result`` command). With ``watch``,
        the asker also gets the Result when the task finishes here."""
        node, tid = self.node, task_id
        if tid in node.control.revoked and tid not in self.held:
            stored = node.journal.get(tid)
            if stored is None or stored.result is None:   # revoked before it got here
                frame = self.failure(tid, states.REVOKED, "TaskRevokedError",
                                     revoked_message(tid))
                return {"task_id": tid, "state": states.REVOKED, "result": frame}
        entry = self.held.get(tid)
        if entry is not None:
            if watch:
                self._watch(tid, ident)
            state = (states.STARTED if entry.started else
                     states.RETRY if entry.retried else states.RECEIVED)
            return taskstate.held_state(node, entry, state)
        stored = node.journal.get(tid)
        if stored is not None and stored.result is not None:
            return taskstate.finished_state(node, tid, stored.state, stored.result)
        if watch and ident:    # not here yet (a workflow's later step): tell them if it comes
            self._watch(tid, ident)
            self.early.pop(tid, None)
            self.early[tid] = time.monotonic()
            self._forget_early()
        waits = stored is not None and self.node.spill.on_disk    # queued, on disk
        return {"task_id": tid, "state": states.RECEIVED if waits else states.UNKNOWN}

    def _watch(self, tid: str, ident: bytes) -> None:
        watchers = self.watchers.setdefault(tid, set())
        if len(watchers) < MAX_WATCHERS:
            watchers.add(ident)

    def _forget_early(self) -> None:
        """Waits for ids that never came here end after EARLY_TTL (or MAX_EARLY)."""
        early, now = self.early, time.monotonic()
        while early:
            tid, at = next(iter(early.items()))
            if len(early) <= MAX_EARLY and now - at < EARLY_TTL:
                break
            del early[tid]
            if tid not in self.held:
                self.watchers.pop(tid, None)
