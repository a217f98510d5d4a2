"""Results of tasks owned elsewhere: ``AsyncResult(id)`` in a process that did not
submit the task (a mixin of mesh.client.io.Client, kept apart so that the I/O
thread's module stays about the tasks this client owns).

* ``watch`` gives the slot through which this process follows such a task (one per
  task id; each AsyncResult asking adds its own with ``query``).
* ``query`` asks every alive node (the seeds, before any members answer) for the task
  with ``watch``: a node that holds it answers with its state (and meta, and the
  Submit for ``result_extended``) and sends its RESULT here when it is done; a node
  that has its result answers with it. When several nodes know the task, the most
  advanced state wins (``_rank``). A query ends when every node asked has answered,
  when the result came, or after ``QUERY_TTL`` s.
* Once a second (``_requery``, from the membership refresh) watched tasks someone
  waits for are asked about again: the node holding one may have died, and its owner
  sent it elsewhere. Watched tasks nobody waits for are forgotten.
* A result over this client's max_message_size is not sent here: the node answers
  with its size instead (``result_size``), or an ERROR ``reply-too-large`` for a
  result it sends when the task ends. Those waiting fail with ResultTooLarge.

``watch`` and ``query`` are called from any thread (they queue the query for the I/O
thread); the rest runs on the I/O thread.
"""
from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.config import Config
from mesh.exceptions import DecodeError, result_too_large
from mesh.security.text import safe_logger
from mesh.slot import Slot
from mesh.wire.protocol import Control, ControlReply, Result, decode, encode

if TYPE_CHECKING:
    from mesh.client.links import NodeLink

log = safe_logger("mesh.client")

QUERY_TTL = 5.0             # seconds a result query waits for its answers
MEMBERS_WAIT = 2.0          # seconds a result lookup waits for the first members answer
# when several nodes know a task, the most advanced state is the one to report; a
# task's own states (update_state: PROGRESS...) come after STARTED
_STATE_RANK = {states.UNKNOWN: 0, states.PENDING: 1, states.RECEIVED: 2, states.RETRY: 3,
               states.STARTED: 4}


class Lookup(threading.Event):
    """A result query someone waits for: set when it ends; ``answers``: how many
    nodes answered it (none: no node could be reached); ``best`` and ``meta``: the
    most advanced state answered so far, for a caller whose wait ends first."""
    answers = 0
    best = states.UNKNOWN
    meta: bytes | None = None


def _rank(state: str) -> int:
    return _STATE_RANK.get(state, 5)


class Lookups:
    """The lookups of results owned elsewhere (see the module's docs)."""

    # state owned by Client (mesh/client/io.py) and Links (links.py), used here
    config: Config
    seeds: list[str]
    links: dict[str, NodeLink]
    _placeable: list[NodeLink]
    _members_known: threading.Event
    _outbox: collections.deque[Any]
    _closing: bool
    _efd: int

    if TYPE_CHECKING:           # Client's and Links's, used here
        @property
        def unreachable(self) -> bool: ...
        def _wake(self) -> None: ...
        @staticmethod
        def _fail(slot: Slot, exc_type: str, message: str, node: str = "") -> None: ...
        def _put(self, link: NodeLink, frames: bytes | list[bytes]) -> bool: ...

    def _init_lookups(self) -> None:
        self._watched: dict[str, list[Slot]] = {}       # tasks owned elsewhere that we look up
                                                        # (one slot per AsyncResult asking)
        self._watch_lock = threading.Lock()
        self._queries: dict[str, list[Any]] = {}        # req id -> [slot, pending, event, state,
                                                        # t, meta]

    # -- called from any thread -------------------------------------------------------
    def watch(self, task_id: str) -> Slot:
        """The slot through which this process follows a task it does not own (submitted
        by another process): nodes are asked for it, and the one holding it sends its
        result here when it is done."""
        with self._watch_lock:
            slots = self._watched.get(task_id)
            if slots:
                return slots[0]
            slot = Slot(task_id, None, remote=True)
            self._watched[task_id] = [slot]
            return slot

    def query(self, slot: Slot, wait: float | None) -> bool:
        """Ask every alive node about a watched task (and to send us its result when
        done). With ``wait``, block until all answered or ``wait`` seconds passed; if no
        node has answered by then, on until one does or the query ends (QUERY_TTL, or
        sooner once the client knows no node can be reached). False when, waiting, no
        node answered: none could be reached (True without ``wait``)."""
        if self._closing:
            raise RuntimeError("the mesh client is closed")
        if wait and not self._members_known.is_set():   # a new client knows only its
            self._members_known.wait(min(wait, MEMBERS_WAIT))   # seeds: learn every node
        # (without ``wait`` nobody blocks: get() and await are asked again each second)
        with self._watch_lock:
            slots = self._watched.setdefault(slot.task_id, [])
            if slot not in slots:
                slots.append(slot)
        lookup = Lookup() if wait else None
        self._outbox.append(("query", slot, lookup))
        self._wake()
        if self._efd < 0:         # the client shut down meanwhile (Client._shut_down):
            self._fail_watched()  # nothing will ask or answer; fail, as it did the others
            if lookup is not None:
                lookup.set()
            return False
        if lookup is None:
            return True
        lookup.wait(wait)
        deadline = time.monotonic() + QUERY_TTL + 1.0
        while (not lookup.answers and not lookup.is_set() and not self.unreachable
               and time.monotonic() < deadline):
            lookup.wait(0.05)
        best, meta = lookup.best, lookup.meta
        if not lookup.is_set() and best != states.UNKNOWN:
            # a node did not answer in time (one killed but not yet declared dead): the
            # state is what the others answered (its backup: RECEIVED), not the slot's
            # UNKNOWN or a previous query's state
            with Slot.lock:
                if slot.msg is None and not lookup.is_set():
                    slot.state, slot.meta = best, meta
        return lookup.answers > 0

    # -- the I/O thread ---------------------------------------------------------------
    def _targets(self) -> list[NodeLink]:
        return self._placeable or [self.links[ep] for ep in self.seeds]

    def _send_query(self, slot: Slot, event: Lookup | None) -> None:
        links = self._targets()
        req = uuid.uuid4().hex
        self._queries[req] = [slot, len(links), event, states.UNKNOWN, time.monotonic(), None]
        frame = encode(Control(req, "result", {"task_id": slot.task_id, "watch": True},
                               self.config.max_message_size))
        for link in links:
            if not self._put(link, frame):
                self._queries[req][1] -= 1
        if self._queries[req][1] <= 0:
            self._end_query(req)

    def _on_query_reply(self, msg: ControlReply) -> None:
        q = self._queries[msg.req_id]
        slot: Slot = q[0]
        q[1] -= 1
        if q[2] is not None:
            q[2].answers += 1
        payload = msg.payload
        if msg.ok and isinstance(payload, dict) and payload.get("task_id") == slot.task_id:
            state = payload.get("state")
            frame = payload.get("result")
            submit = payload.get("submit")
            if isinstance(submit, bytes) and slot.submit is None:
                slot.submit = submit              # name, args, kwargs (result_extended)
            size = payload.get("result_size")
            if type(size) is int and isinstance(state, str):    # too big to be sent here
                self._too_large_elsewhere(msg.req_id, result_too_large(
                    slot.task_id, size, self.config.max_message_size, msg.node))
                return
            if isinstance(frame, bytes):
                try:
                    res = decode(frame, self.config.max_message_size)
                except DecodeError as e:
                    log.warning("node %s sent an unreadable stored result: %s", msg.node, e)
                else:
                    if type(res) is Result and res.task_id == slot.task_id:
                        self._complete_watched(res)
                        slot.complete(res)
            elif isinstance(state, str) and _rank(state) > _rank(q[3]):
                q[3] = state
                meta = payload.get("meta")
                q[5] = meta if isinstance(meta, bytes) else None
                if q[2] is not None:
                    q[2].meta, q[2].best = q[5], state
        if q[1] <= 0 or slot.msg is not None:
            self._end_query(msg.req_id)

    def _end_query(self, req: str) -> None:
        slot, _pending, event, state, _t, meta = self._queries.pop(req)
        if slot.msg is None:
            with Slot.lock:
                slot.state, slot.meta = state, meta
        if event is not None:
            event.set()

    def _requery(self, now: float) -> None:
        """Once a second: drop queries nobody answered, and ask again about watched
        tasks someone waits for (the node holding one may have died, and its owner
        sent it elsewhere). Watched tasks nobody waits for are forgotten."""
        for req in [r for r, q in self._queries.items() if now - q[4] > QUERY_TTL]:
            self._end_query(req)
        asked = {q[0].task_id for q in self._queries.values()}
        with self._watch_lock:
            for tid, slots in list(self._watched.items()):
                waiting = [s for s in slots if s.msg is None and s.waiters]
                if not waiting:
                    if tid not in asked:
                        del self._watched[tid]
                    continue
                if tid not in asked:
                    self._send_query(waiting[0], None)

    def _too_large_elsewhere(self, ref: str, text: str) -> bool:
        """A result over this client's max_message_size, for a lookup (``ref``: its
        request id, or the task id of a watched task): every slot waiting for that
        task fails with ResultTooLarge (``text`` says why). False: nobody waits here."""
        q = self._queries.get(ref)
        tid = q[0].task_id if q is not None else ref
        with self._watch_lock:
            slots = self._watched.pop(tid, None) or []
        if q is not None and q[0] not in slots:
            slots.append(q[0])
        for s in slots:
            self._fail(s, "ResultTooLarge", text)
        if q is not None:
            self._end_query(ref)          # (after: whoever it wakes finds the slots failed)
        return bool(slots)

    def _complete_watched(self, msg: Result) -> bool:
        """A final result for a task looked up here: complete every slot asking."""
        with self._watch_lock:
            slots = self._watched.pop(msg.task_id, None) or []
        done = False
        for s in slots:
            done = s.complete(msg) or done
        return done

    def _fail_watched(self) -> None:
        """(At shutdown) fail every watched slot: nobody waits forever on get()."""
        with self._watch_lock:
            watched, self._watched = [s for ss in self._watched.values() for s in ss], {}
        for slot in watched:
            self._fail(slot, "MeshError", f"the mesh client was closed while waiting for "
                       f"task {slot.task_id}")
