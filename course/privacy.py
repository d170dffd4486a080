"""A reader's own data: export it as JSON, or erase it for good.

Functions take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from course.models import (
    AuditLog,
    Booking,
    ConsentText,
    Delivery,
    DeliveryStatus,
    Event,
    LessonProgress,
    Reply,
    Subscriber,
    SubscriberStatus,
    new_public_id,
)
from course.subscriptions import suppress


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def export_data(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything stored about this subscriber, in plain JSON-ready form."""
    deliveries = session.scalars(
        select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
    )
    progress = session.scalars(
        select(LessonProgress)
        .where(LessonProgress.subscriber_id == subscriber.id)
        .order_by(LessonProgress.lesson)
    )
    events = session.scalars(
        select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id)
    )
    return {
        "subscriber": {
            "email": subscriber.email,
            "name": subscriber.name,
            "timezone": subscriber.timezone,
            "send_hour": subscriber.send_hour,
            "source": subscriber.source,
            "status": subscriber.status,
            "signed_up_at": _iso(subscriber.created_at),
            "confirmed_at": _iso(subscriber.confirmed_at),
            "completed_at": _iso(subscriber.completed_at),
            "unsubscribed_at": _iso(subscriber.unsubscribed_at),
        },
        "consent": consent_record(session, subscriber),
        "emails": [
            {
                "kind": d.kind,
                "number": d.number,
                "run": d.run,
                "status": d.status,
                "sent_at": _iso(d.sent_at),
            }
            for d in deliveries
        ],
        "lessons": [
            {
                "lesson": p.lesson,
                "run": p.run,
                "done_at": _iso(p.done_at),
                "checkin": p.checkin,
                "checkin_at": _iso(p.checkin_at),
                "note": p.note,
                "note_at": _iso(p.note_at),
            }
            for p in progress
        ],
        "replies": [
            {"lesson": r.lesson, "subject": r.subject, "text": r.text, "at": _iso(r.received_at)}
            for r in session.scalars(
                select(Reply).where(Reply.subscriber_id == subscriber.id).order_by(Reply.id)
            )
        ],
        "events": [
            {"kind": e.kind, "lesson": e.lesson, "value": e.value, "at": _iso(e.created_at)}
            for e in events
        ],
        # What the booking system reported (course.bookings): its id for the booking, too.
        "bookings": [
            {
                "source": b.source,
                "booking_id": b.external_id,
                "lesson": b.lesson,
                "status": b.status,
                "at": _iso(b.booked_at),
            }
            for b in session.scalars(
                select(Booking).where(Booking.subscriber_id == subscriber.id).order_by(Booking.id)
            )
        ],
    }


def consent_record(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """When and how the reader agreed: the confirmation click, where the signup came from
    and the wording the form showed (docs/privacy.md)."""
    wording = (
        session.get(ConsentText, subscriber.consent_text_hash)
        if subscriber.consent_text_hash
        else None
    )
    return {
        "confirmed_at": _iso(subscriber.confirmed_at),
        "source": subscriber.consent_source,
        "origin": subscriber.consent_origin,
        "wording": wording.text if wording else None,
        "wording_sha256": subscriber.consent_text_hash,
    }


def erase(
    session: Session, subscriber: Subscriber, secret_keys: Sequence[str], now: datetime
) -> None:
    """Erase a reader: everything that points to the person goes, and nothing more is sent.

    What they did stays as an anonymous count, in the rows it was in (:func:`anonymize`):
    the lessons they received, done marks, check-in answers, clicks, their runs. So every
    number the practice sees is the same before and after an erasure (docs/operators.md);
    only "active now" changes, because a reader who was still on the course is marked
    ``erased``. Their links stop working; their notes and replies are deleted. A reader who
    had opted out (or bounced) stays on the opt-out list as a keyed hash of their mailbox,
    so an operator's import can never enrol them again (course.subscriptions.suppress).
    """
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.CANCELLED, claimed_by=None)
    )
    if subscriber.status in (
        SubscriberStatus.PENDING,
        SubscriberStatus.ACTIVE,
        SubscriberStatus.PAUSED,
    ):
        subscriber.status = SubscriberStatus.ERASED
    # The audit log keeps what staff did, no longer to whom (shown as "erased").
    session.execute(
        update(AuditLog).where(AuditLog.subscriber_id == subscriber.id).values(subscriber_id=None)
    )
    anonymize(session, subscriber, secret_keys, now)
    session.flush()


def purge_pending(session: Session, now: datetime, days: int) -> int:
    """Delete signups still unconfirmed ``days`` after their last confirmation email.

    Someone who never confirmed never agreed to anything: after the retention period
    (``COURSE_PENDING_RETENTION_DAYS``) their address, name and everything that hangs on
    it are deleted. The clock starts at the latest confirmation request, so an address
    that just signed up again is kept for the full period. Returns how many were deleted.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    cutoff = now - timedelta(days=days)
    # These two conditions are the index ix_subscribers_pending_since (models.Subscriber,
    # tests/test_db.py checks the plan): change them together.
    # One statement, with the conditions in it: a reader who confirms while this runs is
    # never deleted. The foreign keys take their deliveries and progress with them and
    # leave their events (a returning reader's) as events without a reader, which the
    # reports count by the course they keep (erase() keeps the row instead).
    result = session.execute(
        delete(Subscriber)
        .where(
            Subscriber.status == SubscriberStatus.PENDING,
            func.coalesce(Subscriber.confirm_sent_at, Subscriber.created_at) < cutoff,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def anonymize(
    session: Session, subscriber: Subscriber, secret_keys: Sequence[str], now: datetime
) -> None:
    """Remove everything that points to the person, and keep the row as an anonymous count.

    Their address, name, time zone and country, their notes and replies and the consent
    details go; what they did (lessons received, done, check-in answers, events) stays,
    tied to a row that names nobody, so the practice's numbers still add up. Their old
    links stop working (a new public id). An opt-out stays as a keyed hash (course.mailboxes).
    """
    if subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED):
        suppress(session, secret_keys, subscriber.email, subscriber.status, now)
    session.execute(
        update(LessonProgress)
        .where(LessonProgress.subscriber_id == subscriber.id)
        .values(note=None, note_at=None, risk=None)
    )
    session.execute(delete(Reply).where(Reply.subscriber_id == subscriber.id))
    # A relay's refusal often quotes the address ("550 <ana@example.com>: unknown user").
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.last_error.is_not(None))
        .values(last_error=None)
    )
    subscriber.email = f"anonymized-{subscriber.id}@invalid"
    subscriber.mailbox = ""
    subscriber.name = None
    subscriber.timezone = "UTC"
    subscriber.send_hour = None
    subscriber.country = None
    subscriber.consent_origin = None
    subscriber.consent_text_hash = None
    subscriber.public_id = new_public_id()
    subscriber.anonymized_at = now


def anonymize_former_readers(
    session: Session, now: datetime, months: int, secret_keys: Sequence[str]
) -> int:
    """Anonymise readers who finished or left more than ``months`` months ago
    (``COURSE_RETENTION_MONTHS``); returns how many. Readers still taking the course, or
    paused, are kept as they are."""
    cutoff = now - timedelta(days=30 * months)
    left = func.coalesce(Subscriber.unsubscribed_at, Subscriber.completed_at)
    gone = session.scalars(
        select(Subscriber)
        .where(
            Subscriber.anonymized_at.is_(None),
            Subscriber.status.in_(
                [
                    SubscriberStatus.COMPLETED,
                    SubscriberStatus.UNSUBSCRIBED,
                    SubscriberStatus.BOUNCED,
                ]
            ),
            left < cutoff,
        )
        .limit(1000)
        # Several senders run housekeeping: each reader is anonymised by one of them.
        .with_for_update(skip_locked=True)
    ).all()
    for subscriber in gone:
        anonymize(session, subscriber, secret_keys, now)
    return len(gone)


def forget_old_writing(session: Session, now: datetime, days: int) -> int:
    """Delete notes and replies written more than ``days`` days ago
    (``COURSE_NOTE_RETENTION_DAYS``); the answers and counts stay. Returns how many."""
    cutoff = now - timedelta(days=days)
    notes = session.execute(
        update(LessonProgress)
        .where(LessonProgress.note_at < cutoff)
        .values(note=None, note_at=None, risk=None)
        .execution_options(synchronize_session=False)
    )
    replies = session.execute(
        delete(Reply).where(Reply.received_at < cutoff).execution_options(synchronize_session=False)
    )
    return int(notes.rowcount or 0) + int(replies.rowcount or 0)  # type: ignore[attr-defined]
