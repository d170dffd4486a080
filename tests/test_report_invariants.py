"""The practice's numbers, checked against random histories: whatever readers do, the
funnel, the per-lesson table and the all-courses table agree with each other and with what
happened, and an erasure changes none of them (but "active now").

Each history is a list of steps run through the domain functions and a real sender on a
fake clock (lessons a minute apart): signups, confirmations, lessons sent, views, done
marks, check-ins, booking clicks, unsubscribes, signing up again (a new run) and
erasures. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from course.bookings import BookingKind, BookingNotice, BookingStatus, record_booking
from course.config import Settings
from course.courses import Catalogue, CourseLibrary, PublishedCourse
from course.db import make_engine, make_sessionmaker
from course.models import (
    AuditLog,
    Booking,
    CheckIn,
    Delivery,
    Event,
    EventKind,
    LessonProgress,
    Reply,
    SignupRequest,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from course.privacy import erase
from course.progress import check_in, mark_done, record_link_click
from course.reports import (
    Filters,
    bookings_by_lesson,
    course_lessons,
    funnel,
    health,
    per_lesson,
    readers_who,
    summary,
)
from course.sending import Sender
from course.subscriptions import by_public_id, confirm, subscribe, unsubscribe, validate_signup
from course.tokens import Signer
from tests.conftest import FakeClock, engine_settings

READERS = 3
# Weighted so that histories go somewhere: lessons get sent, and readers act on them.
ACTIONS = (
    *("tick",) * 4,
    *("book",) * 2,
    "view",
    "done",
    "checkin",
    "unsubscribe",
    "signup",
    "confirm",
    "erase",
    "again",  # unsubscribe, sign up again and confirm: a new run
    "again",
    "booked",  # the booking system reports a booking by the reader
    "cancelled",  # ... or cancels their latest one
    "wait",  # a day later (clicks more than a day apart are two clicks)
)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    """Some readers sign up and confirm; then random steps by anyone."""
    started = draw(st.lists(st.integers(0, READERS - 1), min_size=1, max_size=READERS, unique=True))
    start = [(r, action, 0) for r in started for action in ("signup", "confirm")]
    rest = draw(
        st.lists(
            st.tuples(
                st.integers(0, READERS - 1),
                st.sampled_from(ACTIONS),
                st.integers(0, 4),  # which of the reader's lessons (or which answer)
            ),
            max_size=40,
        )
    )
    return [*start, (0, "tick", 0), *rest]


class Outbox:
    """A transport that keeps only when it was asked to send: the sender's records are
    what is checked here."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.times: list[datetime] = []

    def open(self) -> Outbox:
        return self

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        self.times.append(self.clock())


@dataclass
class World:
    settings: Settings
    sessions: sessionmaker[Session]
    clock: FakeClock = field(default_factory=FakeClock)
    readers: dict[int, str] = field(default_factory=dict)  # reader -> public id
    bookings: int = 0  # booking ids handed out

    def catalogue(self) -> Catalogue:
        return CourseLibrary(self.sessions).current()

    @property
    def course(self) -> PublishedCourse:
        found = self.catalogue().default()
        assert found is not None
        return found


def _clear(sessions: sessionmaker[Session]) -> None:
    """Remove every reader and what hangs on them (the courses stay)."""
    with sessions() as s, s.begin():
        for model in (
            AuditLog,
            Booking,
            Event,
            LessonProgress,
            Reply,
            Delivery,
            SignupRequest,
            Suppression,
            Subscriber,
        ):
            s.execute(delete(model))


def _received_keys(s: Session, subscriber: Subscriber) -> list[int]:
    return sorted(
        s.scalars(
            select(Delivery.number).where(
                Delivery.subscriber_id == subscriber.id,
                Delivery.run == subscriber.run,
                Delivery.kind == "lesson",
                Delivery.sent_at.is_not(None),
            )
        )
    )


def _step(world: World, sender: Any, reader: int, action: str, pick: int) -> None:
    now = world.clock()
    if action == "tick":
        world.clock.advance(seconds=61)
        sender.tick()
        return
    if action == "wait":
        world.clock.advance(hours=25)
        return
    if action == "again":
        for step in ("unsubscribe", "signup", "confirm"):
            _step(world, sender, reader, step, pick)
            world.clock.advance(seconds=1)
        return
    with world.sessions() as s, s.begin():
        public_id = world.readers.get(reader)
        subscriber = by_public_id(s, public_id) if public_id else None
        if action == "signup":
            data = validate_signup(
                {"email": f"reader{reader}@example.com"}, check_deliverability=False
            )
            data = dataclasses.replace(data, course_id=world.course.id)
            found = subscribe(s, data, now=now, default_timezone="UTC", resend_after=timedelta(0))
            world.readers[reader] = found.public_id
            return
        if subscriber is None:
            return
        if action in ("booked", "cancelled"):
            _booking(world, s, subscriber, action, now)
        elif action == "confirm":
            confirm(
                s,
                subscriber.public_id,
                now,
                subscriber.confirm_count,
                courses=world.catalogue(),
                settings=world.settings,
            )
        elif action == "unsubscribe":
            unsubscribe(s, subscriber, now)
        elif action == "erase":
            erase(s, subscriber, world.settings.secret_keys, now)
            del world.readers[reader]
        else:
            keys = _received_keys(s, subscriber)
            if not keys:
                return
            key = keys[pick % len(keys)]
            if action == "view":
                record_link_click(s, subscriber, key, EventKind.VIEW, now)
            elif action == "book":
                record_link_click(s, subscriber, key, EventKind.BOOK, now)
            elif action == "done":
                mark_done(s, subscriber, key, now)
            elif action == "checkin":
                check_in(s, subscriber, key, list(CheckIn)[pick % len(CheckIn)], now)


def _booking(world: World, s: Session, subscriber: Subscriber, action: str, now: datetime) -> None:
    """A verified webhook call from a booking system about this reader (by address)."""
    world.bookings += action == "booked"
    notice = BookingNotice(
        source="generic",
        kind=BookingKind.CONFIRMED if action == "booked" else BookingKind.CANCELLED,
        booking_id=f"booking-{world.bookings}",
        email=subscriber.email,
    )
    record_booking(
        s,
        notice,
        now,
        signer=Signer(world.settings.secret_keys),
        window=timedelta(days=world.settings.booking_attribution_days),
    )


def _numbers(world: World) -> dict[str, Any]:
    """Every number the dashboard shows for the course, by name."""
    course = world.course
    lessons = course_lessons(course)
    filters = Filters(course_id=course.id)
    with world.sessions() as s:
        steps_ = [(step.label, step.count) for step in funnel(s, filters, lessons)]
        rows = per_lesson(s, filters, lessons)
        (totals,) = [c for c in summary(s, Filters(), world.catalogue()).courses]
        booked = bookings_by_lesson(s, filters)
        clicked_at_all = readers_who(s, filters, filters.subscriber_ids(), EventKind.BOOK)
    numbers: dict[str, Any] = {"funnel": steps_}
    numbers["bookings"] = [(b.lesson, b.clicked, b.confirmed_total) for b in booked]
    numbers["clicked at all"] = clicked_at_all.get(course.id, 0)
    for row in rows:
        numbers[f"lesson {row.lesson}"] = (
            row.delivered,
            row.viewed,
            row.done,
            tuple(sorted(row.checkins.items())),
            row.booking_clicks,
            row.unsubscribes,
        )
    numbers["course"] = {name: getattr(totals, name) for name in totals.COUNTS}
    return numbers


def _check(world: World) -> dict[str, Any]:
    numbers = _numbers(world)
    chain = [count for _label, count in numbers["funnel"]]
    # Funnel steps never increase down the funnel (the lessons arrive in order here).
    assert chain == sorted(chain, reverse=True), numbers["funnel"]
    funnel_steps = dict(numbers["funnel"])
    lessons = course_lessons(world.course)
    clicks = []
    for n, (key, _title) in enumerate(lessons, start=1):
        delivered, viewed, done, checkins, booking, unsubscribed = numbers[f"lesson {key}"]
        # The per-lesson table and the funnel count "received" the same way.
        assert delivered == funnel_steps[f"Received lesson {n}"]
        # Nothing counts twice: each reader-run that received a lesson did each thing at
        # most once for it.
        for value in (viewed, done, sum(c for _a, c in checkins), booking, unsubscribed):
            assert value <= delivered, (key, numbers[f"lesson {key}"])
        clicks.append(booking)
    course = numbers["course"]
    # The all-courses table and the course's funnel are one definition.
    assert course["signed_up"] == funnel_steps["Signed up"]
    assert course["confirmed"] == funnel_steps["Confirmed"]
    assert course["completed"] == funnel_steps["Completed"]
    # A run completes when its last lesson is sent.
    assert funnel_steps["Completed"] == chain[-2]
    # Booking clicks: the course's number is the sum of its lessons'; readers who clicked
    # at all are at least the most of any lesson and at most that sum.
    assert course["booking_clicks"] == sum(clicks)
    assert max(clicks, default=0) <= numbers["clicked at all"] <= sum(clicks)
    # The bookings table: its clicks are the lesson table's, its bookings the course's.
    by_lesson = {lesson: clicked for lesson, clicked, _ in numbers["bookings"]}
    for (key, _title), clicked in zip(lessons, clicks, strict=True):
        assert by_lesson.get(key, 0) == clicked
    assert course["booked"] == sum(total for *_, total in numbers["bookings"])
    with world.sessions() as s:
        standing = s.scalar(select(func.count()).where(Booking.status == BookingStatus.CONFIRMED))
    assert course["booked"] == standing
    with world.sessions() as s:
        # Each run starts with one "confirm" event: the confirmed runs, counted another way.
        starts = s.scalar(select(func.count()).where(Event.kind == EventKind.CONFIRM))
    assert course["confirmed"] == starts
    return numbers


def _without_active(numbers: dict[str, Any]) -> dict[str, Any]:
    return {**numbers, "course": {k: v for k, v in numbers["course"].items() if k != "active"}}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), erased_last=st.integers(0, READERS - 1))
def test_random_histories_keep_the_numbers_consistent(
    tmp_path: Path, db_url: str, history: list[tuple[int, str, int]], erased_last: int
) -> None:
    engine = make_engine(db_url)
    world = World(engine_settings(tmp_path, db_url, LESSON_INTERVAL=60), make_sessionmaker(engine))
    try:
        _run(world, history, erased_last)
    finally:
        engine.dispose()  # each example its own connections, given back at once


def _run(world: World, history: list[tuple[int, str, int]], erased_last: int) -> None:
    _clear(world.sessions)
    outbox = Outbox(world.clock)
    sender = Sender(world.settings, world.sessions, outbox, clock=world.clock, worker="w")
    for reader, action, pick in history:
        _step(world, sender, reader, action, pick)
        world.clock.advance(seconds=1)
    before = _check(world)
    # "Sent in the last 24 hours": exactly the messages handed to the relay in that window.
    now = world.clock()
    with world.sessions() as s:
        sent_24h = health(s, now, tick_seconds=5).sent_24h
    assert sent_24h == sum(1 for t in outbox.times if t >= now - timedelta(days=1))
    # An erasure afterwards changes no number but "active now".
    if world.readers:
        reader = sorted(world.readers)[erased_last % len(world.readers)]
        _step(world, sender, reader, "erase", 0)
        after = _check(world)
        assert _without_active(after) == _without_active(before)
        with world.sessions() as s:
            statuses = s.scalars(select(Subscriber.status)).all()
        assert (
            SubscriberStatus.ERASED in statuses
            or before["course"]["active"] == after["course"]["active"]
        )
