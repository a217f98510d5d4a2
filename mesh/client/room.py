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

A node refuses only while it holds tasks of this connection, so each waiting task is
taken once enough of those finish, even one larger than ``--quota-bytes`` (a node
takes any task from a sender it holds nothing of). Waiting is said once per spell (a
WARNING naming the node's limit), and its end (INFO). ``get(timeout=...)`` ends as
always; a process that exits with tasks still waiting says how many no node took
(``Client.close``): they never reached a node.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Any

from mesh import states
from mesh.result import Slot

log = logging.getLogger("mesh.client")

PROBE = 1.0     # s between offers of a waiting task to each full node


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
        self._full: dict[str, Any] = {}        # endpoint -> link refused a task: quota
        self._probe_at = 0.0
        self._room_said = ""                   # the refusal that started this spell
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
        slot.state = states.PENDING
        slot.node = None
        link.credit = 0
        if link.endpoint not in self._full:
            self._full[link.endpoint] = link
        if not self._room_said:
            self._room_said = f"{link.node_id or link.endpoint}: {said}"
        self._send(slot, self._pick(slot=slot))

    def _with_room(self, pool: list[Any], slot: Slot | None) -> list[Any] | None:
        """(From _pick, while a node is full) the nodes of ``pool`` with room; None when
        there is none: ``slot`` then waits (it is taken care of)."""
        open_ = [n for n in pool if n.endpoint not in self._full or n.credit > 0]
        if open_:
            return open_
        if slot is not None:
            self._wait(slot)
        return None

    def _wait(self, slot: Slot) -> None:
        slot.node = None
        slot.state = states.PENDING
        self._room.append(slot)
        self.waited += 1                       # (one that waits again is not counted twice)
        if len(self._room) == 1:
            self._probe_at = time.monotonic() + PROBE
            log.warning("nodes hold as many tasks from this client as they allow (%s); "
                        "tasks wait in this client and go as earlier ones finish (a node's "
                        "--quota-tasks and --quota-bytes let it hold more)", self._room_said)

    def _room_freed(self, link: Any) -> None:
        """One of our tasks finished at ``link``: if it was full, the task waiting
        longest goes."""
        if link.endpoint in self._full:
            link.credit += 1
            self._release(1)

    def _release(self, n: int) -> None:
        """Send up to ``n`` waiting tasks, longest waiting first; stop at the first
        that no node has room for (it stays first)."""
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
            self._room_over()

    def _room_over(self) -> None:
        if self._full:
            for link in self._full.values():
                link.credit = 0
            self._full.clear()
            if self._room_said:
                log.info("every task that waited for room has gone to a node")
            self._room_said = ""

    def _probe(self, now: float) -> None:
        """Once a second while tasks wait: one task to each full node, and as many as
        nodes with room take."""
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
            link.credit = max(link.credit, 1)
        self._release(len(self._room))
