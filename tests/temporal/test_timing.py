"""When schedules fire (pure): cron in IANA zones across daylight-saving changes, leap days
and month ends, intervals aligned to the epoch, bounds and counts, business hours."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from packetflow.temporal import business_hours, cron, every
from packetflow.temporal.timing import Timing, instant, local, ms


def _times(timing: Timing, start: str, tz: str, count: int) -> list[str]:
    first = ms(local(start, tz))
    return [instant(t, tz).isoformat() for t in timing.times(first, count)]


@pytest.mark.parametrize(
    ("tz", "day", "gap"),
    [
        ("Europe/Berlin", "2026-03-29", "03:00:00+02:00"),  # 02:00 -> 03:00
        ("America/New_York", "2026-03-08", "03:00:00-04:00"),
    ],
)
def test_a_local_time_skipped_by_spring_forward_fires_right_after_the_gap(
    tz: str, day: str, gap: str
) -> None:
    before = (datetime.fromisoformat(day) - timedelta(days=1)).date().isoformat()
    times = _times(cron("30 2 * * *", tz=tz), f"{before} 12:00", tz, 3)
    assert times[0] == f"{day}T{gap}"  # once, not zero times
    assert times[1].endswith("02:30:00" + gap[-6:])  # the next day at 02:30 again


@pytest.mark.parametrize(
    ("tz", "day"), [("Europe/Berlin", "2026-10-25"), ("America/New_York", "2026-11-01")]
)
def test_a_local_time_repeated_by_fall_back_fires_once(tz: str, day: str) -> None:
    before = (datetime.fromisoformat(day) - timedelta(days=1)).date().isoformat()
    times = _times(cron("30 1 * * *", tz=tz), f"{before} 12:00", tz, 3)
    assert [t[:10] for t in times] == [day, *[t[:10] for t in times[1:]]]
    assert len({t[:10] for t in times}) == 3  # three days, not the repeated hour twice


def test_a_cron_more_frequent_than_hourly_follows_real_time_through_fall_back() -> None:
    times = _times(cron("*/30 * * * *", tz="Europe/Berlin"), "2026-10-25 01:50", "Europe/Berlin", 6)
    utc = [datetime.fromisoformat(t).astimezone(UTC) for t in times]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(utc))
    assert sum(t[11:16] == "02:00" for t in times) == 2  # the repeated hour, both times


def test_leap_days_and_month_ends() -> None:
    leap = _times(cron("0 9 29 2 *", tz="UTC"), "2026-01-01 00:00", "UTC", 2)
    assert [t[:10] for t in leap] == ["2028-02-29", "2032-02-29"]
    ends = _times(cron("0 18 L * *", tz="Europe/Berlin"), "2028-01-15 00:00", "Europe/Berlin", 3)
    assert [t[:10] for t in ends] == ["2028-01-31", "2028-02-29", "2028-03-31"]


def test_intervals_keep_their_beat_aligned_to_the_epoch_plus_phase() -> None:
    timing = every(timedelta(hours=6), phase=timedelta(hours=5))
    times = _times(timing, "2026-05-01 00:00", "UTC", 3)
    assert [t[11:16] for t in times] == ["05:00", "11:00", "17:00"]


def test_bounds_and_counts() -> None:
    start = local("2026-05-01 10:00", "UTC")
    timing = every(3600, start=start, end=start + timedelta(hours=5), max_count=4)
    assert len(timing.times(0, 100)) == 4
    assert timing.times(0, 1) == [ms(start)]
    assert every(3600, start=start, end=start + timedelta(hours=2)).times(0, 100) == [
        ms(start + timedelta(hours=h)) for h in range(3)
    ]
    assert timing.next_after(0, fired=4) is None  # its count is used up


def test_business_hours_skip_nights_weekends_and_holidays() -> None:
    hours = business_hours("Europe/Berlin", {"mon-fri": "09:00-12:00,13:00-17:00"},
                           exclude=["2026-12-25"])  # fmt: skip
    timing = cron("0 * * * *", tz="Europe/Berlin", only=hours)
    times = _times(timing, "2026-12-24 15:30", "Europe/Berlin", 4)
    assert times == [
        "2026-12-24T16:00:00+01:00",
        "2026-12-28T09:00:00+01:00",  # the 25th is a holiday, then a weekend
        "2026-12-28T10:00:00+01:00",
        "2026-12-28T11:00:00+01:00",
    ]
    assert not hours.contains(ms(local("2026-12-28 12:30", "Europe/Berlin")))  # lunch


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: cron("0 9 * *", tz="UTC"), "cron '0 9 \\* \\*'"),
        (lambda: cron("0 9 * * *", tz="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (lambda: every(0), "longer than 0"),
        (lambda: business_hours("UTC", {"mon-fri": "9-17"}), "HH:MM-HH:MM"),
        (lambda: business_hours("UTC", {"weekdays": "09:00-17:00"}), "use mon..sun"),
        (lambda: every(60, max_count=0), "max_count must be at least 1"),
    ],
)
def test_a_timing_written_wrong_says_why(make: object, message: str) -> None:
    with pytest.raises((ValueError, ValidationError), match=message):
        make()  # type: ignore[operator]


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    every_s=st.integers(1, 10 * 86400),
    phase_s=st.integers(0, 86400),
    start=st.integers(0, 4_000_000_000_000),
)
def test_interval_times_are_spaced_exactly_and_strictly_after_the_start(
    every_s: int, phase_s: int, start: int
) -> None:
    timing = every(every_s, phase=phase_s)
    times = timing.times(start, 5)
    assert times[0] > start and times[0] - start <= every_s * 1000
    assert all(b - a == every_s * 1000 for a, b in itertools.pairwise(times))
    assert all((t - phase_s * 1000) % (every_s * 1000) == 0 for t in times)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    expr=st.sampled_from(["0 9 * * *", "30 2 * * *", "*/20 * * * *", "0 0 1 * *", "15 3 * * SUN"]),
    tz=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "UTC"]),
    start=st.integers(1_700_000_000_000, 1_900_000_000_000),
)
def test_cron_times_increase_and_each_matches_its_local_fields(
    expr: str, tz: str, start: int
) -> None:
    times = cron(expr, tz=tz).times(start, 6)
    assert times[0] > start
    assert all(a < b for a, b in itertools.pairwise(times))
    minute = expr.split()[0]
    for t in times:
        local_time = instant(t, tz)
        if minute.isdigit() and expr != "30 2 * * *":  # 02:30 may move past a gap
            assert local_time.minute == int(minute)
