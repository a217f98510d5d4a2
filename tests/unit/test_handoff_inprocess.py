"""A HANDOFF that arrives where the sender no longer expects it (mesh/node/handoff.py),
in this process: one queued for an earlier run of the receiver, and an answer that
comes after the sender gave the batch up. Either way a task is held by one node.
(CI's chaos run saw the first: a shed batch zmq queued while the receiver was down was
taken by its next run, and the four tasks ran on both nodes.)"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from test_node_inprocess import app, dealer, frames_until, run, submit, until

from mesh.membership import MemberState
from mesh.node import handoff as handoff_mod
from mesh.node import naps, shedding
from mesh.node.node import Node
from mesh.testing import running_node
from mesh.wire.protocol import (
    UPDATE_SUSPECT,
    Ack,
    Gossip,
    Handoff,
    HandoffAck,
    Moved,
    Release,
    Result,
)
from mesh.workflow.plan import GROUP


@asynccontextmanager
async def giver_and_taker(tid: str, **giver: Any) -> AsyncIterator[tuple[Node, Node]]:
    """A giver holding ``tid`` queued (it sheds only when a test says) and a taker."""
    async with running_node(app, name="giver", autorun=False, concurrency=1, **giver) as g, \
            running_node(app, name="taker", autorun=False, peers=[g.address]) as t, \
            dealer(g) as to_g:
        g.shedder.shed = lambda now: 0
        t.shedder.shed = lambda now: 0
        await until(lambda: g.membership.member("taker") is not None
                    and g.membership.member("taker").meta.get("boot") == t.boot,   # type: ignore[union-attr]
                    "the giver to know the taker's boot id")
        # and the taker to count the giver alive (it takes a shed task only when it has
        # a node to copy it to: mesh/node/handoff.py, NO_BACKUP_REASON)
        await until(lambda: "giver" in t.replicas.choice.alive_ids(), "the taker to know the giver")
        await to_g.send(submit("g-busy"))
        await to_g.send(submit(tid))
        await until(lambda: g.pool.queued == 1, "the giver to hold it, queued")
        yield g, t


def hand(g: Node, tid: str) -> None:
    entry, target = g.pool.remove(tid), g.membership.member("taker")
    assert entry is not None and target is not None
    assert g.handoff.hand([entry], shedding.REASON, target) == 1


def suspect(view: Node, name: str) -> None:
    """``view`` hears (gossip) that member ``name`` is suspected."""
    m = view.membership.member(name)
    assert m is not None
    view.membership.handle("x", Gossip("x", [[UPDATE_SUSPECT, name, m.incarnation, "", "x"]]))
    assert view.membership.member(name).state == MemberState.SUSPECT   # type: ignore[union-attr]


def withhold(t: Node) -> tuple[list[Handoff], Callable[[Handoff], None]]:
    """The taker reads no HANDOFF (they are kept in the list) until a test hands one to
    the function returned (its own ``on_handoff``)."""
    held_back: list[Handoff] = []
    take = t.handoff.on_handoff
    t.handoff.on_handoff = held_back.append        # type: ignore[method-assign]
    return held_back, take


async def in_flight(g: Node, t: Node, tid: str) -> tuple[list[Handoff], Callable[[Handoff], None]]:
    """The giver hands ``tid`` to the taker, which got it and does not answer yet."""
    held_back, take = withhold(t)
    hand(g, tid)
    await until(lambda: held_back, "the taker to get it (it does not answer yet)")
    return held_back, take


def gives_up_fast(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A handoff is given up after 0.2 s, and the handoff log is captured."""
    monkeypatch.setattr(handoff_mod, "HANDOFF_TIMEOUT", 0.2)
    # the giver's handoff loop napped while it had nothing out (mesh/node/naps.py): the
    # handoff wakes it, and it sends again and gives up at its ticks (no nap ends by
    # itself within the test)
    monkeypatch.setattr(naps, "IDLE_CAP", 3600.0)
    caplog.set_level(logging.INFO, "mesh.handoff")


async def given_up(g: Node, t: Node, tid: str) -> tuple[list[Handoff], Callable[[Handoff], None]]:
    """The giver hands ``tid`` to a taker that does not answer, and gives the batch up."""
    held_back, take = withhold(t)
    hand(g, tid)
    await until(lambda: not g.handoff._out, "the giver to give it up")
    return held_back, take


def test_a_handoff_sent_to_an_earlier_run_of_the_receiver_is_refused() -> None:
    async def main() -> None:
        async with giver_and_taker("h-stale") as (g, t):
            t.boot = "0123456789ab"      # a later run than the one the giver knows
            hand(g, "h-stale")
            await until(lambda: not g.handoff._out, "the taker's answer")
            assert "h-stale" not in t.ledger.held and t.journal.get("h-stale") is None
            assert g.ledger.held.get("h-stale") is not None        # back in the giver's queue
            assert g.pool.queued == 1 and t.handoff.received == 0
    run(main())


def test_a_task_the_receiver_refused_is_copied_to_its_backup_again() -> None:
    """The copy a giver made of a task can be gone from its backup by the time the
    receiver refuses the task: the receiver's earlier run took it and copied it to the
    same backup under its own name (one copy per task id there), and that copy went
    when the receiver, back, reclaimed the task (held by the giver, it said). The
    giver, holding the task again, copies it again; else its only copy is the giver's
    (the giver's machine then gone, the task ran nowhere: the likely cause of a CI
    failure of test_e2e_backlog_recopy's shed case). Here the taker is the backup too,
    and its copy is dropped by hand while the handoff is on its way."""
    async def main() -> None:
        async with giver_and_taker("h-recopy") as (g, t):
            copies = t.replicas.copies
            await until(lambda: copies.holder("h-recopy") == "giver", "the backup to keep its copy")
            held_back, take = withhold(t)
            hand(g, "h-recopy")
            await until(lambda: held_back, "the taker to get it (it does not answer yet)")
            copies.forget_copy("h-recopy")                 # the copy is gone meanwhile
            boot, t.boot = t.boot, "0123456789ab"   # a later run than the giver knows: refused
            take(held_back[0])
            t.boot = boot      # (the taker is the backup here: a new boot id gossiped would
                               # have the giver copy every task it backs up again anyway)
            await until(lambda: not g.handoff._out, "the taker's answer")
            assert g.ledger.held.get("h-recopy") is not None        # back in the giver's queue
            await until(lambda: copies.holder("h-recopy") == "giver", "the giver to copy it again")
    run(main())


def test_a_handoff_to_the_receivers_current_run_is_taken() -> None:
    async def main() -> None:
        async with giver_and_taker("h-now") as (g, t):
            hand(g, "h-now")
            await until(lambda: "h-now" in t.ledger.held, "the taker to hold it")
            await until(lambda: "h-now" not in g.ledger.held, "the giver to forget it")
            assert g.pool.queued == 0 and g.handoff.handed == 1
    run(main())


def test_an_answer_after_the_giver_gave_up_takes_the_task_out_of_its_queue(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    gives_up_fast(monkeypatch, caplog)

    async def main() -> None:
        async with giver_and_taker("h-late") as (g, t):
            held_back, take = await given_up(g, t, "h-late")
            assert g.pool.queued == 1 and len(held_back) == handoff_mod.TRIES   # sent 3 times
            take(held_back[0])                            # the taker takes it after all
            await until(lambda: "h-late" not in g.ledger.held, "the giver to forget it")
            assert "h-late" in t.ledger.held and g.pool.queued == 0
            assert not g.handoff._given_up
    run(main())
    late = [r.getMessage() for r in caplog.records if "after it was given up" in r.getMessage()]
    assert late == ["node taker answered a handoff after it was given up: it holds 1 of its "
                    "task(s), taken out of the queue here"], late


def test_an_answer_after_the_giver_gave_up_takes_out_a_task_its_fence_set_aside(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The task given up on is back in the giver's queue; the giver's fence goes up (a
    stall) and sets it aside, asking the taker, whose answer comes before it takes the
    task after all. Its late answer to the handoff took the task out of the queue only:
    set aside, it was said to run on both nodes, and it did once the fence settled."""
    gives_up_fast(monkeypatch, caplog)

    async def main() -> None:
        async with giver_and_taker("h-aside") as (g, t):
            held_back, take = await given_up(g, t, "h-aside")
            t.reclaim.answer = lambda msg: None       # (its answer: nothing held yet, late)
            assert g.reclaim.fence.up("a stall (the test)") == 1
            assert "h-aside" in g.reclaim.fence.aside
            take(held_back[0])                            # the taker takes it after all
            await until(lambda: "h-aside" not in g.ledger.held, "the giver to forget it")
            assert "h-aside" in t.ledger.held and "h-aside" not in g.reclaim.fence.aside
    run(main())
    assert not [r for r in caplog.records if "may run on both nodes" in r.getMessage()]


def test_a_late_answer_does_not_take_away_a_task_handed_back_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The giver gives a batch up (the task back in its queue); the taker took it after
    all and hands it back to the giver (stopping, shedding) before the giver reads the
    taker's late answer. The giver, holding the task again, must keep it: the taker
    forgot it when the giver took it back (else it is held by no node)."""
    monkeypatch.setattr(handoff_mod, "HANDOFF_TIMEOUT", 0.2)

    async def main() -> None:
        async with giver_and_taker("h-back") as (g, t), dealer(t) as to_t:
            for busy in ("t-busy1", "t-busy2"):               # the taker's two slots
                await to_t.send(submit(busy))
            await until(lambda: len(t.pool.active()) == 2, "the taker to be busy")
            held_back, take = await given_up(g, t, "h-back")
            t.handoff.on_handoff = take                    # type: ignore[method-assign]
            late: list[HandoffAck] = []
            answer = g.handoff.on_ack
            g.handoff.on_ack = late.append                 # type: ignore[method-assign]
            take(held_back[0])                             # the taker takes it after all
            await until(lambda: late, "the taker's (late) answer")
            g.handoff.on_ack = answer                      # type: ignore[method-assign]
            back, giver = t.pool.remove("h-back"), t.membership.member("giver")
            assert back is not None and giver is not None
            assert t.handoff.hand([back], handoff_mod.STOP_REASON, giver) == 1
            await until(lambda: "h-back" not in t.ledger.held, "the taker to hand it back")
            answer(late[0])                                # the late answer, read now
            assert "h-back" in g.ledger.held and g.pool.queued == 1
    run(main())


def test_a_late_answer_while_the_giver_drains_takes_the_task_it_keeps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopping giver gives its unstarted task away; the taker does not answer in
    time, no other node is there: the giver keeps it for its next start. The taker's
    answer comes while the giver still drains its running task: the taker holds the
    task, so the giver must not keep it too (it would run it again at its next start)."""
    monkeypatch.setattr(handoff_mod, "HANDOFF_TIMEOUT", 0.2)

    async def main() -> None:
        async with giver_and_taker("h-drain", shutdown_timeout=20.0) as (g, t):
            held_back, take = withhold(t)
            g.stop()                                       # g-busy runs on: the drain
            await until(lambda: len(held_back) == handoff_mod.TRIES and not g.handoff._out,
                        "the stopping giver to give the handoff up")
            assert "h-drain" in g.ledger.held              # kept for its next start
            t.handoff.on_handoff = take                    # type: ignore[method-assign]
            take(held_back[0])                             # the taker takes it after all
            await until(lambda: "h-drain" in t.ledger.held and not g.handoff._given_up,
                        "the taker's late answer")             # (read in one go)
            assert "h-drain" not in g.ledger.held          # held by the taker only
            assert g.pool.finish_running("g-busy") == 1    # (the drain ends)
    run(main())


def test_an_owner_resending_a_task_a_stopping_node_holds_is_told_where_it_goes() -> None:
    """An owner sends a task again, through another link (a client that reconnected;
    the beat's outbox following a MOVED), to a node that holds it and has begun to
    stop. The node runs it (started) or hands it on (queued), as it would have: the
    owner is told there, ACK then the RESULT, or the MOVED. It answered RELEASE
    ("node is shutting down") instead, and the owner sent the task to another node,
    while the node ran it or handed it to a third: two runs, unless both picked the
    same one (tests/integration/test_e2e_beat.py's victim gave a run back so, under
    load, the firer's resend having come just after its SIGTERM)."""
    async def main() -> None:
        async with giver_and_taker("h-resent", shutdown_timeout=20.0) as (g, t), \
                dealer(g) as again:
            held_back, take = withhold(t)
            g.stop()                                    # g-busy runs on: the drain
            await until(lambda: held_back, "the stopping giver to hand its queued task on")
            for tid in ("h-resent", "g-busy"):          # queued and handed; running
                await again.send(submit(tid))
                got = await frames_until(again, lambda fs: fs)
                assert [type(m) for m in got] == [Ack], got     # not given back
            take(held_back[0])                          # the taker answers: it holds it
            got = await frames_until(again, lambda fs: any(isinstance(m, Moved) for m in fs))
            moved = next(m for m in got if isinstance(m, Moved))
            assert moved.task_ids == ["h-resent"] and moved.target_node == "taker"
            assert g.pool.finish_running("g-busy") == 1      # (the drain ends)
            got = await frames_until(again, lambda fs: any(isinstance(m, Result) for m in fs))
            assert [m.task_id for m in got if isinstance(m, Result)] == ["g-busy"]
            assert not any(isinstance(m, Release) for m in got)
    run(main())


def test_a_late_answer_from_another_node_does_not_void_the_receivers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A HANDOFF_ACK naming a batch given up on, from a node it was not sent to (a
    forged or misdirected answer), is not the receiver's: the receiver's own late
    answer still takes the task out of the giver's queue."""
    monkeypatch.setattr(handoff_mod, "HANDOFF_TIMEOUT", 0.2)

    async def main() -> None:
        async with giver_and_taker("h-forged") as (g, t):
            held_back, take = await given_up(g, t, "h-forged")
            g.handoff.on_ack(HandoffAck(held_back[0].batch, "someone-else", ["h-forged"]))
            assert "h-forged" in g.ledger.held and g.pool.queued == 1
            take(held_back[0])                             # the taker takes it after all
            await until(lambda: "h-forged" not in g.ledger.held, "the giver to forget it")
            assert "h-forged" in t.ledger.held and g.pool.queued == 0
    run(main())


def test_a_handoff_to_a_receiver_merely_suspected_is_sent_again_not_given_up() -> None:
    # The cluster chaos test: a node shed tasks to a busy peer, which was suspected for
    # half a second (not dead); the sender gave the batch up at its first timeout and
    # ran the tasks, and the peer, which had taken them, ran them too. A suspected
    # receiver gets the batch again, as an alive one does (up to TRIES sends: 3 s).
    async def main() -> None:
        async with giver_and_taker("h-sus") as (g, t):
            held_back, take = await in_flight(g, t, "h-sus")
            suspect(g, "taker")
            g.handoff._check(time.monotonic() + handoff_mod.HANDOFF_TIMEOUT + 0.01)   # (its tick)
            assert [o.tries for o in g.handoff._out.values()] == [2] and not g.handoff._given_up
            assert "h-sus" not in g.pool.scheduled and g.pool.queued == 0   # not back in the queue
            await until(lambda: len(held_back) == 2, "the batch to reach the taker again")
            take(held_back[-1])
            await until(lambda: "h-sus" not in g.ledger.held, "the giver to forget it")
            assert "h-sus" in t.ledger.held and g.handoff.handed == 1
    run(main())


def test_a_shed_task_is_not_taken_where_it_would_be_held_in_one_copy() -> None:
    # A loaded run: a node shed tasks to a peer that suspected it (busy), so knew no
    # alive node to copy them to; it took them in one copy, the giver forgot them at its
    # answer, and the peer was killed: a task stayed RECEIVED on the survivor for good.
    # Refused, the task stays with the giver (its copy at the taker), and runs there.
    async def main() -> None:
        async with giver_and_taker("h-one") as (g, t):
            suspect(t, "giver")
            hand(g, "h-one")
            await until(lambda: not g.handoff._out, "the taker's answer")
            assert "h-one" not in t.ledger.held and t.journal.get("h-one") is None
            assert g.ledger.held.get("h-one") is not None and g.handoff.handed == 0
    run(main())


def test_a_shed_refused_for_want_of_a_copy_is_sent_again_when_the_giver_stops() -> None:
    # The cluster rename test, once: a shed the taker refused (no copy possible there)
    # came back to a giver that had begun to stop; with no other peer it kept the tasks
    # in its journal "until it starts again", and their owner waited for good. Leaving,
    # the giver sends them again as a stop's handoff, which is taken in one copy.
    async def main() -> None:
        async with giver_and_taker("h-stop") as (g, t):
            held_back, take = await in_flight(g, t, "h-stop")
            suspect(t, "giver")
            g._stop.set()                        # the giver begins to stop meanwhile
            take(held_back[0])                   # refused: no node to copy it to
            await until(lambda: len(held_back) >= 2, "the giver to send it again")
            await asyncio.sleep(0.2)             # (and what else its stop hands on)
            for again in held_back[1:]:
                take(again)
            await until(lambda: "h-stop" in t.ledger.held, "the taker to hold it")
    run(main())


def test_a_refusal_from_another_node_is_taken_only_from_the_receivers_address() -> None:
    """A HANDOFF_ACK that accepts nothing, from a node the batch was not sent to, is
    taken (the tasks come back) only when it names the receiver's address: the process
    there now, restarted under another name, refusing what zmq queued for the one before
    (test_cluster_rename). From a peer at another address it is not the receiver's
    answer: the batch still waits for the receiver's, which the giver then takes. (A
    node's name is what a frame says, not proof: a sender that can forge this can as
    well name the receiver itself, docs/security.md; bound to the address, an honest
    peer's answer never passes for the receiver's.)"""
    async def main() -> None:
        async with giver_and_taker("h-refused") as (g, t):
            held_back, take = await in_flight(g, t, "h-refused")
            batch = held_back[0].batch
            g.handoff.on_ack(HandoffAck(batch, "someone-else", [], {"h-refused": "no"},
                                        "tcp://127.0.0.1:1"))
            assert batch in g.handoff._out and g.pool.queued == 0   # still the taker's to answer
            take(held_back[0])
            await until(lambda: "h-refused" not in g.ledger.held, "the giver to forget it")
            assert "h-refused" in t.ledger.held and g.handoff.handed == 1
    run(main())


def test_a_refusal_from_the_process_now_at_the_receivers_address_is_taken() -> None:
    async def main() -> None:
        async with giver_and_taker("h-restarted") as (g, t):
            held_back, _take = await in_flight(g, t, "h-restarted")
            g.handoff.on_ack(HandoffAck(held_back[0].batch, "taker-2", [],
                                        {"h-restarted": "sent to a previous run"}, t.address))
            assert not g.handoff._out and g.pool.queued == 1     # back in the queue at once
    run(main())


def test_a_group_handed_away_is_no_longer_coordinated_by_the_giver() -> None:
    # A stopping node hands the groups it coordinates to another node (workflows.stop);
    # it kept each one's state while it drained, and went on asking the mesh where the
    # members were and starting those it found nowhere, beside the taker doing the same.
    gid = "h-group"
    members = [{"task": "fast.add", "args": [i, 1]} for i in range(3)]
    async def main() -> None:
        async with giver_and_taker("h-other") as (g, t), dealer(g) as to_g:
            assert g.workflows is not None and t.workflows is not None
            await to_g.send(submit(gid, name=GROUP, args=(members,)))
            await until(lambda: gid in g.workflows.groups.groups, "the giver to coordinate it")
            g.handoff.give_away([g.ledger.held[gid]], "node is shutting down")
            await until(lambda: gid in t.ledger.held, "the taker to hold the group")
            await until(lambda: gid not in g.ledger.held, "the giver to forget it")
            await until(lambda: gid in t.workflows.groups.groups, "the taker to coordinate it")
            assert gid not in g.workflows.groups.groups
    run(main())


def test_two_nodes_that_shed_to_each_other_at_once_keep_their_own_tasks() -> None:
    """Two equally busy nodes, each seeing the other idle (gossip a moment old), shed to
    each other before either batch arrived: the tasks were swapped and both stayed as
    busy (two real nodes at the start of a burst: 4 tasks each way, session 16). A shed
    that crosses one of ours is refused: both keep their own, and neither sheds to the
    other for PEER_HOLD."""
    async def main() -> None:
        async with giver_and_taker("x-g") as (g, t), dealer(t) as to_t:
            for i in range(16):                   # the taker busy, with a task queued too
                if t.pool.queued:
                    break
                await to_t.send(submit(f"t-{i}"))
                await until(lambda i=i: f"t-{i}" in t.ledger.held, "the taker to hold it")
            await until(lambda: t.pool.queued == 1, "the taker to queue one")
            mine = t.pool.head(1)[0][2].task_id
            held_g, take_g = withhold(g)
            held_t, take_t = withhold(t)
            hand(g, "x-g")                                          # giver -> taker
            entry = t.pool.remove(mine)
            assert entry is not None
            giver = t.membership.member("giver")
            assert giver is not None
            assert t.handoff.hand([entry], shedding.REASON, giver) == 1    # taker -> giver, at once
            await until(lambda: held_g and held_t, "both batches to arrive")
            take_t(held_t[0])
            take_g(held_g[0])
            await until(lambda: not g.handoff._out and not t.handoff._out, "both answers")
            assert "x-g" in g.ledger.held and "x-g" not in t.ledger.held
            assert mine in t.ledger.held and mine not in g.ledger.held
            assert g.pool.queued == 1 and t.pool.queued == 1           # back in their queues
            assert g.handoff.handed == t.handoff.handed == 0
            assert g.handoff.status()["shed_crossings"] == t.handoff.status()["shed_crossings"] == 1
            now = time.time()          # and neither sheds to the other for a while
            assert now - g.shedder._shed_from["taker"] < shedding.PEER_HOLD
            assert now - t.shedder._shed_from["giver"] < shedding.PEER_HOLD
    run(main())


@pytest.mark.parametrize(("sent_ago", "crossing"), [(None, False), (0.0, True), (0.4, True),
                                                    (shedding.CROSS_WINDOW, False), (5.0, False)])
def test_a_shed_crosses_one_of_ours_only_within_the_window(sent_ago: float | None,
                                                           crossing: bool) -> None:
    s = shedding.Shedder()
    if sent_ago is not None:
        s.sent("peer", 100.0 - sent_ago)
    assert s.crossing("peer", 100.0) is crossing
    assert ("peer" in s._shed_from) is crossing and s.crossings == int(crossing)
    assert not s.crossing("other", 100.0)


@pytest.mark.parametrize("key", ["total", "busy"])
def test_a_stopping_node_hands_its_tasks_on_though_a_peer_gossips_an_infinite_load(key: str) -> None:
    """A peer's meta is anything it says (a float where a count goes: inf). The load a
    stopping node reads from it to choose where each task goes (``Handoffs._pick``)
    took ``int(inf)``, whose OverflowError was not among the errors it caught: the
    node's stop raised out of its executor's stop hook, the tasks it was handing on
    stayed unsent and the node ended with a traceback. A load it cannot read counts
    as the highest (another peer is chosen first), as a load that is not a number
    did already."""
    async def main() -> None:
        async with running_node(app, name="liar") as liar:
            liar.routing.meta[key] = float("inf")      # what it gossips (the meta's last word)
            liar.membership.update_local_meta()
            async with running_node(app, name="giver", autorun=False, concurrency=1,
                                    peers=[liar.address]) as g, dealer(g) as to_g:
                g.shedder.shed = lambda now: 0
                await until(lambda: (m := g.membership.member("liar")) is not None
                            and m.meta.get(key) == float("inf"), "the giver to know the liar's meta")
                await until(lambda: "giver" in liar.replicas.choice.alive_ids(),
                            "the liar to know the giver (it takes tasks it can copy)")
                for i in range(4):          # (one taken by its child, three queued)
                    await to_g.send(submit(f"inf-{i}"))
                await until(lambda: g.pool.queued == 3, "the giver to hold three queued")
            # the giver stopped (no OverflowError out of its stop) and handed them on:
            # the three queued, and the one its child had, interrupted by the stop
            await until(lambda: liar.handoff.received == 4, "the liar to take the four")
    run(main())
