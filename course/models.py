"""The database tables: courses and their versions, subscribers (a person on one course),
their deliveries, progress and events, and the scheduler's heartbeat."""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from course.crypto import EncryptedText


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def new_public_id() -> str:
    """An unguessable identifier for links (never the row id, never the address)."""
    return secrets.token_urlsafe(16)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always hands back aware UTC datetimes.

    SQLite has no time zones; without this, values read back would be naive and every
    comparison with ``utcnow()`` would raise.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"  # signed up, has not confirmed yet
    ACTIVE = "active"  # receiving lessons
    PAUSED = "paused"
    COMPLETED = "completed"  # received the last lesson
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # the mail server said the address does not exist
    ERASED = "erased"  # erased while still on the course: nothing more is sent (privacy.erase)


class DeliveryKind(enum.StrEnum):
    CONFIRM = "confirm"
    LESSON = "lesson"
    COMPLETION = "completion"  # after the last lesson (number 0)
    FOLLOWUP = "followup"  # "How are you, two weeks on?" (number 0)


class CourseStatus(enum.StrEnum):
    DRAFT = "draft"  # being written: no signup page, nobody can join
    PUBLISHED = "published"  # open for signups
    ARCHIVED = "archived"  # closed for new signups; readers already on it finish it


class Course(Base):
    """A course: its settings, and a pointer to the published version of its content.

    The lessons live in versions (``course_versions``), never edited in place: staff edit
    a draft (``draft``, the same JSON as a version), and publishing stores it as a new
    version. Courses are never deleted (readers, deliveries and events refer to them);
    they are archived.
    """

    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(16), default="en")
    status: Mapped[str] = mapped_column(String(16), default=CourseStatus.DRAFT)
    booking_url: Mapped[str | None] = mapped_column(String(2000))  # None: COURSE_BOOKING_URL
    send_hour: Mapped[int | None] = mapped_column(Integer)  # None: COURSE_SEND_HOUR
    # Lessons only on Monday to Friday, in the reader's time zone (course.schedule).
    weekdays_only: Mapped[bool] = mapped_column(Boolean, default=False)
    # No foreign key: versions point at their course, and this points back (a cycle).
    published_version_id: Mapped[int | None] = mapped_column(Integer)
    # The working copy staff edit (course.courses.CourseContent as JSON); None: none open.
    draft: Mapped[str | None] = mapped_column(Text)
    draft_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CourseVersion(Base):
    """One published version of a course's content, kept for good: who published it and
    when. Readers always get the lesson as the published version says at the moment it is
    sent."""

    __tablename__ = "course_versions"
    __table_args__ = (UniqueConstraint("course_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)  # course.courses.CourseContent as JSON
    author: Mapped[str] = mapped_column(String(320))  # an operator's address, or a command
    operator_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for due_at; while claimed, due_at is the lease's end
    SENT = "sent"  # the SMTP server accepted it
    # "Has this reader received lesson n" is ``sent_at IS NOT NULL``, not ``status == sent``:
    # an operator's re-send puts a sent row back in the queue but it stays received.
    FAILED = "failed"  # gave up: permanent rejection or retries exhausted
    CANCELLED = "cancelled"  # the subscriber left or paused before it went out


class Subscriber(Base):
    """One person on one course (an enrolment): a person who takes two courses has two
    rows with the same address, each with its own status, run, progress and links. What
    belongs to the person (a bounce, an erasure, the time zone) is applied to all of them
    (course.people)."""

    __tablename__ = "subscribers"
    # One enrolment per course and mailbox: addresses that differ only in case are the
    # same person.
    __table_args__ = (
        Index(
            "uq_subscribers_course_email_lower",
            "course_id",
            func.lower(text("email")),
            unique=True,
        ),
        # A person's enrolments on every course (course.subscriptions.enrolments_of).
        Index("ix_subscribers_email_lower", func.lower(text("email"))),
        # The hourly purge of unconfirmed signups (course.privacy.purge_pending) reads only
        # pending rows, by the time of their last confirmation email: its cost follows what
        # it deletes, not the number of readers.
        Index(
            "ix_subscribers_pending_since",
            func.coalesce(text("confirm_sent_at"), text("created_at")),
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign key constraint: courses are never deleted, and SQLite cannot add one to
    # this table without rebuilding it (see migration 0011).
    course_id: Mapped[int] = mapped_column(Integer, index=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    email: Mapped[str] = mapped_column(String(320))
    # The mailbox the address delivers to (course.mailboxes): confirmation caps count per
    # mailbox and per its domain, so variants of one address share them.
    mailbox: Mapped[str] = mapped_column(String(320), index=True, default="")
    # Which run of the course the reader is on: coming back after leaving starts a new run
    # (lesson 1 again) and keeps the earlier runs' history.
    run: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Soft bounces since the reader last showed they read their mail (a click, a page);
    # COURSE_SOFT_BOUNCE_LIMIT in a row count as a hard bounce (course.bounces).
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Whose crisis resources the reader sees (ISO country code): guessed from the time zone
    # at signup, changeable on the progress page (course.crisis).
    country: Mapped[str | None] = mapped_column(String(2))
    # The consent record (docs/privacy.md): where the signup came from (hosted, website,
    # api, import) and which wording the form showed (consent_texts); the consent itself is
    # the click on the confirmation page, at confirmed_at. No IP address is kept.
    consent_source: Mapped[str | None] = mapped_column(String(32))
    consent_origin: Mapped[str | None] = mapped_column(String(120))
    consent_text_hash: Mapped[str | None] = mapped_column(String(64))
    # Set when the reader's personal data was removed after the retention period.
    anonymized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    name: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))
    send_hour: Mapped[int | None] = mapped_column(Integer)  # None: the practice's default
    source: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirm_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirm_count: Mapped[int] = mapped_column(Integer, default=0)
    # "Pause until ...": lessons resume on their own at the first send hour after this.
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )


class Delivery(Base):
    """One email to one subscriber: a confirmation (number = how many asked), a lesson
    (number = the lesson's key: its stable id in the course, which stays when lessons are
    reordered), or the completion or follow-up email (number 0). The unique constraint is
    what makes "each lesson at most once" a property of the database rather than of the
    code."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "kind", "number", "run"),
        # The due query reads only queued rows in due order, so its cost follows the number
        # of queued rows, not the number of subscribers.
        Index(
            "ix_deliveries_queued_due",
            "due_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # Health checks count recent failures.
        Index(
            "ix_deliveries_failed_at",
            "failed_at",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    first_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # retry window start
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when it was given up
    # How many times an operator asked to send this again. Part of the Message-ID, so a
    # deliberate re-send is not hidden by mail apps as a duplicate of the first copy.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    run: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # see Subscriber.run
    # Sends that timed out after the end of DATA: the relay may have stored them.
    unacknowledged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    subscriber: Mapped[Subscriber] = relationship(back_populates="deliveries")


def lesson_received() -> ColumnElement[bool]:
    """The one rule for "this reader has received this lesson": a lesson delivery that the
    relay accepted at least once (``sent_at`` is set). Not ``status == sent``: an operator's
    re-send puts a sent row back in the queue, and it stays received."""
    return and_(Delivery.kind == DeliveryKind.LESSON, Delivery.sent_at.is_not(None))


class CheckIn(enum.StrEnum):
    """The three answers to "How did today's lesson land?"."""

    LIGHTER = "lighter"
    SAME = "same"
    STIRRED = "stirred"

    @property
    def label(self) -> str:
        return {"lighter": "Lighter", "same": "About the same", "stirred": "It stirred things up"}[
            self.value
        ]


class LessonProgress(Base):
    """What a reader did with one lesson: marked it done, checked in, wrote a note.

    One row per (subscriber, lesson); a new check-in answer replaces the earlier one. The
    history of every change is in ``events``.
    """

    __tablename__ = "lesson_progress"
    __table_args__ = (UniqueConstraint("subscriber_id", "lesson", "run"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    lesson: Mapped[int] = mapped_column(Integer)
    run: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # see Subscriber.run
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checkin: Mapped[str | None] = mapped_column(String(16))
    checkin_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(EncryptedText)  # encrypted at rest
    note_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which risk phrases the note matched (their ids, never words from the note).
    risk: Mapped[str | None] = mapped_column(String(200))


class EventKind(enum.StrEnum):
    CONFIRM = "confirm"  # the reader confirmed: a run of the course starts (value "run-N")
    DONE = "done"
    CHECKIN = "checkin"
    NOTE = "note"
    PAUSE = "pause"
    RESUME = "resume"
    UNSUBSCRIBE = "unsubscribe"
    BOOK = "book"
    VIEW = "view"
    SCHEDULE = "schedule"  # send hour or time zone changed
    LINK_SCAN = "link_scan"  # a mail scanner fetched the links; its clicks were discarded
    RESEND = "resend"  # an operator re-sent a lesson
    EXPORT = "export"  # data exported (by the reader or an operator)
    ERASE = "erase"  # an operator erased a subscriber (the event itself is anonymous)
    BOUNCE = "bounce"  # a bounce arrived after sending; value: "hard:5.1.1" or "soft:4.2.2"
    COMPLAINT = "complaint"  # a spam complaint (feedback loop); value: the feedback type
    REPLY = "reply"  # the reader wrote back (the text is in replies, never here)
    AUTO_REPLY = "auto_reply"  # an out-of-office answer: counted, not shown as a reply
    SNOOZE = "snooze"  # "pause until ..." (value: the local date it resumes)
    FOLLOWUP = "followup"  # the answer to the follow-up after the course (value: answer)
    # The booking system reported a booking (course.bookings); via: its source.
    BOOKING_CONFIRMED = "booking_confirmed"
    BOOKING_CANCELLED = "booking_cancelled"
    BOOKING_RESCHEDULED = "booking_rescheduled"  # still booked, at another time
    # A run the reader had completed, recorded when they start the next one (which clears
    # completed_at): value "run-N", at the time it was completed (course.reports counts it).
    COMPLETED = "completed"


class Event(Base):
    """One recorded action, for reports. An erased reader's events stay with their row,
    which names nobody (course.privacy.erase); an event loses its reader only when an
    unconfirmed signup is deleted (its ``course_id`` still places it).
    ``value`` never holds personal text: only an answer such as "lighter"."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    # The course, kept when the reader is erased, so per-course counts still add up.
    course_id: Mapped[int | None] = mapped_column(Integer, index=True)
    lesson: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24), index=True)
    value: Mapped[str | None] = mapped_column(String(64))
    via: Mapped[str] = mapped_column(String(16), default="page")  # link, page, one-click, ...
    operator_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Operator(Base):
    """A person at the practice who may use the admin pages."""

    __tablename__ = "operators"
    __table_args__ = (Index("uq_operators_email_lower", func.lower(text("email")), unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The generation of this operator's login sessions. A session names the generation it
    # was made in (``AdminUser.get_id``); logging out raises it, which ends every session
    # and remember-me cookie made before, including copies of the cookie.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What they may do: "owner", "therapist" or "assistant" (course.operators.Role). The
    # app always names a role; the database's own default is the least one, for a row
    # written by hand (migration 0010 made the accounts of before it owners).
    role: Mapped[str] = mapped_column(String(16), server_default="assistant")
    # Two-factor sign-in (TOTP, course.operators): the shared secret, encrypted at rest
    # with the data keys like notes; deferred, so loading an operator never decrypts it.
    totp_secret: Mapped[str | None] = mapped_column(EncryptedText, deferred=True)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The time step of the last code accepted: a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    # The unused recovery codes, as a JSON list of password hashes (never the codes).
    recovery_codes: Mapped[str | None] = mapped_column(Text, deferred=True)
    # The language the admin speaks to them (course.i18n); None: not chosen, English.
    language: Mapped[str | None] = mapped_column(String(16))


class Reply(Base):
    """What a reader wrote back, collected from the replies mailbox: private, like a note
    (shown only to staff, exported with the reader's data, erased with them)."""

    __tablename__ = "replies"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    lesson: Mapped[int | None] = mapped_column(Integer)  # the lesson they answered, if known
    subject: Mapped[str | None] = mapped_column(EncryptedText)  # encrypted at rest (Text)
    text: Mapped[str] = mapped_column(EncryptedText)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    risk: Mapped[str | None] = mapped_column(String(200))  # matched risk phrase ids


class ConsentText(Base):
    """A version of the signup form's wording, kept by its hash for the consent records."""

    __tablename__ = "consent_texts"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CareMark(Base):
    """Staff's mark on an item of the "Needs a look" list: seen, or contacted, by whom."""

    __tablename__ = "care_marks"

    item: Mapped[str] = mapped_column(String(64), primary_key=True)  # e.g. "note:12"
    status: Mapped[str] = mapped_column(String(16))  # "seen" or "contacted"
    operator_id: Mapped[int | None] = mapped_column(Integer)
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CareAlert(Base):
    """A risk phrase matched: an alert waits to be sent (grouped) to COURSE_CARE_EMAIL."""

    __tablename__ = "care_alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InboundMessage(Base):
    """A message from a bounce or replies mailbox, or a provider's webhook event, that was
    handled: its fingerprint makes sure nothing is applied twice, even when the mailbox
    could not be told in time (a crash between the database and the mailbox)."""

    __tablename__ = "inbound_messages"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))  # "bounces", "replies", "mailgun", ...
    mailbox_id: Mapped[str | None] = mapped_column(String(200))  # POP3 keeps these on the server
    outcome: Mapped[str] = mapped_column(String(32))  # what it did; "kept" when unusable
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class SignupRequest(Base):
    """A signup as it arrived, before anything about it is decided.

    ``POST /subscribe`` only stores this row and answers, so the answer takes the same
    time whether or not the address is known (course.web.public); the decision
    (course.subscriptions.subscribe) is made right after the answer, or by the next
    scheduler tick if that process died first. Rows live for seconds.
    """

    __tablename__ = "signup_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(64))
    consent_source: Mapped[str | None] = mapped_column(String(32))  # see Subscriber
    consent_origin: Mapped[str | None] = mapped_column(String(120))
    consent_text_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Suppression(Base):
    """A mailbox that opted out or bounced, kept as a keyed hash only (course.mailboxes).

    It outlives the reader's data (an erasure, the anonymisation of former readers) so an
    operator's import can never put them back. Only their own click on a new confirmation
    link removes it.
    """

    __tablename__ = "suppressions"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))  # unsubscribed, bounced
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditLog(Base):
    """Who at the practice read what: every view of a reader's notes or replies (their
    page, the "Needs a look" list, an export) and every change to staff accounts
    (course.audit). Never holds what a reader wrote. A reader's erasure clears
    ``subscriber_id`` and keeps the row; ``operator_id`` has no foreign key, so the trail
    outlives a removed staff account."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(32))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    detail: Mapped[str | None] = mapped_column(String(200))  # e.g. "staff #4: role therapist"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class SchedulerTick(Base):
    """The last tick of each sender process, for health checks and the dashboard."""

    __tablename__ = "scheduler_ticks"

    worker: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_tick_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_summary: Mapped[str | None] = mapped_column(Text)


class Booking(Base):
    """A session booked in the practice's booking system, as its webhook reported it
    (course.bookings): the provider's id, the reader it was matched to and the lesson it
    is attributed to. Nothing else about the booking (no name, no time of the session).
    An erased reader's bookings stay with their row, which then names nobody
    (course.privacy.erase)."""

    __tablename__ = "bookings"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # "cal.com", "calendly", "generic"
    external_id: Mapped[str] = mapped_column(String(255))  # the provider's booking id
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    course_id: Mapped[int | None] = mapped_column(Integer, index=True)
    lesson: Mapped[int | None] = mapped_column(Integer)  # None: not attributed to a lesson
    status: Mapped[str] = mapped_column(String(16))  # confirmed, cancelled, rescheduled
    booked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
