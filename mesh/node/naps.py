"""Naps: a node's periodic loops sleep while they have nothing to watch.

A loop that checks something every 0.05 to 0.1 s (shedding, handoffs, the spill's
read back, workflows, beat) only needs those short ticks while there is something
to check: tasks queued, a handoff unanswered, tasks on disk. An idle node woke ~60
times a second for nothing (1.7 % of a core each, measured: docs/performance.md,
round 13), and a test run starts hundreds of nodes. Now each such loop keeps a
:class:`Nap`::

    while True:
        await self.nap.until_busy(bool(self._out), TICK)   # TICK while busy, else a nap
        self._check(time.monotonic())

and the code that gives it something to watch pokes it (``self.nap.poke()``). A
poke does not wake the loop at once: it moves the end of the nap to one ``tick``
from now, the longest the loop waited for its next look before, so work that
comes and goes within a tick (a lone task queued and started at once, a copy
confirmed within a millisecond) costs no look at all, and a busy node pokes at
most once per tick (one attribute test otherwise: cheap on the hot path; a first
version that woke the loop at each poke ran the shedder's look once per task). A
nap ends then, or after ``IDLE_CAP`` s: the cap is a safety net for what no poke
announces (time-based expiries, a membership change), so a loop never looks less
often than that.

Naps, and the loops that look once a second whatever happens (heartbeat, expiry,
the autoscaler, an idle beat: ``await aligned(1.0)``), end on whole multiples of
their period on the loop's clock: they come due together, and the event loop runs
them all in one wake-up rather than one each.

Everything runs on the node's event loop thread: pokes from another thread must go
through ``loop.call_soon_threadsafe``.
"""
from __future__ import annotations

import asyncio
import math

IDLE_CAP = 1.0      # s an idle loop sleeps at most between looks


class Nap:
    """A loop's alarm clock: short ticks while busy, a nap while idle that a poke cuts
    short to one tick."""

    __slots__ = ("_waiter", "_handle", "_tick", "_soon")

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None    # the nap under way
        self._handle: asyncio.TimerHandle | None = None      # when it ends
        self._tick = 0.0
        self._soon = False                                   # poked: ends within a tick

    def poke(self) -> None:
        """There is something to watch now: a napping loop looks within its tick."""
        waiter = self._waiter
        if waiter is None or self._soon:
            return
        self._soon = True
        loop = waiter.get_loop()
        when = loop.time() + self._tick
        handle = self._handle
        if handle is not None:
            if handle.when() <= when:
                return                  # (it ends sooner anyway)
            handle.cancel()
        self._handle = loop.call_at(when, _wake, waiter)

    async def until_busy(self, busy: bool, tick: float, due: float | None = None) -> None:
        """Sleep ``tick`` s if ``busy``; else until the next whole ``IDLE_CAP`` s of the
        loop's clock, or ``due`` s if that is sooner (a loop with a check of its own
        due then), or one ``tick`` after a poke. (No await between the caller's test
        of ``busy`` and the nap's start: a poke cannot be missed.)"""
        if busy:
            await asyncio.sleep(tick)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        when = _next_multiple(now, IDLE_CAP)
        if due is not None:
            when = min(when, now + max(due, tick))
        waiter = loop.create_future()
        self._waiter, self._tick, self._soon = waiter, tick, False
        self._handle = loop.call_at(when, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


async def aligned(period: float) -> None:
    """Sleep until the next whole multiple of ``period`` s on the loop's clock (at most
    ``period`` s): loops that look every second wake together."""
    now = asyncio.get_running_loop().time()
    await asyncio.sleep(_next_multiple(now, period) - now)


def _next_multiple(now: float, period: float) -> float:
    return (math.floor(now / period) + 1) * period
