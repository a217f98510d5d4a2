"""Expiry: results older than ``result_expires`` leave the journal.

Swept every ``EXPIRE_INTERVAL`` (or every half of ``result_expires`` if that is
shorter), at most ``EXPIRE_BATCH`` results per sweep, so the loop is never held for
long (the results are in finishing order: "nothing to expire" is a one-row read).

The same loop gives memory back once the node has been idle (no task held, none
finished) for ``IDLE_RELEASE`` seconds: the journal's page cache and the free pages
of the C heap (``malloc_trim``), once per idle spell. Measured: a node that had run
100,000 tasks went from 108 to 50 MiB RSS; the next tasks read the pages they need
again (docs/performance.md, "Memory").
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mesh.node.component import Component
from mesh.node.journal import JournalError
from mesh.node.naps import aligned
from mesh.node.pool_child import trim_heap
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")

EXPIRE_INTERVAL = 1.0      # s between sweeps of expired results from the journal
EXPIRE_BATCH = 10_000      # results deleted per sweep at most (more than a node finishes per s)
IDLE_RELEASE = 30.0        # s idle (nothing held, nothing finished) before memory is given back


class Expiry(Component):
    name = "expiry"
    requires = ("journal", "front")

    async def start(self, node: "Node") -> None:
        self.node = node
        self.releases = 0                  # times memory was given back (idle spells)
        self._done = -1                    # tasks finished at the last look
        self._since = time.monotonic()     # idle since (nothing held, nothing finished)
        self._released = False             # in this idle spell
        node.spawn(self._loop(), name="expiry")

    async def _loop(self) -> None:
        interval = min(EXPIRE_INTERVAL, self.node.config.result_expires / 2)
        while True:
            await aligned(interval)              # (with the node's other 1 s looks)
            self.expire(time.time())
            self.release_if_idle(time.monotonic())

    def release_if_idle(self, now: float, idle: float = IDLE_RELEASE) -> bool:
        """Once per idle spell of ``idle`` s: the journal's cache and the C heap's free
        pages go back to the system. True if it did now."""
        node = self.node
        done = node.ledger.processed()
        if done != self._done or node.ledger.held:
            self._done, self._since, self._released = done, now, False
            return False
        if self._released or now - self._since < idle or not node.journal.release_memory():
            return False
        self._released = True
        self.releases += 1
        trim_heap()
        return True

    def expire(self, now: float) -> int:
        """Delete results older than result_expires from the journal; how many."""
        node = self.node
        expires = node.config.result_expires
        total = 0
        try:         # bounded per call, so the loop is never held for long
            total = node.journal.expire(now - expires, EXPIRE_BATCH)
        except JournalError as e:
            log.error("journal: expiring old results failed: %s", e)
            node.ledger.journal_failed(e)        # tasks accepted this pass were rolled back too
        if total:
            log.info("journal: %d result(s) older than %g s expired", total, expires)
        return total
