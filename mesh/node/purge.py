"""Purge: the ``purge`` control command (Celery's ``celery purge``, ``app.control.purge()``).

Celery's purge deletes the messages waiting in the broker's queues. mesh has no broker:
the tasks waiting for a child are in each node's queue (in memory, and beyond
``--queue-memory`` on disk: mesh/node/spill.py). A purge takes every one of those that
has not started, of every queue or of the ``queues`` named (less ``exclude``), out of
this node and finishes it REVOKED, as a revoke of a queued task does: its owner's wait
ends with ``TaskRevokedError`` (every wait ends in a result or an error), its backup
drops its copy, and the result is kept like any other. Not purged, as in Celery (where
the worker holds them, not the broker): running tasks, tasks sent ahead to a child
(about to start), and tasks waiting for an eta, a countdown, a retry or a rate limit
(``inspect scheduled``; revoke those by id).

Tasks waiting on disk are purged in chunks on the node's loop after the reply
(``PASS_TIME`` of work per pass), so that a purge of a million-task backlog does not
stop the node: the reply says how many were waiting on disk, and the node logs the
count purged when the walk ends.

Not purged either (known, not fixed): a task in a handoff between two nodes when the
purge reaches them (shedding to a peer with room, a node stopping): it is in neither
queue. It escapes the purge if the receiver took the purge before the task, or the
task comes back to its sender refused; the window is a handoff's round trip (up to
its timeouts when the receiver does not answer). Revoke such a task by id.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.node.commands import ControlState, register
from mesh.node.journal import Journal, JournalError
from mesh.security.text import safe_logger
from mesh.wire.control import BadArgs
from mesh.wire.protocol import Submit, decode
from mesh.workflow.ids import GROUP

if TYPE_CHECKING:
    from mesh.node.ledger import Entry
    from mesh.node.node import Node

log = safe_logger("mesh.node")

DISK_CHUNK = 2_000        # tasks on disk read at a time
PASS_TIME = 0.02          # s of purging per loop pass, at most (measured: ~0.65 ms a task,
                          # so a pass of 2,000 held the loop ~1.3 s: SIGTERM, pings waited)
MAX_QUEUES = 100


@dataclass(frozen=True)
class PurgeArgs:
    queues: list[str] | None = None      # only these queues (None: every queue)
    exclude: list[str] | None = None     # not these

    def __post_init__(self) -> None:
        for key in ("queues", "exclude"):
            v = getattr(self, key)
            if v is not None and (len(v) > MAX_QUEUES or not all(0 < len(q) <= 500 for q in v)):
                raise BadArgs(f"purge: {key!r} must be a list of up to {MAX_QUEUES} "
                              "non-empty queue names")


@dataclass(frozen=True)
class PurgeReply:
    purged: int          # tasks taken out of the queue in memory, finished REVOKED
    on_disk: int         # tasks waiting on disk when asked: purged after the reply


class _Filter:
    """Which queued tasks a purge takes, by the queue each was routed to."""

    def __init__(self, node: "Node", req: PurgeArgs) -> None:
        self.node = node
        self.only = set(req.queues) if req.queues is not None else None
        self.exclude = set(req.exclude or ())

    @property
    def everything(self) -> bool:
        return self.only is None and not self.exclude

    def takes(self, frame: bytes, name: str | None = None) -> bool:
        """Whether the task of this SUBMIT ``frame`` is purged (``name``: its task's, if
        known; else read from the frame, decoded once for both)."""
        if self.everything:
            return True
        try:
            msg = decode(frame)
        except Exception:
            msg = None
        sub = msg if isinstance(msg, Submit) else None
        queue = self.node.routing.queue_for(name if name is not None else
                                            sub.name if sub else "",
                                            sub.headers if sub else None)
        return (self.only is None or queue in self.only) and queue not in self.exclude


def _finish(node: "Node", entry: "Entry") -> None:
    node.ledger.task_failed(entry, "TaskRevokedError", f"task {entry.task_id} was purged",
                            states.REVOKED, logged=False)    # one line per purge


def purge(node: "Node", req: PurgeArgs) -> PurgeReply:
    """Take this node's queued tasks (not started, no eta) out and finish them REVOKED."""
    keep = _Filter(node, req)
    pool, spill, held = node.pool, node.spill, node.ledger.held
    taken = [item[2] for item in pool.queue if keep.takes(item[2].frame, item[2].name)]
    if taken:
        pool.discard({id(e) for e in taken})
    taken += _accepted(node, keep)       # (before ``candidates`` is emptied below)
    for tid, entry in list(spill.candidates.items()):    # going to disk, still in memory
        if held.get(tid) is entry and keep.takes(entry.frame, entry.name) \
                and spill.unqueue(tid):
            taken.append(entry)
    for entry in taken:
        _finish(node, entry)
    on_disk = spill.on_disk
    if on_disk:      # (no read back until the walk is done: it would take tasks past it)
        try:
            last = node.journal.disk_last()
        except JournalError as e:
            raise RuntimeError(f"{len(taken)} queued task(s) purged; those waiting on disk "
                               f"could not be read ({e})") from e
        spill.purging += 1
        node.spawn(_purge_disk(node, keep, last), name="purge-disk")
    if taken or on_disk:
        disk = "purged" if keep.everything else "looked at"
        log.info("purge: %d queued task(s) revoked%s", len(taken),
                 f"; {on_disk} waiting on disk are being {disk}" if on_disk else "")
    return PurgeReply(len(taken), on_disk)


def _accepted(node: "Node", keep: _Filter) -> list["Entry"]:
    """Tasks accepted in this loop pass, before the purge, on their way to the queue
    at the end of the pass (``Ledger.flush``, which skips them once finished): sent
    before the purge, they are purged. Not those going to disk (``candidates``, taken
    above), to another member (a group's), a group's coordinator or one with an eta."""
    ledger = node.ledger
    if not ledger.pending:
        return []
    held, disk, spread, now = ledger.held, node.spill.candidates, ledger.spread, time.time()
    return [e for e in ledger.pending
            if held.get(e.task_id) is e and e.task_id not in disk and e.task_id not in spread
            and e.name != GROUP and (e.eta is None or e.eta <= now)
            and keep.takes(e.frame, e.name)]


async def _purge_disk(node: "Node", keep: _Filter, last: int) -> None:
    """The tasks waiting on disk up to position ``last`` (those there when the purge
    was asked: not those sent since), in arrival order, ``PASS_TIME`` of work per loop
    pass (the node serves in between). A node that stops meanwhile revokes the rest
    (``_revoke_rest``): they do not run when it starts again, nor on their backups."""
    journal, spill = node.journal, node.spill
    after, n = 0, 0
    try:
        while spill.on_disk and after < last:
            rows = _rows(journal, after, last)
            if not rows:
                break
            pos = {tid: p for p, tid, _ in rows}
            frames = journal.disk_frames([r[0] for r in rows])
            i, began = 0, time.monotonic()
            while i < len(frames):
                if node.stopping:             # from the first not looked at
                    _revoke_rest(node, keep, pos[frames[i][0]] - 1, last, n)
                    return
                tid, frame = frames[i]
                i += 1
                if keep.takes(frame):
                    entry = spill.take(tid)       # held in memory again, then finished
                    if entry is not None:
                        _finish(node, entry)
                        n += 1
                if time.monotonic() - began > PASS_TIME:
                    await asyncio.sleep(0)       # the node serves, then on
                    began = time.monotonic()
            after = rows[-1][0]
            if node.stopping:
                _revoke_rest(node, keep, after, last, n)
                return
            await asyncio.sleep(0)
    except JournalError as e:
        log.error("purge: the tasks waiting on disk could not all be read (%s): %d purged; "
                  "the others wait on disk still", e, n)
        return
    except Exception:                # (in the node's TaskGroup: never the node's end)
        log.exception("purge: the walk of the tasks waiting on disk failed: %d purged; the "
                      "others wait on disk still", n)
        return
    finally:
        spill.purging -= 1
        node.front.schedule_flush()          # read back what is left (refill runs there)
    log.info("purge: %d task(s) waiting on disk revoked", n)


def _rows(journal: Journal, after: int, last: int) -> list[tuple[int, str, str]]:
    """The next chunk of the disk walk after ``after``, up to position ``last``."""
    return [r for r in journal.disk_walk(after, DISK_CHUNK) if r[0] <= last]


def _revoke_rest(node: "Node", keep: _Filter, after: int, last: int, n: int) -> None:
    """The node stops before the walk is done: the tasks on disk it has not reached
    are revoked as ``revoke`` would (journalled, so they finish REVOKED when read back
    after a restart; sent to the peers, so a backup does not run its copy)."""
    journal, ids = node.journal, []
    while after < last:
        rows = _rows(journal, after, last)
        if not rows:
            break
        after = rows[-1][0]
        if keep.everything:
            ids += [r[1] for r in rows]
        else:
            ids += [tid for tid, frame in journal.disk_frames([r[0] for r in rows])
                    if keep.takes(frame)]
    if ids:
        journal.revoke(ids, time.time())
        node.ledger.commit()
        node.control.forward(ids, False, "SIGKILL")
    log.warning("purge: the node is stopping: %d task(s) waiting on disk revoked, the "
                "other %d revoked by id (they finish REVOKED when this node starts again)",
                n, len(ids))


@register("purge", "control", PurgeArgs, builtin=True)
def purge_command(state: ControlState, req: PurgeArgs) -> Any:
    """Revoke every queued task that has not started (Celery's purge); -Q/-X by queue."""
    return purge(state.node, req)
