"""Sending the copies (a part of :class:`mesh.node.replicas.Replicas`): the REPLICATE
batches, one in flight per backup, their confirmation, resends and reroutes.

Each pass's batches go at its end (``flush``), one REPLICATE in flight per backup, so
batches grow with the load; a batch is sent in parts of at most ``BATCH_BYTES``. A
REPLICATE_ACK opens what waited on the copies it carried (mesh/node/copy_gates.py).
One not confirmed within ``RESEND_AFTER`` is sent again to the same backup while it is
alive; a batch for a backup that is gone goes to its tasks' new backups
(``_reroute``), its drops parked until it is alive again. A backup alive or suspected
that has confirmed nothing for ``COPY_STALL`` is *stalled*: the results it did not
confirm are no longer kept for it (``_stalled``: one copy here, the journal names it).
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from mesh.membership import MemberState
from mesh.node.gossip import boot_of
from mesh.security.text import safe_logger
from mesh.wire.protocol import Replicate, ReplicateAck, encode

if TYPE_CHECKING:
    import itertools
    from typing import Any

    from mesh.node.backup_choice import BackupChoice
    from mesh.node.copies import Copies
    from mesh.node.copy_back import CopyBack
    from mesh.node.disk_copies import DiskCopies
    from mesh.node.ledger import Entry, _RateLimitedLog
    from mesh.node.naps import Nap
    from mesh.node.node import Node
    from mesh.node.peers import PeerSockets

log = safe_logger("mesh.replicas")

RESEND_AFTER = 0.5       # s before an unconfirmed REPLICATE is sent again
COPY_STALL = 10.0        # s a backup not dead may confirm nothing before the results
                         # it has not confirmed stop being sent again (one copy for now)
BATCH_BYTES = 4 * 1024 * 1024   # bytes of frames in one REPLICATE at most (well under
                                # the message size limit)


@dataclasses.dataclass
class _Batch:
    """What goes to one backup in its next REPLICATE."""
    tasks: dict[str, bytes] = dataclasses.field(default_factory=dict)
    results: dict[str, tuple[str, bytes]] = dataclasses.field(default_factory=dict)
    # id -> the node it was handed to ("": not handed on; Replicate.handed_to)
    drop: dict[str, str] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.results or self.drop)


@dataclasses.dataclass
class _Sent:
    backup: str
    batch: _Batch
    at: float


class ReplicasSend:
    if TYPE_CHECKING:               # what Replicas has
        node: Node
        nap: Nap
        sockets: PeerSockets
        choice: BackupChoice
        copies: Copies
        disk_copies: DiskCopies
        back: CopyBack
        _out: dict[str, _Batch]
        _sent: dict[str, _Sent]
        _busy: dict[str, str]
        _unconfirmed_since: dict[str, float]
        _boot_of: dict[str, Any]
        _parked: dict[str, dict[str, str]]
        _ids: itertools.count[int]
        _prefix: str
        _result_wait: set[str]
        copies_sent: int
        copies_confirmed: int
        results_given_up: int
        _stall_log: _RateLimitedLog

        def _queue(self, backup: str) -> _Batch: ...
        def _track(self, entry: Entry, backup: str) -> None: ...
        def _open(self, tid: str) -> None: ...

    def flush(self) -> None:
        """Send this pass's REPLICATEs.

        (The backup acknowledges copies once written, in Copies.on_replicate, and
        commits them with the ledger's next commit (within RESULT_COMMIT_DELAY, 2 ms,
        or with the intakes of this pass), as results are: losing an acknowledged copy
        takes its holder and the backup dying within those milliseconds. Committing
        before each acknowledgement cost a sqlite commit per copy batch, a fifth of
        the mesh's throughput.)"""
        if self._out:
            busy = self._busy
            for backup in [b for b in self._out if b not in busy]:
                batch = self._out.pop(backup)
                if batch:
                    self._send(backup, batch)

    def _send(self, backup: str, batch: _Batch) -> None:
        node = self.node
        member = node.membership.member(backup)
        if member is None or member.state != MemberState.ALIVE:
            self._reroute(backup, batch)
            return
        self._unconfirmed_since.setdefault(backup, time.monotonic())
        for part in _split(batch):
            bid = self._prefix + str(next(self._ids))
            results = part.results
            drop = sorted(part.drop)
            handed_to = [part.drop[t] for t in drop]
            msg = Replicate(bid, node.name, node.address, list(part.tasks), list(part.tasks.values()),
                            list(results), [r[0] for r in results.values()],
                            [r[1] for r in results.values()], drop,
                            handed_to if any(handed_to) else [])
            self._sent[bid] = _Sent(backup, part, time.monotonic())
            self.nap.poke()
            self._busy[backup] = bid
            self._boot_of.setdefault(backup, boot_of(member.meta))
            self.copies_sent += len(part.tasks)
            self.sockets.send(member.address, encode(msg))

    def _reroute(self, backup: str, batch: _Batch) -> None:
        """A batch for a backup that is gone: its copies and results go to the tasks'
        new backups; its drops wait until it is alive again (moot if it never is)."""
        if batch.drop:
            self._parked.setdefault(backup, {}).update(batch.drop)
        for tid, frame in batch.tasks.items():
            entry = self.node.ledger.held.get(tid)
            if entry is not None:
                new = self.choice.choose(tid, entry)
                self._track(entry, new)
                if new:
                    self._queue(new).tasks[tid] = frame
                else:
                    self._open(tid)            # nobody to copy to: one copy for now
        moved: dict[str, list[str]] = {}
        now = time.monotonic()
        stalled: dict[str, dict[str, tuple[str, bytes]]] = {}
        for tid, result in batch.results.items():
            new = self.choice.choose(tid)
            if new and self._is_stalled(new, now):
                stalled.setdefault(new, {})[tid] = result    # (the journal names it)
            elif new:
                self._queue(new).results[tid] = result
            else:
                self._open(tid)
            moved.setdefault(new, []).append(tid)
        for new, results in stalled.items():
            self._stalled(new, results, now)
        if moved:
            self.copies.results_moved(moved)

    def on_ack(self, msg: ReplicateAck) -> None:
        sent = self._sent.get(msg.batch)
        if sent is None or sent.backup != msg.node:
            return
        del self._sent[msg.batch]
        self._unconfirmed_since.pop(sent.backup, None)
        if self._busy.get(sent.backup) == msg.batch:
            del self._busy[sent.backup]
            if sent.backup in self._out:
                self.node.front.schedule_flush()     # the next batch for it goes now
        self.copies_confirmed += len(sent.batch.tasks)
        for tid in sent.batch.tasks:
            if tid not in self._result_wait:       # (its result is on the way: wait for it)
                self._open(tid)
        for tid in sent.batch.results:
            self._result_wait.discard(tid)
            self._open(tid)
        if self.disk_copies.inflight:
            self.disk_copies.confirmed(sent.backup, sent.batch.tasks)
        if self.back.moving:
            self.back.confirmed(sent.backup, list(sent.batch.tasks))

    def _resend(self, now: float) -> None:
        due = [b for b, s in self._sent.items() if now - s.at > RESEND_AFTER]
        for bid in due:
            sent = self._sent.pop(bid)
            if self._busy.get(sent.backup) == bid:
                del self._busy[sent.backup]
            member = self.node.membership.member(sent.backup)
            if member is not None and member.state == MemberState.ALIVE:
                batch = self._queue(sent.backup)        # same backup, again
                held = self.node.ledger.held
                for tid, frame in sent.batch.tasks.items():
                    entry = held.get(tid)
                    if entry is not None and entry.backup == sent.backup:
                        batch.tasks.setdefault(tid, frame)
                if self._is_stalled(sent.backup, now):
                    self._stalled(sent.backup, sent.batch.results, now)
                else:
                    for tid, result in sent.batch.results.items():
                        batch.results.setdefault(tid, result)
                for tid, to in sent.batch.drop.items():
                    batch.drop.setdefault(tid, to)      # (a newer drop of it says more)
            else:
                self._reroute(sent.backup, sent.batch)
        if due:
            # (its backup is free again: what was queued for it meanwhile, in a batch
            # _queue had made while this one was in flight, goes now, as on_ack does;
            # before, it waited for some other flush, for ever on an idle node)
            self.node.front.schedule_flush()

    def unconfirmed_results(self) -> int:
        """Results in memory for their backups, not confirmed yet (to send or sent)."""
        return sum(len(b.results) for b in self._out.values()) + \
            sum(len(s.batch.results) for s in self._sent.values())

    def _forget_stalls(self) -> None:
        """The time since a backup last confirmed is kept while it is alive or suspected
        (a member that answers probes now and then but never confirms a copy, as the
        hostile soak's made-up ones did, flickers between the two: a stall counted from
        each return to alive never came, and its results went round, kept in memory,
        for ever); forgotten once it is dead, left or unknown (back later, it starts
        afresh)."""
        ms = self.node.membership
        for b in list(self._unconfirmed_since):
            m = ms.member(b)
            if m is None or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
                del self._unconfirmed_since[b]

    def _is_stalled(self, backup: str, now: float) -> bool:
        """``backup`` has confirmed no copy for COPY_STALL (while alive or suspected)."""
        return now - self._unconfirmed_since.get(backup, now) > COPY_STALL

    def _stalled(self, backup: str, results: dict[str, tuple[str, bytes]], now: float) -> None:
        """``backup`` has confirmed no copy for COPY_STALL: the results it did not
        confirm are not sent again (nor kept for it), also when they come back to it
        from a reroute (it was suspected a moment). They stay in one copy
        here; the journal names ``backup`` as their other copy, so its departure
        copies them to another node (Copies.note_departures). Replies waiting for
        them go now. (Held tasks are still sent again: they are held anyway.)"""
        if not results:
            return
        self.results_given_up += len(results)
        for tid in results:
            self._open(tid)
        self._stall_log.warning(
            "backup %s, not dead, confirmed no copy for %.0f s: %d result(s) it did not "
            "confirm stay in one copy here (copied to another node if it goes)",
            backup, now - self._unconfirmed_since.get(backup, now), len(results))


def _split(batch: _Batch) -> list[_Batch]:
    """A batch in parts of at most BATCH_BYTES of frames each."""
    size = sum(len(f) for f in batch.tasks.values()) + \
        sum(len(r[1]) for r in batch.results.values())
    if size <= BATCH_BYTES:
        return [batch]
    parts: list[_Batch] = []
    cur, n = _Batch(drop=dict(batch.drop)), 0
    for tid, frame in batch.tasks.items():
        if n and n + len(frame) > BATCH_BYTES:
            parts.append(cur)
            cur, n = _Batch(), 0
        cur.tasks[tid] = frame
        n += len(frame)
    for tid, result in batch.results.items():
        if n and n + len(result[1]) > BATCH_BYTES:
            parts.append(cur)
            cur, n = _Batch(), 0
        cur.results[tid] = result
        n += len(result[1])
    parts.append(cur)
    return parts
