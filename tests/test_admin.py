"""The admin: login, rate limit, CSRF, every page empty and with data, actions, reports."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Event,
    EventKind,
    LessonProgress,
    Subscriber,
    SubscriberStatus,
)
from course.operators import create_operator
from course.reports import Filters, funnel, per_lesson
from tests.conftest import publish_a_broken_lesson
from tests.test_links import enrol, tick

PASSWORD = "a long enough password"


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'type="hidden" name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def operator_id(sessions: sessionmaker[Session]) -> int:
    with sessions() as s, s.begin():
        return create_operator(s, "op@harbor.example.org", PASSWORD, "Europe/Berlin").id


def login(client: FlaskClient, email: str = "op@harbor.example.org", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/admin/login").get_data(as_text=True))
    return client.post(
        "/admin/login", data={"email": email, "password": password, "csrf_token": token}
    )


@pytest.fixture
def admin(client: FlaskClient, operator_id: int) -> FlaskClient:
    assert login(client).status_code == 302
    return client


def test_admin_requires_login(client: FlaskClient) -> None:
    for path in ("/admin/", "/admin/subscribers", "/admin/lessons", "/admin/lessons/1"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/admin/login" in response.headers["Location"]


def test_wrong_password_and_unknown_account_look_the_same(
    client: FlaskClient, operator_id: int
) -> None:
    wrong = login(client, password="not the password")
    unknown = login(client, email="nobody@example.org")
    assert wrong.status_code == unknown.status_code == 401
    assert "don&#39;t match" in wrong.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302


def test_login_without_csrf_token_is_refused(client: FlaskClient, operator_id: int) -> None:
    response = client.post(
        "/admin/login", data={"email": "op@harbor.example.org", "password": PASSWORD}
    )
    assert response.status_code in (400, 401)
    assert client.get("/admin/").status_code == 302


def test_login_is_rate_limited(client: FlaskClient, operator_id: int) -> None:
    codes = [login(client, password=f"wrong {i}").status_code for i in range(6)]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    # Even the right password is refused while the limit holds.
    assert login(client).status_code == 429


def test_logout(admin: FlaskClient) -> None:
    token = csrf_from(admin.get("/admin/").get_data(as_text=True))
    assert admin.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert admin.get("/admin/").status_code == 302


def test_session_cookie_is_httponly_samesite_and_secure_on_https(
    client: FlaskClient, operator_id: int
) -> None:
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


ADMIN_PAGES = [
    "/admin/",
    "/admin/subscribers",
    "/admin/courses",
    "/admin/courses/feeling-secure",
    "/admin/courses/feeling-secure/lessons/1",
    "/admin/?from=2020-01-01&to=2030-01-01&source=web",
    "/admin/?from=not-a-date",
    "/admin/subscribers?status=active&q=%25_x&page=3",
    "/admin/subscribers?page=-1",
]


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_every_page_renders_on_an_empty_database(admin: FlaskClient, path: str) -> None:
    assert admin.get(path).status_code == 200


def test_every_page_renders_with_data(app: Flask, admin: FlaskClient) -> None:
    reader = enrol(app, admin, "ana@example.com")
    admin.get(reader.url("checkin"))
    admin.get(reader.url("book"))
    for path in ADMIN_PAGES:
        assert admin.get(path).status_code == 200, path
    dashboard = admin.get("/admin/").get_data(as_text=True)
    assert "<svg" in dashboard and "<script" not in dashboard
    listing = admin.get("/admin/subscribers?q=ana").get_data(as_text=True)
    assert "ana@example.com" in listing
    detail = admin.get(f"/admin/subscribers/{reader.public_id}").get_data(as_text=True)
    assert "Checked in on lesson 1: lighter" in detail
    assert "Clicked “Book a session” in lesson 1" in detail


def test_dashboard_warns_when_the_scheduler_has_not_run(admin: FlaskClient) -> None:
    assert "The scheduler is not running" in admin.get("/admin/").get_data(as_text=True)


def test_dashboard_shows_a_recent_tick_without_warning(app: Flask, admin: FlaskClient) -> None:
    tick(app)
    assert "The scheduler is not running" not in admin.get("/admin/").get_data(as_text=True)


def test_operator_actions_are_logged_with_the_operator(
    app: Flask, admin: FlaskClient, sessions: sessionmaker[Session], operator_id: int
) -> None:
    reader = enrol(app, admin, "ana@example.com")
    page = f"/admin/subscribers/{reader.public_id}"
    token = csrf_from(admin.get(page).get_data(as_text=True))
    for action in ("pause", "resume", "unsubscribe"):
        response = admin.post(f"{page}/{action}", data={"csrf_token": token})
        assert response.status_code == 303
    with sessions() as s:
        logged = s.scalars(select(Event).where(Event.operator_id == operator_id)).all()
    assert [e.kind for e in logged] == ["pause", "resume", "unsubscribe"]
    assert all(e.via == "admin" for e in logged)
    # Without the CSRF token an action is refused.
    assert admin.post(f"{page}/pause").status_code == 400


def test_resend_a_lesson_gets_a_new_message_id(
    app: Flask, admin: FlaskClient, sessions: sessionmaker[Session], settings
) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import outbox_messages
    from tests.helpers import parse

    reader = enrol(app, admin, "ana@example.com")
    page = f"/admin/subscribers/{reader.public_id}"
    token = csrf_from(admin.get(page).get_data(as_text=True))
    assert (
        admin.post(f"{page}/resend", data={"csrf_token": token, "lesson": "3"}).status_code == 303
    )
    assert "Only a lesson" in admin.get(page).get_data(as_text=True)
    admin.post(f"{page}/resend", data={"csrf_token": token, "lesson": "1"})
    tick(app)
    ids = [
        parse(m)["Message-ID"]
        for m in outbox_messages(settings)
        if parse(m)["Subject"].startswith("Day 1")
    ]
    assert len(ids) == 2 and ids[0] != ids[1]
    with sessions() as s:
        queued = s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)).all()
    assert [d.number for d in queued] == [2]  # the course itself did not move


def test_export_and_erase_with_confirmation(
    app: Flask, admin: FlaskClient, sessions: sessionmaker[Session], operator_id: int
) -> None:
    reader = enrol(app, admin, "ana@example.com")
    admin.get(reader.url("checkin"))
    page = f"/admin/subscribers/{reader.public_id}"
    export = admin.get(f"{page}/export.json")
    assert export.get_json()["subscriber"]["email"] == "ana@example.com"
    token = csrf_from(admin.get(f"{page}/erase").get_data(as_text=True))
    assert (
        admin.post(f"{page}/erase", data={"csrf_token": token, "confirm": "wrong"}).status_code
        == 400
    )
    response = admin.post(f"{page}/erase", data={"csrf_token": token, "confirm": "ana@example.com"})
    assert response.status_code == 303
    with sessions() as s:
        # What stays names nobody: an anonymous row that keeps the counts (privacy.erase).
        (left,) = s.scalars(select(Subscriber)).all()
        assert left.email != "ana@example.com" and left.name is None
        assert left.public_id != reader.public_id
        assert left.status == SubscriberStatus.ERASED
        assert [p.note for p in s.scalars(select(LessonProgress))] in ([], [None])
        erase_events = s.scalars(select(Event).where(Event.kind == EventKind.ERASE)).all()
        assert [(e.subscriber_id, e.operator_id) for e in erase_events] == [(None, operator_id)]
    assert admin.get(page).status_code == 404


def test_a_broken_published_lesson_is_reported_in_the_admin(app: Flask, admin: FlaskClient) -> None:
    publish_a_broken_lesson(app.extensions["course"].settings.database_url)
    dashboard = admin.get("/admin/").get_data(as_text=True)
    assert "1 part(s) of “Feeling secure in your relationship” cannot be used." in dashboard
    editor = admin.get("/admin/courses/feeling-secure").get_data(as_text=True)
    assert "no_such_slot" in editor


def test_lesson_preview_is_sandboxed(admin: FlaskClient) -> None:
    page = admin.get("/admin/courses/feeling-secure/lessons/2").get_data(as_text=True)
    assert re.search(r"<iframe[^>]*\bsandbox\b(?!=\"[^\"]*allow-scripts)", page)
    assert "Day 2 of 5" in page


def test_send_me_a_test(admin: FlaskClient, settings) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import outbox_messages
    from tests.helpers import parse

    token = csrf_from(admin.get("/admin/courses/feeling-secure/lessons/4").get_data(as_text=True))
    test = "/admin/courses/feeling-secure/test/lesson/4"
    assert admin.post(test, data={"csrf_token": token}).status_code == 303
    # The old lesson page's address leads there, method and form kept.
    old = admin.post("/admin/lessons/4/test", data={"csrf_token": token})
    assert old.status_code == 307 and old.headers["Location"] == test
    assert admin.post(test, data={"csrf_token": token}).status_code == 303
    first, second = (parse(m) for m in outbox_messages(settings))
    assert first["To"].addresses[0].addr_spec == "op@harbor.example.org"
    assert first["Subject"].startswith("[Test] Day 4 of 5")
    # Each test has a Message-ID of its own: a mail app never hides the second one.
    assert first["Message-ID"] != second["Message-ID"]


# -- the numbers against a known fixture ----------------------------------------------------


def _known_fixture(session: Session) -> None:
    """Ten signups: 8 confirmed; lesson k reached by 8-k+1...; 2 completed; 3 booked."""
    base = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
    for i in range(10):
        sub = Subscriber(
            course_id=1,
            email=f"r{i}@example.com",
            timezone="UTC",
            source="web" if i < 6 else "podcast",
            status=SubscriberStatus.PENDING,
            created_at=base + timedelta(days=i),
            confirm_count=1,
        )
        session.add(sub)
        session.flush()
        if i >= 8:
            continue  # r8, r9 never confirmed
        sub.status = SubscriberStatus.ACTIVE
        sub.confirmed_at = sub.created_at
        received = min(5, 8 - i)  # r0..r3: 5 lessons; r4: 4; r5: 3; r6: 2; r7: 1
        for n in range(1, received + 1):
            session.add(
                Delivery(
                    subscriber_id=sub.id,
                    kind=DeliveryKind.LESSON,
                    number=n,
                    status=DeliveryStatus.SENT,
                    due_at=base,
                    sent_at=base,
                    attempts=1,
                )
            )
        if i < 2:
            sub.status = SubscriberStatus.COMPLETED
            sub.completed_at = base
        if i in (0, 1, 4):
            session.add(
                Event(
                    subscriber_id=sub.id, lesson=2, kind=EventKind.BOOK, via="link", created_at=base
                )
            )
        if i < 4:
            session.add(
                LessonProgress(
                    subscriber_id=sub.id,
                    lesson=1,
                    done_at=base,
                    checkin=["lighter", "lighter", "same", "stirred"][i],
                    checkin_at=base,
                )
            )
        if i == 7:
            session.add(
                Event(
                    subscriber_id=sub.id,
                    lesson=1,
                    kind=EventKind.UNSUBSCRIBE,
                    via="page",
                    created_at=base,
                )
            )
    # An erased reader's booking click stays as an anonymous count.
    session.add(
        Event(subscriber_id=None, lesson=2, kind=EventKind.BOOK, via="link", created_at=base)
    )


def test_funnel_and_lesson_numbers_against_a_known_fixture(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        _known_fixture(s)
    keys = [(key, f"Lesson {key}") for key in range(1, 6)]  # the first course's keys
    with sessions() as s:
        steps = {st.label: st.count for st in funnel(s, Filters(), keys)}
        lessons = per_lesson(s, Filters(), keys)
        web_only = {st.label: st.count for st in funnel(s, Filters(source="web"), keys)}
        dated = {
            st.label: st.count
            for st in funnel(s, Filters(start=date(2026, 1, 12), end=date(2026, 1, 13)), keys)
        }
    assert steps == {
        "Signed up": 10,
        "Confirmed": 8,
        "Received lesson 1": 8,
        "Received lesson 2": 7,
        "Received lesson 3": 6,
        "Received lesson 4": 5,
        "Received lesson 5": 4,
        "Completed": 2,
    }
    assert [ls.delivered for ls in lessons] == [8, 7, 6, 5, 4]
    assert lessons[0].done == 4
    assert lessons[0].checkins == {"lighter": 2, "same": 1, "stirred": 1}
    assert lessons[1].booking_clicks == 4  # three readers + one anonymous
    assert lessons[0].unsubscribes == 1
    assert web_only["Signed up"] == 6 and web_only["Confirmed"] == 6
    assert dated["Signed up"] == 2 and dated["Confirmed"] == 2  # r2, r3


@pytest.mark.parametrize("lesson", ["²", "99999999999999999999", "", "1; drop"])
def test_odd_resend_input_is_handled(app: Flask, admin: FlaskClient, lesson: str) -> None:
    reader = enrol(app, admin, "ana@example.com")
    page = f"/admin/subscribers/{reader.public_id}"
    token = csrf_from(admin.get(page).get_data(as_text=True))
    response = admin.post(f"{page}/resend", data={"csrf_token": token, "lesson": lesson})
    assert response.status_code == 303
    assert "Only a lesson" in admin.get(page).get_data(as_text=True)


@pytest.mark.parametrize("query", ["to=9999-12-31", "from=0001-01-01", "to=10000-01-01"])
def test_extreme_dashboard_dates_are_a_message_not_a_500(admin: FlaskClient, query: str) -> None:
    response = admin.get(f"/admin/?{query}")
    assert response.status_code == 200
    assert "Use a date" in response.get_data(as_text=True)


def test_a_readers_timeline_reads_as_sentences(app: Flask, admin: FlaskClient) -> None:
    reader = enrol(app, admin, "ana@example.com")
    admin.get(reader.url("checkin"))
    page = admin.get(f"/admin/subscribers/{reader.public_id}").get_data(as_text=True)
    assert "Confirmed and started the course (run 1)" in page
    assert "Checked in on lesson 1: lighter" in page
    assert "from a link in an email" in page
    # Not the stored codes.
    assert "checkin ·" not in page and "confirm ·" not in page and "via link" not in page
