"""A backup alive to membership that confirms no copy (a made-up member kept alive by
gossip, a broken data path) does not make its holder keep every result for it in
memory for ever (mesh/node/replicas.py, COPY_STALL). The hostile soak
(tests/integration/test_e2e_hostile.py) saw it: a made-up member stayed alive, every
real result was resent to it twice a second, and the node grew by ~1 KiB per task
run (33 MiB in 300 s)."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from test_node_inprocess import app, dealer, frames_until, run, submit, until

from mesh.membership import MemberState
from mesh.node import replicas
from mesh.node.node import Node
from mesh.testing import running_node
from mesh.testing.node import crash
from mesh.wire.protocol import Result

STALL = 1.0


def _kept_for(h: Node, backup: str) -> set[str]:
    """The results ``h`` keeps in memory to send (again) to ``backup``."""
    r = h.replicas
    out = r._out.get(backup)
    kept = set(out.results) if out is not None else set()
    for sent in r._sent.values():
        if sent.backup == backup:
            kept |= set(sent.batch.results)
    return kept


def test_results_an_alive_backup_never_confirms_are_not_kept_for_it_for_ever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Results whose backup is alive but silent are given up after COPY_STALL (not
    sent again, not kept), replies having gone, also when the holder sees it
    suspected now and then (the hostile soak's made-up members flickered so: a
    stall counted afresh at each return never came); the journal still names the
    silent backup as their other copy, so once it is dead they are copied to another
    node. A backup that confirms keeps getting its copies."""
    monkeypatch.setattr(replicas, "COPY_STALL", STALL)

    async def main() -> None:
        async with running_node(app, name="holder") as h, \
                running_node(app, name="silent", peers=[h.address]) as s, \
                running_node(app, name="other", peers=[h.address]) as o, dealer(h) as to_h:
            s.replicas.on_replicate = lambda msg: None          # alive, never confirms
            await until(lambda: sorted(h.replicas.choice.alive_ids()) == ["other", "silent"],
                        "the three to meet")
            # the holder's copies see it suspected every other time they look (its
            # choice of backups does not: they go to it again, as to a member back)
            real_member, flicker, looks = h.membership.member, [True], itertools.count()

            def member(mid: str) -> Any:
                m = real_member(mid)
                if mid == "silent" and m is not None and flicker[0] and next(looks) % 2:
                    return dataclasses.replace(m, state=MemberState.SUSPECT)
                return m
            h.membership.member = member  # type: ignore[method-assign]
            ids = [f"t{i}" for i in range(60)]
            for tid in ids:
                await to_h.send(submit(tid))
            await frames_until(to_h, lambda got: sum(isinstance(m, Result) for m in got) == len(ids))
            silent = {row[1] for row in h.journal.results_of_peer("silent", 0, 1000)}
            assert 0 < len(silent) < len(ids)                  # rendezvous: some on each
            assert _kept_for(h, "silent") == silent            # (the replies went: COPY_TIMEOUT)
            await until(lambda: not _kept_for(h, "silent"), "the silent backup's results to go",
                        timeout=STALL + 5)
            flicker[0] = False
            assert real_member("silent").state == MemberState.ALIVE   # all along
            assert h.replicas.results_given_up == len(silent)
            assert h.status()["results_given_up"] == len(silent)
            assert not _kept_for(h, "other") and not h.replicas.gates
            # later results for it are sent once and not kept either
            for tid in ("u1", "u2", "u3", "u4", "u5", "u6"):
                await to_h.send(submit(tid))
            await frames_until(to_h, lambda got: sum(isinstance(m, Result) for m in got) == 6)
            await until(lambda: not _kept_for(h, "silent"), "later results to go", timeout=STALL + 5)
            silent = {row[1] for row in h.journal.results_of_peer("silent", 0, 1000)}
            # it goes: its results are copied to the node left (Copies.note_departures)
            await crash(s)
            await until(lambda: not h.journal.results_of_peer("silent", 0, 1000),
                        "the results to be copied again", timeout=15)
            await until(lambda: all(o.journal.get(t) is not None for t in silent),
                        "the other node to keep them")

    run(main())
