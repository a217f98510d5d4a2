"""Rate limit notation and the token bucket (pure logic, fake times)."""
from __future__ import annotations

import pytest

from mesh.exceptions import ConfigError
from mesh.ratelimit import TokenBucket, parse_rate


@pytest.mark.parametrize("text, per_s", [
    ("10/s", 10.0), ("120/m", 2.0), ("3600/h", 1.0), ("5", 5.0), (2, 2.0), (0.5, 0.5),
    (" 30/m ", 0.5), ("1/min", 1 / 60), (None, None), ("", None), (0, None), ("0/s", None),
])
def test_parse_rate(text: object, per_s: float | None) -> None:
    got = parse_rate(text)  # type: ignore[arg-type]
    assert got == pytest.approx(per_s) if per_s is not None else got is None


@pytest.mark.parametrize("bad", ["fast", "10/d", "-1/s", True, [1], "nan", "inf"])
def test_bad_rates_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError):
        parse_rate(bad)  # type: ignore[arg-type]


def test_a_bucket_spaces_starts_by_its_rate() -> None:
    b = TokenBucket(rate=2.0)          # one start every 0.5 s
    assert b.take(100.0) == 0.0
    assert b.take(100.5) == 0.0
    assert b.take(100.75) == pytest.approx(0.25)    # reserved for 101.0


def test_callers_at_once_get_successive_reservations() -> None:
    b = TokenBucket(rate=4.0)
    waits = [b.take(10.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert b.take(11.0) == pytest.approx(0.25)        # after the reserved ones


def test_an_idle_bucket_fills_only_up_to_its_capacity() -> None:
    b = TokenBucket(rate=1.0, capacity=3.0)
    b.take(0.0)
    starts = [b.take(1000.0) for _ in range(4)]
    assert starts[:3] == [0.0, 0.0, 0.0] and starts[3] > 0


def test_a_backlog_is_spread_at_the_rate() -> None:
    b = TokenBucket(rate=10.0)
    waits = [b.take(0.0) for _ in range(600)]
    assert waits[-1] == pytest.approx(59.9)
    assert all(later > earlier for earlier, later in zip(waits[1:], waits[2:]))
