"""Taking handed tasks (a part of :class:`mesh.node.handoff.Handoffs`): the receiver's
side of a HANDOFF.

The receiver takes each task it can run (registered there, of a queue it serves;
none while it stops): it journals it, holds it, and has its own backup confirm the
copy; then it answers HANDOFF_ACK, with the tasks taken and why each other one was
refused (``flush``, at the end of the loop pass that committed them). A task it holds
already, has finished already or that was revoked is answered as taken (and not held
twice). A shed that crosses one of its own (each saw the other idle) is refused, and
so is a shed task it could keep in one copy only (``NO_BACKUP_REASON``). A HANDOFF
meant for an earlier process at this address is refused at once, so its sender takes
its tasks back. What it took, and from whom, is remembered for a while:
should that giver be declared dead, its unstarted tasks go to its backup
(mesh/node/handoff_cut.py).
"""
from __future__ import annotations

import collections
import functools
import time
from typing import TYPE_CHECKING, Any

from mesh.exceptions import DecodeError
from mesh.membership import MemberState
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry
from mesh.node.shedding import CROSS_REASON
from mesh.node.shedding import REASON as SHED_REASON
from mesh.security.text import safe_logger
from mesh.wire.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Handoff,
    HandoffAck,
    Submit,
    decode,
    encode,
)
from mesh.workflow.ids import GROUP

if TYPE_CHECKING:
    from mesh.node.handoff import _Out
    from mesh.node.ledger import _RateLimitedLog
    from mesh.node.naps import Nap
    from mesh.node.node import Node

log = safe_logger("mesh.handoff")

MOVED_MAX = 100_000      # tasks remembered at most
STRANGERS_MAX = 64       # addresses of non-members answered (refusals) kept a socket to, at most
STOP_REASON = "node is shutting down"
NO_BACKUP_REASON = "no other node is alive here to keep its copy: it stays where it is"


class HandoffTake:
    if TYPE_CHECKING:               # what Handoffs has
        node: Node
        nap: Nap
        received: int
        _out: dict[str, _Out]
        _given_up: collections.OrderedDict[str, _Out]
        _answers: list[tuple[str, bytes]]
        _strangers: collections.OrderedDict[str, None]
        _badlog: _RateLimitedLog
        _from: collections.OrderedDict[str, tuple[float, str]]
        _givers: dict[str, float]

    def on_handoff(self, msg: Handoff) -> None:
        """Tasks from another node: hold them (journal, copy to our backup), then say so."""
        node = self.node
        if msg.source == node.name:
            self._badlog.warning("refused a handoff from %r: not a member", msg.source[:100])
            return
        if msg.target_boot and msg.target_boot != node.boot:
            # (answered even when the sender is not a member here yet: a node restarted
            # under a new name gets at once what its peers queued for the killed one)
            self._refuse_earlier(msg)
            return
        if node.membership.member(msg.source) is None:
            if msg.target_boot == node.boot:
                # meant for this process by a node that knows it, before this one has
                # heard of that node (just started): not answered, so sent again
                self._badlog.info("a handoff from %r waits: not a member here yet (it is "
                                  "sent again)", msg.source[:100])
            else:
                self._badlog.warning("refused a handoff from %r: not a member", msg.source[:100])
            return
        accepted: list[str] = []
        refused: dict[str, Any] = {}
        new: list[str] = []
        giver = node.membership.member(msg.source)
        # (shed by a node that is leaving now: taken even in one copy, as at its stop)
        shed = msg.reason == SHED_REASON and giver is not None and giver.state != MemberState.LEFT
        shedder = getattr(node, "shedder", None)
        if shed and shedder is not None and shedder.crossing(msg.source, time.time()):
            # it shed to us as we shed to it (each saw the other idle): refused, so no
            # task is swapped between two busy nodes (mesh/node/shedding.py)
            log.info("refused %d shed task(s) from %s: %s", len(msg.tasks), msg.source,
                     CROSS_REASON)
            ids = [s.task_id for s in map(_submit_or_none, msg.tasks) if s is not None]
            self._answers.append((msg.source_addr, encode(HandoffAck(
                msg.batch, node.name, [], dict.fromkeys(ids, CROSS_REASON), node.address))))
            node.front.schedule_flush()
            return
        if shed:
            node.replicas.choice.refresh()   # (who is alive now: _take asks who copies)
        for frame in msg.tasks:
            try:
                sub = decode(frame, node.config.max_message_size)
            except DecodeError as e:
                self._badlog.warning("a handed task from %s does not decode: %s", msg.source, e)
                continue
            if type(sub) is not Submit:
                continue
            why = self._take(sub, frame, shed)
            if why is None:
                accepted.append(sub.task_id)
                if node.replicas.pending(sub.task_id):
                    new.append(sub.task_id)
            else:
                refused[sub.task_id] = why
        self.received += len(accepted)
        answer = encode(HandoffAck(msg.batch, node.name, accepted, refused, node.address))
        waiting = set(new)

        def copied(tid: str) -> None:
            waiting.discard(tid)
            if not waiting:
                self._answers.append((msg.source_addr, answer))
                node.front.schedule_flush()
        if not waiting:
            copied("")
        for tid in new:                 # answered once our backup has them too
            node.replicas.after_copy(tid, functools.partial(copied, tid))
        if accepted:
            log.info("took %d task(s) from %s: %s", len(accepted), msg.source, msg.reason)
            now = time.monotonic()
            taken = self._from
            for tid in accepted:
                taken[tid] = (now, msg.source)
                taken.move_to_end(tid)
            self._givers[msg.source] = now
            while len(taken) > MOVED_MAX:
                taken.popitem(last=False)
            self.nap.poke()
            shedder = getattr(node, "shedder", None)
            if shedder is not None and msg.reason == SHED_REASON:   # not straight back
                shedder.took(msg.source, accepted, time.time())

    def _refuse_earlier(self, msg: Handoff) -> None:
        """A handoff queued for an earlier run at this address (killed, then restarted,
        maybe under another name): all refused, so the sender takes its tasks back at
        once; it gives them up or runs them itself."""
        node = self.node
        log.info("refused a handoff of %d task(s) from %s: it was sent to the previous "
                 "process at this address", len(msg.tasks), msg.source[:100])
        earlier = f"sent to a previous run at {node.address} (node {node.name} now)"
        refused: dict[str, Any] = {}
        for frame in msg.tasks:
            handed = _submit_or_none(frame, node.config.max_message_size)
            if handed is not None:
                refused[handed.task_id] = earlier
        self._answers.append((msg.source_addr, encode(HandoffAck(
            msg.batch, node.name, [], refused, node.address))))
        if node.membership.member(msg.source) is None:
            self._strangers[msg.source_addr] = None
            self._strangers.move_to_end(msg.source_addr)
        node.front.schedule_flush()

    def _forget_strangers(self) -> None:
        """(After the answers are sent) close the sockets to the oldest non-members'
        addresses past STRANGERS_MAX, unless a member is there now."""
        if len(self._strangers) <= STRANGERS_MAX:
            return
        members = {m.address for m in self.node.membership.members()}
        sockets = self.node.replicas.sockets
        while len(self._strangers) > STRANGERS_MAX:
            address, _ = self._strangers.popitem(last=False)
            if address not in members:
                sockets.forget(address)

    def _take(self, msg: Submit, frame: bytes, shed: bool = False) -> str | None:
        """Hold one handed task; None when held (or finished) here, else why not."""
        node = self.node
        ledger, tid = node.ledger, msg.task_id
        if node.stopping:
            return STOP_REASON
        if tid in ledger.held:          # ours already; but if we are handing it away
            for out in self._out.values():   # (to the node that sends it back: it shed it
                mine = out.entries.pop(tid, None)   # before our handoff was answered), it
                if mine is not None and not node.stopping:   # stays here: the answer to
                    node.pool.submit(mine)   # ours must not make us forget it
            for out in self._given_up.values():  # nor a late answer to one given up
                out.entries.pop(tid, None)       # (its tasks are in our queue already)
            return None
        if tid in node.control.revoked:
            return None                 # revoked: nothing to run
        task = node.app.tasks.get(msg.name)
        if task is None and msg.name != GROUP:    # (a group's coordinator is the node's)
            return f"task {msg.name!r} is not registered on node {node.name}"
        routing = getattr(node, "routing", None)
        refusal = routing.refusal(msg) if routing is not None else None
        if refusal is not None:          # another queue than ours
            return str(refusal)
        replicas = node.replicas
        if shed and replicas.enabled and not replicas.choice.backup_now(tid, msg):
            # taken, it would be held in one copy (here): we know no alive node to copy
            # it to (the giver, the likeliest, merely suspected here under load), and the
            # giver forgets it at our answer; killed then, we lose it (a loaded run:
            # a task shed to a node killed at once stayed RECEIVED on the survivor)
            return NO_BACKUP_REASON
        # (back after a crash: ours now, whatever was said; its owner's link kept)
        owner = node.reclaim.handed_here(tid)
        journal, now = node.journal, time.time()
        try:
            if not journal.add(tid, owner, frame, now):
                stored = journal.get(tid)
                if stored is not None and stored.result is not None:
                    return None         # finished here already
                if node.spill.holds(tid):
                    return None         # queued here already, on disk (mesh/node/spill.py)
                journal.replace(tid, owner, frame, now)
        except JournalError as e:
            return f"node {node.name} cannot write its journal: {e}"
        node.replicas.forget_copy(tid)     # we were its backup: it is ours now
        limit = msg.time_limit or (task.options.time_limit if task else None) \
            or node.config.time_limit
        entry = Entry(tid, msg.name, owner, frame, msg.priority, msg.eta, msg.expires, limit,
                      task.options.acks_late if task else True)
        ledger.accept(entry, msg)
        return None

    def flush(self) -> None:
        """Send the answers of this pass (the ledger has committed what they took)."""
        if self._answers:
            answers, self._answers = self._answers, []
            for address, frame in answers:
                self.node.replicas.sockets.send(address, frame)
            self._forget_strangers()


def _submit_or_none(frame: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Submit | None:
    """The SUBMIT ``frame`` holds, or None (it does not decode, or is something else)."""
    try:
        sub = decode(frame, max_size)
    except DecodeError:
        return None
    return sub if type(sub) is Submit else None
