"""Editing a live course is safe: readers at every place in a course get each lesson once,
in the course's order at the moment it is sent, as published at that moment, none lost,
never two at once (issue 14).

The engine is driven for real: versions are published with ``course.courses.publish``,
readers sign up and confirm through the domain functions, and a sender (its own engine,
like ``course scheduler``) ticks against a clock the test moves. The clock jumps from one
due delivery to the next, so every message goes out at exactly the moment it was due. A
recording transport keeps every message with the clock's time, in one log together with
every publish, pause and change of a reader's status: the checks replay that log.

:class:`Harness` is shared with tests/test_snooze_and_retake.py and tests/test_weekdays.py.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from course.config import MIN_CALENDAR_GAP_HOURS, Settings
from course.content import AfterCourseFields, CourseContent
from course.courses import CourseLibrary, PublishedCourse, create_course, publish
from course.lessons import LessonFields
from course.models import (
    Course,
    CourseStatus,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
)
from course.subscriptions import (
    by_public_id,
    confirm,
    pause,
    resume,
    subscribe,
    validate_signup,
)
from tests.conftest import FakeClock, engine_settings, make_sender, sessions_for
from tests.helpers import parse, text_part

GAP = timedelta(hours=MIN_CALENDAR_GAP_HOURS)

# -- the harness ------------------------------------------------------------------------------

#: ``<lesson-3-run2-r1.PUBLICID@domain>``: kind, key, run (1 when absent), re-send generation.
MESSAGE_ID = re.compile(
    r"<(?P<kind>[a-z]+)-(?P<key>\d+)(?:-run(?P<run>\d+))?(?:-r(?P<gen>\d+))?"
    r"\.(?P<pid>[^@>]+)@"
)
DAY_OF = re.compile(r"^Day (\d+) of (\d+):")


@dataclass(frozen=True)
class Sent:
    """One message the sender handed to the transport."""

    seq: int
    to: str
    public_id: str
    kind: str
    key: int
    run: int
    generation: int
    subject: str
    at: datetime
    raw: bytes

    @property
    def text(self) -> str:
        return text_part(self.raw)

    @property
    def day_of(self) -> tuple[int, int]:
        """The reader's "Day k of n" in the subject."""
        match = DAY_OF.match(self.subject)
        assert match, f"no 'Day k of n' in {self.subject!r}"
        return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Published:
    """A version of a course became the published one."""

    seq: int
    course_id: int
    content: CourseContent
    at: datetime

    @property
    def order(self) -> tuple[int, ...]:
        return tuple(lesson.key for lesson in self.content.lessons)


@dataclass(frozen=True)
class StatusSeen:
    """A reader's status, as read after an action or a tick changed it."""

    seq: int
    public_id: str
    status: str
    at: datetime


Entry = Sent | Published | StatusSeen


class RecordingTransport:
    """A transport that records what it is asked to send (with the clock's time) in the
    harness's log; it can refuse chosen recipients, and run a hook while a message is "on
    the wire" (to change something while it is in flight)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.fail: dict[str, Exception] = {}
        self.on_send: Callable[[Sent], None] | None = None

    def open(self) -> RecordingTransport:
        return self

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        if to in self.fail:
            raise self.fail[to]
        msg = parse(message)
        found = MESSAGE_ID.match(str(msg["Message-ID"]))
        assert found, msg["Message-ID"]
        sent = Sent(
            seq=self.harness.next_seq(),
            to=to,
            public_id=found["pid"],
            kind=found["kind"],
            key=int(found["key"]),
            run=int(found["run"] or 1),
            generation=int(found["gen"] or 0),
            subject=str(msg["Subject"]),
            at=self.harness.clock(),
            raw=message,
        )
        if self.on_send is not None:
            self.on_send(sent)
        self.harness.log.append(sent)


def lesson(key: int, delay: int = 1, edition: int = 1) -> LessonFields:
    """A small lesson whose subject and text name its key and edition."""
    return LessonFields(
        key=key,
        delay_days=delay,
        slug=f"lesson-{key}",
        subject=f"Day {{day}} of {{total}}: Lesson {key}, edition {edition}",
        title=f"Lesson {key}",
        preheader=f"Lesson {key} in one line.",
        body=f"The text of lesson {key}, edition {edition}.",
    )


def five_lessons() -> list[LessonFields]:
    """Five lessons: the first at once, then one a day."""
    return [lesson(1, delay=0), *(lesson(k) for k in range(2, 6))]


COMPLETION = AfterCourseFields(subject="You finished", body="Well done.", days=1)


@dataclass(repr=False)
class Harness:
    """A database, a sender on its own engine, a clock the test moves, and one log."""

    settings: Settings
    clock: FakeClock
    log: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sessions = sessions_for(self.settings.database_url)
        self.library = CourseLibrary(self.sessions)
        self.transport = RecordingTransport(self)
        self.sender = make_sender(self.settings, self.transport, self.clock)
        self._seq = 0
        self._status: dict[str, str] = {}
        self.course_of: dict[str, int] = {}  # public id -> course id

    def __repr__(self) -> str:
        return f"Harness({self.settings.database_url!r}, at {self.clock.now})"

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- courses --------------------------------------------------------------------------

    def new_course(
        self,
        slug: str,
        lessons: Sequence[LessonFields],
        *,
        completion: AfterCourseFields | None = None,
        followup: AfterCourseFields | None = None,
        **settings: object,
    ) -> int:
        """A published course with these lessons; returns its id."""
        with self.sessions() as s, s.begin():
            course = create_course(
                s, slug, slug.replace("-", " ").title(), self.clock(), **settings
            )
            course.status = CourseStatus.PUBLISHED
            course_id = course.id
        self.publish(
            course_id,
            CourseContent(lessons=tuple(lessons), completion=completion, followup=followup),
        )
        return course_id

    def publish(self, course_id: int, content: CourseContent) -> None:
        """Publish ``content`` as the course's next version, now."""
        with self.sessions() as s, s.begin():
            course = s.get(Course, course_id)
            assert course is not None
            publish(s, course, content, author="test", now=self.clock())
        self.log.append(Published(self.next_seq(), course_id, content, self.clock()))

    def content(self, course_id: int) -> CourseContent:
        """The course's content as last published by this harness."""
        return next(
            e.content
            for e in reversed(self.log)
            if isinstance(e, Published) and e.course_id == course_id
        )

    def edit(
        self, course_id: int, change: Callable[[list[LessonFields]], list[LessonFields]]
    ) -> None:
        """Publish the course's lessons as ``change`` makes them (completion kept)."""
        content = self.content(course_id)
        self.publish(
            course_id, content.model_copy(update={"lessons": tuple(change(list(content.lessons)))})
        )

    def catalogue_course(self, session: Session, course_id: int) -> PublishedCourse:
        found = self.library.current(session).get(course_id)
        assert found is not None
        return found

    # -- readers --------------------------------------------------------------------------

    def signup(
        self, email: str, course_id: int, tz: str = "Europe/Berlin", send_hour: int | None = None
    ) -> str:
        """Sign up (a confirmation is queued); returns the enrolment's public id."""
        data = validate_signup({"email": email, "timezone": tz}, check_deliverability=False)
        data = dataclasses.replace(data, course_id=course_id)
        with self.sessions() as s, s.begin():
            sub = subscribe(
                s, data, now=self.clock(), default_timezone="UTC", resend_after=timedelta(0)
            )
            if send_hour is not None:
                sub.send_hour = send_hour
            pid = sub.public_id
        self.course_of[pid] = course_id
        self.observe()
        return pid

    def confirm(self, pid: str, number: int | None = None) -> None:
        """The reader's click on their confirmation (``number``: which one)."""
        with self.sessions() as s, s.begin():
            found = confirm(
                s,
                pid,
                self.clock(),
                number,
                self.settings.secret_keys,
                courses=self.library.current(s),
                settings=self.settings,
            )
            assert found is not None
        self.observe()

    def enrol(
        self, email: str, course_id: int, tz: str = "Europe/Berlin", send_hour: int | None = None
    ) -> str:
        """Sign up and confirm; the first lesson is queued (not sent: no tick yet)."""
        pid = self.signup(email, course_id, tz, send_hour)
        self.confirm(pid)
        return pid

    def act(
        self, pid: str, action: Callable[[Session, Subscriber, PublishedCourse], object]
    ) -> object:
        """Run a domain function on one enrolment in its own transaction, now."""
        with self.sessions() as s, s.begin():
            sub = by_public_id(s, pid)
            assert sub is not None
            result = action(s, sub, self.catalogue_course(s, sub.course_id))
        self.observe()
        return result

    def pause(self, pid: str) -> bool:
        return bool(self.act(pid, lambda s, sub, _c: pause(s, sub, self.clock())))

    def resume(self, pid: str) -> bool:
        return bool(
            self.act(
                pid,
                lambda s, sub, c: resume(s, sub, self.clock(), settings=self.settings, course=c),
            )
        )

    def subscriber(self, pid: str) -> Subscriber:
        with self.sessions() as s:
            sub = by_public_id(s, pid)
            assert sub is not None
            s.expunge(sub)
            return sub

    def queued_lesson(self, pid: str) -> tuple[int, datetime] | None:
        """The lesson queued for the reader (key, due), if any."""
        with self.sessions() as s:
            row = s.execute(
                select(Delivery.number, Delivery.due_at)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(
                    Subscriber.public_id == pid,
                    Delivery.run == Subscriber.run,
                    Delivery.kind == DeliveryKind.LESSON,
                    Delivery.status == DeliveryStatus.QUEUED,
                )
            ).all()
        assert len(row) <= 1, f"more than one lesson queued: {row}"
        return (row[0][0], row[0][1]) if row else None

    def observe(self) -> None:
        """Log every status change of the readers this harness signed up."""
        if not self.course_of:
            return
        with self.sessions() as s:
            rows = s.execute(
                select(Subscriber.public_id, Subscriber.status).where(
                    Subscriber.public_id.in_(list(self.course_of))
                )
            ).all()
        for pid, status in rows:
            if self._status.get(pid) != status:
                self._status[pid] = status
                self.log.append(StatusSeen(self.next_seq(), pid, str(status), self.clock()))

    # -- time -----------------------------------------------------------------------------

    def run_until(self, end: datetime) -> None:
        """Tick at every moment something is due, up to ``end``; the clock ends at ``end``."""
        last: tuple[datetime, int] | None = None
        repeats = 0
        for _ in range(20_000):
            with self.sessions() as s:
                due = s.scalar(
                    select(func.min(Delivery.due_at)).where(
                        Delivery.status == DeliveryStatus.QUEUED
                    )
                )
            if due is None or due > end:
                break
            if due > self.clock.now:
                self.clock.now = due
            self.sender.tick()
            self.observe()
            # The same due row again and again at the same moment: the engine is stuck.
            marker = (due, len(self.log))
            repeats = repeats + 1 if marker == last else 0
            assert repeats < 5, f"a delivery due at {due} is never handled"
            last = marker
        else:
            raise AssertionError("the simulation did not settle")
        self.clock.now = max(self.clock.now, end)

    def run_for(self, **delta: float) -> None:
        self.run_until(self.clock.now + timedelta(**delta))

    # -- what was sent --------------------------------------------------------------------

    def sent(self, pid: str | None = None, kind: str | None = None) -> list[Sent]:
        return [
            e
            for e in self.log
            if isinstance(e, Sent)
            and (pid is None or e.public_id == pid)
            and (kind is None or e.kind == kind)
        ]

    def lessons(self, pid: str, run: int = 1) -> list[Sent]:
        return [s for s in self.sent(pid, DeliveryKind.LESSON) if s.run == run]


@pytest.fixture
def harness(tmp_path: Path, db_url: str, clock: FakeClock) -> Harness:
    return Harness(engine_settings(tmp_path, db_url), clock)


def replay(h: Harness, pid: str, *, calendar: bool = True) -> list[str]:
    """Every broken guarantee for one enrolment, found by replaying the log: each lesson is
    the first in the course's order *at that moment* that the reader has not had this run
    (so never twice and never skipped), with the text published at that moment and their
    own "Day k of n"; never two lessons less than MIN_CALENDAR_GAP_HOURS apart; nothing
    while paused, pending or after the course; completed only with nothing left."""
    course_id = h.course_of[pid]
    problems: list[str] = []
    content: CourseContent | None = None
    status = SubscriberStatus.PENDING
    run = 1
    received: list[int] = []
    last_at: datetime | None = None
    for entry in h.log:
        if isinstance(entry, Published) and entry.course_id == course_id:
            content = entry.content
        elif isinstance(entry, StatusSeen) and entry.public_id == pid:
            status = SubscriberStatus(entry.status)
            if status == SubscriberStatus.COMPLETED and content is not None:
                left = [k for k in (les.key for les in content.lessons) if k not in received]
                if left:
                    problems.append(f"completed at {entry.at} with {left} never sent")
        elif isinstance(entry, Sent) and entry.public_id == pid and entry.kind == "lesson":
            assert content is not None
            if entry.run != run:
                run, received, last_at = entry.run, [], None
            where = f"lesson {entry.key} at {entry.at:%Y-%m-%d %H:%M}"
            if status != SubscriberStatus.ACTIVE:
                problems.append(f"{where} sent while the reader was {status}")
            order = [les.key for les in content.lessons]
            expected = next((k for k in order if k not in received), None)
            if entry.key in received:
                problems.append(f"{where} sent twice")
            elif entry.key != expected:
                problems.append(f"{where} sent, but {expected} was next in {order}")
            day = len(received) + 1
            total = day + sum(1 for k in order if k not in received and k != entry.key)
            fields = content.lesson(entry.key)
            if fields is not None:
                want = fields.subject.replace("{day}", str(day)).replace("{total}", str(total))
                if entry.subject != want:
                    problems.append(f"{where}: subject {entry.subject!r}, expected {want!r}")
                if fields.body not in entry.text:
                    problems.append(f"{where}: not the text published at that moment")
            if calendar and last_at is not None and entry.at - last_at < GAP:
                problems.append(f"{where}: only {entry.at - last_at} after the lesson before")
            received.append(entry.key)
            last_at = entry.at
    return problems


# -- readers at every place in a five-lesson course ---------------------------------------------

#: The places, and the order they are listed in failures.
PLACES = ("pending", "queued-1", "had-1", "had-2", "had-3", "had-4", "paused", "completed")


@dataclass
class Place:
    """One reader and where they were in the course when it was edited."""

    pid: str
    status: str
    received: list[int]
    queued: tuple[int, datetime] | None


@dataclass
class Population:
    harness: Harness
    course_id: int
    readers: dict[str, str]  # place -> public id
    before: dict[str, Place] = field(default_factory=dict)
    edit_seq: int = 0
    edited_at: datetime | None = None

    def snapshot(self) -> None:
        h = self.harness
        for place, pid in self.readers.items():
            self.before[place] = Place(
                pid=pid,
                status=h.subscriber(pid).status,
                received=[s.key for s in h.lessons(pid)],
                queued=h.queued_lesson(pid),
            )

    def after(self, place: str) -> list[Sent]:
        """The lessons the reader got after the edit."""
        return [s for s in self.harness.lessons(self.readers[place]) if s.seq > self.edit_seq]


def populate(h: Harness) -> Population:
    """One reader at each place of a five-lesson course (one lesson a day at 08:00 Berlin
    time), as of Friday 2026-03-06 12:00 UTC:

    - pending: signed up, never confirmed;
    - queued-1: has just confirmed, lesson 1 is queued (due now);
    - had-1 .. had-4: received lessons 1..k, lesson k+1 queued for tomorrow 08:00;
    - paused: received lessons 1 and 2, then paused;
    - completed: received all five (their completion email is queued).
    """
    course_id = h.new_course("live", five_lessons(), completion=COMPLETION)
    start = h.clock.now  # Monday 2026-03-02 07:00 UTC = 08:00 in Berlin
    readers: dict[str, str] = {}
    for day, place in enumerate(["completed", "had-4", "had-3", "had-2"]):
        h.run_until(start + timedelta(days=day, hours=3))
        readers[place] = h.enrol(f"{place}@example.com", course_id)
        if place == "had-3":
            readers["paused"] = h.enrol("paused@example.com", course_id)
    h.run_until(start + timedelta(days=3, hours=5))
    assert h.pause(readers["paused"])
    h.run_until(start + timedelta(days=4, hours=3))
    readers["had-1"] = h.enrol("had-1@example.com", course_id)
    h.run_until(start + timedelta(days=4, hours=4))
    readers["pending"] = h.signup("pending@example.com", course_id)
    h.run_until(start + timedelta(days=4, hours=5))
    readers["queued-1"] = h.enrol("queued-1@example.com", course_id)
    population = Population(h, course_id, {p: readers[p] for p in PLACES})
    population.snapshot()
    # The places are what they say.
    got = {
        p: (pl.status, pl.received, pl.queued and pl.queued[0])
        for p, pl in population.before.items()
    }
    assert got == {
        "pending": ("pending", [], None),
        "queued-1": ("active", [], 1),
        "had-1": ("active", [1], 2),
        "had-2": ("active", [1, 2], 3),
        "had-3": ("active", [1, 2, 3], 4),
        "had-4": ("active", [1, 2, 3, 4], 5),
        "paused": ("paused", [1, 2], None),
        "completed": ("completed", [1, 2, 3, 4, 5], None),
    }
    return population


def edit_and_run(
    population: Population, change: Callable[[list[LessonFields]], list[LessonFields]]
) -> None:
    """Publish the edit now, then let the pending reader confirm and the paused one resume
    an hour later, and run two weeks."""
    h = population.harness
    h.edit(population.course_id, change)
    population.edit_seq = h.log[-1].seq
    population.edited_at = h.clock.now
    h.run_for(hours=1)
    h.confirm(population.readers["pending"])
    assert h.resume(population.readers["paused"])
    h.run_for(days=14)


def by_key(lessons: list[LessonFields]) -> dict[int, LessonFields]:
    return {les.key: les for les in lessons}


def reorder(*keys: int) -> Callable[[list[LessonFields]], list[LessonFields]]:
    def change(lessons: list[LessonFields]) -> list[LessonFields]:
        found = by_key(lessons)
        return [found[k] for k in keys]

    return change


def remove(key: int) -> Callable[[list[LessonFields]], list[LessonFields]]:
    return lambda lessons: [les for les in lessons if les.key != key]


def add_at(index: int, key: int = 6) -> Callable[[list[LessonFields]], list[LessonFields]]:
    def change(lessons: list[LessonFields]) -> list[LessonFields]:
        return [*lessons[:index], lesson(key), *lessons[index:]]

    return change


def new_edition(lessons: list[LessonFields]) -> list[LessonFields]:
    return [lesson(les.key, les.delay_days, edition=2) for les in lessons]


#: name -> (the edit, what "had-2" (lessons 1 and 2 received, 3 queued) gets after it).
EDITS: dict[str, tuple[Callable[[list[LessonFields]], list[LessonFields]], list[int]]] = {
    "add-at-end": (add_at(5), [3, 4, 5, 6]),
    "add-in-the-middle": (add_at(1), [6, 3, 4, 5]),  # before their place: it comes next
    "remove-1": (remove(1), [3, 4, 5]),
    "remove-2": (remove(2), [3, 4, 5]),  # one they had
    "remove-3": (remove(3), [4, 5]),  # the one queued for them
    "remove-4": (remove(4), [3, 5]),  # one after their place
    "remove-5": (remove(5), [3, 4]),  # the last
    "move-5-before-their-place": (reorder(1, 5, 2, 3, 4), [5, 3, 4]),
    "swap-the-next-two": (reorder(1, 2, 4, 3, 5), [4, 3, 5]),
    "reverse": (reorder(5, 4, 3, 2, 1), [5, 4, 3]),
    "remove-3-add-6-swap-4-5": (
        lambda ls: [*reorder(1, 2, 5, 4)(ls), lesson(6)],
        [5, 4, 6],
    ),
    "edit-every-text": (new_edition, [3, 4, 5]),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_a_live_edit_keeps_every_reader_whole(harness: Harness, name: str) -> None:
    """Whatever the edit, for a reader at every place: each lesson of the new order they had
    not received arrives once, in the new order, as the new version has it; a lesson
    removed before they got it never arrives; the first lesson after the edit goes out at
    the moment the queued one was due (never earlier, never two at once); "Day k of n"
    counts on without repeating or jumping; nobody who completed gets anything new."""
    change, had_2_gets = EDITS[name]
    population = populate(harness)
    new_order = [les.key for les in change(five_lessons())]
    edit_and_run(population, change)
    h = population.harness
    problems: dict[str, list[str]] = {}
    for place in PLACES:
        pid = population.readers[place]
        before = population.before[place]
        found = replay(h, pid)
        got = [s.key for s in population.after(place)]
        if before.status == SubscriberStatus.COMPLETED:
            expected: list[int] = []
        else:
            expected = [k for k in new_order if k not in before.received]
        if got != expected:
            found.append(f"after the edit got {got}, expected {expected}")
        every = [s.key for s in h.lessons(pid)]
        if len(every) != len(set(every)):
            found.append(f"a lesson twice: {every}")
        after = population.after(place)
        if before.queued is not None and place != "paused":
            # The lesson they were waiting for, or its replacement, at its time.
            due = before.queued[1]
            if after and after[0].at != due:
                found.append(f"first lesson after the edit at {after[0].at}, was due {due}")
        counts = [s.day_of[0] for s in h.lessons(pid)]
        if counts != list(range(1, len(counts) + 1)):
            found.append(f"'Day k' went {counts}")
        status = h.subscriber(pid).status
        if status != SubscriberStatus.COMPLETED:
            found.append(f"ended {status}, not completed")
        completions = h.sent(pid, DeliveryKind.COMPLETION)
        if len(completions) != 1 or (h.lessons(pid) and completions[0].at <= h.lessons(pid)[-1].at):
            found.append(f"completion emails: {[c.at for c in completions]}")
        if found:
            problems[place] = found
    assert problems == {}
    assert [s.key for s in population.after("had-2")] == had_2_gets


def test_a_lesson_added_at_the_end_reaches_readers_on_the_course_only(harness: Harness) -> None:
    population = populate(harness)
    edit_and_run(population, add_at(5))
    got_six = {p for p in PLACES if 6 in [s.key for s in population.after(p)]}
    assert got_six == set(PLACES) - {"completed"}
    # Their count grew with the course: "Day 6 of 6" for everyone who started before.
    for place in ("had-1", "had-4", "paused", "pending", "queued-1"):
        assert population.after(place)[-1].day_of == (6, 6), place


def test_the_replacement_of_a_removed_lesson_goes_out_when_the_removed_one_was_due(
    harness: Harness,
) -> None:
    population = populate(harness)
    h = population.harness
    key, due = population.before["had-2"].queued or (0, None)
    assert key == 3 and due is not None
    edit_and_run(population, remove(3))
    after = population.after("had-2")
    assert [s.key for s in after] == [4, 5]
    assert after[0].at == due  # never earlier, never later
    assert after[1].at - after[0].at >= GAP
    assert [s.day_of for s in h.lessons(population.readers["had-2"])] == [
        (1, 5),
        (2, 5),
        (3, 4),
        (4, 4),
    ]
    # For the others it was a lesson before their place (nothing changes), or one after
    # it (it never comes).
    assert [s.key for s in population.after("had-3")] == [4, 5]
    assert [s.key for s in population.after("had-1")] == [2, 4, 5]


def test_removing_the_last_lesson_completes_the_reader_who_was_waiting_for_it(
    harness: Harness,
) -> None:
    population = populate(harness)
    h = population.harness
    _key, due = population.before["had-4"].queued or (0, None)
    edit_and_run(population, remove(5))
    pid = population.readers["had-4"]
    assert population.after("had-4") == []
    sub = h.subscriber(pid)
    assert sub.status == SubscriberStatus.COMPLETED and sub.completed_at == due
    [completion] = h.sent(pid, DeliveryKind.COMPLETION)
    assert completion.at > due


def test_a_reader_gets_the_text_published_at_the_moment_of_sending(harness: Harness) -> None:
    """Publishing between queueing and sending: the queued lesson goes out as the version
    published last says, and lessons already received are not sent again."""
    h = harness
    course_id = h.new_course("edits", five_lessons())
    pid = h.enrol("ana@example.com", course_id)
    h.run_for(hours=1)
    assert [s.subject for s in h.lessons(pid)] == ["Day 1 of 5: Lesson 1, edition 1"]
    queued = h.queued_lesson(pid)
    assert queued is not None and queued[0] == 2
    for edition in (2, 3):  # two publishes while lesson 2 waits: the last one counts
        h.edit(course_id, lambda ls, e=edition: [lesson(x.key, x.delay_days, e) for x in ls])
        h.run_for(hours=2)
    h.run_until(queued[1])
    assert [s.subject for s in h.lessons(pid)] == [
        "Day 1 of 5: Lesson 1, edition 1",
        "Day 2 of 5: Lesson 2, edition 3",
    ]
    assert "The text of lesson 2, edition 3." in h.lessons(pid)[-1].text
    h.edit(course_id, lambda ls: [*ls[:2], lesson(3, 1, 4), *ls[3:]])
    h.run_for(days=6)
    assert [(s.key, s.subject.rsplit(" ", 1)[-1]) for s in h.lessons(pid)] == [
        (1, "1"),
        (2, "3"),
        (3, "4"),
        (4, "3"),
        (5, "3"),
    ]
    assert replay(h, pid) == []


# -- any sequence of edits (hypothesis) --------------------------------------------------------

ZONES = ("Europe/Berlin", "Pacific/Auckland", "America/Los_Angeles", "Asia/Kolkata")

#: (what, a, b, then): a reader joins (zone a, send hour b), only signs up (zone a),
#: confirms (pending reader a); a lesson is added (at a, delay b), removed (at a), moved
#: (from a to b), its text edited (at a); a reader pauses or resumes (a). Then ``then``
#: hours pass, with every tick that falls in them.
Operation = tuple[str, int, int, int]
_ACTION = st.one_of(
    st.tuples(st.just("join"), st.integers(0, len(ZONES) - 1), st.integers(0, 23)),
    st.tuples(st.just("signup"), st.integers(0, len(ZONES) - 1), st.just(0)),
    st.tuples(st.just("confirm"), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("add"), st.integers(0, 9), st.integers(0, 3)),
    st.tuples(st.just("remove"), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("move"), st.integers(0, 9), st.integers(0, 9)),
    st.tuples(st.just("edit"), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("pause"), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("resume"), st.integers(0, 9), st.just(0)),
)
OPERATIONS = st.lists(
    st.builds(lambda action, then: (*action, then), _ACTION, st.integers(0, 60)),
    min_size=3,
    max_size=16,
)


class Examples:
    """Each hypothesis example runs on its own course (and readers) in the test's database,
    with the one clock moving on; every example ends with nothing queued."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> int:
        self.count += 1
        return self.count


@pytest.fixture
def examples() -> Examples:
    return Examples()


@hyp_settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delays=st.lists(st.integers(0, 3), min_size=2, max_size=6), operations=OPERATIONS)
def test_any_sequence_of_edits_keeps_the_guarantees(
    harness: Harness, examples: Examples, delays: list[int], operations: list[Operation]
) -> None:
    """Random publishes (add, remove, move, edit), readers joining, pausing and resuming,
    interleaved with time passing: every lesson is the first of the order at that moment
    the reader has not had (each at most once, none skipped), never two less than
    MIN_CALENDAR_GAP_HOURS apart, and in the end every reader has completed with every
    lesson of the order at that moment."""
    h = harness
    h.log.clear()
    h.course_of.clear()
    n = examples.next()
    course_id = h.new_course(f"random-{n}", [lesson(k, d) for k, d in enumerate(delays, 1)])
    next_key = len(delays) + 1
    edition = 1
    readers: list[str] = [h.enrol(f"first-{n}@example.com", course_id)]
    pending: list[str] = []
    for what, a, b, then in operations:
        lessons = list(h.content(course_id).lessons)
        edited = True
        if what == "add":
            lessons.insert(a % (len(lessons) + 1), lesson(next_key, b, edition))
            next_key += 1  # keys are never reused (course.courses.used_keys)
        elif what == "remove" and len(lessons) > 1:
            del lessons[a % len(lessons)]
        elif what == "move":
            moved = lessons.pop(a % len(lessons))
            lessons.insert(b % (len(lessons) + 1), moved)
        elif what == "edit":
            edition += 1
            old = lessons[a % len(lessons)]
            lessons[a % len(lessons)] = lesson(old.key, old.delay_days, edition)
        else:
            edited = False
        if edited:
            h.publish(
                course_id, h.content(course_id).model_copy(update={"lessons": tuple(lessons)})
            )
        elif what == "join" and len(readers) < 5:
            readers.append(h.enrol(f"r{len(readers)}-{n}@example.com", course_id, ZONES[a], b))
        elif what == "signup" and len(pending) < 2:
            pending.append(h.signup(f"p{len(pending)}-{n}@example.com", course_id, ZONES[a]))
        elif what == "confirm" and pending:
            pid = pending.pop(a % len(pending))
            h.confirm(pid)
            readers.append(pid)
        elif what == "pause":
            h.pause(readers[a % len(readers)])
        elif what == "resume":
            h.resume(readers[a % len(readers)])
        h.run_for(hours=then)
    # The end: whoever is paused resumes, and the course runs out.
    for pid in readers:
        h.resume(pid)
    h.run_for(days=60)
    problems = {pid: replay(h, pid) for pid in readers}
    assert {pid: p for pid, p in problems.items() if p} == {}
    assert {h.subscriber(pid).status for pid in readers} == {SubscriberStatus.COMPLETED}
    assert all(h.queued_lesson(pid) is None for pid in readers)
