"""mesh/node/naps.py: a loop naps while idle and wakes at once when poked."""
from __future__ import annotations

import asyncio
import time

import pytest

from mesh.node import naps
from mesh.node.naps import Nap


def test_a_poke_wakes_a_napping_loop_long_before_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(naps, "IDLE_CAP", 3600.0)

    async def main() -> None:
        nap = Nap()
        waiter = asyncio.create_task(nap.until_busy(False, 0.05))
        await asyncio.sleep(0.05)
        assert not waiter.done()                  # napping: nothing to watch
        nap.poke()
        await asyncio.wait_for(waiter, 10)        # (would nap an hour without the poke)
    asyncio.run(main())


def test_a_poke_ends_the_nap_one_tick_later_not_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # work that comes and goes within a tick (a lone task queued and started at once)
    # must not cost the loop a look each time: a poke cuts the nap to one tick
    monkeypatch.setattr(naps, "IDLE_CAP", 3600.0)

    async def main() -> None:
        nap = Nap()
        waiter = asyncio.create_task(nap.until_busy(False, 0.5))
        await asyncio.sleep(0)
        nap.poke()
        nap.poke()                                # (a second poke changes nothing)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiter.done()
        await asyncio.wait_for(waiter, 10)
    asyncio.run(main())


def test_a_poke_before_the_nap_is_not_kept_for_a_later_idle_spell(monkeypatch: pytest.MonkeyPatch) -> None:
    # the loop tests ``busy`` just before it naps: an old poke must not end that nap
    monkeypatch.setattr(naps, "IDLE_CAP", 3600.0)

    async def main() -> None:
        nap = Nap()
        nap.poke()
        t = time.monotonic()
        await nap.until_busy(False, 0.01, due=0.3)
        assert time.monotonic() - t >= 0.25
    asyncio.run(main())


def test_a_nap_ends_at_the_cap_or_when_a_check_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(naps, "IDLE_CAP", 0.2)

    async def main() -> None:
        nap = Nap()
        await asyncio.wait_for(nap.until_busy(False, 0.01), 5)            # the cap
        monkeypatch.setattr(naps, "IDLE_CAP", 3600.0)
        await asyncio.wait_for(nap.until_busy(False, 0.01, due=0.1), 5)   # due sooner
        await asyncio.wait_for(nap.until_busy(True, 0.01), 5)             # busy: a tick
    asyncio.run(main())
