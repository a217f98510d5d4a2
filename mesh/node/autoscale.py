"""Autoscaling: the pool grows while tasks wait and CPU allows, and shrinks back after
an idle keep-alive (``meshnode --autoscale MAX,MIN``; docs/pools.md).

The choice is :func:`decide`, a pure function of one :class:`PoolSample` (queued,
busy, workers, the range, CPU, how long the pool has had spare workers, the clock)
and the policy's two numbers; the ``autoscaler`` component samples the pool every
TICK and applies what it returns. It works with mesh's dispatch, which never
prefetches: a task that waits is a task in the node's queue, and that is what the
pool grows for (Celery's autoscaler cannot see waiting work with prefetch 1 and
acks_late; here the node holds it).

Replace the policy by subclassing :class:`Autoscaler` (keep its name) and overriding
``decide``; ``app.components.add(MyAutoscaler)`` puts it in the built-in's place::

    class MemoryAware(Autoscaler):
        def decide(self, s: PoolSample) -> int:
            target = super().decide(s)
            if psutil.virtual_memory().available < 2**30:   # under 1 GiB free: no growth
                return min(target, s.workers)
            return target

``meshctl control autoscale MAX MIN`` (Celery's ``autoscale`` command) changes the
range at run time, and turns autoscaling on for a node started without it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mesh.node.commands import ControlState, register
from mesh.node.component import Component
from mesh.node.naps import aligned
from mesh.node.procstat import machine_cpu_percent
from mesh.security.text import safe_logger
from mesh.wire.control import AutoscaleArgs, AutoscaleReply, BadArgs

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.autoscale")

TICK = 1.0                  # s between samples (less with a short keep-alive)


@dataclass(frozen=True)
class PoolSample:
    """What the policy sees, sampled once per tick."""
    queued: int               # tasks waiting for a free worker (not eta-scheduled ones)
    busy: int                 # workers running a task
    workers: int              # workers now: children (prefork) or threads (threads pool)
    min: int                  # the range (--autoscale MAX,MIN)
    max: int
    cpu: float                # % of the machine's CPU in use, all cores (0..100)
    spare_since: float | None  # when the pool began to have more workers than work
                              # (busy + queued < workers) without a break; None: it has not
    now: float                # the clock (the same clock as spare_since)

    @property
    def idle_for(self) -> float:
        """Seconds the pool has had spare workers."""
        return 0.0 if self.spare_since is None else max(0.0, self.now - self.spare_since)


def decide(s: PoolSample, keepalive: float = 30.0, max_cpu: float = 90.0) -> int:
    """The number of workers the pool should have.

    - Tasks wait and the machine's CPU is under ``max_cpu`` (100: never a limit):
      grow to busy + queued (every waiting task gets a worker), at most ``max``.
    - The pool has had spare workers for ``keepalive`` seconds: shrink to what is
      in use (busy + queued), at least ``min``.
    - Otherwise keep the size, moved into the range if the range changed.
    """
    want = s.busy + s.queued
    target = s.workers
    if s.queued > 0 and s.workers < s.max and (max_cpu >= 100.0 or s.cpu < max_cpu):
        target = max(s.workers, min(s.max, want))
    elif want < s.workers and s.spare_since is not None and s.idle_for >= keepalive:
        target = want
    return max(s.min, min(s.max, target))


class Autoscaler(Component):
    """The ``autoscaler`` component: samples the pool every tick and resizes it to
    what :meth:`decide` says, while a range is set (``--autoscale`` or the
    ``autoscale`` command). Subclass it and override ``decide`` for another policy."""

    name = "autoscaler"
    requires = ("pool", "control")
    replaceable = True               # an app's subclass with this name takes its place

    def __init__(self) -> None:
        self.range: tuple[int, int] | None = None      # (max, min)
        self.keepalive = 30.0
        self.max_cpu = 90.0
        self.spare_since: float | None = None
        self.last: PoolSample | None = None            # the latest sample (status, tests)
        self.changes = 0                               # resizes made

    async def start(self, node: "Node") -> None:
        self.node = node
        node.autoscaler = self
        cfg = node.config
        self.range = cfg.autoscale_range
        self.keepalive = cfg.autoscale_keepalive
        self.max_cpu = cfg.autoscale_max_cpu
        machine_cpu_percent()                          # the first reading is meaningless
        node.spawn(self._loop(), name="autoscaler")

    def decide(self, sample: PoolSample) -> int:
        """The policy (override it): the number of workers for this sample."""
        return decide(sample, self.keepalive, self.max_cpu)

    async def _loop(self) -> None:
        tick = max(0.05, min(TICK, self.keepalive / 4))
        while True:
            await aligned(tick)                  # (with the node's other 1 s looks)
            if self.range is not None and not self.node.stopping:
                try:
                    self.tick(time.monotonic())
                except Exception:          # never the node's end: try again next tick
                    log.exception("autoscaler: a tick failed")

    def sample(self, now: float) -> PoolSample:
        pool = self.node.pool
        assert self.range is not None
        mx, mn = self.range
        busy, queued = pool.busy, pool.queued
        if busy + queued < pool.size:
            if self.spare_since is None:
                self.spare_since = now
        else:
            self.spare_since = None
        return PoolSample(queued, busy, pool.size, mn, mx, machine_cpu_percent(),
                          self.spare_since, now)

    def tick(self, now: float) -> int:
        """Sample, decide, resize; the pool's size after."""
        pool = self.node.pool
        s = self.last = self.sample(now)
        try:
            target = int(self.decide(s))
        except Exception:
            log.exception("autoscaler: decide() failed; the pool keeps %d workers", pool.size)
            return int(pool.size)
        target = max(s.min, min(s.max, target))       # whatever a policy says, the range holds
        if target != pool.size:
            before = pool.size
            pool.resize(target)
            self.changes += 1
            self.spare_since = None                     # a new size: the keep-alive starts over
            log.info("autoscale: %d -> %d workers (%d busy, %d waiting, CPU %.0f%%)",
                     before, pool.size, s.busy, s.queued, s.cpu)
        return int(pool.size)

    def update(self, mx: int, mn: int) -> AutoscaleReply:
        """A new range (the ``autoscale`` command); the pool moves into it at once."""
        pool = self.node.pool
        if pool.kind == "solo":
            raise BadArgs("the solo pool runs one task at a time: it cannot autoscale")
        self.range = (mx, mn)
        self.spare_since = None
        if pool.size < mn or pool.size > mx:
            pool.resize(max(mn, min(mx, pool.size)))
        log.info("autoscale now max=%d min=%d (%d workers)", mx, mn, pool.size)
        return AutoscaleReply(f"autoscale now max={mx} min={mn}", mx, mn, pool.size)

    def report(self) -> dict[str, Any]:
        """The status fields: the range (None: a fixed pool) and the latest sample."""
        return {"autoscale": list(self.range) if self.range else None,
                "autoscale_sample": dataclasses.asdict(self.last) if self.last else None}


@register("autoscale", "control", AutoscaleArgs, builtin=True)
def autoscale(state: ControlState, req: AutoscaleArgs) -> AutoscaleReply:
    """Set the autoscale range: max and min workers (Celery's autoscale command)."""
    reply: AutoscaleReply = state.node.autoscaler.update(req.max, req.min)
    return reply
