"""Real bookings: what the practice's booking system reports, matched to readers.

"Book a session" only tells us that a reader clicked. Whether they booked is known to the
booking system, which reports it by webhook (``course.web.bookings``: Cal.com, Calendly,
or any other system through a generic signed webhook). Each report becomes a
:class:`BookingNotice`, and :func:`record_booking` turns it into what the reports count:

- **Matching.** The reader is found by the reference our booking link passed to the
  booking system (:func:`booking_link_params`), else by the attendee's address (any case).
  A booking by someone who is not a reader is none of the course's business: nothing is
  recorded.
- **Attribution.** The booking counts for the last lesson in which the reader clicked
  "Book a session", within ``COURSE_BOOKING_ATTRIBUTION_DAYS`` before it; later, or with no
  click, it is recorded without a lesson.
- **What is kept.** One ``bookings`` row per booking at its provider: the provider's id,
  the source, the reader, the course and the lesson, and whether it is confirmed,
  cancelled or rescheduled (replaced by another booking). Each change is also an event
  (``booking_confirmed``, ``booking_cancelled``, ``booking_rescheduled``) for the reader's
  timeline. No name, no session time, nothing the attendee typed.
- **Once.** Providers retry, and Calendly reports one reschedule twice (the old booking
  cancelled, the new one created). A notice about a booking already in that state records
  nothing, so the same webhook delivered again is counted once.

**The reference.** The booking link carries a signed token (purpose ``bookref``) naming
the reader by public id: opaque to the booking system, never a row id or an address, and
impossible to make up or to change into another reader's without the secret key. It opens
no page. Where it travels: Cal.com ``metadata[course_ref]`` (back as
``payload.metadata.course_ref``), Calendly ``utm_content`` (back as
``payload.tracking.utm_content``), the generic webhook ``course_ref`` (back as ``ref``).
It is added only for the booking systems whose webhook is configured.

Every function takes a session and never commits: the view owns the transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from course.config import Settings
from course.models import Booking, Event, EventKind, Subscriber
from course.progress import record_event
from course.subscriptions import by_public_id, enrolments_of
from course.tokens import InvalidToken, Signer

#: The booking systems, as ``bookings.source`` and the events' ``via`` name them.
SOURCES = ("cal.com", "calendly", "generic")
#: The query parameter (Cal.com: metadata key) that carries the reader's reference.
REF_PARAM = "course_ref"
#: The longest provider id kept (a Calendly invitee URI is about 110 characters).
MAX_ID = 255


class BookingKind(enum.StrEnum):
    """What the booking system says happened to a booking."""

    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"  # ``booking_id`` replaces ``previous_id``


class BookingStatus(enum.StrEnum):
    """Where a booking stands now (``bookings.status``)."""

    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"  # replaced by another booking, which carries on


_EVENTS = {
    BookingKind.CONFIRMED: EventKind.BOOKING_CONFIRMED,
    BookingKind.CANCELLED: EventKind.BOOKING_CANCELLED,
    BookingKind.RESCHEDULED: EventKind.BOOKING_RESCHEDULED,
}


@dataclass(frozen=True)
class BookingNotice:
    """One verified report from a booking system, in the provider's own terms."""

    source: str
    kind: BookingKind
    booking_id: str
    email: str | None = None
    ref: str | None = None
    previous_id: str | None = None  # a reschedule: the booking this one replaces


def reader_ref(signer: Signer, subscriber: Subscriber) -> str:
    """The opaque reference to a reader that the booking link passes on."""
    return signer.dumps("bookref", subscriber.public_id)


def booking_link_params(
    subscriber: Subscriber, settings: Settings, signer: Signer
) -> dict[str, str]:
    """What "Book a session" adds to the booking page's address besides the UTM tags: the
    reader's reference for each configured booking webhook, and with
    ``COURSE_BOOKING_PREFILL`` their name and address (Cal.com and Calendly both fill in
    their form from ``name`` and ``email``)."""
    params: dict[str, str] = {}
    ref: str | None = None
    if (
        settings.calcom_webhook_secret
        or settings.calendly_signing_key
        or settings.booking_webhook_secret
    ):
        ref = reader_ref(signer, subscriber)
    if ref and settings.calcom_webhook_secret:
        params[f"metadata[{REF_PARAM}]"] = ref
    if ref and settings.calendly_signing_key:
        params["utm_content"] = ref
    if ref and settings.booking_webhook_secret:
        params[REF_PARAM] = ref
    if settings.booking_prefill:
        if subscriber.name:
            params["name"] = subscriber.name
        params["email"] = subscriber.email
    return params


def _by_ref(session: Session, signer: Signer, ref: str | None) -> Subscriber | None:
    if not ref:
        return None
    try:
        payload = signer.loads("bookref", ref)
    except InvalidToken:
        return None  # edited or from elsewhere: the address may still match
    return by_public_id(session, payload[0])


def last_book_click(
    session: Session, enrolments: list[Subscriber], now: datetime, window: timedelta
) -> tuple[Subscriber, int] | None:
    """The enrolment and lesson of the reader's last "Book a session" click within
    ``window`` before ``now``, if any."""
    if not enrolments:
        return None
    found = session.execute(
        select(Event.subscriber_id, Event.lesson)
        .where(
            Event.kind == EventKind.BOOK,
            Event.subscriber_id.in_([e.id for e in enrolments]),
            Event.lesson.is_not(None),
            Event.created_at >= now - window,
            Event.created_at <= now,
        )
        .order_by(Event.created_at.desc(), Event.id.desc())
        .limit(1)
    ).first()
    if found is None or found[0] is None or found[1] is None:
        return None  # (the query asks for both; this tells the type checker)
    by_id = {e.id: e for e in enrolments}
    return by_id[found[0]], found[1]


def match_reader(
    session: Session, notice: BookingNotice, signer: Signer, now: datetime, window: timedelta
) -> tuple[Subscriber, int | None] | None:
    """The reader a booking belongs to and the lesson it is attributed to (None: no
    lesson), or None for someone who is not a reader.

    A reader is someone who confirmed a course (whatever they did since): a signup that
    was never confirmed is not a reader, and their booking is none of the course's
    business."""
    named = _by_ref(session, signer, notice.ref)
    if named is not None:
        enrolments = [named]
    elif notice.email and "@" in notice.email:
        enrolments = enrolments_of(session, notice.email.strip())
    else:
        enrolments = []
    enrolments = [e for e in enrolments if e.confirmed_at is not None]
    if not enrolments:
        return None
    clicked = last_book_click(session, enrolments, now, window)
    if clicked is not None:
        return clicked
    # No click in the window: the person's latest enrolment, without a lesson.
    return enrolments[-1], None


def _find(session: Session, source: str, booking_id: str | None) -> Booking | None:
    if not booking_id:
        return None
    return session.scalars(
        select(Booking).where(Booking.source == source, Booking.external_id == booking_id)
    ).first()


def _event(session: Session, booking: Booking, kind: BookingKind, now: datetime) -> None:
    subscriber = session.get(Subscriber, booking.subscriber_id) if booking.subscriber_id else None
    event = record_event(
        session, subscriber, _EVENTS[kind], now, lesson=booking.lesson, via=booking.source
    )
    event.course_id = booking.course_id  # kept when the reader was erased meanwhile


def _new_booking(
    session: Session,
    notice: BookingNotice,
    status: BookingStatus,
    now: datetime,
    *,
    subscriber_id: int | None,
    course_id: int | None,
    lesson: int | None,
) -> Booking:
    booking = Booking(
        source=notice.source,
        external_id=notice.booking_id,
        subscriber_id=subscriber_id,
        course_id=course_id,
        lesson=lesson,
        status=status,
        booked_at=now,
    )
    session.add(booking)
    session.flush()  # a concurrent copy of this notice fails here, on the unique constraint
    return booking


def record_booking(
    session: Session,
    notice: BookingNotice,
    now: datetime,
    *,
    signer: Signer,
    window: timedelta,
) -> str:
    """Apply one verified notice; returns what it did: ``recorded``, ``duplicate`` (this
    booking is already in that state) or ``unmatched`` (not a reader's booking)."""
    if notice.kind == BookingKind.CANCELLED:
        return _cancel(session, notice, now, signer=signer, window=window)
    if notice.kind == BookingKind.RESCHEDULED:
        return _reschedule(session, notice, now, signer=signer, window=window)
    if _find(session, notice.source, notice.booking_id) is not None:
        return "duplicate"
    matched = match_reader(session, notice, signer, now, window)
    if matched is None:
        return "unmatched"
    subscriber, lesson = matched
    booking = _new_booking(
        session,
        notice,
        BookingStatus.CONFIRMED,
        now,
        subscriber_id=subscriber.id,
        course_id=subscriber.course_id,
        lesson=lesson,
    )
    _event(session, booking, BookingKind.CONFIRMED, now)
    return "recorded"


def _cancel(
    session: Session, notice: BookingNotice, now: datetime, *, signer: Signer, window: timedelta
) -> str:
    booking = _find(session, notice.source, notice.booking_id)
    if booking is None:
        # Cancelled before we heard of it (a report lost, or out of order): remember it,
        # so that a late "created" for it does not count a booking that is gone.
        matched = match_reader(session, notice, signer, now, window)
        if matched is None:
            return "unmatched"
        subscriber, lesson = matched
        _new_booking(
            session,
            notice,
            BookingStatus.CANCELLED,
            now,
            subscriber_id=subscriber.id,
            course_id=subscriber.course_id,
            lesson=lesson,
        )
        return "recorded"
    if booking.status != BookingStatus.CONFIRMED:
        return "duplicate"
    booking.status = BookingStatus.CANCELLED
    booking.changed_at = now
    _event(session, booking, BookingKind.CANCELLED, now)
    return "recorded"


def _reschedule(
    session: Session, notice: BookingNotice, now: datetime, *, signer: Signer, window: timedelta
) -> str:
    """The booking ``previous_id`` moved to another time and is now ``booking_id``: the old
    one stops counting, the new one counts for the same reader and lesson."""
    if notice.previous_id == notice.booking_id or not notice.previous_id:
        # Rescheduled in place (the generic webhook may keep its id): still one booking.
        booking = _find(session, notice.source, notice.booking_id)
        if booking is None:
            return record_booking(
                session,
                BookingNotice(
                    notice.source,
                    BookingKind.CONFIRMED,
                    notice.booking_id,
                    notice.email,
                    notice.ref,
                ),
                now,
                signer=signer,
                window=window,
            )
        if booking.status != BookingStatus.CONFIRMED or booking.changed_at is not None:
            return "duplicate"
        booking.changed_at = now
        _event(session, booking, BookingKind.RESCHEDULED, now)
        return "recorded"
    if _find(session, notice.source, notice.booking_id) is not None:
        # Already applied: a retry, or Calendly's second report of the same reschedule.
        old = _find(session, notice.source, notice.previous_id)
        if old is not None and old.status == BookingStatus.CONFIRMED:
            old.status = BookingStatus.RESCHEDULED
            old.changed_at = now
        return "duplicate"
    old = _find(session, notice.source, notice.previous_id)
    if old is None or old.status == BookingStatus.CANCELLED:
        # We never counted the booking it replaces: this one is a new booking for us.
        return record_booking(
            session,
            BookingNotice(
                notice.source, BookingKind.CONFIRMED, notice.booking_id, notice.email, notice.ref
            ),
            now,
            signer=signer,
            window=window,
        )
    counted = old.status == BookingStatus.CONFIRMED
    old.status = BookingStatus.RESCHEDULED
    old.changed_at = now
    new = _new_booking(
        session,
        notice,
        BookingStatus.CONFIRMED,
        now,
        subscriber_id=old.subscriber_id,
        course_id=old.course_id,
        lesson=old.lesson,
    )
    _event(session, new, BookingKind.RESCHEDULED if counted else BookingKind.CONFIRMED, now)
    return "recorded"


def text_of(value: object, limit: int = MAX_ID) -> str | None:
    """A non-empty string of at most ``limit`` characters from a payload, else None."""
    if isinstance(value, str) and value.strip() and len(value) <= limit:
        return value.strip()
    return None


def first_email(attendees: object) -> str | None:
    """The first attendee's address in a Cal.com payload (the person who booked)."""
    if isinstance(attendees, list) and attendees and isinstance(attendees[0], Mapping):
        return text_of(attendees[0].get("email"), 320)
    return None
