"""The client's routing: which mesh it sends to, and what it does when a node refuses
a task or none may take it (a mixin of mesh.client.io.Client, kept here so the I/O
thread's module stays about sockets). Runs on the I/O thread only.

* A client whose nodes came from mDNS sends to its app's mesh (``Mesh("billing")``);
  one given peers, to the mesh of the first seed that answers. Members of another
  mesh are never linked; seeds of another mesh are never used (said once).
* A node refuses a task when its journal fails (``journal``), when it does not serve
  the task's queue (``queue``), or when it has no such task (``NotRegistered``): the
  client sends the task to a node that has not refused it, and fails it, naming the
  nodes considered, only when none is left (mesh/client/fit.py words it).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from mesh import states
from mesh.capabilities import from_meta
from mesh.client.fit import fits, unplaceable
from mesh.client.placement import choose_from
from mesh.client.room import let_go
from mesh.security.text import safe_logger
from mesh.slot import Slot
from mesh.wire.protocol import Result

log = safe_logger("mesh.client")

RETRY_DELAY = 0.5      # s before a task no node takes now is placed again (a suspect node, or
                       # no word from the mesh yet)
LOOK_SPACING = 0.05     # s: at most one fresh member list asked for in this long
RECHECK_MAX = 3.0       # s a task no node takes waits for a fresh member list's answer
REFUSED_LOG_SPAN = 60.0  # s over which a task name's refusals after the first are counted, not
                         # each logged (a loop sending an unknown name logs a line a minute)


class Routing:
    """Routing state and decisions of the client (see the module's docs)."""

    mesh: str | None
    seeds: list[str]
    links: dict[str, Any]
    _foreign: set[str]
    _placeable: list[Any]
    _slots: dict[str, Slot]
    _retry: list[tuple[float, Slot]]
    _rng: random.Random
    _members_known: threading.Event
    _rechecked: dict[str, float]
    _members_asked: float
    _members_answered: float
    _refusals: dict[str, list[float]]

    # what the I/O thread provides
    def _refresh_members(self, now: float) -> None: ...
    def _pick(self, avoid: str | None = None, slot: Slot | None = None, kind: str = "",
              said: str = "") -> Any: ...
    def _send(self, slot: Slot, link: Any) -> None: ...
    def _forget_one(self, link: Any, acked: bool) -> None: ...
    def _fail(self, slot: Slot, exc_type: str, message: str, node: str = "") -> None: ...

    def _learn_mesh(self, members: list[Any], answering: Any) -> bool:
        """What the answering node serves (it may be a seed known by another address);
        a client given peers joins the mesh of the first one that answers."""
        if answering is None:
            return False
        mine = next((m for m in members if isinstance(m, dict)
                     and m.get("node") == answering.node_id), None)
        if mine is None:
            return False
        serves = from_meta(mine.get("meta") if isinstance(mine.get("meta"), dict) else None)
        if self.mesh is None:
            self.mesh = serves.mesh
            log.info("sending tasks to mesh %r (of node %s at %s)", serves.mesh,
                     answering.node_id, answering.endpoint)
        if answering.serves == serves:
            return False
        answering.serves = serves
        return True

    def _not_ours(self, endpoint: str, node_id: Any, mesh: str) -> None:
        """A node of another mesh: never sent work; said once (a seed: a warning)."""
        if endpoint in self._foreign:
            return
        if len(self._foreign) > 1000:
            self._foreign.clear()
        self._foreign.add(endpoint)
        level = logging.WARNING if endpoint in self.seeds else logging.INFO
        log.log(level, "not sending tasks to node %s at %s: it belongs to mesh %r, this client "
                "to mesh %r", node_id, endpoint, mesh, self.mesh)

    def _another(self, slot: Slot, link: Any) -> bool:
        """Whether an alive node other than ``link`` may take ``slot``."""
        others = [n for n in self._placeable if n is not link]
        return bool(fits(others, slot.queue, slot.name, slot.refused) if slot.name else others)

    def _unplaceable(self, slot: Slot, kind: str, said: str) -> None:
        """No alive node takes ``slot``: try again shortly while a node that would is
        down but known (suspect, or dead or left within the last minute: it may be
        restarting), or the mesh has not answered yet; else fail it, naming the nodes
        considered (NotRegistered only when none of them has the task)."""
        maybe = fits([n for n in self.links.values() if n.state != "alive" and n.serves],
                     slot.queue, slot.name, slot.refused)
        now = time.monotonic()
        # before saying no node has it, look once at a fresh member list: a node may
        # have just registered the task (a deploy, --autoreload) after our last look
        # (only when our view alone says so: a node's own refusal keeps its words), or
        # taken its queue (add_consumer) as the one that refused it gave it up: a queue
        # moved, Celery's way, by add_consumer on one node and cancel_consumer on the
        # other, back to back, failed the tasks sent in the second before our next look
        # (only a list asked for after the task was first found unplaceable, and answered,
        # counts: one asked before, or whose answer had not come, failed a task sent just
        # after a worker's reload() registered it, and the tasks of one burst one by one;
        # RECHECK_MAX bounds the wait for an answer)
        first = self._rechecked.get(slot.task_id)
        fresh = (not slot.refused or kind == "queue") and (
            first is None or (self._members_answered < first and now - first < RECHECK_MAX))
        if fresh:
            if first is None:
                if len(self._rechecked) > 10_000:
                    self._rechecked.clear()
                self._rechecked[slot.task_id] = now
            # (a burst of such tasks asks once per LOOK_SPACING, not once each)
            if now >= self._members_asked + LOOK_SPACING:
                self._refresh_members(now)
        if maybe or fresh or not self._members_known.is_set():
            let_go(slot)
            slot.node = None
            slot.state = states.PENDING
            self._retry.append((now + RETRY_DELAY, slot))
            return
        self._rechecked.pop(slot.task_id, None)
        exc, message = unplaceable(self._placeable, self.mesh, slot.queue, slot.name,
                                   slot.refused, kind, said)
        self._refuse(slot, exc, message)

    def _on_refused(self, slot: Slot, link: Any, kind: str, message: str) -> None:
        """A node did not take the task: it could not journal it (``journal``: a full
        or read-only disk), it does not serve its queue (``queue``), or it has no such
        task (``NotRegistered``). Try a node that has not refused it; when none is
        left, fail it with the node's words and the nodes considered, so the submitter
        knows (never silent loss)."""
        self._forget_one(link, slot.state != states.PENDING)
        let_go(slot)
        if slot.refused is None:
            slot.refused = set()
        slot.refused.add(link.endpoint)
        slot.state = states.PENDING
        if slot.name:
            self._send(slot, self._pick(slot=slot, kind=kind, said=message))
            return
        others = [n for n in self._placeable if n.endpoint not in slot.refused]
        if others:
            self._send(slot, choose_from(others, self._rng) or others[0])
            return
        self._refuse(slot, "NotRegistered" if kind == "NotRegistered" else "MeshError", message,
                     link.node_id)

    def _refuse(self, slot: Slot, exc: str, message: str, node: str = "") -> None:
        """Fail a task no node took (no node has it, serves its queue, or could journal
        it), and say so in this process's log: it will never run, and a sender that
        does not wait for its result (a web request, a script that exits) would not
        know (Celery's worker logs an unregistered task at ERROR). The first refusal of
        a task name in ``REFUSED_LOG_SPAN`` s is logged with its id; the next ones in
        that span are counted in the next line. The slot is failed before it leaves
        ``_slots``: ``flush()`` (the tasks still pending) never sees it as neither pending
        nor failed (``meshctl call`` reads it right after)."""
        self._fail(slot, exc, message, node)
        if self._slots.get(slot.task_id) is slot:
            del self._slots[slot.task_id]
        now = time.monotonic()
        seen = self._refusals.get(slot.name)
        if seen is not None and now - seen[0] < REFUSED_LOG_SPAN:
            seen[1] += 1
            return
        more = ""
        if seen is not None and seen[1]:
            more = (f" ({int(seen[1])} more task(s) of that name were refused in the last "
                    f"{now - seen[0]:.0f} s)")
        if len(self._refusals) > 1000:
            self._refusals.clear()
        self._refusals[slot.name] = [now, 0]
        log.warning("task %s[%s] was refused and will not run: %s: %s%s", slot.name or "?",
                    slot.task_id, exc, message, more)


def not_registered(msg: Result) -> bool:
    """A node's own NotRegistered refusal (not an exception a task raised): the client
    tries another node (``_on_refused``) rather than taking it as the task's result."""
    exc = msg.exc or {}
    return exc.get("type") == "NotRegistered" and exc.get("module") == "mesh.exceptions"
