"""Tasks no node has room for yet: the client waits instead of failing them (a mixin of
mesh.client.io.Client; runs on the I/O thread only).

A node holds at most ``--quota-tasks`` tasks (and ``--quota-bytes`` of them) from one
client connection; past that it refuses a task with ERROR ``quota`` (docs/security.md).
That is a full node, not a bad task: the client keeps it, PENDING, in its *waiting
room*, and marks the node full. Full nodes get no new task from this client until
one of ours finishes there: each RESULT from a full node is room for one task, and
the task waiting longest goes (to that node or any other with room). Tasks submitted
while every node that could take them is full join the room's end, so the nodes are
not asked for each one. Once a second (``PROBE``) each full node is offered one
waiting task anyway (room freed in ways the client does not see: a revoke, a task
handed elsewhere), and a node with room (one that joined) takes what waits. When the
room is empty, the nodes are no longer marked full.

A node says its quota in its members entry (meta ``quota``: ``[tasks, bytes]``), and
the client counts, per node, its own tasks that node holds and their bytes (``hold``,
``let_go``: sent there and not finished, given back or moved). A node whose count
has reached its quota is marked full *before* a task is sent past it (``_at_quota``),
and the task goes to a node with room or waits, as after a refusal, without the
refusal; such a node takes what waits as soon as our count says it has room again
(each RESULT, no credit), and is offered one anyway only after ``PROBE`` seconds
without one (counts may disagree: a node restarted, tasks handed to it). A node that
does not say its quota (an older one) is learned from refusals, and a refusal is
handled the same way whatever our count says (the node's word wins).

A node refuses only while it holds tasks of this connection, so each waiting task is
taken once enough of those finish, even one larger than ``--quota-bytes`` (a node
takes any task from a sender it holds nothing of). Waiting is said once per spell (a
WARNING naming the node's limit), and its end (INFO). ``get(timeout=...)`` ends as
always; a process that exits with tasks still waiting says how many no node took
(``Client.close``): they never reached a node.
"""
from __future__ import annotations

import collections
import time
from typing import Any

from mesh import states
from mesh.security.text import safe_logger
from mesh.slot import Slot

log = safe_logger("mesh.client")

PROBE = 1.0     # s between offers of a waiting task to each full node


def hold(slot: Slot, link: Any) -> None:
    """``slot`` is sent to ``link``: it counts there now (and no longer where it was)."""
    at = slot.held_at
    if at is link:
        return
    if at is not None:
        at.held -= 1
        at.held_bytes -= slot.held_size
    size = len(slot.frame) if slot.frame is not None else 0
    link.held += 1
    link.held_bytes += size
    slot.held_at, slot.held_size = link, size


def let_go(slot: Slot) -> None:
    """``slot`` is no longer held where it was sent (finished, refused, given back)."""
    at = slot.held_at
    if at is not None:
        at.held -= 1
        at.held_bytes -= slot.held_size
        slot.held_at = None


def room_for(link: Any, slot: Slot) -> bool:
    """Whether ``link`` takes ``slot`` by our count of what it holds from us and the
    quota it said (the node's own rule, mesh/node/ledger.py ``over_quota``)."""
    return link.held == 0 or not link.quota_tasks or (
        link.held < link.quota_tasks and
        link.held_bytes + (len(slot.frame) if slot.frame is not None else 0) <= link.quota_bytes)


def quota_of(meta: Any) -> tuple[int, int]:
    """The quota a member's meta says (``[tasks, bytes]``); (0, 0) when it says none
    or something else (a node never trusts a peer's meta to be well formed)."""
    q = meta.get("quota") if isinstance(meta, dict) else None
    if isinstance(q, list) and len(q) >= 2 and all(type(x) is int and x > 0 for x in q[:2]):
        return q[0], q[1]
    return 0, 0


class WaitingRoom:
    """The waiting room's state and moves (see the module's docs)."""

    _slots: dict[str, Slot]
    _placeable: list[Any]

    # what the I/O thread provides
    def _pick(self, avoid: str | None = None, slot: Slot | None = None, kind: str = "",
              said: str = "") -> Any: ...
    def _send(self, slot: Slot, link: Any) -> None: ...
    def _forget_one(self, link: Any, acked: bool) -> None: ...

    def _init_room(self) -> None:
        self._room: collections.deque[Slot] = collections.deque()
        self._full: dict[str, Any] = {}        # endpoint -> link without room: a refusal
                                               # (quota), or our count (link.counted)
        self._probe_at = 0.0
        self._room_said = ""                   # the refusal (or count) that started this spell
        self._room_warned = False              # the spell's WARNING was said
        self.waited = 0                        # tasks that waited for room, since start
        self.quota_refusals = 0                # ERROR quota answers, since start

    @property
    def waiting_for_room(self) -> int:
        """Tasks this client keeps until a node has room for them."""
        return len(self._room)

    def _on_quota(self, slot: Slot, link: Any, said: str) -> None:
        """``link`` refused ``slot``: it holds as much from us as its quota allows."""
        self.quota_refusals += 1
        self._forget_one(link, slot.state != states.PENDING)
        let_go(slot)
        slot.state = states.PENDING
        slot.node = None
        link.credit = 0
        link.counted = False                   # its word, not our count: room comes as
        if link.endpoint not in self._full:    # results do (credit), as for an older node
            self._full[link.endpoint] = link
        if not self._room_said:
            self._room_said = f"{link.node_id or link.endpoint}: {said}"
        self._send(slot, self._pick(slot=slot))

    def _at_quota(self, link: Any) -> None:
        """(From _pick) our count says ``link`` holds as many of our tasks as the quota
        it said allows: it is full, as if it had refused, without the refusal."""
        if link.endpoint not in self._full:
            self._full[link.endpoint] = link
            link.counted = True
            link.credit = 0
        if not self._room_said:
            self._room_said = (f"{link.node_id or link.endpoint}: holds {link.held} tasks "
                               f"({link.held_bytes} bytes) from this client, its limit is "
                               f"{link.quota_tasks} tasks and {link.quota_bytes} bytes "
                               "(quota_tasks, --quota-tasks; quota_bytes, --quota-bytes)")

    def _with_room(self, pool: list[Any], slot: Slot | None) -> list[Any] | None:
        """(From _pick, while a node is full) the nodes of ``pool`` with room; None when
        there is none: ``slot`` then waits (it is taken care of)."""
        full = self._full
        open_ = []
        for n in pool:
            if n.credit > 0 or ((n.endpoint not in full or n.counted) and
                                (slot is None or room_for(n, slot))):
                open_.append(n)
            elif n.endpoint not in full:       # no room by our count: full until a result
                self._at_quota(n)
        if open_:
            return open_
        if slot is not None:
            self._wait(slot)
        return None

    def _wait(self, slot: Slot) -> None:
        let_go(slot)
        slot.node = None
        slot.state = states.PENDING
        self._room.append(slot)
        self.waited += 1                       # (one that waits again is not counted twice)
        if not self._room_warned:              # a spell starts: said once
            self._probe_at = time.monotonic() + PROBE
            self._room_warned = True
            log.warning("nodes hold as many tasks from this client as they allow (%s); "
                        "tasks wait in this client and go as earlier ones finish (a node's "
                        "--quota-tasks and --quota-bytes let it hold more)", self._room_said)

    def _room_freed(self, link: Any) -> None:
        """One of our tasks finished at ``link``: if it was full, the task waiting
        longest goes (by our count: as many as it has room for)."""
        if link.endpoint in self._full:
            if link.counted:                   # as many as our count says it has room for
                link.freed_at = time.monotonic()
                self._release(max(1, link.quota_tasks - link.held))
            else:
                link.credit += 1
                self._release(1)

    def _release(self, n: int, probe: bool = False) -> None:
        """Send up to ``n`` waiting tasks, longest waiting first; stop at the first
        that no node has room for (it stays first). ``probe``: sent on trial (the
        once-a-second offer), so a room emptied by it ends the spell only quietly
        (``_room_over``)."""
        room = self._room
        while n > 0 and room:
            slot = room.popleft()
            if slot.msg is not None or slot.node is not None or \
                    self._slots.get(slot.task_id) is not slot:
                continue                        # finished, sent or forgotten meanwhile
            n -= 1
            self._send(slot, self._pick(slot=slot))
            if room and room[-1] is slot:       # no room for it after all: first again
                room.pop()
                room.appendleft(slot)
                self.waited -= 1
                break
        if not room:
            self._room_over(tentative=probe)

    def _room_over(self, tentative: bool = False) -> None:
        """No task waits: every node is open again. ``tentative``: the last ones went
        on trial and may be refused again (a node at its quota running long tasks is
        offered one every second): the spell's lines wait for the next second, so a
        refusal then continues it instead of a WARNING and an INFO every second."""
        for link in self._full.values():
            link.credit = 0
            link.counted = False
        self._full.clear()
        if tentative:
            return                              # _probe says it next second, if still so
        if self._room_warned:
            log.info("every task that waited for room has gone to a node")
        self._room_said = ""
        self._room_warned = False

    def _probe(self, now: float) -> None:
        """Once a second while tasks wait: one task to each full node (one full by our
        count only when none of ours finished there for PROBE s), and as many as nodes
        with room take."""
        if now < self._probe_at:
            return
        self._probe_at = now + PROBE
        if not self._room:
            self._room_over()
            return
        alive = {n.endpoint for n in self._placeable}
        for ep in [ep for ep in self._full if ep not in alive]:
            del self._full[ep]                 # dead or gone: no room to wait for there
        for link in self._full.values():
            if link.counted and now - link.freed_at < PROBE:
                continue                       # results come: our count says when it has room
            link.credit = max(link.credit, 1)
        self._release(len(self._room), probe=True)
