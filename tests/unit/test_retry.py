"""Retry timing (mesh/retry.py): table tests, and jitter bounds with a seeded rng."""
from __future__ import annotations

import random

import pytest

from mesh.retry import backoff_delay


@pytest.mark.parametrize("retries,backoff,backoff_max,default,expected", [
    (0, False, 600, 180, 180.0),        # no backoff: the default delay, every time
    (5, False, 600, 3, 3.0),
    (0, True, 600, 180, 1.0),           # True: 1, 2, 4, 8 ...
    (1, True, 600, 180, 2.0),
    (3, True, 600, 180, 8.0),
    (0, 5, 600, 180, 5.0),              # a number: 5, 10, 20 ...
    (2, 5, 600, 180, 20.0),
    (10, True, 600, 180, 600.0),        # capped by backoff_max
    (9, 2, 100, 180, 100.0),
    (10_000, True, 60, 180, 60.0),      # huge retry counts do not overflow
    (0, 0.5, 600, 180, 0.5),
])
def test_backoff_without_jitter(retries: int, backoff: bool | float, backoff_max: float,
                                default: float, expected: float) -> None:
    assert backoff_delay(retries, backoff=backoff, backoff_max=backoff_max, jitter=False,
                         default_delay=default) == expected


@pytest.mark.parametrize("retries,cap", [(0, 1), (3, 8), (20, 600)])
def test_jitter_is_a_whole_number_between_zero_and_the_delay(retries: int, cap: int) -> None:
    rng = random.Random(42)
    seen = {backoff_delay(retries, backoff=True, jitter=True, rng=rng) for _ in range(2000)}
    assert min(seen) >= 0 and max(seen) <= cap
    assert all(s == int(s) for s in seen)
    assert len(seen) > min(cap, 5)      # it really varies


def test_jitter_does_not_apply_without_backoff() -> None:
    assert backoff_delay(2, backoff=False, jitter=True, default_delay=7) == 7.0


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1)
