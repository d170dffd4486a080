"""Schedule computation across time zones and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course.config import MIN_CALENDAR_GAP_HOURS
from course.schedule import Rhythm, lesson_due, next_calendar_send, resume_due

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",  # half-hour DST shift
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Chatham",  # +12:45/+13:45
    "Pacific/Kiritimati",  # +14
    "America/St_Johns",  # -03:30/-02:30
]

instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=400, deadline=None)
@given(sent=instants, zone=st.sampled_from(ZONES), hour=st.integers(0, 23))
def test_next_lesson_is_at_the_local_send_hour_after_a_real_gap(
    sent: datetime, zone: str, hour: int
) -> None:
    tz = ZoneInfo(zone)
    due = lesson_due(sent, 1, Rhythm(tz, hour))
    local = due.astimezone(tz)
    # At the send hour, or, on a day when that hour does not exist, when the clocks jump.
    if (local.hour, local.minute) != (hour, 0):
        wall = datetime.combine(local.date(), datetime.min.time()).replace(hour=hour, tzinfo=tz)
        round_trip = wall.astimezone(UTC).astimezone(tz)
        assert (round_trip.hour, round_trip.minute) != (hour, 0), "send hour existed that day"
        assert round_trip == local
    # Never two lessons closer than the minimum gap, never more than about two days apart.
    assert due - sent >= timedelta(hours=MIN_CALENDAR_GAP_HOURS)
    assert due - sent <= timedelta(hours=48 + 2)
    # On the next calendar day, unless the previous one went out too late in the day.
    day_gap = (local.date() - sent.astimezone(tz).date()).days
    assert day_gap in (1, 2)
    if day_gap == 2:
        previous_day_candidate = datetime.combine(
            sent.astimezone(tz).date() + timedelta(days=1), datetime.min.time()
        ).replace(hour=hour, tzinfo=tz)
        assert previous_day_candidate.astimezone(UTC) - sent < timedelta(
            hours=MIN_CALENDAR_GAP_HOURS
        )


@settings(max_examples=300, deadline=None)
@given(after=instants, zone=st.sampled_from(ZONES), hour=st.integers(0, 23))
def test_next_calendar_send_is_the_first_send_hour_at_or_after(
    after: datetime, zone: str, hour: int
) -> None:
    tz = ZoneInfo(zone)
    due = next_calendar_send(after, tz, hour)
    assert due >= after
    assert due - after < timedelta(hours=26)


@pytest.mark.parametrize(
    ("zone", "sent_local", "expected_local"),
    [
        # Europe springs forward on 2026-03-29 (02:00 -> 03:00): 08:00 is still 08:00.
        ("Europe/Berlin", datetime(2026, 3, 28, 8, 0), datetime(2026, 3, 29, 8, 0)),
        # ... and falls back on 2026-10-25.
        ("Europe/Berlin", datetime(2026, 10, 24, 8, 0), datetime(2026, 10, 25, 8, 0)),
        # A send hour inside the spring-forward gap moves to when the clocks jump to.
        ("America/New_York", datetime(2026, 3, 7, 2, 0), datetime(2026, 3, 8, 3, 0)),
        # Sent late at night (after an outage): the next lesson skips tomorrow morning.
        ("UTC", datetime(2026, 5, 1, 23, 0), datetime(2026, 5, 3, 8, 0)),
    ],
)
def test_dst_examples(zone: str, sent_local: datetime, expected_local: datetime) -> None:
    tz = ZoneInfo(zone)
    hour = sent_local.hour if zone != "UTC" else 8
    sent = sent_local.replace(tzinfo=tz).astimezone(UTC)
    due = lesson_due(sent, 1, Rhythm(tz, hour))
    assert due.astimezone(tz).replace(tzinfo=None) == expected_local


def test_dst_days_are_23_and_25_hours_apart() -> None:
    tz = ZoneInfo("Europe/Berlin")
    spring = datetime(2026, 3, 28, 8, 0, tzinfo=tz).astimezone(UTC)
    autumn = datetime(2026, 10, 24, 8, 0, tzinfo=tz).astimezone(UTC)
    assert lesson_due(spring, 1, Rhythm(tz, 8)) - spring == timedelta(hours=23)
    assert lesson_due(autumn, 1, Rhythm(tz, 8)) - autumn == timedelta(hours=25)


def test_interval_mode() -> None:
    sent = datetime(2026, 1, 1, tzinfo=UTC)
    assert lesson_due(sent, 1, Rhythm(ZoneInfo("UTC"), 8, interval=30)) == sent + timedelta(
        seconds=30
    )


@settings(max_examples=200, deadline=None)
@given(last=instants, pause=st.integers(0, 30 * 24 * 3600), zone=st.sampled_from(ZONES))
def test_resume_never_sends_sooner_than_the_normal_schedule(
    last: datetime, pause: int, zone: str
) -> None:
    tz = ZoneInfo(zone)
    now = last + timedelta(seconds=pause)
    due = resume_due(now, last, 1, Rhythm(tz, 8))
    assert due >= now
    assert due >= lesson_due(last, 1, Rhythm(tz, 8))
