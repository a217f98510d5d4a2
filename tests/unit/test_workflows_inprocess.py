"""Workflows on a real node in this process (mesh.testing.running_node): chain, group,
chord, callbacks, errors, nesting, in milliseconds. tests/integration/test_e2e_workflows.py
runs the same shapes on real meshnode processes, and kills them."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

from mesh import Mesh, chain, chord, group, signature, states, testing
from mesh.exceptions import ChordError, TaskRevokedError
from mesh.node.node import Node
from mesh.result import ResultSet
from mesh.task import Request
from mesh.testing import running_node

T = TypeVar("T")

app = Mesh("wf-fast")
CALLS: list[Any] = []          # what callbacks saw (tasks run in this process)


@app.task(name="wf.add")
def add(x: int, y: int = 0) -> int:
    return x + y


@app.task(name="wf.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="wf.tsum")
def tsum(xs: list[int]) -> int:
    return sum(xs)


@app.task(name="wf.boom")
def boom(*args: Any) -> None:
    raise ValueError(f"boom {args}")


@app.task(name="wf.record")
def record(*args: Any) -> str:
    CALLS.append(("record", args))
    return "recorded"


@app.task(name="wf.on_error")
def on_error(request: Request, exc: BaseException, traceback: str | None, *extra: Any) -> str:
    CALLS.append(("on_error", request.id, request.task, type(exc).__name__, str(exc), extra))
    return "handled"


@app.task(name="wf.old_style")
def old_style(task_id: str) -> None:
    CALLS.append(("old_style", task_id))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(pred: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    return await testing.until(pred, what, timeout, interval=0.005)


@asynccontextmanager
async def mesh(**options: Any) -> AsyncIterator[tuple[Node, Mesh]]:
    CALLS.clear()
    async with running_node(app, **options) as node:
        c = Mesh("wf-client", peers=[node.address], mdns=False)
        for name, t in app.tasks.items():
            c.tasks[name] = t
        try:
            yield node, c
        finally:
            await asyncio.to_thread(c.close)


async def get(r: Any, timeout: float = 20.0) -> Any:
    return await asyncio.wait_for(asyncio.ensure_future(_aw(r)), timeout)


async def _aw(r: Any) -> Any:
    return await r


def sig(c: Mesh, name: str, *args: Any, **kw: Any) -> Any:
    return signature(name, args, kw, app=c)


def test_chain_passes_each_result_on() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            r = chain(sig(c, "wf.add", 1, 1), sig(c, "wf.add", 10), sig(c, "wf.mul", 3)).apply_async()
            assert await get(r) == 36
            assert await get(r.parent) == 12 and await get(r.parent.parent) == 2
            assert r.parent.parent.parent is None
    run(main())


def test_group_results_in_order_and_group_result_from_its_id() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            g = group(sig(c, "wf.add", i, i) for i in range(20)).apply_async()
            assert await get(g) == [2 * i for i in range(20)]
            again = c.GroupResult(g.id)
            assert await asyncio.to_thread(again.get, 10) == [2 * i for i in range(20)]
            restored = await asyncio.to_thread(lambda: again.results)
            assert [r.id for r in restored] == [r.id for r in g.results]
            # compared as Celery's: by id, or with the id itself; a set of them dedups
            assert again == g and g == g.id and str(g) == g.id and len({g, again}) == 1
            assert g != c.GroupResult("another-group", results=[])
            assert ResultSet(g.results) == ResultSet(list(restored))
            assert ResultSet(g.results) != ResultSet(g.results[::-1])
            assert await asyncio.to_thread(again.ready)
            assert await asyncio.to_thread(again.completed_count) == 20
    run(main())


def test_chord_body_gets_the_header_results() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            r = chord((sig(c, "wf.add", i, i) for i in range(10)), sig(c, "wf.tsum")).apply_async()
            assert await get(r) == 90
            # a group followed by a task is a chord (Celery's rule)
            r2 = (group(sig(c, "wf.add", i) for i in range(5)) | sig(c, "wf.tsum")).apply_async()
            assert await get(r2) == 10
            r3 = chain(group(sig(c, "wf.add", i) for i in range(4)), sig(c, "wf.tsum")).apply_async()
            assert await get(r3) == 6
    run(main())


def test_a_failed_header_task_fails_the_chord_and_the_body_never_runs() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            header = [sig(c, "wf.add", 1), sig(c, "wf.boom", 7), sig(c, "wf.add", 2)]
            body = sig(c, "wf.record").link_error(sig(c, "wf.on_error"))
            r = chord(header, body).apply_async()
            with pytest.raises(ChordError, match=r"Dependency .*wf\.boom.*ValueError\('boom \(7,\)'\)"):
                await get(r)
            await until(lambda: any(x[0] == "on_error" for x in CALLS), "the chord's errback")
            assert not any(x[0] == "record" for x in CALLS)
            err = next(x for x in CALLS if x[0] == "on_error")
            assert err[1] == r.id and err[2] == "wf.record" and err[3] == "ChordError"
    run(main())


def test_a_chain_stops_at_its_first_failure() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            r = chain(sig(c, "wf.add", 1), sig(c, "wf.boom"), sig(c, "wf.record"),
                      sig(c, "wf.record")).on_error(sig(c, "wf.on_error", "extra")).apply_async()
            with pytest.raises(ValueError, match="boom"):
                await get(r)
            with pytest.raises(ValueError, match="boom"):
                await get(r.parent)
            await until(lambda: [x for x in CALLS if x[0] == "on_error"], "the chain's errback")
            assert not any(x[0] == "record" for x in CALLS)
            errs = [x for x in CALLS if x[0] == "on_error"]
            assert len(errs) == 1 and errs[0][2] == "wf.boom" and errs[0][5] == ("extra",)
            assert errs[0][1] == r.parent.parent.id
    run(main())


def test_link_and_link_error_on_a_task() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            r = c.send_task("wf.add", (2, 2), link=sig(c, "wf.record", "x"))
            assert await get(r) == 4
            await until(lambda: ("record", (4, "x")) in CALLS, "the link")
            r2 = sig(c, "wf.boom", 1).apply_async(link=sig(c, "wf.record"),
                                                  link_error=[sig(c, "wf.on_error"),
                                                              sig(c, "wf.old_style")])
            with pytest.raises(ValueError):
                await get(r2)
            await until(lambda: ("old_style", r2.id) in CALLS, "the old-style errback")
            await until(lambda: [x for x in CALLS if x[0] == "on_error"], "the errback")
            e = next(x for x in CALLS if x[0] == "on_error")
            assert e[1:5] == (r2.id, "wf.boom", "ValueError", "boom (1,)")
            assert not any(x[0] == "record" and x[1] != (4, "x") for x in CALLS)
    run(main())


def test_children_have_celerys_shape() -> None:
    """One link: its result; two or more: one GroupResult of them (a group among them
    its own GroupResult, first); then a chain's next step, as a Celery worker applies
    them. A GroupResult made here from results (no coordinator) waits on them."""
    from mesh.result import AsyncResult, GroupResult
    from mesh.workflow.ids import derive

    async def main() -> None:
        async with mesh(journal=True) as (node, c):   # (it keeps each task's Submit)
            one = c.send_task("wf.add", (1, 1), link=sig(c, "wf.add", 10))
            assert await get(one) == 2
            kids = await asyncio.to_thread(lambda: one.children)
            assert [(type(k), k.id) for k in kids] == [(AsyncResult, derive(one.id, "link0"))]
            two = c.send_task("wf.add", (1, 2), link=[sig(c, "wf.add", 10), sig(c, "wf.add", 100)])
            assert await get(two) == 3
            kids = await asyncio.to_thread(lambda: two.children)
            assert [type(k) for k in kids] == [GroupResult]
            assert [k.id for k in kids[0]] == [derive(two.id, "link0"), derive(two.id, "link1")]
            assert await get(kids[0]) == [13, 103]
            assert await asyncio.to_thread(kids[0].get, 10) == [13, 103]
            assert await asyncio.to_thread(kids[0].ready)
            assert await asyncio.to_thread(kids[0].completed_count) == 2
            last = chain(sig(c, "wf.add", 1, 1).set(link=[sig(c, "wf.add", 10),
                                                          group(sig(c, "wf.add", 1)),
                                                          sig(c, "wf.add", 100)]),
                         sig(c, "wf.add", 1000)).apply_async()
            assert await get(last) == 1002
            fresh = AsyncResult(last.parent.id, c)    # looked up: the node's copy of its Submit
            for r in (fresh, last.parent):
                kids = await asyncio.to_thread(lambda r=r: r.children)
                assert [type(k) for k in kids] == [GroupResult, GroupResult, AsyncResult], kids
                assert await get(kids[0]) == [3] and await get(kids[1]) == [12, 102]
                assert kids[2].id == last.id
            assert (await asyncio.to_thread(lambda: last.parent.children))[2] is last
            failed = c.send_task("wf.boom", (1,), link=[sig(c, "wf.add", 1), sig(c, "wf.add", 2)])
            with pytest.raises(ValueError):
                await get(failed)
            assert await asyncio.to_thread(lambda: failed.children) is None
    run(main())


def test_nesting_groups_of_chains_chains_of_chords_chords_in_chord_headers() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            A = lambda *a: sig(c, "wf.add", *a)  # noqa: E731
            g = group(chain(A(i, 1), A(10)) for i in range(4))
            assert await get(g.apply_async()) == [11, 12, 13, 14]
            inner = chord([A(1, 1), A(2, 2)], sig(c, "wf.tsum"))          # 6
            outer = chord([inner, A(3, 3), group(A(1), A(2))], sig(c, "wf.record"))
            r = outer.apply_async()
            assert await get(r) == "recorded"
            await until(lambda: any(x[0] == "record" for x in CALLS), "the outer body")
            assert ("record", ([6, 6, [1, 2]],)) in CALLS
            r2 = chain(A(1, 1), chord([A(1), A(2)], sig(c, "wf.tsum")), A(100)).apply_async()
            assert await get(r2) == 107
            # chain of a single group (celery #8182): waits for the whole group
            r3 = chain(group(A(1, 1), A(2, 2))).apply_async()
            assert await get(r3) == [2, 4]
    run(main())


def test_group_of_chains_with_a_failure_and_chord_in_header_with_on_error() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            A = lambda *a: sig(c, "wf.add", *a)  # noqa: E731
            g = group(chain(A(1, 1), sig(c, "wf.boom")), chain(A(2, 2), A(1))).apply_async()
            with pytest.raises(ValueError, match="boom"):
                await get(g)
            assert await asyncio.to_thread(lambda: g.get(timeout=10, propagate=False)) is not None
            inner = chord([A(1), sig(c, "wf.boom", 5)], sig(c, "wf.tsum"))
            outer = chord([inner, A(2)], sig(c, "wf.record")).on_error(sig(c, "wf.on_error"))
            r = outer.apply_async()
            with pytest.raises(ChordError):
                await get(r)
            await until(lambda: [x for x in CALLS if x[0] == "on_error"], "the outer errback")
            assert not any(x[0] == "record" for x in CALLS)
    run(main())


def test_revoked_member_is_reported_as_such() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            A = lambda *a: sig(c, "wf.add", *a)  # noqa: E731
            doomed = A(1, 1).set(task_id="doomed-member", countdown=30)
            r = chord([A(1), doomed], sig(c, "wf.tsum")).apply_async()
            await until(lambda: "doomed-member" in node.ledger.held, "the member")
            await asyncio.to_thread(c.control.revoke, "doomed-member")
            with pytest.raises(ChordError, match="doomed-member.*revoked"):
                await get(r)
            with pytest.raises(TaskRevokedError):
                await get(c.AsyncResult("doomed-member"))
    run(main())


def test_map_starmap_chunks() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            t = c.tasks["wf.add"]
            assert await get(t.map([1, 2, 3]).apply_async(app=c)) == [1, 2, 3]
            assert await get(t.starmap([(1, 2), (3, 4)]).apply_async(app=c)) == [3, 7]
            assert await get(t.chunks(zip(range(10), range(10)), 3).apply_async(app=c)) == \
                [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    run(main())


def test_signature_is_plain_data_sent_by_name() -> None:
    from mesh.canvas import from_dict
    from mesh.wire import codec
    async def main() -> None:
        async with mesh() as (node, c):
            wf = chord([signature("wf.add", (i, i)) for i in range(3)], signature("wf.tsum"))
            d = codec.loads(codec.dumps(wf.to_dict()))
            back = from_dict(d)
            assert back == wf
            r = back.apply_async(app=c)
            assert await get(r) == 6
            assert states.SUCCESS == await asyncio.to_thread(lambda: r.state)
    run(main())


def test_no_two_steps_of_a_workflow_share_an_id() -> None:
    from mesh.workflow.describe import describe, task_ids
    c = Mesh("ids")
    A = lambda *a: signature("wf.add", a, app=c)  # noqa: E731
    wf = chain(A(1, 1), chord([chain(A(1), A(2)), group(A(3), chord([A(4)], A(5)))], A(6)),
               chord([A(7)], A(8)))
    ids = [i for i, k in task_ids(describe(wf.to_dict(), "root", stubs=False)) if k != "chain"]
    assert len(ids) == len(set(ids)) > 10


def test_events_carry_root_and_parent_ids() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            seen: list[dict[str, Any]] = []
            node.events.listen(seen.append)
            r = chain(sig(c, "wf.add", 1, 1), sig(c, "wf.add", 2), sig(c, "wf.add", 3)).apply_async()
            assert await get(r) == 7
            got = {e["uuid"]: e for e in seen if e["type"] == "task-received"}
            first, second = r.parent.parent.id, r.parent.id
            assert got[first]["root_id"] == r.id and got[first]["parent_id"] is None
            assert got[second]["root_id"] == r.id and got[second]["parent_id"] == first
            assert got[r.id]["root_id"] == r.id and got[r.id]["parent_id"] == second
            plain = await get(sig(c, "wf.add", 5, 5).apply_async())
            assert plain == 10
    run(main())


def test_eager_mode_runs_workflows_here_by_the_same_rules() -> None:
    CALLS.clear()
    c = Mesh("eager-wf")
    c.conf.task_always_eager = True
    for name, t in app.tasks.items():
        c.tasks[name] = t
    A = lambda *a: sig(c, "wf.add", *a)  # noqa: E731
    r = chain(A(1, 1), A(10), sig(c, "wf.mul", 3)).apply_async()
    assert r.get() == 36 and r.parent.get() == 12
    assert group(A(i, i) for i in range(5)).apply_async().get() == [0, 2, 4, 6, 8]
    assert chord([A(i) for i in range(4)], sig(c, "wf.tsum")).apply_async().get() == 6
    bad = chord([A(1), sig(c, "wf.boom", 2)], sig(c, "wf.record")).on_error(sig(c, "wf.on_error"))
    res = bad.apply_async()
    with pytest.raises(ChordError):
        res.get()
    assert not any(x[0] == "record" for x in CALLS)
    assert [x[3] for x in CALLS if x[0] == "on_error"] == ["ChordError"]
    # sig.apply() runs here without the setting too
    c.conf.task_always_eager = False
    assert chain(A(2, 2), A(1)).apply().get() == 5


def test_a_big_group_over_two_nodes_loses_no_member() -> None:
    # its members go to the node rendezvous hashing picks, and a busy node sheds some back:
    # a task handed back before the first handoff was answered must stay (none re-driven)
    async def main() -> None:
        CALLS.clear()
        async with running_node(app, name="wa", concurrency=2) as a, \
                running_node(app, name="wb", concurrency=2, peers=[a.address]) as b:
            await until(lambda: [m for m in a.membership.alive_members(include_self=False)
                                 if m.meta.get("tasks") == a.tasks_digest]
                        and b.membership.alive_members(include_self=False), "the mesh")
            c = Mesh("wf-client2", peers=[a.address], mdns=False)
            try:
                for _ in range(2):
                    g = group(sig(c, "wf.add", i) for i in range(3000)).apply_async()
                    assert await get(g, 60) == list(range(3000))
                assert b.workflows is not None and a.workflows is not None
                assert b.ledger.counts["SUCCESS"] > 1000          # spread over both nodes
                assert a.workflows.counts["redriven"] + b.workflows.counts["redriven"] == 0
            finally:
                await asyncio.to_thread(c.close)
    run(main())


def test_a_task_handed_back_before_its_handoff_is_answered_stays_held() -> None:
    # a hands X to b; b sheds X back to a before a has b's answer; b's answer then comes:
    # a must keep X (and run it), not forget it (then no node would have it)
    from mesh.wire import codec as _codec
    from mesh.wire.protocol import Submit as _Submit
    from mesh.wire.protocol import encode as _encode

    async def main() -> None:
        async with running_node(app, name="ha", concurrency=1, autorun=False) as a:
            a.shedder.shed = lambda now: 0     # X is moved by hand here: b joins, and a
                                               # would shed X to it (b has room) first
            c = Mesh("wf-client3", peers=[a.address], mdns=False)
            try:
                # sent while a is alone (a client spreads its tasks over the nodes it
                # knows): the first runs (held "running"), X waits in the queue
                for i in range(2):
                    c.send_task("wf.add", (i, i), task_id=f"x-{i}")
                await until(lambda: len(a.pool.queue) == 1, "x-1 queued on a")
                async with running_node(app, name="hb", concurrency=1, autorun=False,
                                        peers=[a.address]) as b:
                    await until(lambda: [m for m in a.membership.alive_members(include_self=False)
                                         if m.meta.get("tasks") == a.tasks_digest], "b in a's view")
                    peer = a.membership.alive_members(include_self=False)[0]
                    entry = a.pool.remove("x-1")
                    assert entry is not None
                    a.handoff.hand([entry], "test", peer)                 # a -> b, unanswered yet
                    sub = _Submit(task_id="x-1", name="wf.add", payload=_codec.dump_call((1, 1), {}))
                    assert a.handoff._take(sub, _encode(sub)) is None      # b -> a, "shed back"
                    await until(lambda: "x-1" in b.ledger.held, "b to hold x-1")
                    await until(lambda: not a.handoff._out, "b's answer to a")
                    assert "x-1" in a.ledger.held                          # still a's
                    assert any(e.task_id == "x-1" for _, _, e in a.pool.queue)   # and it will run
            finally:
                await asyncio.to_thread(c.close)
    run(main())


def test_a_revoked_first_step_ends_the_whole_chain() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            await asyncio.to_thread(c.control.revoke, "first-step")
            r = chain(sig(c, "wf.add", 1, 1).set(task_id="first-step"), sig(c, "wf.add", 2),
                      sig(c, "wf.add", 3)).apply_async()
            with pytest.raises(TaskRevokedError):
                await get(r)
            with pytest.raises(TaskRevokedError):
                await get(r.parent)
    run(main())


def test_a_reader_waiting_for_a_step_that_does_not_exist_yet_hears_of_it() -> None:
    # a chord's body exists only once its header is done: a waiter asked before that is
    # told when it ends (not a second later, when it asks again)
    import zmq
    import zmq.asyncio

    from mesh.wire.protocol import Control, Result, decode, encode

    async def main() -> None:
        async with mesh() as (node, c):
            ctx = zmq.asyncio.Context()
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(node.address)
            try:
                await s.send(encode(Control("q1", "result", {"task_id": "later", "watch": True})))
                await asyncio.wait_for(s.recv_multipart(), 10)          # UNKNOWN, for now
                r = sig(c, "wf.add", 2, 3).set(task_id="later").apply_async()
                assert await get(r) == 5
                frames = await asyncio.wait_for(s.recv_multipart(), 5)
                msg = decode(frames[-1])
                assert isinstance(msg, Result) and msg.task_id == "later"
            finally:
                s.close(linger=0)
                ctx.term()
    run(main())


def test_a_steps_result_reaches_its_backup_only_after_the_next_steps_copy() -> None:
    # if the node dies between the two, the backup runs the step again (the chain goes
    # on): it never has the step's result without the next step
    async def main() -> None:
        CALLS.clear()
        async with running_node(app, name="ra", concurrency=1, autorun=False) as a, \
                running_node(app, name="rb", concurrency=1, peers=[a.address]) as b:
            await until(lambda: a.membership.alive_members(include_self=False)
                        and b.membership.alive_members(include_self=False), "the mesh")
            await until(lambda: a.replicas.choice.alive_ids(), "b as a's backup")
            c = Mesh("wf-client4", peers=[a.address], mdns=False)
            import zmq
            import zmq.asyncio

            from mesh.wire import codec as _codec
            from mesh.wire.protocol import Submit, encode
            from mesh.workflow.plan import callbacks, units, wf_header
            ctx = zmq.asyncio.Context()
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(a.address)           # the first step goes to a, nowhere else
            try:
                wf = chain(sig(c, "wf.add", 1, 1).set(task_id="step-1"),
                           sig(c, "wf.add", 1).set(task_id="step-2"))
                us = units(wf.to_dict(compact=True), "step-2")
                headers = {"root_id": "step-2", "wf": wf_header(us[1:], None, callbacks(us[0]))}
                await sock.send(encode(Submit("step-1", "wf.add", _codec.dump_call([1, 1], {}),
                                              headers=headers)))
                r = c.AsyncResult("step-2")
                await until(lambda: "step-1" in {e.task_id for e in a.pool.active()}, "step 1 to run")
                await until(lambda: not a.replicas.pending("step-1"), "step 1's copy on b")
                a.pool.finish_running("step-1")     # step 2 is started, its copy not yet made

                def result_on_its_way() -> bool:
                    r = a.replicas
                    return any("step-1" in batch.results for batch in r._out.values()) or \
                        any("step-1" in sent.batch.results for sent in r._sent.values())
                seen_bad = seen_pending = False
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:        # every loop pass, no sleeping
                    pending = a.replicas.pending("step-2")
                    seen_pending |= pending
                    if pending:
                        seen_bad |= result_on_its_way()
                    elif seen_pending:
                        break
                    await asyncio.sleep(0)
                assert seen_pending            # step 2 started, its copy not yet confirmed...
                assert not seen_bad            # ...and step 1's result waited for it
                await until(lambda: b.journal.get("step-1") is not None, "step 1's result on b")
                a.pool.finish_running()
                assert await get(r) == 3
            finally:
                sock.close(linger=0)
                ctx.term()
                await asyncio.to_thread(c.close)
    run(main())


def test_driving_a_step_again_duplicates_nothing() -> None:
    # a step's end seen twice (its node ran it again after a takeover): the next step's
    # id is known here, so it is not started again
    from mesh.wire import codec as _codec
    from mesh.wire.protocol import Result, Submit, encode
    from mesh.workflow.plan import units, wf_header

    async def main() -> None:
        async with mesh() as (node, c):
            wf = chain(sig(c, "wf.add", 1, 1).set(task_id="d-1"), sig(c, "wf.record").set(task_id="d-2"))
            assert await get(wf.apply_async()) == "recorded"
            us = units(wf.to_dict(compact=True), "d-2")
            msg = Submit("d-1", "wf.add", _codec.dump_call([1, 1], {}),
                         headers={"root_id": "d-2", "wf": wf_header(us[1:], None, {})})
            assert node.workflows is not None
            node.workflows.refused(msg, encode(Result("d-1", "SUCCESS", result=_codec.dumps(2))))
            await asyncio.sleep(0.2)
            assert [x for x in CALLS if x[0] == "record"] == [("record", (2,))]
            assert node.workflows.counts["deduplicated"] == 1
    run(main())


def test_header_results_that_expire_before_the_body_runs_do_not_matter() -> None:
    # celery #5237: with a short result_expires a chord lost its header's results and
    # hung; here the coordinator has the values, whatever the journal keeps
    async def main() -> None:
        CALLS.clear()
        async with running_node(app, concurrency=1, autorun=False, result_expires=1.0) as node:
            c = Mesh("wf-client5", peers=[node.address], mdns=False)
            try:
                header = [sig(c, "wf.add", i, i).set(task_id=f"h-{i}") for i in range(3)]
                r = chord(header, sig(c, "wf.tsum")).apply_async()
                for tid in ("h-0", "h-1"):
                    await until(lambda tid=tid: node.pool.finish_running(tid), f"{tid} to run")
                await until(lambda: node.journal.get("h-1") is not None, "h-1's result")
                expiry = node.by_name["expiry"]
                assert expiry.expire(time.time() + 60) >= 2              # gone from the journal
                assert node.journal.get("h-0") is None and node.journal.get("h-1") is None
                await until(lambda: node.pool.finish_running("h-2"), "h-2 to run")
                await until(lambda: node.pool.finish_running(), "the body to run")
                assert await get(r) == 6
            finally:
                await asyncio.to_thread(c.close)
    run(main())


def test_workflow_records_stay_internal() -> None:
    """A workflow's records (its description, kept under record_id) are results no
    user submitted: no event, no count, no row in the dashboard's history; a lookup
    of one still works (GroupResult from its id)."""
    from mesh.web.history import JournalReader, Query
    from mesh.workflow.ids import record_id

    async def main() -> None:
        async with mesh(journal=True) as (node, c):
            seen: list[dict[str, Any]] = []
            node.events.listen(seen.append)
            r = chain(sig(c, "wf.add", 1, 1), sig(c, "wf.add", 10)).apply_async()
            assert await get(r) == 12
            g = group(sig(c, "wf.add", i, i) for i in range(3)).apply_async()
            assert await get(g) == [0, 2, 4]
            ch = chord((sig(c, "wf.add", i) for i in range(2)), sig(c, "wf.tsum")).apply_async()
            assert await get(ch) == 1
            again = c.GroupResult(g.id)           # read from the group's record
            assert [x.id for x in await asyncio.to_thread(lambda: again.results)] == \
                [x.id for x in g.results]
            assert node.journal.get(record_id(r.id)) is not None
            user = {"wf.add", "wf.tsum"}
            ends = [e for e in seen if e["type"] == "task-succeeded"]
            # 2 chain steps, 3 + 2 members, the body; a group is one task of its own
            assert sorted(e["name"] for e in ends if e["name"] in user) == ["wf.add"] * 7 + ["wf.tsum"]
            assert {e["name"] for e in ends} <= user | {"mesh.group"}
            groups = sum(1 for e in ends if e["name"] == "mesh.group")
            assert node.ledger.counts[states.SUCCESS] == 8 + groups == len(ends)
            node.journal.commit()
            reader = JournalReader(str(node.journal.path), node.name)
            try:
                rows = reader.page(Query())["tasks"]
                assert sorted(t.get("name", "") for t in rows if t.get("name") in user) == \
                    ["wf.add"] * 7 + ["wf.tsum"]
                assert all(t.get("name") in user | {"mesh.group"} for t in rows), rows
                assert reader.summary()["finished"] == {states.SUCCESS: len(rows)}
                assert reader.summary()["open_rows"] == 0
                assert sum(b[1] for b in reader.series(time.time() - 600, 60)) == len(rows)
            finally:
                reader.close()
    run(main())


def test_a_group_whose_member_report_was_lost_asks_where_it_is_after_the_stall() -> None:
    # A member's report can be lost with a node (it ran and reported to a coordinator
    # that died; the report's sender died): after --workflow-stall without a report, the
    # coordinator asks the mesh where its members are and finds the result.
    async def main() -> None:
        async with mesh(workflow_stall=0.5) as (node, c):
            assert node.workflows is not None
            groups = node.workflows.groups
            deliver, lost = groups.deliver, []

            def lose_the_first(gid: str, index: int, *rest: Any) -> None:
                if index == 0 and not lost:
                    lost.append(index)          # this report never arrives
                    return
                deliver(gid, index, *rest)
            groups.deliver = lose_the_first     # type: ignore[method-assign]
            g = group(sig(c, "wf.add", i, i) for i in range(4)).apply_async()
            assert await get(g, 10) == [0, 2, 4, 6]
            assert lost == [0]
    run(main())
