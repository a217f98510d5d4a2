"""Membership and failure detection: SWIM with Lifeguard, transport-agnostic.

* :class:`Membership` (swim.py): the state machine; drive it with ``handle``/``tick``
  (or ``await run()``), ask it ``members()``.
* :class:`MembershipConfig` and the profiles ``LAN``, ``LOCAL``, ``TEST`` (profiles.py).
* :class:`Transport` and the simulator :class:`InMemoryNetwork` (transport.py).
* The timing maths, as pure functions (timing.py).

docs/membership.md describes the protocol, the choices and the measured figures.
"""
from __future__ import annotations

from mesh.membership.member import Member, MembershipStats, MemberState
from mesh.membership.profiles import (
    LAN,
    LOCAL,
    PROFILES,
    TEST,
    MembershipConfig,
    profile,
)
from mesh.membership.swim import MESSAGE_TYPES, Membership
from mesh.membership.transport import (
    InMemoryNetwork,
    InMemoryTransport,
    Receiver,
    Traffic,
    Transport,
)

__all__ = [
    "MESSAGE_TYPES",
    "LAN",
    "LOCAL",
    "PROFILES",
    "TEST",
    "InMemoryNetwork",
    "InMemoryTransport",
    "Member",
    "MemberState",
    "Membership",
    "MembershipConfig",
    "MembershipStats",
    "Receiver",
    "Traffic",
    "Transport",
    "profile",
]
