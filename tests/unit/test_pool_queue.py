"""The pool's queue as the node's loop reads it: what starts next, in O(k log k)
whatever the backlog (shedding looks at it every 50 ms), and taking tasks out of both
heaps (plain and ``async def`` tasks)."""
from __future__ import annotations

import os
import random
import socket

from mesh import Mesh
from mesh.config import Config
from mesh.node.channel import FrameReader
from mesh.node.ledger import Entry
from mesh.node.pool import Pool
from mesh.node.pool_child import ChildProc

app = Mesh("pool-queue")


@app.task(name="q.plain")
def plain(x: int) -> int:
    return x


@app.task(name="q.coro")
async def coro(x: int) -> int:
    return x


class _Events:
    pass


def _pool() -> Pool:
    config = Config.build(env={}, name="pq", bind="tcp://127.0.0.1:*", mdns=False)
    return Pool(app, config, "pq", _Events(), 1)  # type: ignore[arg-type]


def _fill(pool: Pool, n: int, seed: int) -> list[Entry]:
    rnd = random.Random(seed)
    entries = []
    for i in range(n):
        name = "q.coro" if rnd.random() < 0.3 else "q.plain"
        e = Entry(f"t{i}", name, b"c", b"frame", rnd.choice([0, 0, 0, 5, 9]), None, None, None)
        pool._enqueue(e)
        entries.append(e)
    return entries


def test_head_is_what_would_start_next_across_both_heaps() -> None:
    pool = _pool()
    _fill(pool, 2000, seed=1)
    assert pool.aqueue and pool.squeue
    assert pool.queued == 2000 == len(pool.queue)
    ordered = sorted(pool.queue)
    for k in (0, 1, 2, 7, 64, 500, 2000, 5000):
        assert pool.head(k) == ordered[:k], k


def test_discard_takes_tasks_out_of_the_plain_and_the_async_heap() -> None:
    pool = _pool()
    entries = _fill(pool, 500, seed=2)
    gone = {id(e) for e in entries[::3]}
    assert any(e.name == "q.coro" for e in entries[::3])
    pool.discard(gone)
    left = [e for _, _, e in sorted(pool.queue)]
    assert {id(e) for e in left} == {id(e) for e in entries} - gone
    assert pool.head(10) == sorted(pool.queue)[:10]      # still heaps
    while pool.queued:                                    # and they pop in order
        assert id(pool.take_next()) not in gone


def test_a_dispatch_of_more_frames_than_one_sendmsg_takes_reaches_the_child() -> None:
    """Hundreds of tasks for one child in one dispatch (a pass's async tasks: Ledger.flush
    dispatches once per pass) are more buffers than one sendmsg takes (IOV_MAX): all of
    them reach the child's end of the socketpair, in order, none dropped."""
    pool = _pool()
    mine, theirs = socket.socketpair()
    try:
        mine.setblocking(False)
        child = ChildProc(0, b"c0", os.getpid(), -1, mine, 1000)
        frames = [f"task-{i}".encode() * 3 for i in range(900)]    # 1,800 buffers
        pool._send(child, *frames)
        assert not child.wbuf
        theirs.settimeout(5)
        reader, got = FrameReader(), []
        while len(got) < len(frames):
            got += reader.feed(theirs.recv(1 << 16))
        assert got == frames
    finally:
        mine.close()
        theirs.close()
