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

and the code that gives it something to watch pokes it (``self.nap.poke()``: one
attribute test when already awake, so it is cheap on the hot path). A nap ends at
the poke or after ``IDLE_CAP`` s, whichever comes first: the cap is a safety net
for what no poke announces (time-based expiries, a membership change), so a loop
never looks less often than that.

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
    """A loop's alarm clock: short ticks while busy, a nap until poked while idle."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def poke(self) -> None:
        """There is something to watch now: a napping loop wakes at once."""
        event = self._event
        if not event.is_set():
            event.set()

    async def until_busy(self, busy: bool, tick: float, due: float | None = None) -> None:
        """Sleep ``tick`` s if ``busy``; else until poked, ``IDLE_CAP`` s at most, or
        ``due`` s if that is sooner (a loop with a check of its own due then). (No
        await between the caller's test of ``busy`` and the clear below: a poke
        cannot be missed.)"""
        if busy:
            await asyncio.sleep(tick)
            return
        event = self._event
        event.clear()
        now = asyncio.get_running_loop().time()
        when = _next_multiple(now, IDLE_CAP)
        if due is not None:
            when = min(when, now + max(due, tick))
        try:
            async with asyncio.timeout_at(when):
                await event.wait()
        except TimeoutError:
            pass


async def aligned(period: float) -> None:
    """Sleep until the next whole multiple of ``period`` s on the loop's clock (at most
    ``period`` s): loops that look every second wake together."""
    now = asyncio.get_running_loop().time()
    await asyncio.sleep(_next_multiple(now, period) - now)


def _next_multiple(now: float, period: float) -> float:
    return (math.floor(now / period) + 1) * period
