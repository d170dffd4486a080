"""What a reader does with a lesson: done, check-in, note, view, booking click.

Every function takes a session and never commits.

**Link scanners.** Many mail systems (corporate gateways, some webmail) fetch every link in
a message before the reader sees it, to check it for malware. If a ``GET`` on a link simply
recorded an answer, such a scan would tick "done", record all three check-in answers (the
last one fetched would win) and count a booking click: data that looks real but is not.

So the links are designed around it:

- Links that *change the subscription* (unsubscribe, pause, delete my data) never act on
  ``GET``: they show a page with one button that ``POST``s. A prefetch cannot unsubscribe
  anyone. (RFC 8058 one-click unsubscribe is a ``POST`` too.)
- Links that *record an answer* act on the click, because the reader should not have to
  click twice. A scanner gives itself away by fetching conflicting answers: two different
  check-in answers for the same lesson within ``SCAN_WINDOW``. No person answers "lighter"
  and "it stirred things up" within seconds of each other from the email. When that
  happens, everything recorded from links for that lesson within the window (done,
  check-in, view, booking click) is taken back, a ``link_scan`` event is kept instead, and
  further link hits inside the window are ignored. The page then asks the reader to choose
  with buttons that ``POST``, which always count.
- ``HEAD`` requests never record anything.

The cost: a real reader who clicks two different answers within the window is asked to
confirm their choice on the page. Nothing false is ever recorded silently.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from course.models import CheckIn, Event, EventKind, LessonProgress, Subscriber

#: Conflicting link hits closer together than this are taken to be a mail scanner.
SCAN_WINDOW = timedelta(seconds=30)
MAX_NOTE = 2000

_LINK_RECORDED = (EventKind.DONE, EventKind.CHECKIN, EventKind.VIEW, EventKind.BOOK)


def record_event(
    session: Session,
    subscriber: Subscriber | None,
    kind: EventKind,
    now: datetime,
    *,
    lesson: int | None = None,
    value: str | None = None,
    via: str = "page",
    operator_id: int | None = None,
) -> Event:
    """Store one event."""
    event = Event(
        subscriber_id=subscriber.id if subscriber else None,
        lesson=lesson,
        kind=kind,
        value=value,
        via=via,
        operator_id=operator_id,
        created_at=now,
    )
    session.add(event)
    return event


def progress_row(session: Session, subscriber: Subscriber, lesson: int) -> LessonProgress:
    """The progress row for (subscriber, lesson), created on first use."""
    row = session.scalars(
        select(LessonProgress).where(
            LessonProgress.subscriber_id == subscriber.id, LessonProgress.lesson == lesson
        )
    ).first()
    if row is None:
        row = LessonProgress(subscriber_id=subscriber.id, lesson=lesson)
        session.add(row)
        session.flush()
    return row


def _recent_link_events(
    session: Session, subscriber: Subscriber, lesson: int, now: datetime
) -> list[Event]:
    return list(
        session.scalars(
            select(Event).where(
                Event.subscriber_id == subscriber.id,
                Event.lesson == lesson,
                Event.created_at >= now - SCAN_WINDOW,
                Event.via == "link",
            )
        )
    )


def scan_in_progress(session: Session, subscriber: Subscriber, lesson: int, now: datetime) -> bool:
    """True if a link scan of this lesson's email was detected within the window."""
    return any(
        e.kind == EventKind.LINK_SCAN for e in _recent_link_events(session, subscriber, lesson, now)
    )


def _take_back_scan(
    session: Session, subscriber: Subscriber, lesson: int, now: datetime, events: list[Event]
) -> None:
    """Undo what a scanner's fetches recorded for this lesson, and mark the scan."""
    start = now - SCAN_WINDOW
    row = progress_row(session, subscriber, lesson)
    if row.done_at is not None and row.done_at >= start:
        row.done_at = None
    if row.checkin_at is not None and row.checkin_at >= start:
        # Back to the reader's own answer from before the scan, if they had given one.
        before = session.scalars(
            select(Event)
            .where(
                Event.subscriber_id == subscriber.id,
                Event.lesson == lesson,
                Event.kind == EventKind.CHECKIN,
                Event.created_at < start,
            )
            .order_by(Event.created_at.desc(), Event.id.desc())
        ).first()
        row.checkin = before.value if before else None
        row.checkin_at = before.created_at if before else None
    session.execute(
        delete(Event).where(Event.id.in_([e.id for e in events if e.kind in _LINK_RECORDED]))
    )
    record_event(session, subscriber, EventKind.LINK_SCAN, now, lesson=lesson, via="link")


def record_link_click(
    session: Session,
    subscriber: Subscriber,
    lesson: int,
    kind: EventKind,
    now: datetime,
    value: str | None = None,
) -> bool:
    """Record a click on a link in the email, unless it is part of a scan.

    Returns True if it was recorded, False if it was recognised as a scanner's fetch.
    """
    recent = _recent_link_events(session, subscriber, lesson, now)
    if any(e.kind == EventKind.LINK_SCAN for e in recent):
        return False
    if kind == EventKind.CHECKIN and any(
        e.kind == EventKind.CHECKIN and e.value != value for e in recent
    ):
        _take_back_scan(session, subscriber, lesson, now, recent)
        return False
    if kind == EventKind.DONE:
        mark_done(session, subscriber, lesson, now, via="link")
    elif kind == EventKind.CHECKIN:
        assert value is not None
        check_in(session, subscriber, lesson, CheckIn(value), now, via="link")
    else:
        record_event(session, subscriber, kind, now, lesson=lesson, value=value, via="link")
    return True


def mark_done(
    session: Session, subscriber: Subscriber, lesson: int, now: datetime, via: str = "page"
) -> None:
    """Record that the reader did the lesson's exercise (idempotent)."""
    row = progress_row(session, subscriber, lesson)
    if row.done_at is None:
        row.done_at = now
        record_event(session, subscriber, EventKind.DONE, now, lesson=lesson, via=via)


def check_in(
    session: Session,
    subscriber: Subscriber,
    lesson: int,
    answer: CheckIn,
    now: datetime,
    via: str = "page",
) -> None:
    """Record the check-in answer; the same answer again changes nothing, another replaces it."""
    row = progress_row(session, subscriber, lesson)
    if row.checkin == answer:
        return
    row.checkin = answer
    row.checkin_at = now
    record_event(session, subscriber, EventKind.CHECKIN, now, lesson=lesson, value=answer, via=via)


def save_note(
    session: Session, subscriber: Subscriber, lesson: int, note: str, now: datetime
) -> None:
    """Keep the reader's private note about the day (an empty note deletes it).

    The note text lives only on the progress row, never in events or logs.
    """
    row = progress_row(session, subscriber, lesson)
    row.note = note or None
    row.note_at = now if note else None
    record_event(session, subscriber, EventKind.NOTE, now, lesson=lesson)
