"""mesh/node/copy_back.py with in-process nodes: the suspected peers a holder notes
(``BackupChoice.missed``) are capped, and one forgotten past the cap is a joiner when
it is alive again: the held tasks that rank it first are copied back to it all the
same (by the walk of the held tasks, not by the note of the tasks chosen meanwhile)."""
from __future__ import annotations

import time

import pytest
from test_node_inprocess import _later, _state, app, dealer, met, run, until

from mesh.membership import MemberState
from mesh.node import copy_back
from mesh.rendezvous import backup_for
from mesh.testing import running_node
from mesh.wire.protocol import UPDATE_SUSPECT, Gossip


def test_suspected_peers_beyond_the_cap_are_forgotten_and_back_they_get_their_copies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_back, "MISSED_MAX", 1)     # (1,000: two suspects overflow 1)

    async def main() -> None:
        async with running_node(app, name="holder", autorun=False) as h, \
                running_node(app, name="b1", autorun=False, peers=[h.address]) as b1, \
                running_node(app, name="b2", autorun=False, peers=[h.address]) as b2, \
                running_node(app, name="b3", autorun=False, peers=[h.address]) as b3, \
                dealer(h) as s:
            await met((h, b1, b2, b3), "the four to meet")
            peers = ["b1", "b2", "b3"]
            # both suspected for a moment: the holder notes one of them only
            for b in ("b1", "b2"):
                m = h.membership.member(b)
                assert m is not None
                h.membership.handle("x", Gossip("x", [[UPDATE_SUSPECT, b, m.incarnation, "", "x"]]))
            h.replicas.choice._alive_at = -1.0
            h.replicas.check_members(time.monotonic())
            missed = set(h.replicas.choice.missed)
            assert len(missed) == 1, missed
            forgotten = ({"b1", "b2"} - missed).pop()
            # tasks accepted meanwhile: their backup is b3 or the noted one, not the
            # forgotten one (out of the alive list); some rank it first
            tids = [f"t-{i}" for i in range(40)]
            for tid in tids:
                await s.send(_later(tid))
            ranked = [t for t in tids if backup_for(t, peers, "holder") == forgotten]
            assert ranked
            await until(lambda: all(h.replicas.backup_of(t) not in (None, forgotten) for t in tids),
                        "the tasks to have backups")
            for b in ("b1", "b2"):
                await until(lambda b=b: _state(h, b) == MemberState.ALIVE, f"{b} to refute")
            h.replicas.choice._alive_at = -1.0
            h.replicas.check_members(time.monotonic())     # (its check each second)
            node = {"b1": b1, "b2": b2, "b3": b3}[forgotten]
            await until(lambda: all(h.replicas.backup_of(t) == forgotten for t in ranked)
                        and all(node.replicas.copies.holder(t) == "holder" for t in ranked),
                        "the tasks ranking the forgotten peer first to be copied to it")
            assert h.replicas.back.to_joiners >= len(ranked)
            # and the others drop their copies of those once it confirmed
            others = [n for n in (b1, b2, b3) if n is not node]
            await until(lambda: not any(n.replicas.copies.holder(t) for n in others for t in ranked),
                        "the old backups to drop theirs")
    run(main())
