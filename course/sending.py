"""The sending engine: due -> claim -> send -> record. No Flask in here.

The database is the single source of truth. One pass (a *tick*):

1. **Claim** a batch of due deliveries in one short transaction: their ``due_at`` is moved to
   the end of a lease and ``claimed_by`` names this process, then the claim is committed.
   On PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED``, so any number of
   senders share the work without taking the same row; a claim whose process died simply
   becomes due again when its lease ends.
2. **Send** each claimed message over one transport connection. Just before the SMTP call
   the subscriber is checked again, so an unsubscribe or pause that lands while the batch
   runs still stops the mail.
3. **Record** each result in its own transaction right after the server answered: sent (and
   the next lesson queued), retry later with backoff, or failed.

A crash can therefore resend at most the one message that was in flight on each connection,
and it is resent with the same Message-ID. A reader's next lesson is queued only once the
one before has been accepted, so a reader never has two lessons on the way.

**Which lesson.** Each lesson is sent as the course's published version says at that
moment. The lesson a queued delivery names is checked against the one rule of a reader's
way through a course (course.lessons.LessonSet.next_for: the first lesson in the current
order they have not received): if the practice removed or moved lessons meanwhile, the
delivery is replaced by the right lesson at the same time, never sent twice, never
skipped silently, never in a burst. After the last lesson come the course's completion
and follow-up emails, if it has them.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection as Conn
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from course.config import Settings
from course.courses import Catalogue, CourseLibrary, PublishedCourse
from course.crypto import use_keys
from course.envelope import envelope_sender
from course.mail import Connection, MaybeDelivered, PermanentError, TransientError, Transport
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    SchedulerTick,
    Subscriber,
    SubscriberStatus,
    lesson_received,
    utcnow,
)
from course.render import Reader, Renderer, envelope_address
from course.schedule import Rhythm, lesson_due, not_before, send_hour
from course.subscriptions import after_course, lesson_params, mark_bounced, upsert_lesson
from course.tokens import Signer

log = logging.getLogger("course.sending")

Clock = Callable[[], datetime]

#: Give up on a message that has failed transiently for this long.
RETRY_WINDOW = timedelta(hours=24)
#: The longest wait between two retries.
MAX_BACKOFF = timedelta(hours=2)
#: The longest wait before a message that could not be built (a broken lesson file or
#: template) is tried again: the practice may be fixing it right now.
BROKEN_CONTENT_WAIT = timedelta(minutes=5)

#: How often a message the relay may have stored (a timeout after the end of DATA) is sent
#: at most, and how long to wait before the next try (times the tries so far).
MAX_UNACKNOWLEDGED = 3
UNACKNOWLEDGED_WAIT = timedelta(minutes=15)

#: Which subscriber states may still receive which kind of email.
_MAY_RECEIVE = {
    # A reader who left may ask to come back: the confirmation of that request goes out.
    DeliveryKind.CONFIRM: {
        SubscriberStatus.PENDING,
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.BOUNCED,
        # Signing up again after finishing: the click starts a new run.
        SubscriberStatus.COMPLETED,
    },
    # COMPLETED: only an operator's re-send of a lesson is ever queued for them.
    DeliveryKind.LESSON: {SubscriberStatus.ACTIVE, SubscriberStatus.COMPLETED},
    DeliveryKind.COMPLETION: {SubscriberStatus.COMPLETED},
    DeliveryKind.FOLLOWUP: {SubscriberStatus.COMPLETED},
}


@dataclass(slots=True)
class Claimed:
    """A claimed delivery and what sending it needs, loaded once per batch."""

    id: int
    kind: str
    number: int
    generation: int
    subscriber_id: int
    public_id: str
    email: str
    name: str | None
    timezone: str
    send_hour: int | None
    run: int
    confirmed: bool  # the reader confirmed their address at some point
    country: str | None  # whose crisis resources the message shows
    course_id: int
    snoozed_until: datetime | None
    # The address confirmed for another course before (the confirmation says so); set by
    # Sender._load for confirmations only.
    known: bool = False


_LOAD = select(
    Delivery.id,
    Delivery.kind,
    Delivery.number,
    Delivery.generation,
    Delivery.subscriber_id,
    Subscriber.public_id,
    Subscriber.email,
    Subscriber.name,
    Subscriber.timezone,
    Subscriber.send_hour,
    Delivery.run,
    Subscriber.confirmed_at.is_not(None),
    Subscriber.country,
    Subscriber.course_id,
    Subscriber.snoozed_until,
).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
#: Which of these addresses confirmed on another course before (for confirmations only).
_KNOWN = select(func.lower(Subscriber.email)).where(
    func.lower(Subscriber.email).in_(bindparam("emails", expanding=True)),
    Subscriber.id.not_in(bindparam("sids", expanding=True)),
    Subscriber.confirmed_at.is_not(None),
)
#: The lessons each reader of a batch has received in their current run.
_RECEIVED = (
    select(Delivery.subscriber_id, Delivery.number)
    .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
    .where(
        Delivery.subscriber_id.in_(bindparam("sids", expanding=True)),
        Delivery.run == Subscriber.run,
        lesson_received(),
    )
)
_CHECK = (
    select(Delivery.status, Delivery.claimed_by, Subscriber.status.label("subscriber_status"))
    .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
    .where(Delivery.id == bindparam("id"))
)
_CANCEL = (
    update(Delivery)
    .where(Delivery.id == bindparam("did"))
    .values(status=DeliveryStatus.CANCELLED, claimed_by=None)
)
_RENEW = update(Delivery).where(Delivery.id == bindparam("did")).values(due_at=bindparam("due"))
_MARK_SENT = (
    update(Delivery)
    .where(Delivery.id == bindparam("did"))
    .values(
        status=DeliveryStatus.SENT,
        # The first time it reached the reader; an operator's re-send keeps that date.
        sent_at=func.coalesce(Delivery.sent_at, bindparam("now")),
        claimed_by=None,
        attempts=Delivery.attempts + 1,
        last_error=None,
    )
)
#: The same, keeping ``last_error`` (a delivery counted as sent that the relay never
#: acknowledged keeps saying so).
_MARK_SENT_NOTED = (
    update(Delivery)
    .where(Delivery.id == bindparam("did"))
    .values(
        status=DeliveryStatus.SENT,
        sent_at=func.coalesce(Delivery.sent_at, bindparam("now")),
        claimed_by=None,
    )
)
_COMPLETE = (
    update(Subscriber)
    .where(Subscriber.id == bindparam("sid"), Subscriber.status == SubscriberStatus.ACTIVE)
    .values(status=SubscriberStatus.COMPLETED, completed_at=bindparam("now"))
)
_SUBSCRIBER_STATUS = select(Subscriber.status).where(Subscriber.id == bindparam("sid"))


@dataclass
class TickResult:
    """What one pass did; logged as one line per tick."""

    due: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    duration_ms: int = 0

    def log_line(self) -> str:
        """``key=value`` pairs, easy for a log system to parse."""
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def backoff(attempts: int, base_seconds: int, rng: random.Random) -> timedelta:
    """Exponential backoff with full jitter on the upper half: ``base * 2^(n-1)``, capped."""
    ceiling = min(base_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF.total_seconds())
    return timedelta(seconds=rng.uniform(ceiling / 2, ceiling))


class Throttle:
    """At most ``rate`` messages per second for this process, shared by its connections.

    A provider's limit is usually per account: with several sender processes, give each a
    share (``COURSE_MAX_PER_SECOND`` divided by the number of senders).
    """

    def __init__(
        self,
        rate: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / rate
        self.monotonic = monotonic
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next sending slot; returns how long to wait for it."""
        with self._lock:
            now = self.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def wait(self, stopping: threading.Event) -> None:
        """Wait for the next slot (returns early when the sender is stopping)."""
        delay = self.reserve()
        if delay > 0:
            stopping.wait(delay)


def worker_name() -> str:
    """A name for this sender process that is unique across machines and restarts."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Sender:
    """Runs ticks against a database and a transport."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        transport: Transport,
        *,
        clock: Clock = utcnow,
        worker: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.transport = transport
        use_keys(settings.data_key_values)  # a bounce mailbox may store replies
        self.clock = clock
        self.worker = worker or worker_name()
        self.rng = rng or random.Random()
        self.library = CourseLibrary(sessions)
        self.renderer = Renderer(settings, Signer(settings.secret_keys))
        self.stopping = threading.Event()
        self.engine = sessions.kw["bind"]
        self._dialect = self.engine.dialect.name
        self.throttle = (
            Throttle(settings.max_per_second) if settings.max_per_second is not None else None
        )

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, limit: int) -> list[int]:
        """Claim up to ``limit`` due deliveries for this process; return their ids."""
        now = self.clock()
        lease_end = now + timedelta(seconds=self.settings.claim_lease_seconds)
        with self.sessions() as session, session.begin():
            query = (
                select(Delivery.id)
                .where(Delivery.status == DeliveryStatus.QUEUED, Delivery.due_at <= now)
                .order_by(Delivery.due_at)
                .limit(limit)
            )
            if self._dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if ids:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids))
                    .values(due_at=lease_end, claimed_by=self.worker)
                )
        return ids

    def release_claims(self) -> int:
        """Hand back every claim this process still holds (on shutdown)."""
        with self.sessions() as session, session.begin():
            result = session.execute(
                update(Delivery)
                .where(Delivery.claimed_by == self.worker, Delivery.status == DeliveryStatus.QUEUED)
                .values(due_at=self.clock(), claimed_by=None)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- one pass ---------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """Send everything that is due now, batch by batch, then record the heartbeat."""
        started = time.monotonic()
        result = TickResult()
        courses = self.library.current()
        try:
            while not self.stopping.is_set():
                ids = self.claim(self.settings.batch_size)
                if not ids:
                    break
                result.due += len(ids)
                self._send_batch(ids, courses, result)
                if len(ids) < self.settings.batch_size:
                    break
        finally:
            result.duration_ms = int((time.monotonic() - started) * 1000)
            self._heartbeat(result)
        return result

    def _send_batch(self, ids: list[int], courses: Catalogue, result: TickResult) -> None:
        """Send claimed deliveries over ``smtp_connections`` connections in parallel.

        Parallel sending cannot reorder a reader's lessons: a reader has at most one lesson
        queued at a time (lesson n+1 is queued only once lesson n was accepted).
        """
        pending: queue.SimpleQueue[Claimed] = queue.SimpleQueue()
        items = self._load(ids)
        received = self._received({item.subscriber_id for item in items})
        for item in items:
            pending.put(item)
        lock = threading.Lock()

        def work() -> None:
            with self.transport.open() as conn, self.engine.connect() as db:
                while True:
                    try:
                        item = pending.get_nowait()
                    except queue.Empty:
                        return
                    if self.stopping.is_set():
                        # Finish the message in flight (done), hand back the rest at once.
                        rest = [item.id]
                        while True:
                            try:
                                rest.append(pending.get_nowait().id)
                            except queue.Empty:
                                break
                        self._release(rest)
                        return
                    try:
                        outcome = self._deliver(
                            db, item, conn, courses, received.get(item.subscriber_id, set())
                        )
                    except Exception as exc:
                        # One odd message (a database hiccup, a bug) must not stop the
                        # batch, nor loop unseen: it counts as an attempt with its error.
                        log.exception("delivery=%s could not be sent or recorded", item.id)
                        outcome = self._record_error(item.id, exc)
                    with lock:
                        setattr(result, outcome, getattr(result, outcome) + 1)

        workers = min(self.settings.smtp_connections, len(ids))
        if workers == 1:
            work()
            return
        threads = [threading.Thread(target=work, name=f"send-{n}") for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _load(self, ids: list[int]) -> list[Claimed]:
        """What the batch needs to know about each claimed delivery, in one query (and one
        more when it holds confirmations)."""
        with self.engine.connect() as db:
            rows = db.execute(_LOAD.where(Delivery.id.in_(ids)).order_by(Delivery.due_at))
            items = [Claimed(*row) for row in rows]
            confirms = [i for i in items if i.kind == DeliveryKind.CONFIRM]
            if confirms:
                known = set(
                    db.scalars(
                        _KNOWN,
                        {
                            "emails": [i.email.lower() for i in confirms],
                            "sids": [i.subscriber_id for i in confirms],
                        },
                    )
                )
                for item in confirms:
                    item.known = item.email.lower() in known
            return items

    def _received(self, subscriber_ids: set[int]) -> dict[int, set[int]]:
        """The lessons each of these readers has received in their current run."""
        found: dict[int, set[int]] = {sid: set() for sid in subscriber_ids}
        if subscriber_ids:
            with self.engine.connect() as db:
                for sid, number in db.execute(_RECEIVED, {"sids": list(subscriber_ids)}):
                    found[sid].add(number)
        return found

    def _release(self, ids: list[int]) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.claimed_by == self.worker)
                .values(due_at=self.clock(), claimed_by=None)
            )

    def _heartbeat(self, result: TickResult) -> None:
        now = self.clock()
        try:
            with self.sessions() as session, session.begin():
                session.merge(
                    SchedulerTick(
                        worker=self.worker, last_tick_at=now, last_summary=result.log_line()
                    )
                )
                # Every restart is a new worker name: forget the ones gone for a week.
                session.execute(
                    delete(SchedulerTick).where(
                        SchedulerTick.last_tick_at < now - timedelta(days=7)
                    )
                )
        except Exception:  # a heartbeat must never stop sending
            log.exception("could not record the scheduler heartbeat")

    def _deliver(
        self,
        db: Conn,
        item: Claimed,
        conn: Connection,
        courses: Catalogue,
        received: set[int],
    ) -> str:
        """Send one claimed delivery and record the outcome; returns the TickResult field.

        This is the hot path, so it uses Core statements on one connection per thread. The
        check right before the SMTP call and the record right after it are two short
        transactions; no lock is held while SMTP talks, on any database. So a web request
        (an unsubscribe, a pause, an erasure) never waits for a slow relay. The price is
        precise and small: an unsubscribe saved while a message to that reader is in flight
        (its check passed just before) lets that one message go out, and nothing after it,
        because the record reads the reader's status again and the next lesson is queued
        cancelled, or is cancelled by the next check.
        """
        course = courses.get(item.course_id)
        with db.begin():
            row = db.execute(_CHECK, {"id": item.id}).first()
            if row is None or row.claimed_by != self.worker or row.status != "queued":
                return "skipped"  # lost the lease to another sender, or cancelled meanwhile
            if row.subscriber_status not in _MAY_RECEIVE[DeliveryKind(item.kind)]:
                db.execute(_CANCEL, {"did": item.id})
                return "skipped"
            if course is not None and item.kind == DeliveryKind.LESSON and item.generation == 0:
                right = course.content.next_for(received)
                if right != item.number:
                    # The practice removed or moved lessons since this one was queued.
                    self._replace(db, item, course, right, received)
                    return "skipped"
            after = item.kind in (DeliveryKind.COMPLETION, DeliveryKind.FOLLOWUP)
            if course is not None and after and getattr(course.content, item.kind) is None:
                # The practice removed that email since it was queued: nothing to send.
                db.execute(_CANCEL, {"did": item.id})
                return "skipped"
            # A full lease from now: the send may take up to the SMTP timeouts, which the
            # lease outlasts (Settings.problems), so no other sender takes it meanwhile.
            lease_end = self.clock() + timedelta(seconds=self.settings.claim_lease_seconds)
            db.execute(_RENEW, {"did": item.id, "due": lease_end})
        now = self.clock()
        # A confirmation greets only by a name the reader has confirmed before: whoever
        # typed an address into the form also typed the name.
        name = item.name if item.kind != DeliveryKind.CONFIRM or item.confirmed else None
        reader = Reader(item.public_id, item.email, name, item.country)
        try:
            if course is None:
                raise LookupError(f"course {item.course_id} does not exist")
            # The reader's own count for the lesson in its course; an operator's re-send of
            # an earlier lesson shows that lesson's place in the course.
            resend = item.generation > 0
            day, total = course.content.count_for(received, item.number)
            message = self.renderer.build(
                item.kind,
                item.number,
                reader,
                course,
                now,
                generation=item.generation,
                day=day if item.kind == DeliveryKind.LESSON and not resend else None,
                total=total if item.kind == DeliveryKind.LESSON and not resend else None,
                known=item.known,
                others=tuple(c for c in courses.open() if c.id != course.id),
                run=item.run,
            )
        except Exception as exc:
            # A broken or missing lesson or template. It counts as an attempt with its
            # error, and is looked at again soon (the practice may be fixing it): after the
            # retry window it fails visibly, like any other failure.
            log.warning("delivery=%s cannot be built: %s", item.id, exc)
            return self._record_transient(
                item.id, f"cannot build the message: {exc}", max_wait=BROKEN_CONTENT_WAIT
            )
        if self.throttle is not None:
            self.throttle.wait(self.stopping)
        try:
            sender = envelope_sender(self.settings, item.id)  # per delivery with VERP
            conn.send(sender, envelope_address(item.email), message)
        except MaybeDelivered as exc:
            return self._record_unacknowledged(db, item, str(exc), course, received)
        except TransientError as exc:
            return self._record_transient(item.id, str(exc))
        except PermanentError as exc:
            return self._record_permanent(item.id, exc)
        with db.begin():
            status = db.execute(_SUBSCRIBER_STATUS, {"sid": item.subscriber_id}).scalar()
            if status is None:  # erased while the message was out: nothing to record
                return "sent"
            self._record_sent(db, item, str(status), course, received)
        return "sent"

    def _replace(
        self,
        db: Conn,
        item: Claimed,
        course: PublishedCourse,
        right: int | None,
        received: set[int],
    ) -> None:
        """The queued lesson is no longer the reader's next one: cancel it, and queue the
        right one at once (it was due now), or finish the course if none is left."""
        db.execute(_CANCEL, {"did": item.id})
        now = self.clock()
        if right is None:
            self._finish(db, item, course, now)
            return
        db.execute(
            upsert_lesson(db.dialect.name),
            lesson_params(item.subscriber_id, right, now, run=item.run),
        )
        log.info("delivery=%s replaced by lesson %s after a course edit", item.id, right)

    def _rhythm(self, item: Claimed, course: PublishedCourse) -> Rhythm:
        return Rhythm(
            tz=ZoneInfo(item.timezone),
            hour=send_hour(item.send_hour, course.send_hour or self.settings.send_hour),
            weekdays_only=course.weekdays_only,
            interval=self.settings.lesson_interval,
        )

    def _record_unacknowledged(
        self,
        db: Conn,
        item: Claimed,
        error: str,
        course: PublishedCourse | None,
        received: set[int],
    ) -> str:
        """The relay may have stored the message but did not say so (a timeout after the
        end of DATA). Never resent at once: retried later, at most
        ``MAX_UNACKNOWLEDGED`` sends in all, then counted as delivered, so the course goes
        on (a copy too many beats a lesson lost, and every copy has the same Message-ID)."""
        now = self.clock()
        with self.sessions() as session, session.begin():
            delivery = self._claimed_row(session, item.id)
            if delivery is None:
                return "skipped"
            delivery.attempts += 1
            delivery.unacknowledged += 1
            delivery.claimed_by = None
            delivery.last_error = f"not acknowledged by the relay: {error}"[:1000]
            if delivery.unacknowledged < MAX_UNACKNOWLEDGED:
                delivery.due_at = now + UNACKNOWLEDGED_WAIT * delivery.unacknowledged
                log.warning("delivery=%s not acknowledged, retried later", item.id)
                return "retried"
            delivery.last_error = (
                f"sent {delivery.unacknowledged} times, never acknowledged by the relay: "
                "counted as delivered"
            )
        log.warning("delivery=%s never acknowledged: counted as delivered", item.id)
        with db.begin():
            status = db.execute(_SUBSCRIBER_STATUS, {"sid": item.subscriber_id}).scalar()
            if status is not None:
                self._record_sent(db, item, str(status), course, received, keep_error=True)
        return "sent"

    def _record_sent(
        self,
        db: Conn,
        item: Claimed,
        status: str,
        course: PublishedCourse | None,
        received: set[int],
        *,
        keep_error: bool = False,
    ) -> None:
        """Mark the delivery sent and queue what comes next for the reader (caller
        commits): their next lesson, or after the last one the completion and follow-up."""
        now = self.clock()
        db.execute(_MARK_SENT_NOTED if keep_error else _MARK_SENT, {"did": item.id, "now": now})
        if course is None or item.generation > 0:
            return  # an operator's re-send: the course moves on as it is
        if item.kind == DeliveryKind.COMPLETION:
            if status == SubscriberStatus.COMPLETED:
                self._queue_after(db, item, course, DeliveryKind.COMPLETION, now)
            return
        if item.kind != DeliveryKind.LESSON:
            return  # a confirmation or the follow-up: nothing comes after
        received = received | {item.number}
        key = course.content.next_for(received)
        if key is None:
            self._finish(db, item, course, now)
            return
        lesson = course.content.get(key)
        rhythm = self._rhythm(item, course)
        due = lesson_due(now, lesson.delay_days if lesson else 1, rhythm)
        # Paused or left while this one was in flight: the next lesson waits, cancelled,
        # for a resume (which re-queues it).
        next_status = (
            DeliveryStatus.QUEUED if status == SubscriberStatus.ACTIVE else DeliveryStatus.CANCELLED
        )
        db.execute(
            upsert_lesson(db.dialect.name),
            lesson_params(
                item.subscriber_id,
                key,
                not_before(due, item.snoozed_until, rhythm),
                next_status,
                run=item.run,
            ),
        )

    def _finish(self, db: Conn, item: Claimed, course: PublishedCourse, now: datetime) -> None:
        """The reader has had every lesson: the course is completed, and what comes after
        it (course.subscriptions.after_course) is queued."""
        if db.execute(_COMPLETE, {"sid": item.subscriber_id, "now": now}).rowcount:
            self._queue_after(db, item, course, DeliveryKind.LESSON, now)

    def _queue_after(
        self, db: Conn, item: Claimed, course: PublishedCourse, done: str, now: datetime
    ) -> None:
        after = after_course(course, done, now, self._rhythm(item, course))
        if after is not None:
            kind, due = after
            db.execute(
                upsert_lesson(db.dialect.name),
                lesson_params(item.subscriber_id, 0, due, run=item.run, kind=kind),
            )

    def _claimed_row(self, session: Session, delivery_id: int) -> Delivery | None:
        """The delivery if it still exists and is ours: a pause, an erase or a lost lease
        may have changed it while the message was out."""
        delivery = session.get(Delivery, delivery_id, populate_existing=True)
        if (
            delivery is None
            or delivery.status != DeliveryStatus.QUEUED
            or delivery.claimed_by != self.worker
        ):
            return None
        return delivery

    def _record_error(self, delivery_id: int, exc: Exception) -> str:
        """An unexpected error: count it as a temporary failure if the database lets us,
        else hand the claim back (and if even that fails, the lease runs out)."""
        error = f"{type(exc).__name__}: {exc}"
        try:
            return self._record_transient(delivery_id, error)
        except Exception:
            log.exception("delivery=%s: the failure could not be recorded", delivery_id)
        try:
            self._release([delivery_id])
        except Exception:
            log.exception("delivery=%s: the claim could not be handed back", delivery_id)
        return "skipped"

    def _record_transient(
        self, delivery_id: int, error: str, max_wait: timedelta | None = None
    ) -> str:
        """Count a failed attempt: retry later with backoff, or fail after the window."""
        now = self.clock()
        with self.sessions() as session, session.begin():
            delivery = self._claimed_row(session, delivery_id)
            if delivery is None:
                return "skipped"
            delivery.attempts += 1
            delivery.last_error = error[:1000]
            delivery.claimed_by = None
            first = delivery.first_failed_at or now
            delivery.first_failed_at = first
            if now - first >= RETRY_WINDOW:
                # Shown on the dashboard, in `course stats` and by /healthz; an operator can
                # retry it from the reader's page (course.subscriptions.retry_failed), and a
                # resume re-queues it too.
                delivery.status = DeliveryStatus.FAILED
                delivery.failed_at = now
                log.warning("delivery=%s failed after %s attempts", delivery_id, delivery.attempts)
                return "failed"
            wait = backoff(delivery.attempts, self.settings.retry_base_seconds, self.rng)
            delivery.due_at = now + (min(wait, max_wait) if max_wait is not None else wait)
        return "retried"

    def _record_permanent(self, delivery_id: int, error: PermanentError) -> str:
        now = self.clock()
        with self.sessions() as session, session.begin():
            delivery = self._claimed_row(session, delivery_id)
            if delivery is None:
                return "skipped"
            delivery.attempts += 1
            delivery.status = DeliveryStatus.FAILED
            delivery.failed_at = now
            delivery.last_error = str(error)[:1000]
            delivery.claimed_by = None
            if not error.bounce:
                log.warning("delivery=%s refused: %s", delivery_id, str(error)[:200])
                return "failed"
            mark_bounced(session, delivery.subscriber, now, reason="refused at sending")
        log.warning("delivery=%s bounced", delivery_id)
        return "failed"
