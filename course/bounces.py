"""What comes back after sending, applied to the readers: bounces, complaints and replies.

A report arrives from a bounce or replies mailbox (``course.mailroom``) or from a mail
provider's webhook (``course.web.webhooks``); either way it is a
:class:`course.feedback.Feedback`, and :func:`apply_feedback` decides what it means:

- **a hard bounce**: the mailbox does not exist or is disabled. The reader is marked
  bounced and nothing more is sent to them.
- **a soft bounce** (a full mailbox, a temporary refusal): counted. ``COURSE_SOFT_BOUNCE_LIMIT``
  in a row, with no sign of life from the reader in between (a click, a page), count as hard.
- **a complaint** (the reader marked a lesson as spam; RFC 5965 feedback loops): the
  reader is unsubscribed at once, with the reason, and never written to again unless they
  sign up and confirm once more.
- **a reply**: kept in the reader's timeline for the practice (``replies``), private like
  a note. An automatic reply (out of office, RFC 3834) is counted, not shown as a reply.

A report is matched to its reader by, in this order: the VERP tag of the address it came
back to (exact, cannot be forged), the Message-ID of our message it quotes (which names
the reader's public id), or the address it is about. Each applied report is an event. A
report that matches no reader, or cannot be read, is not applied: the caller keeps it and
counts it. Functions take a session and never commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from course.care import RiskPhrases, flag
from course.envelope import delivery_from_verp
from course.feedback import Feedback, FeedbackKind
from course.models import (
    Delivery,
    DeliveryKind,
    EventKind,
    Reply,
    Subscriber,
)
from course.progress import record_event
from course.subscriptions import by_public_id, find_person, mark_bounced, unsubscribe_everywhere

#: Our Message-IDs: ``<lesson-3.PUBLICID@domain>``, ``<lesson-3-r1.…>``, ``<confirm-2.…>``.
_OUR_MESSAGE_ID = re.compile(
    r"^<?(lesson|confirm)-(\d{1,6})(?:-[a-z0-9-]+)?\.([A-Za-z0-9_-]{8,40})@"
)


@dataclass(frozen=True)
class Match:
    """The reader a report is about, and the lesson it refers to when known."""

    subscriber: Subscriber
    lesson: int | None
    how: str  # "verp", "message-id" or "address"


def match_feedback(
    session: Session, feedback: Feedback, secret_keys: Sequence[str]
) -> Match | None:
    """The reader a report is about, or None."""
    for address in feedback.addressed_to:
        delivery_id = delivery_from_verp(secret_keys, address)
        if delivery_id is not None:
            delivery = session.get(Delivery, delivery_id)
            if delivery is not None:
                lesson = delivery.number if delivery.kind == DeliveryKind.LESSON else None
                return Match(delivery.subscriber, lesson, "verp")
    for message_id in feedback.message_ids:
        found = _OUR_MESSAGE_ID.match(message_id.strip())
        if found is None:
            continue
        subscriber = by_public_id(session, found.group(3))
        if subscriber is not None:
            lesson = int(found.group(2)) if found.group(1) == "lesson" else None
            return Match(subscriber, lesson, "message-id")
    for recipient in feedback.recipients:
        subscriber = find_person(session, recipient)
        if subscriber is not None:
            return Match(subscriber, None, "address")
    return None


def apply_feedback(
    session: Session,
    feedback: Feedback,
    *,
    secret_keys: Sequence[str],
    soft_bounce_limit: int,
    now: datetime,
    via: str,
    phrases: RiskPhrases | None = None,
) -> str:
    """Apply one report; returns what it did ("bounced", "soft-bounce", "complaint",
    "reply", "auto-reply", "delayed") or "unmatched" / "unusable" (nothing applied)."""
    if feedback.kind == FeedbackKind.UNKNOWN:
        return "delayed" if feedback.status and feedback.status.startswith("4") else "unusable"
    found = match_feedback(session, feedback, secret_keys)
    if found is None:
        return "unmatched"
    subscriber, lesson = found.subscriber, found.lesson
    if feedback.kind == FeedbackKind.HARD_BOUNCE:
        mark_bounced(session, subscriber, now, reason=feedback.status or "bounce", via=via)
        return "bounced"
    if feedback.kind == FeedbackKind.SOFT_BOUNCE:
        subscriber.soft_bounces += 1
        value = f"soft:{feedback.status or '?'}"
        record_event(
            session, subscriber, EventKind.BOUNCE, now, lesson=lesson, value=value, via=via
        )
        if subscriber.soft_bounces >= soft_bounce_limit:
            mark_bounced(
                session, subscriber, now, reason=f"{subscriber.soft_bounces} soft", via=via
            )
            return "bounced"
        return "soft-bounce"
    if feedback.kind == FeedbackKind.COMPLAINT:
        record_event(
            session,
            subscriber,
            EventKind.COMPLAINT,
            now,
            lesson=lesson,
            value=(feedback.feedback_type or "abuse")[:64],
            via=via,
        )
        # A complaint is about the address, not one course: every course stops.
        unsubscribe_everywhere(session, subscriber, now, via="complaint")
        return "complaint"
    if feedback.kind == FeedbackKind.AUTO_REPLY:
        record_event(session, subscriber, EventKind.AUTO_REPLY, now, lesson=lesson, via=via)
        return "auto-reply"
    # A person wrote back.
    reply = Reply(
        subscriber_id=subscriber.id,
        lesson=lesson,
        subject=(feedback.subject or "")[:300] or None,
        text=feedback.text or "",
        received_at=now,
    )
    session.add(reply)
    session.flush()
    matched = phrases.match(f"{reply.subject or ''}\n{reply.text}") if phrases else []
    reply.risk = flag(session, f"reply:{reply.id}", matched, now)
    record_event(session, subscriber, EventKind.REPLY, now, lesson=lesson, via=via)
    return "reply"


def replies_of(session: Session, subscriber: Subscriber) -> list[Reply]:
    """The reader's replies, oldest first."""
    return list(
        session.scalars(
            select(Reply).where(Reply.subscriber_id == subscriber.id).order_by(Reply.received_at)
        )
    )
