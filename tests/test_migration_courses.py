"""Migration 0011 on a populated database, on SQLite and PostgreSQL: the five-day course
becomes course 1, every reader, delivery, check-in, note and event is carried over
unchanged, readers go on exactly where they were, and the downgrade gives the old database
back.

The database is migrated to 0010 and filled with plain SQL (tests/populate.py): readers
pending, mid-course, paused, completed, unsubscribed, bounced, stalled on a failed lesson,
on a second run, with an operator's re-send queued; notes encrypted and in plain text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from course.content import CourseContent
from course.courses import create_course
from course.crypto import is_encrypted
from course.db import alembic_config, upgrade
from course.models import (
    Course,
    CourseStatus,
    CourseVersion,
    Delivery,
    DeliveryStatus,
    Event,
    LessonProgress,
    Operator,
    Reply,
    SignupRequest,
    Subscriber,
    SubscriberStatus,
)
from course.resources import LESSONS_PACKAGE, package_dir
from course.sending import Sender
from course.signups import decide_signups
from course.subscriptions import is_suppressed, resume
from tests.conftest import (
    PG_URL,
    SECRET,
    FakeClock,
    _postgres_available,
    _skip_or_fail,
    courses_for,
    engine_settings,
    make_sender,
    sessions_for,
)
from tests.helpers import parse
from tests.populate import (
    ENCRYPTED_NOTE,
    NOW,
    OLD_DAYS,
    PLAIN_NOTE,
    REPLY_TEXT,
    Population,
    populate,
    reflect,
    snapshot,
)

Rows = dict[str, list[dict[str, Any]]]

#: What 0011 adds to the tables that existed before it.
NEW_COLUMNS = {
    "subscribers": {"course_id", "snoozed_until"},
    "events": {"course_id"},
    "signup_requests": {"course_id"},
    "operators": {"language"},  # 0014: the admin's language, per staff member
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database at 0010, the last revision before courses: a SQLite file, or a
    throw-away PostgreSQL schema (skipped like conftest's ``db_url``)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'course.db'}"
        upgrade(url, "0010")
        yield url
        return
    if not _postgres_available():
        _skip_or_fail(
            "PostgreSQL is not reachable on 127.0.0.1:5432", "COURSE_TEST_REQUIRE_POSTGRES"
        )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url, "0010")
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def people(old_url: str) -> Population:
    """The readers written into the 0010 database."""
    return populate(old_url)


@pytest.fixture
def before(old_url: str, people: Population) -> Rows:
    """Every row of the populated 0010 database."""
    rows = snapshot(old_url)
    # Every old table has rows, so "unchanged" below is never a comparison of nothing.
    assert all(rows.values()), [name for name, found in rows.items() if not found]
    return rows


def _old_columns(after: Rows, before: Rows) -> Rows:
    """``after`` limited to the tables and columns ``before`` has."""
    return {
        name: [{column: row[column] for column in rows[0]} for row in after[name]]
        for name, rows in before.items()
    }


def _utc(value: datetime) -> datetime:
    """A stored time as aware UTC (SQLite hands back naive UTC when read without models)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _downgrade(url: str) -> None:
    command.downgrade(alembic_config(url), "0010")


# -- the upgrade ----------------------------------------------------------------------------


def test_every_row_is_carried_over_with_the_same_values(old_url: str, before: Rows) -> None:
    upgrade(old_url)
    after = snapshot(old_url)
    assert _old_columns(after, before) == before
    added = {
        name: set(after[name][0]) - set(rows[0])
        for name, rows in before.items()
        if set(after[name][0]) != set(rows[0])
    }
    assert added == NEW_COLUMNS
    assert set(after) - set(before) == {"courses", "course_versions", "bookings"}


def test_every_reader_and_event_belongs_to_course_one_published_as_version_one(
    old_url: str, people: Population, before: Rows, tmp_path: Path
) -> None:
    upgrade(old_url)
    with sessions_for(old_url)() as s:
        subscribers = s.scalars(select(Subscriber)).all()
        assert len(subscribers) == len(before["subscribers"])
        assert {sub.course_id for sub in subscribers} == {1}
        assert all(sub.snoozed_until is None for sub in subscribers)
        events = s.scalars(select(Event)).all()
        assert len(events) == len(before["events"])
        # Anonymous events of an erased reader too: per-course counts still add up.
        assert {e.course_id for e in events} == {1}
        assert any(e.subscriber_id is None for e in events)
        assert s.scalars(select(SignupRequest.course_id)).all() == [1]

        course = s.scalars(select(Course)).one()
        assert (course.id, course.slug, course.status) == (1, "feeling-secure", "published")
        version = s.scalars(select(CourseVersion)).one()
        assert course.published_version_id == version.id
        assert (version.course_id, version.number) == (1, 1)
        assert version.author == "course db upgrade"
        content = CourseContent.from_json(version.content)
    # The keys are the old day numbers, each on the lesson that was that day.
    assert {lesson.key: lesson.slug for lesson in content.lessons} == OLD_DAYS
    assert [lesson.key for lesson in content.lessons] == [1, 2, 3, 4, 5]
    first = courses_for(engine_settings(tmp_path, old_url)).default()
    assert first is not None and first.id == 1 and first.open_for_signup
    assert first.content.order == (1, 2, 3, 4, 5)
    assert first.content.next_for({1, 2}) == 3


def test_notes_replies_and_secrets_still_decrypt_and_opt_outs_still_hold(
    old_url: str, people: Population
) -> None:
    upgrade(old_url)
    rows = people.rows
    with sessions_for(old_url)() as s:
        encrypted = s.get(LessonProgress, rows["encrypted_note"])
        plain = s.get(LessonProgress, rows["plain_note"])
        assert encrypted is not None and plain is not None
        assert (encrypted.note, encrypted.checkin, encrypted.lesson) == (
            ENCRYPTED_NOTE,
            "lighter",
            1,
        )
        assert (plain.note, plain.checkin, plain.risk) == (PLAIN_NOTE, "stirred", "r3")
        run_one = s.get(LessonProgress, rows["rita_run1_note"])
        assert run_one is not None and (run_one.note, run_one.run) == ("run one", 1)
        reply = s.get(Reply, rows["reply"])
        assert reply is not None
        assert reply.text == REPLY_TEXT
        assert reply.subject == "Re: Day 2 of 5: Getting to know your triggers"
        therapist = s.get(Operator, rows["therapist"])
        assert therapist is not None and therapist.totp_secret == "JBSWY3DPEHPK3PXP"
        assert is_suppressed(s, [SECRET], "gone@example.com")
        assert is_suppressed(s, [SECRET], people["bounced"].email)
        assert not is_suppressed(s, [SECRET], people["mid"].email)
        # At rest, the encrypted note is still ciphertext and the legacy one still plain
        # (``course keys rotate`` encrypts it; the migration does not touch it).
        stored: dict[int, str] = dict(
            s.execute(
                text("SELECT id, note FROM lesson_progress WHERE id IN (:a, :b)"),
                {"a": rows["encrypted_note"], "b": rows["plain_note"]},
            ).all()
        )
    assert is_encrypted(stored[rows["encrypted_note"]])
    assert stored[rows["plain_note"]] == PLAIN_NOTE


def _subscriber_indexes(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                query = (
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = 'subscribers' AND sql IS NOT NULL"
                )
            else:
                query = (
                    "SELECT indexname, indexdef FROM pg_indexes "
                    "WHERE tablename = 'subscribers' AND schemaname = current_schema()"
                )
            return {name: sql for name, sql in conn.execute(text(query))}
    finally:
        engine.dispose()


def _enrol(course_id: int, email: str) -> Subscriber:
    return Subscriber(
        course_id=course_id,
        email=email,
        mailbox=email.lower(),
        timezone="UTC",
        status=SubscriberStatus.PENDING,
        created_at=NOW,
    )


def test_one_enrolment_per_course_and_address_replaces_one_per_address(
    old_url: str, people: Population
) -> None:
    assert "uq_subscribers_email_lower" in _subscriber_indexes(old_url)
    upgrade(old_url)
    indexes = _subscriber_indexes(old_url)
    assert "uq_subscribers_email_lower" not in indexes
    # "(course_id, lower(email))" on SQLite, "(course_id, lower((email)::text))" on PostgreSQL.
    unique = re.sub(r"[\s()]|::text", "", indexes["uq_subscribers_course_email_lower"].lower())
    assert unique.startswith("createuniqueindex") and unique.endswith("course_id,loweremail")

    sessions = sessions_for(old_url)
    mia = people["mid"].email  # "Mia.Mid@Example.ORG"
    # The same course cannot take the same address twice, whatever its case.
    with pytest.raises(IntegrityError), sessions() as s, s.begin():
        s.add(_enrol(1, mia.lower()))
    # A second course, made as the admin makes it, can take it.
    with sessions() as s, s.begin():
        second = create_course(s, "grief-and-loss", "Grief and loss", NOW)
        second_id = second.id
        s.add(_enrol(second_id, mia.upper()))
    assert second_id != 1
    with pytest.raises(IntegrityError), sessions() as s, s.begin():
        s.add(_enrol(second_id, mia.lower()))
    with sessions() as s:
        found = s.scalars(
            select(Subscriber.course_id).where(func.lower(Subscriber.email) == mia.lower())
        ).all()
    assert sorted(found) == [1, second_id]


def test_a_practices_own_lesson_folder_from_before_courses_becomes_course_one(
    old_url: str, people: Population, tmp_path: Path
) -> None:
    """COURSE_LESSONS_DIR in the old format: ``day:`` instead of ``key:``, no course.yaml,
    no completion or follow-up."""
    folder = tmp_path / "practice-lessons"
    folder.mkdir()
    for path in sorted(package_dir(LESSONS_PACKAGE).glob("0*.md")):
        old = path.read_text(encoding="utf-8").replace("\nkey: ", "\nday: ", 1)
        assert "\nday: " in old
        (folder / path.name).write_text(old, encoding="utf-8")
    upgrade(old_url, first_course=folder)
    with sessions_for(old_url)() as s:
        course = s.scalars(select(Course)).one()
        version = s.scalars(select(CourseVersion)).one()
    content = CourseContent.from_json(version.content)
    assert (course.slug, course.published_version_id) == ("feeling-secure", version.id)
    assert {lesson.key: lesson.slug for lesson in content.lessons} == OLD_DAYS
    assert content.completion is None and content.followup is None


# -- readers go on where they were ----------------------------------------------------------


class RecordingTransport:
    """Records every message it is asked to send (the transport interface only)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def open(self) -> RecordingTransport:
        return self

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        self.sent.append((to, message))

    def received(self, start: int = 0) -> list[tuple[str, str, str]]:
        """(public id, "kind-number[-runN][-rG]", subject) of each message from ``start``."""
        found = []
        for _to, message in self.sent[start:]:
            parsed = parse(message)
            message_id = str(parsed["Message-ID"]).strip("<>").split("@")[0]
            what, public_id = message_id.split(".", 1)
            found.append((public_id, what, str(parsed["Subject"])))
        return found

    def by_reader(self, start: int = 0) -> dict[str, list[str]]:
        """Public id -> the emails it got, in order."""
        found: dict[str, list[str]] = {}
        for public_id, what, _subject in self.received(start):
            found.setdefault(public_id, []).append(what)
        return found

    def subjects(self, public_id: str) -> list[str]:
        """The subjects of the emails one reader got, in order."""
        return [subject for pid, _what, subject in self.received() if pid == public_id]


def _run(sender: Sender, clock: FakeClock, until: datetime) -> None:
    """Tick every hour (send hours are on the hour) until ``until``."""
    while clock() < until:
        sender.tick()
        clock.advance(hours=1)


def _sent_times(url: str, subscriber_id: int) -> list[datetime]:
    """When the reader's lessons went out after the upgrade."""
    with sessions_for(url)() as s:
        times = s.scalars(
            select(Delivery.sent_at).where(
                Delivery.subscriber_id == subscriber_id, Delivery.kind == "lesson"
            )
        )
        # Compared here, not in SQL: on SQLite the sender stores sent_at through the
        # driver's own adapter ("...+00:00"), which sorts before the ".000000" of the rest.
        return sorted(t for t in times if t is not None and t >= NOW)


def test_each_reader_goes_on_exactly_where_they_were(
    old_url: str, people: Population, before: Rows, tmp_path: Path
) -> None:
    upgrade(old_url)
    settings = engine_settings(tmp_path, old_url)
    clock = FakeClock(now=NOW)
    transport = RecordingTransport()
    sender = make_sender(settings, transport, clock)
    sessions = sessions_for(old_url)
    # The signup that waited across the upgrade is decided by the next tick, for course 1.
    assert decide_signups(sessions, settings, clock=clock) == 1
    with sessions() as s:
        sam = s.scalars(select(Subscriber).where(Subscriber.email == "sam@example.com")).one()
    assert (sam.course_id, sam.status) == (1, SubscriberStatus.PENDING)

    # Two days: the paused reader gets nothing.
    _run(sender, clock, NOW + timedelta(days=2))
    paused = people["paused"]
    assert paused.public_id not in transport.by_reader()
    resumed_at = len(transport.sent)
    with sessions() as s, s.begin():
        paul = s.get(Subscriber, paused.id)
        assert paul is not None and paul.status == SubscriberStatus.PAUSED
        course = courses_for(settings).get(1)
        assert course is not None
        assert resume(s, paul, clock(), settings=settings, course=course)
    _run(sender, clock, NOW + timedelta(days=23))

    got = transport.by_reader()
    after_course = ["completion-0", "followup-0"]
    expected = {
        # Lesson 3 next, never 1 or 2 again, then the rest and what comes after the course.
        people["mid"].public_id: ["lesson-3", "lesson-4", "lesson-5", *after_course],
        # Nothing until resumed, then lesson 3.
        paused.public_id: ["lesson-3", "lesson-4", "lesson-5", *after_course],
        # Run 2 goes on with its own lesson 2 (run 1 had lessons 1-3).
        people["returning"].public_id: [
            f"{what}-run2" for what in ("lesson-2", "lesson-3", "lesson-4", "lesson-5")
        ]
        + [f"{what}-run2" for what in after_course],
        # The operator's queued re-send goes out once; nothing else.
        people["resend_queued"].public_id: ["lesson-4-r1"],
        # The confirmation queued before the upgrade, and the one for the waiting signup.
        people["pending_queued"].public_id: ["confirm-1"],
        sam.public_id: ["confirm-1"],
    }
    # Pending (already asked), completed, unsubscribed, bounced and failed: nothing.
    assert got == expected
    assert paused.public_id in transport.by_reader(resumed_at)

    # "Day n of 5" is still the old day, with the old day's lesson.
    assert (
        transport.subjects(people["mid"].public_id)[0] == "Day 3 of 5: Becoming kinder to yourself"
    )
    returning = transport.subjects(people["returning"].public_id)
    assert returning[0] == "Day 2 of 5: Getting to know your triggers"

    # One a day at the reader's own send hour: 08:00 in Berlin, 19:00 in New York (Paul's
    # own hour), never a burst after the pause.
    berlin, new_york = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
    mia_times = _sent_times(old_url, people["mid"].id)
    assert [t.astimezone(berlin).strftime("%m-%d %H:%M") for t in mia_times] == [
        "03-02 08:00",
        "03-03 08:00",
        "03-04 08:00",
    ]
    paul_times = _sent_times(old_url, paused.id)
    assert [t.astimezone(new_york).strftime("%m-%d %H:%M") for t in paul_times] == [
        "03-04 19:00",
        "03-05 19:00",
        "03-06 19:00",
    ]

    with sessions() as s:
        statuses = {
            label: s.get(Subscriber, reader.id).status  # type: ignore[union-attr]
            for label, reader in people.readers.items()
        }
        failed = s.get(Delivery, people.rows["failed_delivery"])
        mia_old = s.execute(
            select(Delivery.id, Delivery.status, Delivery.sent_at, Delivery.attempts)
            .where(Delivery.subscriber_id == people["mid"].id, Delivery.number < 3)
            .where(Delivery.kind == "lesson")
            .order_by(Delivery.number)
        ).all()
    assert statuses == {
        "pending": "pending",
        "pending_queued": "pending",
        "mid": "completed",
        "paused": "completed",
        "completed": "completed",
        "resend_queued": "completed",
        "unsubscribed": "unsubscribed",
        "bounced": "bounced",
        "failed": "active",
        "returning": "completed",
    }
    assert failed is not None and failed.status == DeliveryStatus.FAILED
    # Lessons 1-2 of the mid-course reader are the rows from before, untouched.
    old_mia = [
        (d["id"], d["status"], _utc(d["sent_at"]), d["attempts"])
        for d in before["deliveries"]
        if d["subscriber_id"] == people["mid"].id and d["kind"] == "lesson" and d["number"] < 3
    ]
    assert len(old_mia) == 2
    assert [tuple(row) for row in mia_old] == old_mia


def test_events_recorded_after_the_upgrade_belong_to_the_readers_course(
    old_url: str, people: Population, tmp_path: Path
) -> None:
    """Per-course reports count events by ``events.course_id``: a migrated reader's new
    events (here: resuming) must land in course 1, like the migrated ones."""
    upgrade(old_url)
    settings = engine_settings(tmp_path, old_url)
    sessions = sessions_for(old_url)
    with sessions() as s, s.begin():
        paul = s.get(Subscriber, people["paused"].id)
        course = courses_for(settings).get(1)
        assert paul is not None and course is not None
        assert resume(s, paul, NOW, settings=settings, course=course)
    with sessions() as s:
        resumed = s.scalars(select(Event).where(Event.kind == "resume")).one()
    assert (resumed.subscriber_id, resumed.course_id) == (people["paused"].id, 1)


# -- the downgrade --------------------------------------------------------------------------


def test_downgrade_gives_back_the_database_as_it_was(
    old_url: str, people: Population, before: Rows
) -> None:
    upgrade(old_url)
    _downgrade(old_url)
    assert snapshot(old_url) == before  # no courses tables, no new columns, every row
    assert "uq_subscribers_email_lower" in _subscriber_indexes(old_url)
    # One enrolment per address again.
    engine = create_engine(old_url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            subscribers = reflect(conn).tables["subscribers"]
            conn.execute(
                insert(subscribers).values(
                    public_id="again",
                    email=people["mid"].email.lower(),
                    timezone="UTC",
                    status="pending",
                    created_at=NOW,
                    confirm_count=0,
                )
            )
    finally:
        engine.dispose()
    # And up again: the same rows, course 1 seeded once more.
    upgrade(old_url)
    after = snapshot(old_url)
    assert _old_columns(after, before) == before
    assert [(v["course_id"], v["number"]) for v in after["course_versions"]] == [(1, 1)]


def test_downgrade_removes_the_readers_of_other_courses_and_keeps_course_one(
    old_url: str, people: Population, before: Rows
) -> None:
    upgrade(old_url)
    sessions = sessions_for(old_url)
    with sessions() as s, s.begin():
        # Written by hand with its id: creating a course is tested above; this test is about
        # what the downgrade does with it.
        s.execute(
            insert(Course).values(
                id=2,
                slug="grief-and-loss",
                title="Grief and loss",
                description="",
                language="en",
                status=CourseStatus.PUBLISHED,
                weekdays_only=False,
                created_at=NOW,
            )
        )
        also_on_one = _enrol(2, people["mid"].email.lower())  # a person on both courses
        only_on_two = _enrol(2, "nina@example.org")
        s.add_all([also_on_one, only_on_two])
        s.flush()
        for reader in (also_on_one, only_on_two):
            s.add(
                Delivery(
                    subscriber_id=reader.id,
                    kind="lesson",
                    number=1,
                    status=DeliveryStatus.SENT,
                    due_at=NOW,
                    sent_at=NOW,
                    created_at=NOW,
                )
            )
            s.add(LessonProgress(subscriber_id=reader.id, lesson=1, note="course two"))
            s.add(
                Event(subscriber_id=reader.id, course_id=2, kind="view", lesson=1, created_at=NOW)
            )
            s.add(Reply(subscriber_id=reader.id, text="hello", received_at=NOW))
        s.add(Event(subscriber_id=None, course_id=2, kind="checkin", value="same", created_at=NOW))
        s.add(SignupRequest(course_id=2, email="otto@example.org", created_at=NOW))
        s.execute(
            insert(reflect(s.connection()).tables["audit_log"]).values(
                operator_id=people.rows["owner"],
                action="view_notes",
                subscriber_id=only_on_two.id,
                created_at=NOW,
            )
        )
    _downgrade(old_url)
    after = snapshot(old_url)
    # Course 2's enrolments, and with them their deliveries, progress, replies, events and
    # signup requests, are gone; course 1's rows are exactly as they were.
    audit = after.pop("audit_log")
    assert after == {name: rows for name, rows in before.items() if name != "audit_log"}
    # The audit trail outlives the reader, anonymous (its foreign key sets NULL).
    assert audit[: len(before["audit_log"])] == before["audit_log"]
    assert [row["subscriber_id"] for row in audit[len(before["audit_log"]) :]] == [None]


def test_downgrade_leaves_no_mail_queued_that_the_old_sender_cannot_send(
    old_url: str, people: Population, tmp_path: Path
) -> None:
    """Before 0011 the only kinds of email were "confirm" and "lesson": the sender of 0010
    raises on any other kind (``DeliveryKind(item.kind)``), so a completion or follow-up
    email queued at the downgrade would be retried for a day and then fail, on the
    dashboard and in /healthz."""
    upgrade(old_url)
    settings = engine_settings(tmp_path, old_url)
    clock = FakeClock(now=NOW)
    # The mid-course reader finishes: their completion email is queued for the next day.
    _run(make_sender(settings, RecordingTransport(), clock), clock, NOW + timedelta(days=3))
    with sessions_for(old_url)() as s:
        queued = s.scalars(
            select(Delivery.kind).where(
                Delivery.subscriber_id == people["mid"].id,
                Delivery.status == DeliveryStatus.QUEUED,
            )
        ).all()
    assert queued == ["completion"]
    _downgrade(old_url)
    engine = create_engine(old_url)
    try:
        with engine.connect() as conn:
            kinds = (
                conn.execute(text("SELECT DISTINCT kind FROM deliveries WHERE status = 'queued'"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert set(kinds) <= {"confirm", "lesson"}
