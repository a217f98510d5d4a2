"""The beat's outbox (mesh/node/beat_send.py) over real sockets: when a run held by a
node that left, died, or came back is sent again. The whole path on real nodes is in
tests/integration/test_e2e_beat.py."""
from __future__ import annotations

import asyncio
from typing import Any

import zmq

from mesh.node.beat_send import Outbox, Run


def _received(router: zmq.Socket[bytes]) -> int:
    n = 0
    while router.poll(200):
        router.recv_multipart()
        n += 1
    return n


async def _scenario(steps: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    router: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    addr = f"tcp://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    # a run goes to "a" unless "a" is to be avoided; then to no node (it stays owned)
    out = Outbox(ctx, "me", lambda _tid, avoid: None if "a" in avoid else ("a", addr),
                 lambda *_: None, loop.create_task)
    try:
        run = Run("t1", "tick", 0.0, b"frame")
        assert out.send(run, 0.0)
        assert await asyncio.to_thread(_received, router) == 1
        run.acked = True                            # as its ACK would
        await steps(out, run, addr, router)
    finally:
        out.close()                      # its sockets close as their readers end
        for _ in range(50):
            if not out.socks and all(t.done() for t in asyncio.all_tasks() if t is not
                                     asyncio.current_task()):
                break
            await asyncio.sleep(0.01)
        router.close()
        ctx.term()


def test_a_run_held_by_a_node_that_left_waits_its_grace_then_goes_elsewhere() -> None:
    async def steps(out: Outbox, run: Run, addr: str, router: zmq.Socket[bytes]) -> None:
        out.check(1.0, {"me": ""}, {"a"}, grace=10.0)         # "a" left: it finishes its runs
        assert (run.target, run.acked, run.sends) == ("a", True, 1)
        out.check(5.0, {"me": ""}, set(), grace=10.0)          # forgotten by the membership
        assert (run.target, run.sends) == ("a", 1)
        out.check(11.5, {"me": ""}, set(), grace=10.0)         # no answer within the grace
        assert run.target == "" and run.sent_at == 11.5     # sent elsewhere (no node: kept)
        assert "t1" in out.runs
    asyncio.run(_scenario(steps))


def test_a_node_back_within_the_grace_is_sent_the_run_again() -> None:
    async def steps(out: Outbox, run: Run, addr: str, router: zmq.Socket[bytes]) -> None:
        out.check(1.0, {"me": ""}, {"a"}, grace=10.0)
        out.check(3.0, {"me": "", "a": addr}, set(), grace=10.0)    # restarted under its name
        assert (run.target, run.acked, run.sent_at) == ("a", False, 3.0)
        assert await asyncio.to_thread(_received, router) == 1      # same id, same node
    asyncio.run(_scenario(steps))


def test_a_run_held_by_a_node_that_died_is_sent_again_at_once() -> None:
    async def steps(out: Outbox, run: Run, addr: str, router: zmq.Socket[bytes]) -> None:
        out.check(1.0, {"me": ""}, set(), grace=10.0)
        assert run.target == "" and run.sent_at == 1.0
    asyncio.run(_scenario(steps))
