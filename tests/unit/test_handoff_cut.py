"""A handoff whose receiver is cut off before its answer reaches the giver
(mesh/node/handoff.py, "unanswered"), in this process: the receiver took the task
and copied it to its backup, and runs it (cut off, not dead: the one run nothing can
prevent). The giver must not run it as well as the receiver's backup, which takes the
receiver's copy over when it is declared dead. (The cluster chaos test,
tests/cluster/test_cluster_chaos.py, saw tasks run on all three nodes so.)"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from test_handoff_inprocess import giver_and_taker, in_flight, suspect
from test_node_inprocess import _state, dealer, frames_until, run, submit, until
from test_reclaim_inprocess import hand_to_taker, holders, three_met

from mesh.membership import MemberState
from mesh.node import handoff as handoff_mod
from mesh.rendezvous import ranked
from mesh.testing.node import crash
from mesh.wire.protocol import Ack

# ranked taker > backup > giver (mesh/rendezvous.py): the giver's copy goes to the
# taker (its first-ranked other node), the taker's to the backup
TID = "cut-10"


def test_an_unanswered_handoff_to_a_receiver_then_cut_off_runs_at_its_backup_not_also_at_the_giver(
        ) -> None:
    # The giver sheds a task to the taker; the taker journals it, its backup confirms
    # the copy, and the taker answers; the answer is lost (the taker is cut off just
    # then: here, the giver reads no answer from it, and the taker is killed). The
    # backup declares the taker dead and takes its copy over: nothing else is kept
    # there (the giver's own copy was at the taker; its copy to the backup, made once
    # it sees the taker dead, comes later: held back here, as the race went in a run).
    # The giver gives the handoff up. Until session 21 it then ran the task itself:
    # with the backup's and the taker's, three runs. It hands it to the taker's backup
    # instead (which holds it already, or takes it and skips the copy at its takeover).
    assert ranked(TID, ["backup", "giver", "taker"]) == ["taker", "backup", "giver"]

    async def main() -> None:
        async with three_met(None, "in-memory") as (b, g, to_g, t):
            copies = b.replicas.copies
            keep = copies.on_replicate
            late: list[Any] = []
            await to_g.send(submit("g-busy-0"))
            await until(lambda: "g-busy-0" in g.ledger.held and not g.replicas.pending("g-busy-0"),
                        "the giver's first task, copied")
            await to_g.send(submit(TID))
            await until(lambda: g.pool.queued == 1 and t.replicas.copies.has(TID),
                        "the giver to hold it, queued, its copy at the taker")
            on_ack = g.handoff.on_ack
            g.handoff.on_ack = lambda msg: None if msg.node == "taker" else on_ack(msg)  # type: ignore[method-assign]
            # the giver's REPLICATEs reach the backup only once it took the taker over
            copies.on_replicate = lambda msg: (late.append(msg) if msg.source == "giver"  # type: ignore[method-assign]
                                               else keep(msg))
            await hand_to_taker(g, TID)
            await until(lambda: TID in t.ledger.held and not t.replicas.pending(TID)
                        and "taker" in holders(b, TID),
                        "the taker to hold it, its copy at the backup confirmed")
            await crash(t)
            # and the backup shed a task to the giver as the giver gave up (its batch to
            # the backup is no shed: not refused as a crossing, as it was in a run where
            # both had handed tasks to the node cut off and both sent them on at once)
            b.shedder.sent("giver", time.time() + 60)
            await until(lambda: _state(b, "taker") == MemberState.DEAD,
                        "the backup to declare the taker dead", timeout=20)
            copies.check_holders(time.monotonic())     # (its loop does, each second)
            await until(lambda: TID in b.ledger.held, "the backup to take the taker's copy over")
            await until(lambda: not g.handoff._out and g.handoff._given_up,
                        "the giver to give the handoff up, and what follows to settle", timeout=20)
            copies.on_replicate = keep                 # type: ignore[method-assign]
            for msg in late:
                keep(msg)
            assert TID in b.ledger.held
            assert TID not in g.ledger.held, "the giver runs it too (with the taker's: three runs)"
            assert g.handoff.handed == 1               # to the backup, which had it
            b.replicas.copies.check_holders(time.monotonic())
            assert TID in b.ledger.held and TID not in g.ledger.held
    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_handoff_to_a_receiver_suspected_for_long_is_sent_again_until_it_answers() -> None:
    # The other side of a cut: the node cut off shed a task just before, the receiver
    # took it and answered, the answer lost; cut off, the giver suspects the receiver.
    # Until session 21 it gave the batch up after TRIES sends (3 s), suspected or not,
    # and ran the task itself, the receiver too. A cut healed before the receiver is
    # declared dead: the batch, sent again, is answered (the receiver holds it), and
    # the giver forgets the task (a cluster chaos run under load: the node cut off gave
    # a batch up, its receiver suspected, 0.25 s before the answer came after the heal).
    async def main() -> None:
        async with giver_and_taker("h-long") as (g, t):
            held_back, take = await in_flight(g, t, "h-long")
            suspect(g, "taker")
            now = time.monotonic()
            for k in range(1, handoff_mod.TRIES + 3):      # (its ticks, a timeout apart)
                g.handoff._check(now + k * (handoff_mod.HANDOFF_TIMEOUT + 0.01))
            assert [o.tries for o in g.handoff._out.values()] == [handoff_mod.TRIES + 3]
            assert not g.handoff._given_up and g.pool.queued == 0   # not back in the queue
            await until(lambda: len(held_back) == handoff_mod.TRIES + 3,
                        "the batch to reach the taker each time")
            take(held_back[-1])
            await until(lambda: "h-long" not in g.ledger.held, "the giver to forget it")
            assert "h-long" in t.ledger.held and g.handoff.handed == 1
    run(main())


def test_a_task_taken_from_a_giver_then_cut_off_goes_to_the_givers_backup() -> None:
    # The giver (cut off next) sheds a task to the taker; the taker journals it, its
    # backup confirms the copy, and it answers; the answer is lost (the giver reads
    # none from it; then it is killed). The giver, cut off, would run the task (it
    # holds it again: the one run nothing prevents). Its copy stays at its backup
    # (the id ranks backup > taker > giver: the backup of both), where its takeover
    # makes it wait (the taker, alive, keeps a copy there too); but the owner, told
    # nothing (no MOVED: the giver had no answer), sends the task there too (its
    # failover), and the backup accepts it as a new task. Until session 21 the taker
    # ran it as well: three runs. The taker, seeing the giver dead, sends the tasks it
    # took from it lately and has not started to the giver's backup for them, which
    # holds it already (the failover) or takes it: one run there.
    tid = "two-holders-0"
    assert ranked(tid, ["backup", "giver", "taker"]) == ["backup", "taker", "giver"]

    async def main() -> None:
        async with three_met(None, "in-memory") as (b, g, to_g, t), dealer(t) as to_t, \
                dealer(b) as to_b:
            await to_t.send(submit("t-busy-0"))        # (its one child busy: tid waits)
            await to_g.send(submit("g-busy-0"))
            await until(lambda: "t-busy-0" in t.ledger.held and "g-busy-0" in g.ledger.held
                        and not g.replicas.pending("g-busy-0"), "the busy tasks")
            await to_g.send(submit(tid))
            await until(lambda: g.pool.queued == 1 and b.replicas.copies.has(tid),
                        "the giver to hold it, queued, its copy at the backup")
            g.handoff.on_ack = lambda msg: None       # type: ignore[method-assign]
            await hand_to_taker(g, tid)
            await until(lambda: tid in t.ledger.held and not t.replicas.pending(tid)
                        and t.pool.queued == 1 and sorted(holders(b, tid)) == ["giver", "taker"],
                        "the taker to hold it, queued, its copy at the backup confirmed")
            await crash(g)
            await until(lambda: _state(b, "giver") == MemberState.DEAD
                        and _state(t, "giver") == MemberState.DEAD,
                        "the backup and the taker to declare the giver dead", timeout=20)
            b.replicas.copies.check_holders(time.monotonic())    # (its loop: each second)
            assert tid not in b.ledger.held                 # the giver's copy waits
            await to_b.send(submit(tid))                     # the owner's failover
            await frames_until(to_b, lambda got: any(isinstance(m, Ack) and tid in m.task_ids
                                                     for m in got))
            assert tid in b.ledger.held                     # accepted there
            t.handoff._check(time.monotonic())              # (its loop: each 0.1 s)
            await until(lambda: not t.handoff._out, "the taker's handoff to be answered")
            assert tid not in t.ledger.held, "the taker runs it too (with the giver's: three runs)"
            assert tid in b.ledger.held and t.handoff.handed == 1
    asyncio.run(asyncio.wait_for(main(), 60))
