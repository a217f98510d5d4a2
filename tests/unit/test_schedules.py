"""Schedule maths (mesh.schedules): pure functions of unix time and a zone, as tables.

DST dates used (all 2024):
  Europe/Berlin     spring 03-31 02:00 CET -> 03:00 CEST (01:00 UTC); fall 10-27 03:00 CEST -> 02:00 CET (01:00 UTC)
  America/New_York  spring 03-10 02:00 EST -> 03:00 EDT (07:00 UTC); fall 11-03 02:00 EDT -> 01:00 EST (06:00 UTC)
  Australia/Lord_Howe (30-minute shift, +10:30 / +11:00)
                    fall 04-07 02:00 LHDT -> 01:30 LHST (04-06 15:00 UTC)
                    spring 10-06 02:00 LHST -> 02:30 LHDT (10-05 15:30 UTC)
"""
from __future__ import annotations

import datetime as dt

import pytest

from mesh.clock import FakeClock
from mesh.exceptions import ConfigError
from mesh.schedules import crontab, instant, interval, schedule, solar, to_schedule, zone

BERLIN, NY, LH = zone("Europe/Berlin"), zone("America/New_York"), zone("Australia/Lord_Howe")


def utc(*a: int) -> float:
    return dt.datetime(*a, tzinfo=dt.UTC).timestamp()


def show(ts: list[float]) -> list[str]:
    return [dt.datetime.fromtimestamp(t, dt.UTC).strftime("%m-%d %H:%M") for t in ts]


# (id, schedule, zone, after (UTC), until (UTC), the due times in between (UTC))
TABLE = [
    # Berlin, spring: 02:30 does not exist -> the first real instant after the gap, once
    ("berlin-spring-daily-0230", crontab(minute=30, hour=2), BERLIN,
     utc(2024, 3, 30, 11), utc(2024, 4, 1, 12), [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)]),
    # every 15 min through the gap: 02:00..02:45 and 03:00 are one run at 03:00 CEST
    ("berlin-spring-quarter", crontab(minute="*/15"), BERLIN,
     utc(2024, 3, 31, 0, 40), utc(2024, 3, 31, 1, 20),
     [utc(2024, 3, 31, 0, 45), utc(2024, 3, 31, 1), utc(2024, 3, 31, 1, 15)]),
    # Berlin, fall: 02:30 happens twice; it runs once, at the first
    ("berlin-fall-daily-0230", crontab(minute=30, hour=2), BERLIN,
     utc(2024, 10, 26, 11), utc(2024, 10, 28, 12), [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]),
    # hourly crontab on the fall night: 02:00 once, so two real hours pass until 03:00 CET
    ("berlin-fall-hourly", crontab(minute=0), BERLIN,
     utc(2024, 10, 26, 22, 30), utc(2024, 10, 27, 3, 30),
     [utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3)]),
    # New York, fall: 01:30 EDT once
    ("ny-fall-daily-0130", crontab(minute=30, hour=1), NY,
     utc(2024, 11, 2, 12), utc(2024, 11, 4, 12), [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]),
    # New York, spring: 02:30 -> 03:00 EDT
    ("ny-spring-daily-0230", crontab(minute=30, hour=2), NY,
     utc(2024, 3, 9, 12), utc(2024, 3, 11, 12), [utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30)]),
    # weekdays at 09:00 across the spring weekend: the UTC hour moves
    ("ny-weekdays-0900", crontab(minute=0, hour=9, day_of_week="mon-fri"), NY,
     utc(2024, 3, 8, 0), utc(2024, 3, 12, 0), [utc(2024, 3, 8, 14), utc(2024, 3, 11, 13)]),
    # Lord Howe, spring (30-min gap 02:00-02:30): 02:00, 02:15 and 02:30 are one run
    ("lordhowe-spring-quarter", crontab(minute="*/15"), LH,
     utc(2024, 10, 5, 15), utc(2024, 10, 5, 15, 50),
     [utc(2024, 10, 5, 15, 15), utc(2024, 10, 5, 15, 30), utc(2024, 10, 5, 15, 45)]),
    # Lord Howe, fall (01:30-02:00 twice): the second pass runs nothing
    ("lordhowe-fall-tens", crontab(minute="*/10"), LH,
     utc(2024, 4, 6, 14, 25), utc(2024, 4, 6, 15, 45),
     [utc(2024, 4, 6, 14, 30), utc(2024, 4, 6, 14, 40), utc(2024, 4, 6, 14, 50),
      utc(2024, 4, 6, 15, 30), utc(2024, 4, 6, 15, 40)]),
    ("lordhowe-fall-daily-0145", crontab(minute=45, hour=1), LH,
     utc(2024, 4, 6, 0), utc(2024, 4, 7, 23), [utc(2024, 4, 6, 14, 45), utc(2024, 4, 7, 15, 15)]),
    # Celery's rule: day_of_month AND day_of_week (first Monday of the month)
    ("first-monday", crontab(minute=0, hour=0, day_of_month="1-7", day_of_week="mon"), dt.UTC,
     utc(2024, 1, 2), utc(2024, 4, 2), [utc(2024, 2, 5), utc(2024, 3, 4), utc(2024, 4, 1)]),
    ("sunday-is-0-and-7", crontab(minute=0, hour=12, day_of_week=[0]), dt.UTC,
     utc(2024, 6, 1), utc(2024, 6, 10), [utc(2024, 6, 2, 12), utc(2024, 6, 9, 12)]),
    # intervals are real seconds: DST changes nothing
    ("interval-30min-over-berlin-fall", interval(1800), BERLIN,
     utc(2024, 10, 27, 0, 10), utc(2024, 10, 27, 1, 45),
     [utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 1), utc(2024, 10, 27, 1, 30)]),
    ("interval-anchored", interval(dt.timedelta(minutes=10), anchor=utc(2024, 1, 1, 0, 3)),
     dt.UTC, utc(2024, 5, 5, 10, 0), utc(2024, 5, 5, 10, 30),
     [utc(2024, 5, 5, 10, 3), utc(2024, 5, 5, 10, 13), utc(2024, 5, 5, 10, 23)]),
]


@pytest.mark.parametrize("sched, tz, a, b, expected", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_due_times(sched, tz, a, b, expected) -> None:
    assert show(sched.due_between(a, b, tz)) == show(expected)
    # next_after walks the same runs; last_at_or_before is its mirror
    t = a
    for due in expected:
        t = sched.next_after(t, tz)
        assert show([t]) == show([due])
        assert sched.last_at_or_before(due, tz) == due
        assert sched.last_at_or_before(due - 0.001, tz) != due
    for due, nxt in zip(expected, expected[1:]):
        assert sched.last_at_or_before(nxt - 1, tz) == due


@pytest.mark.parametrize("sched, tz, a, b, expected", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_fake_clock_sees_each_run_once(sched, tz, a, b, expected) -> None:
    """A beat-like loop on a fake clock (steps of a minute, longer over long spans)
    fires each due run once."""
    clock = FakeClock(a)
    step = max(60.0, (b - a) / 2000)
    fired: list[float] = []
    last = a
    while clock.time() < b:
        clock.advance(step)
        due = sched.last_at_or_before(min(clock.time(), b), tz)
        if due is not None and due > last:
            fired.append(due)
            last = due
    assert show(fired) == show(expected)


def test_inside_the_repeated_hour() -> None:
    """At 02:40 CET (the second pass), 02:45 already ran (in the first pass)."""
    t = utc(2024, 10, 27, 1, 40)
    s = crontab(minute=45, hour=2)
    assert s.last_at_or_before(t, BERLIN) == utc(2024, 10, 27, 0, 45)
    assert s.next_after(t, BERLIN) == utc(2024, 10, 28, 1, 45)


def test_instant_rules() -> None:
    assert instant(dt.datetime(2024, 10, 27, 2, 30), BERLIN) == utc(2024, 10, 27, 0, 30)  # first
    assert instant(dt.datetime(2024, 3, 31, 2, 30), BERLIN) == utc(2024, 3, 31, 1)        # gap end
    assert instant(dt.datetime(2024, 10, 6, 2, 10), LH) == utc(2024, 10, 5, 15, 30)       # gap end
    assert instant(dt.datetime(2024, 7, 1, 12), NY) == utc(2024, 7, 1, 16)


def test_interval_edges() -> None:
    s = interval(10)
    assert s.next_after(1000.0) == 1010.0
    assert s.next_after(999.999) == 1000.0
    assert s.last_at_or_before(1000.0) == 1000.0
    assert s.last_at_or_before(1009.999) == 1000.0
    assert schedule is interval
    assert to_schedule(2.5) == interval(2.5)
    assert to_schedule(dt.timedelta(hours=1)) == interval(3600)


@pytest.mark.parametrize("make, message", [
    (lambda: crontab(minute=60), "not a valid schedule"),
    (lambda: crontab(hour="x"), "not a valid schedule"),
    (lambda: crontab(minute="1 2"), "one cron field"),
    (lambda: crontab(minute=True), "must be an int"),
    (lambda: crontab(day_of_month=30, month_of_year=2), "never matches"),
    (lambda: interval(0), "at least"),
    (lambda: interval(-5), "at least"),
    (lambda: interval("10"), "number of seconds"),
    (lambda: zone("Mars/Olympus"), "unknown timezone"),
    (lambda: to_schedule("every day"), "a schedule is"),
])
def test_bad_schedules_say_why(make, message) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_celery_field_forms() -> None:
    assert crontab(minute=[0, 30], hour="9-17/2", day_of_week="MON-fri").expr == \
        "0,30 9-17/2 * * mon-fri"
    assert repr(crontab(hour=3, minute=0)) == "<crontab: 0 3 * * * (m/h/dM/MY/d)>"


def test_a_node_without_crontabs_never_imports_croniter() -> None:
    """croniter (with dateutil) is imported on first use: a node's children are
    forked from it, so every module it imports costs memory three times over."""
    import subprocess
    import sys
    code = ("import sys, mesh.cli.meshnode, mesh.node.node, mesh.schedules as s\n"
            "assert 'croniter' not in sys.modules, 'croniter imported'\n"
            "s.crontab(minute='*/5')\n"
            "assert 'croniter' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- solar (Celery's), by the sunrise equation -------------------------------------------

def _utc(*a: int) -> float:
    return dt.datetime(*a, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("event, lat, lon, after, expected", [
    # published times (timeanddate.com), to the minute
    ("sunrise", 51.5074, -0.1278, _utc(2024, 6, 21), _utc(2024, 6, 21, 3, 43)),     # London
    ("sunset", 51.5074, -0.1278, _utc(2024, 6, 21), _utc(2024, 6, 21, 20, 21)),
    ("solar_noon", 51.5074, -0.1278, _utc(2024, 6, 21), _utc(2024, 6, 21, 12, 2)),
    ("dawn_civil", 51.5074, -0.1278, _utc(2024, 6, 21), _utc(2024, 6, 21, 2, 55)),
    ("dusk_civil", 51.5074, -0.1278, _utc(2024, 6, 21), _utc(2024, 6, 21, 21, 9)),
    ("sunrise", 40.7128, -74.006, _utc(2024, 12, 21), _utc(2024, 12, 21, 12, 17)),  # New York
    ("sunset", 40.7128, -74.006, _utc(2024, 12, 21), _utc(2024, 12, 21, 21, 32)),
    ("sunrise", 35.6762, 139.6503, _utc(2024, 3, 19, 12), _utc(2024, 3, 19, 20, 45)),  # Tokyo
    ("sunrise", -33.8688, 151.2093, _utc(2024, 6, 20, 12), _utc(2024, 6, 20, 20, 59)),  # Sydney
])
def test_solar_events_within_two_minutes(event: str, lat: float, lon: float, after: float,
                                         expected: float) -> None:
    assert abs(solar(event, lat, lon).next_after(after) - expected) <= 120


def test_solar_runs_are_daily_and_consistent() -> None:
    s = solar("sunset", 48.8566, 2.3522)
    a = _utc(2024, 9, 1)
    runs = s.due_between(a, a + 3 * 86400)
    assert len(runs) == 3 and all(80_000 < b - r < 93_000 for r, b in zip(runs, runs[1:]))
    for r in runs:
        assert s.next_after(r - 1) == r and s.last_at_or_before(r) == r
        assert s.last_at_or_before(r - 1) < r - 80_000
    assert to_schedule(s) is s and s == solar("sunset", 48.8566, 2.3522)
    assert s.key() != solar("sunrise", 48.8566, 2.3522).key()


@pytest.mark.parametrize("event, lat, lon, after, expected", [
    # the first day an event is back after a polar day or night (or the summer's weeks
    # without an astronomical dusk), when it happens near midnight; the times are
    # ephem 4.2.1's with Celery's observer (horizon -0:34 or the centre's -6/-12/-18,
    # pressure 0). Taking the sun's declination at noon, and of J2000's equinox, the
    # schedule said the event did not happen that day: its first run a day late.
    ("dusk_astronomical", 51.5074, -0.1278, _utc(2024, 7, 1), _utc(2024, 7, 20, 23, 51)),
    ("sunset", 69.6492, 18.9553, _utc(2024, 7, 10), _utc(2024, 7, 25, 22, 22)),    # Tromsø
    ("sunset", 78.2232, 15.6267, _utc(2024, 8, 1), _utc(2024, 8, 24, 22, 10)),     # Longyearbyen
    ("dusk_civil", 78.2232, 15.6267, _utc(2024, 8, 1), _utc(2024, 9, 7, 22, 16)),
    ("dusk_nautical", 60.1699, 24.9384, _utc(2024, 7, 1), _utc(2024, 8, 1, 22, 4)),  # Helsinki
    ("sunset", -77.846, 166.676, _utc(2024, 2, 1), _utc(2024, 2, 20, 12, 13)),     # McMurdo
])
def test_solar_the_first_day_an_event_is_back(event: str, lat: float, lon: float,
                                              after: float, expected: float) -> None:
    assert abs(solar(event, lat, lon).next_after(after) - expected) <= 300


def test_solar_polar_night_skips_the_days_without_the_event() -> None:
    s = solar("sunrise", 78.2232, 15.6267)                 # Longyearbyen
    first = s.next_after(_utc(2024, 12, 1))
    assert _utc(2025, 2, 10) < first < _utc(2025, 2, 20)   # the first sunrise after the night


@pytest.mark.parametrize("args, says", [
    (("noon", 0, 0), "unknown event 'noon'"),
    (("sunrise", 91, 0), "latitude"),
    (("sunrise", 0, -181), "longitude"),
    (("sunrise", "0", 0), "latitude"),
])
def test_bad_solar_schedules_say_why(args: tuple[object, ...], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        solar(*args)
