"""The node <-> child path's per-task shortcuts (docs/performance.md, "Round 7b"):
the child packs a finished task's Result frame without a Result object, and the node
writes what one dispatch gives a child (the task it launches and those it sends ahead)
in one write, in the order the child must read them."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

from mesh import Mesh, states
from mesh.config import Config
from mesh.node.channel import AHEAD_TAG, FrameReader
from mesh.node.child import Child, _result_frame
from mesh.node.ledger import Entry
from mesh.node.pool import Pool
from mesh.node.pool_ahead import SHORT_RUNS
from mesh.node.pool_child import ChildProc
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, decode, encode

app = Mesh("child-path")


@app.task(name="cp.add")
def add(x: int, y: int) -> int:
    return x + y


def test_result_frame_is_encode_of_the_same_result() -> None:
    for state, value, exc, tb, date_done, payload in [
        (states.SUCCESS, codec.dumps(3), None, None, 1.7e9, None),
        (states.FAILURE, None, {"type": "KeyError", "module": "builtins", "message": "'k'",
                                "args": codec.dumps(["k"])}, "Traceback...", 1.7e9, None),
        (states.RETRY, None, None, None, None, codec.dump_call([1], {"y": 2})),
    ]:
        fast = _result_frame("tid-1", state, value, exc, tb, 0.25, "n1", 3, date_done, payload)
        slow = encode(Result(task_id="tid-1", state=state, result=value, exc=exc, traceback=tb,
                             runtime=0.25, node="n1", retries=3, date_done=date_done,
                             payload=payload))
        assert fast == slow
        assert decode(fast) == decode(slow)


def test_a_run_frame_result_decodes_to_what_the_task_returned() -> None:
    config = Config.build(env={}, name="cp", bind="tcp://127.0.0.1:*", mdns=False)
    child = Child(app, config, "cp")
    frame = encode(Submit(task_id="t-9", name="cp.add", payload=codec.dump_call([2, 5], {}),
                          retries=1))
    done, result = child.run_frame(frame)
    res = decode(result)
    assert isinstance(res, Result)
    assert (done.task_id, done.state, done.keep) == ("t-9", states.SUCCESS, True)
    assert (res.task_id, res.state, res.node, res.retries) == ("t-9", states.SUCCESS, "cp", 1)
    assert res.result is not None and codec.loads(res.result) == 7
    assert res.date_done is not None and res.runtime == done.runtime


class _Events:
    def __init__(self) -> None:
        self.started: list[str] = []

    def task_started(self, entry: Entry, pid: int) -> None:
        self.started.append(entry.task_id)


class _CountingPool(Pool):
    """The real pool, counting its writes to each child."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.writes: dict[int, int] = {}

    def _send(self, child: ChildProc, *frames: bytes) -> None:
        self.writes[child.index] = self.writes.get(child.index, 0) + 1
        super()._send(child, *frames)


def test_one_dispatch_writes_each_child_once_launched_task_first() -> None:
    config = Config.build(env={}, name="cp", bind="tcp://127.0.0.1:*", mdns=False)
    events = _Events()
    pool = _CountingPool(app, config, "cp", events, 2)
    pool._short["cp.add"] = SHORT_RUNS           # its runs were short: it may go ahead
    theirs = []
    for i in range(2):
        mine, other = socket.socketpair()
        mine.setblocking(False)
        c = ChildProc(i, f"c{i}".encode(), 10_000 + i, -1, mine)
        c.ready = True
        pool.children[c.ident] = c
        pool.idle.append(c)
        theirs.append(other)
    entries = [Entry(f"t{i}", "cp.add", b"cl", f"frame-{i}".encode(), 0, None, None, None)
               for i in range(12)]
    for e in entries:
        pool.submit(e, dispatch=False)

    async def go() -> None:
        pool.dispatch()
    asyncio.run(go())

    assert pool.writes == {0: 1, 1: 1}           # one write per child for the whole pass
    got: dict[int, list[bytes]] = {}
    for i, sock in enumerate(theirs):
        sock.setblocking(False)
        got[i] = FrameReader().feed(sock.recv(1 << 16))
        sock.close()
    for c in pool.children.values():
        c.sock.close()
    # each child: the task it runs first, then (tag, task) for each task sent ahead
    for i, c in enumerate(pool.children.values()):
        (running,) = c.running.values()
        frames = got[i]
        assert frames[0] == running.frame
        ahead = [e for _, _, e in c.ahead]
        assert ahead and frames[1:] == [f for e in ahead
                                        for f in (AHEAD_TAG + e.task_id.encode(), e.frame)]
    assert sorted(events.started) == sorted(c.entry.task_id for c in pool.children.values()
                                            if c.entry is not None)
    assert pool.queued >= len(pool.children)   # as many left as there are children


@app.task(name="cp.coro")
async def coro(x: int) -> int:           # an async def task: the child has Runners
    return x


def test_a_plain_task_in_a_child_with_async_tasks_is_decoded_once(monkeypatch: Any) -> None:
    import threading

    from mesh.node import child as child_mod
    from mesh.node import child_runners
    from mesh.node.channel import BlockingChannel, pack

    calls: list[int] = []
    real = child_mod.decode

    def counting(frame: bytes, *a: Any) -> Any:
        calls.append(1)
        return real(frame, *a)
    monkeypatch.setattr(child_mod, "decode", counting)
    monkeypatch.setattr(child_runners, "decode", counting)
    config = Config.build(env={}, name="cp", bind="tcp://127.0.0.1:*", mdns=False)
    child = Child(app, config, "cp")
    mine, theirs = socket.socketpair()
    loop = threading.Thread(target=child._loop, args=(BlockingChannel(theirs),), daemon=True)
    loop.start()
    frames: list[bytes] = []
    try:
        for i in range(3):
            mine.sendall(b"".join(pack(encode(Submit(task_id=f"p{i}", name="cp.add",
                                                      payload=codec.dump_call([i, 1], {}))))))
        reader = FrameReader()
        mine.settimeout(30)
        while len(frames) < 6:              # a ChildDone and a Result per task
            frames += reader.feed(mine.recv(1 << 16))
    finally:
        mine.close()                        # the child's loop ends on EOF
        loop.join(30)
        theirs.close()
    results = [decode(f) for f in frames[1::2]]
    assert [(r.task_id, codec.loads(r.result)) for r in results  # type: ignore[attr-defined]
            ] == [("p0", 1), ("p1", 2), ("p2", 3)]
    assert len(calls) == 3                  # one decode per task, not two
