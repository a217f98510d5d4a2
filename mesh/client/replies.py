"""What the client does with each frame a node sends (a mixin of mesh.client.io.Client,
kept apart so that the I/O thread's module stays about its loop and what it sends).
Runs on the I/O thread only.

* ``_handle``: an ACK counts the task as received and carries the node's load; a
  RESULT completes the task's slot (the first result wins: a duplicate is said to its
  node); a RETRY is not final: the slot keeps what a resend must carry (retries + 1);
  a STATE (STARTED, PROGRESS...) is the task's state until its result; answers to the
  members question and to result lookups go to members.py and lookups.py. Only the node
  a task was sent to (or followed to) speaks for it: the same from another link is
  mesh/client/handshakes.py's ``foreign``.
* RELEASE: tasks given back unstarted go to the node named (shedding), else to
  another node, else to the same one again shortly (``_resend_due``); MOVED: tasks
  another node holds now are followed there (or, when it is gone, to its backup).
* ERROR: a refusal for a full node (``quota``) makes the task wait for room (room.py);
  one for the journal or the queue sends it to another node (routes.py); others fail
  the task. ``reply-too-large``: a reply over this client's max_message_size was not
  sent: the task (ours or looked up) fails with ResultTooLarge (``_too_large``).
* A frame over the limit from a node that was not told it (an older one) is read only
  for whose it is (``_oversized``): a result fails its task as ``reply-too-large``
  would, a RETRY is taken cut short, and any other is dropped, said once a minute.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.client.links import NodeLink
from mesh.client.members import MEMBERS_REQ, RELEASE_RETRY_DELAY
from mesh.client.room import hold, let_go
from mesh.client.routes import not_registered
from mesh.config import Config
from mesh.exceptions import DecodeError, result_too_large
from mesh.security.text import printable, safe_logger
from mesh.slot import Slot, retry_meta, trim_retry
from mesh.wire.protocol import (
    REPLY_TOO_LARGE,
    Ack,
    Control,
    ControlReply,
    Error,
    Moved,
    Release,
    Result,
    State,
    Submit,
    decode,
    encode,
)

log = safe_logger("mesh.client")

DROPPED_SAID = 60.0         # s between two WARNINGs about frames of a kind dropped too big


class Replies:
    """What each frame from a node does (see the module's docs)."""

    # state owned by Client (mesh/client/io.py) and its other mixins, used here
    config: Config
    links: dict[str, NodeLink]
    duplicates: int
    _slots: dict[str, Slot]
    _retry: list[tuple[float, Slot]]
    _followed: dict[str, str]
    _dropped_said: dict[str, float]

    if TYPE_CHECKING:           # Client's and its other mixins', used here
        _full: dict[str, NodeLink]
        _queries: dict[str, list[Any]]
        _members_req: str
        _members_asked: float
        _members_answered: float
        _released_at: float

        @staticmethod
        def _forget_one(link: NodeLink, acked: bool) -> None: ...
        @staticmethod
        def _fail(slot: Slot, exc_type: str, message: str, node: str = "") -> None: ...
        def _send(self, slot: Slot, link: NodeLink | None) -> None: ...
        def _put(self, link: NodeLink, frames: bytes | list[bytes]) -> bool: ...
        def _pick(self, avoid: str | None = None, slot: Slot | None = None, kind: str = "",
                  said: str = "") -> NodeLink | None: ...
        def _another(self, slot: Slot, link: Any) -> bool: ...
        def _shed_target(self, target: Any) -> NodeLink | None: ...
        def _to_backup(self, slot: Slot, holder: str, avoid: NodeLink) -> None: ...
        def _from_elsewhere(self, msg: Result, link: NodeLink) -> None: ...
        def _on_refused(self, slot: Slot, link: Any, kind: str, message: str) -> None: ...
        def _on_quota(self, slot: Slot, link: Any, said: str) -> None: ...
        def _room_freed(self, link: Any) -> None: ...
        def _apply_members(self, members: Any, answering: NodeLink | None = None) -> None: ...
        def _members_too_large(self, text: str, link: NodeLink) -> None: ...
        def _complete_watched(self, msg: Result) -> bool: ...
        def _on_query_reply(self, msg: ControlReply) -> None: ...
        def _too_large_elsewhere(self, ref: str, text: str) -> bool: ...

    def _handle(self, msg: Any, link: NodeLink) -> None:
        if type(msg) is Result and msg.state == states.RETRY:
            slot = self._slots.get(msg.task_id)    # not final: it runs again later
            if slot is not None and slot.node != link.endpoint:
                self._from_elsewhere(msg, link)
            elif slot is not None and slot.msg is None:
                meta = retry_meta(msg)             # r.info: the exception it retries for
                with Slot.lock:
                    slot.state, slot.meta = states.RETRY, meta
                if slot.frame is not None:     # keep what a resend must carry: retries + 1
                    sub = decode(slot.frame)
                    if isinstance(sub, Submit):
                        slot.frame = encode(dataclasses.replace(
                            sub, retries=msg.retries + 1, eta=msg.eta if msg.eta else sub.eta,
                            payload=msg.payload if msg.payload is not None else sub.payload))
        elif type(msg) is Result:
            slot = self._slots.get(msg.task_id)
            if slot is not None and slot.node != link.endpoint:
                self._from_elsewhere(msg, link)          # only its holder speaks for a task
                return
            if msg.exc is not None and msg.traceback is None and not_registered(msg):
                slot = self._slots.get(msg.task_id)    # refused there: another node may have it
                if slot is not None and slot.msg is None:
                    self._on_refused(slot, link, "NotRegistered", str(msg.exc.get("message")))
                    return
            slot = self._slots.pop(msg.task_id, None)
            was_acked = slot is not None and slot.state != states.PENDING
            if slot is None:
                completed = self._complete_watched(msg)
                if completed:
                    return
            if slot is None or not slot.complete(msg):
                self.duplicates += 1       # first result won; tell its sender (an event)
                log.info("dropped a duplicate result for task %s from %s", msg.task_id, msg.node)
                self._put(link, encode(Control("dup", "duplicate", {
                    "task_id": msg.task_id, "noreply": True}, self.config.max_message_size)))
                return
            let_go(slot)
            if self._followed:
                self._followed.pop(msg.task_id, None)
            owner = self.links.get(slot.node or "")
            if owner is not None:
                self._forget_one(owner, was_acked)
                if self._full:
                    self._room_freed(owner)
        elif type(msg) is Ack:
            if len(msg.load) >= 3:
                link.busy, link.total, link.queued = msg.load[0], msg.load[1], msg.load[2]
            link.node_id = msg.node
            followed = self._followed
            for tid in msg.task_ids:
                if followed and followed.get(tid) == link.endpoint:
                    del followed[tid]
                slot = self._slots.get(tid)
                if slot is not None and slot.state == states.PENDING and slot.node == link.endpoint:
                    slot.state = states.RECEIVED
                    if link.inflight > 0:
                        link.inflight -= 1
        elif type(msg) is State:
            self._on_state(msg, link)
        elif type(msg) is Release:
            self._on_release(msg, link)
        elif type(msg) is Moved:
            self._on_moved(msg, link)
        elif type(msg) is ControlReply:
            if msg.req_id == self._members_req and msg.ok:
                link.node_id = msg.node
                self._apply_members(msg.payload, link)
                self._members_answered = self._members_asked
            elif msg.req_id in self._queries:
                self._on_query_reply(msg)
        elif type(msg) is Error:
            if msg.code == REPLY_TOO_LARGE:   # a reply over our max_message_size, not sent
                self._too_large(msg.ref, printable(msg.message, 500), link)
                return
            slot = self._slots.get(msg.ref) if msg.ref else None
            if slot is not None and slot.node != link.endpoint:
                slot = None                   # about a task this node does not hold for us
            if slot is not None and msg.code == "quota":     # full: the task waits (room.py,
                self._on_quota(slot, link, printable(msg.message, 300))   # which says so once)
                return
            log.warning("node at %s refused a frame: %s: %s", link.endpoint, msg.code,
                        printable(msg.message, 300))
            if slot is not None and msg.code in ("journal", "queue"):
                self._on_refused(slot, link, msg.code, msg.message)
                return
            if slot is not None:
                self._slots.pop(slot.task_id, None)
                owner = self.links.get(slot.node or "") or link
                self._forget_one(owner, slot.state != states.PENDING)
                kind = "MeshError" if msg.code in ("unauthorized",) else "DecodeError"
                self._fail(slot, kind, f"node refused the task ({msg.code}): {msg.message}",
                           link.endpoint)
        else:
            log.debug("ignored %s from %s", type(msg).__name__, link.endpoint)

    def _oversized(self, frame: bytes, link: NodeLink) -> Any:
        """A frame over our max_message_size (up to twice it: libzmq refuses more),
        from a node that was not told our limit (an older one): it is read, only for
        whose it is. A result fails its task, saying so, as a node's ERROR
        ``reply-too-large`` would; the node keeps it. Returns what it was (the message,
        or the DecodeError)."""
        limit = self.config.max_message_size
        msg: Any
        try:
            msg = decode(frame, len(frame))
        except DecodeError as e:
            msg = e
        retry = type(msg) is Result and msg.state == states.RETRY
        if retry and (small := trim_retry(msg, len(frame), limit)) is not None:
            self._handle(small, link)        # not final: cut short, as a node that knows
        elif type(msg) is Result and not retry:      # our limit does, never failing its task
            self._too_large(msg.task_id, result_too_large(msg.task_id, len(frame), limit,
                                                          msg.node or link.node_id), link)
        elif type(msg) is ControlReply and msg.req_id in self._queries:
            self._too_large(msg.req_id, f"the answer of node {msg.node} to a result lookup is "
                            f"{len(frame):,} bytes, over this client's max_message_size "
                            f"({limit:,}): raise it to read that result", link)
        elif type(msg) is ControlReply and msg.req_id.startswith(MEMBERS_REQ):
            self._members_too_large(f"it is {len(frame):,} bytes, over this client's "
                                    f"max_message_size ({limit:,})", link)
        else:
            self._dropped_oversized(msg, len(frame), link)
        return msg

    def _dropped_oversized(self, msg: Any, size: int, link: NodeLink) -> None:
        """Say (once a minute per kind of frame) that a frame over our limit, from a
        node that does not know it, was dropped, and what to do."""
        kind = type(msg).__name__.upper() if not isinstance(msg, Exception) else "frame"
        now = time.monotonic()
        if now - self._dropped_said.get(kind, -DROPPED_SAID) < DROPPED_SAID:
            log.debug("dropped a %s of %d bytes from %s", kind, size, link.endpoint)
            return
        self._dropped_said[kind] = now
        ref = getattr(msg, "task_id", None) or getattr(msg, "req_id", None)
        about = f" about {printable(ref, 100)}" if isinstance(ref, str) else ""
        why = f" ({printable(str(msg), 200)})" if isinstance(msg, Exception) else ""
        log.warning("dropped a %s%s of %d bytes from %s%s: over this client's max_message_size "
                    "(%d), from a node that does not know that limit (an older one). Raise "
                    "the client's max_message_size (Mesh(max_message_size=...), "
                    "MESH_MAX_MESSAGE_SIZE) to %d or more, or read the task by id "
                    "(AsyncResult) from a client with a larger max_message_size. (Said at "
                    "most once a minute for a %s.)", kind, about, size, link.endpoint, why,
                    self.config.max_message_size, size, kind)

    def _too_large(self, ref: str | None, text: str, link: NodeLink) -> None:
        """A reply about ``ref`` was over our max_message_size: the node sent an ERROR
        ``reply-too-large`` instead (``text``: its words), or an older node sent it
        (``_oversized``). The task it is about, ours or looked up here, fails with
        ResultTooLarge; the node keeps its result, for a client with a larger limit."""
        slot = self._slots.get(ref) if ref else None
        if slot is not None and slot.node == link.endpoint and slot.msg is None:
            del self._slots[slot.task_id]
            owner = self.links.get(slot.node or "") or link
            self._forget_one(owner, slot.state != states.PENDING)
            if self._followed:
                self._followed.pop(slot.task_id, None)
            self._fail(slot, "ResultTooLarge", text, link.node_id)
            if self._full:
                self._room_freed(owner)
            return
        if ref is not None and self._too_large_elsewhere(ref, text):
            return
        if ref is not None and ref.startswith(MEMBERS_REQ):    # our members question (a
            self._members_too_large(text, link)                # task id looking so is
            return                                             # one of the above first)
        log.warning("node at %s did not send a reply over this client's "
                    "max_message_size: %s", link.endpoint, text)

    def _on_state(self, msg: State, link: NodeLink) -> None:
        """A task's state before it finishes (STARTED, PROGRESS...), with its meta.
        (Only owners get these: other processes ask the node, which remembers it.)"""
        slot = self._slots.get(msg.task_id)
        if slot is not None and slot.msg is None and slot.node == link.endpoint:
            if slot.state == states.PENDING and link.inflight > 0:   # it implies the ACK
                link.inflight -= 1
            with Slot.lock:        # (a pair: a watcher reads them together, result.py _watch)
                slot.state, slot.meta = msg.state, msg.meta

    def _on_release(self, msg: Release, link: NodeLink) -> None:
        """Tasks given back unstarted: send them to ``msg.target`` if the node named
        one (shedding), else to another node (shutdown)."""
        target = msg.target
        if not target:
            link.released_at = self._released_at = time.monotonic()
        for tid in msg.task_ids:
            slot = self._slots.get(tid)
            if slot is None or slot.msg is not None or slot.node != link.endpoint:
                continue                      # not ours, done, or not held there
            self._forget_one(link, slot.state != states.PENDING)
            let_go(slot)
            slot.state = states.PENDING
            shed_to = self._shed_target(target)
            if shed_to is not None:
                self._send(slot, shed_to)
            elif self._another(slot, link):
                self._send(slot, self._pick(avoid=link.endpoint, slot=slot))
            else:   # the only node is restarting: try it again shortly
                self._retry.append((time.monotonic() + RELEASE_RETRY_DELAY, slot))
        log.info("node %s gave back %d unstarted task(s): %s", msg.node, len(msg.task_ids), msg.reason)

    def _on_moved(self, msg: Moved, link: NodeLink) -> None:
        """Another node holds these tasks now (the node shed them, or is stopping): it
        journalled them, so they run whatever we do. Follow them there: the new holder
        acknowledges each one and sends its result to us."""
        target = self._shed_target(msg.target)
        followed = 0
        for tid in msg.task_ids:
            slot = self._slots.get(tid)
            if slot is None or slot.msg is not None or slot.frame is None or \
                    slot.node != link.endpoint:
                continue                      # not ours, done, or not held there
            self._forget_one(link, slot.state != states.PENDING)
            if target is not None:
                slot.node = target.endpoint        # held there: not counted as in flight
                self._followed[tid] = target.endpoint   # (until it acknowledges: _left)
                hold(slot, target)
                self._put(target, slot.frame)
                followed += 1
            else:       # where it went has left (or died, or cannot be reached): that
                let_go(slot)     # node handed it to its backup (or its backup runs it)
                slot.state = states.PENDING
                if msg.target_node:
                    self._to_backup(slot, msg.target_node, link)
                else:   # (a node that does not say whose: it may run twice rather than never)
                    self._send(slot, self._pick(avoid=link.endpoint, slot=slot))
        log.info("node %s handed %d of our task(s) to %s (%s): %s", msg.node, followed,
                 msg.target_node or msg.target[:100], msg.target[:100], msg.reason)

    def _resend_due(self, now: float) -> None:
        due = [s for t, s in self._retry if t <= now]
        self._retry = [(t, s) for t, s in self._retry if t > now]
        for slot in due:
            if slot.msg is None:
                self._send(slot, self._pick(slot=slot))
