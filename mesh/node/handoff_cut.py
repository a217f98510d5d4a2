"""A handoff cut off (a part of :class:`mesh.node.handoff.Handoffs`): its other side
declared dead before this node knew how it ended.

A handoff not answered by a receiver declared dead (or gone) goes to the receiver's
backup for its tasks instead (``_to_its_backup``): the receiver may have taken them,
its answer lost as it was cut off, and that backup then runs the copy it keeps
(mesh/node/takeover.py); run here too, a task ran three times (the receiver, cut off,
runs it as well). Tasks taken from a giver declared dead within ``GIVER_TTL`` s, not
started here, go to the giver's backup for them (``_givers_gone``): the giver may not
have had this node's answer, and runs them; its owners' failover goes to that backup.
docs/handoff.md ("Limits") tells both cases.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.membership import Member, MemberState
from mesh.node.handoff_take import _submit_or_none
from mesh.node.ledger import Entry
from mesh.rendezvous import backup_for
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    import collections

    from mesh.node.handoff import _Out
    from mesh.node.node import Node

log = safe_logger("mesh.handoff")

# (not sheds: the node they go to takes them even if it shed to the giver a moment ago)
UNANSWERED_REASON = ("handed to a node that did not answer and is gone: sent to the node "
                     "that keeps its copy there")
GIVER_GONE_REASON = ("its giver was declared dead, maybe before it had this node's answer: "
                     "sent to the node that keeps the giver's copy")
GIVER_TTL = 30.0         # s a task taken from a giver goes to its backup if it is declared
                         # dead meanwhile (as long as a giver may send a batch again)


class HandoffCut:
    if TYPE_CHECKING:               # what Handoffs has
        node: Node
        _from: collections.OrderedDict[str, tuple[float, str]]
        _givers: dict[str, float]

        def _send(self, m: Member, entries: list[Entry], reason: str,
                  unanswered_by: str = "") -> None: ...

    def _to_its_backup(self, out: _Out, entries: list[Entry]) -> list[Entry]:
        """(A handoff to ``out.target`` went unanswered, and the target is dead or left)
        each task goes to the node the target copied it to if it took it: its backup
        there (``_to_backup_of``). The target may hold the task, its answer lost (cut
        off as it answered: it runs the task, unreachable), and once it is declared
        dead that node runs its copy; run here as well, the task ran three times (the
        cluster chaos test saw it). There it runs once: held there already (taken
        over), or taken now, and then the copy is not run at the takeover (held there
        already). Returns the tasks that stay here."""
        return self._to_backup_of(out.target, entries, UNANSWERED_REASON, out.refused_by)

    def _to_backup_of(self, holder: str, entries: list[Entry], reason: str,
                      refused_by: set[str] | None = None) -> list[Entry]:
        """Send each of ``entries`` to ``holder``'s backup for it: the node ranked first
        for it (mesh/rendezvous.py) among those alive or suspected here that take it,
        this one included, where ``holder`` keeps its copy if it holds the task. Returns
        those for which that is this node, or a node in ``refused_by``."""
        node = self.node
        routing = getattr(node, "routing", None)
        refused_by = refused_by or set()
        # (a peer merely suspected here may have been alive there: it keeps the copy)
        peers = [m for m in node.membership.members() if m.id not in (holder, node.name)
                 and m.state in (MemberState.ALIVE, MemberState.SUSPECT)]
        groups: dict[str, tuple[Member, list[Entry]]] = {}
        stay: list[Entry] = []
        for e in entries:
            takers = peers
            if routing is not None:
                queue = _queue_of(routing, e)
                takers = [m for m in peers if routing.peer_accepts(m.meta, queue, e.name)]
            by_id = {m.id: m for m in takers}
            m = by_id.get(backup_for(e.task_id, [*by_id, node.name], holder) or "")
            if m is None or m.id in refused_by:
                stay.append(e)
            else:
                groups.setdefault(m.id, (m, []))[1].append(e)
        for m, group in groups.values():
            if reason == UNANSWERED_REASON:
                log.info("node %s did not answer a handoff: %d of its task(s) go to %s, its "
                         "backup for them (which runs them once if %s took them and is "
                         "declared dead)", holder, len(group), m.id, holder)
            else:
                log.info("node %s, which handed %d queued task(s) here lately, is dead: they "
                         "go to %s, its backup for them (where its copies and its owners' "
                         "failover go)", holder, len(group), m.id)
            self._send(m, group, reason, unanswered_by=holder)
        return stay

    def _givers_gone(self, now: float) -> None:
        """Tasks taken from a giver within GIVER_TTL s that is declared dead now, and
        that have not started here, go to its backup for them (``_to_backup_of``). The
        giver may not have had our answer (cut off as it came): then it runs them (cut
        off, it cannot know), its copy of each is at its backup, and its owners send
        them there (the failover): run here as well, three runs. There they run once
        (the failover is a resend of a held task, the copy is skipped at the takeover).
        Had it our answer, they run there instead of here: once all the same."""
        taken, givers = self._from, self._givers
        while taken and now - next(iter(taken.values()))[0] > GIVER_TTL:
            taken.popitem(last=False)
        ms = self.node.membership
        dead = set()
        for giver, at in list(givers.items()):
            m = ms.member(giver)
            if now - at > GIVER_TTL:
                del givers[giver]
            elif m is not None and m.state == MemberState.DEAD:
                del givers[giver]           # (its tasks here are seen to now, once)
                dead.add(giver)
        if not dead:
            return
        gone: dict[str, set[str]] = {}
        for tid, (_, giver) in taken.items():
            if giver in dead:
                gone.setdefault(giver, set()).add(tid)
        node = self.node
        pool, held = node.pool, node.ledger.held
        for giver, ids in gone.items():
            for tid in ids:
                del taken[tid]
            ids &= held.keys()
            if not ids or node.stopping:
                continue
            # not started: waiting for its eta, or queued (one walk of the queues), or
            # set aside by the fence, handed back here while it waits (mesh/node/fence.py:
            # the handoff is the latest word; this giver's answer "held" is not)
            fence = node.reclaim.fence
            entries = [e for t in ids if (e := fence.take(t)) is not None]
            entries += [e for t in ids if t in pool.scheduled
                        and (e := pool.remove(t)) is not None]
            queued = [item[2] for q in (pool.squeue, pool.aqueue) for item in q
                      if item[2].task_id in ids]
            if queued:
                pool.discard({id(e) for e in queued})
            for e in self._to_backup_of(giver, entries + queued, GIVER_GONE_REASON):
                pool.submit(e)


def _queue_of(routing: Any, entry: Entry) -> str:
    """The queue a held task was routed to (its SUBMIT's header, else our routes)."""
    msg = _submit_or_none(entry.frame)
    return str(routing.queue_for(entry.name, msg.headers if msg is not None else None))

