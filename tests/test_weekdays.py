"""Weekday-only sending (``Course.weekdays_only``) in the reader's own time zone, across
daylight-saving changes (issue 14).

The rules come from course.schedule: a lesson goes out at the reader's send hour, on the
calendar day its delay says (at least the day after the lesson before); a course that sends
on weekdays only moves a Saturday or Sunday lesson to Monday; never less than
``MIN_CALENDAR_GAP_HOURS`` after the lesson before; a send hour that does not exist on a
spring-forward day is read with the offset from before the jump, and one that happens twice
on a fall-back day is the first. The property tests check the pure functions against those
words, computed here from ``zoneinfo`` alone; the last tests run the sending engine.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from course.config import MIN_CALENDAR_GAP_HOURS
from course.content import AfterCourseFields
from course.models import DeliveryKind
from course.schedule import (
    Rhythm,
    first_lesson_due,
    lesson_due,
    local_send_time,
    next_calendar_send,
    next_send,
    not_before,
    resume_due,
)
from tests.test_live_edits import Harness, harness, lesson

__all__ = ["harness"]  # the fixture, shared with tests/test_live_edits.py

GAP = timedelta(hours=MIN_CALENDAR_GAP_HOURS)

#: Zones with daylight saving (both hemispheres, 30- and 45-minute offsets, a 30-minute
#: shift, a change at midnight or on a Friday), and zones without it at odd offsets.
FOCUS = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Pacific/Chatham",  # +12:45/+13:45, the jump at 02:45
    "Australia/Lord_Howe",  # a 30-minute shift
    "America/St_Johns",
    "America/Nuuk",  # springs forward at 23:00 on Saturday, into Sunday
    "America/Santiago",  # changes at midnight
    "Asia/Jerusalem",  # springs forward on a Friday
    "Africa/Cairo",  # springs forward at midnight on a Friday, falls back on a Thursday
    "Antarctica/Troll",  # a two-hour jump
    "Pacific/Auckland",
    "Asia/Kathmandu",  # +05:45
    "Asia/Kolkata",
    "Pacific/Kiritimati",  # +14
    "Pacific/Pago_Pago",  # -11
    "UTC",
)
ALL_ZONES = tuple(sorted(zoneinfo.available_timezones()))

#: From now on: lessons are sent today and later (the tz rules for the future).
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2038, 1, 1, tzinfo=UTC)


# -- what the words say, from zoneinfo alone -------------------------------------------------


def wall(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour))


def documented_send(day: date, hour: int, tz: ZoneInfo) -> datetime:
    """``hour``:00 on ``day`` in ``tz`` as an instant: the one instant the clocks show it;
    the first of two on a fall-back day; on a spring-forward day when it never shows, the
    wall time read with the offset in effect before the jump."""
    target = wall(day, hour)
    shown = []
    for fold in (0, 1):
        instant = target.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == target:
            shown.append(instant)
    if shown:
        return min(shown)
    # Skipped: read with the post-jump offset the instant lies before the jump, so the
    # offset there is the one from before it.
    before_jump = target.replace(tzinfo=tz, fold=1).astimezone(UTC)
    offset = before_jump.astimezone(tz).utcoffset()
    assert offset is not None
    return (target - offset).replace(tzinfo=UTC)


def exists(day: date, hour: int, tz: ZoneInfo) -> bool:
    target = wall(day, hour)
    return any(
        target.replace(tzinfo=tz, fold=f).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
        == target
        for f in (0, 1)
    )


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


def the_day_before(instant: datetime, tz: ZoneInfo) -> date:
    """Where to look for the first send hour at or after ``instant``: a send hour the clocks
    skip late in the evening is read into the next day (America/Nuuk)."""
    return local_date(instant, tz) - timedelta(days=1)


def first_slot(
    first_day: date, not_before_: datetime, hour: int, tz: ZoneInfo, weekdays: bool
) -> datetime:
    """The first send hour on ``first_day`` or later (a weekday, with ``weekdays``) that
    is at or after the instant ``not_before_``."""
    day = first_day
    for _ in range(400):
        if not (weekdays and day.weekday() >= 5):
            candidate = documented_send(day, hour, tz)
            if candidate >= not_before_:
                return candidate
        day += timedelta(days=1)
    raise AssertionError("no send hour within 400 days")


def problems_with_slot(due: datetime, hour: int, tz: ZoneInfo, weekdays: bool) -> list[str]:
    """Why ``due`` is not a send hour of this reader (as the words above define it)."""
    local = due.astimezone(tz)
    found = []
    if weekdays and local.weekday() >= 5:
        found.append(f"{local:%A %Y-%m-%d %H:%M %Z} is a weekend day in the reader's zone")
    # The day the send hour belongs to: the local date, or the day before when a skipped
    # late hour is read into the next day (America/Nuuk at 23:00 on a spring Saturday).
    days = (local.date(), local.date() - timedelta(days=1))
    nominal = [d for d in days if documented_send(d, hour, tz) == due]
    if not nominal:
        found.append(f"{local:%Y-%m-%d %H:%M:%S %Z} is not the send hour {hour:02d}:00")
    elif weekdays and nominal[0].weekday() >= 5:
        found.append(f"the send hour of {nominal[0]:%A %Y-%m-%d}, a weekend day")
    return found


# -- strategies ------------------------------------------------------------------------------


@cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """The instants the zone's UTC offset changes between START and END."""
    tz = ZoneInfo(zone)
    found: list[datetime] = []
    step = timedelta(hours=6)
    at = START
    offset = at.astimezone(tz).utcoffset()
    while at < END:
        later = at + step
        later_offset = later.astimezone(tz).utcoffset()
        if later_offset != offset:
            lo, hi = at, later
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            found.append(hi.replace(microsecond=0))
            offset = later_offset
        at = later
    return tuple(found)


zones = st.one_of(st.sampled_from(FOCUS), st.sampled_from(ALL_ZONES))
instants = st.datetimes(
    min_value=START.replace(tzinfo=None),
    max_value=(END - timedelta(days=120)).replace(tzinfo=None),
    timezones=st.just(UTC),
)
#: How late a lesson actually went out after it was due: mostly on time, sometimes after an
#: outage of minutes, hours or days.
lateness = st.one_of(
    st.just(timedelta(0)),
    st.integers(1, 4 * 24 * 3600).map(lambda s: timedelta(seconds=s)),
)


@st.composite
def reader_clock(draw: st.DrawFn) -> tuple[str, int, datetime]:
    """A zone, a send hour and a start instant, often days before a daylight-saving change
    with the send hour next to the hour the clocks change at (skipped or repeated)."""
    zone = draw(zones)
    changes = transitions(zone)
    near_a_change: bool = draw(st.booleans())
    if changes and near_a_change:
        change = draw(st.sampled_from(changes))
        tz = ZoneInfo(zone)
        before = (change - timedelta(seconds=1)).astimezone(tz)
        after = change.astimezone(tz)
        hour = draw(
            st.sampled_from(sorted({before.hour, (before.hour + 1) % 24, after.hour}))
            | st.integers(0, 23)
        )
        start = change - timedelta(seconds=draw(st.integers(0, 12 * 24 * 3600)))
        return zone, hour, start
    return zone, draw(st.integers(0, 23)), draw(instants)


PROPERTY = hyp_settings(max_examples=600, deadline=None)
ON_TIME = [timedelta(0)] * 8


# -- the pure functions ----------------------------------------------------------------------


@PROPERTY
@given(
    clock=reader_clock(),
    delays=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    late=st.lists(lateness, min_size=8, max_size=8),
    weekdays=st.sampled_from([True, True, True, False]),
)
# Friday after the lesson before: Monday. Summer time starts on a Friday in Jerusalem
# (at 02:00) and in Cairo (at midnight); a Saturday hour is skipped in Nuuk, and odd jumps in
# Chatham and Troll (these three on Sundays: for courses that send every day).
@example(("Europe/Berlin", 8, datetime(2026, 3, 5, 7, tzinfo=UTC)), [0, 1, 1], ON_TIME, True)
@example(("Asia/Jerusalem", 2, datetime(2026, 3, 25, tzinfo=UTC)), [1, 1], ON_TIME, True)
@example(("Africa/Cairo", 0, datetime(2026, 4, 21, tzinfo=UTC)), [1, 1, 1], ON_TIME, True)
@example(("America/Nuuk", 23, datetime(2026, 3, 26, tzinfo=UTC)), [1, 1, 1], ON_TIME, False)
@example(("Pacific/Chatham", 3, datetime(2026, 9, 25, tzinfo=UTC)), [1, 1], ON_TIME, False)
@example(("Antarctica/Troll", 2, datetime(2026, 3, 27, tzinfo=UTC)), [1, 1], ON_TIME, False)
def test_every_lesson_is_due_at_a_send_hour_on_a_weekday_as_late_as_its_delay_says(
    clock: tuple[str, int, datetime],
    delays: list[int],
    late: list[timedelta],
    weekdays: bool,
) -> None:
    """A whole course, from joining to the last lesson, each lesson sent when due or
    later: every due time is a send hour of the reader (their wall clock), on Monday to
    Friday in their zone with ``weekdays_only``; on the calendar day the delay says or the
    first allowed day after it; never the same local day as the lesson before, never
    within MIN_CALENDAR_GAP_HOURS of it; and no later than that."""
    zone, hour, joined = clock
    tz = ZoneInfo(zone)
    rhythm = Rhythm(tz, hour, weekdays_only=weekdays)
    due = first_lesson_due(joined, delays[0], rhythm)
    if delays[0] == 0:
        assert due == joined  # "at once", documented: the reader's own click starts it
    else:
        assert problems_with_slot(due, hour, tz, weekdays) == []
        assert local_date(due, tz) >= local_date(joined, tz) + timedelta(days=delays[0])
        first_day = local_date(joined, tz) + timedelta(days=delays[0])
        assert due == first_slot(first_day, joined, hour, tz, weekdays)
    sent = due + late[0]
    sent_days = [local_date(sent, tz)]
    for n, delay in enumerate(delays[1:], start=1):
        due = lesson_due(sent, delay, rhythm)
        where = f"lesson {n + 1} after one sent {sent.astimezone(tz)} ({zone}, {hour}:00)"
        assert problems_with_slot(due, hour, tz, weekdays) == [], where
        assert due - sent >= GAP, where
        first_day = local_date(sent, tz) + timedelta(days=max(delay, 1))
        assert local_date(due, tz) >= first_day, where  # never before the delay says
        assert local_date(due, tz) > local_date(sent, tz), where  # never the same day
        assert due == first_slot(first_day, sent + GAP, hour, tz, weekdays), where
        sent = due + late[n]
        sent_days.append(local_date(sent, tz))
    assert len(set(sent_days)) == len(sent_days)  # one lesson a local day at most


@PROPERTY
@given(clock=reader_clock(), wait=lateness, weekdays=st.booleans())
def test_the_next_send_hour_is_the_first_allowed_one_at_or_after_a_moment(
    clock: tuple[str, int, datetime], wait: timedelta, weekdays: bool
) -> None:
    zone, hour, at = clock
    tz = ZoneInfo(zone)
    after = at + wait
    found = next_send(after, Rhythm(tz, hour, weekdays_only=weekdays))
    assert found == next_calendar_send(after, tz, hour, weekdays)
    assert found >= after
    assert problems_with_slot(found, hour, tz, weekdays) == []
    assert found == first_slot(the_day_before(after, tz), after, hour, tz, weekdays)
    # At most a day of waiting, and a weekend (plus a daylight-saving change).
    assert found - after < timedelta(days=3 if weekdays else 1, hours=3)


@PROPERTY
@given(
    clock=reader_clock(),
    delay=st.integers(0, 9),
    queued_for=lateness,
    snooze=st.integers(0, 90 * 24 * 3600),
    snoozed_at_midnight=st.booleans(),
)
def test_after_a_snooze_one_lesson_goes_out_at_the_next_allowed_send_hour(
    clock: tuple[str, int, datetime],
    delay: int,
    queued_for: timedelta,
    snooze: int,
    snoozed_at_midnight: bool,
) -> None:
    """``not_before``: a lesson due during a snooze waits for the first weekday send hour
    at or after the snooze ends (from the progress page a snooze ends at a local
    midnight); one due after it keeps its time."""
    zone, hour, sent = clock
    tz = ZoneInfo(zone)
    rhythm = Rhythm(tz, hour, weekdays_only=True)
    due = lesson_due(sent, delay, rhythm)
    until = sent + queued_for + timedelta(seconds=snooze)
    if snoozed_at_midnight:
        until = datetime.combine(local_date(until, tz), time(), tzinfo=tz).astimezone(UTC)
    result = not_before(due, until, rhythm)
    assert not_before(due, None, rhythm) == due
    assert result >= due and result >= until
    assert problems_with_slot(result, hour, tz, True) == []
    if due >= until:
        assert result == due
    else:
        assert result == first_slot(the_day_before(until, tz), until, hour, tz, True)


@PROPERTY
@given(clock=reader_clock(), delay=st.integers(0, 9), pause=st.integers(0, 120 * 24 * 3600))
def test_a_resume_after_any_break_is_one_lesson_on_a_weekday_never_sooner_than_usual(
    clock: tuple[str, int, datetime], delay: int, pause: int
) -> None:
    zone, hour, last = clock
    tz = ZoneInfo(zone)
    rhythm = Rhythm(tz, hour, weekdays_only=True)
    now = last + timedelta(seconds=pause)
    due = resume_due(now, last, delay, rhythm)
    assert due >= now
    assert due >= lesson_due(last, delay, rhythm)
    assert due - last >= GAP
    assert local_date(due, tz) > local_date(last, tz)
    assert problems_with_slot(due, hour, tz, True) == []
    # One lesson: the one after it is a day (a weekday) later again.
    after = lesson_due(due, 1, rhythm)
    assert local_date(after, tz) > local_date(due, tz) and after - due >= GAP
    assert resume_due(now, None, delay, rhythm) == now  # nothing sent yet: the next tick


# -- examples a person can check by hand -------------------------------------------------------

#: (zone, send hour, previous lesson sent (local), delay, the next one due (local)).
HAND_CHECKED = [
    # Friday -> Monday; a delay that lands on Sunday -> Monday; Saturday -> Monday.
    ("Europe/Berlin", 8, datetime(2026, 3, 6, 8), 1, datetime(2026, 3, 9, 8)),
    ("Europe/Berlin", 8, datetime(2026, 3, 6, 8), 2, datetime(2026, 3, 9, 8)),
    ("Europe/Berlin", 8, datetime(2026, 3, 7, 8), 1, datetime(2026, 3, 9, 8)),
    ("Europe/Berlin", 8, datetime(2026, 3, 6, 8), 3, datetime(2026, 3, 9, 8)),
    ("Europe/Berlin", 8, datetime(2026, 3, 6, 8), 4, datetime(2026, 3, 10, 8)),
    ("Europe/Berlin", 8, datetime(2026, 3, 2, 8), 7, datetime(2026, 3, 9, 8)),
    # Friday before Europe's change to summer time (Sunday 29 March) -> Monday, 08:00 CEST.
    ("Europe/Berlin", 8, datetime(2026, 3, 27, 8), 1, datetime(2026, 3, 30, 8)),
    # Friday before the US fall-back (Sunday 1 November) -> Monday 08:00 EST.
    ("America/New_York", 8, datetime(2026, 10, 30, 8), 1, datetime(2026, 11, 2, 8)),
    # Sydney's change to summer time is on Sunday 4 October 2026.
    ("Australia/Sydney", 2, datetime(2026, 10, 2, 2), 1, datetime(2026, 10, 5, 2)),
    # Jerusalem springs forward on Friday 27 March 2026 at 02:00: 02:00 is read with the
    # winter offset, which is 03:00 summer time, the moment the clocks jump to.
    ("Asia/Jerusalem", 2, datetime(2026, 3, 26, 2), 1, datetime(2026, 3, 27, 3)),
    # Cairo springs forward on Friday 24 April 2026 at midnight: 00:00 becomes 01:00.
    ("Africa/Cairo", 0, datetime(2026, 4, 23, 0), 1, datetime(2026, 4, 24, 1)),
    # Cairo falls back at the end of Thursday 29 October 2026: 23:00 happens twice, and
    # the first one counts (EEST); Friday 23:00 is then EET.
    ("Africa/Cairo", 23, datetime(2026, 10, 28, 23), 1, datetime(2026, 10, 29, 23)),
    # Kathmandu (+05:45, no daylight saving): Friday -> Monday.
    ("Asia/Kathmandu", 9, datetime(2026, 7, 3, 9), 1, datetime(2026, 7, 6, 9)),
    # Chatham springs forward on Sunday 27 September 2026 at 02:45: a weekday-only course
    # never needs that day.
    ("Pacific/Chatham", 3, datetime(2026, 9, 25, 3), 1, datetime(2026, 9, 28, 3)),
]


@pytest.mark.parametrize(("zone", "hour", "sent_local", "delay", "due_local"), HAND_CHECKED)
def test_hand_checked_examples(
    zone: str, hour: int, sent_local: datetime, delay: int, due_local: datetime
) -> None:
    tz = ZoneInfo(zone)
    sent = sent_local.replace(tzinfo=tz).astimezone(UTC)
    due = lesson_due(sent, delay, Rhythm(tz, hour, weekdays_only=True))
    assert due.astimezone(tz).replace(tzinfo=None) == due_local
    assert due.astimezone(tz).weekday() < 5


def test_the_same_moment_is_a_weekday_for_one_reader_and_the_weekend_for_another() -> None:
    """Sunday 19:00 UTC is Monday 08:00 in Auckland: a weekday-only course sends then to an
    Auckland reader, and waits until Monday for a reader in Honolulu (Sunday 09:00 there)."""
    sunday_evening = datetime(2026, 3, 8, 19, 0, tzinfo=UTC)
    auckland = Rhythm(ZoneInfo("Pacific/Auckland"), 8, weekdays_only=True)
    honolulu = Rhythm(ZoneInfo("Pacific/Honolulu"), 8, weekdays_only=True)
    assert next_send(sunday_evening, auckland) == sunday_evening
    assert next_send(sunday_evening - timedelta(hours=1), auckland) == sunday_evening
    assert next_send(sunday_evening, honolulu) == datetime(2026, 3, 9, 18, 0, tzinfo=UTC)
    # Without the rule the Honolulu reader's lesson would go out on Sunday.
    every_day = Rhythm(ZoneInfo("Pacific/Honolulu"), 8)
    saturday_night = sunday_evening - timedelta(hours=11)
    assert next_send(saturday_night, every_day) == datetime(2026, 3, 8, 18, 0, tzinfo=UTC)


def test_a_spring_forward_hour_is_read_with_the_offset_from_before_the_jump() -> None:
    """What course.schedule.local_send_time documents for a send hour the clocks skip."""
    cases = {
        # a one-hour jump at that very hour: the moment the clocks jump to
        ("Europe/Berlin", date(2026, 3, 29), 2): datetime(2026, 3, 29, 3, 0),
        ("America/New_York", date(2026, 3, 8), 2): datetime(2026, 3, 8, 3, 0),
        # Lord Howe moves 30 minutes, from 02:00 to 02:30
        ("Australia/Lord_Howe", date(2026, 10, 4), 2): datetime(2026, 10, 4, 2, 30),
        # Chatham jumps from 02:45 to 03:45: 03:00 read at +12:45 is 04:00 at +13:45
        ("Pacific/Chatham", date(2026, 9, 27), 3): datetime(2026, 9, 27, 4, 0),
        # Troll jumps two hours, from 01:00 to 03:00: 02:00 read at +00 is 04:00 at +02
        ("Antarctica/Troll", date(2026, 3, 29), 2): datetime(2026, 3, 29, 4, 0),
        # Nuuk jumps from Saturday 23:00 to Sunday 00:00
        ("America/Nuuk", date(2026, 3, 28), 23): datetime(2026, 3, 29, 0, 0),
    }
    for (zone, day, hour), expected in cases.items():
        tz = ZoneInfo(zone)
        assert not exists(day, hour, tz), (zone, day, hour)
        got = local_send_time(day, tz, hour)
        assert got == documented_send(day, hour, tz), zone
        assert got.astimezone(tz).replace(tzinfo=None) == expected, zone


def test_a_fall_back_hour_that_happens_twice_is_the_first() -> None:
    tz = ZoneInfo("Europe/Berlin")
    first = local_send_time(date(2026, 10, 25), tz, 2)
    assert first == datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # 02:00 CEST, not 02:00 CET


def test_a_first_lesson_without_delay_goes_out_at_once_even_at_the_weekend() -> None:
    """Documented in course.schedule.first_lesson_due: the first lesson of a course whose
    first delay is 0 comes right after the reader's own click, as the confirmation page
    says, whatever the day. A first delay of 1 from a Friday evening waits for Monday."""
    tz = ZoneInfo("Pacific/Auckland")
    saturday = datetime(2026, 3, 7, 10, 0, tzinfo=tz).astimezone(UTC)
    rhythm = Rhythm(tz, 8, weekdays_only=True)
    assert first_lesson_due(saturday, 0, rhythm) == saturday
    friday = datetime(2026, 3, 6, 20, 0, tzinfo=tz).astimezone(UTC)
    due = first_lesson_due(friday, 1, rhythm)
    assert due.astimezone(tz).replace(tzinfo=None) == datetime(2026, 3, 9, 8, 0)


# -- the sending engine ------------------------------------------------------------------------

AUCKLAND = ZoneInfo("Pacific/Auckland")


def auckland(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """An Auckland wall time, as the UTC instant the engine works with."""
    return datetime(year, month, day, hour, minute, tzinfo=AUCKLAND).astimezone(UTC)


def lesson_times(h: Harness, pid: str) -> list[tuple[int, datetime]]:
    return [(s.key, s.at.astimezone(AUCKLAND).replace(tzinfo=None)) for s in h.lessons(pid)]


def tick_through(h: Harness, start: datetime, end: datetime, step: timedelta) -> None:
    """Tick the sender at every ``step`` from ``start`` to ``end``, as ``course scheduler``
    does, whether or not anything is due."""
    at = start
    while at <= end:
        h.clock.now = at
        h.sender.tick()
        h.observe()
        at += step


def test_a_weekday_only_course_sends_nothing_at_the_weekend_in_auckland(harness: Harness) -> None:
    """A reader in Auckland, where Monday 08:00 is still Sunday in UTC (and, on 5 April
    2026, the clocks go back an hour): nothing on Saturday or Sunday in Auckland, however
    often the sender ticks, then one lesson on Monday at 08:00 Auckland time, then one a
    weekday. The completion email keeps to weekdays too."""
    h = harness
    course_id = h.new_course(
        "weekdays",
        [lesson(1, delay=0), *(lesson(k) for k in range(2, 6))],
        completion=AfterCourseFields(subject="You finished", body="Well done.", days=1),
        weekdays_only=True,
    )
    h.clock.now = auckland(2026, 4, 2, 7, 0)  # Thursday 07:00 in Auckland, Wednesday in UTC
    pid = h.enrol("kiri@example.com", course_id, tz="Pacific/Auckland")
    friday_evening = auckland(2026, 4, 3, 20, 0)
    h.run_until(friday_evening)
    assert lesson_times(h, pid) == [
        (1, datetime(2026, 4, 2, 7, 0)),
        (2, datetime(2026, 4, 3, 8, 0)),
    ]
    # The lesson after Friday's waits for Monday 08:00 NZST, which is Sunday 20:00 UTC.
    monday = auckland(2026, 4, 6, 8, 0)
    assert monday == datetime(2026, 4, 5, 20, 0, tzinfo=UTC)
    assert h.queued_lesson(pid) == (3, monday)
    before = len(h.log)
    tick_through(h, friday_evening, monday - timedelta(minutes=1), timedelta(minutes=15))
    assert len(h.lessons(pid)) == 2
    assert h.log[before:] == []  # not a message, not a change of status
    h.run_for(days=10)
    assert lesson_times(h, pid) == [
        (1, datetime(2026, 4, 2, 7, 0)),  # at once after confirming
        (2, datetime(2026, 4, 3, 8, 0)),  # Friday
        (3, datetime(2026, 4, 6, 8, 0)),  # Monday
        (4, datetime(2026, 4, 7, 8, 0)),
        (5, datetime(2026, 4, 8, 8, 0)),
    ]
    assert h.lessons(pid)[2].at.weekday() == 6  # a Sunday in UTC
    [completion] = h.sent(pid, DeliveryKind.COMPLETION)
    assert completion.at == auckland(2026, 4, 9, 8, 0)
    every = [s.at.astimezone(AUCKLAND) for s in h.sent(pid) if s.kind != "confirm"]
    assert all(at.weekday() < 5 for at in every[1:])


@pytest.mark.parametrize(
    ("zone", "joined_local", "expected_local"),
    [
        # Joins late on Friday in Auckland (Friday morning in UTC), first delay 1: Monday.
        ("Pacific/Auckland", datetime(2026, 3, 6, 21, 0), [datetime(2026, 3, 9, 8, 0)]),
        # Joins on Friday afternoon in Honolulu (already Saturday in UTC): Monday.
        ("Pacific/Honolulu", datetime(2026, 3, 6, 16, 0), [datetime(2026, 3, 9, 8, 0)]),
    ],
)
def test_a_first_lesson_with_a_delay_waits_for_a_weekday_in_the_reader_s_zone(
    harness: Harness, zone: str, joined_local: datetime, expected_local: list[datetime]
) -> None:
    h = harness
    tz = ZoneInfo(zone)
    course_id = h.new_course("weekdays-later", [lesson(1), lesson(2)], weekdays_only=True)
    h.clock.now = joined_local.replace(tzinfo=tz).astimezone(UTC)
    pid = h.enrol("lee@example.com", course_id, tz=zone)
    h.run_for(days=2, hours=23)  # to Monday evening locally: the weekend saw nothing
    got = [s.at.astimezone(tz).replace(tzinfo=None) for s in h.lessons(pid)]
    assert got == expected_local
