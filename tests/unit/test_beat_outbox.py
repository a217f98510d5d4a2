"""The beat's outbox (mesh/node/beat_send.py) over real sockets: when a run held by a
node that left, died, or came back is sent again. The whole path on real nodes is in
tests/integration/test_e2e_beat.py."""
from __future__ import annotations

import asyncio
from typing import Any

import zmq

from mesh.node.beat_send import Outbox, Run
from mesh.wire.protocol import Ack, Moved, Release, encode


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
        out.check(1.0, {"me": ""}, {"a": 10.0})         # "a" left: it finishes its runs
        assert (run.target, run.acked, run.sends) == ("a", True, 1)
        out.check(5.0, {"me": ""})          # forgotten by the membership
        assert (run.target, run.sends) == ("a", 1)
        out.check(11.5, {"me": ""})         # no answer within the grace
        assert run.target == "" and run.sent_at == 11.5     # sent elsewhere (no node: kept)
        assert "t1" in out.runs
    asyncio.run(_scenario(steps))


def test_a_run_held_by_a_node_that_left_waits_that_nodes_own_grace() -> None:
    """A node that left says its own --shutdown-timeout (meta "stop"): its runs are
    waited for its grace, not ours, also once the membership forgot it (before: ours,
    so a run still running on a node with a longer timeout was sent again and ran twice)."""
    async def steps(out: Outbox, run: Run, addr: str, router: zmq.Socket[bytes]) -> None:
        out.check(1.0, {"me": ""}, {"a": 30.0})
        out.check(5.0, {"me": ""})          # forgotten by the membership
        out.check(11.5, {"me": ""})         # past 10 s, within a's 30
        assert (run.target, run.acked, run.sends) == ("a", True, 1)
        out.check(31.5, {"me": ""})         # past a's own
        assert run.target == "" and run.sent_at == 31.5
    asyncio.run(_scenario(steps))


def test_graces_are_kept_for_nodes_holding_runs_only() -> None:
    """A grace was kept for every node ever seen leaving (review20: one entry per
    departed node name, for the node's life); now only while it holds runs of ours."""
    async def steps(out: Outbox, run: Run, addr: str, router: zmq.Socket[bytes]) -> None:
        out.check(1.0, {"me": ""}, {"a": 10.0, **{f"gone-{i}": 10.0 for i in range(100)}})
        out.check(2.0, {"me": ""})          # all forgotten by the membership
        assert out._graces == {"a": 10.0}    # "a" holds our run, the others nothing
        out.check(11.5, {"me": ""})         # a's grace over: the run goes elsewhere
        out.check(12.0, {"me": ""})
        assert out._graces == {}
    asyncio.run(_scenario(steps))


def test_a_node_back_within_the_grace_is_sent_the_run_again() -> None:
    async def steps(out: Outbox, run: Run, addr: str, router: zmq.Socket[bytes]) -> None:
        out.check(1.0, {"me": ""}, {"a": 10.0})
        out.check(3.0, {"me": "", "a": addr})    # restarted under its name
        assert (run.target, run.acked, run.sent_at) == ("a", False, 3.0)
        assert await asyncio.to_thread(_received, router) == 1      # same id, same node
    asyncio.run(_scenario(steps))


def test_a_run_held_by_a_node_that_died_is_sent_again_at_once() -> None:
    async def steps(out: Outbox, run: Run, addr: str, router: zmq.Socket[bytes]) -> None:
        out.check(1.0, {"me": ""})
        assert run.target == "" and run.sent_at == 1.0
    asyncio.run(_scenario(steps))


def test_a_run_pointed_back_at_a_node_that_gave_it_back_goes_to_another() -> None:
    """a handed the run to b; b, stopping, gives it back; a, asked again, points at b
    again (its record of the handoff): the run goes to c, not round a and b (a CI run
    sent it round that loop 1,000 times a second until b was gone)."""
    async def run_it() -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        routers, addrs = {}, {}
        for name in "abc":
            r: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
            r.setsockopt(zmq.LINGER, 0)
            addrs[name] = f"tcp://127.0.0.1:{r.bind_to_random_port('tcp://127.0.0.1')}"
            routers[name] = r
        loop = asyncio.get_running_loop()

        def pick(_tid: str, avoid: set[str]) -> tuple[str, str] | None:
            name = next((n for n in "abc" if n not in avoid), None)
            return None if name is None else (name, addrs[name])
        out = Outbox(ctx, "me", pick, lambda *_: None, loop.create_task)
        sent: list[str] = []             # where the run's frame went, in order
        replies: dict[str, Any] = {"a": Moved(["t1"], "a", addrs["b"], "b", "shed"),
                                   "b": Release(["t1"], "b", "node is shutting down"),
                                   "c": Ack(["t1"], "c")}
        try:
            out.check(0.0, {"me": "", **addrs})
            assert out.send(Run("t1", "tick", 0.0, b"frame"), 0.0)
            deadline = loop.time() + 3.0
            while loop.time() < deadline and len(sent) < 20:
                for name, r in routers.items():
                    while r.poll(0):
                        ident, frame = r.recv_multipart()
                        if frame == b"frame":
                            sent.append(name)
                            r.send_multipart([ident, encode(replies[name])])
                await asyncio.sleep(0.005)
            assert sent == ["a", "b", "c"], sent
            run = out.runs["t1"]
            assert (run.target, run.acked) == ("c", True)
        finally:
            out.close()
            for _ in range(50):
                if all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task()):
                    break
                await asyncio.sleep(0.01)
            for r in routers.values():
                r.close()
            ctx.term()
    asyncio.run(run_it())
