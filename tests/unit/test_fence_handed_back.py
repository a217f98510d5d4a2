"""The fence (mesh/node/fence.py) and a handoff that comes while it waits: a task set
aside that the node answering "held" then hands back to the asker (its shedder sees
the asker idle: its queued tasks are set aside) is the asker's, whatever that answer
said. Settled as held elsewhere, it was dropped here, and the other node had forgotten
it at the handoff's answer: no node had it. (The restart's question has the same rule:
Reclaimer.handed_here.)"""
from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from test_fence_inprocess import QUEUED, holding, settled, stall
from test_node_inprocess import app, run, until

from mesh.node.node import Node
from mesh.node.shedding import REASON as SHED_REASON
from mesh.testing import running_node
from mesh.wire.protocol import UPDATE_DEAD, Gossip


@contextlib.asynccontextmanager
async def handed_back() -> AsyncIterator[tuple[Node, Node, Node, str]]:
    """The holder h stalls with its queue set aside; b answers it holds them (it took
    them over), the third node is slow to answer; then b sheds one it has not started
    to h (idle, as its gossip says), which takes it. h, b, the third, that task's id."""
    async with holding() as (h, b, _to_h), \
            running_node(app, name="slow", autorun=False, peers=[h.address]) as c:
        c.shedder.shed = lambda now: 0
        c.reclaim.answer = lambda msg: None         # (asked, it is slow to answer)
        await until(lambda: len(h.membership.alive_members()) == 3
                    and len(b.membership.alive_members()) == 3, "the three to meet")
        assert b.replicas.copies.take_over("holder", "is dead (here: said so)") == 4
        await stall(h)
        fence = h.reclaim.fence
        # b answered: it holds them; the fence still waits for c's answer
        await until(lambda: set(QUEUED) <= set(fence.answers.held), "b's answer")
        assert set(fence.aside) == set(QUEUED)
        entry = b.pool.take_next()
        assert entry.task_id in QUEUED
        to_h = next(m for m in b.membership.alive_members() if m.id == "holder")
        assert b.handoff.hand([entry], SHED_REASON, to_h) == 1
        await until(lambda: b.handoff.handed == 1, "b to have h's answer to its handoff")
        assert entry.task_id not in b.ledger.held
        yield h, b, c, entry.task_id


def test_a_task_set_aside_and_handed_back_by_the_node_that_answered_held_runs_once() -> None:
    async def main() -> None:
        async with handed_back() as (h, b, _c, tid):
            rest = set(QUEUED) - {tid}
            await until(lambda: settled(h), "the holder to settle what it set aside", timeout=15)
            # tid is h's (handed to it after b answered); the other two are b's
            assert tid in h.ledger.held, h.reclaim.status()
            assert not rest & set(h.ledger.held)
            assert rest <= set(b.ledger.held)
            assert h.reclaim.status()["fence_held_elsewhere"] == 2
    run(main())


def test_a_task_handed_back_by_a_node_declared_dead_before_the_fence_settles_is_held() -> None:
    """As above, and then the node that handed it back is declared dead (here) while
    the fence still waits: the cut-off rule (mesh/node/handoff_cut.py, _givers_gone)
    sends what it handed here lately and has not started to its backup, and forgot it
    had handed it; the fence, still waiting, then settled it as held by that node
    (its answer) and dropped it: held by no node. Now the task is one of those sent."""
    async def main() -> None:
        async with handed_back() as (h, _b, c, tid):
            ms = h.membership
            ms._state.dead("backup", ms.member("backup").incarnation, "holder",
                           time.monotonic(), left=False)
            h.handoff._check(time.monotonic())   # (its loop's next look, before b refutes)
            assert tid not in h.reclaim.fence.aside
            await until(lambda: settled(h), "the holder to settle what it set aside", timeout=15)
            await until(lambda: tid in h.ledger.held or tid in c.ledger.held,
                        "the task handed back to be held by h or c")
    run(main())


def test_a_holder_told_it_is_dead_while_it_sees_no_peer_alive_asks_once_one_is() -> None:
    """A partition heals: the cut-off holder declared its peers dead too, and hears it
    was declared dead (it refutes) before it hears them refute theirs. Nobody to ask
    then; the news was spent, so the fence never went up and the holder ran the
    queued tasks its backup had taken over (two runs each). It asks once a peer is
    alive again."""
    async def main() -> None:
        async with holding() as (h, b, _to_h):
            assert b.replicas.copies.take_over("holder", "is dead (here: said so)") == 4
            # (b hears that the holder declared it dead and refutes: its own fence would
            # go up, set its queued tasks aside and not say it holds them; both sides
            # would run them, the fence's rule when both ask. ci17 saw it 1 run in 6:
            # (1, 2) below. Not what this test is about)
            b.reclaim.fence.up = lambda why: 0
            ms = h.membership
            now = time.monotonic()
            ms._state.dead("backup", ms.member("backup").incarnation, "holder", now, left=False)
            ms.handle("backup", Gossip("backup", [[UPDATE_DEAD, "holder", ms.incarnation, "",
                                                   "backup"]]))
            assert ms.told_dead == 1 and not ms.alive_members(include_self=False)
            h.reclaim.fence.check()          # (its next tick): nobody alive to ask yet
            # b hears it was declared dead and refutes: alive at the holder again
            await until(lambda: ms.alive_members(include_self=False), "b alive at h again")
            await until(lambda: settled(h), "the holder to ask b and settle")
            st = h.reclaim.status()
            assert (st["fence_held_elsewhere"], st["fence_run_here"]) == (3, 0), st
            assert not set(QUEUED) & set(h.ledger.held)
    run(main())
