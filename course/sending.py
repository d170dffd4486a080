"""The sending engine: due -> claim -> send -> record. No Flask in here.

The database is the single source of truth. One pass (a *tick*):

1. **Claim** a batch of due deliveries in one short transaction: their ``due_at`` is moved to
   the end of a lease and ``claimed_by`` names this process, then the claim is committed.
   On PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED``, so any number of
   senders share the work without taking the same row; a claim whose process died simply
   becomes due again when its lease ends.
2. **Send** each claimed message over one transport connection. Just before the SMTP call
   the subscriber is checked again, so an unsubscribe or pause that lands while the batch
   runs still stops the mail. On PostgreSQL that check locks the reader and the delivery
   until the message is recorded; on SQLite it is committed before the send (see _Line,
   which also builds the next message while the relay reads the current one).
3. **Record** each result right after the server answered, committed before the next
   message goes out: sent (and the next lesson queued), retry later with backoff, or
   failed. The statements of the hot path are course.delivery_store's.

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

import enum
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

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from course.config import Settings
from course.courses import Catalogue, CourseLibrary, PublishedCourse
from course.crypto import use_keys
from course.delivery_store import DeliveryStore, store_for
from course.envelope import envelope_sender
from course.mail import (
    Connection,
    DeliveryError,
    MaybeDelivered,
    PermanentError,
    Transport,
    start_send,
)
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
from course.subscriptions import after_course, lesson_params, mark_bounced
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


class Outcome(enum.StrEnum):
    """What became of one claimed delivery in a pass (a TickResult field each)."""

    SENT = "sent"  # accepted by the relay (or counted as delivered, see MAX_UNACKNOWLEDGED)
    RETRIED = "retried"  # a temporary failure: tried again later
    FAILED = "failed"  # refused for good, or out of retries
    SKIPPED = "skipped"  # not sent: cancelled, replaced, or taken by another sender


@dataclass
class TickResult:
    """What one pass did; logged as one line per tick."""

    due: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    duration_ms: int = 0

    def count(self, outcome: Outcome) -> None:
        """One more delivery with this outcome."""
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)

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

        def count(outcome: Outcome) -> None:
            with lock:
                result.count(outcome)

        def work() -> None:
            with self.transport.open() as conn:
                store = store_for(self.engine)
                try:
                    _Line(self, store, conn, courses, received, pending, count).run()
                finally:
                    store.close()

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

    def _prepare(self, item: Claimed, courses: Catalogue, received: set[int]) -> _Ready:
        """Decide what ``item`` needs before it can go, and build its message (no database:
        the check that decides whether it goes comes later, see _Line)."""
        course = courses.get(item.course_id)
        ready = _Ready(item, course, received)
        if course is not None and item.kind == DeliveryKind.LESSON and item.generation == 0:
            right = course.content.next_for(received)
            if right != item.number:
                # The practice removed or moved lessons since this one was queued.
                ready.replace, ready.right = True, right
                return ready
        after = item.kind in (DeliveryKind.COMPLETION, DeliveryKind.FOLLOWUP)
        if course is not None and after and getattr(course.content, item.kind) is None:
            ready.removed = True  # the practice removed that email since it was queued
            return ready
        # A confirmation greets only by a name the reader has confirmed before: whoever
        # typed an address into the form also typed the name.
        name = item.name if item.kind != DeliveryKind.CONFIRM or item.confirmed else None
        reader = Reader(item.public_id, item.email, name, item.country)
        try:
            if course is None:
                raise LookupError(f"course {item.course_id} does not exist")
            # The reader's own count for the lesson in its course; an operator's re-send of
            # an earlier lesson shows that lesson's place in the course.
            counted = item.kind == DeliveryKind.LESSON and item.generation == 0
            day, total = course.content.count_for(received, item.number)
            ready.message = self.renderer.build(
                item.kind,
                item.number,
                reader,
                course,
                self.clock(),
                generation=item.generation,
                day=day if counted else None,
                total=total if counted else None,
                known=item.known,
                others=tuple(c for c in courses.open() if c.id != course.id),
                run=item.run,
            )
        except Exception as exc:
            ready.error = exc
        return ready

    def _check(self, store: DeliveryStore, ready: _Ready) -> bool:
        """Whether the claimed delivery may go now, inside the caller's transaction. When
        it may not, it is cancelled or replaced as the reason requires."""
        item = ready.item
        row = store.check(item.id)
        if row is None or row.claimed_by != self.worker or row.status != DeliveryStatus.QUEUED:
            return False  # lost the lease to another sender, or cancelled meanwhile
        if row.subscriber_status not in _MAY_RECEIVE[DeliveryKind(item.kind)] or ready.removed:
            store.cancel(item.id)
            return False
        if ready.replace and ready.course is not None:
            self._replace(store, item, ready.course, ready.right, ready.received)
            return False
        ready.status = row.subscriber_status
        return True

    def _replace(
        self,
        store: DeliveryStore,
        item: Claimed,
        course: PublishedCourse,
        right: int | None,
        received: set[int],
    ) -> None:
        """The queued lesson is no longer the reader's next one: cancel it, and queue the
        right one at once (it was due now), or finish the course if none is left."""
        store.cancel(item.id)
        now = self.clock()
        if right is None:
            self._finish(store, item, course, now)
            return
        store.queue(lesson_params(item.subscriber_id, right, now, run=item.run))
        log.info("delivery=%s replaced by lesson %s after a course edit", item.id, right)

    def _rhythm(self, item: Claimed, course: PublishedCourse) -> Rhythm:
        return Rhythm(
            tz=ZoneInfo(item.timezone),
            hour=send_hour(item.send_hour, course.send_hour or self.settings.send_hour),
            weekdays_only=course.weekdays_only,
            interval=self.settings.lesson_interval,
        )

    def _record_failure(self, store: DeliveryStore, ready: _Ready, exc: DeliveryError) -> Outcome:
        """The relay refused the message, failed, or did not say: recorded off the hot
        path (the caller holds no transaction)."""
        item = ready.item
        if isinstance(exc, MaybeDelivered):
            return self._record_unacknowledged(store, ready, str(exc))
        if isinstance(exc, PermanentError):
            return self._record_permanent(item.id, exc)
        return self._record_transient(item.id, str(exc))

    def _record_unacknowledged(self, store: DeliveryStore, ready: _Ready, error: str) -> Outcome:
        """The relay may have stored the message but did not say so (a timeout after the
        end of DATA). Never resent at once: retried later, at most
        ``MAX_UNACKNOWLEDGED`` sends in all, then counted as delivered, so the course goes
        on (a copy too many beats a lesson lost, and every copy has the same Message-ID)."""
        item = ready.item
        now = self.clock()
        with self.sessions() as session, session.begin():
            delivery = self._claimed_row(session, item.id)
            if delivery is None:
                return Outcome.SKIPPED
            delivery.attempts += 1
            delivery.unacknowledged += 1
            delivery.claimed_by = None
            delivery.last_error = f"not acknowledged by the relay: {error}"[:1000]
            if delivery.unacknowledged < MAX_UNACKNOWLEDGED:
                delivery.due_at = now + UNACKNOWLEDGED_WAIT * delivery.unacknowledged
                log.warning("delivery=%s not acknowledged, retried later", item.id)
                return Outcome.RETRIED
            delivery.last_error = (
                f"sent {delivery.unacknowledged} times, never acknowledged by the relay: "
                "counted as delivered"
            )
        log.warning("delivery=%s never acknowledged: counted as delivered", item.id)
        store.begin()
        status = store.reader_status(item.subscriber_id)
        if status is not None:
            self._record_sent(store, ready, status, keep_error=True)
        store.commit()
        return Outcome.SENT

    def _record_sent(
        self, store: DeliveryStore, ready: _Ready, status: str, *, keep_error: bool = False
    ) -> None:
        """Mark the delivery sent and queue what comes next for the reader (in the caller's
        transaction): their next lesson, or after the last one the completion and
        follow-up."""
        item, course = ready.item, ready.course
        now = self.clock()
        # An operator's re-send (generation > 0) records the send; the course moves on as
        # it is.
        course_moves = course is not None and item.generation == 0
        next_key = (
            course.content.next_for(ready.received | {item.number})
            if course is not None and course_moves and item.kind == DeliveryKind.LESSON
            else None
        )
        if course is not None and next_key is not None and not keep_error:
            # The common case: one statement on PostgreSQL.
            params = self._next_lesson(item, course, next_key, status, now)
            store.sent_and_queue(item.id, now, params)
            return
        store.mark_sent(item.id, now, keep_error=keep_error)
        if course is None or not course_moves:
            return
        if item.kind == DeliveryKind.COMPLETION:
            if status == SubscriberStatus.COMPLETED:
                self._queue_after(store, item, course, DeliveryKind.COMPLETION, now)
        elif item.kind == DeliveryKind.LESSON:
            if next_key is None:
                self._finish(store, item, course, now)
            else:
                store.queue(self._next_lesson(item, course, next_key, status, now))
        # A confirmation or the follow-up: nothing comes after.

    def _next_lesson(
        self, item: Claimed, course: PublishedCourse, key: int, status: str, now: datetime
    ) -> dict[str, object]:
        """The parameters that queue lesson ``key`` after ``item`` (course.subscriptions
        .upsert_lesson's)."""
        lesson = course.content.get(key)
        rhythm = self._rhythm(item, course)
        due = lesson_due(now, lesson.delay_days if lesson else 1, rhythm)
        # Paused or left while this one was in flight: the next lesson waits, cancelled,
        # for a resume (which re-queues it).
        next_status = (
            DeliveryStatus.QUEUED if status == SubscriberStatus.ACTIVE else DeliveryStatus.CANCELLED
        )
        return lesson_params(
            item.subscriber_id,
            key,
            not_before(due, item.snoozed_until, rhythm),
            next_status,
            run=item.run,
        )

    def _finish(
        self, store: DeliveryStore, item: Claimed, course: PublishedCourse, now: datetime
    ) -> None:
        """The reader has had every lesson: the course is completed, and what comes after
        it (course.subscriptions.after_course) is queued."""
        if store.complete(item.subscriber_id, now):
            self._queue_after(store, item, course, DeliveryKind.LESSON, now)

    def _queue_after(
        self, store: DeliveryStore, item: Claimed, course: PublishedCourse, done: str, now: datetime
    ) -> None:
        after = after_course(course, done, now, self._rhythm(item, course))
        if after is not None:
            kind, due = after
            store.queue(lesson_params(item.subscriber_id, 0, due, run=item.run, kind=kind))

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

    def _record_error(self, delivery_id: int, exc: Exception) -> Outcome:
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
        return Outcome.SKIPPED

    def _record_transient(
        self, delivery_id: int, error: str, max_wait: timedelta | None = None
    ) -> Outcome:
        """Count a failed attempt: retry later with backoff, or fail after the window."""
        now = self.clock()
        with self.sessions() as session, session.begin():
            delivery = self._claimed_row(session, delivery_id)
            if delivery is None:
                return Outcome.SKIPPED
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
                return Outcome.FAILED
            wait = backoff(delivery.attempts, self.settings.retry_base_seconds, self.rng)
            delivery.due_at = now + (min(wait, max_wait) if max_wait is not None else wait)
        return Outcome.RETRIED

    def _record_permanent(self, delivery_id: int, error: PermanentError) -> Outcome:
        now = self.clock()
        with self.sessions() as session, session.begin():
            delivery = self._claimed_row(session, delivery_id)
            if delivery is None:
                return Outcome.SKIPPED
            delivery.attempts += 1
            delivery.status = DeliveryStatus.FAILED
            delivery.failed_at = now
            delivery.last_error = str(error)[:1000]
            delivery.claimed_by = None
            if not error.bounce:
                log.warning("delivery=%s refused: %s", delivery_id, str(error)[:200])
                return Outcome.FAILED
            mark_bounced(session, delivery.subscriber, now, reason="refused at sending")
        log.warning("delivery=%s bounced", delivery_id)
        return Outcome.FAILED


@dataclass(slots=True)
class _Ready:
    """A claimed delivery on its way: what the sender decided and built for it."""

    item: Claimed
    course: PublishedCourse | None
    received: set[int]  # the lessons the reader has received in this run
    message: bytes | None = None
    error: Exception | None = None  # building the message failed
    replace: bool = False  # the lesson is no longer the reader's next: replace it
    right: int | None = None  # ... by this one (None: the course is finished)
    removed: bool = False  # an after-course email the practice removed
    status: str | None = None  # the reader's status at the check


class _Line:
    """One SMTP connection and one database connection working through a batch.

    For each message: check it (it may still go), send it, and while the relay reads it,
    build the next one; once the relay has accepted it, record it and check the next one
    together. The record of each message is committed before the next is sent. How long
    the check holds is the database's regime:

    - PostgreSQL (``store.locks``): the check locks the reader and the delivery, and the
      transaction stays open through the send, so an unsubscribe, a pause or an erasure
      that commits before the message leaves stops it, and one that comes later waits for
      its record (and cancels the next lesson). Nothing goes out after an unsubscribe has
      committed. Recording, committing and checking the next message is one round trip.
    - SQLite: one writer at a time, so nothing can be held through a send. The check is
      committed before the send, with a fresh lease; an unsubscribe saved after it lets
      that one message go out, and the record reads the reader again, so nothing after it.
    """

    def __init__(
        self,
        sender: Sender,
        store: DeliveryStore,
        conn: Connection,
        courses: Catalogue,
        received: dict[int, set[int]],
        pending: queue.SimpleQueue[Claimed],
        count: Callable[[Outcome], None],
    ) -> None:
        self.sender, self.store, self.conn = sender, store, conn
        self.courses, self.received, self.pending, self.count = courses, received, pending, count

    def run(self) -> None:
        """Send until the batch is done (or the sender stops)."""
        ready = self._next(None, in_transaction=False)
        while ready is not None:
            ready = self._send(ready)

    def _take(self) -> _Ready | None:
        """The next claimed delivery, prepared; None when the batch is done. When the
        sender is stopping, the rest of the batch is handed back at once."""
        try:
            item = self.pending.get_nowait()
        except queue.Empty:
            return None
        sender = self.sender
        if sender.stopping.is_set():
            rest = [item.id]
            while True:
                try:
                    rest.append(self.pending.get_nowait().id)
                except queue.Empty:
                    break
            sender._release(rest)
            return None
        return sender._prepare(item, self.courses, self.received.get(item.subscriber_id, set()))

    def _next(self, ready: _Ready | None, *, in_transaction: bool) -> _Ready | None:
        """The next delivery that passes its check (``ready``, or the ones after it), with
        its transaction as the regime wants it; None when none is left."""
        store, sender = self.store, self.sender
        if ready is None:
            ready = self._take()
        while ready is not None:
            try:
                if not in_transaction:
                    store.begin()
                in_transaction = True
                go = sender._check(store, ready)
                if go and ready.error is None and not store.locks:
                    # A full lease from now: the send may take up to the SMTP timeouts,
                    # which the lease outlasts (Settings.problems).
                    lease = timedelta(seconds=sender.settings.claim_lease_seconds)
                    store.renew(ready.item.id, sender.clock() + lease)
                if go and ready.error is None and store.locks:
                    return ready  # the transaction, and its locks, stay open through the send
                store.commit()
                in_transaction = False
                if go:
                    if ready.error is None:
                        return ready
                    store.settle()  # recorded on another connection: the locks must be gone
                    self.count(self._unbuildable(ready))
                else:
                    self.count(Outcome.SKIPPED)
            except Exception as exc:
                self.count(self._unexpected(ready, exc))
                in_transaction = False
            ready = self._take()
        if in_transaction:
            store.commit()
        return None

    def _send(self, ready: _Ready) -> _Ready | None:
        """Send ``ready`` (checked), record it, and return the next checked delivery."""
        sender, store, item = self.sender, self.store, ready.item
        assert ready.message is not None
        following: _Ready | None = None
        try:
            if sender.throttle is not None:
                sender.throttle.wait(sender.stopping)
            envelope = envelope_sender(sender.settings, item.id)  # per delivery with VERP
            answer = start_send(self.conn, envelope, envelope_address(item.email), ready.message)
            following = self._take()  # built while the relay reads this one
            answer()
        except DeliveryError as exc:
            store.rollback()  # PostgreSQL: let go of the locks before recording elsewhere
            try:
                outcome = sender._record_failure(store, ready, exc)
            except Exception as error:
                outcome = self._unexpected(ready, error)
            self.count(outcome)
            return self._next(following, in_transaction=False)
        except Exception as exc:
            self.count(self._unexpected(ready, exc))
            return self._next(following, in_transaction=False)
        try:
            if store.locks:
                status = ready.status  # locked since the check: it cannot have changed
            else:
                store.begin()
                status = store.reader_status(item.subscriber_id)
            if status is not None:  # None: erased while the message was out
                sender._record_sent(store, ready, status)
            if store.locks:
                store.commit()  # goes out with the next check, in one round trip
            self.count(Outcome.SENT)
        except Exception as exc:
            self.count(self._unexpected(ready, exc))
            if following is not None:
                sender._release([following.item.id])
            return self._next(None, in_transaction=False)
        return self._next(following, in_transaction=not store.locks)

    def _unbuildable(self, ready: _Ready) -> Outcome:
        """A broken or missing lesson or template. It counts as an attempt with its error,
        and is looked at again soon (the practice may be fixing it): after the retry window
        it fails visibly, like any other failure."""
        log.warning("delivery=%s cannot be built: %s", ready.item.id, ready.error)
        return self.sender._record_transient(
            ready.item.id, f"cannot build the message: {ready.error}", max_wait=BROKEN_CONTENT_WAIT
        )

    def _unexpected(self, ready: _Ready, exc: Exception) -> Outcome:
        """One odd message (a database hiccup, a bug) must not stop the batch, nor loop
        unseen: it counts as an attempt with its error."""
        log.error("delivery=%s could not be sent or recorded", ready.item.id, exc_info=exc)
        try:
            self.store.rollback()
        except Exception:
            log.exception("the sender's database connection failed")
        return self.sender._record_error(ready.item.id, exc)
