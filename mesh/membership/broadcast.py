"""The dissemination queue: updates waiting to be piggybacked on outgoing messages.

Like memberlist's TransmitLimitedQueue: each update is sent at most ``limit`` times
(timing.retransmit_limit), the least-sent first and, among equals, the newest first;
a newer update about the same member replaces the older one, so the queue holds at
most one liveness update and one meta update per member.

mesh adds two tiers: *liveness* updates (alive with a new incarnation, suspect, dead,
left) always go before *meta* updates (a member's load changed). Load changes all
the time on every node; with one tier they would crowd a crash report out of the
piggyback space of a large mesh.
"""
from __future__ import annotations

from typing import Any

LIVENESS = 0
META = 1

Update = list[Any]   # [state, node, incarnation, address, origin, meta_version, meta]


class BroadcastQueue:
    """Updates keyed by (member id, tier), bucketed by how often they were sent."""

    __slots__ = ("_buckets", "_where")

    def __init__(self) -> None:
        # per tier: transmits -> {member id: update}, insertion ordered (oldest first)
        self._buckets: tuple[dict[int, dict[str, Update]], ...] = ({}, {})
        self._where: tuple[dict[str, int], ...] = ({}, {})   # per tier: member id -> transmits

    def __len__(self) -> int:
        return len(self._where[LIVENESS]) + len(self._where[META])

    def put(self, member: str, update: Update, tier: int = LIVENESS) -> None:
        """Queue ``update`` about ``member``. A liveness update replaces both the
        pending liveness and meta updates about that member (it carries the meta
        too); a meta update replaces only the pending meta update."""
        self._drop(member, tier)
        if tier == LIVENESS:
            self._drop(member, META)
        self._where[tier][member] = 0
        self._buckets[tier].setdefault(0, {})[member] = update

    def _drop(self, member: str, tier: int) -> None:
        sent = self._where[tier].pop(member, None)
        if sent is not None:
            bucket = self._buckets[tier][sent]
            del bucket[member]
            if not bucket:
                del self._buckets[tier][sent]

    def take(self, count: int, limit: int) -> list[Update]:
        """Up to ``count`` updates to piggyback on one message; each one taken counts
        as sent once, and is forgotten after its ``limit``-th time."""
        out: list[Update] = []
        for tier in (LIVENESS, META):
            buckets, where = self._buckets[tier], self._where[tier]
            if not where:
                continue
            picked: list[tuple[int, str]] = []
            for sent in sorted(buckets):
                if sent >= limit:                 # the limit fell (fewer members): expire
                    for member in buckets.pop(sent):
                        del where[member]
                    continue
                for member, update in reversed(buckets[sent].items()):   # newest first
                    out.append(update)
                    picked.append((sent, member))
                    if len(out) == count:
                        break
                if len(out) == count:
                    break
            for sent, member in reversed(picked):     # so the newest stays newest in its new bucket
                update = buckets[sent].pop(member)
                if not buckets[sent]:
                    del buckets[sent]
                if sent + 1 >= limit:
                    del where[member]
                else:
                    where[member] = sent + 1
                    buckets.setdefault(sent + 1, {})[member] = update
            if len(out) == count:
                break
        return out

    def pending(self, member: str, tier: int = LIVENESS) -> Update | None:
        """The queued update about ``member`` in ``tier``, if any (for tests)."""
        sent = self._where[tier].get(member)
        return None if sent is None else self._buckets[tier][sent][member]
