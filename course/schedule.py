"""When the next lesson is due: pure functions of times, time zones and a reader's rhythm.

Calendar mode (the default): a lesson goes out at the reader's send hour, in their own time
zone, on the calendar day its delay says ("1": the day after the lesson before, "7": a week
later). With the course's "weekdays only", a lesson due on a Saturday or Sunday waits for
Monday. Guards keep a reader from getting lessons in a burst: the due time is computed from
when the lesson before was *actually* sent (so an outage delays the rest of the course
instead of compressing it), a later lesson is never due the same calendar day, and never
less than ``MIN_CALENDAR_GAP_HOURS`` after the one before (a lesson sent late at night
pushes the next one to the day after tomorrow's send hour rather than to tomorrow morning).

Interval mode (``COURSE_LESSON_INTERVAL`` seconds, for demos and tests): each day of delay
is that many seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from course.config import MIN_CALENDAR_GAP_HOURS


def parse_hour(text: str | None) -> int | None:
    """An hour of the day (0-23) typed by a person or read from a file, or None.

    ASCII digits only: ``"²".isdigit()`` is True and ``int()`` then refuses it.
    """
    if text is None:
        return None
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,2}", text) or int(text) > 23:
        return None
    return int(text)


def parse_lesson_number(text: str | None) -> int | None:
    """A lesson number (1-9999) from a form, or None: ASCII digits only, like parse_hour."""
    if text is None or not re.fullmatch(r"[0-9]{1,4}", text.strip()) or int(text) < 1:
        return None
    return int(text)


def send_hour(own: int | None, default: int) -> int:
    """The hour a reader's lessons go out: their own choice, or the practice's default."""
    return default if own is None else own


def local_send_time(day: date, tz: ZoneInfo, hour: int) -> datetime:
    """The UTC instant of ``hour``:00 on ``day`` in ``tz``.

    On a daylight-saving day when that hour does not exist (clocks jump past it), the hour
    is read with the offset from before the jump: for the usual one-hour jump at that hour,
    the instant the clocks jump to (02:00 -> 03:00); for other jumps, as much later as the
    hour lies inside the gap (Chatham jumps 02:45 -> 03:45, and 03:00 is 04:00). When the
    hour happens twice, the first one.
    """
    local = datetime.combine(day, time(hour), tzinfo=tz)
    return local.astimezone(UTC)


@dataclass(frozen=True)
class Rhythm:
    """When one reader's lessons of one course go out."""

    tz: ZoneInfo
    hour: int
    weekdays_only: bool = False  # Monday to Friday, in the reader's time zone
    interval: float | None = None  # COURSE_LESSON_INTERVAL: seconds per day of delay


def next_calendar_send(
    after: datetime, tz: ZoneInfo, hour: int, weekdays_only: bool = False
) -> datetime:
    """The first send hour in ``tz`` that is at or after the instant ``after`` (on a
    weekday, with ``weekdays_only``)."""
    # From the day before: a send hour the clocks skip late in the evening falls on the
    # next day (America/Nuuk: Saturday 23:00 is Sunday 00:00), and may be the one.
    day = after.astimezone(tz).date() - timedelta(days=1)
    while True:
        if not (weekdays_only and day.weekday() >= 5):
            candidate = local_send_time(day, tz, hour)
            if candidate >= after:
                return candidate
        day += timedelta(days=1)


def next_send(after: datetime, rhythm: Rhythm) -> datetime:
    """The first moment at or after ``after`` when this reader may get a lesson."""
    if rhythm.interval is not None:
        return after
    return next_calendar_send(after, rhythm.tz, rhythm.hour, rhythm.weekdays_only)


def lesson_due(previous_sent_at: datetime, delay_days: int, rhythm: Rhythm) -> datetime:
    """When a lesson ``delay_days`` after one sent at ``previous_sent_at`` is due: the send
    hour on the calendar day ``delay_days`` later (a weekday, if the course says so), and
    never sooner than ``MIN_CALENDAR_GAP_HOURS`` after that send."""
    delay = max(delay_days, 1)  # a later lesson never goes out the same day as the one before
    if rhythm.interval is not None:
        return previous_sent_at + timedelta(seconds=rhythm.interval * delay)
    day = previous_sent_at.astimezone(rhythm.tz).date() + timedelta(days=delay)
    earliest = max(
        previous_sent_at + timedelta(hours=MIN_CALENDAR_GAP_HOURS),
        local_send_time(day, rhythm.tz, rhythm.hour),
    )
    return next_calendar_send(earliest, rhythm.tz, rhythm.hour, rhythm.weekdays_only)


def first_lesson_due(now: datetime, delay_days: int, rhythm: Rhythm) -> datetime:
    """When a course's first lesson is due for a reader who joins at ``now``: at once for
    a delay of 0, else the send hour ``delay_days`` calendar days later."""
    if delay_days <= 0:
        return now
    if rhythm.interval is not None:
        return now + timedelta(seconds=rhythm.interval * delay_days)
    day = now.astimezone(rhythm.tz).date() + timedelta(days=delay_days)
    return next_calendar_send(
        local_send_time(day, rhythm.tz, rhythm.hour), rhythm.tz, rhythm.hour, rhythm.weekdays_only
    )


def not_before(due: datetime, snoozed_until: datetime | None, rhythm: Rhythm) -> datetime:
    """``due``, or the first send hour after a snooze ends if that is later."""
    if snoozed_until is None or due >= snoozed_until:
        return due
    return next_send(snoozed_until, rhythm)


def resume_due(
    now: datetime, last_sent_at: datetime | None, delay_days: int, rhythm: Rhythm
) -> datetime:
    """When the next lesson is due after a change at ``now`` (a pause ends, the send hour
    or time zone changes): one lesson, at the new time, never a burst."""
    if last_sent_at is None:
        return now  # no lesson was sent yet: the first goes out on the next tick
    return max(next_send(now, rhythm), lesson_due(last_sent_at, delay_days, rhythm))
