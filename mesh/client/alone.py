"""Tasks sent again one at a time, on a link libzmq ends again and again.

A mixin of :class:`mesh.client.io.Client`; everything here runs on its I/O thread.

An older node (one that does not know this client's max_message_size) set above
16 MiB may hold a result over what even a rebuilt link takes (``WIDE_MAXMSGSIZE``,
links.py): it sends it again each time the task is sent again, and libzmq ends the
connection on it each time, before the client can read whose it is. Sent with the
others, the task cannot be told from them (the node's ACKs for them go in the same
multipart message, lost with it), and the link would be rebuilt every half second for
ever. So once a rebuilt link ends again, its tasks are sent again **one at a time**:
the next once a frame about the one before has come (an ACK, a RESULT, a STATE...),
or ``ALONE_WAIT`` has passed. A task that was the one in flight when the link ended
``ENDED_MAX`` times (a task answered meanwhile starts again from 0) fails with
ResultTooLarge and is not sent there again; the others go on. Tasks with such ends
against them go first. Once every task held there has been sent that way, the link
sends as usual again.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mesh.wire.protocol import Ack, Error, Moved, Release, Result, State

if TYPE_CHECKING:
    from mesh.client.links import NodeLink
    from mesh.config import Config
    from mesh.slot import Slot

ENDED_MAX = 2        # ends of a link while a task was the one in flight there: it fails
ALONE_WAIT = 5.0     # s without an answer about the task sent alone before the next goes


class Alone:
    """Sending a link's tasks again one at a time (see the module docstring)."""

    config: Config
    _slots: dict[str, Slot]
    _ended: dict[str, int]          # task id -> ends of its link while it was sent alone

    if TYPE_CHECKING:
        links: dict[str, NodeLink]

        def _send(self, slot: Slot, link: NodeLink | None) -> None: ...
        def _too_large(self, ref: str | None, text: str, link: NodeLink) -> None: ...

    def _resend_alone(self, link: NodeLink, slots: list[Slot]) -> None:
        """Send ``slots`` (held at ``link``) again one at a time, those with ends of the
        link against them first."""
        ended = self._ended
        link.queue = [s.task_id for s in sorted(slots, key=lambda s: -ended.get(s.task_id, 0))]
        link.lone = ""
        self._next_alone(link)

    def _next_alone(self, link: NodeLink) -> None:
        """Send the next task still held at ``link``; none left: the link sends as usual."""
        while link.queue:
            slot = self._slots.get(link.queue.pop(0))
            if slot is None or slot.msg is not None or slot.node != link.endpoint:
                continue
            link.lone, link.lone_at = slot.task_id, time.monotonic()
            self._send(slot, link)
            return
        link.lone, link.alone = "", False

    def _answered_alone(self, link: NodeLink) -> None:
        """A frame about the task sent alone came: it fits; the next one goes."""
        self._ended.pop(link.lone, None)
        self._next_alone(link)

    def _ended_alone(self, link: NodeLink, cap: int) -> None:
        """``link``, taking frames of ``cap`` bytes at most, was ended again: its tasks
        go one at a time from now on, and the one in flight alone, if any, has one
        more end against it (at ``ENDED_MAX`` it fails)."""
        tid, link.lone, link.queue, link.alone = link.lone, "", [], True
        slot = self._slots.get(tid) if tid else None
        if slot is None or slot.msg is not None or slot.node != link.endpoint:
            return
        ends = self._ended[tid] = self._ended.get(tid, 0) + 1
        if ends < ENDED_MAX:
            return
        del self._ended[tid]
        limit = self.config.max_message_size
        self._too_large(tid, (
            f"the result of task {tid} on node {link.node_id or link.endpoint} ended this "
            f"client's connection to it {ends} times, sent alone: it is over {cap:,} bytes "
            f"(ZeroMQ ends a connection on a bigger frame), far over this client's "
            f"max_message_size ({limit:,}), and the node (an older one) does not know that "
            "limit. It stays stored on the node: read it by id (AsyncResult) from a client "
            "with a larger max_message_size (or raise this one's above the result's size), "
            "or return a smaller result"), link)

    def _check_alone(self, now: float) -> None:
        """(Each second.) A task sent alone without an answer for ALONE_WAIT seconds
        does not hold up the others; ends counted for tasks no longer ours are dropped."""
        for link in self.links.values():
            if link.lone and now - link.lone_at > ALONE_WAIT:
                self._next_alone(link)
        if self._ended:
            for tid in [t for t in self._ended if t not in self._slots]:
                del self._ended[tid]


def names(msg: Any, task_id: str) -> bool:
    """Whether a frame from a node is about ``task_id``."""
    kind = type(msg)
    if kind is Result or kind is State:
        return bool(msg.task_id == task_id)
    if kind is Ack or kind is Release or kind is Moved:
        return task_id in msg.task_ids
    if kind is Error:
        return bool(msg.ref == task_id)
    return False
