"""Workflows on the node: the node that holds a step drives what comes after it.

Every unit of a workflow (mesh/workflow/plan.py) travels with what comes after it
(its ``wf`` header). When a held unit ends (``Ledger.finish``), this component:

* on success, starts its ``link`` callbacks and the next unit, here, given the value
  first; at the end of a group member, reports the value to the group's coordinator;
* on failure, starts its ``link_error`` callbacks (and its chain's) with Celery's
  ``(request, exc, traceback)``, records every later unit as failed (so every wait
  ends), and reports the failure to the group.

A unit started here is accepted into this node's ledger in the same loop pass, and
so in the same journal commit, as the result of the unit that started it: a node
killed in between has both or neither. Its id is derived from the workflow's
(mesh/workflow/ids.py), and a unit whose id this node already holds or has finished
is not started again, so driving a workflow twice duplicates nothing here.

Groups are coordinated by mesh/node/wf_groups.py (a ``mesh.group`` task held here),
and so is a task that called ``replace(sig)`` (``replaced``: a group of one).
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.app import _abs_time
from mesh.exceptions import ConfigError
from mesh.node.component import Component
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry, _RateLimitedLog
from mesh.node.naps import Nap
from mesh.node.peers import PeerSockets, routing_id
from mesh.node.wf_commands import exc_repr, frame_task_id, mesh_exc, register, request_of
from mesh.node.wf_groups import Groups
from mesh.rendezvous import ranked
from mesh.security.text import safe_logger
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, WfPull, WfPulled, WfReport, decode, encode
from mesh.workflow.ids import RECORD_NAME, RECORD_OWNER, derive, record_id
from mesh.workflow.plan import (
    GROUP,
    NIL,
    REPLACED_BY,
    Wf,
    call_payload,
    callbacks,
    kind,
    uid,
    units,
    walk_ids,
    wf_header,
)

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.workflows")

DATA_HWM = 10_000       # frames queued per peer for workflow messages
TICK = 0.5              # s between checks of groups (pulls)

class Workflows(Component):
    """Drives workflows: continuations, callbacks, failures, group coordinators."""

    name = "workflows"
    requires = ("journal", "front", "control", "pool")

    def __init__(self) -> None:
        self.started = False
        self.counts: collections.Counter[str] = collections.Counter()
        self._out: dict[str, WfReport] = {}        # address -> reports to send this pass
        self._send: list[tuple[str, bytes]] = []   # (address, frame) to send this pass
        self._started: list[str] = []              # units started by the step ending now
        self._badlog = _RateLimitedLog("workflow problems")

    async def start(self, node: "Node") -> None:
        self.node = node
        node.workflows = self
        # with keys, CurveZMQ as the node (mesh/security); a routing id nobody can guess
        self.sockets = PeerSockets(node.ctx, routing_id("wf", node.name),
                                   hwm=DATA_HWM, security=node.security)
        self.nap = Nap()          # poked as a group begins: the loop ticks while groups run
        self.groups = Groups(self)
        self.started = True
        for name in ("wf.states", "wf.progress"):
            register(node, name)
        node.spawn(self._loop(), name="workflows")

    async def stop(self, node: "Node") -> None:
        """Stopping: the groups coordinated here go to other nodes (handoff), which ask
        the mesh where their members are and go on."""
        entries = [g.entry for g in self.groups.groups.values()
                   if node.ledger.held.get(g.id) is g.entry]
        if entries:
            node.handoff.give_away(entries, "node is shutting down")

    def close(self, node: "Node") -> None:
        if self.started:
            self.sockets.close()

    async def _loop(self) -> None:
        while True:
            await self.nap.until_busy(bool(self.groups.groups), TICK)
            try:
                self.groups.tick(time.monotonic())
            except Exception:
                log.exception("workflow check failed")

    # -- what the ledger tells us -----------------------------------------------------
    def begin(self, entry: Entry) -> None:
        """A held ``mesh.group`` task is to run: coordinate it here."""
        self.groups.begin(entry)

    def replaced(self, entry: Entry, frame: bytes) -> None:
        """Held task ``entry`` called ``replace(sig)`` (``frame``: its REPLACED Result,
        whose value is ``sig``'s map): it stays held, ``sig`` is kept in its Submit's
        ``replaced_by`` header (journalled, copied to its backup) and it is coordinated
        here as a group of one; it ends with what ``sig`` comes to. A task run again
        that had been replaced already (its header says so) keeps its first
        replacement, whose id some node may hold: asked of the mesh before it starts."""
        node, tid = self.node, entry.task_id
        try:
            res = decode(frame)
            msg = decode(entry.frame)
            if not isinstance(res, Result) or not isinstance(msg, Submit):
                raise TypeError("not a Result and a Submit")
            sig = codec.loads(res.result) if res.result is not None else None
            if not isinstance(sig, dict):
                raise TypeError(f"the replacement is a {type(sig).__name__}, not a signature map")
        except Exception as e:
            node.ledger.task_failed(entry, "DecodeError", f"task {tid} replaced by what cannot "
                                    f"be read: {e}")
            return
        self.counts["replaced"] += 1
        entry.fresh = REPLACED_BY not in msg.headers
        if entry.fresh:
            headers = {**msg.headers, REPLACED_BY: sig}
            new = encode(dataclasses.replace(msg, headers=headers))
            if len(new) > node.config.max_message_size:
                node.ledger.task_failed(entry, "EncodeError", f"task {tid} ({entry.name}) with "
                                        f"its replacement is {len(new)} bytes encoded, over "
                                        f"max_message_size ({node.config.max_message_size})")
                return
            entry.frame, entry.wf = new, headers
            try:
                node.journal.update_frame(tid, new)
            except JournalError as e:
                log.error("journal: the replacement of task %s was not stored: %s", tid, e)
            node.replicas.updated(entry)      # its backup coordinates it if we die
        else:
            entry.wf = msg.headers
        if node.stopping:                     # another node coordinates it
            node.handoff.give_away([entry])
        else:
            self.groups.begin(entry)
            node.front.schedule_flush()       # its replacement goes to the pool this pass

    def finished(self, entry: Entry, state: str, frame: bytes) -> list[str]:
        """A held unit of a workflow ended (its result is journalled in this pass);
        the ids of the units it started here (its result's copy waits for theirs)."""
        outer, self._started = self._started, []
        try:
            self._finished(entry.task_id, entry.name, entry.frame, entry.wf, state, frame)
        except Exception as e:      # a bad header must not stop the ledger
            self.counts["errors"] += 1
            self._badlog.warning("workflow step after task %s not driven: %s", entry.task_id, e)
            log.debug("workflow error", exc_info=True)
        started, self._started = self._started, outer
        return started

    def refused(self, msg: Submit, frame: bytes) -> None:
        """A unit refused at intake (revoked, not registered) ended all the same."""
        if msg.headers.get("wf") or msg.name == GROUP:
            res = decode(frame)
            assert isinstance(res, Result)
            try:
                self._finished(msg.task_id, msg.name, encode(msg), msg.headers, res.state, frame)
            except Exception as e:
                self.counts["errors"] += 1
                self._badlog.warning("workflow step after task %s not driven: %s", msg.task_id, e)

    def revoke(self, task_id: str) -> bool:
        """A revoke for a held group: it ends REVOKED. True if it was one."""
        return self.groups.revoke(task_id)

    # -- after a unit -----------------------------------------------------------------
    def _finished(self, tid: str, name: str, sub_frame: bytes, headers: Any, state: str,
                  frame: bytes) -> None:
        headers = headers if isinstance(headers, dict) else {}
        wf = Wf.of(headers.get("wf"))
        root = headers.get("root_id") if isinstance(headers.get("root_id"), str) else tid
        tree = (headers.get("wf") or {}).get("tree")
        if isinstance(tree, bytes) and root:
            self.keep_record(root, tree)
        chord_from = self.groups.ended(tid)   # a coordinated task ended: forgotten
        if name != GROUP:                     # (a replaced task fails with its
            chord_from = None                 # replacement's error, not a ChordError)
        if state == states.SUCCESS:
            res = decode(frame)
            assert isinstance(res, Result)
            self._success(tid, root, wf, res, frame)
        elif state in (states.FAILURE, states.REVOKED, states.IGNORED):
            self._failure(tid, name, root, wf, sub_frame, headers, frame, chord_from)

    def _success(self, tid: str, root: str, wf: Wf, res: Result, frame: bytes) -> None:
        value = res.result if res.result is not None else NIL
        for j, cb in enumerate(wf.cb.get("link", ())):
            self.start_workflow(cb, derive(tid, f"link{j}"), value, tid, root)
        if wf.next:
            self.start_unit(wf.next[0], value, tid, root, wf.next[1:], wf.report)
        elif wf.report:
            self.report(wf.report, frame, res)

    def _failure(self, tid: str, name: str, root: str, wf: Wf, sub_frame: bytes, headers: dict[str, Any],
                 frame: bytes, chord_from: tuple[str, str, Result] | None) -> None:
        res = decode(frame)
        assert isinstance(res, Result)
        request = request_of(tid, name, sub_frame, headers, self.node.name)
        exc: dict[str, Any] = res.exc or {}
        tb = res.traceback
        if chord_from is not None:            # a group failed: its member's error, and
            member, mname, mres = chord_from  # request, as Celery's errback (on every
            exc, tb = mres.exc or exc, mres.traceback   # member) gets them
            request = {**request, "id": member, "task": mname, "args": None, "kwargs": None,
                       "retries": mres.retries, "group": tid,
                       "hostname": mres.node or request["hostname"]}
        errbacks = [*wf.cb.get("link_error", ()), *wf.cb.get("chain_link_error", ())]
        if res.state == states.IGNORED:       # Ignore is not an error (Celery runs none)
            errbacks = []
        for j, eb in enumerate(errbacks):
            self.start_errback(eb, derive(tid, f"err{j}"), request, exc, tb, tid, root)
        if not wf.next:
            if wf.report:
                self.report(wf.report, frame)
            return
        # every later unit is recorded as failed: waits on them end
        if chord_from is not None:
            how = (f"was revoked ({mres.exc.get('message', '')})" if mres.state == states.REVOKED
                   and mres.exc else f"raised {exc_repr(mres.exc)}")
            message = f"Dependency {member} ({mname}) {how}"
            err_state, err_exc, err_tb = states.FAILURE, mesh_exc("ChordError", message), None
            self.counts["chord_errors"] += 1
            body = wf.next[0]                 # the chord's body: its own errbacks run
            b_req = {**request_of(uid(body), str(body.get("task") or GROUP), None,
                                {"root_id": root, "parent_id": tid}, self.node.name)}
            for j, eb in enumerate(callbacks(body).get("link_error", ())):
                self.start_errback(eb, derive(uid(body), f"err{j}"), b_req, err_exc, None,
                                   uid(body), root)
        else:
            err_state, err_exc = res.state, dict(exc)
            err_tb = (tb or "") + f"\n(raised by task {tid} ({name}) of the same workflow)"
        last = frame
        for fid, fname, _ in walk_ids(wf.next):
            last = self.fail_frame(fid, err_state, err_exc, err_tb)
            self.store(fid, err_state, last, fname)
        if wf.report:
            self.report(wf.report, last)

    # -- starting units ---------------------------------------------------------------
    def start_workflow(self, d: Any, hid: str, value: bytes | None, parent: str, root: str) -> None:
        """Start a callback (any workflow) whose handle id is ``hid``."""
        us = units(d, hid)
        self.start_unit(us[0], value, parent, root, us[1:], None)

    def start_errback(self, eb: Any, hid: str, request: dict[str, Any], exc: dict[str, Any],
                      tb: str | None, parent: str, root: str) -> None:
        us = units(eb, hid)
        first = us[0]
        if kind(first) is None and not first.get("immutable"):
            extra = [request, exc, tb]          # the child makes Celery's arguments of them
            first = {**first, "args": [*extra, *(first.get("args") or ())]}
            self.start_unit(first, None, parent, root, us[1:], None, errback=True)
        else:
            self.start_unit(first, None, parent, root, us[1:], None)

    def start_unit(self, u: dict[str, Any], value: bytes | None, parent: str, root: str,
              nxt: list[dict[str, Any]], report: list[Any] | None, errback: bool = False,
              new: bool = False) -> Submit | None:
        """Accept unit ``u`` into this node's ledger (same pass, same journal commit);
        its Submit, or None when it was not started here (known, or it could not be).
        ``new``: a fresh group's member, whose id nothing can know yet (not looked up)."""
        node = self.node
        tid = uid(u)
        ledger, journal = node.ledger, node.journal
        if tid in ledger.held:
            self.counts["deduplicated"] += 1
            return None
        try:
            if not new and journal.get(tid) is not None:   # finished (or held) here already
                self.counts["deduplicated"] += 1
                return None
        except JournalError as e:
            log.error("journal: cannot check task %s: %s", tid, e)
        headers: dict[str, Any] = {"root_id": root, "parent_id": parent}
        wf = wf_header(nxt, report, callbacks(u))
        if wf:
            headers["wf"] = wf
        if errback:
            headers["errback"] = True
        nesting = u.get("replaced_task_nesting")   # a replacement's task (mesh/workflow/replace.py)
        if type(nesting) is int:
            headers["replaced_task_nesting"] = nesting
        try:
            msg = self.build(u, value, headers)
            frame = encode(msg)
            if len(frame) > node.config.max_message_size:
                raise ConfigError(f"task {tid} ({msg.name}) is {len(frame)} bytes encoded, over "
                                  f"max_message_size ({node.config.max_message_size})")
        except Exception as e:        # the unit cannot be sent: it fails, the workflow goes on
            self.counts["unbuildable"] += 1
            fframe = self.fail_frame(tid, states.FAILURE, mesh_exc("EncodeError", str(e)), None)
            self.store(tid, states.FAILURE, fframe, str(u.get("task") or GROUP))
            self._finished(tid, str(u.get("task") or GROUP), b"", headers, states.FAILURE, fframe)
            return None
        task = node.app.tasks.get(msg.name)
        try:
            journal.add(tid, b"", frame, time.time())
        except JournalError as e:     # nobody would send it again: it runs from memory
            log.error("journal: workflow step %s not journalled (it runs from memory): %s",
                      tid, e)
        limit = msg.time_limit or (task.options.time_limit if task else None) or node.config.time_limit
        entry = Entry(tid, msg.name, b"", frame, msg.priority, msg.eta, msg.expires, limit,
                      task.options.acks_late if task is not None else True)
        ledger.accept(entry, msg)
        self._started.append(tid)
        self.counts["started"] += 1
        queue = msg.headers.get("queue")
        routing = getattr(node, "routing", None)
        if isinstance(queue, str) and routing is not None and not routing.serves_queue(queue):
            self._route_away(entry, queue)
        node.front.schedule_flush()      # to the pool at the end of this pass
        return msg

    def _route_away(self, entry: Entry, queue: str) -> None:
        """A step for a queue this node does not serve goes (once journalled here) to
        a node that serves it and has its task; with none alive it stays here."""
        node = self.node
        ms = getattr(node, "membership", None)
        peers = ms.alive_members(include_self=False) if ms is not None else []
        takers = [m for m in peers if node.routing.peer_accepts(m.meta, queue, entry.name)]
        if takers:
            by_id = {m.id: m for m in takers}
            node.ledger.spread[entry.task_id] = by_id[ranked(entry.task_id, by_id)[0]]
        else:
            self._badlog.warning("no alive node serves queue %r for task %s (%s): it runs "
                                 "here", queue, entry.task_id, entry.name)

    def build(self, u: dict[str, Any], value: bytes | None, headers: dict[str, Any]) -> Submit:
        """The Submit of unit ``u``, given ``value`` (codec bytes) first."""
        node = self.node
        o = u.get("options") or {}
        now = time.time()
        if kind(u) == "group":
            from mesh.workflow.plan import group_members
            ms = group_members(u)
            payload = call_payload([ms], {}, value)
            return Submit(task_id=uid(u), name=GROUP, payload=payload,
                          priority=int(o.get("priority") or 0), headers=headers)
        name = str(u["task"])
        task = node.app.tasks.get(name)
        t = task.options if task is not None else None
        args, kwargs = list(u.get("args") or ()), dict(u.get("kwargs") or {})
        payload = call_payload(args, kwargs, None if u.get("immutable") else value)
        countdown = o.get("countdown")
        eta = now + float(countdown) if countdown is not None else _abs_time(o.get("eta"), now, "eta")
        expires = o.get("expires", t.expires if t is not None else None)
        if t is not None and not t.acks_late:
            headers["acks_late"] = False
        routing = getattr(node, "routing", None)   # its queue (docs/routing.md)
        if isinstance(o.get("queue"), str):
            headers["queue"] = o["queue"]
        elif routing is not None:
            headers["queue"] = routing.queue_for(name)
        msg = Submit(task_id=uid(u), name=name, payload=payload,
                     priority=int(o.get("priority", t.priority if t else 0) or 0),
                     eta=eta if eta is not None and eta > now else None,
                     expires=_abs_time(expires, now, "expires"),
                     time_limit=o.get("time_limit", t.time_limit if t else None),
                     soft_time_limit=o.get("soft_time_limit", t.soft_time_limit if t else None),
                     headers=headers)
        msg.validate()
        return msg

    # -- results without a run --------------------------------------------------------
    def fail_frame(self, tid: str, state: str, exc: dict[str, Any], tb: str | None) -> bytes:
        return encode(Result(task_id=tid, state=state, exc=exc, traceback=tb, node=self.node.name))

    def keep_record(self, workflow_id: str, desc: bytes) -> None:
        """Keep a workflow's description (codec bytes) under ``record_id(workflow_id)``:
        lookups and watchers get it as any result, but it is internal: no event, not
        counted, its journal row marked (RECORD_OWNER) so the dashboard leaves it out."""
        self.store(record_id(workflow_id), states.SUCCESS, desc, RECORD_NAME, raw=True,
                   internal=True)

    def store(self, tid: str, state: str, result: bytes, name: str, raw: bool = False,
              internal: bool = False) -> None:
        """Keep a result for ``tid`` that no task produced here (a failure recorded for a
        step that will never run; a workflow's record): the journal serves it to
        lookups and resends, watchers get it. ``raw``: ``result`` is the value's codec
        bytes (SUCCESS), else a RESULT frame."""
        node = self.node
        frame = encode(Result(task_id=tid, state=state, result=result, node=node.name)) if raw else result
        ledger = node.ledger
        entry = ledger.held.get(tid)
        if entry is not None:              # held here: it ends now, as any task does
            if entry.name != GROUP:
                removed = node.pool.remove(tid)
                if removed is None and entry.started is not None:
                    return                 # running: its own result will do
            ledger.finish(tid, entry.client, state, frame, entry.name)
            return
        try:
            if node.journal.get(tid) is not None:
                return
            backup = node.replicas.finished(tid, state, frame)    # its second copy
            now = time.time()
            if internal:
                node.journal.add(tid, RECORD_OWNER, b"", now)
            node.journal.finish(tid, state, frame, now, backup)
        except JournalError as e:
            log.error("journal: result of %s not stored: %s", tid, e)
        if not internal:
            ledger.counts[state] += 1
        ledger.notify(tid, frame, name, state, internal=internal)

    # -- reports to coordinators --------------------------------------------------------
    def report(self, rep: list[Any], frame: bytes, res: Result | None = None) -> None:
        """Member ``rep[1]`` of group ``rep[0]`` ended with ``frame`` (``res`` decoded,
        when known): tell its coordinator (here, the node named in ``rep[2]``, or
        whoever pulled it since)."""
        gid, index, coord = rep
        res_id = res.task_id if res is not None else frame_task_id(frame)
        targets = set()
        if gid in self.groups.groups:
            self.groups.deliver(gid, index, frame, res)
        else:
            addr = self._address(coord)
            if addr:
                targets.add(addr)
        watch = self.groups.watch.pop(res_id, None) if res_id else None
        if watch is not None and watch[0] == gid:
            targets.add(watch[2])
        for addr in targets:
            rep_msg = self._out.get(addr)
            if rep_msg is None:
                rep_msg = self._out[addr] = WfReport(self.node.name, [], [], [])
                self.node.front.schedule_flush()
            rep_msg.groups.append(gid)
            rep_msg.indexes.append(index)
            rep_msg.results.append(frame)
            self.counts["reports_sent"] += 1

    def _address(self, name: str) -> str | None:
        node = self.node
        if name == node.name:
            return None
        ms = getattr(node, "membership", None)
        m = ms.member(name) if ms is not None else None
        if m is None or m.state.name not in ("ALIVE", "SUSPECT"):
            self.counts["reports_dropped"] += 1    # its coordinator's successor pulls it
            return None
        return str(m.address)

    def send(self, address: str, frame: bytes) -> None:
        self._send.append((address, frame))
        self.node.front.schedule_flush()

    def flush(self) -> None:
        """End of a loop pass: send the reports and answers of this pass."""
        if self._out:
            out, self._out = self._out, {}
            for addr, msg in out.items():
                self.sockets.send(addr, encode(msg))
        if self._send:
            sends, self._send = self._send, []
            for addr, frame in sends:
                self.sockets.send(addr, frame)

    # -- messages from other nodes ----------------------------------------------------
    def on_message(self, msg: Any) -> None:
        if type(msg) is WfReport:
            for gid, index, frame in zip(msg.groups, msg.indexes, msg.results):
                self.counts["reports_received"] += 1
                if gid in self.groups.groups:
                    self.groups.deliver(gid, index, frame)
                else:
                    self.counts["reports_ignored"] += 1
        elif type(msg) is WfPull:
            self.groups.answer_pull(msg)
        elif type(msg) is WfPulled:
            self.groups.on_pulled(msg)

    def status(self) -> dict[str, Any]:
        c = self.counts
        return {"workflow_groups": len(self.groups.groups), "workflow_steps_started": c["started"],
                "workflow_deduplicated": c["deduplicated"],
                "workflow_duplicate_reports": c["duplicate_reports"],
                "workflow_redriven": c["redriven"], "workflow_chord_errors": c["chord_errors"],
                "workflow_pull_rounds": c["pull_rounds"], "workflow_replaced": c["replaced"]}
