"""``course export``: subscribers and events as CSV, streamed from the database.

Every row names its course (the ``course`` column, its slug, last so that the earlier
columns keep their places); an export can be limited to one course. A subscriber row is one
enrolment: a person on two courses has two rows. An erased reader's events keep their
course and lose their subscriber.

The files are meant to be opened in spreadsheets, and names and addresses are whatever
people typed into the signup form. A cell such as ``=HYPERLINK(...)`` would be run as a
formula, so every text cell that starts with a formula character is prefixed with an
apostrophe (the usual OWASP defence); spreadsheets show the text as typed.

Functions take a session and never commit.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from course.models import Course, Delivery, Event, Subscriber, lesson_received

SUBSCRIBER_COLUMNS = (
    "public_id",
    "email",
    "name",
    "timezone",
    "send_hour",
    "source",
    "status",
    "created_at",
    "confirmed_at",
    "completed_at",
    "unsubscribed_at",
    "lessons_received",
    "course",
)
EVENT_COLUMNS = (
    "id",
    "subscriber_public_id",
    "lesson",
    "kind",
    "value",
    "via",
    "operator_id",
    "created_at",
    "course",
)

#: Rows fetched per database round trip; the export never holds a whole table in memory.
CHUNK = 1000

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A CSV cell that a spreadsheet will show as text, never run as a formula."""
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def iso_utc(value: datetime | None) -> str:
    """``value`` as ISO 8601 in UTC (``2026-03-02T07:00:00Z``), or empty."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def events_path(path: Path) -> Path:
    """Where the events go next to ``path``: ``export.csv`` -> ``export-events.csv``."""
    return path.with_name(f"{path.stem}-events{path.suffix}")


def write_rows(out: TextIO, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> int:
    """Write a header and ``rows`` as CSV with every cell guarded; returns the row count."""
    writer = csv.writer(out)
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
        count += 1
    return count


def subscriber_rows(session: Session, course_id: int | None = None) -> Iterator[tuple[Any, ...]]:
    """Every subscriber (of one course, or of all), oldest first, in
    :data:`SUBSCRIBER_COLUMNS` order."""
    received = (
        select(Delivery.subscriber_id, func.count().label("n"))
        .where(lesson_received())
        .group_by(Delivery.subscriber_id)
        .subquery()
    )
    query = (
        select(
            Subscriber.public_id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.timezone,
            Subscriber.send_hour,
            Subscriber.source,
            Subscriber.status,
            Subscriber.created_at,
            Subscriber.confirmed_at,
            Subscriber.completed_at,
            Subscriber.unsubscribed_at,
            func.coalesce(received.c.n, 0),
            Course.slug,
        )
        .outerjoin(received, received.c.subscriber_id == Subscriber.id)
        .outerjoin(Course, Course.id == Subscriber.course_id)
        .order_by(Subscriber.id)
        # Plain columns, not ORM objects: nothing piles up in the session's identity map.
        .execution_options(yield_per=CHUNK)
    )
    if course_id is not None:
        query = query.where(Subscriber.course_id == course_id)
    for row in session.execute(query):
        yield tuple(row)


def event_rows(session: Session, course_id: int | None = None) -> Iterator[tuple[Any, ...]]:
    """Every event (of one course, or of all), oldest first, in :data:`EVENT_COLUMNS` order.

    An erased reader's events have no subscriber any more; their public id is empty and
    their course is the one they kept. Events of no course (an operator's erasure) are in
    the export of all courses only.
    """
    # A reader's event belongs to their enrolment's course, an anonymous one to its own.
    owner = func.coalesce(Subscriber.course_id, Event.course_id)
    query = (
        select(
            Event.id,
            Subscriber.public_id,
            Event.lesson,
            Event.kind,
            Event.value,
            Event.via,
            Event.operator_id,
            Event.created_at,
            Course.slug,
        )
        .outerjoin(Subscriber, Subscriber.id == Event.subscriber_id)
        .outerjoin(Course, Course.id == owner)
        .order_by(Event.id)
        .execution_options(yield_per=CHUNK)
    )
    if course_id is not None:
        query = query.where(owner == course_id)
    for row in session.execute(query):
        yield tuple(row)


def write_subscribers(session: Session, out: TextIO, course_id: int | None = None) -> int:
    """Write the subscribers CSV (of one course, or of all) to ``out``; returns how many
    rows were written."""
    return write_rows(out, SUBSCRIBER_COLUMNS, subscriber_rows(session, course_id))


def write_events(session: Session, out: TextIO, course_id: int | None = None) -> int:
    """Write the events CSV (of one course, or of all) to ``out``; returns how many rows
    were written."""
    return write_rows(out, EVENT_COLUMNS, event_rows(session, course_id))


def open_private(path: Path) -> TextIO:
    """Open ``path`` for writing a CSV that only the owner may read (it holds personal data)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # The byte order mark makes spreadsheet programs read the file as UTF-8 (names with
    # accents would be garbled otherwise); `course import` accepts it.
    return open(fd, "w", encoding="utf-8-sig", newline="")
