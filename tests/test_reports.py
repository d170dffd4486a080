"""Reports per course and across courses: the all-courses table and its totals, each
course's funnel and per-lesson results (lessons removed since, and the emails after the
course, included), erased readers' anonymous events, the dashboard's course switcher for
every role, and ``course stats`` / ``course export`` per course. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from course.app import create_app
from course.config import Settings
from course.content import CourseContent
from course.courses import PublishedCourse, create_course, publish
from course.lessons import LessonFields
from course.models import (
    Course,
    CourseStatus,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Event,
    EventKind,
    LessonProgress,
    Subscriber,
    SubscriberStatus,
)
from course.operators import Role
from course.privacy import erase
from course.progress import record_link_click
from course.reports import Filters, course_lessons, funnel, per_lesson, summary
from tests.conftest import CourseRunner, courses_for, make_config
from tests.test_roles import add_staff, staff_client

FIRST = "feeling-secure"
GRIEF = "after-a-loss"


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """The web app on a migrated database of each kind (this file's tests run on both)."""
    application = create_app(make_config(tmp_path, db_url))
    yield application
    application.extensions["course"].engine.dispose()


# -- a world with two courses -------------------------------------------------------------------


def _at(day: int) -> datetime:
    return datetime(2026, 3, day, 9, tzinfo=UTC)


def _lesson(key: int, title: str) -> LessonFields:
    return LessonFields(
        key=key,
        delay_days=1,
        subject=f"Day {{day}} of {{total}}: {title}",
        title=title,
        body=f"Some words about {title.replace('{day}', 'this day').lower()}.",
    )


def _reader(
    s: Session,
    course_id: int,
    email: str,
    created: datetime,
    source: str,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
) -> Subscriber:
    sub = Subscriber(
        course_id=course_id,
        email=email,
        timezone="UTC",
        source=source,
        status=status,
        created_at=created,
        confirmed_at=None if status == SubscriberStatus.PENDING else created,
        completed_at=created + timedelta(days=10) if status == SubscriberStatus.COMPLETED else None,
        confirm_count=1,
    )
    s.add(sub)
    s.flush()
    return sub


def _received(s: Session, sub: Subscriber, *keys: int, kind: str = DeliveryKind.LESSON) -> None:
    for n, key in enumerate(keys, start=1):
        at = sub.created_at + timedelta(days=n)
        s.add(
            Delivery(
                subscriber_id=sub.id,
                kind=kind,
                number=key,
                status=DeliveryStatus.SENT,
                due_at=at,
                sent_at=at,
                attempts=1,
            )
        )


def _event(s: Session, sub: Subscriber, kind: EventKind, lesson: int) -> None:
    # As the data model says: an event keeps its course (so it still counts after erasure).
    s.add(
        Event(
            subscriber_id=sub.id,
            course_id=sub.course_id,
            kind=kind,
            lesson=lesson,
            via="link",
            created_at=sub.created_at + timedelta(days=1),
        )
    )


@dataclass
class World:
    first: int
    grief: int
    sessions: sessionmaker[Session]
    settings: Settings

    def course(self, slug: str) -> PublishedCourse:
        found = courses_for(self.settings).by_slug(slug)
        assert found is not None
        return found


@pytest.fixture
def world(app: Flask, sessions: sessionmaker[Session], settings: Settings) -> World:
    """Two courses with hand-counted numbers.

    The first course (the shipped one, lessons 1-5): ana (active, lessons 1-2, done and
    "lighter" on 1, two booking clicks and a view on 1), ben (unsubscribed after lesson 1,
    "same"), cleo (never confirmed, source ads), dan (completed all five). Signed up on
    1 March, source web unless said.

    The second course, "After a loss": published with lessons 1, 2, 3; readers signed up on
    10 March: Ana (the same person as ana, written with capitals; source ads) received
    1, 2, 3, was "stirred" by 2 and clicked its booking link; eve (completed) received
    1, 2, 3 and the completion email, and clicked the follow-up's booking link (lesson 0);
    fay received 1, viewed it, clicked its booking link, then was erased. Then version 2
    removed lesson 2, moved 3 first and added lesson 4 at the end.
    """
    secret_keys = settings.secret_keys
    with sessions() as s, s.begin():
        first = s.scalars(select(Course).where(Course.slug == FIRST)).one()
        ana = _reader(s, first.id, "ana@example.com", _at(1), "web")
        _received(s, ana, 1, 2)
        s.add(LessonProgress(subscriber_id=ana.id, lesson=1, done_at=_at(2), checkin="lighter"))
        _event(s, ana, EventKind.BOOK, 1)
        _event(s, ana, EventKind.BOOK, 1)
        _event(s, ana, EventKind.VIEW, 1)
        ben = _reader(s, first.id, "ben@example.com", _at(1), "web", SubscriberStatus.UNSUBSCRIBED)
        _received(s, ben, 1)
        s.add(LessonProgress(subscriber_id=ben.id, lesson=1, checkin="same"))
        _event(s, ben, EventKind.UNSUBSCRIBE, 1)
        _reader(s, first.id, "cleo@example.com", _at(1), "ads", SubscriberStatus.PENDING)
        dan = _reader(s, first.id, "dan@example.com", _at(1), "web", SubscriberStatus.COMPLETED)
        _received(s, dan, 1, 2, 3, 4, 5)

        grief = create_course(s, GRIEF, "After a loss", _at(9), status=CourseStatus.PUBLISHED)
        v1 = CourseContent(
            lessons=(
                _lesson(1, "Naming the loss"),
                _lesson(2, "Letters you never sent"),
                _lesson(3, "Day {day}: small rituals"),
            )
        )
        publish(s, grief, v1, author="test", now=_at(9))
        ana2 = _reader(s, grief.id, "Ana@Example.com", _at(10), "ads")
        _received(s, ana2, 1, 2, 3)
        s.add(LessonProgress(subscriber_id=ana2.id, lesson=2, checkin="stirred"))
        _event(s, ana2, EventKind.BOOK, 2)
        eve = _reader(s, grief.id, "eve@example.com", _at(10), "web", SubscriberStatus.COMPLETED)
        _received(s, eve, 1, 2, 3)
        _received(s, eve, 0, kind=DeliveryKind.COMPLETION)
        _event(s, eve, EventKind.BOOK, 0)
        fay = _reader(s, grief.id, "fay@example.com", _at(10), "web")
        _received(s, fay, 1)
        _event(s, fay, EventKind.VIEW, 1)
        _event(s, fay, EventKind.BOOK, 1)
        s.flush()
        erase(s, fay, secret_keys, _at(20))
        v2 = CourseContent(
            lessons=(v1.lessons[2], v1.lessons[0], _lesson(4, "Looking ahead")),
        )
        publish(s, grief, v2, author="test", now=_at(21))
        return World(first.id, grief.id, sessions, settings)


def _per_lesson(world: World, slug: str, source: str | None = None) -> list[tuple[object, ...]]:
    course = world.course(slug)
    with world.sessions() as s:
        rows = per_lesson(s, Filters(course_id=course.id, source=source), course_lessons(course))
    return [
        (
            r.position,
            r.title,
            r.delivered,
            r.viewed,
            r.done,
            r.checkins["lighter"],
            r.checkins["same"],
            r.checkins["stirred"],
            r.booking_clicks,
            r.unsubscribes,
        )
        for r in rows
    ]


# -- the numbers ----------------------------------------------------------------------------


def test_each_course_and_the_totals_add_up(world: World) -> None:
    catalogue = courses_for(world.settings)
    with world.sessions() as s:
        across = summary(s, Filters(), catalogue)
        funnels = {
            c.slug: {
                st.label: st.count for st in funnel(s, Filters(course_id=c.id), course_lessons(c))
            }
            for c in catalogue
        }
    rows = {c.slug: c for c in across.courses}
    assert list(rows) == [FIRST, GRIEF]

    def counts(row: object) -> list[int]:
        return [getattr(row, name) for name in across.total.COUNTS]

    # signed up, confirmed, active, completed, unsubscribed, booked (confirmed by a booking
    # system: none here), booking clicks (once per reader and lesson: ana's two clicks on
    # lesson 1 count once). fay, erased, still counts everywhere but in "active".
    assert counts(rows[FIRST]) == [4, 3, 1, 1, 1, 0, 1]
    assert counts(rows[GRIEF]) == [3, 3, 1, 1, 0, 0, 3]
    assert counts(across.total) == [7, 6, 2, 2, 1, 0, 4]
    assert across.people == 6  # ana is on both courses: one person, two enrolments
    for slug, row in rows.items():
        assert funnels[slug]["Signed up"] == row.signed_up
        assert funnels[slug]["Confirmed"] == row.confirmed
        assert funnels[slug]["Completed"] == row.completed
    # Every booking click is in exactly one per-lesson row of its course.
    for slug, row in rows.items():
        assert sum(r[8] for r in _per_lesson(world, slug)) == row.booking_clicks  # type: ignore[misc]


def test_filters_apply_across_courses(world: World) -> None:
    catalogue = courses_for(world.settings)
    with world.sessions() as s:
        web = summary(s, Filters(source="web"), catalogue)
        later = summary(s, Filters(start=date(2026, 3, 5)), catalogue)
    by_slug = {c.slug: c for c in web.courses}
    # fay's anonymous row keeps her source and signup date: the filters count her.
    assert (by_slug[FIRST].signed_up, by_slug[GRIEF].signed_up) == (3, 2)
    assert (by_slug[GRIEF].booked, by_slug[GRIEF].booking_clicks) == (0, 2)  # eve's, fay's
    assert web.total.signed_up == 5 and web.people == 5
    assert [(c.slug, c.signed_up) for c in later.courses] == [(FIRST, 0), (GRIEF, 3)]
    assert later.people == 3


def test_per_lesson_in_the_current_order_with_removed_lessons_and_after_the_course(
    world: World,
) -> None:
    # position, title, delivered, viewed, done, lighter, same, stirred, booking clicks,
    # unsubscribes
    assert _per_lesson(world, GRIEF) == [
        (1, "Day 1: small rituals", 2, 0, 0, 0, 0, 0, 0, 0),
        (2, "Naming the loss", 3, 1, 0, 0, 0, 0, 1, 0),  # fay's, erased, still counted
        (3, "Looking ahead", 0, 0, 0, 0, 0, 0, 0, 0),
        (None, "Letters you never sent", 2, 0, 0, 0, 0, 1, 1, 0),  # removed in version 2
        (None, "After the course (completion and follow-up emails)", 1, 0, 0, 0, 0, 0, 1, 0),
    ]
    assert _per_lesson(world, FIRST)[:2] == [
        (1, "Where insecurity comes from", 3, 1, 1, 1, 1, 0, 1, 1),  # ana clicked twice
        (2, "Getting to know your triggers", 2, 0, 0, 0, 0, 0, 0, 0),
    ]
    assert len(_per_lesson(world, FIRST)) == 5  # nothing removed, nothing after the course
    with world.sessions() as s:
        grief = world.course(GRIEF)
        steps = funnel(s, Filters(course_id=grief.id), course_lessons(grief))
    assert [(st.label, st.count) for st in steps] == [
        ("Signed up", 3),
        ("Confirmed", 3),
        ("Received lesson 1", 2),
        # Version 2 moved "Naming the loss" (which all three received) to second place.
        ("Received lesson 2", 3),
        ("Received lesson 3", 0),
        ("Completed", 1),
    ]


def test_erased_readers_events_count_only_in_their_own_course(world: World) -> None:
    grief = _per_lesson(world, GRIEF)
    first = _per_lesson(world, FIRST)
    assert grief[1][8] == 1  # fay's click, after her erasure, in "After a loss"
    assert first[0][8] == 1  # ana clicked twice: once per reader and lesson; fay is not here
    # Her anonymous row keeps where she came from, so a filter counts her as before.
    assert _per_lesson(world, GRIEF, source="web")[1][8] == 1
    assert _per_lesson(world, GRIEF, source="ads")[1][8] == 0
    with world.sessions() as s:
        assert (
            s.scalars(select(Subscriber).where(Subscriber.email == "fay@example.com")).all() == []
        )


def test_a_click_recorded_by_the_link_still_counts_after_erasure(world: World) -> None:
    grief = world.course(GRIEF)
    with world.sessions() as s, s.begin():
        gus = _reader(s, grief.id, "gus@example.com", _at(12), "web")
        _received(s, gus, 3)
        record_link_click(s, gus, 3, EventKind.BOOK, _at(14))
        s.flush()
        erase(s, gus, world.settings.secret_keys, _at(15))
    assert _per_lesson(world, GRIEF)[0][8] == 1


# -- the dashboard ------------------------------------------------------------------------------


class _Tables(HTMLParser):
    """The text of every table row on a page, and the links of the course switcher."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.switcher: list[tuple[str, str | None]] = []  # (text, href or None: current)
        self._cells: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_switcher = False
        self._href: str | None = None
        self._text: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "span" and "visually-hidden" in (found.get("class") or ""):
            self._hidden += 1
        if tag == "tr":
            self._cells = []
        elif tag in ("td", "th") and self._cells is not None:
            self._cell = []
        elif tag == "nav" and found.get("aria-label") == "Courses":
            self._in_switcher = True
        elif self._in_switcher and tag in ("a", "strong"):
            self._href = found.get("href")
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._hidden:
            self._hidden -= 1
        if tag in ("td", "th") and self._cell is not None and self._cells is not None:
            self._cells.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._cells is not None:
            self.rows.append(self._cells)
            self._cells = None
        elif tag == "nav":
            self._in_switcher = False
        elif self._in_switcher and tag in ("a", "strong"):
            self.switcher.append((" ".join("".join(self._text).split()), self._href))

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._hidden:
            self._cell.append(data)
        if self._in_switcher:
            self._text.append(data)


def _page(client: FlaskClient, path: str) -> _Tables:
    response = client.get(path)
    assert response.status_code == 200, path
    parsed = _Tables()
    parsed.feed(response.get_data(as_text=True))
    return parsed


def _row(page: _Tables, first_cell: str) -> list[str]:
    """The first row (in page order) whose first cell starts with ``first_cell``: a lesson
    is named the same in the lesson table and, below it, in the bookings table."""
    found = [row[1:] for row in page.rows if row and row[0].startswith(first_cell)]
    assert found, (first_cell, page.rows)
    return found[0]


def test_the_dashboard_shows_all_courses_and_each_course_to_every_role(
    app: Flask, world: World
) -> None:
    for role in Role:
        email = f"{role.value}@harbor.example.org"
        add_staff(app, email, role)
        client = staff_client(app, email)

        everything = _page(client, "/admin/")
        assert everything.switcher == [
            ("All courses", None),  # the default, shown as the current view
            ("Feeling secure in your relationship", f"/admin/?course={FIRST}"),
            ("After a loss", f"/admin/?course={GRIEF}"),
        ]
        # signed up, confirmed, active, completed, unsubscribed, booked, clicks, links
        assert _row(everything, "Feeling secure")[:7] == ["4", "3", "1", "1", "1", "0", "1"]
        assert _row(everything, "After a loss")[:7] == ["3", "3", "1", "1", "0", "0", "3"]
        assert _row(everything, "All courses") == ["7", "6", "2", "2", "1", "0", "4", ""]
        assert not [r for r in everything.rows if r and r[0].startswith("1. ")]  # no lessons

        one = _page(client, f"/admin/?course={GRIEF}")
        assert ("All courses", "/admin/") in one.switcher
        assert ("After a loss", None) in one.switcher
        lessons = list(
            dict.fromkeys(r[0] for r in one.rows if r and r[0][:2] in ("1.", "2.", "3."))
        )
        assert lessons == ["1. Day 1: small rituals", "2. Naming the loss", "3. Looking ahead"]
        assert _row(one, "2. Naming the loss") == ["3", "1", "0", "0", "0", "0", "1", "0"]
        assert any(r[0].startswith("No longer in the course") for r in one.rows)
        assert _row(one, "Letters you never sent") == ["2", "0", "0", "0", "0", "1", "1", "0"]
        assert _row(one, "After the course") == ["1", "0", "0", "0", "0", "0", "1", "0"]
        assert _row(one, "Signed up") == ["3", "100%"]
        assert _row(one, "Completed") == ["1", "33%"]


def test_the_dashboard_filters_apply_in_both_views(app: Flask, world: World) -> None:
    add_staff(app, "kim@harbor.example.org", Role.ASSISTANT)
    client = staff_client(app, "kim@harbor.example.org")
    everything = _page(client, "/admin/?source=web")
    # ana (active), ben (unsubscribed), dan and eve (completed), fay (erased: her
    # anonymous row keeps its source).
    assert _row(everything, "All courses")[:7] == ["5", "5", "1", "2", "1", "0", "3"]
    # The switcher keeps the filter when changing course.
    assert ("After a loss", f"/admin/?course={GRIEF}&source=web") in everything.switcher
    one = client.get(f"/admin/?course={GRIEF}&source=web").get_data(as_text=True)
    assert f'<input type="hidden" name="course" value="{GRIEF}">' in one  # Apply keeps it
    parsed = _Tables()
    parsed.feed(one)
    assert _row(parsed, "Signed up") == ["2", "100%"]  # eve and fay
    assert _row(parsed, "2. Naming the loss")[6] == "1"  # fay's click
    dated = _page(client, "/admin/?from=2026-03-05")
    assert _row(dated, "Feeling secure")[0] == "0"
    assert _row(dated, "After a loss")[0] == "3"
    assert client.get("/admin/?course=no-such-course").status_code == 404


# -- course stats and course export ---------------------------------------------------------


def test_stats_prints_all_courses_first_then_each_course(
    runner: CourseRunner, world: World
) -> None:
    result = runner.invoke(args=["stats"])
    assert result.exit_code == 0, result.output
    output = result.output
    assert output.index("All courses") < output.index("Course: Feeling secure")
    assert output.index("Course: Feeling secure") < output.index("Course: After a loss")
    table = output.split("All courses\n", 1)[1].split("\n\n", 1)[0].splitlines()
    cells = {line.split("  ")[0].strip(): line.split()[-7:] for line in table[2:-1]}
    # A long title is cut to fit the column.
    assert "Feeling secure in your relationship (feeling-secu…" in cells
    cells[f"Feeling secure in your relationship ({FIRST})"] = cells.pop(
        "Feeling secure in your relationship (feeling-secu…"
    )
    assert cells[f"Feeling secure in your relationship ({FIRST})"] == [
        "4", "3", "1", "1", "1", "0", "1"
    ]  # fmt: skip
    assert cells[f"After a loss ({GRIEF})"] == ["3", "3", "1", "1", "0", "0", "3"]
    assert cells["All courses"] == ["7", "6", "2", "2", "1", "0", "4"]
    assert "7 enrolment(s) by 6 different people." in output
    grief = output.split("Course: After a loss", 1)[1].split("Sending", 1)[0]
    assert "(removed) Letters you never sent" in grief
    assert "After the course" in grief
    lines = [line for line in grief.splitlines() if line[:2] in ("1 ", "2 ", "3 ")]
    assert [re.split(r"\s{2,}", line)[1] for line in lines] == [
        "Day 1: small rituals",
        "Naming the loss",
        "Looking ahead",
    ]


def test_stats_for_one_course(runner: CourseRunner, world: World) -> None:
    result = runner.invoke(args=["stats", "--course", GRIEF])
    assert result.exit_code == 0, result.output
    assert "Course: After a loss" in result.output
    assert "Feeling secure" not in result.output and "All courses" not in result.output
    unknown = runner.invoke(args=["stats", "--course", "no-such-course"])
    assert unknown.exit_code == 2 and "no-such-course" in unknown.output


def _export(runner: CourseRunner, *args: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    result = runner.invoke(args=["export", *args])
    assert result.exit_code == 0, result.output
    subscribers, events = result.stdout.split("\n\n", 1)  # CliRunner shows CRLF as LF
    return list(csv.DictReader(io.StringIO(subscribers))), list(csv.DictReader(io.StringIO(events)))


def test_export_names_the_course_on_every_row(runner: CourseRunner, world: World) -> None:
    subscribers, events = _export(runner)
    assert [(r["email"], r["course"]) for r in subscribers] == [
        ("ana@example.com", FIRST),
        ("ben@example.com", FIRST),
        ("cleo@example.com", FIRST),
        ("dan@example.com", FIRST),
        ("Ana@Example.com", GRIEF),
        ("eve@example.com", GRIEF),
        (subscribers[-1]["email"], GRIEF),  # fay, erased: a row that names nobody
    ]
    assert subscribers[-1]["email"].startswith("anonymized-") and not subscribers[-1]["name"]
    assert list(subscribers[0])[-2:] == ["lessons_received", "course"]  # added last
    assert {r["course"] for r in events} == {FIRST, GRIEF}
    fay = subscribers[-1]["public_id"]
    theirs = [
        (r["kind"], r["lesson"], r["course"]) for r in events if r["subscriber_public_id"] == fay
    ]
    assert sorted(theirs) == [("book", "1", GRIEF), ("view", "1", GRIEF)]


def test_export_of_one_course(runner: CourseRunner, world: World, tmp_path: Path) -> None:
    subscribers, events = _export(runner, "--course", GRIEF)
    assert [r["email"] for r in subscribers][:2] == ["Ana@Example.com", "eve@example.com"]
    assert subscribers[2]["email"].startswith("anonymized-")  # fay, erased
    assert [r["lessons_received"] for r in subscribers] == ["3", "3", "1"]
    assert len(events) == 4 and {r["course"] for r in events} == {GRIEF}
    out = tmp_path / "grief.csv"
    written = runner.invoke(args=["export", "--course", FIRST, "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert "Wrote 4 subscribers" in written.output and "4 events" in written.output
    unknown = runner.invoke(args=["export", "--course", "no-such-course"])
    assert unknown.exit_code == 2 and "no-such-course" in unknown.output


def test_reports_of_a_course_with_nobody_on_it(
    app: Flask, sessions: sessionmaker[Session], settings: Settings
) -> None:
    with sessions() as s, s.begin():
        quiet = create_course(s, "quiet", "Quiet", _at(1), status=CourseStatus.PUBLISHED)
        publish(s, quiet, CourseContent(lessons=(_lesson(1, "Alone"),)), author="t", now=_at(1))
        create_course(s, "unwritten", "Unwritten", _at(1))  # a draft: in no table
    catalogue = courses_for(settings)
    with sessions() as s:
        across = summary(s, Filters(), catalogue)
        quiet_course = catalogue.by_slug("quiet")
        assert quiet_course is not None
        rows = per_lesson(s, Filters(course_id=quiet_course.id), course_lessons(quiet_course))
    assert [c.slug for c in across.courses] == [FIRST, "quiet"]
    assert across.total.signed_up == 0 and across.people == 0
    assert [(r.position, r.title, r.delivered) for r in rows] == [(1, "Alone", 0)]
    assert dataclasses.asdict(rows[0])["checkins"] == {"lighter": 0, "same": 0, "stirred": 0}
