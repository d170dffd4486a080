"""The numbers the practice watches: the funnel, per-lesson results, sending health.

Shared by the admin dashboard and ``course stats``. Each function takes a session and runs a
handful of aggregate queries; nothing here loads subscribers one by one.

What is counted: the funnel and per-lesson numbers describe the people currently in the
database. A reader who asked to be erased leaves the funnel; their events stay as anonymous
rows, so booking clicks and unsubscribes per lesson still include them when no filter is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from course.models import (
    CheckIn,
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


@dataclass(frozen=True)
class Filters:
    """Which signups to count: a signup date range (inclusive, UTC days) and a source."""

    start: date | None = None
    end: date | None = None
    source: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.start or self.end or self.source)

    def subscriber_ids(self) -> Select[Any]:
        """The ids of subscribers matching the filters."""
        query = select(Subscriber.id)
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
    lesson: int
    title: str
    delivered: int = 0
    viewed: int = 0
    done: int = 0
    checkins: dict[str, int] = field(default_factory=dict)
    booking_clicks: int = 0
    unsubscribes: int = 0

    @property
    def checkin_total(self) -> int:
        return sum(self.checkins.values())


def _scalar(session: Session, query: Any) -> int:
    return int(session.scalar(query) or 0)


def funnel(session: Session, filters: Filters, total: int) -> list[FunnelStep]:
    """Signed up, confirmed, received lesson 1..n, completed, booked a session."""
    ids = filters.subscriber_ids()
    steps = [
        FunnelStep("Signed up", _scalar(session, select(func.count()).select_from(ids.subquery()))),
        FunnelStep(
            "Confirmed",
            _scalar(
                session,
                select(func.count()).where(
                    Subscriber.id.in_(ids), Subscriber.confirmed_at.is_not(None)
                ),
            ),
        ),
    ]
    received = dict(
        session.execute(
            select(Delivery.number, func.count(func.distinct(Delivery.subscriber_id)))
            .where(
                lesson_received(),
                Delivery.subscriber_id.in_(ids),
            )
            .group_by(Delivery.number)
        ).all()
    )
    steps += [
        FunnelStep(f"Received lesson {n}", int(received.get(n, 0))) for n in range(1, total + 1)
    ]
    steps.append(
        FunnelStep(
            "Completed",
            _scalar(
                session,
                select(func.count()).where(
                    Subscriber.id.in_(ids), Subscriber.completed_at.is_not(None)
                ),
            ),
        )
    )
    steps.append(
        FunnelStep(
            "Booked a session",
            _scalar(
                session,
                select(func.count(func.distinct(Event.subscriber_id))).where(
                    Event.kind == EventKind.BOOK, Event.subscriber_id.in_(ids)
                ),
            ),
        )
    )
    return steps


def per_lesson(
    session: Session, filters: Filters, lessons: dict[int, str], total: int
) -> list[LessonStats]:
    """For each lesson: delivered, viewed, done, check-ins, booking clicks, unsubscribes."""
    ids = filters.subscriber_ids()
    stats = {n: LessonStats(n, lessons.get(n, f"Lesson {n}")) for n in range(1, total + 1)}

    def event_filter() -> Any:
        # Anonymous events (erased readers) count only when no filter narrows the readers.
        return Event.subscriber_id.in_(ids) if filters.active else True

    for number, count in session.execute(
        select(Delivery.number, func.count())
        .where(
            lesson_received(),
            Delivery.subscriber_id.in_(ids),
        )
        .group_by(Delivery.number)
    ):
        if number in stats:
            stats[number].delivered = int(count)
    for number, count in session.execute(
        select(LessonProgress.lesson, func.count())
        .where(LessonProgress.done_at.is_not(None), LessonProgress.subscriber_id.in_(ids))
        .group_by(LessonProgress.lesson)
    ):
        if number in stats:
            stats[number].done = int(count)
    for number, answer, count in session.execute(
        select(LessonProgress.lesson, LessonProgress.checkin, func.count())
        .where(LessonProgress.checkin.is_not(None), LessonProgress.subscriber_id.in_(ids))
        .group_by(LessonProgress.lesson, LessonProgress.checkin)
    ):
        if number in stats:
            stats[number].checkins[str(answer)] = int(count)
    for lesson in stats.values():
        lesson.checkins = {a.value: lesson.checkins.get(a.value, 0) for a in CheckIn}
    event_counts = session.execute(
        select(
            Event.lesson, Event.kind, func.count(), func.count(func.distinct(Event.subscriber_id))
        )
        .where(
            Event.kind.in_([EventKind.VIEW, EventKind.BOOK, EventKind.UNSUBSCRIBE]),
            Event.lesson.is_not(None),
            event_filter(),
        )
        .group_by(Event.lesson, Event.kind)
    )
    for lesson_number, kind, count, readers in event_counts:
        if lesson_number not in stats:
            continue
        if kind == EventKind.VIEW:
            stats[lesson_number].viewed = int(readers)
        elif kind == EventKind.BOOK:
            stats[lesson_number].booking_clicks = int(count)
        else:
            stats[lesson_number].unsubscribes = int(count)
    return [stats[n] for n in sorted(stats)]


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
    sent_24h = _scalar(
        session,
        select(func.count()).where(
            Delivery.status == DeliveryStatus.SENT, Delivery.sent_at >= now - timedelta(days=1)
        ),
    )
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
    sent = _scalar(
        session,
        select(func.count()).where(
            Delivery.sent_at >= since, Delivery.status == DeliveryStatus.SENT
        ),
    )
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
