"""When the next lesson is due: pure functions of times, time zones and settings.

Calendar mode (the default): lesson n+1 goes out at the subscriber's send hour, in their own
time zone, on the calendar day after lesson n. Two guards keep a reader from getting lessons
in a burst: the due time is computed from when lesson n was *actually* sent (so an outage
delays the rest of the course instead of compressing it), and it is never less than
``MIN_CALENDAR_GAP_HOURS`` after that send (a lesson sent late at night pushes the next one
to the day after tomorrow's send hour rather than to tomorrow morning).

Interval mode (``COURSE_LESSON_INTERVAL`` seconds, for demos and tests): lesson n+1 is due
that many seconds after lesson n was sent.
"""

from __future__ import annotations

import re
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

    On a daylight-saving day when that hour does not exist (clocks jump past it), this is
    the instant the clocks jump to; when it happens twice, the first one.
    """
    local = datetime.combine(day, time(hour), tzinfo=tz)
    return local.astimezone(UTC)


def next_calendar_send(after: datetime, tz: ZoneInfo, hour: int) -> datetime:
    """The first send hour in ``tz`` that is at or after the instant ``after``."""
    day = after.astimezone(tz).date()
    candidate = local_send_time(day, tz, hour)
    while candidate < after:
        day += timedelta(days=1)
        candidate = local_send_time(day, tz, hour)
    return candidate


def next_lesson_due(
    previous_sent_at: datetime, tz: ZoneInfo, hour: int, interval: float | None
) -> datetime:
    """When the lesson after one sent at ``previous_sent_at`` is due."""
    if interval is not None:
        return previous_sent_at + timedelta(seconds=interval)
    previous_day = previous_sent_at.astimezone(tz).date()
    earliest = previous_sent_at + timedelta(hours=MIN_CALENDAR_GAP_HOURS)
    candidate = local_send_time(previous_day + timedelta(days=1), tz, hour)
    return candidate if candidate >= earliest else next_calendar_send(earliest, tz, hour)


def resume_due(
    now: datetime,
    last_sent_at: datetime | None,
    tz: ZoneInfo,
    hour: int,
    interval: float | None,
) -> datetime:
    """When the next lesson is due after a change at ``now`` (a pause ends, the send hour
    or time zone changes): one lesson, at the new time, never a burst."""
    if interval is not None:
        if last_sent_at is None:
            return now
        return max(now, last_sent_at + timedelta(seconds=interval))
    if last_sent_at is None:
        return now  # lesson 1 was never sent: send it on the next tick, as after confirming
    return max(
        next_calendar_send(now, tz, hour),
        next_lesson_due(last_sent_at, tz, hour, None),
    )
