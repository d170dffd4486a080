"""What a reader does with a lesson: done, check-in, note, view, booking click.

Every function takes a session and never commits.

**Link scanners.** Many mail systems (corporate gateways, some webmail) fetch every link in
a message before the reader sees it, to check it for malware: all at once in parallel, or
one by one, sometimes minutes apart. If a ``GET`` on a link simply recorded an answer, such
a scan would tick "done", record all three check-in answers (the last one fetched would
win) and count a booking click: data that looks real but is not.

So the links are designed around it:

- Links that *change the subscription* (unsubscribe, pause, delete my data, and the
  confirmation that starts the course) never act on ``GET``: they show a page with one
  button that ``POST``s. A fetch cannot change anything. (RFC 8058 one-click unsubscribe
  is a ``POST`` too.)
- Links that *record an answer* act on the click, because the reader should not have to
  click twice. A scanner gives itself away by fetching conflicting answers: two different
  check-in answers for the same lesson within ``SCAN_WINDOW`` (an hour, long enough for a
  scanner that takes its time). No person answers "lighter" and "it stirred things up"
  from the same email within the hour without meaning to change it. When that happens,
  everything recorded from links for that lesson within the window (done, check-in, view,
  booking click) is taken back, a ``link_scan`` event is kept instead, and further link
  hits inside the window are not recorded. The page then asks the reader to choose with
  buttons that ``POST``, which always count.
- Fetches of one lesson's links are handled one at a time (the lesson's progress row is
  locked first), so a scanner that fetches every link at once, on several web workers,
  is seen exactly like one that fetches them in turn.
- ``HEAD`` requests never record anything (``course.web.links``).
- "Viewed" and "booking click" count once per reader, lesson and kind within
  ``COUNT_ONCE_WINDOW``: reloading a page does not inflate the numbers.

What holds, precisely: a fetch of conflicting answers within the hour, in any order and
at any speed within it, records nothing that stays. A scanner that fetches only one answer
link, or spaces its fetches more than an hour apart, is counted like a person. The cost: a
real reader who clicks two different answers in the email within the hour is asked to
confirm their choice on the page.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from course.care import RiskPhrases, flag
from course.models import CheckIn, Event, EventKind, LessonProgress, Subscriber

#: Conflicting link hits closer together than this are taken to be a mail scanner.
SCAN_WINDOW = timedelta(hours=1)
#: A second view or booking click of the same lesson within this window is not counted.
COUNT_ONCE_WINDOW = timedelta(hours=24)
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
    """Store one event. A reader's own action (a click, a page) also shows that their
    mailbox works: it ends a run of soft bounces (course.bounces)."""
    if subscriber is not None and via in ("link", "page") and subscriber.soft_bounces:
        subscriber.soft_bounces = 0
    event = Event(
        subscriber_id=subscriber.id if subscriber else None,
        # Kept when the reader is erased: the per-course reports still count the event.
        course_id=subscriber.course_id if subscriber else None,
        lesson=lesson,
        kind=kind,
        value=value,
        via=via,
        operator_id=operator_id,
        created_at=now,
    )
    session.add(event)
    return event


def progress_row(
    session: Session, subscriber: Subscriber, lesson: int, *, lock: bool = False
) -> LessonProgress:
    """The progress row for (subscriber, lesson) in the reader's current run, created on
    first use. Created with an upsert, so two requests at once never collide on the unique
    constraint; ``lock`` holds the row until the transaction ends, so requests about one
    lesson take turns."""
    where = (
        LessonProgress.subscriber_id == subscriber.id,
        LessonProgress.lesson == lesson,
        LessonProgress.run == subscriber.run,
    )
    query = select(LessonProgress).where(*where)
    row = session.scalars(query.with_for_update() if lock else query).first()
    if row is None:
        dialect = session.get_bind().dialect.name
        insert_ = postgresql_insert if dialect == "postgresql" else sqlite_insert
        session.execute(
            insert_(LessonProgress)
            .values(subscriber_id=subscriber.id, lesson=lesson, run=subscriber.run)
            .on_conflict_do_nothing()
        )
        row = session.scalars(
            (query.with_for_update() if lock else query).execution_options(populate_existing=True)
        ).one()
    return row


def _recent_link_events(
    session: Session, subscriber: Subscriber, lesson: int, since: datetime
) -> list[Event]:
    return list(
        session.scalars(
            select(Event).where(
                Event.subscriber_id == subscriber.id,
                Event.lesson == lesson,
                Event.created_at >= since,
                Event.via == "link",
            )
        )
    )


def scan_in_progress(session: Session, subscriber: Subscriber, lesson: int, now: datetime) -> bool:
    """True if a link scan of this lesson's email was detected within the window."""
    return any(
        e.kind == EventKind.LINK_SCAN
        for e in _recent_link_events(session, subscriber, lesson, now - SCAN_WINDOW)
    )


def _take_back_scan(
    session: Session,
    subscriber: Subscriber,
    lesson: int,
    now: datetime,
    events: list[Event],
    row: LessonProgress,
) -> None:
    """Undo what a scanner's fetches recorded for this lesson, and mark the scan."""
    start = now - SCAN_WINDOW
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

    Returns True if it counts (recorded now or already counted), False if it was
    recognised as a scanner's fetch.
    """
    row = progress_row(session, subscriber, lesson, lock=True)  # one fetch at a time
    recent = _recent_link_events(session, subscriber, lesson, now - SCAN_WINDOW)
    if any(e.kind == EventKind.LINK_SCAN for e in recent):
        return False
    if kind == EventKind.CHECKIN and any(
        e.kind == EventKind.CHECKIN and e.value != value for e in recent
    ):
        _take_back_scan(session, subscriber, lesson, now, recent, row)
        return False
    if kind == EventKind.DONE:
        mark_done(session, subscriber, lesson, now, via="link")
    elif kind == EventKind.CHECKIN:
        assert value is not None
        check_in(session, subscriber, lesson, CheckIn(value), now, via="link")
    elif not _counted_lately(session, subscriber, lesson, kind, now):
        record_event(session, subscriber, kind, now, lesson=lesson, value=value, via="link")
    return True


def _counted_lately(
    session: Session, subscriber: Subscriber, lesson: int, kind: EventKind, now: datetime
) -> bool:
    """Whether a view or booking click of this lesson was counted within the window."""
    found = session.scalar(
        select(Event.id)
        .where(
            Event.subscriber_id == subscriber.id,
            Event.lesson == lesson,
            Event.kind == kind,
            Event.created_at >= now - COUNT_ONCE_WINDOW,
        )
        .limit(1)
    )
    return found is not None


def mark_done(
    session: Session, subscriber: Subscriber, lesson: int, now: datetime, via: str = "page"
) -> None:
    """Record that the reader did the lesson's exercise (idempotent)."""
    row = progress_row(session, subscriber, lesson, lock=True)
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
    row = progress_row(session, subscriber, lesson, lock=True)
    if row.checkin == answer:
        return
    row.checkin = answer
    row.checkin_at = now
    record_event(session, subscriber, EventKind.CHECKIN, now, lesson=lesson, value=answer, via=via)


def save_note(
    session: Session,
    subscriber: Subscriber,
    lesson: int,
    note: str,
    now: datetime,
    phrases: RiskPhrases | None = None,
) -> None:
    """Keep the reader's private note about the day (an empty note deletes it).

    The note text lives only on the progress row (encrypted), never in events or logs. A
    note that matches one of ``phrases`` puts the reader on the "Needs a look" list and
    queues an alert to the practice (course.care).
    """
    row = progress_row(session, subscriber, lesson, lock=True)
    row.note = note or None
    row.note_at = now if note else None
    matched = phrases.match(note) if phrases is not None and note else []
    row.risk = flag(session, f"note:{row.id}", matched, now)
    record_event(session, subscriber, EventKind.NOTE, now, lesson=lesson)
