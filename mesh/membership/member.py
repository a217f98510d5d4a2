"""What membership tells the rest of mesh: member snapshots, states and statistics."""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from mesh.wire import protocol


class MemberState(enum.StrEnum):
    """A member's state as this node sees it."""
    ALIVE = "alive"        # answers probes (or was heard from recently enough)
    SUSPECT = "suspect"    # missed a probe round; dead unless it refutes in time
    DEAD = "dead"          # the suspicion timed out; kept for dead_node_reclaim, then forgotten
    LEFT = "left"          # said goodbye (leave()); never suspected; forgotten like the dead


WIRE_STATE: dict[MemberState, int] = {
    MemberState.ALIVE: protocol.UPDATE_ALIVE, MemberState.SUSPECT: protocol.UPDATE_SUSPECT,
    MemberState.DEAD: protocol.UPDATE_DEAD, MemberState.LEFT: protocol.UPDATE_LEFT,
}
STATE_OF_WIRE: dict[int, MemberState] = {v: k for k, v in WIRE_STATE.items()}

EMPTY_META: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Member:
    """A frozen snapshot of one member.

    ``incarnation`` is raised only by the member itself (to refute a suspicion, or
    when it rejoins); ``meta`` is what the member's get_local_meta() returned (mesh
    puts its load there: free, total, queued, rate, cpu, mem) and ``meta_version``
    counts its changes within one incarnation. ``state_changed`` is this node's
    monotonic clock when the state last changed."""
    id: str
    address: str
    incarnation: int
    state: MemberState
    meta: Mapping[str, Any]
    meta_version: int
    state_changed: float

    @property
    def is_alive(self) -> bool:
        return self.state is MemberState.ALIVE


@dataclass(frozen=True, slots=True)
class MembershipStats:
    """Counters of one Membership since it started (a frozen value)."""
    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int         # of the frames handed to handle() as bytes (not as messages)
    bytes_sent_by_type: Mapping[str, int]   # "PING", "PING_ACK", "GOSSIP", "PUSH_PULL", ...
    probes: int                 # probes started
    probe_failures: int         # probes that ended without an ack (the target became suspect)
    indirect_probes: int        # probes that needed PING_REQs
    suspicions: int             # members this node suspected itself
    refutations: int            # times this node refuted a suspicion or death about itself
    deaths_declared: int        # suspicions that timed out here
    decode_errors: int          # inbound frames refused
    awareness: int              # current local health score (0 = healthy)
    queued_updates: int         # updates waiting to be piggybacked
