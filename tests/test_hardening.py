"""The outside attack round's findings, each as a test through real parts: consent that a
person gave, nothing changed for a known reader before they confirm, links that open only
what they name, scanner protection, abuse limits and odd input."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from course.app import create_app
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Event,
    EventKind,
    LessonProgress,
    SignupRequest,
    Subscriber,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from course.progress import SCAN_WINDOW, record_link_click
from tests.conftest import CourseRunner, FakeClock, make_config, outbox_messages
from tests.helpers import confirm_like_a_person, forms, link, local_path, parse, text_part
from tests.test_links import Reader, enrol, tick


@pytest.fixture
def reader(app: Flask, client: FlaskClient) -> Reader:
    return enrol(app, client, "ana@example.com")


@pytest.fixture
def app_factory(tmp_path: Path, sqlite_url: str) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        application = create_app(make_config(tmp_path, sqlite_url, **overrides))
        apps.append(application)
        return application

    yield make
    for application in apps:
        application.extensions["course"].engine.dispose()


def subscriber(sessions: sessionmaker[Session], email: str = "ana@example.com") -> Subscriber:
    with sessions() as s:
        return s.scalars(select(Subscriber).where(Subscriber.email == email)).one()


def lesson_rows(sessions: sessionmaker[Session]) -> list[Delivery]:
    with sessions() as s:
        return list(s.scalars(select(Delivery).where(Delivery.kind == DeliveryKind.LESSON)))


# -- 1. consent needs a person -----------------------------------------------------------------


def test_a_fetch_of_the_confirmation_link_confirms_nothing(
    app: Flask, client: FlaskClient, sessions: sessionmaker[Session], settings: Any
) -> None:
    """A mail scanner fetches every link of the confirmation (GET, HEAD, in any order):
    the address stays unconfirmed and no lesson is queued."""
    client.post("/subscribe", json={"email": "ana@example.com"})
    tick(app)
    confirmation = outbox_messages(settings)[-1]
    ours = "https://course.example.org/"  # COURSE_BASE_URL in make_config
    urls = [
        u for u in re.findall(r"https?://[^\s\"<>]+", text_part(confirmation)) if u.startswith(ours)
    ]
    assert any("/confirm/" in url for url in urls)
    for url in urls:
        for method in ("get", "head", "options"):
            getattr(client, method)(local_path(url))
    assert subscriber(sessions).status == SubscriberStatus.PENDING
    assert lesson_rows(sessions) == []
    page = client.get(local_path(link(confirmation, "confirm")))
    form = forms(page.get_data(as_text=True))[0]  # one button, a plain form: no JavaScript
    assert form.method == "post" and "<script" not in page.get_data(as_text=True)
    assert client.post(form.action).status_code == 200
    assert subscriber(sessions).status == SubscriberStatus.ACTIVE
    assert [d.number for d in lesson_rows(sessions)] == [1]


# -- 2. nothing changes for a known reader until they confirm --------------------------------


def test_a_signup_changes_nothing_about_a_reader_who_left(
    app: Flask, client: FlaskClient, sessions: sessionmaker[Session], settings: Any
) -> None:
    reader = enrol(app, client, "ana@example.com")  # "Ana", UTC, lesson 1 received
    client.get(reader.url("checkin"))
    client.post(reader.url("checkin"), data={"note": "a private note"})
    client.post(reader.url("unsubscribe"), data={"List-Unsubscribe": "One-Click"})
    before = subscriber(sessions)
    first_confirmation = [
        m for m in outbox_messages(settings) if "confirm" in parse(m)["Subject"].lower()
    ][0]
    # Someone else asks for her address, with another name and time zone.
    client.post(
        "/subscribe",
        json={
            "email": "ana@example.com",
            "name": "Claim your prize at x.example",
            "timezone": "Asia/Tokyo",
        },
    )
    tick(app)
    after = subscriber(sessions)
    for field in ("status", "name", "timezone", "unsubscribed_at", "confirmed_at", "run"):
        assert getattr(after, field) == getattr(before, field), field
    with sessions() as s:
        row = s.scalars(select(LessonProgress)).one()
        assert row.note == "a private note" and row.checkin == "lighter"
    confirmation = outbox_messages(settings)[-1]
    assert "confirm" in parse(confirmation)["Subject"].lower()
    assert "Hi Ana," in text_part(confirmation) and "prize" not in text_part(confirmation)
    # The first signup's old link does not enrol her again; only the new one does.
    confirm_like_a_person(client, link(first_confirmation, "confirm"))
    assert subscriber(sessions).status == SubscriberStatus.UNSUBSCRIBED
    confirm_like_a_person(client, link(confirmation, "confirm"))
    back = subscriber(sessions)
    assert back.status == SubscriberStatus.ACTIVE and back.run == 2
    assert back.name == "Ana" and back.timezone == before.timezone
    tick(app)
    with sessions() as s:  # the first run's history stays
        assert s.scalars(select(LessonProgress).where(LessonProgress.run == 1)).one().note
        runs = sorted(
            (d.run, d.number, d.status)
            for d in s.scalars(select(Delivery).where(Delivery.kind == "lesson"))
        )
        assert runs[:1] == [(1, 1, "sent")] and (2, 1, "sent") in runs


def test_a_new_signup_is_greeted_without_the_typed_name(
    app: Flask, client: FlaskClient, settings: Any
) -> None:
    client.post("/subscribe", json={"email": "new@example.com", "name": "Win money now"})
    tick(app)
    text = text_part(outbox_messages(settings)[-1])
    assert "Hello," in text and "Win money" not in text


def test_an_opt_out_outlives_the_purge_and_the_erasure_and_an_import_respects_it(
    app: Flask,
    client: FlaskClient,
    sessions: sessionmaker[Session],
    settings: Any,
    tmp_path: Path,
) -> None:
    from course.privacy import purge_pending

    reader = enrol(app, client, "ana@example.com")
    client.post(reader.url("unsubscribe"), data={"List-Unsubscribe": "One-Click"})
    client.post("/subscribe", json={"email": "ana@example.com"})  # someone asks again
    with sessions() as s, s.begin():
        assert purge_pending(s, utcnow() + timedelta(days=30), 7) == 0  # she is no signup
    with sessions() as s, s.begin():
        from course.privacy import erase

        erase(s, s.scalars(select(Subscriber)).one(), settings.secret_keys, utcnow())
    with sessions() as s:
        suppression = s.scalars(select(Suppression)).one()
        assert "ana" not in suppression.fingerprint  # a keyed hash, not the address
    csv = tmp_path / "list.csv"
    csv.write_text("email\nANA+news@example.com\nbo@example.com\n")
    result = CourseRunner(app).invoke(["import", str(csv), "--consented"])
    assert "Imported 1, skipped 1." in result.output
    assert "opt-out list" in result.output
    with sessions() as s:
        emails = list(s.scalars(select(Subscriber.email)))
        # ana's row stays as an anonymous count (privacy.erase); only bo was imported.
        assert [e for e in emails if not e.startswith("anonymized-")] == ["bo@example.com"]


# -- 3. a link opens only what it names ------------------------------------------------------


@pytest.mark.parametrize("path", ["unsubscribe", "pause", "done", "checkin", "view"])
def test_no_link_but_my_progress_leads_to_notes_export_or_erase(
    client: FlaskClient, reader: Reader, path: str
) -> None:
    client.post(reader.url("checkin"), data={"note": "my secret note"})
    for method in ("get", "post"):
        page = getattr(client, method)(reader.url(path)).get_data(as_text=True)
        assert "/me/" not in page, (path, method)
        assert "data.json" not in page and "/delete" not in page
        assert "my secret note" not in page


def test_the_progress_page_shows_and_edits_the_note(client: FlaskClient, reader: Reader) -> None:
    client.post(reader.url("checkin"), data={"note": "first words"})
    page = client.get(reader.url("me")).get_data(as_text=True)
    assert "first words" in page
    form = [f for f in forms(page) if f.action.endswith("/note")][0]
    form.fields["note"] = "second words"
    assert client.post(form.action, data=form.fields).status_code == 303
    assert "second words" in client.get(reader.url("me")).get_data(as_text=True)
    # An empty note from the check-in page does not delete it (that page never shows it).
    client.post(reader.url("checkin"), data={"note": ""})
    assert "second words" in client.get(reader.url("me")).get_data(as_text=True)


def test_the_unsubscribe_page_offers_a_pause_first(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    page = client.get(reader.url("unsubscribe")).get_data(as_text=True)
    form = forms(page)[0]
    assert [value for _, value in form.buttons] == ["pause", "keep", "unsubscribe"]
    # "Keep my course" changes nothing.
    kept = client.post(reader.url("unsubscribe"), data={"action": "keep"})
    assert "Your course carries on." in kept.get_data(as_text=True)
    assert subscriber(sessions).status == SubscriberStatus.ACTIVE
    client.post(reader.url("unsubscribe"), data={"action": "pause"})
    assert subscriber(sessions).status == SubscriberStatus.PAUSED
    client.post(reader.url("unsubscribe"), data={"action": "unsubscribe"})
    assert subscriber(sessions).status == SubscriberStatus.UNSUBSCRIBED


def test_the_pause_page_offers_to_keep_the_course_first(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    page = client.get(reader.url("pause")).get_data(as_text=True)
    assert [value for _, value in forms(page)[0].buttons] == ["keep", "pause"]
    kept = client.post(reader.url("pause"), data={"action": "keep"})
    assert "Your course carries on." in kept.get_data(as_text=True)
    assert subscriber(sessions).status == SubscriberStatus.ACTIVE
    client.post(reader.url("pause"), data={"action": "pause"})
    assert subscriber(sessions).status == SubscriberStatus.PAUSED


# -- 5. scanner protection that holds for slow fetches --------------------------------------


def test_a_slow_scanner_is_recognised_and_leaves_nothing(
    app: Flask, client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    """A scanner that fetches one link every 45 seconds: everything it recorded is taken
    back when its conflicting answers arrive."""
    clock = FakeClock(now=utcnow())
    sub = subscriber(sessions)
    hits = [
        (EventKind.DONE, None),
        (EventKind.BOOK, None),
        (EventKind.CHECKIN, "lighter"),
        (EventKind.VIEW, None),
        (EventKind.CHECKIN, "same"),
        (EventKind.CHECKIN, "stirred"),
    ]
    for kind, value in hits:
        clock.advance(seconds=45)
        with sessions() as s, s.begin():
            record_link_click(s, s.merge(sub), 1, kind, clock(), value)
    with sessions() as s:
        kinds = sorted(e.kind for e in s.scalars(select(Event).where(Event.via == "link")))
        assert kinds == [EventKind.LINK_SCAN]
        row = s.scalars(select(LessonProgress)).one()
        assert row.done_at is None and row.checkin is None
    # The reader's own click after the window counts again.
    clock.advance(seconds=SCAN_WINDOW.total_seconds() + 60)
    with sessions() as s, s.begin():
        assert record_link_click(s, s.merge(sub), 1, EventKind.CHECKIN, clock(), "same")


def test_views_and_booking_clicks_count_once_per_reader_and_lesson(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    for _ in range(5):
        client.get(reader.url("book"))
        client.get(reader.url("view"))
    with sessions() as s:
        kinds = sorted(e.kind for e in s.scalars(select(Event).where(Event.via == "link")))
    assert kinds == [EventKind.BOOK, EventKind.VIEW]


# -- 6. no enumeration by timing ------------------------------------------------------------


def test_a_signup_does_the_same_database_work_for_known_and_new_addresses(
    app: Flask, client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    """Before the answer, ``POST /subscribe`` runs the very same statements whether the
    address is new, pending, enrolled or gone; the decision comes after the answer. (The
    timing itself is measured in `make bench`: bench/signup_timing.py.)"""
    engine = app.extensions["course"].engine
    client.post("/subscribe", json={"email": "known@example.com"})
    with sessions() as s, s.begin():
        s.scalars(select(Subscriber)).one().status = SubscriberStatus.ACTIVE

    def statements_before_the_answer(email: str) -> list[str]:
        seen: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(re.sub(r"\s+", " ", statement))

        event.listen(engine, "before_cursor_execute", record)
        try:
            response = client.post("/subscribe", json={"email": email}, buffered=False)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        response.close()  # now the decision runs
        return seen

    known = statements_before_the_answer("known@example.com")
    new = statements_before_the_answer("someone-new@example.com")
    assert known == new
    # The one write is the request; the only read is of the courses (which course the form
    # names), never of anything about the address.
    writes = [st for st in known if not st.startswith(("BEGIN", "COMMIT", "SELECT"))]
    assert len(writes) == 1 and "INSERT INTO signup_requests" in writes[0]
    reads = [st for st in known if st.startswith("SELECT")]
    assert all(" FROM courses" in st and "subscribers" not in st for st in reads), reads
    with sessions() as s:  # and both were decided after the answer
        assert s.scalar(select(func.count()).select_from(SignupRequest)) == 0
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 2


def test_a_signup_request_left_behind_is_decided_by_the_next_tick(
    app: Flask, sessions: sessionmaker[Session], settings: Any
) -> None:
    """A web worker that died between its answer and the decision loses nothing."""
    from course.scheduler import build_sender, run_tick
    from course.subscriptions import SignupData, store_signup_request

    with sessions() as s, s.begin():
        store_signup_request(s, SignupData("ana@example.com", None, None, None), utcnow())
    sender = build_sender(settings)
    run_tick(sender)
    sender.engine.dispose()
    assert subscriber(sessions).status == SubscriberStatus.PENDING
    assert "confirm" in parse(outbox_messages(settings)[-1])["Subject"].lower()


# -- 7. abuse -----------------------------------------------------------------------------


def test_confirmations_are_capped_per_recipient_domain(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(
        CONFIRMATIONS_PER_DOMAIN_PER_HOUR=3, SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="99 per minute"
    )
    client = app.test_client()
    for i in range(5):
        client.post("/subscribe", json={"email": f"p{i}@corp.example"})
    client.post("/subscribe", json={"email": "other@else.example"})
    with app.extensions["course"].sessions() as s:
        domains = [
            email.rpartition("@")[2]
            for email in s.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.kind == DeliveryKind.CONFIRM)
            )
        ]
    assert sorted(domains) == ["corp.example"] * 3 + ["else.example"]


def test_json_from_a_script_without_an_allowed_origin_gets_a_stricter_limit(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(
        ALLOWED_ORIGINS=["https://practice.example"],
        SUBSCRIBE_LIMIT_PER_CLIENT="50 per minute",
        SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="2 per minute",
    )
    client = app.test_client()
    script = [client.post("/subscribe", json={"email": f"s{i}@example.com"}) for i in range(3)]
    assert [r.status_code for r in script] == [202, 202, 429]
    site = {"Origin": "https://practice.example"}
    allowed = [
        client.post("/subscribe", json={"email": f"w{i}@example.com"}, headers=site)
        for i in range(3)
    ]
    assert [r.status_code for r in allowed] == [202, 202, 202]


# -- 8. no 500 on odd input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"email": "ana@example.com", "name": "\\ud800"}',
        '{"email": "an\\udfffa@example.com"}',
        '{"email": "ana@example.com", "source": "\\udc80x"}',
    ],
)
def test_lone_surrogates_in_json_are_a_400(client: FlaskClient, body: str) -> None:
    response = client.post("/subscribe", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["fields"]


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", True),  # Persian, with a ZWNJ
        ("\U0001f469\u200d\U0001f4bb Kim", True),  # an emoji sequence with a ZWJ
        ("Ana\ue000", False),  # private use
        ("Ana\U000e0001", False),  # a tag character (format, not a joiner)
        ("Ana\u0378", False),  # unassigned
        ("Ana\u202e", False),  # a bidi override
    ],
)
def test_names_accept_joiners_and_refuse_invisible_or_unassigned_characters(
    client: FlaskClient, sessions: sessionmaker[Session], name: str, accepted: bool
) -> None:
    response = client.post("/subscribe", json={"email": "ana@example.com", "name": name})
    assert response.status_code == (202 if accepted else 400)
    if accepted:
        assert subscriber(sessions).name == name


def test_nul_bytes_in_admin_input_are_a_400_not_a_500(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    from tests.test_health import admin_client

    app = app_factory()
    admin = admin_client(app)
    for url in (
        "/admin/subscribers?q=a%00b",
        "/admin/subscribers?status=%00",
        "/admin/?source=x%00&from=2026-01-01",
        "/admin/subscribers/abc%00def",
    ):
        assert admin.get(url).status_code == 400, url
    login = forms(app.test_client().get("/admin/login").get_data(as_text=True))[0]
    login.fields.update(email="kim\x00@example.org", password="pass\x00word")
    assert app.test_client().post("/admin/login", data=login.fields).status_code == 400


def test_a_reader_whose_lesson_failed_is_shown_and_can_be_retried(
    app_factory: Callable[..., Flask],
) -> None:
    """A lesson refused for good (not because of the mailbox) stalls that reader's course:
    the dashboard says so, `course stats` warns, and one button tries every such lesson
    again once the cause is fixed."""
    from course.mail import PermanentError
    from tests.conftest import make_sender
    from tests.test_health import admin_client
    from tests.test_sending import MemoryTransport
    from tests.test_sending import enrol as enrol_directly

    app = app_factory()
    settings = app.extensions["course"].settings
    clock = FakeClock(now=utcnow())
    enrol_directly(settings, clock, "ana@example.com")
    transport = MemoryTransport()
    transport.fail["ana@example.com"] = PermanentError("552 5.3.4 message too big", bounce=False)
    make_sender(settings, transport, clock).tick()
    admin = admin_client(app)
    page = admin.get("/admin/").get_data(as_text=True)
    assert "1 reader waits for a lesson that could not be sent" in page
    assert "WARNING 1 reader(s) wait" in CourseRunner(app).invoke(["stats"]).output
    form = [f for f in forms(page) if f.action.endswith("/retry-failed")][0]
    assert admin.post(form.action, data=form.fields).status_code == 303
    rows = lesson_rows(app.extensions["course"].sessions)
    assert [(d.number, d.status) for d in rows] == [(1, DeliveryStatus.QUEUED)]
    del transport.fail["ana@example.com"]
    clock.advance(minutes=1)
    assert make_sender(settings, transport, clock).tick().sent == 1
