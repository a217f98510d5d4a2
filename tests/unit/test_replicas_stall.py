"""A backup alive to membership that confirms no copy (a made-up member kept alive by
gossip, a broken data path) does not make its holder keep every result for it in
memory for ever (mesh/node/replicas_send.py, COPY_STALL). The hostile soak
(tests/integration/test_e2e_hostile.py) saw it: a made-up member stayed alive, every
real result was resent to it twice a second, and the node grew by ~1 KiB per task
run (33 MiB in 300 s)."""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import zmq.asyncio
from test_node_inprocess import app, dealer, frames_until, submit, until

from mesh.membership import MemberState
from mesh.node import copy_gates, replicas_send, shedding, takeover
from mesh.node.node import Node
from mesh.testing import running_node
from mesh.testing.node import crash
from mesh.wire.protocol import Result

STALL = 1.0


@pytest.fixture(autouse=True)
def no_shedding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder runs every task it is sent: under load its queue waits past
    shedding.SHED_AFTER, and tasks shed to silent or other (MOVED to the DEALER, whose
    RESULTs then never come here) left ``three`` waiting for them (seen at load 11)."""
    async def never(self: shedding.Shedder) -> None:
        await asyncio.Event().wait()
    monkeypatch.setattr(shedding.Shedder, "_loop", never)


def _kept_for(h: Node, backup: str) -> set[str]:
    """The results ``h`` keeps in memory to send (again) to ``backup``."""
    r = h.replicas
    out = r._out.get(backup)
    kept = set(out.results) if out is not None else set()
    for sent in r._sent.values():
        if sent.backup == backup:
            kept |= set(sent.batch.results)
    return kept


class _Flickering:
    """The membership as the holder's copies see it: "silent" suspected every other
    time they look (the choice of backups reads the alive members, and does not:
    results go to it again, as to a member back at once)."""

    def __init__(self, membership: Any):
        self._ms, self.flicker, self._looks = membership, True, itertools.count()

    def member(self, mid: str) -> Any:
        m = self._ms.member(mid)
        if mid == "silent" and m is not None and self.flicker and next(self._looks) % 2:
            return dataclasses.replace(m, state=MemberState.SUSPECT)
        return m

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ms, name)


class _NodeSeen:
    """A node whose membership is ``membership`` (the rest is the node's)."""

    def __init__(self, node: Node, membership: _Flickering):
        self._node, self.membership = node, membership

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)


@asynccontextmanager
async def three(n: int, before: Callable[[Node], None] = lambda h: None) -> AsyncIterator[
        tuple[Node, Node, Node, zmq.asyncio.Socket]]:
    """holder, silent (alive, confirms no copy) and other; ``before(holder)`` once they
    met; then the holder runs t0..t{n-1} and its replies to them came (the holder, silent,
    other, a DEALER to the holder)."""
    async with running_node(app, name="holder") as h, \
            running_node(app, name="silent", peers=[h.address]) as s, \
            running_node(app, name="other", peers=[h.address]) as o, dealer(h) as to_h:
        s.replicas.on_replicate = lambda msg: None
        await until(lambda: sorted(h.replicas.choice.alive_ids()) == ["other", "silent"],
                    "the three to meet")
        before(h)
        for i in range(n):
            await to_h.send(submit(f"t{i}"))
        await frames_until(to_h, lambda got: len({m.task_id for m in got if isinstance(m, Result)}) == n)
        yield h, s, o, to_h


def test_results_an_alive_backup_never_confirms_are_not_kept_for_it_for_ever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Results whose backup is alive but silent are given up after COPY_STALL (not
    sent again, not kept), replies having gone, also when the holder sees it
    suspected now and then (the hostile soak's made-up members flickered so: a
    stall counted afresh at each return never came); the journal still names the
    silent backup as their other copy, so once it is dead they are copied to another
    node. A backup that confirms keeps getting its copies."""
    # no stall until the holder's copies see it flicker (a fixed COPY_STALL of 3 s
    # could pass before, on a loaded machine: 60 tasks and their replies took longer)
    monkeypatch.setattr(replicas_send, "COPY_STALL", 1000.0)

    async def main() -> None:
        async with three(60) as (h, s, o, to_h):
            ids = [f"t{i}" for i in range(60)]
            # from now on (before the stall) the holder's copies see it suspected
            view = [_Flickering(h.membership)]
            h.replicas.node = _NodeSeen(h, view[0])  # type: ignore[assignment]
            silent = {row[1] for row in h.journal.results_of_peer("silent", 0, 1000)}
            assert 0 < len(silent) < len(ids)                  # rendezvous: some on each
            assert _kept_for(h, "silent") == silent            # (the replies went: COPY_TIMEOUT)
            # the stall comes 3 s from now, counted from silent's first unconfirmed copy
            since = h.replicas._unconfirmed_since["silent"]
            monkeypatch.setattr(replicas_send, "COPY_STALL", time.monotonic() - since + 3 * STALL)
            await until(lambda: not _kept_for(h, "silent"), "the silent backup's results to go",
                        timeout=3 * STALL + 5)
            view[0].flicker = False
            assert h.membership.member("silent").state == MemberState.ALIVE   # all along
            assert h.replicas.results_given_up == len(silent)
            assert h.status()["results_given_up"] == len(silent)
            assert not _kept_for(h, "other") and not h.replicas.gates
            # later results for it are sent once and not kept either
            for tid in ("u1", "u2", "u3", "u4", "u5", "u6"):
                await to_h.send(submit(tid))
            await frames_until(to_h, lambda got: len({m.task_id for m in got if isinstance(m, Result)}) == 6)
            await until(lambda: not _kept_for(h, "silent"), "later results to go", timeout=3 * STALL + 5)
            silent = {row[1] for row in h.journal.results_of_peer("silent", 0, 1000)}
            # it goes: its results are copied to the node left (Copies.note_departures)
            await crash(s)
            await until(lambda: not h.journal.results_of_peer("silent", 0, 1000),
                        "the results to be copied again", timeout=15)
            await until(lambda: all(o.journal.get(t) is not None for t in silent),
                        "the other node to keep them")

    asyncio.run(asyncio.wait_for(main(), 90))      # (run()'s 30 s: too short on a busy machine)


def test_results_copied_again_wait_for_the_last_ones_to_be_confirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    """When a backup goes, its results are copied to their new backups a chunk at a
    time, the next chunk once fewer than REPAIR_CHUNK results wait for a
    confirmation: to a backup that confirms nothing, not every result of the journal
    at once (the hostile soak's node sent 39,786 to a made-up member just alive,
    and kept them in memory until it was found stalled)."""
    monkeypatch.setattr(replicas_send, "COPY_STALL", STALL)
    monkeypatch.setattr(takeover, "REPAIR_CHUNK", 5)

    async def main() -> None:
        async with three(60) as (h, s, o, to_h):
            await until(lambda: not h.replicas.unconfirmed_results(), "silent's own to be given up",
                        timeout=STALL + 5)
            of_other = {row[1] for row in h.journal.results_of_peer("other", 0, 1000)}
            assert len(of_other) > 10
            await crash(o)
            most = [0]

            def repaired() -> bool:
                most[0] = max(most[0], h.replicas.unconfirmed_results())
                return not h.journal.results_of_peer("other", 0, 1000)
            await until(repaired, "other's results to be copied again", timeout=30)
            assert {row[1] for row in h.journal.results_of_peer("silent", 0, 1000)} >= of_other
            assert 0 < most[0] <= 5, most[0]

    asyncio.run(asyncio.wait_for(main(), 90))      # (run()'s 30 s: too short on a busy machine)


def test_a_batch_queued_while_one_was_in_flight_goes_when_that_one_is_resent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A result queued for a backup while its REPLICATE was in flight waits in the
    backup's next batch; once the one in flight is resent (RESEND_AFTER, unconfirmed),
    that batch goes. It waited for some other flush of the node (another task, a
    reply): on an idle holder, for ever, neither resent nor found stalled (seen as 30
    results stuck for silent in ``three``, under load: replies had gone)."""
    monkeypatch.setattr(copy_gates, "COPY_TIMEOUT", 0.05)     # replies go: nothing else flushes
    monkeypatch.setattr(replicas_send, "RESEND_AFTER", 1000.0)   # (until both are where they must be)

    async def main() -> None:
        async with running_node(app, name="holder") as h, \
                running_node(app, name="silent", peers=[h.address]) as s, dealer(h) as to_h:
            s.replicas.on_replicate = lambda msg: None
            await until(lambda: h.replicas.choice.alive_ids() == ["silent"], "the two to meet")
            r = h.replicas
            await to_h.send(submit("t1"))
            await frames_until(to_h, lambda got: any(isinstance(m, Result) for m in got))
            assert "silent" in r._busy and set(r._sent[r._busy["silent"]].batch.results) == {"t1"}
            # (the boot id of a backup first sent to is saved in a flush: done with)
            await until(lambda: "silent" in (r.disk_copies._saved or {}), "silent's boot id saved")
            await to_h.send(submit("t2"))
            await frames_until(to_h, lambda got: any(isinstance(m, Result) for m in got))
            await until(lambda: not r.gates and not h.front.flush_pending, "the node to be idle")
            assert set(r._out["silent"].results) == {"t2"}        # (behind t1's batch)
            monkeypatch.setattr(replicas_send, "RESEND_AFTER", 0.2)
            await until(lambda: "silent" not in r._out, "the queued batch to be sent", timeout=5)
            assert set(r._sent[r._busy["silent"]].batch.results) == {"t1", "t2"}   # (sent together)

    asyncio.run(asyncio.wait_for(main(), 60))
