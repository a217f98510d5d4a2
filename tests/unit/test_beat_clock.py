"""The beat and a clock set back while the node runs (Beat.clock_check): in-process,
one Beat with a clock whose wall time the test steps while its monotonic time goes
on. The real nodes' case is tests/integration/test_e2e_beat.py
(test_a_clock_set_back_while_the_nodes_run_reschedules_their_entries)."""
from __future__ import annotations

import logging
import math

import pytest
from test_beat_settle import START, _beat

from mesh.clock import FakeClock
from mesh.node.beat import CLOCK_BACK, Beat


class SteppedClock(FakeClock):
    """A FakeClock whose wall time can be set back (``step``); monotonic time goes on."""

    def __init__(self) -> None:
        super().__init__(START)
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset

    def step(self, by: float) -> None:
        self.offset += by


def _run(b: Beat, clock: SteppedClock, seconds: float) -> None:
    """What Beat.run does, for ``seconds`` of monotonic time in 0.1 s looks."""
    for _ in range(round(seconds / 0.1)):
        now = clock.time()
        b.clock_check(now, clock.monotonic())
        b.tick(now)
        clock.advance(0.1)


def _dues(b: Beat) -> list[float]:
    return [run.due for run in b.outbox.sent]        # type: ignore[union-attr]


def test_a_clock_set_back_fires_on_from_the_current_clock(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = SteppedClock()
    b = _beat("a", "b", clock)          # (b is not a firer: its meta has no schedule)
    _run(b, clock, b.settle + b.hold_max + 3.0)
    fired = _dues(b)
    assert len(fired) >= 3
    with caplog.at_level(logging.WARNING, logger="mesh.beat"):
        clock.step(-300.0)
        stepped = clock.time()
        _run(b, clock, 3.05)
    after = _dues(b)[len(fired):]
    # each run due after the step, once, none before it (no backlog), none twice
    assert after == [math.floor(stepped) + k for k in (1, 2, 3)], (stepped, after)
    said = [r for r in caplog.records if "clock went back" in r.getMessage()]
    assert len(said) == 1 and "went back 300 s" in said[0].getMessage()
    assert b.outbox.shifted == -300.0                 # type: ignore[union-attr]
    assert b.store is not None and b.store.get("tick").due == after[-1]   # type: ignore[union-attr]


def test_a_small_step_back_waits_for_the_clock_without_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = SteppedClock()
    b = _beat("a", "b", clock)
    _run(b, clock, b.settle + b.hold_max + 3.0)
    fired = _dues(b)
    with caplog.at_level(logging.WARNING, logger="mesh.beat"):
        clock.step(-(CLOCK_BACK - 2.0))                  # 8 s back
        _run(b, clock, 12.0)
    after = _dues(b)[len(fired):]
    # the runs already fired are not fired again: the next one is due after the last
    assert after and min(after) > max(fired), (fired, after)
    assert len(after) == len(set(after))
    assert not [r for r in caplog.records if "clock went back" in r.getMessage()]
