"""RECLAIM at the node that is asked (mesh/node/reclaim.py), in this process: the
copies a returning holder reclaims are not taken over later; a RECLAIM from a node
that is not a member, or one that does not decode, changes nothing and hurts nothing.
(The returning holder's side, with real processes: tests/integration/test_e2e_reclaim.py.)"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import zmq.asyncio
from test_node_inprocess import _later, _state, app, dealer, frames_until, met, run, submit, until

from mesh.membership import MemberState
from mesh.node import shedding
from mesh.node.node import Node
from mesh.testing import running_node
from mesh.testing.node import crash
from mesh.wire.protocol import Ack, Error, Reclaim, Result, encode


@asynccontextmanager
async def holder_and_backup(*ids: str) -> AsyncIterator[tuple[Node, Node, zmq.asyncio.Socket]]:
    """Two nodes; the holder holds ``ids`` (due in a minute), the backup keeps their
    copies. The holder, the backup, and a DEALER to the backup."""
    async with running_node(app, name="holder", autorun=False) as h, \
            running_node(app, name="backup", autorun=False, peers=[h.address]) as b, \
            dealer(h) as to_h, dealer(b) as to_b:
        await until(lambda: len(b.membership.alive_members()) == 2, "the two to meet")
        for tid in ids:
            await to_h.send(_later(tid))
        await until(lambda: set(ids) <= set(b.replicas.copies.holder_of),
                    "the backup to keep the copies")
        yield h, b, to_b


@asynccontextmanager
async def giver_holding(tid: str) -> AsyncIterator[tuple[Node, Node]]:
    """A giver holding ``tid`` queued (behind a busy child; it sheds only when a test
    says) and a silent member that never answers a RECLAIM (the taker waits for it)."""
    async with running_node(app, name="giver", autorun=False, concurrency=1) as g, \
            running_node(app, name="silent", autorun=False, peers=[g.address]) as s, \
            dealer(g) as to_g:
        g.shedder.shed = lambda now: 0
        s.reclaim.answer = lambda msg: None
        await to_g.send(submit("g-busy"))
        await to_g.send(submit(tid))
        await until(lambda: g.pool.queued == 1, "the giver to hold it, queued")
        yield g, s


async def taker_crashed(data: str, ids: tuple[str, ...], ready: Any, **options: Any) -> None:
    """A taker on ``data`` sent ``ids``, crashed once ``ready(node)`` holds."""
    async with running_node(app, name="taker", autorun=False, journal=True, concurrency=1,
                            data_dir=data, **options) as t, dealer(t) as to_t:
        for i in ids:
            await to_t.send(submit(i))
        await until(lambda: ready(t), "the taker to hold what it was sent")
        await crash(t)


async def held_by_giver_silent_waited(taker: Node) -> None:
    await until(lambda: "giver" in taker.reclaim.answers.held.values()
                and list(taker.reclaim._expected) == ["silent"],
                "the giver's answer (held), not the silent node's")


async def hand_to_taker(g: Node, tid: str) -> None:
    """The giver sheds ``tid`` to the taker now."""
    entry, target = g.pool.remove(tid), g.membership.member("taker")
    assert entry is not None and target is not None
    assert g.handoff.hand([entry], shedding.REASON, target) == 1


def test_copies_a_returning_holder_reclaimed_are_not_taken_over_when_it_is_declared_dead() -> None:
    # The holder comes back (here: its RECLAIM arrives) before its backup declared its
    # old process dead: the backup must drop the copies, else its takeover runs them
    # while the holder runs them too.
    async def main() -> None:
        async with holder_and_backup("kept-1", "kept-2") as (h, b, to_b):
            address = h.address
            await crash(h)
            await to_b.send(encode(Reclaim("holder", address, 1, ["kept-1"])))
            await to_b.send(submit("after"))        # handled after it: then it was seen
            await frames_until(to_b, lambda g: any(isinstance(m, Ack) for m in g))
            assert b.reclaim.counts["answered"] == 1
            await until(lambda: _state(b, "holder") == MemberState.DEAD,
                        "b to declare the holder dead")
            b.replicas.copies.check_holders(time.monotonic())
            assert "kept-1" not in b.ledger.held            # reclaimed: not run here
            assert "kept-2" in b.ledger.held                # not reclaimed: taken over
            assert b.replicas.copies.taken_over == 1
    run(main())


def test_a_reclaim_from_a_stranger_or_that_does_not_decode_changes_nothing() -> None:
    async def main() -> None:
        async with holder_and_backup("kept-3") as (h, b, to_b):
            # a name no member has, a member at another address
            await to_b.send(encode(Reclaim("stranger", "tcp://127.0.0.1:9", 1, ["kept-3"])))
            await to_b.send(encode(Reclaim("holder", "tcp://127.0.0.1:9", 1, ["kept-3"])))
            await to_b.send(msgpack.packb([1, 53, "holder", h.address, 1, [7]]))
            await to_b.send(msgpack.packb([1, 54, "holder", 1, [], ["x"], []]))
            await to_b.send(submit("after-2"))
            got = await frames_until(to_b, lambda g: any(isinstance(m, Ack) for m in g))
            assert [m.code for m in got if isinstance(m, Error)] == ["decode", "decode"]
            assert b.reclaim.counts["answered"] == 0
            assert b.replicas.copies.holder_of.get("kept-3") == "holder"
    run(main())


def test_reclaims_from_a_stranger_kept_waiting_are_bounded_in_size() -> None:
    """RECLAIMs from a node not a member yet wait up to DEFER s for it to become one
    (a node restarted under a new name): what they keep is bounded by their size too,
    not only their number, or a peer sending big ones (each up to the message size)
    would have the node hold hundreds of MB for nothing. Those past the bound are
    refused at once, as before the wait existed."""
    from mesh.node import reclaim

    async def main() -> None:
        async with holder_and_backup("kept-4") as (_h, b, to_b):
            ids = [f"{i:06d}" + "x" * 144 for i in range(20_000)]     # ~3 MB a message
            for r in range(12):
                await to_b.send(encode(Reclaim("stranger", "tcp://127.0.0.1:9", r, ids)))
            await to_b.send(submit("after-4"))
            await frames_until(to_b, lambda g: any(isinstance(m, Ack) for m in g))
            kept = sum(reclaim.deferred_size(m) for _, m in b.reclaim._deferred)
            assert 0 < kept <= reclaim.DEFER_MAX_BYTES, kept
            assert b.reclaim.counts["answered"] == 0
    run(main())


def test_handoffs_for_an_earlier_run_from_strangers_keep_no_socket_open_for_each() -> None:
    """A HANDOFF queued for the process that held this address before is refused at
    once, also when its sender is not a member here yet (05b6b79): the refusal goes to
    the address the sender names. From senders no member is, a socket per address
    named must not be kept for ever (every one a file descriptor, reconnecting every
    2 s): a stream of them with made-up addresses would use up the node's fds."""
    from mesh.node import handoff_take
    from mesh.wire.protocol import Handoff

    async def main() -> None:
        async with holder_and_backup("kept-5") as (_h, b, to_b):
            before = len(b.replicas.sockets.socks)
            n = handoff_take.STRANGERS_MAX + 40
            for i in range(n):
                await to_b.send(encode(Handoff(f"batch-{i}", f"stranger-{i}",
                                               f"tcp://127.0.0.1:{20000 + i}", [], "",
                                               "an-earlier-boot")))
            await to_b.send(submit("after-5"))
            await frames_until(to_b, lambda g: any(isinstance(m, Ack) for m in g))
            await until(lambda: any(a.endswith(f":{20000 + n - 1}") for a in b.replicas.sockets.socks)
                        or b.replicas.sockets.dropped, "the last refusal to be sent")
            opened = len(b.replicas.sockets.socks) - before
            assert opened <= handoff_take.STRANGERS_MAX, opened
    run(main())


def test_a_recovered_task_its_owner_resends_while_the_node_asks_runs_once(tmp_path: Any) -> None:
    # The node restarts alone with a task in its journal: it waits up to JOIN_WAIT for
    # a peer to ask. Its owner resends the task meanwhile: the answer goes to that
    # link, and the task runs once (not once for the resend and once after the wait).
    async def main() -> None:
        async with running_node(app, concurrency=1, autorun=False, shutdown_timeout=0.05,
                                journal=True, data_dir=str(tmp_path)) as a, dealer(a) as s:
            await s.send(submit("back-1"))
            await until(lambda: "back-1" in a.ledger.held, "a to hold it")
            a.stop()
            await a.finished()                 # alone: kept in the journal
        async with running_node(app, concurrency=1, journal=True, data_dir=str(tmp_path)) as a2, \
                dealer(a2) as s2:
            assert "back-1" in a2.reclaim.waiting
            await s2.send(submit("back-1"))    # the owner, through a new link
            got = await frames_until(s2, lambda g: any(isinstance(m, Result) for m in g))
            assert [m.task_id for m in got if isinstance(m, Result)] == ["back-1"]
            assert a2.reclaim.counts["run_here"] == 1
            await until(lambda: not a2.ledger.held, "a2 to be done")
            assert a2.pool.ran == 1 and a2.ledger.counts["SUCCESS"] == 1
    run(main())


def test_a_task_shed_to_a_node_that_restarts_runs_there(tmp_path: Any) -> None:
    # The giver sheds a task to the taker, which journals it and answers; the giver
    # forgets it and remembers it moved there. The taker is killed and starts again on
    # its data dir (same name, same address) before anyone declared it dead: it asks
    # the giver about the task. "Handed on lately" to the asker itself is not "held
    # elsewhere": counted so, the taker dropped the task and no node had it.
    async def main() -> None:
        tid = "shed-then-restart"
        async with running_node(app, name="giver", autorun=False, concurrency=1) as g, \
                dealer(g) as to_g:
            async with running_node(app, name="taker", autorun=False, journal=True,
                                    data_dir=str(tmp_path), peers=[g.address]) as t:
                await until(lambda: len(g.membership.alive_members()) == 2
                            and len(t.membership.alive_members()) == 2, "the two to meet")
                await to_g.send(submit("busy"))           # its one child busy: tid queued
                await to_g.send(submit(tid))
                await until(lambda: tid in g.ledger.held and not g.replicas.pending(tid)
                            and g.pool.queued == 1, "the giver to hold it, queued, copied")
                entry, target = g.pool.remove(tid), g.membership.member("taker")
                assert entry is not None and target is not None
                assert g.handoff.hand([entry], shedding.REASON, target) == 1   # as shedding does
                await until(lambda: tid not in g.ledger.held, "the giver to hand it on")
                assert g.handoff.moved_to(tid) is not None
                address = t.address
                await crash(t)
            async with running_node(app, name="taker", journal=True, data_dir=str(tmp_path),
                                    peers=[g.address], bind=address) as t2:
                await until(lambda: not t2.reclaim.waiting and t2.reclaim.counts,
                            "the taker to hear the giver's answer")
                assert t2.reclaim.counts["held_elsewhere"] == 0
                assert t2.reclaim.counts["run_here"] == 1
                await until(lambda: t2.ledger.counts["SUCCESS"] == 1, "the task to run")
    run(main())


def test_a_task_handed_to_a_node_while_it_waits_for_the_answers_stays(tmp_path: Any) -> None:
    # The taker restarts with tasks waiting on its disk, and asks. The giver holds one
    # of them (as a node that took it over would), answers "held", then sheds it to
    # the taker before the taker has every answer (here: the silent node's). The
    # taker takes it (on its disk already) and the giver forgets it: the stale
    # "held" must not make the taker drop it.
    async def main() -> None:
        tid = "d-3"
        data = str(tmp_path / "taker")
        await taker_crashed(data, ("busy", "d-0", "d-1", "d-2", tid),
                            lambda t: t.spill.on_disk == 2, queue_memory=2)
        async with giver_holding(tid) as (g, s):
            async with running_node(app, name="taker", autorun=False, journal=True,
                                    concurrency=1, data_dir=data, queue_memory=2,
                                    peers=[g.address, s.address]) as t2:
                assert tid in t2.reclaim.disk
                await held_by_giver_silent_waited(t2)
                await hand_to_taker(g, tid)
                await until(lambda: tid not in g.ledger.held, "the giver to hand it on")
                await until(lambda: not t2.reclaim.disk, "the taker to settle", timeout=15)
                assert t2.reclaim.counts["held_elsewhere"] == 0
                assert t2.spill.holds(tid)              # waits on its disk, to run here
    run(main())


def test_a_task_handed_to_a_node_while_it_waits_keeps_its_owners_link(tmp_path: Any) -> None:
    # As above, recovered into memory, and its owner sent it again to the returning
    # node while it waited (reclaim.resent: the answer goes to that link). The giver's
    # handoff carries no owner (its MOVED goes to the link it knew): the task held
    # here must keep the link the owner resent on, else its result goes to nobody.
    async def main() -> None:
        tid = "m-1"
        data = str(tmp_path / "taker")
        await taker_crashed(data, ("busy", tid), lambda t: tid in t.ledger.held)
        async with giver_holding(tid) as (g, s):
            async with running_node(app, name="taker", autorun=False, journal=True,
                                    concurrency=1, data_dir=data,
                                    peers=[g.address, s.address]) as t2, dealer(t2) as owner:
                await held_by_giver_silent_waited(t2)
                before = t2.reclaim.waiting[tid].client
                await owner.send(submit(tid))           # the owner resends it here
                await until(lambda: t2.reclaim.waiting[tid].client != before, "the resend")
                link = t2.reclaim.waiting[tid].client
                await hand_to_taker(g, tid)
                await until(lambda: tid in t2.ledger.held and tid not in t2.reclaim.waiting,
                            "the taker to hold it as handed")
                assert t2.ledger.held[tid].client == link
    run(main())


def test_a_member_that_becomes_alive_while_the_node_waits_is_asked_too(tmp_path: Any) -> None:
    # The returning node knows only a silent member when it asks; the node that took
    # its task over joins a moment later. It is asked too (else the task runs twice:
    # CI saw a returning node ask only the first of its two seeds to answer).
    async def main() -> None:
        tid = "late-1"
        data = str(tmp_path / "taker")
        await taker_crashed(data, ("busy", tid), lambda t: tid in t.ledger.held)
        async with running_node(app, name="giver", autorun=False, concurrency=1) as g, \
                dealer(g) as to_g, running_node(app, name="silent", autorun=False) as s:
            g.shedder.shed = lambda now: 0
            s.reclaim.answer = lambda msg: None
            await to_g.send(submit("g-busy"))
            await to_g.send(submit(tid))
            await until(lambda: g.pool.queued == 1, "the giver to hold it, queued")
            async with running_node(app, name="taker", autorun=False, journal=True,
                                    concurrency=1, data_dir=data, peers=[s.address]) as t2:
                await until(lambda: list(t2.reclaim._expected) == ["silent"],
                            "the taker to ask the silent node")
                g.membership.join([t2.address])            # the giver joins now
                await until(lambda: "giver" in t2.reclaim.answers.held.values(),
                            "the late member's answer (held)")
                await until(lambda: not t2.reclaim.waiting, "the taker to settle")
                assert tid not in t2.ledger.held and t2.reclaim.counts["held_elsewhere"] == 1
    run(main())


def test_an_answer_deferred_until_the_asker_is_a_member_comes_while_the_asker_waits(
        tmp_path: Any) -> None:
    # The taker restarts under a new name on its journal: a member that does not know
    # the new name yet keeps its RECLAIM up to DEFER s (answered once it knows it).
    # Here the giver, which holds the task now (taken over), answers 2.5 s after the
    # RECLAIM came, as a giver that learns of the new name that late does. The taker
    # must still be waiting then: before, it waited 2 s (ANSWER_WAIT) against the
    # giver's 3 s, ran the task as well (twice in the mesh), and the giver's late
    # answer could drop the copies it kept for the taker meanwhile (copies.reclaim).
    # (The rule this test guards: reclaim.answer_wait(n) > reclaim.DEFER.)
    async def main() -> None:
        tid = "n-1"
        data = str(tmp_path / "taker")
        await taker_crashed(data, ("busy", tid), lambda t: tid in t.ledger.held)
        async with running_node(app, name="giver", autorun=False, concurrency=1) as g, \
                dealer(g) as to_g:
            g.shedder.shed = lambda now: 0
            await to_g.send(submit("g-busy"))
            await to_g.send(submit(tid))
            await until(lambda: g.pool.queued == 1, "the giver to hold it, queued")
            late = g.reclaim.answer
            loop = asyncio.get_running_loop()
            g.reclaim.answer = lambda msg: loop.call_later(2.5, late, msg)  # type: ignore[method-assign]
            async with running_node(app, name="taker-2", autorun=False, journal=True,
                                    concurrency=1, data_dir=data, peers=[g.address]) as t2:
                await until(lambda: t2.reclaim.counts, "the taker to settle", timeout=15)
                assert t2.reclaim.counts["held_elsewhere"] == 1, t2.reclaim.counts
                assert tid not in t2.ledger.held and tid in g.ledger.held
    run(main())


@asynccontextmanager
async def three_met(tmp_path: Any, where: str, **taker: Any
                    ) -> AsyncIterator[tuple[Node, Node, zmq.asyncio.Socket, Node]]:
    """A backup, a giver (and a DEALER to it) and a taker (``taker``: its options),
    met, neither holder shedding. On disk: the backup's window is one copy (the
    giver's busy task's), the others go to its journal (mesh/node/copy_journal.py)."""
    disk: dict[str, Any] = dict(journal=True, data_dir=str(tmp_path / "backup"),
                                queue_memory=1) if where == "on-disk" else {}
    async with running_node(app, name="backup", autorun=False, **disk) as b, \
            running_node(app, name="giver", autorun=False, concurrency=1,
                         peers=[b.address]) as g, dealer(g) as to_g, \
            running_node(app, name="taker", autorun=False, concurrency=1,
                         peers=[b.address, g.address], **taker) as t:
        g.shedder.shed = lambda now: 0
        t.shedder.shed = lambda now: 0
        await met((b, g, t), "the three to meet")   # (each a taker of the others' tasks)
        yield b, g, to_g, t


@pytest.mark.parametrize("where", ["in-memory", "on-disk"])
@pytest.mark.parametrize("then", ["taker-reclaims", "taker-dies"])
def test_a_task_two_nodes_held_keeps_its_copy_when_one_reclaims_it(tmp_path: Any, then: str,
                                                                    where: str) -> None:
    # The giver hands a task to the taker, which journals it, copies it to the task's
    # backup (the backup of both: the id's highest-ranked node) and answers; the answer
    # is lost (here: the giver does not read it), so after 3 s the giver gives the
    # handoff up and holds the task again: two holders of one id, one backup. The taker
    # is killed and starts again (same name, data dir, address): its reclaim finds the
    # task held by the giver (dropped there) and has the backup drop the copy kept for
    # it. The giver's copy must still be on the backup: until 2026-12 the backup kept
    # one copy per id, the taker's had replaced the giver's, and with it gone, the
    # giver's death lost the task (nothing ran it). Or the taker is not back and is
    # declared dead: its copy is taken over, not the giver's, and not run at the
    # backup (the giver, alive, holds the task: it would run there too). On disk: the
    # backup's window is one copy (the giver's busy task's), so both copies of the
    # task go to its journal (mesh/node/copy_journal.py).
    tid = "two-holders-0"               # ranked: backup > giver, taker (mesh/rendezvous.py)

    async def main() -> None:
        data = str(tmp_path / "taker")
        async with three_met(tmp_path, where, journal=True, data_dir=data) as (b, g, to_g, t):
            await both_hold(b, g, to_g, t, tid)
            address = t.address
            await crash(t)
            if then == "taker-dies":
                await taker_taken_over(b, tid)
                await giver_dies(b, g, tid)
                return
            async with running_node(app, name="taker", autorun=False, journal=True,
                                    concurrency=1, data_dir=data, bind=address,
                                    peers=[b.address, g.address]) as t2:
                await until(lambda: t2.reclaim.counts, "the taker to settle", timeout=15)
                assert t2.reclaim.counts["held_elsewhere"] == 1, t2.reclaim.counts
                assert tid not in t2.ledger.held and tid in g.ledger.held
                assert holders(b, tid) == ["giver"]
                await giver_dies(b, g, tid)
    asyncio.run(asyncio.wait_for(main(), 60))


async def both_hold(b: Node, g: Node, to_g: zmq.asyncio.Socket, t: Node, tid: str) -> None:
    """The giver ``g`` hands ``tid`` to the taker ``t``, which holds it (its copy at
    ``b`` confirmed), and gives the handoff up (it does not read the answer): both hold
    it, ``b`` keeps a copy for each."""
    await to_g.send(submit("g-busy-0"))       # (of three nodes, its backup is b too)
    await until(lambda: "g-busy-0" in g.ledger.held and not g.replicas.pending("g-busy-0"),
                "the first copy")
    await to_g.send(submit(tid))
    await until(lambda: g.pool.queued == 1 and b.replicas.copies.has(tid),
                "the giver to hold it, queued, copied to the backup")
    g.handoff.on_ack = lambda msg: None    # type: ignore[method-assign]
    await hand_to_taker(g, tid)
    await until(lambda: tid in t.ledger.held and not t.replicas.pending(tid),
                "the taker to hold it, its copy confirmed")
    await until(lambda: g.pool.queued == 1 and g.handoff._given_up,
                "the giver to give the handoff up, holding the task again")
    del g.handoff.on_ack                   # (answers are read again)
    assert sorted(holders(b, tid)) == ["giver", "taker"]


async def taker_taken_over(b: Node, tid: str) -> None:
    """(The taker killed) ``b`` declares it dead and takes its copies over: not the one
    of ``tid``, which the giver, alive, holds: it waits."""
    await until(lambda: _state(b, "taker") == MemberState.DEAD,
                "the backup to declare the taker dead", timeout=20)
    b.replicas.copies.check_holders(time.monotonic())
    await until(lambda: "taker" not in b.replicas.copies._taking,
                "the taker's copies to be taken over (on disk: ticks)")
    assert tid not in b.ledger.held and not b.spill.holds(tid)   # the giver has it
    # (the taker's copy waits, in memory, for the giver's drop: one saying it handed
    # the task to the taker would mean the task is held by no live node)
    assert sorted(holders(b, tid)) == ["giver", "taker"]
    b.replicas.copies.check_holders(time.monotonic())   # (the next check)
    assert tid not in b.ledger.held and not b.spill.holds(tid)


@asynccontextmanager
async def four_met() -> AsyncIterator[tuple[Node, Node, zmq.asyncio.Socket, Node]]:
    """``three_met`` in memory, and a helper (not shedding either) that each of them
    knows as a node that takes their tasks (its registered names gossiped): the
    backup, the giver (and a DEALER to it), the taker."""
    async with three_met(None, "in-memory") as (b, g, to_g, t), \
            running_node(app, name="helper", autorun=False,
                         peers=[b.address, g.address]) as f:
        f.shedder.shed = lambda now: 0
        await met((b, g, t, f), "the four to meet")
        yield b, g, to_g, t


@pytest.mark.parametrize("why", ["backup-replaced", "given-back"])
def test_a_dead_holders_waiting_copy_does_not_run_when_the_other_copy_goes_otherwise(
        why: str) -> None:
    # As in the taker-dies case above: both hold the task, the taker is declared dead,
    # its copy waits at the backup. Then the giver's copy there goes, but not because
    # the giver handed the task to the taker: its backup was replaced while merely
    # suspected (the drop comes once it is alive again; the giver holds the task, its
    # copy on a fourth node), or it gave the task back to its owner (who sends it
    # elsewhere). The taker's copy must not run at the backup: the task is held by a
    # live node, and the taker, declared dead, may be only cut off and run it too
    # (three runs). Review14's rule ran it whenever the giver's copy went (and the
    # cluster chaos test saw tasks run three times with it). (A task the giver hands
    # to a third node is copied here by that node, a live holder: its copy keeps the
    # taker's waiting.)
    tid = "two-holders-0"       # ranked: backup > helper > taker > giver (mesh/rendezvous.py)

    async def main() -> None:
        async with four_met() as (b, g, to_g, t):
            await both_hold(b, g, to_g, t, tid)
            await crash(t)
            await taker_taken_over(b, tid)
            if why == "backup-replaced":
                await backup_replaced(g, tid)        # (its parked drop goes at once)
            else:
                entry = g.pool.remove(tid)
                assert entry is not None
                g.ledger.release([entry], "given back (test)")
            await until(lambda: "giver" not in holders(b, tid), "the giver's drop")
            b.replicas.copies.check_holders(time.monotonic())   # (its loop does, each second)
            await asyncio.sleep(0.2)
            assert tid not in b.ledger.held, "run at the backup, while a live node has it"
            assert not b.replicas.copies.waiting, "the taker's copy is left waiting"
    asyncio.run(asyncio.wait_for(main(), 60))


async def backup_replaced(g: Node, tid: str) -> None:
    """The giver's check of its backups finds the backup not alive (suspected a
    moment: here only in the giver's cache of alive peers, so that the other nodes do
    not hear of it): ``tid`` gets the helper (a fourth node) as its backup, and the
    drop of its copy at the old one is parked until that one is alive again (at once
    here: the membership has it alive, unless the test holds ``_unpark``). Once the
    giver sees the helper alive (a loaded CI run: suspected a moment, the taker got
    the copy); nothing yields after that look."""
    await until(lambda: "helper" in {m.id for m in g.membership.alive_members(include_self=False)},
                "the giver to see the helper alive")
    choice = g.replicas.choice
    choice.refresh()
    choice.alive_ids()
    choice._alive_members = [m for m in choice._alive_members if m.id != "backup"]
    choice._alive, choice._takers = [m.id for m in choice._alive_members], {}
    choice._alive_at = time.monotonic() + 3600
    g.replicas.check_members(time.monotonic())
    choice.refresh()                           # (alive again at its next look)
    assert g.replicas.backup_of(tid) == "helper"


def test_a_task_handed_on_after_its_backup_was_replaced_runs_at_the_old_one_if_the_taker_dies(
        ) -> None:
    # The giver suspects the backup a moment: the task's copy goes to a fourth node,
    # and the drop of the one at the backup waits until the backup is alive again.
    # Meanwhile the giver hands the task to the taker (whose backup is the backup: its
    # copy goes there); the giver's drop naming the taker goes to the helper,
    # which has no copy of the taker's. The taker dies, the backup takes it over: the
    # giver's stale copy is still there, so the taker's waits. Then the parked drop
    # comes: it must name the taker too, else the waiting copy goes and the task runs
    # nowhere.
    tid = "two-holders-0"       # ranked: backup > helper > taker > giver (mesh/rendezvous.py)

    async def main() -> None:
        async with four_met() as (b, g, to_g, t):
            await to_g.send(submit("g-busy-0"))
            await to_g.send(submit(tid))
            await until(lambda: g.pool.queued == 1 and b.replicas.copies.has(tid),
                        "the giver to hold it, queued, copied to the backup")
            unpark = g.replicas._unpark
            g.replicas._unpark = lambda restarted: None   # type: ignore[method-assign]
            await backup_replaced(g, tid)
            assert g.replicas._parked["backup"] == {tid: ""}
            await hand_to_taker(g, tid)
            await until(lambda: tid in t.ledger.held and tid not in g.ledger.held
                        and not t.replicas.pending(tid),
                        "the taker to hold it (copied), the giver to forget it")
            assert sorted(holders(b, tid)) == ["giver", "taker"]
            await crash(t)
            await taker_taken_over(b, tid)
            g.replicas._unpark = unpark                   # type: ignore[method-assign]
            g.replicas.check_members(time.monotonic())    # (the parked drop goes now)
            await until(lambda: tid in b.ledger.held, "the backup to run the taker's task")
    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_dead_holders_copy_in_memory_waits_for_a_live_holders_copy_on_disk(tmp_path: Any
                                                                              ) -> None:
    # The backup's window is one copy: the giver's copy of the task went to its disk
    # (the window held the giver's busy task's), the taker's, sent when that one had
    # finished, to its memory. The taker dies: its takeover in memory must see the
    # giver's copy on disk (the giver holds the task), or the backup runs it too.
    tid = "two-holders-0"               # ranked: backup > giver, taker (mesh/rendezvous.py)

    async def main() -> None:
        async with three_met(tmp_path, "on-disk") as (b, g, to_g, t):
            copies = b.replicas.copies
            await to_g.send(submit("g-busy-0"))
            await until(lambda: copies.has("g-busy-0"), "the first copy (the window's)")
            await to_g.send(submit("g-busy-4"))   # (its backup: b too)
            await to_g.send(submit(tid))
            await until(lambda: g.pool.queued == 2 and copies.disk.get("giver") == 2,
                        "the giver's copies of the others on disk")
            g.pool.finish_running("g-busy-0")     # (its result frees the window)
            await until(lambda: not copies.frames and g.pool.queued == 1,
                        "the busy task's result at the backup, the next one running")
            g.handoff.on_ack = lambda msg: None    # type: ignore[method-assign]
            await hand_to_taker(g, tid)
            await until(lambda: tid in t.ledger.held and not t.replicas.pending(tid),
                        "the taker to hold it, its copy confirmed")
            await until(lambda: g.handoff._given_up and tid in g.ledger.held,
                        "the giver to give the handoff up, holding the task again")
            assert copies.holders(tid) == ["taker"]                       # in memory
            assert [h for _, h in b.journal.copy_holders([tid])] == ["giver"]   # on disk
            await crash(t)
            await until(lambda: _state(b, "taker") == MemberState.DEAD,
                        "the backup to declare the taker dead", timeout=20)
            copies.check_holders(time.monotonic())
            assert tid not in b.ledger.held, "run at the backup while the giver holds it"
            assert list(copies.waiting.get(tid, ())) == ["taker"]
    asyncio.run(asyncio.wait_for(main(), 60))


async def giver_dies(b: Node, g: Node, tid: str) -> None:
    """The giver is killed: its backup ``b`` runs ``tid`` from the copy it kept."""
    await crash(g)
    await until(lambda: _state(b, "giver") == MemberState.DEAD,
                "the backup to declare the giver dead", timeout=20)
    b.replicas.copies.check_holders(time.monotonic())
    await until(lambda: tid in b.ledger.held or b.spill.holds(tid),
                "the backup to take it over (it runs there)")


def holders(b: Node, tid: str) -> list[str]:
    """The holders whose copy of ``tid`` ``b`` keeps, in memory or on disk, or that
    waits for another holder's drop (a dead holder's: mesh/node/takeover.py)."""
    copies = b.replicas.copies
    return copies.holders(tid) + [h for _, h in b.journal.copy_holders([tid])] + \
        list(copies.waiting.get(tid, ()))


@asynccontextmanager
async def handed_on_drop_late(tmp_path: Any, where: str, tid: str, **taker: Any
                              ) -> AsyncIterator[tuple[Node, Node, str, Callable[[], None]]]:
    """A backup and a giver; the giver has handed ``tid`` to a taker (``taker``: its
    options), which holds it, its copy at the backup confirmed; the giver forgot it,
    and its REPLICATEs (its drop of its own copy among them) reach the backup only when
    the test calls ``deliver()``. The taker is killed then. The backup, the giver,
    the taker's address, ``deliver``."""
    async with three_met(tmp_path, where, **taker) as (b, g, to_g, t):
        copies = b.replicas.copies
        keep = copies.on_replicate
        late: list[Any] = []
        await to_g.send(submit("g-busy-0"))
        await until(lambda: copies.has("g-busy-0"), "the first copy")
        await to_g.send(submit(tid))
        await until(lambda: g.pool.queued == 1 and copies.has(tid),
                    "the giver to hold it, queued, copied to the backup")
        # from now on the giver's REPLICATEs reach the backup late
        copies.on_replicate = lambda msg: (late if msg.source == "giver"   # type: ignore[method-assign]
                                           else [keep(msg)]).append(msg)
        await hand_to_taker(g, tid)
        await until(lambda: tid in t.ledger.held and tid not in g.ledger.held
                    and not t.replicas.pending(tid),
                    "the taker to hold it (copied), the giver to forget it")
        await until(lambda: any(tid in m.drop for m in late), "the giver's drop")
        assert sorted(holders(b, tid)) == ["giver", "taker"]
        address = t.address
        await crash(t)

        def deliver() -> None:
            copies.on_replicate = keep                    # type: ignore[method-assign]
            for msg in late:
                keep(msg)
        yield b, g, address, deliver


@pytest.mark.parametrize("where", ["in-memory", "on-disk"])
def test_a_task_handed_to_a_holder_that_dies_before_the_givers_drop_arrives_runs_at_the_backup(
        tmp_path: Any, where: str) -> None:
    # The giver hands a task to the taker; both have the same backup (the id's
    # highest-ranked node other than each). The taker journals it, copies it to the
    # backup and answers; the giver forgets it, and its drop of its own copy goes to the
    # backup with its next REPLICATE. That one is held up here (in a run: the giver's
    # batch to the backup in flight unanswered, or the backup suspected by the giver a
    # moment, its drops parked until it is alive again), and meanwhile the taker is
    # killed and declared dead: the backup keeps the copies of both, and its takeover of
    # the taker's finds the giver's copy (a live holder: "it holds it") and runs nothing.
    # Then the giver's drop arrives: no copy is left, no node holds the task, nothing
    # runs it (its owner may be gone). The taker's copy must wait for the giver's to go.
    tid = "two-holders-0"               # ranked: backup > giver, taker (mesh/rendezvous.py)

    async def main() -> None:
        async with handed_on_drop_late(tmp_path, where, tid) as (b, _g, _address, deliver):
            copies = b.replicas.copies
            await until(lambda: _state(b, "taker") == MemberState.DEAD,
                        "the backup to declare the taker dead", timeout=20)
            copies.check_holders(time.monotonic())        # (its loop does, each second)
            await until(lambda: "taker" not in copies._taking,
                        "the taker's copies to be taken over (on disk: ticks)")
            assert tid not in b.ledger.held and not b.spill.holds(tid)   # the giver's copy
            deliver()                                     # the giver's drop arrives
            copies.check_holders(time.monotonic())
            await until(lambda: tid in b.ledger.held or b.spill.holds(tid),
                        "the backup to run the taker's task")
    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("where", ["in-memory", "on-disk"])
def test_a_task_handed_to_a_holder_that_restarts_before_the_givers_drop_arrives_runs_there(
        tmp_path: Any, where: str) -> None:
    # As above, but the taker is not declared dead: it is killed and starts again on
    # its data dir (same name, address) while the giver's drop of its old copy is still
    # on the way to the backup, and asks (RECLAIM) about the task in its journal. The
    # giver forgot it (handed on: it answers nothing). The backup keeps a copy of it for
    # the giver, a live holder: until 2026-12 it answered "held" on the strength of that
    # copy alone, so the taker dropped the task, the backup dropped the taker's copy
    # (reclaimed), and the giver's drop then took the last one: no node held the task,
    # nothing ran it. A copy is second-hand: the holder it was kept for is asked too
    # and answers for itself.
    tid = "two-holders-0"               # ranked: backup > giver, taker (mesh/rendezvous.py)

    async def main() -> None:
        data = str(tmp_path / "taker")
        async with handed_on_drop_late(tmp_path, where, tid, journal=True,
                                       data_dir=data) as (b, g, address, deliver):
            async with running_node(app, name="taker", journal=True, concurrency=1,
                                    data_dir=data, bind=address,
                                    peers=[b.address, g.address]) as t2:
                await until(lambda: t2.reclaim.counts, "the taker to settle", timeout=15)
                deliver()                                 # the giver's drop arrives
                assert "giver" not in holders(b, tid)
                assert tid in t2.ledger.held or t2.ledger.counts["SUCCESS"] or \
                    holders(b, tid), "lost: held by no node, no copy left"
                assert t2.reclaim.counts["held_elsewhere"] == 0, t2.reclaim.counts
                await until(lambda: t2.ledger.counts["SUCCESS"] == 1, "the task to run")
    asyncio.run(asyncio.wait_for(main(), 60))
