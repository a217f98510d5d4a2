"""Group coordinators: the node that holds a group's ``mesh.group`` task runs its
members and collects their results.

A group's coordinator task (id: the group's id; payload: the members) is held and
journalled like any task, so its backup has a copy (handoff's replication) and a
restart has it back. Holding it here, this node:

1. keeps the group's record (``record_id(group)``: its members' ids) as a result;
2. starts the members (``Workflows.start_unit``), at most ``WINDOW`` unfinished at a
   time, ``CHUNK`` per loop pass; each carries ``report: [group, index, this node]``.
   Each is accepted here, and, once journalled, handed to the node that rendezvous
   hashing picks for its id among this node and its alive peers (mesh/node/handoff.py),
   so the members spread over the mesh;
3. counts the members' reports (WF_REPORT, or in-process when a member ends here):
   the first failure ends the group with that member's error, the last success with
   the list of values, in order. Ending it (``Ledger.finish``) is the "fired" mark:
   the result is journalled in the same commit as the next unit (a chord's body) is
   accepted, so the body starts once. The counter itself is not journalled: each
   member's result is already kept in the mesh (on its node and its backup), so a
   coordinator that restarts or takes over asks for them (WF_PULL) instead.

A coordinator that took a group over (a restart, the backup of a dead node, a
handoff) first asks every node what it knows of the members (WF_PULL: held, or
finished with a stored result); members no node knows are started again (their ids
are the same: nothing runs twice that some node still has). The same question is
asked when members go quiet (``--workflow-stall`` s, 10 by default, without a report,
doubling up to ``STALL_MAX``), which finds reports lost with a node.

A task that called ``replace(sig)`` (mesh/workflow/replace.py) is coordinated the same
way, as a group of one (``single``): its entry (the task's own, its Submit's
``replaced_by`` header holding ``sig``'s map) is held here, ``sig`` is its member
(id ``member_id(task id, 0, sig)``), and the task ends with the member's value (not a
list of one) or its failure. A restart, a takeover or a handoff coordinates it again
from that header, without running the task again.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.exceptions import DecodeError
from mesh.node.ledger import Entry
from mesh.rendezvous import ranked
from mesh.security.text import safe_logger
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, WfPull, WfPulled, decode, encode
from mesh.workflow.describe import describe_group
from mesh.workflow.plan import GROUP, NIL, REPLACED_BY, list_of, member_id, uid, units

if TYPE_CHECKING:
    from mesh.node.workflows import Workflows

log = safe_logger("mesh.workflows")

WINDOW = 5_000         # members started and not ended, per group, at most
CHUNK = 500            # members started per loop pass, per group (a pass stays short)
PULL_CHUNK = 5_000     # ids per WF_PULL
ROUND_TIMEOUT = 3.0    # s for every node to answer a pull round
STALL_MAX = 120.0      # s: the wait without a report (--workflow-stall) doubles up to this
JOIN_WAIT = 3.0        # s a group taken over waits to know an alive peer before it asks
MAX_WATCHES = 200_000  # member ids another coordinator asked to be told about


class _Round:
    __slots__ = ("id", "expected", "answered", "held", "ids", "deadline")

    def __init__(self, rid: int, deadline: float):
        self.id = rid
        self.expected: dict[str, int] = {}     # node -> answers due
        self.answered: dict[str, int] = {}
        self.held: set[str] = set()
        self.ids: dict[str, int] = {}          # id -> member index
        self.deadline = deadline

    def complete(self) -> bool:
        return all(self.answered.get(n, 0) >= k for n, k in self.expected.items())


class Group:
    __slots__ = ("id", "entry", "root", "size", "values", "done", "members", "value",
                 "next_i", "fresh", "last", "stall", "round", "known", "ended", "began",
                 "single")

    def __init__(self, gid: str, entry: Entry, root: str, members: list[Any], value: bytes | None,
                 fresh: bool, stall: float):
        self.id = gid
        self.entry = entry
        self.root = root
        self.size = len(members)
        self.values: list[bytes | None] = [None] * self.size
        self.done = 0
        self.members: list[Any] | None = members     # dropped once all are started
        self.value = value
        self.next_i = 0 if fresh else -1             # -1: ask the mesh before starting
        self.fresh = fresh
        self.last = self.began = time.monotonic()
        self.stall = stall                           # s without a report before it asks
        self.round: _Round | None = None
        self.known: set[int] = set()                 # members some node holds
        self.ended: tuple[str, str, Result] | None = None   # the member that failed it
        self.single = entry.name != GROUP            # a replaced task: a group of one


def _read(sub: Submit) -> tuple[list[Any], bytes | None]:
    """A coordinated task's members and the value given them first (codec bytes):
    a group's from its arguments; a replaced task's replacement from its header."""
    if sub.name != GROUP:
        m = sub.headers.get(REPLACED_BY)
        if not isinstance(m, dict):
            raise DecodeError(f"task {sub.task_id} has no replacement map")
        return [m], None
    args, _ = codec.load_call(sub.payload)
    members = args[-1]
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise DecodeError("the members are not a list of signature maps")
    return members, codec.dumps(args[0]) if len(args) == 2 else None


class Groups:
    def __init__(self, wf: "Workflows"):
        self.wf = wf
        self.node = wf.node
        self.groups: dict[str, Group] = {}
        self.watch: dict[str, tuple[str, int, str]] = {}   # member id -> (group, index, address)
        self._rounds = itertools.count(1)
        self._expanding: set[str] = set()

    # -- a group begins ---------------------------------------------------------------
    def begin(self, entry: Entry) -> None:
        gid = entry.task_id
        if gid in self.groups:
            return
        try:
            sub = decode(entry.frame)
            assert isinstance(sub, Submit)
            members, value = _read(sub)
        except Exception as e:
            self.node.ledger.task_failed(entry, "DecodeError", f"group {gid}: {e}")
            return
        headers = sub.headers
        root = headers.get("root_id")
        root = root if isinstance(root, str) else gid
        g = Group(gid, entry, root, members, value, fresh=entry.fresh,
                  stall=self.node.config.workflow_stall)
        self.groups[gid] = g
        self.wf.nap.poke()
        if not g.single:
            unit = {"task": GROUP, "subtask_type": "group", "kwargs": {"tasks": members},
                    "options": {"task_id": gid}}
            try:
                self.wf.keep_record(gid, codec.dumps(describe_group(unit)))
            except Exception as e:
                log.warning("group %s: its record was not kept: %s", gid, e)
        if g.size == 0:
            self._succeed(g)
        elif g.fresh:
            self._expand(g)
        elif not self._alone(g, time.monotonic()):
            self._pull(g, range(g.size), time.monotonic())

    def _members(self, g: Group) -> list[Any]:
        if g.members is None:          # dropped after starting them all: read them again
            sub = decode(g.entry.frame)
            assert isinstance(sub, Submit)
            g.members = _read(sub)[0]
        assert g.members is not None
        return g.members

    def _expand(self, g: Group) -> None:
        """Start the next members (up to CHUNK now; the rest in later passes)."""
        if g.id not in self.groups or g.next_i < 0:
            return
        members = self._members(g)
        started = 0
        peers = self._peers()
        while g.next_i < g.size and g.next_i - g.done < WINDOW and started < CHUNK:
            i = g.next_i
            g.next_i += 1
            if g.values[i] is not None or i in g.known:
                continue
            # (a replaced task's member is looked up: a takeover before its
            # backup had the replacement runs the task again, which replaces again)
            self._start_member(g, i, members[i], peers, new=g.fresh and not g.single)
            started += 1
        if g.next_i >= g.size:
            g.members = None
        elif g.next_i - g.done < WINDOW and g.id not in self._expanding:
            self._expanding.add(g.id)
            asyncio.get_running_loop().call_soon(self._expand_later, g.id)

    def _expand_later(self, gid: str) -> None:
        self._expanding.discard(gid)
        g = self.groups.get(gid)
        if g is not None:
            self._expand(g)

    def _peers(self) -> dict[str, Any]:
        """The alive peers a group's members may be spread over (by name)."""
        node = self.node
        handoff = getattr(node, "handoff", None)
        if handoff is None or not handoff.started:
            return {}
        return {m.id: m for m in handoff._peers()}

    def _start_member(self, g: Group, i: int, m: Any, peers: dict[str, Any] | None = None,
                      new: bool = False) -> None:
        """Start member ``i`` here; it goes to the node that rendezvous hashing picks for
        its id among this one and the ``peers`` that take it (its queue, its task), once
        journalled here (handoff), so a group's members spread over the mesh and its
        coordinator is not its bottleneck."""
        us = units(m, member_id(g.id, i, m))
        first = uid(us[0])
        node = self.node
        msg = self.wf.start_unit(us[0], g.value, g.id, g.root, us[1:], [g.id, i, node.name],
                                 new=new)
        if g.single and g.fresh and msg is not None and msg.name == GROUP:
            started = node.ledger.held.get(first)   # a replaced task's first replacement:
            if started is not None:                 # its group is new too (asking the
                started.fresh = True                # mesh first cost JOIN_WAIT alone)
        if not peers or msg is None or first in node.ledger.spread or first not in node.ledger.held:
            return
        routing = getattr(node, "routing", None)
        queue = msg.headers.get("queue")
        takers = [p for p in peers if routing is None or not isinstance(queue, str)
                  or routing.peer_accepts(peers[p].meta, queue, msg.name)]
        target = ranked(first, [node.name, *takers])[0]
        if target != node.name:
            node.ledger.spread[first] = peers[target]

    # -- members end ------------------------------------------------------------------
    def deliver(self, gid: str, index: int, frame: bytes, res: Any = None) -> None:
        g = self.groups.get(gid)
        if g is None or g.ended is not None:
            return
        if type(index) is not int or not 0 <= index < g.size:
            self.wf.counts["reports_ignored"] += 1
            return
        if g.values[index] is not None:
            self.wf.counts["duplicate_reports"] += 1
            return
        try:
            if res is None:
                res = decode(frame)
        except DecodeError:
            self.wf.counts["reports_ignored"] += 1
            return
        if not isinstance(res, Result):
            return
        g.last = time.monotonic()
        g.stall = self.node.config.workflow_stall
        if res.state == states.SUCCESS:
            g.values[index] = res.result if res.result is not None else NIL
            g.done += 1
            if g.done == g.size:
                self._succeed(g)
            elif 0 <= g.next_i < g.size and g.next_i - g.done <= WINDOW // 2:
                self._expand(g)        # refill the window in big steps: big handoffs
        elif res.state in (states.FAILURE, states.REVOKED, states.IGNORED):
            g.ended = (res.task_id, self._name(g, index), res)
            self._finish(g, encode(Result(task_id=g.id, state=res.state, exc=res.exc,
                                          traceback=res.traceback, node=self.node.name)), res.state)

    def _name(self, g: Group, index: int) -> str:
        try:
            m = self._members(g)[index]
            return str(units(m, member_id(g.id, index, m))[-1].get("task") or GROUP)
        except Exception:
            return "?"

    def _succeed(self, g: Group) -> None:
        if g.single:                  # a replaced task: its replacement's value
            value = g.values[0] if g.values[0] is not None else NIL
        else:
            value = list_of([v if v is not None else NIL for v in g.values])
        frame = encode(Result(task_id=g.id, state=states.SUCCESS, result=value, node=self.node.name))
        limit = self.node.config.max_message_size
        if len(frame) > limit:
            msg = (f"the results of group {g.id} are {len(frame)} bytes together, over "
                   f"max_message_size ({limit}): read them one by one (GroupResult.results)")
            exc = {"type": "EncodeError", "module": "mesh.exceptions", "message": msg,
                   "args": codec.dumps([msg])}
            frame = encode(Result(task_id=g.id, state=states.FAILURE, exc=exc, node=self.node.name))
            self._finish(g, frame, states.FAILURE)
            return
        self._finish(g, frame, states.SUCCESS)

    def _finish(self, g: Group, frame: bytes, state: str) -> None:
        ledger = self.node.ledger
        entry = ledger.held.get(g.id)
        if entry is None or g.single:
            self.groups.pop(g.id, None)
        if entry is not None:
            ledger.finish(g.id, entry.client, state, frame, entry.name)

    def ended(self, gid: str) -> tuple[str, str, Result] | None:
        """The group's task ended (the ledger finished it): forget it; the member that
        failed it, if one did."""
        g = self.groups.pop(gid, None)
        return g.ended if g is not None else None

    def revoke(self, gid: str) -> bool:
        g = self.groups.get(gid)
        if g is None:
            return False
        msg = f"{'task' if g.single else 'group'} {gid} was revoked"
        exc = {"type": "TaskRevokedError", "module": "mesh.exceptions", "message": msg,
               "args": codec.dumps([msg])}
        self._finish(g, encode(Result(task_id=gid, state=states.REVOKED, exc=exc,
                                      node=self.node.name)), states.REVOKED)
        return True

    def progress(self, gid: str) -> dict[str, Any]:
        g = self.groups.get(gid)
        if g is None:
            return {"id": gid, "coordinated": False}
        return {"id": gid, "coordinated": True, "size": g.size, "succeeded": g.done,
                "started": max(g.next_i, 0), **({"replaced": True} if g.single else {})}

    # -- asking the mesh --------------------------------------------------------------
    def tick(self, now: float) -> None:
        for g in list(self.groups.values()):
            r = g.round
            if r is not None:
                if r.complete() or now > r.deadline:
                    self._round_done(g, r.complete())
                continue
            if g.next_i < 0 and self._alone(g, now):
                continue
            if g.next_i < 0 or (g.done < min(g.next_i, g.size) and now - g.last > g.stall):
                pending = [i for i in range(min(g.next_i, g.size) if g.next_i >= 0 else g.size)
                           if g.values[i] is None]
                if pending:
                    g.stall = min(g.stall * 2, max(STALL_MAX, self.node.config.workflow_stall))
                    g.last = now
                    self._pull(g, pending, now)

    def _alone(self, g: Group, now: float) -> bool:
        """A group taken over (a restart's recovery: before the node has heard of its
        peers) waits up to JOIN_WAIT s to know an alive peer before it asks where its
        members are: asked of no node, every member some peer holds or ran would be
        "known to no node" and started again (a restart mid-chord ran 70 of 200 members
        a second time so)."""
        if now - g.began >= JOIN_WAIT:
            return False
        ms = getattr(self.node, "membership", None)
        return ms is not None and not ms.alive_members(include_self=False)

    def _pull(self, g: Group, indexes: Any, now: float) -> None:
        r = _Round(next(self._rounds), now + ROUND_TIMEOUT)
        members = self._members(g)
        for i in indexes:
            m = members[i]
            us = units(m, member_id(g.id, i, m))
            for k, u in enumerate(us):
                tid = (u.get("options") or {})["task_id"]
                r.ids[tid] = i if k == len(us) - 1 else -(i + 2)
        g.round = r
        self.wf.counts["pull_rounds"] += 1
        self._answer_local(g, r)
        node = self.node
        ms = getattr(node, "membership", None)
        peers = ms.alive_members(include_self=False) if ms is not None else []
        ids = list(r.ids)
        for m in peers:
            for s in range(0, len(ids), PULL_CHUNK):
                part = ids[s:s + PULL_CHUNK]
                idx = [r.ids[x] if r.ids[x] >= 0 else -1 for x in part]
                self.wf.send(m.address, encode(WfPull(node.name, node.address, g.id, r.id, part, idx)))
                r.expected[m.id] = r.expected.get(m.id, 0) + 1

    def _held(self, tid: str, st: dict[str, Any]) -> bool:
        """Held here, or kept here as a copy (this node is its backup: it runs the task
        if its holder is gone, mesh/node/replicas.py)."""
        if st["state"] in (states.RECEIVED, states.STARTED, states.RETRY):
            return True
        replicas = getattr(self.node, "replicas", None)
        return replicas is not None and replicas.copies.has(tid)

    def _answer_local(self, g: Group, r: _Round) -> None:
        ledger = self.node.ledger
        for tid, i in r.ids.items():
            st = ledger.task_state(b"", tid, False)
            if self._held(tid, st):
                r.held.add(tid)
            elif i >= 0 and "result" in st:
                self.deliver(g.id, i, st["result"])

    def _round_done(self, g: Group, complete: bool) -> None:
        r = g.round
        assert r is not None
        g.round = None
        if not complete:          # a node did not answer: it may hold them; ask later
            g.last = time.monotonic()
            if g.next_i < 0:
                g.round = None
                self._pull(g, [i for i in range(g.size) if g.values[i] is None], time.monotonic())
            return
        alive = {(i if i >= 0 else -(i + 2)) for tid, i in r.ids.items() if tid in r.held}
        pulled = {(i if i >= 0 else -(i + 2)) for i in r.ids.values()}
        if g.next_i < 0:             # taken over: start what no node has, in order
            g.known = alive
            lost = [i for i in pulled if g.values[i] is None and i not in alive]
            self.wf.counts["redriven"] += len(lost)
            if lost and alive:
                log.warning("group %s: %d of %d members are known to no node: started again",
                            g.id, len(lost), g.size)
            elif lost:        # none started yet: a workflow's later step starting its group
                log.debug("group %s: no member is known to any node: starting all %d",
                          g.id, len(lost))
            g.next_i = 0
            self._expand(g)
            return
        members = self._members(g)
        lost = [i for i in sorted(pulled) if g.values[i] is None and i not in alive]
        peers = self._peers()
        for i in lost:
            self._start_member(g, i, members[i], peers)
        if lost:
            self.wf.counts["redriven"] += len(lost)
            log.warning("group %s: %d member(s) known to no node: started again (%s)", g.id,
                        len(lost), ", ".join(member_id(g.id, i, members[i]) for i in lost[:5]))
        if g.next_i >= g.size:
            g.members = None

    def answer_pull(self, msg: WfPull) -> None:
        node = self.node
        ms = getattr(node, "membership", None)
        member = ms.member(msg.source) if ms is not None else None
        if member is None or member.address != msg.source_addr:
            self.wf._badlog.warning("refused a pull from %r: not a member at that address",
                                    msg.source[:100])
            return
        held: list[str] = []
        indexes: list[int] = []
        results: list[bytes] = []
        ledger = node.ledger
        for tid, i in zip(msg.ids, msg.indexes):
            st = ledger.task_state(b"", tid, False)
            if self._held(tid, st):
                held.append(tid)
                if i >= 0:
                    self._watch(tid, (msg.group, i, msg.source_addr))
            elif i >= 0 and "result" in st:
                indexes.append(i)
                results.append(st["result"])
        self.wf.send(msg.source_addr, encode(WfPulled(node.name, msg.group, msg.round, held,
                                                      indexes, results)))

    def _watch(self, tid: str, target: tuple[str, int, str]) -> None:
        self.watch.pop(tid, None)
        self.watch[tid] = target
        while len(self.watch) > MAX_WATCHES:
            del self.watch[next(iter(self.watch))]

    def on_pulled(self, msg: WfPulled) -> None:
        g = self.groups.get(msg.group)
        if g is None or g.round is None or g.round.id != msg.round:
            return
        r = g.round
        r.answered[msg.source] = r.answered.get(msg.source, 0) + 1
        r.held.update(msg.held)
        for i, frame in zip(msg.indexes, msg.results):
            self.deliver(g.id, i, frame)
            if g.id not in self.groups:
                return
        if r.complete():
            self._round_done(g, True)
