"""mesh/node/copy_back.py with in-process nodes: the suspected peers a holder notes
(``BackupChoice.missed``) are capped, and one forgotten past the cap is a joiner when
it is alive again: the held tasks that rank it first are copied back to it all the
same (by the walk of the held tasks, not by the note of the tasks chosen meanwhile)."""
from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import zmq.asyncio
from test_node_inprocess import (
    _later,
    _state,
    app,
    dealer,
    drain,
    frames_until,
    met,
    run,
    submit,
    until,
)

from mesh.membership import MemberState
from mesh.node import copy_back, copy_gates
from mesh.node.node import Node
from mesh.rendezvous import backup_for
from mesh.testing import running_node
from mesh.wire.protocol import UPDATE_SUSPECT, Ack, Gossip, Replicate


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


def _held_back(node: Node) -> list[Replicate]:
    """``node`` keeps the copies it is sent unanswered, in the returned list, until
    ``_answer`` (a backup slow to confirm)."""
    held: list[Replicate] = []
    node.replicas.on_replicate = held.append      # type: ignore[method-assign]
    return held


def _answer(node: Node, held: list[Replicate]) -> None:
    del node.replicas.on_replicate                # (the class's again)
    for msg in held:
        node.replicas.on_replicate(msg)


_TID = next(t for t in (f"s-{i}" for i in range(100))
            if backup_for(t, ["b1", "j"], "holder") == "j")     # (j ranks first for it)


@asynccontextmanager
async def j_out_a_moment() -> AsyncIterator[tuple[Node, Node, Node, zmq.asyncio.Socket]]:
    """A holder (a journal, its window one queued task; tasks held running, not run,
    and not shed), b1 and j met, j suspected at the holder for a moment (its copies go
    to b1 meanwhile, ``BackupChoice.missed``); one task running there and one queued:
    the next plain task goes to disk. A DEALER to the holder."""
    with tempfile.TemporaryDirectory() as data:
        async with running_node(app, name="holder", autorun=False, concurrency=1,
                                journal=True, data_dir=data, queue_memory=1) as h, \
                running_node(app, name="b1", autorun=False, peers=[h.address]) as b1, \
                running_node(app, name="j", autorun=False, peers=[h.address]) as j, \
                dealer(h) as s:
            h.shedder.shed = lambda now: 0          # (its queue stays: no peer takes it)
            await met((h, b1, j), "the three to meet")
            m = h.membership.member("j")
            assert m is not None
            h.membership.handle("x", Gossip("x", [[UPDATE_SUSPECT, "j", m.incarnation, "", "x"]]))
            _check(h)
            assert h.replicas.choice.missed == {"j"}
            for busy in ("busy-0", "busy-1"):
                await s.send(submit(busy))
            await until(lambda: h.pool.queued == 1, "a task to be queued")
            yield h, b1, j, s


def _check(h: Node) -> None:
    """The holder's membership check (each second) now."""
    h.replicas.choice._alive_at = -1.0
    h.replicas.check_members(time.monotonic())


def test_a_task_going_to_disk_while_its_copy_moves_keeps_the_old_copy_until_the_new_one_is_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A task accepted to go to disk is given its backup b1 while j, which ranks first
    # for it, is out for a moment; j is back before b1 confirmed, so the copy moves to
    # j (CopyBack.back_to). b1 confirms, the owner's ACK goes: until 2026-12 the task
    # went to disk then (Spill.settle) and b1 was told to drop its copy at once, while
    # j had not confirmed its own: one copy for a moment (the disk walk healed it when
    # j did not confirm). It stays in memory now until j has its copy; then b1 drops
    # its own and the task goes to disk.
    monkeypatch.setattr(copy_gates, "COPY_TIMEOUT", 60.0)   # (b1 answers when told)
    tid = _TID

    async def main() -> None:
        async with j_out_a_moment() as (h, b1, j, s):
            at_b1, at_j = _held_back(b1), _held_back(j)
            await s.send(submit(tid))               # to disk, once its copy is confirmed
            await until(lambda: tid in h.spill.candidates and h.replicas.backup_of(tid) == "b1",
                        "the task to wait for b1's confirmation")
            await until(lambda: _state(h, "j") == MemberState.ALIVE, "j to refute")
            _check(h)
            assert h.replicas.backup_of(tid) == "j" and h.replicas.back.moving[tid] == ["b1"]
            await until(lambda: at_j, "the copy to go to j")
            _answer(b1, at_b1)                      # b1 confirms: the owner's ACK goes
            await frames_until(s, lambda got: any(isinstance(f, Ack) and tid in f.task_ids
                                                  for f in got))
            await drain(s)                          # (loop passes: a drop would go)
            assert tid in h.ledger.held and tid in h.spill.candidates
            assert b1.replicas.copies.holder(tid) == "holder"
            _answer(j, at_j)                        # j confirms: b1 drops, the task goes
            await until(lambda: tid not in h.ledger.held and h.spill.on_disk == 1,
                        "the task to go to disk")
            await until(lambda: b1.replicas.copies.holder(tid) is None, "b1 to drop its copy")
            assert j.replicas.copies.holder(tid) == "holder"
            assert h.journal.disk_walk(0, 10)[-1][1:] == (tid, "j")
    run(main())


def test_a_task_read_back_from_disk_keeps_its_old_copy_until_the_new_backup_has_one() -> None:
    # A task went to disk with its copy on b1 (j, which ranks first for it, was out for
    # a moment; back, it is no joiner: the disk walk leaves the row). Read back, it is
    # copied to j: b1 drops its copy once j confirmed. Until 2026-12 b1 was sent the
    # drop with the copy to j (Replicas.read_back): one copy until j confirmed.
    tid = _TID

    async def main() -> None:
        async with j_out_a_moment() as (h, b1, j, s):
            await s.send(submit(tid))
            await until(lambda: h.spill.on_disk == 1 and b1.replicas.copies.holder(tid) == "holder",
                        "the task to go to disk, its copy on b1")
            assert h.journal.disk_walk(0, 10)[-1][1:] == (tid, "b1")
            await until(lambda: _state(h, "j") == MemberState.ALIVE, "j to refute")
            _check(h)
            assert not h.replicas.choice.missed
            at_j = _held_back(j)
            h.pool.finish_running()                 # room in the queue: the task is read back
            await until(lambda: tid in h.ledger.held and at_j, "the task read back, copied to j")
            await drain(s)                          # (loop passes: a drop would go)
            assert h.replicas.backup_of(tid) == "j"
            assert b1.replicas.copies.holder(tid) == "holder"
            _answer(j, at_j)
            await until(lambda: b1.replicas.copies.holder(tid) is None, "b1 to drop its copy")
            assert j.replicas.copies.holder(tid) == "holder" and tid in h.ledger.held
    run(main())
