"""Reclaim: a holder back after a crash runs again only what no other node took over.

A node killed (or cut off) while it held tasks is declared dead by membership; the
backup of each task runs its copy (mesh/node/takeover.py), and an owner that
was still there sent its tasks to that backup. When the node starts again on its data
dir (same ``--name`` or not), its journal still has those tasks unfinished. Run as they
are, every one of them would run twice.

So the tasks recovery finds (mesh/node/recovery.py) wait here (``hold``) until the
mesh says which of them another node has:

1. once the node is ready, it waits up to ``JOIN_WAIT`` s to know an alive member (its
   seeds answer, mDNS finds one, or a peer that had it as a seed joins it again); with
   none by then, nothing is asked;
2. it sends every alive member a RECLAIM with the waiting ids (``CHUNK`` per message),
   and so to each member that becomes alive while it waits: until every seed
   (``--peers``) has been asked, or ``SETTLE`` s, the answers are not all in;
3. each answers RECLAIMED (``answer``): the ids it holds (taken over, queued, on its
   disk, running), and the stored RESULT frames of those that finished there (not
   what it handed on lately, nor what it keeps a copy of for another holder: either
   may be the asker's now, see ``answer``; the holder answers for itself). In the
   same step it drops the copies of these ids it kept for a holder that is gone (or
   for the asker; another live holder's stay): the asker holds them again, so
   the takeover that would come later does not run them a second time. It copies
   them again: those in memory as it holds them, those on its disk by a walk of them
   (mesh/node/disk_copies.py) once the answers are in (until 2026-12 those waited
   with one copy, the asker's journal, until read back);
4. after every member answered, or ``ANSWER_WAIT`` s, each waiting task is:
   * finished elsewhere (a RESULT came): the result is stored here too (a lookup or a
     resend of the id here gets it), the owner gets it, nothing runs;
   * held elsewhere: out of the journal, remembered as moved (an owner resending it
     here gets MOVED to that node, and is sent one now), nothing runs;
   * otherwise: held and run here, as before;
   a task handed here meanwhile is held here, whatever was answered (``handed_here``).

At least once stays the floor: a member that does not answer in time, or no member at
all (the taker is gone too), leaves the tasks to run here. A resend of a waiting task
by its owner meanwhile is not run twice: it only names the link its answer goes to.
Tasks waiting on this node's disk (the deep backlog, mesh/node/spill.py) are asked
about too, and not read back until the answers are in (``ANSWER_WAIT`` grows with
the number of ids, up to ``ANSWER_WAIT_MAX``). A known gap (docs/handoff.md): a task
that keeps no result (``ignore_result``) leaves no trace once it ran elsewhere, and
runs again here.
"""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Container
from typing import TYPE_CHECKING

from mesh import states
from mesh.exceptions import DecodeError
from mesh.membership import Member, MemberState
from mesh.node import fence  # (a module: fence.py uses this one's too)
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.security.text import safe_logger
from mesh.wire.protocol import Moved, Reclaim, Reclaimed, Result, decode, encode

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.replicas")

JOIN_WAIT = 3.0        # s to learn an alive member before asking
ANSWER_WAIT = 3.5      # s the members' answers are waited for, at most, plus
PER_ID = 1 / 20_000    # s per id asked about (a deep backlog on disk: its lookups),
ANSWER_WAIT_MAX = 8.0  # up to this in all
CHUNK = 5_000          # ids per RECLAIM
RESULT_BYTES = 4 * 1024 * 1024   # of RESULT frames in one RECLAIMED at most (the others
                                 # are answered as held: a lookup by id finds them there)
STEP = 0.02
SETTLE = 1.0           # s more members may become alive and be asked, when not every
                       # seed is a member yet
HELD = (states.RECEIVED, states.STARTED, states.RETRY)
DEFER_MARGIN = 0.5     # s: a deferred answer's way back, and timers' slack
DEFER = ANSWER_WAIT - DEFER_MARGIN   # s a RECLAIM from a node not a member here yet waits
                       # for it to be one (3 s): its asker waits longer for the answers
                       # (``answer_wait``), so a deferred answer comes while it still
                       # waits. (With 2 s against 3 s, one answered in between came too
                       # late: the asker had run every task, those the answerer held too,
                       # and the answer dropped the copies the answerer kept for it.)
DEFER_MAX = 256        # such RECLAIMs kept at most
DEFER_MAX_BYTES = 32 * 1024 * 1024    # and their ids' size (deferred_size), at most
REASON = "taken over while this node was down"


class Reclaimer:
    """The recovered tasks waiting for the mesh's answer, and the answers to others."""

    def __init__(self, node: "Node"):
        self.node = node
        self.waiting: dict[str, Entry] = {}        # recovered into memory
        self.disk: dict[str, tuple[bytes, int]] = {}   # waiting on disk: id -> (owner,
                                                   # bytes); not read back until answered
        self._round = 0
        self.answers = Answers()
        self._expected = self.answers.expected      # member -> RECLAIMED parts still due
        self.counts: collections.Counter[str] = collections.Counter()
        self._asked: dict[str, str] = {}           # member id -> address, asked this round
        self._badlog = _RateLimitedLog("refused reclaims")
        # RECLAIMs from nodes not members here yet (a node restarted under a new name
        # learns its peers from the traffic queued for its address before they learn of
        # it), answered once they are: (when it came, the message)
        self._deferred: list[tuple[float, Reclaim]] = []
        self._deferred_bytes = 0                   # their deferred_size, summed
        self.purge = False     # meshnode --purge: what would run here is revoked instead
        # the same question, from a node declared dead while it only stalled
        self.fence = fence.Fence(node)             # (mesh/node/fence.py)

    # -- the returning holder ---------------------------------------------------------
    def hold(self, entry: Entry) -> None:
        """(Recovery) a task to run unless another node has it."""
        self.waiting[entry.task_id] = entry

    def start(self) -> None:
        """(Recovery, at start) ask the mesh once the node is ready, about these and
        the tasks waiting on disk."""
        self.fence.start()
        try:
            self.disk = {t: (c, n) for t, c, n in self.node.journal.disk_tasks()}
        except JournalError as e:
            log.error("journal: cannot list the tasks waiting on disk (they run here, "
                      "whichever node ran them while this one was down): %s", e)
        if self.waiting or self.disk:
            self.node.spawn(self._run(), name="reclaim")
        elif self.purge:
            self.purge = False
            log.warning("--purge: this node held no unfinished task: nothing to purge")

    def handed_here(self, task_id: str) -> bytes:
        """Another node hands this node a task that waits for the answers (it held
        it: taken over, and shed here now): the handoff is the latest word, whatever
        that node answered before it, and its sender forgets the task once answered.
        So the answers do not settle it: it is held as the handoff holds it (one on
        disk is read back in turn). Settled as "held elsewhere", it would be dropped.
        The owner's link this node knows for it (its own, or the one it resent the
        task on while waiting: ``resent``), so that its result still goes there."""
        entry = self.waiting.pop(task_id, None)
        if entry is not None:
            self.counts["handed_here"] += 1
            return entry.client
        if self.disk.pop(task_id, None) is not None:
            self.counts["handed_here"] += 1
        return b""

    def resent(self, task_id: str, ident: bytes) -> bool:
        """An owner sent a waiting task again: its answer goes to that link (True)."""
        entry = self.waiting.get(task_id)
        if entry is None:
            return False
        entry.client = ident
        return True

    async def _run(self) -> None:
        try:
            await self._ask()
        except Exception:          # (never left waiting: the disk part would never be read)
            log.exception("asking the mesh about the recovered tasks failed: they run here")
        self._resolve()

    async def _ask(self) -> None:
        node = self.node
        await node.ready.wait()
        ms = node.membership
        peers = ms.alive_members(include_self=False)
        if not peers:
            deadline = time.monotonic() + JOIN_WAIT
            while not peers and time.monotonic() < deadline:
                await asyncio.sleep(STEP)
                peers = ms.alive_members(include_self=False)
        self._round += 1
        ids = [*self.waiting, *self.disk]
        asked = self._asked = {}                    # member id -> its address
        self._send(peers, ids, asked)
        wait = answer_wait(len(ids))
        log.info("journal: %d recovered task(s) wait until %d other node(s) say which of "
                 "them they took over (%.1f s at most)", len(ids), len(peers),
                 wait if peers else 0)
        if not peers:
            return
        # a member that becomes alive meanwhile (a seed that answers later) is asked
        # too: until every seed has been asked, or SETTLE s, the answers are not all in
        start = time.monotonic()
        deadline, settle = start + wait, start + SETTLE
        gossip = getattr(node, "gossip", None)       # (not the seeds that are this node)
        seeds = set(getattr(gossip, "seeds", node.config.peers)) - {node.address}
        while time.monotonic() < deadline:
            self._send(ms.alive_members(include_self=False), ids, asked)
            if not self._expected and (seeds <= set(asked.values())
                                       or time.monotonic() >= settle):
                break
            await asyncio.sleep(STEP)
        if self._expected:
            log.warning("journal: no answer from %s within %.1f s: the recovered tasks they "
                        "may have taken over run here too (at least once)",
                        ", ".join(sorted(self._expected))[:300], wait)

    def _send(self, peers: list[Member], ids: list[str], asked: dict[str, str]) -> None:
        """RECLAIM ``ids`` to each of ``peers`` not asked yet this round."""
        node = self.node
        for m in peers:
            if m.id in asked:
                continue
            asked[m.id] = m.address
            for s in range(0, len(ids), CHUNK):
                frame = encode(Reclaim(node.name, node.address, self._round, ids[s:s + CHUNK]))
                node.replicas.sockets.send(m.address, frame)
                self._expected[m.id] = self._expected.get(m.id, 0) + 1

    def on_reclaimed(self, msg: Reclaimed) -> None:
        if msg.round < 0:     # (the fence's rounds: mesh/node/fence.py)
            self.fence.on_answer(msg)
            return
        if msg.round != self._round or msg.source not in self._expected:
            return            # late, or from a node not asked
        self.answers.note(msg, self.waiting, self.disk)

    def _resolve(self) -> None:
        node = self.node
        ledger, journal, front = node.ledger, node.journal, node.front
        waiting, self.waiting = self.waiting, {}
        disk, self.disk = self.disk, {}
        held, results = self.answers.take()
        moved: dict[tuple[bytes, str], list[str]] = {}
        finished = disk_here = 0
        purge, self.purge = self.purge, False
        purged: list[Entry] = []
        purged_disk: list[str] = []
        for tid in [*waiting, *disk]:
            entry = waiting.get(tid)
            got, where = results.get(tid), held.get(tid)
            state = final_state(tid, got[1]) if got is not None else None
            if state is None and where is None:
                if entry is not None:
                    if purge:
                        purged.append(entry)
                    else:
                        ledger.accept(entry)  # no node has it: it runs here
                else:
                    disk_here += 1            # (on disk: read back in order)
                    if purge:
                        purged_disk.append(tid)
                continue
            try:
                client = entry.client if entry is not None else \
                    journal.on_disk(tid) or disk[tid][0]    # (its latest link)
                if got is not None and state is not None:
                    journal.finish(tid, state, got[1], time.time(), got[0])
                    finished += 1
                    if client:
                        front.reply(client, got[1])
                    for ident in ledger.watchers.pop(tid, ()):
                        front.reply(ident, got[1])
                else:
                    journal.remove([tid])
                    moved.setdefault((client, str(where)), []).append(tid)
            except JournalError as e:
                log.error("journal: task %s, taken over elsewhere, is run here: %s", tid, e)
                if entry is not None:
                    ledger.accept(entry)
                else:
                    disk_here += 1
                continue
            if entry is None:
                self._off_disk(client, disk[tid][1])
        n_moved = tell_moved(node, moved, REASON)
        total = len(waiting) + len(disk)
        n_purged = len(purged) + len(purged_disk)
        here = total - finished - n_moved - n_purged
        self.counts["finished_elsewhere"] += finished
        self.counts["held_elsewhere"] += n_moved
        self.counts["run_here"] += here
        if purge:       # (those on disk revoked: not copied again, they finish REVOKED)
            from mesh.node.recovery import purge_recovered
            disk_here -= purge_recovered(node, purged, purged_disk, finished + n_moved)
        ledger.commit()
        front.schedule_flush()
        if disk_here:
            # every member asked dropped the copies it kept of them (``answer``): those
            # run here are copied again, those in memory as they are held (``accept``),
            # those on disk by a walk of them (else one copy, this journal, until read
            # back: a deep backlog's, for hours; test_e2e_backlog_recopy.py)
            node.replicas.disk_copies.walk(stale=self._asked)
        log.info("journal: of %d recovered task(s) (%d of them on disk), %d finished on "
                 "another node and %d are held by another node: not run here; %d run here%s",
                 total, len(disk), finished, n_moved, here,
                 f", {n_purged} purged (--purge)" if purge else "")

    def _off_disk(self, client: bytes, size: int) -> None:
        """A task that waited on disk will not be read back: out of the counts."""
        spill = self.node.spill
        spill.on_disk = max(spill.on_disk - 1, 0)
        self.node.ledger.unquota(client, size)

    # -- another node, back after a crash, asks ---------------------------------------
    def answer(self, msg: Reclaim) -> None:
        node = self.node
        member = node.membership.member(msg.source)
        if member is None and msg.source != node.name and len(self._deferred) < DEFER_MAX:
            size = deferred_size(msg)
            if self._deferred_bytes + size <= DEFER_MAX_BYTES:
                if not self._deferred:
                    asyncio.get_running_loop().call_later(STEP * 5, self._answer_deferred)
                self._deferred.append((time.monotonic(), msg))
                self._deferred_bytes += size
                return
        if member is None or member.address != msg.source_addr or msg.source == node.name:
            self._badlog.warning("refused a reclaim from %r: not a member at that address",
                                 msg.source[:100])
            return
        # (the copies kept here for another live holder stay, and say nothing: below)
        node.replicas.copies.reclaim(msg.source, msg.ids)
        ledger = node.ledger
        held: list[str] = []
        result_ids: list[str] = []
        results: list[bytes] = []
        size = 0
        aside = self.fence.aside
        # being handed to the asker, not answered yet: the asker may hold it already (a
        # fence raised as it took it), and answered held it dropped it, then this node
        # dropped it at the handoff's answer: no node had it (ci10, a loss). Not
        # answered, both may run it, rather than neither. (One given up on is answered
        # held, and the asker's late answer then leaves it here: ``keep`` below.)
        going = node.handoff.going_to(msg.source)
        for tid in msg.ids:
            if tid in self.waiting or tid in self.disk or tid in aside or tid in going:
                continue        # back after a crash (or a stall) too: both run it, rather
                                # than neither
            st = ledger.task_state(b"", tid, False)
            if "result" in st and size + len(st["result"]) <= RESULT_BYTES:
                result_ids.append(tid)
                results.append(st["result"])
                size += len(st["result"])
            elif "result" in st:      # (past the answer's size: it is found here, by id)
                held.append(tid)
            elif st["state"] in HELD:
                held.append(tid)
            # (Not a task this node handed on lately: that says where it went then, not
            # who has it now. It may have gone to the asker itself, whose journal has it
            # because of that handoff, or on from there to the asker; counted as held
            # elsewhere, the asker dropped it and no node had it. The node it went to is
            # asked too, and answers for itself. Nor one this node keeps a copy of for
            # another live holder, for the same reason: that holder may have handed it
            # to the asker, its drop of the copy still on the way. Answered held, the
            # asker dropped it, this node dropped the asker's copy (reclaimed), and the
            # drop then took the last one (until 2026-12; test_a_task_handed_to_a_holder_
            # that_restarts_before_the_givers_drop_arrives_runs_there). That holder is
            # asked too and answers for itself: held there, the asker drops it; not
            # answered in time, both run it, rather than neither.)
        node.handoff.keep(msg.source, held)
        self.counts["answered"] += 1
        self.counts["answered_taken"] += len(held) + len(result_ids)
        node.replicas.sockets.send(msg.source_addr, encode(
            Reclaimed(node.name, msg.round, held, result_ids, results)))

    def _answer_deferred(self) -> None:
        """The deferred RECLAIMs whose sender is a member now are answered; those still
        waiting after DEFER s are refused (the asker runs the tasks: at least once)."""
        now, waiting = time.monotonic(), []
        ms = self.node.membership
        for at, msg in self._deferred:
            if ms.member(msg.source) is not None or now - at > DEFER:
                self._deferred_answer(msg)
            else:
                waiting.append((at, msg))
        self._deferred = waiting
        self._deferred_bytes = sum(deferred_size(m) for _, m in waiting)
        if waiting:
            asyncio.get_running_loop().call_later(STEP * 5, self._answer_deferred)

    def _deferred_answer(self, msg: Reclaim) -> None:
        try:
            if self.node.membership.member(msg.source) is None:
                self._badlog.warning("refused a reclaim from %r: not a member within %.0f s",
                                     msg.source[:100], DEFER)
            else:
                self.answer(msg)
        except Exception:            # (a timer callback: never let it end the loop's work)
            log.exception("answering a deferred reclaim from %r failed", msg.source[:100])

    def status(self) -> dict[str, int]:
        return {"reclaim_waiting": len(self.waiting) + len(self.disk),
                "reclaim_finished_elsewhere": self.counts["finished_elsewhere"],
                "reclaim_held_elsewhere": self.counts["held_elsewhere"],
                "reclaim_run_here": self.counts["run_here"],
                "reclaim_handed_here": self.counts["handed_here"],
                **self.fence.status()}


def deferred_size(msg: Reclaim) -> int:
    """What a deferred RECLAIM keeps, about: its ids, and a str object's overhead each."""
    return sum(len(i) for i in msg.ids) + 64 * len(msg.ids)


def answer_wait(n: int) -> float:
    """How long a returning holder waits for the answers about ``n`` ids."""
    return min(ANSWER_WAIT + n * PER_ID, ANSWER_WAIT_MAX)


class Answers:
    """The members' answers to one round of RECLAIMs (a returning holder's, a fence's)."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = {}           # member -> RECLAIMED parts still due
        self.held: dict[str, str] = {}               # id -> a node that holds it
        self.results: dict[str, tuple[str, bytes]] = {}   # id -> (node, RESULT frame)

    def note(self, msg: Reclaimed, *asked: Container[str]) -> None:
        """A member's RECLAIMED: which ids asked about (in any of ``asked``) it holds,
        and which it finished (the first answer for an id stays); one part less is due
        from it."""
        for tid in msg.held:
            if any(tid in a for a in asked):
                self.held.setdefault(tid, msg.source)
        for tid, frame in zip(msg.result_ids, msg.results):
            if any(tid in a for a in asked):
                self.results.setdefault(tid, (msg.source, frame))
        left = self.expected[msg.source] - 1
        if left > 0:
            self.expected[msg.source] = left
        else:
            del self.expected[msg.source]

    def take(self) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
        """(held, results) so far; none is due any more."""
        held, results = self.held, self.results
        self.held, self.results = {}, {}
        self.expected.clear()
        return held, results


def tell_moved(node: "Node", moved: dict[tuple[bytes, str], list[str]], reason: str) -> int:
    """Tasks held by another node now (``moved``: (owner, node) -> ids), out of this
    one: remembered as moved (a resend here gets MOVED), and their owner told now.
    How many."""
    for (client, where), ids in moved.items():
        m = node.membership.member(where)
        address = m.address if m is not None else ""
        node.handoff.remember(ids, where, address, reason)
        if client and address:
            node.front.reply(client, encode(Moved(ids, node.name, address, where, reason)))
    return sum(len(v) for v in moved.values())


def final_state(task_id: str, frame: bytes) -> str | None:
    """The final state a RESULT frame for ``task_id`` carries, or None (not one)."""
    try:
        msg = decode(frame)
    except DecodeError:
        return None
    if type(msg) is not Result or msg.task_id != task_id or msg.state not in states.READY_STATES:
        return None
    return msg.state


def live_elsewhere(node: "Node", holder: str, asker: str) -> bool:
    """Is ``holder`` a live member other than ``asker`` (it holds its tasks itself)?"""
    if holder == asker:
        return False
    m = node.membership.member(holder)
    return m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
