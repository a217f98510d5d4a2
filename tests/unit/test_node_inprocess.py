"""The node's logic in milliseconds: real components in this process
(mesh.testing.running_node), a solo pool instead of forked children. The same
behaviours have real-process tests in tests/integration; these sit next to them."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import zmq
import zmq.asyncio

from mesh import Mesh, states, testing
from mesh.exceptions import TaskRevokedError
from mesh.node.node import Node
from mesh.testing import running_node
from mesh.testing.node import crash
from mesh.wire import codec
from mesh.wire.protocol import Moved, Release, Result, Submit, decode, encode

T = TypeVar("T")

app = Mesh("fast")


@app.task(name="fast.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="fast.flaky", bind=True, max_retries=5)
def flaky(self: Any, n: int) -> int:
    if self.request.retries < n:
        raise self.retry(countdown=0)
    return int(self.request.retries)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(pred: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    return await testing.until(pred, what, timeout, interval=0.002)


@asynccontextmanager
async def client(*nodes: Node) -> AsyncIterator[Mesh]:
    c = Mesh("fast-client", peers=[n.address for n in nodes], mdns=False)
    try:
        yield c
    finally:
        await asyncio.to_thread(c.close)


@asynccontextmanager
async def dealer(node: Node) -> AsyncIterator[zmq.asyncio.Socket]:
    ctx = zmq.asyncio.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(node.address)
    try:
        yield s
    finally:
        s.close(linger=0)
        ctx.term()


def submit(task_id: str, name: str = "fast.add", args: tuple[Any, ...] = (1, 1)) -> bytes:
    return encode(Submit(task_id=task_id, name=name, payload=codec.dump_call(args, None)))


async def frames_until(sock: zmq.asyncio.Socket, done: Callable[[list[Any]], bool]) -> list[Any]:
    got: list[Any] = []
    while not done(got):
        parts = await asyncio.wait_for(sock.recv_multipart(), 10)
        got.extend(decode(p) for p in parts)
    return got


async def drain(sock: zmq.asyncio.Socket, quiet: float = 0.2) -> list[Any]:
    """What arrives until nothing has for ``quiet`` seconds."""
    got: list[Any] = []
    while await sock.poll(int(quiet * 1000)):
        got.extend(decode(p) for p in await sock.recv_multipart())
    return got


def test_a_retrying_task_runs_again_until_it_succeeds() -> None:
    async def main() -> None:
        async with running_node(app) as node, client(node) as c:
            assert await c.send_task("fast.flaky", (2,)) == 2
            assert node.ledger.counts[states.RETRY] == 2 and not node.ledger.held
    run(main())


def test_a_finished_task_sent_again_is_answered_from_the_in_memory_journal() -> None:
    async def main() -> None:
        async with running_node(app) as node, dealer(node) as s:
            await s.send(submit("t-1", args=(2, 3)))
            first = [m for m in await frames_until(s, lambda g: any(isinstance(m, Result) for m in g))
                     if isinstance(m, Result)][0]
            await s.send(submit("t-1", args=(2, 3)))
            again = await frames_until(s, lambda g: bool(g))
            assert again == [first] and codec.loads(first.result) == 5
            assert node.ledger.counts["answered_from_journal"] == 1 and node.pool.ran == 1
            assert node.by_name["expiry"].expire(time.time() + node.config.result_expires + 1) == 1
            assert node.ledger.task_state(b"x", "t-1", False)["state"] == states.UNKNOWN
    run(main())


def test_revoke_drops_a_queued_task_terminates_a_running_one_and_refuses_it_later() -> None:
    async def main() -> None:
        async with running_node(app, concurrency=1, autorun=False) as node, client(node) as c:
            running = c.send_task("fast.add", (1, 1))
            queued = c.send_task("fast.add", (2, 2))
            await until(lambda: node.pool.busy == 1 and len(node.pool.queue) == 1, "one running, one queued")
            ctl = c.control
            answer = await asyncio.to_thread(ctl.ask, "revoke", {"task_ids": [queued.id]})
            assert answer[node.name]["dropped"] == [queued.id]
            with pytest.raises(TaskRevokedError):
                await queued
            answer = await asyncio.to_thread(ctl.ask, "revoke", {"task_ids": [running.id],
                                                                  "terminate": True})
            assert answer[node.name]["terminated"] == [running.id]
            with pytest.raises(TaskRevokedError, match="terminated"):
                await running
            await asyncio.to_thread(ctl.ask, "revoke", {"task_ids": ["not-sent-yet"]})
            async with client(node) as other:       # revoked ids that arrive later never run
                with pytest.raises(TaskRevokedError):
                    await other.send_task("fast.add", (2, 2), task_id=queued.id)
                with pytest.raises(TaskRevokedError):
                    await other.send_task("fast.add", (3, 3), task_id="not-sent-yet")
            assert node.pool.ran == 0
    run(main())


def test_queued_tasks_are_shed_to_a_peer_with_room() -> None:
    async def main() -> None:
        async with running_node(app, name="busy", concurrency=1, autorun=False) as a, \
                running_node(app, name="free", concurrency=1, peers=[a.address]) as b, \
                dealer(a) as s:
            await until(lambda: [m for m in a.membership.alive_members(include_self=False)
                                 if m.meta.get("tasks") == a.tasks_digest], "b's load in a's view")
            for i in range(5):
                await s.send(submit(f"s-{i}"))
            await until(lambda: len(a.pool.queue) == 4, "four queued behind the running one")
            assert a.shedder.shed(time.time() + 1.0) == 2         # b has room for twice its 1 child
            # node to node: b holds them before a forgets them; the owner is told where
            got = await frames_until(s, lambda g: any(isinstance(m, Moved) for m in g))
            moved = [m for m in got if isinstance(m, Moved)][0]
            assert moved.target == b.address and moved.target_node == "free"
            assert sorted(moved.task_ids) == ["s-1", "s-2"]
            assert not any(isinstance(m, Release) for m in got)
            assert {"s-1", "s-2"} <= set(b.ledger.held) | {t for t in ("s-1", "s-2")
                                                           if b.journal.get(t)}
            assert sorted(a.ledger.held) == ["s-0", "s-3", "s-4"]
            assert a.journal.get("s-1") is None                   # forgotten here
            assert a.shedder.shed(time.time() + 1.0) == 0         # b's room is used until it reports
    run(main())


def test_a_node_stopping_alone_without_a_journal_gives_its_tasks_back() -> None:
    # no peer to hand them to, and no journal to keep them in: the owner gets them back
    async def main() -> None:
        async with running_node(app, concurrency=1, autorun=False, shutdown_timeout=0.05) as a, \
                dealer(a) as s:
            for i in range(3):
                await s.send(submit(f"q-{i}"))
            await until(lambda: len(a.pool.queue) == 2, "two queued")
            a.stop()
            got = await frames_until(s, lambda g: sum(len(m.task_ids) for m in g
                                                      if isinstance(m, Release)) == 3)
            releases = [m for m in got if isinstance(m, Release)]
            assert sorted(t for r in releases for t in r.task_ids) == ["q-0", "q-1", "q-2"]
            assert all("no other node is alive" in r.reason for r in releases)
            assert not any(isinstance(m, Result) for m in got)
            await a.finished()
            assert not a.ledger.held
    run(main())


def test_a_node_stopping_alone_keeps_its_tasks_in_its_journal(tmp_path: Any) -> None:
    async def main() -> None:
        async with running_node(app, concurrency=1, autorun=False, shutdown_timeout=0.05,
                                journal=True, data_dir=str(tmp_path)) as a, dealer(a) as s:
            for i in range(3):
                await s.send(submit(f"k-{i}"))
            await until(lambda: len(a.pool.queue) == 2, "two queued")
            a.stop()
            await a.finished()
            assert sorted(a.ledger.held) == ["k-0", "k-1", "k-2"]     # kept, not given away
            assert not any(isinstance(m, Release) for m in await drain(s))
        async with running_node(app, concurrency=1, journal=True, data_dir=str(tmp_path)) as a2:
            await until(lambda: a2.ledger.counts["SUCCESS"] == 3, "the kept tasks to run")
    run(main())


def test_tasks_held_by_a_node_that_crashes_run_on_another() -> None:
    async def main() -> None:
        async with running_node(app, name="doomed", autorun=False) as a, \
                running_node(app, name="spare", peers=[a.address]) as b, client(a, b) as c:
            await until(lambda: len(a.membership.alive_members()) == 2, "a and b to meet")
            results = [c.send_task("fast.add", (i, i)) for i in range(10)]
            await until(lambda: a.ledger.held and all(
                r._slot is not None and r._slot.state != states.PENDING for r in results),
                "every task acknowledged, some by a")
            held_by_a = len(a.ledger.held)
            await crash(a)
            assert [await asyncio.wait_for(r, 15) for r in results] == [2 * i for i in range(10)]
            assert c.client.failovers >= held_by_a > 0
    run(main())


def test_a_node_alone_does_not_walk_its_held_tasks_looking_for_backups() -> None:
    """Tasks held with one copy ("" backup) look for a backup only once a peer is
    alive: alone, a million queued tasks must not be walked every second."""
    async def main() -> None:
        async with running_node(app, name="alone", concurrency=1, autorun=False) as a, \
                dealer(a) as s:
            for i in range(5):
                await s.send(submit(f"one-{i}"))
            await until(lambda: len(a.ledger.held) == 5, "five held")
            single = a.replicas.by_backup.get("")
            assert single is not None and len(single) == 5
            a.replicas.check_members(time.monotonic())
            assert a.replicas.by_backup.get("") is single        # not taken apart and rebuilt
            # (that they get a backup once a peer is alive: test_e2e_handoff.py)
    run(main())
