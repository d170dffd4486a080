"""The numbers the practice watches: the funnel, per-lesson results, sending health.

Shared by the admin dashboard and ``course stats``. Each function takes a session and runs a
handful of aggregate queries; nothing here loads subscribers one by one.

What is counted (docs/operators.md defines every number; each has one function here, which
the dashboard, ``course stats`` and ``course export`` share):

- An *enrolment* is one reader on one course; a *run* is one time through it (a reader who
  comes back and confirms again starts a new run). Funnel and lesson numbers count runs
  where a run can differ (signed up, confirmed, received, completed) and enrolments for
  what a reader did (viewed, done, check-ins, clicks, unsubscribes: once per reader and
  lesson).
- An erased reader's row stays, naming nobody (course.privacy.erase), so every number is
  the same before and after an erasure; only "active now" changes. Events left without a
  reader (a signup never confirmed and deleted, or an erasure before this rule) still count
  by the course they keep when no filter narrows the readers.

Lessons are counted by key, the lesson's stable id in its course, and shown in the course's
current order. A lesson removed from the course that readers did receive keeps its own row,
"no longer in the course", titled as its last published version had it; what happened after
the last lesson (the completion and follow-up emails, lesson 0 in links) has a row of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, case, func, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from course.content import CourseContent
from course.models import (
    Booking,
    CheckIn,
    CourseVersion,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Event,
    EventKind,
    InboundMessage,
    LessonProgress,
    SchedulerTick,
    Subscriber,
    SubscriberStatus,
    lesson_received,
)

if TYPE_CHECKING:
    from course.courses import PublishedCourse

#: The lesson number of what comes after the last lesson (completion and follow-up).
AFTER_COURSE = 0


@dataclass(frozen=True)
class Filters:
    """Which signups to count: one course (None: all), a signup date range (inclusive, UTC
    days) and a source."""

    start: date | None = None
    end: date | None = None
    source: str | None = None
    course_id: int | None = None

    @property
    def active(self) -> bool:
        """Whether the filters narrow the readers (beyond choosing a course)."""
        return bool(self.start or self.end or self.source)

    def events(self, ids: Select[Any]) -> Any:
        """The events to count: those of the matching readers; with no filter beyond the
        course, also those left without a reader (by the course they keep)."""
        if self.active:
            return Event.subscriber_id.in_(ids)
        if self.course_id is not None:
            # A reader's events belong to their enrolment's course; an erased reader's
            # anonymous ones to the course recorded with them.
            return or_(
                Event.subscriber_id.in_(ids),
                and_(Event.subscriber_id.is_(None), Event.course_id == self.course_id),
            )
        return true()

    def subscriber_ids(self) -> Select[Any]:
        """The ids of subscribers matching the filters."""
        query = select(Subscriber.id)
        if self.course_id is not None:
            query = query.where(Subscriber.course_id == self.course_id)
        if self.start:
            query = query.where(Subscriber.created_at >= datetime.combine(self.start, time(), UTC))
        if self.end:
            end = datetime.combine(self.end + timedelta(days=1), time(), UTC)
            query = query.where(Subscriber.created_at < end)
        if self.source:
            query = query.where(Subscriber.source == self.source)
        return query


@dataclass
class FunnelStep:
    label: str
    count: int


@dataclass
class LessonStats:
    """One row of the per-lesson table. ``position`` is the lesson's place in the course
    now; None for a lesson no longer in the course and for the after-course row."""

    lesson: int  # the key
    title: str
    delivered: int = 0
    viewed: int = 0
    done: int = 0
    checkins: dict[str, int] = field(default_factory=dict)
    booking_clicks: int = 0
    unsubscribes: int = 0
    position: int | None = None

    @property
    def checkin_total(self) -> int:
        return sum(self.checkins.values())

    @property
    def removed(self) -> bool:
        """A lesson readers received that is no longer in the course."""
        return self.position is None and self.lesson != AFTER_COURSE

    @property
    def after_course(self) -> bool:
        """The completion and follow-up emails, not a lesson."""
        return self.lesson == AFTER_COURSE

    @property
    def empty(self) -> bool:
        """Nothing at all was counted for it."""
        return not (
            self.delivered
            or self.viewed
            or self.done
            or self.checkin_total
            or self.booking_clicks
            or self.unsubscribes
        )


def _scalar(session: Session, query: Any) -> int:
    return int(session.scalar(query) or 0)


def course_lessons(course: PublishedCourse) -> list[tuple[int, str]]:
    """A course's lessons in its current published order, as (key, title) for the reports;
    ``{day}`` and ``{total}`` in a title read as the lesson's place in the course."""
    content = course.content
    total = content.total
    return [
        (
            key,
            lesson.for_reader(n, total).title
            if (lesson := content.get(key))
            else f"Lesson {n} (cannot be used)",
        )
        for n, key in enumerate(content.order, start=1)
    ]


def _course_of_event() -> Any:
    # A reader's events belong to their enrolment's course; an erased-before-this-rule
    # reader's to the course their anonymous events kept.
    return func.coalesce(Subscriber.course_id, Event.course_id)


def _readers(column: Any = Event.subscriber_id) -> Any:
    """Count each reader once, and each event left without a reader as one reader."""
    return func.count(func.distinct(column)) + func.sum(case((column.is_(None), 1), else_=0))


def _events(filters: Filters, ids: Select[Any], *kinds: str) -> Select[Any]:
    """Events of ``kinds`` that the filters count, joined to their reader (if any)."""
    return (
        select()
        .select_from(Event)
        .outerjoin(Subscriber, Subscriber.id == Event.subscriber_id)
        .where(Event.kind.in_(kinds), filters.events(ids))
    )


def signed_up(session: Session, ids: Select[Any]) -> dict[int, int]:
    """Signed up, per course: each enrolment, and each later run it confirmed."""
    runs = case((Subscriber.confirmed_at.is_not(None), Subscriber.run), else_=1)
    return _by_course(
        session, select(Subscriber.course_id, func.sum(runs)).where(Subscriber.id.in_(ids))
    )


def confirmed(session: Session, ids: Select[Any]) -> dict[int, int]:
    """Confirmed, per course: runs started (a reader who came back and confirmed again
    counts once per run)."""
    runs = case((Subscriber.confirmed_at.is_not(None), Subscriber.run), else_=0)
    return _by_course(
        session, select(Subscriber.course_id, func.sum(runs)).where(Subscriber.id.in_(ids))
    )


def completed(session: Session, filters: Filters, ids: Select[Any]) -> dict[int, int]:
    """Completed, per course: runs that reached the end of the course (this run's
    ``completed_at``, and each earlier run's "completed" event)."""
    now = _by_course(
        session,
        select(Subscriber.course_id, func.count(Subscriber.completed_at)).where(
            Subscriber.id.in_(ids)
        ),
    )
    earlier = _by_course(
        session,
        _events(filters, ids, EventKind.COMPLETED).add_columns(_course_of_event(), func.count()),
    )
    return {c: now.get(c, 0) + earlier.get(c, 0) for c in {*now, *earlier}}


def readers_who(session: Session, filters: Filters, ids: Select[Any], kind: str) -> dict[int, int]:
    """Per course, readers with at least one event of ``kind`` (once each, whatever the
    lesson or run)."""
    return _by_course(
        session, _events(filters, ids, kind).add_columns(_course_of_event(), _readers())
    )


def readers_per_lesson(
    session: Session, filters: Filters, ids: Select[Any], kind: str
) -> dict[int, int]:
    """Per lesson key, readers with at least one event of ``kind`` in that lesson (once
    per reader and lesson). Keys are per course: narrow ``ids`` to one course."""
    rows = session.execute(
        _events(filters, ids, kind)
        .add_columns(Event.lesson, _readers())
        .where(Event.lesson.is_not(None))
        .group_by(Event.lesson)
    )
    return {int(key): int(count or 0) for key, count in rows}


def received(session: Session, ids: Select[Any]) -> dict[int, int]:
    """Per lesson key, runs in which the lesson was received (models.lesson_received):
    one delivery row per enrolment, lesson and run. Keys are per course."""
    rows = session.execute(
        select(Delivery.number, func.count())
        .where(lesson_received(), Delivery.subscriber_id.in_(ids))
        .group_by(Delivery.number)
    )
    return {int(key): int(count or 0) for key, count in rows}


def _bookings(filters: Filters, ids: Select[Any]) -> Select[Any]:
    """Confirmed bookings (net of cancellations: a cancelled one changes its status) that
    the filters count: with a filter, the matching readers'; otherwise the course's."""
    from course.bookings import BookingStatus

    query = select().select_from(Booking).where(Booking.status == BookingStatus.CONFIRMED)
    if filters.active:
        return query.where(Booking.subscriber_id.in_(ids))
    if filters.course_id is not None:
        return query.where(Booking.course_id == filters.course_id)
    return query


def confirmed_bookings(session: Session, filters: Filters, ids: Select[Any]) -> dict[int, int]:
    """Booked a session, per course: bookings the booking system confirmed, net of
    cancellations (a rescheduled booking counts once)."""
    return _by_course(session, _bookings(filters, ids).add_columns(Booking.course_id, func.count()))


def _by_course(session: Session, query: Select[Any, Any]) -> dict[int, int]:
    """``query`` selects (course id, count); grouped by its first column."""
    first = query.selected_columns[0]
    return {
        int(course_id): int(count or 0)
        for course_id, count in session.execute(query.group_by(first))
        if course_id is not None
    }


def funnel(
    session: Session, filters: Filters, lessons: Sequence[tuple[int, str]]
) -> list[FunnelStep]:
    """Signed up, confirmed, received each lesson (``lessons``: the course's keys and
    titles, in order), completed: each step counts runs, so no step is larger than the one
    before it in a course whose lessons arrive in order. ``filters.course_id`` names the
    course."""
    ids = filters.subscriber_ids()
    course = filters.course_id

    def one(counts: dict[int, int]) -> int:
        return counts.get(course, 0) if course is not None else sum(counts.values())

    got = received(session, ids)
    return [
        FunnelStep("Signed up", one(signed_up(session, ids))),
        FunnelStep("Confirmed", one(confirmed(session, ids))),
        *(
            FunnelStep(f"Received lesson {n}", got.get(key, 0))
            for n, (key, _title) in enumerate(lessons, start=1)
        ),
        FunnelStep("Completed", one(completed(session, filters, ids))),
    ]


def per_lesson(
    session: Session, filters: Filters, lessons: Sequence[tuple[int, str]]
) -> list[LessonStats]:
    """Delivered, viewed, done, check-ins, booking clicks and unsubscribes for each lesson
    of one course (``lessons``: its keys and titles in order, see :func:`course_lessons`).

    The rows come in the course's order; after them, with ``filters.course_id`` set, one
    row for each lesson no longer in the course that anything was counted for (titled from
    the course's history), and one for the emails after the course when anything was
    counted there. Without a course only the given lessons are counted (keys are per
    course)."""
    ids = filters.subscriber_ids()
    stats = {key: LessonStats(key, title, position=n) for n, (key, title) in enumerate(lessons, 1)}
    elsewhere: dict[int, LessonStats] = {}  # removed lessons and the after-course row

    def row(key: int | None) -> LessonStats | None:
        if key is None:
            return None
        found = stats.get(key) or elsewhere.get(key)
        if found is None and filters.course_id is not None and key >= AFTER_COURSE:
            found = elsewhere[key] = LessonStats(key, "")
        return found

    delivered: list[tuple[int, int]] = list(received(session, ids).items())
    after_mails = _scalar(
        session,
        select(func.count()).where(
            Delivery.kind.in_([DeliveryKind.COMPLETION, DeliveryKind.FOLLOWUP]),
            Delivery.sent_at.is_not(None),
            Delivery.subscriber_id.in_(ids),
        ),
    )
    for key, count in [*delivered, (AFTER_COURSE, after_mails)]:
        if count and (found := row(key)) is not None:
            found.delivered = count
    for key, count in session.execute(
        select(LessonProgress.lesson, func.count())
        .where(LessonProgress.done_at.is_not(None), LessonProgress.subscriber_id.in_(ids))
        .group_by(LessonProgress.lesson)
    ):
        if (found := row(key)) is not None:
            found.done = int(count)
    for key, answer, count in session.execute(
        select(LessonProgress.lesson, LessonProgress.checkin, func.count())
        .where(LessonProgress.checkin.is_not(None), LessonProgress.subscriber_id.in_(ids))
        .group_by(LessonProgress.lesson, LessonProgress.checkin)
    ):
        if (found := row(key)) is not None:
            found.checkins[str(answer)] = int(count)
    for kind, name in (
        (EventKind.VIEW, "viewed"),
        (EventKind.BOOK, "booking_clicks"),
        (EventKind.UNSUBSCRIBE, "unsubscribes"),
    ):
        for key, readers in readers_per_lesson(session, filters, ids, kind).items():
            if (found := row(key)) is not None:
                setattr(found, name, readers)
    removed = sorted(key for key in elsewhere if key != AFTER_COURSE)
    if removed and filters.course_id is not None:
        titles = removed_titles(session, filters.course_id, removed)
        for key in removed:
            elsewhere[key].title = titles.get(key, f"A removed lesson (#{key})")
    if AFTER_COURSE in elsewhere:
        elsewhere[AFTER_COURSE].title = "After the course (completion and follow-up emails)"
    result = [
        *(stats[key] for key, _title in lessons),
        *(elsewhere[key] for key in removed),
        *([elsewhere[AFTER_COURSE]] if AFTER_COURSE in elsewhere else []),
    ]
    for lesson in result:
        lesson.checkins = {a.value: lesson.checkins.get(a.value, 0) for a in CheckIn}
    return result


def removed_titles(session: Session, course_id: int, keys: Iterable[int]) -> dict[int, str]:
    """The titles of lessons no longer in a course, as the latest version that had each one
    published it (``{day}``/``{total}`` read as its place in that version)."""
    wanted = set(keys)
    found: dict[int, str] = {}
    versions = session.scalars(
        select(CourseVersion.content)
        .where(CourseVersion.course_id == course_id)
        .order_by(CourseVersion.number.desc())
    )
    for text in versions:
        try:
            content = CourseContent.from_json(text)
        except ValueError:
            continue  # a version this code cannot read names no lesson
        total = len(content.lessons)
        for n, fields in enumerate(content.lessons, start=1):
            if fields.key in wanted and fields.key not in found:
                title = fields.title.strip() or fields.subject.strip() or f"Lesson {n}"
                found[fields.key] = title.replace("{day}", str(n)).replace("{total}", str(total))
        if len(found) == len(wanted):
            break
    return found


@dataclass
class CourseTotals:
    """One course's row of the all-courses table (or the totals row, ``course_id`` None)."""

    course_id: int | None
    slug: str
    title: str
    status: str
    signed_up: int = 0
    confirmed: int = 0
    active: int = 0  # receiving lessons now (snoozed readers included)
    completed: int = 0
    unsubscribed: int = 0
    booked: int = 0  # confirmed bookings, net of cancellations (confirmed_bookings)
    booking_clicks: int = 0  # readers who clicked "Book", once per reader and lesson

    COUNTS = (
        "signed_up",
        "confirmed",
        "active",
        "completed",
        "unsubscribed",
        "booked",
        "booking_clicks",
    )


@dataclass
class Summary:
    """Every course side by side, their totals, and how many different people they are."""

    courses: list[CourseTotals]
    total: CourseTotals
    people: int  # different addresses among the counted enrolments


def summary(session: Session, filters: Filters, courses: Iterable[PublishedCourse]) -> Summary:
    """One row per course (``courses`` in order: those with a published version, and any
    other with readers), whose counts add up to the totals row. ``filters.course_id`` is
    ignored: this is the view across courses."""
    filters = dataclasses.replace(filters, course_id=None)
    ids = filters.subscriber_ids()
    active = _by_course(
        session,
        select(
            Subscriber.course_id,
            func.sum(case((Subscriber.status == SubscriberStatus.ACTIVE, 1), else_=0)),
        ).where(Subscriber.id.in_(ids)),
    )
    # Booking clicks: readers per lesson, added up, so the course's number is the sum of
    # its per-lesson rows (readers_per_lesson) by construction.
    pairs = (
        _events(filters, ids, EventKind.BOOK)
        .add_columns(
            _course_of_event().label("course_id"),
            Event.lesson,
            # An event left without a reader is a reader of its own.
            func.coalesce(Event.subscriber_id, -Event.id).label("reader"),
        )
        .where(Event.lesson.is_not(None))
        .distinct()
        .subquery()
    )
    clicks = _by_course(session, select(pairs.c.course_id, func.count()))
    counts: dict[int, dict[str, int]] = {}
    for name, per_course in (
        ("signed_up", signed_up(session, ids)),
        ("confirmed", confirmed(session, ids)),
        ("active", active),
        ("completed", completed(session, filters, ids)),
        ("unsubscribed", readers_who(session, filters, ids, EventKind.UNSUBSCRIBE)),
        ("booked", confirmed_bookings(session, filters, ids)),
        ("booking_clicks", clicks),
    ):
        for course_id, value in per_course.items():
            counts.setdefault(course_id, {})[name] = value
    people = _scalar(
        session,
        select(func.count(func.distinct(func.lower(Subscriber.email)))).where(
            Subscriber.id.in_(ids)
        ),
    )

    rows = []
    listed: set[int] = set()
    for course in courses:
        listed.add(course.id)
        numbers = counts.get(course.id, {})
        if course.version_id is None and not any(numbers.values()):
            continue  # never published and nobody on it
        rows.append(
            CourseTotals(course.id, course.slug, course.title, str(course.status), **numbers)
        )
    for course_id in sorted(set(counts) - listed):  # not in the catalogue: still counted
        rows.append(
            CourseTotals(course_id, "", f"Course #{course_id}", "unknown", **counts[course_id])
        )
    total = CourseTotals(None, "", "All courses", "")
    for name in CourseTotals.COUNTS:
        setattr(total, name, sum(getattr(r, name) for r in rows))
    return Summary(courses=rows, total=total, people=people)


@dataclass
class Health:
    due_now: int
    in_flight: int
    sent_24h: int
    failed: list[dict[str, Any]]
    failed_total: int
    last_tick: datetime | None
    workers: list[dict[str, Any]]
    stale: bool
    status_counts: dict[str, int]
    stalled: int = 0  # active readers whose next lesson failed: their course waits


def health(session: Session, now: datetime, tick_seconds: float, stale_ticks: int = 5) -> Health:
    """Due now, sent in the last day, failures with their errors, and the scheduler's pulse.

    The scheduler counts as stale when its last tick is older than ``stale_ticks`` ticks
    (and at least a minute): it is not running, or a tick is stuck.
    """
    queued = and_(Delivery.status == DeliveryStatus.QUEUED, Delivery.due_at <= now)
    due_now = _scalar(session, select(func.count()).where(queued, Delivery.claimed_by.is_(None)))
    in_flight = _scalar(
        session,
        select(func.count()).where(
            Delivery.status == DeliveryStatus.QUEUED, Delivery.claimed_by.is_not(None)
        ),
    )
    sent_24h = _scalar(session, select(func.count()).where(sent_since(now - timedelta(days=1))))
    failed_rows = session.execute(
        select(Delivery, Subscriber.email, Subscriber.public_id)
        .join(Subscriber)
        .where(Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id.desc())
        .limit(20)
    ).all()
    failed = [
        {
            "kind": d.kind,
            "number": d.number,
            "email": email,
            "public_id": public_id,
            "error": d.last_error,
            "attempts": d.attempts,
            "at": d.failed_at or d.first_failed_at or d.created_at,
        }
        for d, email, public_id in failed_rows
    ]
    failed_total = _scalar(
        session, select(func.count()).where(Delivery.status == DeliveryStatus.FAILED)
    )
    ticks = session.scalars(select(SchedulerTick).order_by(SchedulerTick.last_tick_at.desc())).all()
    last = ticks[0].last_tick_at if ticks else None
    stale = last is None or now - last > stale_after(tick_seconds, stale_ticks)
    statuses = dict(
        session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
    )
    stalled = _scalar(session, select(func.count()).select_from(stalled_readers().subquery()))
    return Health(
        due_now=due_now,
        in_flight=in_flight,
        sent_24h=sent_24h,
        failed=failed,
        failed_total=failed_total,
        last_tick=last,
        workers=[
            {"worker": t.worker, "last_tick_at": t.last_tick_at, "summary": t.last_summary}
            for t in ticks[:10]
        ],
        stale=stale,
        status_counts={s.value: int(statuses.get(s.value, 0)) for s in SubscriberStatus},
        stalled=stalled,
    )


def sent_since(start: datetime) -> ColumnElement[bool]:
    """Messages the relay accepted from ``start`` on: every delivery whose ``sent_at`` is
    in the window, whatever its status now (an operator's re-send puts a sent row back in
    the queue; an erased reader's rows stay)."""
    return Delivery.sent_at >= start


def stalled_readers() -> Select[Any]:
    """Active readers whose next lesson failed for good (retries exhausted, or refused for
    a reason that is not their mailbox): their course waits for an operator's retry."""
    return (
        select(Subscriber.id)
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(
            Subscriber.status == SubscriberStatus.ACTIVE,
            Delivery.kind == DeliveryKind.LESSON,
            Delivery.status == DeliveryStatus.FAILED,
            Delivery.sent_at.is_(None),
            Delivery.run == Subscriber.run,
        )
        .distinct()
    )


@dataclass(frozen=True)
class Alarms:
    """What ``/healthz`` and ``course stats`` call unhealthy in sending."""

    last_tick: datetime | None
    scheduler_stale: bool
    overdue: int  # queued deliveries later than the allowed delay past their due time
    oldest_due: datetime | None
    failed_24h: int  # failures in the last day, bounced readers aside
    failed_total: int

    def reasons(self, max_failed: int) -> list[str]:
        """One sentence per problem, for people and monitors."""
        found = []
        if self.last_tick is None:
            found.append("no scheduler has ever ticked: start `course scheduler`")
        elif self.scheduler_stale:
            found.append(f"no scheduler has ticked since {self.last_tick.isoformat()}")
        if self.overdue:
            found.append(
                f"{self.overdue} deliveries are overdue (the oldest was due at "
                f"{self.oldest_due.isoformat() if self.oldest_due else '?'})"
            )
        if self.failed_24h >= max_failed:
            found.append(f"{self.failed_24h} deliveries failed in the last 24 hours")
        return found


def stale_after(tick_seconds: float, stale_ticks: int = 5) -> timedelta:
    """How long without a tick before the scheduler counts as stopped."""
    return max(timedelta(seconds=tick_seconds * stale_ticks), timedelta(minutes=1))


def alarms(session: Session, now: datetime, tick_seconds: float, max_delay: timedelta) -> Alarms:
    """The scheduler's pulse, overdue deliveries and recent failures (a few small queries)."""
    last = session.scalar(select(func.max(SchedulerTick.last_tick_at)))
    late = and_(Delivery.status == DeliveryStatus.QUEUED, Delivery.due_at < now - max_delay)
    overdue, oldest = session.execute(
        select(func.count(), func.min(Delivery.due_at)).where(late)
    ).one()
    failed_24h = _scalar(
        session,
        select(func.count())
        .select_from(Delivery)
        .join(Subscriber)
        .where(
            Delivery.status == DeliveryStatus.FAILED,
            Delivery.failed_at >= now - timedelta(days=1),
            Subscriber.status != SubscriberStatus.BOUNCED,
        ),
    )
    failed_total = _scalar(
        session, select(func.count()).where(Delivery.status == DeliveryStatus.FAILED)
    )
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)  # min() over SQLite bypasses the column type
    return Alarms(
        last_tick=last,
        scheduler_stale=last is None or now - last > stale_after(tick_seconds),
        overdue=int(overdue or 0),
        oldest_due=oldest,
        failed_24h=failed_24h,
        failed_total=failed_total,
    )


@dataclass(frozen=True)
class Deliverability:
    """What came back after sending, over ``days`` days (the dashboard's last section)."""

    days: int
    sent: int
    hard_bounces: int
    soft_bounces: int
    complaints: int
    replies: int
    auto_replies: int
    kept: int  # mailbox messages that matched no reader or could not be read

    @property
    def complaint_rate(self) -> float:
        """Complaints per message sent: Gmail and Yahoo want it under 0.3 % (0.1 % is safe)."""
        return self.complaints / self.sent if self.sent else 0.0


def deliverability(session: Session, now: datetime, days: int = 30) -> Deliverability:
    """Bounces, complaints and replies of the last ``days`` days."""
    since = now - timedelta(days=days)
    kinds = dict(
        session.execute(
            select(Event.kind, func.count())
            .where(
                Event.created_at >= since,
                Event.kind.in_([EventKind.COMPLAINT, EventKind.REPLY, EventKind.AUTO_REPLY]),
            )
            .group_by(Event.kind)
        ).all()
    )
    hard_or_soft = func.substr(Event.value, 1, 4).label("hard_or_soft")  # "hard:5.1.1"
    bounces: dict[str, int] = dict(
        session.execute(
            select(hard_or_soft, func.count())
            .where(Event.created_at >= since, Event.kind == EventKind.BOUNCE)
            .group_by(hard_or_soft)
        ).all()
    )
    sent = _scalar(session, select(func.count()).where(sent_since(since)))
    kept = _scalar(
        session,
        select(func.count()).where(
            InboundMessage.created_at >= since,
            InboundMessage.outcome.in_(["unmatched", "unusable"]),
        ),
    )
    return Deliverability(
        days=days,
        sent=sent,
        hard_bounces=int(bounces.get("hard", 0)),
        soft_bounces=int(bounces.get("soft", 0)),
        complaints=int(kinds.get(EventKind.COMPLAINT, 0)),
        replies=int(kinds.get(EventKind.REPLY, 0)),
        auto_replies=int(kinds.get(EventKind.AUTO_REPLY, 0)),
        kept=kept,
    )


# -- bookings --------------------------------------------------------------------------------


@dataclass
class BookingCounts:
    """One lesson's booking numbers (``lesson`` None: bookings attributed to no lesson).

    ``clicked``: readers who clicked "Book a session" in this lesson, each once however
    often they clicked (the lesson table's "Booking clicks", readers_per_lesson).
    ``confirmed``: bookings the booking system confirmed, net of cancellations (a
    rescheduled booking counts once), per source (confirmed_bookings)."""

    lesson: int | None
    clicked: int = 0
    confirmed: dict[str, int] = field(default_factory=dict)

    @property
    def confirmed_total(self) -> int:
        return sum(self.confirmed.values())


def bookings_by_lesson(session: Session, filters: Filters) -> list[BookingCounts]:
    """Readers who clicked "Book a session" and confirmed bookings, per lesson and per
    source (course.bookings.SOURCES), in lesson-key order, then the unattributed row.

    With no filter beyond the course, erased readers' clicks and bookings still count
    (by the course they keep); with filters, only the matching readers'."""
    # Here, not at the top: course.bookings pulls in the subscription rules, which the
    # other reports do not need.
    from course.bookings import SOURCES

    ids = filters.subscriber_ids()
    rows: dict[int | None, BookingCounts] = {}

    def row(lesson: int | None) -> BookingCounts:
        if lesson not in rows:
            rows[lesson] = BookingCounts(lesson, confirmed=dict.fromkeys(SOURCES, 0))
        return rows[lesson]

    for lesson, readers in readers_per_lesson(session, filters, ids, EventKind.BOOK).items():
        row(lesson).clicked = readers
    for lesson, source, count in session.execute(
        _bookings(filters, ids)
        .add_columns(Booking.lesson, Booking.source, func.count())
        .group_by(Booking.lesson, Booking.source)
    ):
        found = row(None if lesson is None else int(lesson))
        found.confirmed[str(source)] = found.confirmed.get(str(source), 0) + int(count)
    keys = sorted(k for k in rows if k is not None)
    return [rows[k] for k in keys] + ([rows[None]] if None in rows else [])
