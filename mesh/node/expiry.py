"""Expiry: results older than ``result_expires`` leave the journal.

Swept every ``EXPIRE_INTERVAL`` (or every half of ``result_expires`` if that is
shorter), at most ``EXPIRE_BATCH`` results per sweep, so the loop is never held for
long (the results are in finishing order: "nothing to expire" is a one-row read).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from mesh.node.component import Component
from mesh.node.journal import JournalError

if TYPE_CHECKING:
    from mesh.node.node import Node

log = logging.getLogger("mesh.node")

EXPIRE_INTERVAL = 1.0      # s between sweeps of expired results from the journal
EXPIRE_BATCH = 10_000      # results deleted per sweep at most (more than a node finishes per s)


class Expiry(Component):
    name = "expiry"
    requires = ("journal", "front")

    async def start(self, node: "Node") -> None:
        self.node = node
        node.spawn(self._loop(), name="expiry")

    async def _loop(self) -> None:
        interval = min(EXPIRE_INTERVAL, self.node.config.result_expires / 2)
        while True:
            await asyncio.sleep(interval)
            self.expire(time.time())

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
