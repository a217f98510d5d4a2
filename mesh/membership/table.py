"""The member table: what this node knows about each other member.

Internal to mesh.membership. Records are mutable here and handed out only as frozen
:class:`~mesh.membership.member.Member` snapshots. The table keeps the counts and
indexes that the protocol needs often and cheaply at 1,000 members: how many members
are live, a list for random picks, the shuffled probe order, the suspects with
timers, and the dead and left ones with the time they will be forgotten.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from mesh.membership import timing
from mesh.membership.member import Member, MemberState

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
LIVE = (ALIVE, SUSPECT)


class Suspicion:
    """A suspicion timer that shortens as independent confirmations arrive
    (memberlist's suspicion.go; the maths is timing.remaining_suspicion_time)."""
    __slots__ = ("confirmers", "deadline", "hi", "k", "lo", "start")

    def __init__(self, origin: str, start: float, k: int, lo: float, hi: float) -> None:
        self.start, self.k, self.lo, self.hi = start, k, lo, hi
        self.confirmers = {origin}          # the first suspecter is not a confirmation
        self.deadline = start + timing.remaining_suspicion_time(0, k, 0.0, lo, hi)

    @property
    def confirmations(self) -> int:
        return len(self.confirmers) - 1

    def confirm(self, origin: str) -> bool:
        """Count an independent confirmation from ``origin``; True if it was new and
        counted (at most ``k`` count)."""
        n = self.confirmations
        if n >= self.k or origin in self.confirmers:
            return False
        self.confirmers.add(origin)
        self.deadline = self.start + timing.remaining_suspicion_time(n + 1, self.k, 0.0, self.lo, self.hi)
        return True


class Node:
    """One member's record."""
    __slots__ = (
        "address",
        "id",
        "incarnation",
        "meta",
        "meta_version",
        "state",
        "state_changed",
        "suspicion",
    )

    def __init__(self, id: str, address: str, incarnation: int, meta: dict[str, Any],
                 meta_version: int, now: float) -> None:
        self.id = id
        self.address = address
        self.incarnation = incarnation
        self.state = ALIVE
        self.meta = meta                    # replaced, never mutated: snapshots share it
        self.meta_version = meta_version
        self.state_changed = now
        self.suspicion: Suspicion | None = None

    def snapshot(self) -> Member:
        return Member(self.id, self.address, self.incarnation, self.state,
                      MappingProxyType(self.meta), self.meta_version, self.state_changed)


def is_live(n: Node) -> bool:
    return n.state in LIVE


def is_alive(n: Node) -> bool:
    return n.state is ALIVE


def not_left(n: Node) -> bool:
    return n.state is not LEFT


class MemberTable:
    """The other members (this node's own record is ``me``, not in ``nodes``)."""

    def __init__(self, me: Node, rng: random.Random, reclaim_after: float) -> None:
        self.me = me
        self.rng = rng
        self.reclaim_after = reclaim_after
        self.nodes: dict[str, Node] = {}
        self.live = 0                        # others alive or suspect
        self.suspects: set[str] = set()
        self.gone: dict[str, float] = {}     # dead or left -> when it is to be forgotten
        self.next_forget = float("inf")
        self.probe_first: str | None = None  # a suspect to probe before the round robin
        self._ids: list[str] = []            # for random picks
        self._id_at: dict[str, int] = {}
        self._order: list[str] = []          # probe order (shuffled round robin)
        self._order_at = 0

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, member_id: str) -> Node | None:
        return self.nodes.get(member_id)

    def n(self) -> int:
        """The mesh size the timing maths use: live members, this node included."""
        return self.live + 1

    def add(self, member_id: str, address: str, inc: int, meta: dict[str, Any], version: int,
            now: float) -> Node:
        """A new member, alive."""
        node = Node(member_id, address, inc, meta, version, now)
        self.nodes[member_id] = node
        self._id_at[member_id] = len(self._ids)
        self._ids.append(member_id)
        # At a random place in the probe order, as memberlist does: appending would
        # leave a newcomer unprobed until the end of the round.
        order = self._order
        order.append(member_id)
        j = int(self.rng.random() * len(order))
        order[j], order[-1] = order[-1], order[j]
        self.live += 1
        return node

    def set_state(self, node: Node, state: MemberState, now: float) -> MemberState:
        """Move ``node`` to ``state``; returns the old state."""
        old = node.state
        if old is state:
            return old
        was_live, is_live_now = old in LIVE, state in LIVE
        if was_live != is_live_now:
            self.live += 1 if is_live_now else -1
        node.state = state
        node.state_changed = now
        if state is not SUSPECT:
            node.suspicion = None
            self.suspects.discard(node.id)
        if is_live_now:
            self.gone.pop(node.id, None)
        else:
            forget_at = now + self.reclaim_after
            self.gone[node.id] = forget_at
            self.next_forget = min(self.next_forget, forget_at)
        return old

    def suspect(self, node: Node, suspicion: Suspicion) -> None:
        node.suspicion = suspicion
        self.suspects.add(node.id)

    def next_suspicion_deadline(self) -> float:
        deadline = float("inf")
        for member_id in self.suspects:
            s = self.nodes[member_id].suspicion
            if s is not None and s.deadline < deadline:
                deadline = s.deadline
        return deadline

    def expired_suspicions(self, now: float) -> list[Node]:
        out = []
        for member_id in self.suspects:
            node = self.nodes[member_id]
            if node.suspicion is not None and now >= node.suspicion.deadline:
                out.append(node)
        return out

    def forget_due(self, now: float) -> list[str]:
        """Forget dead and left members whose time is up; returns their ids."""
        due = [i for i, t in self.gone.items() if t <= now]
        for member_id in due:
            del self.gone[member_id], self.nodes[member_id]
            i = self._id_at.pop(member_id)
            last = self._ids.pop()
            if last != member_id:
                self._ids[i] = last
                self._id_at[last] = i
        self.next_forget = min(self.gone.values(), default=float("inf"))
        return due

    def random(self, k: int, accept: Callable[[Node], bool], exclude: str | None = None) -> list[Node]:
        """Up to ``k`` distinct random members that ``accept`` likes (not ``exclude``)."""
        ids, nodes, rng = self._ids, self.nodes, self.rng
        if k <= 0:
            return []
        if len(ids) <= 4 * k:
            pool = [nodes[i] for i in ids if i != exclude and accept(nodes[i])]
            rng.shuffle(pool)
            return pool[:k]
        out: list[Node] = []
        seen = {exclude}
        for _ in range(3 * len(ids)):        # memberlist's kRandomNodes
            member_id = ids[int(rng.random() * len(ids))]
            if member_id not in seen:
                seen.add(member_id)
                node = nodes[member_id]
                if accept(node):
                    out.append(node)
                    if len(out) == k:
                        break
        return out

    def next_probe_target(self) -> Node | None:
        """The next member to probe: a suspect we were told about first, then the
        shuffled round robin over live members, reshuffled after each round."""
        if self.probe_first is not None:
            node = self.nodes.get(self.probe_first)
            self.probe_first = None
            if node is not None and node.state is SUSPECT:
                return node
        order = self._order
        for _ in range(len(order) + 1):
            if self._order_at >= len(order):
                order[:] = [i for i in self._ids if self.nodes[i].state in LIVE]
                self.rng.shuffle(order)
                self._order_at = 0
                if not order:
                    return None
            node = self.nodes.get(order[self._order_at])
            self._order_at += 1
            if node is not None and node.state in LIVE:
                return node
        return None
