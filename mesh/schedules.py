"""Schedules for periodic tasks: ``crontab``, ``interval`` (Celery's ``schedule``) and
``solar``.

Every schedule is pure maths on unix time, with time passed in (mesh.clock):

* ``next_after(t, tz)``: the first due time strictly after ``t``;
* ``last_at_or_before(t, tz)``: the latest due time at or before ``t`` (None if none);
* ``due_between(a, b, tz)``: the due times in ``(a, b]``.

``tz`` is a ``zoneinfo.ZoneInfo`` (the app's ``conf.timezone``); intervals ignore it.

Due times are deterministic, so every node computes the same ones and a run's task id
can be derived from (entry name, due time):

* an ``interval`` is due at ``anchor + k * period`` (anchor: unix time 0 unless given),
  so ``interval(10)`` is due at :00, :10, :20 ... of every minute on every node. (Celery
  counts from the last run instead, which differs per beat process.)
* a ``crontab`` is read in wall-clock time of the zone, with these rules at DST changes
  (docs/periodic.md): a wall time that happens twice (the repeated hour, clocks go back)
  is due once, at its first occurrence; a wall time that does not exist (the skipped
  hour, clocks go forward) is due once, at the first real instant after the gap. Several
  wall times mapping to one instant are one run.

Crontab fields follow Celery: day_of_month and day_of_week must both match (cron would
run when either does); 0 or 7 is Sunday; names (mon, jan) work; ints, strings
("*/15", "1-5", "mon-fri") and iterables of ints are accepted. The matching of wall
times is croniter's.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mesh.exceptions import ConfigError

if TYPE_CHECKING:
    from croniter import croniter

UTC = dt.UTC
MIN_PERIOD = 0.1            # s: the shortest interval (a beat cannot honour less)
MAX_DUE_BETWEEN = 100_000   # due_between lists at most this many runs


def _croniter() -> type[croniter]:
    """croniter, imported on first use: with dateutil it is ~0.8 MB of heap a process (x3 with
    two prefork children forked from the node) that a node with no crontab never uses."""
    from croniter import croniter
    return croniter


def zone(name: str | dt.tzinfo | None) -> dt.tzinfo:
    """The zone for a ``conf.timezone`` value (a name like "Europe/Berlin", or a tzinfo)."""
    if name is None:
        return UTC
    if isinstance(name, dt.tzinfo):
        return name
    if not isinstance(name, str) or not name:
        raise ConfigError(f"timezone must be a zone name like 'Europe/Berlin', got {name!r}")
    if name.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # (with sysconfig) for a named zone only
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"unknown timezone {name!r} ({e}); use an IANA name like "
                          "'Europe/Berlin' (install tzdata if the system has no zone files)") from None


class BaseSchedule:
    """What the beat asks of a schedule; every method is pure."""

    def next_after(self, t: float, tz: dt.tzinfo = UTC) -> float:
        raise NotImplementedError

    def last_at_or_before(self, t: float, tz: dt.tzinfo = UTC) -> float | None:
        raise NotImplementedError

    def due_between(self, a: float, b: float, tz: dt.tzinfo = UTC) -> list[float]:
        """The due times in (a, b], oldest first."""
        out: list[float] = []
        t = self.next_after(a, tz)
        while t <= b:
            out.append(t)
            if len(out) >= MAX_DUE_BETWEEN:
                raise ValueError(f"more than {MAX_DUE_BETWEEN} runs between {a} and {b}")
            t = self.next_after(t, tz)
        return out

    def describe(self) -> str:
        """A short text for meshctl beat."""
        return repr(self)

    def key(self) -> str:
        """A stable text that identifies the schedule (for the schedule digest)."""
        return repr(self)


class interval(BaseSchedule):
    """Every ``run_every`` (seconds or a timedelta), due at ``anchor + k * run_every``."""

    def __init__(self, run_every: float | dt.timedelta, anchor: float | dt.datetime = 0.0,
                 relative: bool = False):
        # relative: Celery's schedule(run_every, relative=True) asks for runs "by the
        # clock", which these always are; taken either way (docs/periodic.md)
        if not isinstance(relative, bool):
            raise ConfigError(f"relative must be True or False, got {relative!r}")
        if isinstance(run_every, dt.timedelta):
            period = run_every.total_seconds()
        elif isinstance(run_every, (int, float)) and not isinstance(run_every, bool):
            period = float(run_every)
        else:
            raise ConfigError(f"an interval is a number of seconds or a timedelta, got {run_every!r}")
        if not math.isfinite(period) or period < MIN_PERIOD:
            raise ConfigError(f"an interval must be at least {MIN_PERIOD} s, got {period!r}")
        if isinstance(anchor, dt.datetime):
            if anchor.tzinfo is None:
                raise ConfigError("interval anchor must be an aware datetime (or unix time)")
            anchor = anchor.timestamp()
        if isinstance(anchor, bool) or not isinstance(anchor, (int, float)) or not math.isfinite(anchor):
            raise ConfigError(f"interval anchor must be unix time, got {anchor!r}")
        self.run_every = period
        self.anchor = float(anchor)

    def _k(self, t: float) -> int:
        return math.floor((t - self.anchor) / self.run_every)

    def next_after(self, t: float, tz: dt.tzinfo = UTC) -> float:
        k = self._k(t)
        due = self.anchor + k * self.run_every
        while due <= t:                 # float rounding: step until strictly after
            k += 1
            due = self.anchor + k * self.run_every
        return due

    def last_at_or_before(self, t: float, tz: dt.tzinfo = UTC) -> float | None:
        k = self._k(t) + 1
        due = self.anchor + k * self.run_every
        while due > t:
            k -= 1
            due = self.anchor + k * self.run_every
        return due

    def __repr__(self) -> str:
        anchor = f", anchor={self.anchor:g}" if self.anchor else ""
        return f"<interval: every {self.run_every:g} s{anchor}>"

    def describe(self) -> str:
        return f"every {_seconds_text(self.run_every)}"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, interval) and other.run_every == self.run_every
                and other.anchor == self.anchor)

    def __hash__(self) -> int:
        return hash((self.run_every, self.anchor))


schedule = interval   # Celery's name: schedule(run_every=timedelta(seconds=30))


def _seconds_text(s: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size and s % size == 0:
            return f"{s / size:g} {unit}"
    return f"{s:g} s"


def _field(value: Any, name: str) -> str:
    if isinstance(value, bool):
        raise ConfigError(f"crontab {name} must be an int, a string or a list of ints, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if not text or any(c.isspace() for c in text):
            raise ConfigError(f"crontab {name} {value!r} must be one cron field (no spaces)")
        return text
    if isinstance(value, Iterable):
        items = sorted(value)
        if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise ConfigError(f"crontab {name} as a list must hold ints, got {value!r}")
        return ",".join(str(i) for i in items)
    raise ConfigError(f"crontab {name} must be an int, a string or a list of ints, got {value!r}")


class crontab(BaseSchedule):
    """Celery's crontab, read in the app's zone (``conf.timezone``)."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*"):
        self.minute = _field(minute, "minute")
        self.hour = _field(hour, "hour")
        self.day_of_week = _field(day_of_week, "day_of_week")
        self.day_of_month = _field(day_of_month, "day_of_month")
        self.month_of_year = _field(month_of_year, "month_of_year")
        self.expr = " ".join((self.minute, self.hour, self.day_of_month, self.month_of_year,
                              self.day_of_week))
        if not _croniter().is_valid(self.expr):
            raise ConfigError(f"crontab({self._args()}) is not a valid schedule: cron "
                              f"expression {self.expr!r} (minute hour day_of_month "
                              "month_of_year day_of_week)")
        try:   # some valid-looking expressions never match (Feb 30th): find out now
            _croniter()(self.expr, dt.datetime(2000, 1, 1), day_or=False).get_next(dt.datetime)
        except Exception as e:
            raise ConfigError(f"crontab({self._args()}) never matches: {e}") from None

    def _args(self) -> str:
        return (f"minute={self.minute!r}, hour={self.hour!r}, day_of_week={self.day_of_week!r}, "
                f"day_of_month={self.day_of_month!r}, month_of_year={self.month_of_year!r}")

    def __repr__(self) -> str:
        return f"<crontab: {self.expr} (m/h/dM/MY/d)>"

    def describe(self) -> str:
        return f"crontab {self.expr}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(self.expr)

    # -- wall time <-> instants -----------------------------------------------------------
    def _iter(self, wall: dt.datetime) -> croniter:
        return _croniter()(self.expr, wall, day_or=False)

    def next_after(self, t: float, tz: dt.tzinfo = UTC) -> float:
        it = self._iter(_wall_upper(t, tz))
        while True:
            due = instant(it.get_next(dt.datetime), tz)
            if due > t:
                return due

    def last_at_or_before(self, t: float, tz: dt.tzinfo = UTC) -> float | None:
        it = self._iter(_wall_upper(t, tz) + dt.timedelta(microseconds=1))
        for _ in range(10_000):
            try:
                w = it.get_prev(dt.datetime)
            except Exception:          # croniter gives up far in the past
                return None
            if w.year < 1971:
                return None
            due = instant(w, tz)
            if due <= t:
                return due
        return None


def _wall_upper(t: float, tz: dt.tzinfo) -> dt.datetime:
    """The naive wall time W such that every wall time <= W maps to an instant <= t
    and every wall time > W to an instant > t (under ``instant``'s rules). It is the
    wall time at t, except in the second pass of a repeated hour, where wall times up
    to the end of the repeat already happened (in the first pass)."""
    local = dt.datetime.fromtimestamp(t, tz)
    wall = local.replace(tzinfo=None)
    if local.fold:
        first = wall.replace(tzinfo=tz, fold=0).utcoffset()
        second = local.utcoffset()
        if first is not None and second is not None and first > second:
            wall += first - second
    return wall


def instant(wall: dt.datetime, tz: dt.tzinfo) -> float:
    """The unix time of a naive wall time in ``tz``: its first occurrence if it happens
    twice, the end of the gap if it does not happen at all."""
    first = wall.replace(tzinfo=tz, fold=0)
    t = first.timestamp()
    if dt.datetime.fromtimestamp(t, tz).replace(tzinfo=None) == wall:
        later = wall.replace(tzinfo=tz, fold=1).timestamp()
        return min(t, later)
    # in a gap: fold=1 reads it with the offset after, fold=0 with the one before; the
    # transition lies between. Find it to the second (transitions fall on whole seconds).
    a, b = sorted((wall.replace(tzinfo=tz, fold=1).timestamp(), t))
    off_a = dt.datetime.fromtimestamp(a, tz).utcoffset()
    lo, hi = math.floor(a), math.ceil(b)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == off_a:
            lo = mid
        else:
            hi = mid
    return float(hi)


# solar events: (the sun's altitude at the event, degrees; -1 morning, 0 noon, 1 evening)
SOLAR_EVENTS: dict[str, tuple[float, int]] = {
    "dawn_astronomical": (-18.0, -1), "dawn_nautical": (-12.0, -1), "dawn_civil": (-6.0, -1),
    "sunrise": (-0.833, -1), "solar_noon": (0.0, 0), "sunset": (-0.833, 1),
    "dusk_civil": (-6.0, 1), "dusk_nautical": (-12.0, 1), "dusk_astronomical": (-18.0, 1)}
J2000 = 2451545.0           # the Julian date of 2000-01-01 12:00 UTC
UNIX_JD = 2440587.5         # the Julian date of unix time 0
SOLAR_SEARCH_DAYS = 400     # days looked through for the next event (polar nights)
PRECESSION = math.radians(1.3969713 / 36525.0)   # of the equinox, per day (ephem's
                            # declination is of the date's equinox, not J2000's: 0.1 degree
                            # apart in 2024, a day late on the first day an event is back)
SIN_OBLIQUITY = math.sin(math.radians(23.4397))
SOLAR_PASSES = 4            # the event's time, from the declination at the last guess


def _sun(j: float) -> tuple[float, float]:
    """The sun's mean anomaly and ecliptic longitude (radians), ``j`` days after J2000."""
    m = math.radians((357.5291 + 0.98560028 * j) % 360.0)
    c = 1.9148 * math.sin(m) + 0.0200 * math.sin(2 * m) + 0.0003 * math.sin(3 * m)
    return m, math.radians((math.degrees(m) + c + 180.0 + 102.9372) % 360.0)


class solar(BaseSchedule):
    """Celery's ``solar(event, lat, lon)``: due at a solar event where the given
    latitude and longitude (degrees, north and east positive) are, every day it
    happens: ``sunrise``, ``sunset``, ``solar_noon``, ``dawn_civil``/``dusk_civil``
    (the sun 6 degrees below the horizon), ``_nautical`` (12), ``_astronomical`` (18).
    Computed with the sunrise equation (NOAA's simplified formulae, the declination at
    the event's time and of the date's equinox: within about a minute of Celery's
    ``ephem`` at mid latitudes, a few near the poles), without a dependency; the same
    on every node. A day without the event (polar day or night) has no run."""

    def __init__(self, event: str, lat: float, lon: float, nowfun: Any = None,
                 app: Any = None):
        if event not in SOLAR_EVENTS:
            raise ConfigError(f"solar: unknown event {event!r}; one of "
                              f"{', '.join(SOLAR_EVENTS)}")
        if not isinstance(lat, (int, float)) or not -90 <= lat <= 90:
            raise ConfigError(f"solar: latitude must be from -90 to 90 degrees, got {lat!r}")
        if not isinstance(lon, (int, float)) or not -180 <= lon <= 180:
            raise ConfigError(f"solar: longitude must be from -180 to 180 degrees, got {lon!r}")
        self.event, self.lat, self.lon = event, float(lat), float(lon)

    def at(self, day: int) -> float | None:
        """The event's unix time on day ``day`` (days since 2000-01-01, the solar
        noon of that day where ``lon`` is), or None when it does not happen. The sun's
        declination is taken at the event's time, found in a few passes from noon's:
        taken at noon, the first day of an event after a polar day or night (it
        happens near midnight then) was missed, a day later than ephem's."""
        altitude, side = SOLAR_EVENTS[self.event]
        jstar = day - self.lon / 360.0
        m, ecl = _sun(jstar)
        transit = J2000 + jstar + 0.0053 * math.sin(m) - 0.0069 * math.sin(2 * ecl)
        if side:
            phi = math.radians(self.lat)
            if math.cos(phi) <= 1e-12:
                return None
            cos_w, w, j = 2.0, 0.0, jstar
            for _ in range(SOLAR_PASSES):
                sin_d = math.sin(_sun(j)[1] + PRECESSION * j) * SIN_OBLIQUITY
                cos_w = ((math.sin(math.radians(altitude)) - math.sin(phi) * sin_d)
                         / (math.cos(phi) * math.sqrt(1.0 - sin_d * sin_d)))
                # out of range: the nearest the sun comes to it, at noon or midnight
                w = math.degrees(math.acos(min(1.0, max(-1.0, cos_w))))
                j = jstar + side * w / 360.0
            if not -1.0 <= cos_w <= 1.0:
                return None
            transit += side * w / 360.0
        return round((transit - UNIX_JD) * 86400.0, 3)

    def _day(self, t: float) -> int:
        return math.floor(t / 86400.0 + UNIX_JD - J2000 + self.lon / 360.0)

    def next_after(self, t: float, tz: dt.tzinfo = UTC) -> float:
        first = self._day(t) - 1
        for day in range(first, first + SOLAR_SEARCH_DAYS):
            at = self.at(day)
            if at is not None and at > t:
                return at
        return math.inf             # (the event does not happen there for a year)

    def last_at_or_before(self, t: float, tz: dt.tzinfo = UTC) -> float | None:
        last = self._day(t) + 1
        for day in range(last, last - SOLAR_SEARCH_DAYS, -1):
            at = self.at(day)
            if at is not None and at <= t:
                return at
        return None

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat:g}, longitude {self.lon:g}>"

    def describe(self) -> str:
        return f"solar {self.event} ({self.lat:g}, {self.lon:g})"

    def key(self) -> str:
        return f"solar({self.event!r}, {self.lat!r}, {self.lon!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, solar) and other.key() == self.key()

    def __hash__(self) -> int:
        return hash(self.key())


def to_schedule(value: Any) -> BaseSchedule:
    """A schedule from what Celery accepts: a schedule, seconds, or a timedelta."""
    if isinstance(value, BaseSchedule):
        return value
    if isinstance(value, (int, float, dt.timedelta)) and not isinstance(value, bool):
        return interval(value)
    raise ConfigError(f"a schedule is a crontab, an interval, a number of seconds or a "
                      f"timedelta; got {type(value).__name__} {value!r}")


__all__ = ["BaseSchedule", "crontab", "instant", "interval", "schedule", "solar", "to_schedule",
           "zone"]
