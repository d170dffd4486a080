"""Signing up, confirming, and a subscriber's place in their course.

A subscriber is one person on one course (course.models.Subscriber); what belongs to the
person across their courses is in course.people. Every function here takes a session and
never commits: the web view, the CLI command or the scheduler tick that calls it owns the
transaction.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import (
    Connection,
    Insert,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from course.config import Settings
from course.courses import Catalogue, PublishedCourse
from course.crisis import country_for_timezone
from course.mailboxes import fingerprints, mailbox
from course.models import (
    ConsentText,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    EventKind,
    SignupRequest,
    Subscriber,
    SubscriberStatus,
    Suppression,
    lesson_received,
    utcnow,
)
from course.progress import record_event
from course.schedule import Rhythm, first_lesson_due, lesson_due, not_before, resume_due
from course.schedule import send_hour as effective_send_hour
from course.timezones import known_timezones

log = logging.getLogger("course.subscriptions")

MAX_NAME = 100
ENCODED_WORD = "=?"
MAX_SOURCE = 64
#: Confirmation emails one address may receive in 24 hours, whoever asks for them: the
#: signup form cannot be used to flood someone's inbox.
MAX_CONFIRMATIONS_PER_DAY = 3
#: How long "Never email me again" (unsubscribing from a confirmation email) blocks new
#: confirmation emails to that address.
NEVER_AGAIN = timedelta(days=90)
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")


class ValidationFailed(ValueError):
    """Signup input that cannot be accepted; ``errors`` maps each field to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class SignupData:
    email: str
    name: str | None
    timezone: str | None
    source: str | None
    consent: Consent | None = None
    course_id: int = 1  # the course to join (the web layer checks it is open)


@dataclass(frozen=True)
class Consent:
    """Where a signup came from, for the consent record (docs/privacy.md): ``source`` is
    "hosted" (our form), "website" (a form on an allowed origin), "api" (JSON) or "import";
    ``origin`` the website it came from; ``text_hash`` the form's wording (consent_texts).
    No IP address: it is not needed to show consent."""

    source: str
    origin: str | None
    text_hash: str | None


def consent_text_hash(text: str) -> str:
    """The hash a version of the signup wording is kept under."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def keep_consent_text(session: Session, text: str, now: datetime) -> str:
    """Store this version of the signup wording once; returns its hash."""
    digest = consent_text_hash(text)
    if session.get(ConsentText, digest) is None:
        session.add(ConsentText(hash=digest, text=text, first_seen=now))
    return digest


def _clean_text(value: object, field: str, limit: int, errors: dict[str, str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors[field] = "must be text"
        return None
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        return None
    if len(value) > limit:
        errors[field] = f"must be at most {limit} characters"
        return None
    # Control characters (CR, LF, NUL, ...) have no place in a name and could break a header;
    # nor does "=?", the start of an RFC 2047 encoded word, which mail software decodes
    # inside headers (CPython before 3.11.10 even writes it out as CR/LF: CVE-2024-6923).
    if ENCODED_WORD in value or not all(allowed_character(ch) for ch in value):
        errors[field] = "contains characters that are not allowed"
        return None
    return value


#: Format characters a name may need: the zero-width non-joiner and joiner shape Persian,
#: Indic and emoji text. Other format characters (bidi overrides, invisible marks) are
#: refused: they can make a name display as something else.
_JOINERS = frozenset("\u200c\u200d")
_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def allowed_character(ch: str) -> bool:
    """Whether ``ch`` may appear in a name or other short text a reader types: no control,
    format (but the joiners), surrogate, private-use or unassigned code point."""
    return ch in _JOINERS or unicodedata.category(ch) not in _REFUSED_CATEGORIES


def validate_signup(data: Mapping[str, object], *, check_deliverability: bool) -> SignupData:
    """Check and normalise signup fields, or raise :class:`ValidationFailed`.

    Unknown fields are ignored. The address is normalised by email-validator (lower-cased
    domain, Unicode normalisation), which is what makes a second signup with different
    casing of the domain find the same subscriber.
    """
    errors: dict[str, str] = {}
    raw_email = data.get("email")
    email = ""
    if raw_email is None or (isinstance(raw_email, str) and not raw_email.strip()):
        errors["email"] = "Please enter your email address."
    elif not isinstance(raw_email, str):
        errors["email"] = "The email address must be text."
    elif len(raw_email) > 320:
        errors["email"] = "That email address is too long."
    elif not all(allowed_character(ch) for ch in raw_email.strip()):
        errors["email"] = "That email address contains characters we cannot accept."
    else:
        try:
            result = validate_email(raw_email.strip(), check_deliverability=check_deliverability)
            email = result.normalized
        except EmailNotValidError as exc:
            errors["email"] = f"That doesn't look like a valid email address: {exc}"
        else:
            if ENCODED_WORD in email:
                errors["email"] = "That email address contains characters we cannot accept."
    name = _clean_text(data.get("name"), "name", MAX_NAME, errors)
    tz = _clean_text(data.get("timezone"), "timezone", 64, errors)
    if tz is not None and tz not in known_timezones():
        errors["timezone"] = "must be an IANA time zone name such as Europe/Berlin"
    source = _clean_text(data.get("source"), "source", MAX_SOURCE, errors)
    if source is not None and not _SOURCE.match(source):
        errors["source"] = "may only contain letters, digits and . _ - : /"
    if errors:
        raise ValidationFailed(errors)
    return SignupData(email=email, name=name, timezone=tz, source=source)


def find_by_email(session: Session, email: str, course_id: int) -> Subscriber | None:
    """The subscriber with this (normalised) address on this course, if any.

    The local part is compared case-insensitively: almost every mail system treats
    ``Ana@`` and ``ana@`` as one mailbox, and two enrolments would mean two courses.
    """
    return session.scalars(
        select(Subscriber).where(
            Subscriber.course_id == course_id, func.lower(Subscriber.email) == email.lower()
        )
    ).first()


def rhythm_of(subscriber: Subscriber, course: PublishedCourse, settings: Settings) -> Rhythm:
    """When this reader's lessons of this course go out: their own send hour, else the
    course's, else the practice's; in their time zone; weekdays only if the course says so."""
    return Rhythm(
        tz=ZoneInfo(subscriber.timezone),
        hour=effective_send_hour(subscriber.send_hour, course.send_hour or settings.send_hour),
        weekdays_only=course.weekdays_only,
        interval=settings.lesson_interval,
    )


def subscribe(
    session: Session,
    data: SignupData,
    *,
    now: datetime,
    default_timezone: str,
    resend_after: timedelta,
    caps: ConfirmationCaps | None = None,
) -> Subscriber:
    """Decide what a signup request does, and queue a confirmation email when one is needed.

    The caller answers the same way whatever happens here, so nobody can learn from the
    response whether an address is enrolled. **A request changes nothing about a reader who
    is already known**: not their name, time zone, progress, history or opt-out. It can only
    queue a confirmation email; the reader's own click on it (:func:`confirm`) starts the
    course, or a new run of it for someone who had left. A confirmation is queued for a new
    address, for a pending one whose last confirmation is older than ``resend_after``, and
    for an address that had left (unsubscribed or bounced); never more often than the
    ``caps`` allow, whoever is asking (``None``: no caps, for an operator's import).
    """
    subscriber = find_by_email(session, data.email, data.course_id)
    if subscriber is None:
        timezone = data.timezone or default_timezone
        consent = data.consent
        subscriber = Subscriber(
            course_id=data.course_id,
            email=data.email,
            mailbox=mailbox(data.email),
            name=data.name,
            timezone=timezone,
            country=country_for_timezone(timezone),
            consent_source=consent.source if consent else None,
            consent_origin=consent.origin if consent else None,
            consent_text_hash=consent.text_hash if consent else None,
            source=data.source,
            status=SubscriberStatus.PENDING,
            created_at=now,
            confirm_count=0,
        )
        # The caps are checked before the insert (a new address has no confirmations of
        # its own yet), so the confirmation's fields go in with it: no UPDATE after.
        allowed = caps is None or caps.allow(session, subscriber, now)
        if allowed:
            _count_confirmation(subscriber, now)
        session.add(subscriber)
        session.flush()
        if allowed:
            _queue_confirmation_delivery(session, subscriber, now)
        return subscriber
    if subscriber.status not in (
        SubscriberStatus.PENDING,
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.BOUNCED,
        SubscriberStatus.COMPLETED,  # taking the course again: a new run, after a click
    ):
        return subscriber  # on the course now: there is nothing to confirm
    if (
        subscriber.status == SubscriberStatus.UNSUBSCRIBED
        and subscriber.confirmed_at is None
        and subscriber.unsubscribed_at is not None
        and now - subscriber.unsubscribed_at < NEVER_AGAIN
    ):
        # They never confirmed and chose "Never email me again" in the confirmation: someone
        # else may be using their address. Honour it for a long while, whoever asks.
        return subscriber
    last = subscriber.confirm_sent_at
    coming_back = subscriber.status != SubscriberStatus.PENDING
    if (
        last is not None
        and now - last < resend_after
        and (not coming_back or _asked_since(subscriber))
    ):
        return subscriber  # the confirmation just sent is still the one to click
    if caps is None or caps.allow(session, subscriber, now):
        queue_confirmation(session, subscriber, now)
    return subscriber


def _asked_since(subscriber: Subscriber) -> bool:
    """Whether the last confirmation was asked for after the reader left (or finished)."""
    left = subscriber.unsubscribed_at or subscriber.completed_at
    sent = subscriber.confirm_sent_at
    return left is not None and sent is not None and sent > left


@dataclass(frozen=True)
class ConfirmationCaps:
    """How many confirmation emails may go out, whoever asks for them: per mailbox a day
    (``ana+x@gmail.com`` and ``a.na@gmail.com`` are one mailbox, see course.mailboxes), and
    per recipient domain an hour, so the form cannot be used to flood anyone's inbox or a
    company's mail server. Over a cap, the request is dropped quietly (logged, never shown):
    a real person still has the confirmation emails already sent, and can ask again later."""

    per_mailbox_per_day: int = MAX_CONFIRMATIONS_PER_DAY
    per_domain_per_hour: int = 100

    def allow(self, session: Session, subscriber: Subscriber, now: datetime) -> bool:
        """Whether one more confirmation to this subscriber's mailbox is within the caps."""
        box = subscriber.mailbox or mailbox(subscriber.email)
        domain = box.rpartition("@")[2]
        confirmations = (
            select(func.count()).select_from(Delivery).where(Delivery.kind == DeliveryKind.CONFIRM)
        )
        # Both counts in one round trip.
        per_mailbox, per_domain = session.execute(
            select(
                confirmations.where(
                    Delivery.subscriber_id.in_(
                        select(Subscriber.id).where(Subscriber.mailbox == box)
                    ),
                    Delivery.created_at > now - timedelta(days=1),
                ).scalar_subquery(),
                confirmations.join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(
                    Delivery.created_at > now - timedelta(hours=1),
                    Subscriber.mailbox.endswith(f"@{domain}", autoescape=True),
                )
                .scalar_subquery(),
            )
        ).one()
        if int(per_mailbox or 0) >= self.per_mailbox_per_day:
            log.info("confirmation not sent reason=mailbox-cap")
            return False
        if int(per_domain or 0) >= self.per_domain_per_hour:
            log.warning("confirmation not sent reason=domain-cap domain=%s", domain)
            return False
        return True


def queue_confirmation(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Queue a confirmation email; it goes out on the scheduler's next tick."""
    _count_confirmation(subscriber, now)
    _queue_confirmation_delivery(session, subscriber, now)


def _count_confirmation(subscriber: Subscriber, now: datetime) -> None:
    subscriber.confirm_count = (subscriber.confirm_count or 0) + 1
    subscriber.confirm_sent_at = now


def _queue_confirmation_delivery(session: Session, subscriber: Subscriber, now: datetime) -> None:
    session.add(
        Delivery(
            subscriber_id=subscriber.id,
            kind=DeliveryKind.CONFIRM,
            number=subscriber.confirm_count,
            run=subscriber.run,
            status=DeliveryStatus.QUEUED,
            due_at=now,
            attempts=0,
            created_at=now,
        )
    )


def confirm(
    session: Session,
    public_id: str,
    now: datetime,
    number: int | None = None,
    secret_keys: Sequence[str] = (),
    *,
    courses: Catalogue,
    settings: Settings,
) -> Subscriber | None:
    """The reader's own click on a confirmation link: start the course (its first lesson
    when its delay says, at once by default), or, for a reader who had left or finished
    and asked to come back, a new run of it.

    ``number`` is the confirmation the link came from. A reader who had left starts again
    only from the latest confirmation, asked for after they left: an old link from their
    first signup does not enrol them again. Returns the subscriber (also when already
    confirmed: a second click is fine), or None when the id is unknown.
    """
    subscriber = by_public_id(session, public_id)
    if subscriber is None:
        return None
    course = courses.get(subscriber.course_id)
    if course is None:
        return subscriber
    if subscriber.status == SubscriberStatus.PENDING:
        start_run(session, subscriber, now, course=course, settings=settings)
    elif (
        subscriber.status
        in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLETED)
        and number is not None
        and number == subscriber.confirm_count
        and _asked_since(subscriber)
    ):
        start_run(session, subscriber, now, course=course, settings=settings, again=True)
        lift_suppression(session, secret_keys, subscriber.email)
    return subscriber


def start_run(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    *,
    course: PublishedCourse,
    settings: Settings,
    again: bool = False,
    via: str = "page",
) -> None:
    """The reader starts the course (``again``: a new run, after they left or finished;
    the earlier run's deliveries, answers and notes stay). Their first lesson is queued."""
    if again:
        if subscriber.completed_at is not None:
            # The run that ends here stays counted as completed (course.reports).
            record_event(
                session,
                subscriber,
                EventKind.COMPLETED,
                subscriber.completed_at,
                value=f"run-{subscriber.run}",
                via="course",
            )
        subscriber.run += 1
        subscriber.unsubscribed_at = None
        subscriber.completed_at = None
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.snoozed_until = None
    # Outstanding confirmation emails are no longer needed, nor what was still to come
    # after an earlier run (its completion or follow-up email, in the middle of this run).
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id == subscriber.id,
            Delivery.kind.in_(
                (DeliveryKind.CONFIRM, DeliveryKind.COMPLETION, DeliveryKind.FOLLOWUP)
            ),
            Delivery.status == DeliveryStatus.QUEUED,
        )
        .values(status=DeliveryStatus.CANCELLED, claimed_by=None)
    )
    record_event(
        session, subscriber, EventKind.CONFIRM, now, value=f"run-{subscriber.run}", via=via
    )
    first = course.content.next_for(set())
    if first is None:
        return  # a course without lessons cannot be joined (course.courses); nothing to send
    lesson = course.content.get(first)
    delay = lesson.delay_days if lesson else 0
    rhythm = rhythm_of(subscriber, course, settings)
    queue_lesson(session, subscriber, first, first_lesson_due(now, delay, rhythm))


def join_course(
    session: Session,
    person: Subscriber,
    course: PublishedCourse,
    now: datetime,
    *,
    settings: Settings,
) -> Subscriber:
    """A reader joins another course from the link in one of their own emails, by pressing
    the button on its page: that click, from their own mailbox, is their consent, so the
    course starts at once. Taking a course they finished or left starts a new run. A
    bounced address gets nothing. Returns the enrolment."""
    enrolment = find_by_email(session, person.email, course.id)
    if enrolment is None:
        enrolment = Subscriber(
            course_id=course.id,
            email=person.email,
            mailbox=person.mailbox or mailbox(person.email),
            name=person.name if person.confirmed_at else None,
            timezone=person.timezone,
            send_hour=person.send_hour,
            country=person.country,
            source="join",
            consent_source="join",
            consent_origin=f"course:{person.course_id}",
            consent_text_hash=keep_consent_text(session, settings.signup_consent_text, now),
            status=SubscriberStatus.PENDING,
            created_at=now,
            confirm_count=0,
        )
        session.add(enrolment)
        session.flush()
    if enrolment.status == SubscriberStatus.PENDING:
        start_run(session, enrolment, now, course=course, settings=settings, via="join")
    elif enrolment.status in (SubscriberStatus.COMPLETED, SubscriberStatus.UNSUBSCRIBED):
        start_run(session, enrolment, now, course=course, settings=settings, again=True, via="join")
        lift_suppression(session, settings.secret_keys, enrolment.email)
    return enrolment


# -- the opt-out list ---------------------------------------------------------------------


def suppress(
    session: Session, secret_keys: Sequence[str], email: str, reason: str, now: datetime
) -> None:
    """Keep a keyed hash of the mailbox on the opt-out list (course.models.Suppression)."""
    if not secret_keys:
        return
    fingerprint = fingerprints(secret_keys, email)[0]
    if session.get(Suppression, fingerprint) is None:
        session.add(Suppression(fingerprint=fingerprint, reason=reason, created_at=now))


def is_suppressed(session: Session, secret_keys: Sequence[str], email: str) -> bool:
    """Whether the mailbox opted out or bounced (under any current or fallback key)."""
    if not secret_keys:
        return False
    prints = fingerprints(secret_keys, email)
    found = session.scalar(
        select(Suppression.fingerprint).where(Suppression.fingerprint.in_(prints))
    )
    return found is not None


def lift_suppression(session: Session, secret_keys: Sequence[str], email: str) -> None:
    """The reader confirmed again: their own click takes them off the opt-out list."""
    if secret_keys:
        session.execute(
            delete(Suppression).where(Suppression.fingerprint.in_(fingerprints(secret_keys, email)))
        )


def by_public_id(session: Session, public_id: str) -> Subscriber | None:
    """The subscriber a link points at, if it still exists."""
    return session.scalars(select(Subscriber).where(Subscriber.public_id == public_id)).first()


def queue_lesson(session: Session, subscriber: Subscriber, number: int, due_at: datetime) -> None:
    """Make lesson ``number`` due at ``due_at``, unless it was already sent."""
    dialect = session.get_bind().dialect.name
    session.execute(
        upsert_lesson(dialect), lesson_params(subscriber.id, number, due_at, run=subscriber.run)
    )


def lesson_params(
    subscriber_id: int,
    number: int,
    due_at: datetime,
    status: str = DeliveryStatus.QUEUED,
    *,
    run: int,
    kind: str = DeliveryKind.LESSON,
) -> dict[str, object]:
    """The parameters for :func:`upsert_lesson`."""
    return {
        "sid": subscriber_id,
        "kind": kind,
        "number": number,
        "run": run,
        "status": status,
        "due": due_at,
        "created": utcnow(),
    }


@cache
def upsert_lesson(dialect: str) -> Insert:
    """The statement that queues a lesson, or the completion or follow-up email (or holds
    it, ``status="cancelled"``).

    There is one row per (subscriber, lesson, run), so this is an upsert: a cancelled row (after
    a pause) is re-queued rather than duplicated, a sent row is left alone, and the unique
    constraint keeps guarding "at most once". Built once per dialect with bound parameters
    (see :func:`lesson_params`): the sending engine runs it for every lesson it sends.
    """
    insert_ = postgresql_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert_(Delivery).values(
        subscriber_id=bindparam("sid"),
        kind=bindparam("kind"),
        number=bindparam("number"),
        run=bindparam("run"),
        status=bindparam("status"),
        due_at=bindparam("due"),
        attempts=0,
        generation=0,
        created_at=bindparam("created"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[Delivery.subscriber_id, Delivery.kind, Delivery.number, Delivery.run],
        set_={
            "status": stmt.excluded.status,
            # A claimed row's due_at is its lease: leave it to the sender that holds it.
            "due_at": case(
                (Delivery.claimed_by.is_(None), stmt.excluded.due_at), else_=Delivery.due_at
            ),
            # A fresh start for a row that failed before: a full retry window again.
            "attempts": case(
                (Delivery.status == DeliveryStatus.FAILED, 0), else_=Delivery.attempts
            ),
            "first_failed_at": None,
            "failed_at": None,
        },
        # Sent rows are never touched; failed ones can be queued again (a resume, or an
        # operator's retry after the relay was fixed).
        # (Every status but sent: queued, cancelled, failed. Written as one comparison so
        # the statement has no expanding list and compiles once for the driver, see
        # course.delivery_store.)
        where=Delivery.status != DeliveryStatus.SENT,
    )


def in_current_run(subscriber: Subscriber) -> ColumnElement[bool]:
    """This subscriber's deliveries in the run of the course they are on now."""
    return and_(Delivery.subscriber_id == subscriber.id, Delivery.run == subscriber.run)


def received_keys(session: Session, subscriber: Subscriber) -> set[int]:
    """The lessons (keys) this subscriber has received in this run."""
    return set(
        session.scalars(
            select(Delivery.number).where(in_current_run(subscriber), lesson_received())
        )
    )


def last_lesson_received(session: Session, subscriber: Subscriber) -> int | None:
    """The lesson (key) this subscriber received most recently in this run, if any."""
    return session.scalar(
        select(Delivery.number)
        .where(in_current_run(subscriber), lesson_received())
        .order_by(Delivery.sent_at.desc(), Delivery.id.desc())
        .limit(1)
    )


def _cancel_queued(session: Session, subscriber: Subscriber, kinds: tuple[str, ...]) -> None:
    """Cancel queued deliveries, claimed ones included: the sender checks the subscriber's
    status again right before each SMTP call, so a claimed message is stopped too."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id == subscriber.id,
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.kind.in_(kinds),
        )
        .values(status=DeliveryStatus.CANCELLED, claimed_by=None)
    )


def _stop_mail(
    session: Session,
    subscriber: Subscriber,
    kind: EventKind,
    now: datetime,
    kinds: tuple[str, ...],
    via: str,
    operator_id: int | None,
) -> None:
    """Cancel what is queued and record why. The event carries the last lesson received,
    so reports can say "paused / unsubscribed after lesson n"."""
    _cancel_queued(session, subscriber, kinds)
    record_event(
        session,
        subscriber,
        kind,
        now,
        via=via,
        operator_id=operator_id,
        lesson=last_lesson_received(session, subscriber),
    )


def pause(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    *,
    via: str = "page",
    operator_id: int | None = None,
) -> bool:
    """Pause an active course: nothing is sent until it is resumed. False if not active."""
    if subscriber.status != SubscriberStatus.ACTIVE:
        return False
    subscriber.status = SubscriberStatus.PAUSED
    _stop_mail(session, subscriber, EventKind.PAUSE, now, (DeliveryKind.LESSON,), via, operator_id)
    return True


def resume(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    *,
    settings: Settings,
    course: PublishedCourse,
    via: str = "page",
    operator_id: int | None = None,
) -> bool:
    """Resume a paused course with one lesson at the next send hour, never a burst."""
    if subscriber.status != SubscriberStatus.PAUSED:
        return False
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.snoozed_until = None
    record_event(session, subscriber, EventKind.RESUME, now, via=via, operator_id=operator_id)
    requeue_next(session, subscriber, now, settings=settings, course=course)
    return True


def requeue_next(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    *,
    settings: Settings,
    course: PublishedCourse,
) -> None:
    """Queue the reader's next lesson after a change (a resume, a snooze that ends, a new
    send hour): one lesson, at its time, never a burst. A reader who has had every lesson
    has completed the course."""
    received = received_keys(session, subscriber)
    key = course.content.next_for(received)
    rhythm = rhythm_of(subscriber, course, settings)
    if key is None:
        subscriber.status = SubscriberStatus.COMPLETED
        subscriber.completed_at = subscriber.completed_at or now
        after = after_course(course, DeliveryKind.LESSON, now, rhythm)
        if after is not None:
            session.execute(
                upsert_lesson(session.get_bind().dialect.name),
                lesson_params(subscriber.id, 0, after[1], run=subscriber.run, kind=after[0]),
            )
        return
    lesson = course.content.get(key)
    last = last_lesson_sent_at(session, subscriber)
    delay = lesson.delay_days if lesson else 1
    if last is None:
        due = first_lesson_due(now, delay, rhythm)
    else:
        due = resume_due(now, last, delay, rhythm)
    queue_lesson(session, subscriber, key, not_before(due, subscriber.snoozed_until, rhythm))


def after_course(
    course: PublishedCourse, done: str, now: datetime, rhythm: Rhythm
) -> tuple[DeliveryKind, datetime] | None:
    """What a reader who completed the course gets next, and when: after the last lesson
    (``done="lesson"``) the completion email, or the follow-up if there is no completion;
    after the completion the follow-up. Each ``days`` later at the reader's send hour (at
    least the next day: never two emails at once). None: nothing more."""
    content = course.content
    if done == DeliveryKind.LESSON and content.completion is not None:
        return DeliveryKind.COMPLETION, lesson_due(now, content.completion.days, rhythm)
    if done in (DeliveryKind.LESSON, DeliveryKind.COMPLETION) and content.followup is not None:
        return DeliveryKind.FOLLOWUP, lesson_due(now, content.followup.days, rhythm)
    return None


def snooze(
    session: Session,
    subscriber: Subscriber,
    until: datetime | None,
    now: datetime,
    *,
    settings: Settings,
    course: PublishedCourse,
) -> bool:
    """ "Pause until ...": nothing arrives before ``until``; then the course goes on by
    itself at the reader's next send hour (one lesson, never a burst). ``None`` ends a
    snooze now. False if the reader is not on the course."""
    if subscriber.status != SubscriberStatus.ACTIVE:
        return False
    subscriber.snoozed_until = until if until is not None and until > now else None
    local = until.astimezone(ZoneInfo(subscriber.timezone)).date().isoformat() if until else "end"
    record_event(session, subscriber, EventKind.SNOOZE, now, value=local)
    queued = next_queued_lesson(session, subscriber)
    if queued is not None and queued.claimed_by is None:
        queued.status = DeliveryStatus.CANCELLED  # requeue_next puts it back at its new time
    requeue_next(session, subscriber, now, settings=settings, course=course)
    return True


def unsubscribe(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    *,
    via: str = "page",
    operator_id: int | None = None,
) -> bool:
    """Stop all mail at once. The address may sign up again later. False if already out."""
    if subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED):
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    _stop_mail(session, subscriber, EventKind.UNSUBSCRIBE, now, _ALL_KINDS, via, operator_id)
    return True


#: Every kind of email a reader's course sends.
_ALL_KINDS = (
    DeliveryKind.LESSON,
    DeliveryKind.CONFIRM,
    DeliveryKind.COMPLETION,
    DeliveryKind.FOLLOWUP,
)


def mark_bounced(
    session: Session, subscriber: Subscriber, now: datetime, *, reason: str, via: str = "relay"
) -> bool:
    """The reader's mailbox does not take mail (a hard bounce, at sending or after): nothing
    more is sent to it, on any course. The bounce is recorded as an event. False if this
    enrolment was already out."""
    record_event(session, subscriber, EventKind.BOUNCE, now, value=f"hard:{reason}"[:64], via=via)
    changed = False
    for enrolment in enrolments_of(session, subscriber.email):
        if enrolment.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED):
            continue
        enrolment.status = SubscriberStatus.BOUNCED
        enrolment.unsubscribed_at = now
        _cancel_queued(session, enrolment, _ALL_KINDS)
        changed = changed or enrolment.id == subscriber.id
    return changed


def enrolments_of(session: Session, email: str) -> list[Subscriber]:
    """Every course this address is on (or was), oldest first: one person's enrolments."""
    return list(
        session.scalars(
            select(Subscriber)
            .where(func.lower(Subscriber.email) == email.lower())
            .order_by(Subscriber.id)
        )
    )


def find_person(session: Session, email: str) -> Subscriber | None:
    """Any enrolment of this address (the most recent), for what concerns the person
    rather than one course: a bounce, a complaint, an erasure."""
    found = enrolments_of(session, email)
    return found[-1] if found else None


def unsubscribe_everywhere(
    session: Session, subscriber: Subscriber, now: datetime, *, via: str = "page"
) -> int:
    """Leave every course this person is on (the "leave all courses" button, a spam
    complaint). Returns how many enrolments were left."""
    return sum(
        unsubscribe(session, enrolment, now, via=via)
        for enrolment in enrolments_of(session, subscriber.email)
    )


def set_schedule(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    *,
    send_hour: int,
    timezone: str,
    settings: Settings,
    course: PublishedCourse,
) -> None:
    """Change when this course's lessons arrive; a queued lesson moves to the new time."""
    subscriber.send_hour = send_hour
    subscriber.timezone = timezone
    record_event(session, subscriber, EventKind.SCHEDULE, now)
    if subscriber.status != SubscriberStatus.ACTIVE or settings.lesson_interval is not None:
        return
    queued = next_queued_lesson(session, subscriber)
    last = last_lesson_sent_at(session, subscriber)
    if queued is None or queued.claimed_by is not None or last is None:
        return
    lesson = course.content.get(queued.number)
    rhythm = rhythm_of(subscriber, course, settings)
    due = resume_due(now, last, lesson.delay_days if lesson else 1, rhythm)
    queued.due_at = not_before(due, subscriber.snoozed_until, rhythm)


def next_queued_lesson(session: Session, subscriber: Subscriber) -> Delivery | None:
    """The lesson waiting to be sent to this subscriber, if any."""
    return session.scalars(
        select(Delivery)
        .where(
            in_current_run(subscriber),
            Delivery.kind == DeliveryKind.LESSON,
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.generation == 0,  # not an operator's re-send of an earlier lesson
        )
        .order_by(Delivery.number.desc())
    ).first()


def last_lesson_sent_at(session: Session, subscriber: Subscriber) -> datetime | None:
    """When the most recent lesson of this run went out to this subscriber."""
    return session.scalar(
        select(func.max(Delivery.sent_at)).where(in_current_run(subscriber), lesson_received())
    )


def resend_lesson(
    session: Session, subscriber: Subscriber, number: int, now: datetime, operator_id: int
) -> bool:
    """Queue lesson ``number`` again for now (an operator's action). Only lessons already
    sent can be re-sent; returns False otherwise."""
    delivery = session.scalars(
        select(Delivery).where(
            in_current_run(subscriber),
            lesson_received(),
            Delivery.number == number,
            Delivery.status != DeliveryStatus.QUEUED,
        )
    ).first()
    if delivery is None or subscriber.status not in (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.COMPLETED,
    ):
        return False
    delivery.generation += 1
    delivery.status = DeliveryStatus.QUEUED
    delivery.due_at = now
    delivery.attempts = 0
    delivery.first_failed_at = None
    delivery.failed_at = None
    delivery.claimed_by = None
    record_event(
        session,
        subscriber,
        EventKind.RESEND,
        now,
        lesson=number,
        via="admin",
        operator_id=operator_id,
    )
    return True


def retry_failed(
    session: Session, subscriber: Subscriber, now: datetime, operator_id: int
) -> int | None:
    """Queue the reader's failed lesson again for now (an operator's action, e.g. after the
    relay was fixed). Returns the lesson number, or None if nothing had failed."""
    failed = session.scalars(
        select(Delivery)
        .where(
            in_current_run(subscriber),
            Delivery.kind == DeliveryKind.LESSON,
            Delivery.status == DeliveryStatus.FAILED,
            Delivery.sent_at.is_(None),
        )
        .order_by(Delivery.number)
    ).first()
    if failed is None or subscriber.status != SubscriberStatus.ACTIVE:
        return None
    number = failed.number
    queue_lesson(session, subscriber, number, now)
    session.expire(failed)
    record_event(
        session,
        subscriber,
        EventKind.RESEND,
        now,
        lesson=number,
        value="retry",
        via="admin",
        operator_id=operator_id,
    )
    return number


# -- signup requests ----------------------------------------------------------------------


def store_signup_request(db: Connection | Session, data: SignupData, now: datetime) -> int:
    """Keep a validated signup for a decision made after the answer; returns its id.

    This one insert is all ``POST /subscribe`` does with the database before it answers,
    whatever the address, so the answer's timing tells nothing about who is enrolled. On a
    connection in autocommit mode it is one statement and one round trip, durable when it
    returns.
    """
    consent = data.consent
    request_id = db.scalar(
        insert(SignupRequest)
        .values(
            course_id=data.course_id,
            email=data.email,
            name=data.name,
            timezone=data.timezone,
            source=data.source,
            consent_source=consent.source if consent else None,
            consent_origin=consent.origin if consent else None,
            consent_text_hash=consent.text_hash if consent else None,
            created_at=now,
        )
        .returning(SignupRequest.id)
    )
    assert request_id is not None
    return int(request_id)


def take_signup_requests(
    session: Session, *, request_id: int | None = None, limit: int = 100
) -> list[SignupRequest]:
    """Take signup requests to decide now, oldest first: deleted in this transaction and
    returned (detached), so deciding and forgetting a request commit together. Another
    process deciding requests at the same time skips these (PostgreSQL: SKIP LOCKED)."""
    oldest = select(SignupRequest.id).order_by(SignupRequest.id).limit(limit)
    if request_id is not None:
        oldest = oldest.where(SignupRequest.id == request_id)
    if session.get_bind().dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    columns = SignupRequest.__table__.c
    rows = session.execute(
        delete(SignupRequest)
        .where(SignupRequest.id.in_(oldest.scalar_subquery()))
        .returning(*columns)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted((SignupRequest(**row._mapping) for row in rows), key=lambda r: r.id)


def decide_signup_request(
    session: Session,
    request: SignupRequest,
    settings: Settings,
    now: datetime,
    consent_texts: Sequence[str] = (),
) -> None:
    """Apply one stored signup (:func:`subscribe`); it was taken (deleted) with
    :func:`take_signup_requests` in the same transaction. ``consent_texts``: the wordings
    the signup form shows (one per language, course.signups); the one the request's hash
    names is kept for the consent record."""
    consent = None
    if request.consent_source:
        for text in (*consent_texts, settings.signup_consent_text):
            if request.consent_text_hash == consent_text_hash(text):
                keep_consent_text(session, text, now)
                break
        consent = Consent(request.consent_source, request.consent_origin, request.consent_text_hash)
    data = SignupData(
        email=request.email,
        name=request.name,
        timezone=request.timezone,
        source=request.source,
        consent=consent,
        course_id=request.course_id,
    )
    subscribe(
        session,
        data,
        now=now,
        default_timezone=settings.default_timezone,
        resend_after=timedelta(seconds=settings.confirm_resend_seconds),
        caps=ConfirmationCaps(
            settings.confirmations_per_mailbox_per_day,
            settings.confirmations_per_domain_per_hour,
        ),
    )
