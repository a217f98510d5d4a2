"""Routing in real node components, in this process (mesh.testing.running_node): a
node refuses another queue's task, clients place by queue and task name, shedding
moves a task only to a peer that takes it, meshes of different names never meet, and
mesh-wide rate limits are shared out. Real meshnode processes:
tests/integration/test_e2e_routing.py."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import zmq
import zmq.asyncio

from mesh import Mesh, testing
from mesh.exceptions import MeshError, NotRegistered
from mesh.node.node import Node
from mesh.testing import running_node
from mesh.testing.node import crash
from mesh.wire import codec
from mesh.wire.protocol import Error, Moved, Result, Submit, decode, encode

T = TypeVar("T")

app = Mesh("routing-fast")
app.conf.task_routes = {"rt.rep*": {"queue": "reports"}}


@app.task(name="rt.where")
def where() -> str:
    return "ran"


@app.task(name="rt.report")
def report() -> str:
    return "report"


@app.task(name="rt.limited", mesh_rate_limit="10/s")
def limited() -> None: ...


other = Mesh("routing-fast-other")


@other.task(name="rt.where")
def where_other() -> str:
    return "other"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(pred: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    return await testing.until(pred, what, timeout, interval=0.005)


@asynccontextmanager
async def client(*nodes: Node, name: str = "routing-fast-client") -> AsyncIterator[Mesh]:
    c = Mesh(name, peers=[n.address for n in nodes], mdns=False)
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


def submit(task_id: str, name: str = "rt.where", queue: str | None = None) -> bytes:
    return encode(Submit(task_id=task_id, name=name, payload=codec.dump_call((), None),
                         headers={} if queue is None else {"queue": queue}))


async def replies(sock: zmq.asyncio.Socket, n: int) -> dict[str, Any]:
    """Task id -> its Error or Result, until ``n`` tasks have one."""
    got: dict[str, Any] = {}
    while len(got) < n:
        for part in await asyncio.wait_for(sock.recv_multipart(), 10):
            msg = decode(part)
            if isinstance(msg, Error) and msg.ref:
                got[msg.ref] = msg
            elif isinstance(msg, Result):
                got[msg.task_id] = msg
    return got


def test_a_node_refuses_a_task_for_a_queue_it_does_not_serve() -> None:
    async def main() -> None:
        async with running_node(app, queues="celery") as node, dealer(node) as s:
            await s.send_multipart([submit("q-1", queue="reports"), submit("q-2", queue="celery"),
                                    submit("q-3", name="rt.report"),     # no header: its routes
                                    submit("q-4")])
            got = await replies(s, 4)
            assert isinstance(got["q-1"], Error) and got["q-1"].code == "queue"
            assert "does not serve queue 'reports'" in got["q-1"].message
            assert "serves celery" in got["q-1"].message
            assert isinstance(got["q-3"], Error) and got["q-3"].code == "queue"
            assert [got[t].state for t in ("q-2", "q-4")] == ["SUCCESS", "SUCCESS"]
            assert node.status()["queues"] == ["celery"]
    run(main())


def test_a_client_sends_each_task_to_a_node_serving_its_queue() -> None:
    async def main() -> None:
        async with running_node(app, name="rt-default", queues="celery") as a, \
                running_node(app, name="rt-reports", queues="reports,extra",
                             peers=[a.address]) as b, client(a) as c:
            await until(lambda: len(a.membership.alive_members()) == 2, "a and b to meet")
            rs = [c.send_task("rt.where") for _ in range(20)]
            rs += [c.send_task("rt.report") for _ in range(20)]    # the client has no routes yet
            rs += [c.send_task("rt.where", queue="extra") for _ in range(20)]
            for r in rs:
                await asyncio.wait_for(r, 20)
            nodes = [r.node for r in rs]
            # the client app has no task_routes: rt.report goes to its default queue too
            assert nodes[:40] == ["rt-default"] * 40 and nodes[40:] == ["rt-reports"] * 20
            c.conf.task_routes = app.conf.task_routes
            assert {await asyncio.wait_for(c.send_task("rt.report"), 20) for _ in range(5)} \
                == {"report"}
            r = c.send_task("rt.report")
            await asyncio.wait_for(r, 20)
            assert r.node == "rt-reports"
            with pytest.raises(MeshError, match="serving queue 'nowhere'") as info:
                await asyncio.wait_for(c.send_task("rt.where", queue="nowhere"), 20)
            assert "rt-default serves queue(s) celery" in str(info.value)
            with pytest.raises(NotRegistered, match="not registered on any alive node") as nr:
                await asyncio.wait_for(c.send_task("rt.nothing"), 20)
            assert "rt-default has no task" in str(nr.value) and "rt-reports" in str(nr.value)
            assert a.pool.ran + b.pool.ran == 66
    run(main())


def test_shedding_moves_a_task_only_to_a_peer_that_takes_it() -> None:
    async def main() -> None:
        async with running_node(app, name="rt-busy", concurrency=1, autorun=False) as a, \
                running_node(app, name="rt-reports-only", concurrency=2, queues="reports",
                             peers=[a.address]) as b, dealer(a) as s:
            await until(lambda: [m for m in a.membership.alive_members(include_self=False)
                                 if m.meta.get("queues") == ["reports"]], "b's queues in a's view")
            await s.send_multipart([submit("s-0"), submit("s-1"), submit("s-2", queue="reports"),
                                    submit("s-3"), submit("s-4", name="rt.report")])
            await until(lambda: len(a.pool.queue) == 4, "four queued behind the running one")
            assert a.shedder.shed(time.time() + 1.0) == 2
            got: list[Any] = []           # handed to b node to node; the owner told
            while not any(isinstance(m, Moved) for m in got):
                got.extend(decode(p) for p in await asyncio.wait_for(s.recv_multipart(), 10))
            moved = next(m for m in got if isinstance(m, Moved))
            assert moved.target == b.address and sorted(moved.task_ids) == ["s-2", "s-4"]
            assert sorted(a.ledger.held) == ["s-0", "s-1", "s-3"]
            assert a.shedder.shed(time.time() + 1.0) == 0        # b takes no celery task
    run(main())


def test_nodes_of_two_meshes_never_become_members() -> None:
    async def main() -> None:
        async with running_node(app, name="rt-mesh-a") as a, \
                running_node(other, name="rt-mesh-b", peers=[a.address]) as b, \
                running_node(app, name="rt-mesh-a2", peers=[a.address, b.address]) as a2:
            await until(lambda: a.gossip.scope.refused and b.gossip.scope.refused,
                        "a to refuse b's join, and b to hear why")
            await until(lambda: len(a.membership.alive_members()) == 2, "a and a2 to meet")
            await asyncio.sleep(0.5)                 # gossip rounds: b must stay out
            assert {m.id for m in a.membership.members()} == {"rt-mesh-a", "rt-mesh-a2"}
            assert {m.id for m in a2.membership.members()} == {"rt-mesh-a2", "rt-mesh-a"}
            assert [m.id for m in b.membership.members()] == ["rt-mesh-b"]
            # a client given both meshes' nodes sends to the mesh of the first that answers
            async with client(b, name="rt-anything") as c:
                assert await asyncio.wait_for(c.send_task("rt.where"), 20) == "other"
                # (the first task may go to the seed and come back before the members
                # answer that names the seed's mesh: wait for that answer)
                await until(lambda: c.client.mesh is not None, "the client to learn its mesh")
                assert c.client.mesh == "routing-fast-other"
            async with client(a, b, name="rt-anything") as c:
                await until(lambda: c.client.mesh is not None, "the client to learn its mesh",)
                mesh = c.client.mesh
                await until(lambda: all(link.serves is not None for link in c.client.links.values()
                                        if link.state == "alive"), "every node heard from")
                ours = {"rt-mesh-a", "rt-mesh-a2"} if mesh == "routing-fast" else {"rt-mesh-b"}
                # (read from this thread while the client's I/O thread sets a link's mesh
                # and then recomputes the nodes it places on: wait for the second)
                await until(lambda: {link.node_id for link in c.client._placeable} <= ours,
                            "only this mesh's nodes to be placeable")
                rs = [c.send_task("rt.where") for _ in range(20)]
                answers = {await asyncio.wait_for(r, 20) for r in rs}
                assert answers == ({"ran"} if mesh == "routing-fast" else {"other"})
    run(main())


def test_a_mesh_wide_rate_limit_is_shared_by_the_nodes_that_run_the_task() -> None:
    async def main() -> None:
        async with running_node(app, name="rl-a") as a, \
                running_node(app, name="rl-b", peers=[a.address]) as b:
            await until(lambda: a.limits.shares.get("rt.limited", (0, 0))[1] == 2
                        and b.limits.shares.get("rt.limited", (0, 0))[1] == 2, "two shares")
            assert a.pool.limits["rt.limited"].rate == pytest.approx(5.0)
            assert b.status()["mesh_rate_limits"] == {
                "rt.limited": {"total": 10.0, "share": 5.0, "nodes": 2}}
            assert "rt.where" not in a.pool.limits
            a.limits.set_node_rate("rt.limited", 2.0)      # the rate_limit command: the lower
            assert a.pool.limits["rt.limited"].rate == pytest.approx(2.0)
            a.limits.set_node_rate("rt.limited", None)
            assert a.pool.limits["rt.limited"].rate == pytest.approx(5.0)
            await crash(a)
            await until(lambda: b.limits.shares["rt.limited"] == (10.0, 1), "b alone: all of it")
            assert b.pool.limits["rt.limited"].rate == pytest.approx(10.0)
    run(main())


def test_task_default_rate_limit_applies_to_tasks_without_their_own() -> None:
    local = Mesh("routing-fast-default")
    local.conf.task_default_rate_limit = "6/m"

    @local.task(name="d.plain")
    def plain() -> None: ...

    @local.task(name="d.own", rate_limit="2/s")
    def own() -> None: ...

    async def main() -> None:
        async with running_node(local) as node:
            assert node.pool.limits["d.plain"].rate == pytest.approx(0.1)
            assert node.pool.limits["d.own"].rate == pytest.approx(2.0)
    run(main())


def test_the_beat_sends_a_run_only_to_a_node_serving_its_queue() -> None:
    async def main() -> None:
        async with running_node(app, name="bt-default", queues="celery") as a, \
                running_node(app, name="bt-reports", queues="reports", peers=[a.address]) as b:
            await until(lambda: len(a.membership.alive_members()) == 2, "a and b to meet")
            beat = a.beat
            assert beat is not None
            assert beat._targets("rt.report") == {"bt-reports": b.address}
            assert beat._targets("rt.where") == {"bt-default": a.address}
            assert beat._targets() == {"bt-default": a.address, "bt-reports": b.address}
    run(main())


def test_a_client_never_links_members_of_another_mesh() -> None:
    """A node that (wrongly, or being older than meshes) lists members of another mesh:
    the client, which joined the mesh of the node that answered, does not link them."""
    import threading

    from mesh.capabilities import meta
    from mesh.wire.protocol import Control, ControlReply

    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    here, foreign = f"tcp://127.0.0.1:{port}", "tcp://127.0.0.1:9"
    payload = [{"node": "scripted", "endpoint": here, "state": "alive", "load": [0, 1, 0],
                "meta": meta("ours", None, ["rt.where"])},
               {"node": "stranger", "endpoint": foreign, "state": "alive", "load": [0, 1, 0],
                "meta": meta("theirs", None, ["rt.where"])}]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not router.poll(50):
                continue
            ident, *frames = router.recv_multipart()
            for f in frames:
                msg = decode(f)
                if isinstance(msg, Control) and msg.command == "members":
                    router.send_multipart([ident, encode(ControlReply(msg.req_id, True,
                                                                      "scripted", payload))])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = Mesh("anything", peers=[here], mdns=False)
    try:
        c.send_task("rt.where")                     # starts the client (never answered)
        assert c.client._members_known.wait(20), "no members answer applied"
        assert c.client.mesh == "ours"
        assert foreign not in c.client.links and set(c.client.links) == {here}
    finally:
        c.close()
        stop.set()
        t.join(5)
        router.close(linger=0)
        ctx.term()
