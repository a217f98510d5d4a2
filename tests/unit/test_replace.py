"""Task.replace(sig): eager mode, a plain call, and a real node in this process
(mesh.testing.running_node, the solo pool). tests/integration/test_e2e_replace.py runs
it on meshnode processes, with kills."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mesh import Mesh, chain, chord, group, signature, states
from mesh.exceptions import ConfigError, ReplaceNestingError
from mesh.node.node import Node
from mesh.testing import running_node

app = Mesh("replace-fast")
SEEN: list[Any] = []


class Oops(Exception):
    pass


@app.task(name="rp.add")
def add(x: int, y: int = 0) -> int:
    return x + y


@app.task(name="rp.tsum")
def tsum(xs: list[int]) -> int:
    return sum(xs)


@app.task(name="rp.boom")
def boom(x: int) -> None:
    raise Oops(f"boom {x}")


@app.task(name="rp.replaced", bind=True)
def replaced(self: Any, x: int, how: str = "task") -> Any:
    SEEN.append((x, how, self.request.replaced_task_nesting))
    if how == "chain":
        return self.replace(REPLACEMENTS[how](x))      # replace raises: the same
    raise self.replace(REPLACEMENTS[how](x))


REPLACEMENTS: dict[str, Any] = {
    "task": lambda x: add.s(x, 100),
    "chain": lambda x: chain(add.s(x, 1), add.s(10)),
    "group": lambda x: group(add.s(x, i) for i in range(3)),
    "chord": lambda x: chord((add.s(x, i) for i in range(3)), tsum.s()),
    "fail": lambda x: boom.s(x),
    "twice": lambda x: replaced.s(x, "task"),
    "forever": lambda x: replaced.s(x, "forever"),
    "bad": lambda x: 42,                       # not a signature
    "badargs": lambda x: add.s(1, 2, 3),       # add takes two
}


CASES = [("task", 101), ("chain", 13), ("group", [2, 3, 4]), ("chord", 2 + 3 + 4)]


@pytest.mark.parametrize(("how", "value"), CASES)
def test_eager_replace_runs_the_replacement_here_and_its_value_is_the_task_s(
        how: str, value: Any) -> None:
    x = 2 if how != "task" else 1
    r = replaced.apply((x, how))
    assert r.get() == value and r.state == "SUCCESS"


def test_eager_mode_with_task_always_eager_in_a_chain_and_a_failure() -> None:
    app.conf["task_always_eager"] = True
    try:
        assert chain(add.s(1, 1), replaced.s("chain"), add.s(1000)).delay().get() == 1013
        assert replaced.delay(4, "twice").get() == 104
        r = replaced.apply((5, "fail"))
        assert r.state == "FAILURE" and isinstance(r.result, Oops)
        with pytest.raises(Oops):
            r.get()
    finally:
        app.conf["task_always_eager"] = False


def test_eager_nesting_counts_and_ends() -> None:
    SEEN.clear()
    assert replaced.apply((4, "twice")).get() == 104
    assert SEEN == [(4, "twice", 0), (4, "task", 1)]
    r = replaced.apply((4, "forever"))
    assert r.state == "FAILURE" and isinstance(r.result, ReplaceNestingError)
    assert "more than 50 times over" in str(r.result)


def test_replace_in_a_plain_call_or_with_no_signature_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="called directly"):
        replaced(1, "task")
    r = replaced.apply((1, "bad"))
    assert r.state == "FAILURE" and isinstance(r.result, ConfigError)
    assert "takes a signature, chain, group or chord, got int" in str(r.result)
    r = replaced.apply((1, "badargs"))        # Celery's typing, as when it is sent
    assert r.state == "FAILURE" and isinstance(r.result, TypeError)


# -- a node in this process ------------------------------------------------------------

def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def mesh() -> AsyncIterator[tuple[Node, Mesh]]:
    async with running_node(app) as node:
        c = Mesh("replace-client", peers=[node.address], mdns=False)
        try:
            yield node, c
        finally:
            await asyncio.to_thread(c.close)


async def get(r: Any) -> Any:
    return await asyncio.to_thread(r.get, 20)


def S(c: Mesh, name: str, *args: Any) -> Any:
    return signature(name, args, app=c)


def test_on_a_node_the_replacement_s_value_is_the_task_s_and_the_task_ran_once() -> None:
    async def main() -> None:
        async with mesh() as (node, c):
            SEEN.clear()
            rs = [S(c, "rp.replaced", 2 if how != "task" else 1, how).delay() for how, _ in CASES]
            assert [await get(r) for r in rs] == [v for _, v in CASES]
            assert sorted(SEEN) == sorted((2 if h != "task" else 1, h, 0) for h, _ in CASES)
            r = chain(S(c, "rp.add", 1, 1), S(c, "rp.replaced", "group"), S(c, "rp.tsum")).delay()
            assert await get(r) == 2 + 3 + 4
            assert not node.workflows.groups.groups            # every coordinator ended
            with pytest.raises(Oops, match="boom 5"):
                await get(S(c, "rp.replaced", 5, "fail").delay())
            r = S(c, "rp.replaced", 6, "forever").delay()
            with pytest.raises(ReplaceNestingError):
                await get(r)
    run(main())


def test_a_unit_a_finished_step_starts_goes_to_the_pool_in_the_same_loop_pass() -> None:
    # start_unit scheduled the pass's flush after its `return` (never): a chain's next
    # step (no client reply to flush the pass) waited for whatever flushed next, ~0.45 s
    # a step (a chain of three took 0.94 s on one node, 0.06 s with the flush)
    async def main() -> None:
        async with running_node(app, autorun=False) as node:
            u = {"task": "rp.add", "args": [1, 2], "options": {"task_id": "unit-1"}}
            node.workflows.start_unit(u, None, "parent-1", "root-1", [], None)
            assert [e.task_id for e in node.ledger.pending] == ["unit-1"]
            for _ in range(3):
                await asyncio.sleep(0)
            assert not node.ledger.pending
            in_pool = {e.task_id for _, _, e in node.pool.queue} | {e.task_id for e in node.pool.active()}
            assert "unit-1" in in_pool
    run(main())


def test_a_replaced_task_waiting_for_its_replacement_can_be_revoked() -> None:
    from mesh.exceptions import TaskRevokedError
    from mesh.workflow.ids import derive

    async def main() -> None:
        async with running_node(app, autorun=False) as node:
            c = Mesh("replace-client2", peers=[node.address], mdns=False)
            try:
                r = S(c, "rp.replaced", 1, "task").delay()
                await until_true(lambda: node.pool.finish_running(r.id), "the task to run")
                await until_true(lambda: r.id in node.workflows.groups.groups, "its coordinator")
                member = derive(r.id, 0)       # its replacement, queued, not run
                assert member in node.ledger.held and r.id in node.ledger.held
                # not ready (the node's ACK may still be on its way to the client: a CI run)
                state = states.PENDING
                for _ in range(500):
                    state = await asyncio.to_thread(lambda: r.state)
                    if state != states.PENDING:
                        break
                    await asyncio.sleep(0.01)
                assert state == "RECEIVED"
                progress = node.workflows.groups.progress(r.id)
                assert progress["replaced"] is True and progress["size"] == 1
                await asyncio.to_thread(r.revoke)
                with pytest.raises(TaskRevokedError, match="was revoked"):
                    await get(r)
                assert not node.workflows.groups.groups
            finally:
                await asyncio.to_thread(c.close)
    run(main())


async def until_true(pred: Any, what: str) -> Any:
    from mesh import testing
    return await testing.until(pred, what, 10.0)
