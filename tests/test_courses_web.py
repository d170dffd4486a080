"""Several courses, as a reader meets them: a signup page per course, one address on two
courses, the confirmation of a second course, joining another course from a link, the
booking link of each course, and leaving one course or all of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from course.app import create_app
from course.content import AfterCourseFields, CourseContent
from course.courses import create_course, publish
from course.lessons import LessonFields
from course.models import CourseStatus, Delivery, Subscriber, SubscriberStatus, utcnow
from tests.conftest import make_config, outbox_messages
from tests.helpers import confirm_like_a_person, forms, link, local_path, parse, text_part
from tests.test_links import tick


def second_course(app: Flask, **settings: object) -> None:
    """Publish a three-lesson course "anxiety-at-work" next to the shipped one."""
    lessons = tuple(
        LessonFields(
            key=n,
            delay_days=0 if n == 1 else 2,
            subject=f"Work {{day}}/{{total}}: Step {n}",
            title=f"Step {n}",
            body=f"Lesson {n} of the work course.",
        )
        for n in (1, 2, 3)
    )
    content = CourseContent(
        lessons=lessons,
        completion=AfterCourseFields(subject="Well done", body="You finished.", days=1),
    )
    with app.extensions["course"].sessions() as session, session.begin():
        course = create_course(session, "anxiety-at-work", "Anxiety at work", utcnow())
        course.description = "Five minutes a day for a calmer working week."
        course.status = CourseStatus.PUBLISHED
        for name, value in settings.items():
            setattr(course, name, value)
        publish(session, course, content, author="test", now=utcnow())


@pytest.fixture
def two(tmp_path: Path, sqlite_url: str) -> Iterator[Flask]:
    app = create_app(
        make_config(
            tmp_path,
            sqlite_url,
            SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="100 per minute",
            SUBSCRIBE_LIMIT_PER_CLIENT="100 per minute",
        )
    )
    second_course(app, booking_url="https://work.example.org/book")
    yield app
    app.extensions["course"].engine.dispose()


def join(app: Flask, client: FlaskClient, email: str, course: str | None) -> bytes:
    """Sign up for ``course`` (None: the default), confirm, return the first lesson."""
    settings = app.extensions["course"].settings
    before = len(outbox_messages(settings))
    body = {"email": email, "name": "Ana"}
    if course:
        body["course"] = course
    assert client.post("/subscribe", json=body).status_code == 202
    tick(app)
    confirmation = outbox_messages(settings)[before]
    assert confirm_like_a_person(client, link(confirmation, "confirm")).status_code == 200
    tick(app)
    return outbox_messages(settings)[-1]


def test_the_front_page_lists_the_open_courses_and_each_has_its_page(
    two: Flask,
) -> None:
    client = two.test_client()
    front = client.get("/").get_data(as_text=True)
    assert "Feeling secure in your relationship" in front and "Anxiety at work" in front
    assert 'href="/c/anxiety-at-work"' in front
    page = client.get("/c/anxiety-at-work").get_data(as_text=True)
    assert "<h1>Anxiety at work</h1>" in page
    assert "Five minutes a day for a calmer working week." in page
    form = [f for f in forms(page) if f.action.endswith("/subscribe")][0]
    assert form.fields["course"] == "anxiety-at-work"
    assert client.get("/c/no-such-course").status_code == 404


def test_a_draft_course_has_no_page_and_takes_no_signups(two: Flask) -> None:
    with two.extensions["course"].sessions() as session, session.begin():
        create_course(session, "not-yet", "Not yet", utcnow())
    client = two.test_client()
    assert client.get("/c/not-yet").status_code == 404
    response = client.post("/subscribe", json={"email": "a@example.com", "course": "not-yet"})
    assert response.status_code == 400
    assert "course" in response.get_json()["fields"]


def test_one_address_on_two_courses_gets_each_in_its_own_course(two: Flask) -> None:
    client = two.test_client()
    first = join(two, client, "ana@example.com", None)
    assert parse(first)["Subject"].startswith("Day 1 of 5")
    settings = two.extensions["course"].settings
    before = len(outbox_messages(settings))
    client.post("/subscribe", json={"email": "ana@example.com", "course": "anxiety-at-work"})
    tick(two)
    confirmation = outbox_messages(settings)[before]
    # The address is known: the confirmation asks to start this course, in its own words.
    assert parse(confirmation)["Subject"] == "Please confirm: Anxiety at work"
    assert "You asked to join “Anxiety at work”" in text_part(confirmation)
    confirm_like_a_person(client, link(confirmation, "confirm"))
    tick(two)
    work = outbox_messages(settings)[-1]
    assert parse(work)["Subject"] == "Work 1/3: Step 1"
    with two.extensions["course"].sessions() as session:
        rows = session.scalars(select(Subscriber).where(Subscriber.email == "ana@example.com"))
        assert sorted((r.course_id, r.status) for r in rows) == [
            (1, SubscriberStatus.ACTIVE),
            (2, SubscriberStatus.ACTIVE),
        ]
    # Each course's links are its own: the progress page names the course and offers the
    # other one's page.
    page = client.get(local_path(link(work, "me"))).get_data(as_text=True)
    assert "“Anxiety at work”" in page and "Feeling secure in your relationship" in page


def test_booking_goes_to_the_course_s_own_booking_page(two: Flask) -> None:
    client = two.test_client()
    work = join(two, client, "bo@example.com", "anxiety-at-work")
    response = client.get(local_path(link(work, "book")))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://work.example.org/book?")
    assert "utm_campaign=anxiety-at-work-lesson-1" in response.headers["Location"]
    first = join(two, client, "cy@example.com", None)
    location = client.get(local_path(link(first, "book"))).headers["Location"]
    assert location.startswith("https://practice.example.org/book?")


def test_unsubscribing_leaves_one_course_and_the_page_offers_to_leave_all(two: Flask) -> None:
    client = two.test_client()
    join(two, client, "ana@example.com", None)
    work = join(two, client, "ana@example.com", "anxiety-at-work")
    url = local_path(str(parse(work)["List-Unsubscribe"]).strip("<>"))
    # RFC 8058 one-click: only the course the mail belongs to.
    client.post(url, data={"List-Unsubscribe": "One-Click"})

    def statuses() -> list[tuple[int, str]]:
        with two.extensions["course"].sessions() as session:
            rows = session.scalars(select(Subscriber).where(Subscriber.email == "ana@example.com"))
            return sorted((r.course_id, r.status) for r in rows)

    assert statuses() == [(1, SubscriberStatus.ACTIVE), (2, SubscriberStatus.UNSUBSCRIBED)]
    page = client.get(url).get_data(as_text=True)
    assert "Leave all courses" in page
    client.post(url, data={"action": "all"})
    assert statuses() == [(1, SubscriberStatus.UNSUBSCRIBED), (2, SubscriberStatus.UNSUBSCRIBED)]
    # Nothing more is sent on either course.
    settings = two.extensions["course"].settings
    before = len(outbox_messages(settings))
    tick(two)
    assert len(outbox_messages(settings)) == before


def test_joining_another_course_from_a_link_needs_the_button(two: Flask) -> None:
    client = two.test_client()
    first = join(two, client, "dee@example.com", None)
    page = client.get(local_path(link(first, "me"))).get_data(as_text=True)
    # The other course is offered as a link to its page, not as a button that acts.
    start = page.index("/join/")
    url = page[start : page.index('"', start)]
    # A mail scanner's fetch starts nothing.
    assert client.get(url).status_code == 200
    assert client.head(url).status_code == 200
    with two.extensions["course"].sessions() as session:
        assert session.scalar(select(Subscriber.id).where(Subscriber.course_id == 2)) is None
    answer = client.post(url).get_data(as_text=True)
    assert "“Anxiety at work” has begun" in answer
    tick(two)
    assert parse(outbox_messages(two.extensions["course"].settings)[-1])["Subject"] == (
        "Work 1/3: Step 1"
    )
    with two.extensions["course"].sessions() as session:
        joined = session.scalars(select(Subscriber).where(Subscriber.course_id == 2)).one()
        assert joined.status == SubscriberStatus.ACTIVE
        assert joined.consent_source == "join" and joined.confirmed_at is not None
    # A second press changes nothing.
    assert "already taking this course" in client.post(url).get_data(as_text=True)


def test_a_hard_bounce_stops_every_course_of_the_address(two: Flask) -> None:
    from course.subscriptions import mark_bounced

    client = two.test_client()
    join(two, client, "eve@example.com", None)
    join(two, client, "eve@example.com", "anxiety-at-work")
    with two.extensions["course"].sessions() as session, session.begin():
        row = session.scalars(
            select(Subscriber).where(Subscriber.email == "eve@example.com")
        ).first()
        assert row is not None
        mark_bounced(session, row, utcnow(), reason="5.1.1")
    with two.extensions["course"].sessions() as session:
        assert set(
            session.scalars(
                select(Subscriber.status).where(Subscriber.email == "eve@example.com")
            )
        ) == {SubscriberStatus.BOUNCED}
        queued = session.scalars(
            select(Delivery).where(Delivery.status == "queued", Delivery.kind == "lesson")
        ).all()
        assert queued == []
