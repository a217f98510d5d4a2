"""The autoscaling policy as a table (mesh/node/autoscale.py: decide is a pure function
of one sample), and the autoscaler component driving an in-process node's pool with
the time passed in."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from mesh import Mesh, testing
from mesh.node.autoscale import Autoscaler, PoolSample, decide
from mesh.testing import running_node

KEEP = 30.0   # keep-alive in the table below


def sample(queued: int = 0, busy: int = 0, workers: int = 2, mn: int = 1, mx: int = 8,
           cpu: float = 10.0, idle_for: float | None = None) -> PoolSample:
    now = 1000.0
    return PoolSample(queued, busy, workers, mn, mx, cpu,
                      None if idle_for is None else now - idle_for, now)


@pytest.mark.parametrize(("s", "expected", "why"), [
    # grow while tasks wait and CPU allows
    (sample(queued=3, busy=2, workers=2), 5, "every waiting task gets a worker"),
    (sample(queued=30, busy=2, workers=2), 8, "never beyond max"),
    (sample(queued=1, busy=8, workers=8), 8, "already at max"),
    (sample(queued=3, busy=2, workers=2, cpu=95.0), 2, "CPU over 90%: no growth"),
    (sample(queued=3, busy=2, workers=2, cpu=89.9), 5, "CPU just under the limit"),
    (sample(queued=1, busy=1, workers=4), 4, "waiting but workers are free: no shrink either"),
    # shrink after the keep-alive with spare workers
    (sample(busy=1, workers=6, idle_for=KEEP), 1, "shrink to what is in use"),
    (sample(busy=0, workers=6, mn=3, idle_for=KEEP + 100), 3, "never below min"),
    (sample(busy=1, workers=6, idle_for=KEEP - 0.1), 6, "spare, but not for long enough"),
    (sample(busy=1, workers=6, idle_for=None), 6, "no spare time recorded"),
    (sample(busy=6, workers=6, idle_for=KEEP), 6, "every worker busy: nothing to shrink"),
    # the range moved
    (sample(workers=12, idle_for=None), 8, "above a lowered max: down to it"),
    (sample(workers=1, mn=3), 3, "below a raised min: up to it"),
    (sample(), 2, "nothing to do"),
])
def test_decide(s: PoolSample, expected: int, why: str) -> None:
    assert decide(s, keepalive=KEEP, max_cpu=90.0) == expected, why


def test_max_cpu_100_never_holds_growth_back() -> None:
    assert decide(sample(queued=4, busy=2, workers=2, cpu=100.0), KEEP, max_cpu=100.0) == 6
    assert decide(sample(queued=4, busy=2, workers=2, cpu=100.0), KEEP, max_cpu=99.0) == 2


def test_idle_for_is_measured_on_the_samples_clock() -> None:
    s = PoolSample(0, 0, 4, 1, 8, 0.0, spare_since=100.0, now=130.0)
    assert s.idle_for == 30.0
    assert decide(s, keepalive=30.0) == 1
    assert decide(s, keepalive=30.1) == 4


# ---- the component, in-process --------------------------------------------------------

app = Mesh("autoscale-fast")


@app.task(name="fast.add")
def add(x: int, y: int) -> int:
    return x + y


async def until(pred: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    return await testing.until(pred, what, timeout, interval=0.002)


def test_the_autoscaler_grows_the_pool_for_waiting_tasks_and_shrinks_it_after_the_keepalive() -> None:
    async def main() -> None:
        async with running_node(app, autorun=False, concurrency=0, autoscale="4,1",
                                autoscale_keepalive=60, autoscale_max_cpu=100) as node:
            scaler = node.autoscaler
            assert isinstance(scaler, Autoscaler) and node.pool.size == 1
            c = Mesh("fast-client", peers=[node.address], mdns=False)
            try:
                results = [c.send_task("fast.add", (i, i)) for i in range(6)]
                await until(lambda: node.pool.busy == 1 and len(node.pool.queue) == 5, "a backlog")
                now = time.monotonic()
                assert scaler.tick(now) == 4                  # grown to the max at once
                assert node.pool.busy == 4 and len(node.pool.queue) == 2
                node.pool.finish_running()                    # type: ignore[attr-defined]
                await until(lambda: node.pool.busy == 2, "the last two running")
                node.pool.finish_running()                    # type: ignore[attr-defined]
                assert [await r for r in results] == [2 * i for i in range(6)]
                assert scaler.tick(now + 1) == 4              # idle: the keep-alive starts
                assert scaler.tick(now + 60) == 4             # 59 s: not yet
                assert scaler.tick(now + 61.5) == 1           # 60.5 s of spare workers
                assert scaler.changes == 2
            finally:
                await asyncio.to_thread(c.close)
    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_policy_that_raises_keeps_the_pool_as_it_is() -> None:
    class Broken(Autoscaler):
        def decide(self, sample: PoolSample) -> int:
            raise RuntimeError("bug in a policy")

    async def main() -> None:
        async with running_node(app, concurrency=0, autoscale="4,2") as node:
            broken = Broken()
            broken.node = node
            broken.range = (4, 2)
            assert broken.tick(time.monotonic()) == 2
    asyncio.run(asyncio.wait_for(main(), 30))
