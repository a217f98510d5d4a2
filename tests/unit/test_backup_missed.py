"""The peers a node's backup choice missed (alive, then not: ``BackupChoice.missed``)
are noted only when copies are made: with ``--replicas 1`` nothing looks at them
(``Replicas.check_members`` walks them only when enabled), and they were kept for
ever, one per peer that was ever suspected, dead or left."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mesh.membership.member import MemberState
from mesh.node.gossip import Members


@pytest.mark.parametrize("enabled", [False, True])
def test_a_peer_gone_from_alive_is_noted_only_when_copies_are_made(enabled: bool) -> None:
    missed: set[str] = set()
    members = Members()
    members.node = SimpleNamespace(          # type: ignore[assignment]
        name="me", replicas=SimpleNamespace(enabled=enabled, choice=SimpleNamespace(missed=missed)),
        control=SimpleNamespace(share_with=lambda address: None))
    peer = SimpleNamespace(id="peer", address="tcp://127.0.0.1:1")
    for new in (MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT):
        members._on_change(peer, MemberState.ALIVE, new)     # type: ignore[arg-type]
    assert missed == ({"peer"} if enabled else set())
