"""The reader's links: each with valid, tampered, wrong-purpose and other-reader tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from course.config import Settings
from course.mail.outbox import OutboxTransport
from course.models import (
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    LessonProgress,
    Subscriber,
    SubscriberStatus,
)
from course.sending import Sender, TickResult
from course.tokens import Signer
from tests.conftest import outbox_messages
from tests.helpers import confirm_like_a_person, link, local_path, parse, text_part


@dataclass
class Reader:
    public_id: str
    lesson1: bytes

    def url(self, path: str) -> str:
        return local_path(link(self.lesson1, path))


def tick(app: Flask) -> None:
    s = app.extensions["course"]
    sender = Sender(s.settings, s.sessions, OutboxTransport(s.settings.mail_url[7:]))
    sender.tick()


def enrol(app: Flask, client: FlaskClient, email: str) -> Reader:
    """Sign up, confirm from the outbox, receive lesson 1."""
    settings: Settings = app.extensions["course"].settings
    before = len(outbox_messages(settings))
    client.post("/subscribe", json={"email": email, "name": "Ana"})
    tick(app)
    confirmation = outbox_messages(settings)[before]
    assert confirm_like_a_person(client, link(confirmation, "confirm")).status_code == 200
    tick(app)
    lesson1 = outbox_messages(settings)[-1]
    assert parse(lesson1)["Subject"].startswith("Day 1")
    with app.extensions["course"].sessions() as s:
        pid = s.scalars(select(Subscriber.public_id).where(Subscriber.email == email)).one()
    return Reader(pid, lesson1)


@pytest.fixture
def reader(app: Flask, client: FlaskClient) -> Reader:
    return enrol(app, client, "ana@example.com")


def events(sessions: sessionmaker[Session], kind: EventKind) -> list[Event]:
    with sessions() as s:
        return list(s.scalars(select(Event).where(Event.kind == kind)))


def progress(sessions: sessionmaker[Session], lesson: int = 1) -> LessonProgress | None:
    with sessions() as s:
        return s.scalars(select(LessonProgress).where(LessonProgress.lesson == lesson)).first()


def status(sessions: sessionmaker[Session], email: str = "ana@example.com") -> str:
    with sessions() as s:
        return s.scalars(select(Subscriber.status).where(Subscriber.email == email)).one()


LINKS = ["done", "checkin", "view", "me", "pause", "unsubscribe", "book"]


def tamper(url: str) -> str:
    head, token = url.rsplit("/", 1)
    payload, sig = token.rsplit(".", 1)
    return f"{head}/{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"


@pytest.mark.parametrize("path", LINKS)
def test_every_link_in_the_email_works(client: FlaskClient, reader: Reader, path: str) -> None:
    response = client.get(reader.url(path))
    assert response.status_code == (302 if path == "book" else 200)


@pytest.mark.parametrize("path", LINKS)
@pytest.mark.parametrize(
    "mangle",
    [
        tamper,
        lambda url: url[:-6],  # truncated
        lambda url: url.rsplit("/", 1)[0] + "/not-a-token",
        lambda url: url.rsplit("/", 1)[0] + "/" + "A" * 600,
        lambda url: url + "%00",
    ],
    ids=["tampered", "truncated", "garbage", "huge", "nul"],
)
def test_bad_tokens_get_a_friendly_4xx_and_change_nothing(
    client: FlaskClient,
    reader: Reader,
    sessions: sessionmaker[Session],
    path: str,
    mangle: object,
) -> None:
    url = mangle(reader.url(path))  # type: ignore[operator]
    for method in ("get", "post"):
        response = getattr(client, method)(url, data={"List-Unsubscribe": "One-Click"})
        assert 400 <= response.status_code < 500
        assert response.status_code != 405 or path in ("view", "book", "me")
        if response.status_code == 400:
            page = response.get_data(as_text=True)
            assert "This link isn" in page or "characters that cannot be used" in page
    assert status(sessions) == SubscriberStatus.ACTIVE
    with sessions() as s:
        assert (
            s.scalar(select(func.count()).select_from(Event).where(Event.kind != EventKind.CONFIRM))
            == 0
        )


@pytest.mark.parametrize(
    ("path", "purpose"),
    [("unsubscribe", "pause"), ("done", "book"), ("me", "unsubscribe"), ("pause", "progress")],
)
def test_a_token_made_for_another_purpose_is_refused(
    client: FlaskClient,
    reader: Reader,
    settings: Settings,
    sessions: sessionmaker[Session],
    path: str,
    purpose: str,
) -> None:
    token = Signer(settings.secret_keys).dumps(purpose, reader.public_id, 1)
    assert client.post(f"/{path}/{token}").status_code in (400, 405)
    assert client.get(f"/{path}/{token}").status_code == 400
    assert status(sessions) == SubscriberStatus.ACTIVE


def test_a_token_signed_with_a_foreign_key_is_refused(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    forged = URLSafeSerializer("someone-elses-key", salt="course.unsubscribe").dumps(
        [reader.public_id]
    )
    assert client.post(f"/unsubscribe/{forged}").status_code == 400
    assert status(sessions) == SubscriberStatus.ACTIVE


def test_other_readers_token_only_touches_that_reader(
    app: Flask, client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    other = enrol(app, client, "bo@example.com")
    client.post(other.url("unsubscribe"))
    assert status(sessions, "bo@example.com") == SubscriberStatus.UNSUBSCRIBED
    assert status(sessions, "ana@example.com") == SubscriberStatus.ACTIVE


def test_rotated_keys_still_verify_old_links(
    tmp_path,
    sqlite_url: str,  # type: ignore[no-untyped-def]
) -> None:
    from course.app import create_app
    from tests.conftest import SECRET, make_config

    old_app = create_app(make_config(tmp_path, sqlite_url))
    old_client = old_app.test_client()
    reader = enrol(old_app, old_client, "ana@example.com")
    new_app = create_app(
        make_config(
            tmp_path, sqlite_url, SECRET_KEY="a-brand-new-key-" * 3, SECRET_KEY_FALLBACKS=[SECRET]
        )
    )
    assert new_app.test_client().get(reader.url("me")).status_code == 200
    no_fallback = create_app(make_config(tmp_path, sqlite_url, SECRET_KEY="a-brand-new-key-" * 3))
    assert no_fallback.test_client().get(reader.url("me")).status_code == 400
    for a in (old_app, new_app, no_fallback):
        a.extensions["course"].engine.dispose()


def test_done_is_recorded_once(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    assert "Well done" in client.get(reader.url("done")).get_data(as_text=True)
    client.get(reader.url("done"))
    row = progress(sessions)
    assert row is not None and row.done_at is not None
    assert len(events(sessions, EventKind.DONE)) == 1


def test_checkin_is_idempotent_and_a_new_answer_replaces_the_old(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    page = client.get(reader.url("checkin")).get_data(as_text=True)
    assert "you said: <strong>Lighter</strong>" in page
    client.get(reader.url("checkin"))
    assert [e.value for e in events(sessions, EventKind.CHECKIN)] == ["lighter"]
    # Changing the answer on the page (POST) replaces it.
    client.post(reader.url("checkin"), data={"answer": "stirred"})
    row = progress(sessions)
    assert row is not None and row.checkin == "stirred"
    assert [e.value for e in events(sessions, EventKind.CHECKIN)] == ["lighter", "stirred"]


def test_a_private_note_is_saved_but_never_in_events(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    client.get(reader.url("checkin"))
    response = client.post(reader.url("checkin"), data={"note": "Hard day, but I tried."})
    assert "Saved." in response.get_data(as_text=True)
    row = progress(sessions)
    assert row is not None and row.note == "Hard day, but I tried."
    assert all(e.value is None for e in events(sessions, EventKind.NOTE))
    too_long = client.post(reader.url("checkin"), data={"note": "x" * 5000})
    assert too_long.status_code == 400
    row = progress(sessions)
    assert row is not None and row.note == "Hard day, but I tried."


def test_a_link_scanner_sweep_records_nothing(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    """A scanner fetches every link: done, all three answers, view, booking."""
    urls = [local_path(u) for u in _all_links(reader.lesson1)]
    for url in urls:
        client.get(url)
    row = progress(sessions)
    assert row is None or (row.done_at is None and row.checkin is None)
    for kind in (EventKind.DONE, EventKind.CHECKIN, EventKind.VIEW, EventKind.BOOK):
        assert events(sessions, kind) == [], kind
    assert status(sessions) == SubscriberStatus.ACTIVE  # no unsubscribe, no pause
    assert len(events(sessions, EventKind.LINK_SCAN)) == 1
    # The reader's own answer on the page still counts.
    page = client.get(reader.url("checkin")).get_data(as_text=True)
    assert "opened the links in this email before you did" in page
    client.post(reader.url("checkin"), data={"answer": "same"})
    row = progress(sessions)
    assert row is not None and row.checkin == "same"


def _all_links(message: bytes) -> list[str]:
    import re

    from tests.helpers import text_part

    return re.findall(r"https://course\.example\.org/\S+", text_part(message))


def test_head_requests_record_nothing(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    for path in ("done", "checkin", "book", "view"):
        client.head(reader.url(path))
    with sessions() as s:
        assert (
            s.scalar(select(func.count()).select_from(Event).where(Event.kind != EventKind.CONFIRM))
            == 0
        )


def test_book_redirects_with_utm_and_records_the_lesson(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    response = client.get(reader.url("book"))
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "practice.example.org", "/book")
    assert parse_qs(target.query) == {
        "ref": ["course"],
        "utm_source": ["course"],
        "utm_medium": ["email"],
        "utm_campaign": ["lesson-1"],
    }
    assert [e.lesson for e in events(sessions, EventKind.BOOK)] == [1]


def test_view_in_browser_only_for_received_lessons(
    client: FlaskClient, reader: Reader, settings: Settings
) -> None:
    page = client.get(reader.url("view"))
    assert page.status_code == 200 and "Where insecurity comes from" in page.get_data(as_text=True)
    later = Signer(settings.secret_keys).dumps("view", reader.public_id, 3)
    assert client.get(f"/view/{later}").status_code == 404


def test_unsubscribe_get_asks_and_post_one_click_unsubscribes(
    app: Flask, client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    url = local_path(str(parse(reader.lesson1)["List-Unsubscribe"]).strip("<>"))
    page = client.get(url)
    assert page.status_code == 200 and "<button" in page.get_data(as_text=True)
    assert status(sessions) == SubscriberStatus.ACTIVE  # GET changes nothing
    fresh = app.test_client(use_cookies=False)
    response = fresh.post(
        url, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert status(sessions) == SubscriberStatus.UNSUBSCRIBED
    assert (
        fresh.post(
            url, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
        ).status_code
        == 200
    )
    assert [e.via for e in events(sessions, EventKind.UNSUBSCRIBE)] == ["one-click"]


def test_unsubscribed_reader_gets_nothing_and_can_sign_up_again(
    app: Flask,
    client: FlaskClient,
    reader: Reader,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    client.post(reader.url("unsubscribe"))
    with sessions() as s, s.begin():  # make lesson 2 due right now
        for d in s.scalars(select(Delivery)):
            d.due_at = d.due_at - timedelta(days=3)
    before = len(outbox_messages(settings))
    tick(app)
    assert len(outbox_messages(settings)) == before
    client.post("/subscribe", json={"email": "ana@example.com", "name": "Somebody Else"})
    tick(app)
    confirmation = outbox_messages(settings)[-1]
    assert "confirm" in str(parse(confirmation)["Subject"]).lower()
    assert "Hi Ana," in text_part(confirmation)  # the name she confirmed, not the new one
    assert status(sessions) == SubscriberStatus.UNSUBSCRIBED  # nothing changes before a click
    confirm_like_a_person(client, link(confirmation, "confirm"))
    assert status(sessions) == SubscriberStatus.ACTIVE
    tick(app)
    again = outbox_messages(settings)[-1]
    assert parse(again)["Subject"].startswith("Day 1")
    with sessions() as s:
        firsts = s.scalars(
            select(Delivery).where(Delivery.kind == "lesson", Delivery.number == 1)
        ).all()
        assert sorted((d.run, d.status) for d in firsts) == [(1, "sent"), (2, "sent")]


def test_unsubscribe_stops_a_lesson_already_claimed_in_a_running_batch(
    app: Flask,
    client: FlaskClient,
    reader: Reader,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    with sessions() as s, s.begin():
        for d in s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)):
            d.due_at = d.due_at - timedelta(days=3)
    s_ = app.extensions["course"]
    sender = Sender(s_.settings, s_.sessions, OutboxTransport(settings.mail_url[7:]))
    claimed = sender.claim(10)
    assert len(claimed) == 1
    client.post(reader.url("unsubscribe"), data={"List-Unsubscribe": "One-Click"})
    before = len(outbox_messages(settings))
    result = TickResult()
    sender._send_batch(claimed, sender.library.current(), result)
    assert (result.skipped, result.sent) == (1, 0)
    assert len(outbox_messages(settings)) == before


def test_pause_link_asks_first_and_resume_sends_one_lesson_not_a_burst(
    app: Flask,
    client: FlaskClient,
    reader: Reader,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    assert "Pause my course" in client.get(reader.url("pause")).get_data(as_text=True)
    assert status(sessions) == SubscriberStatus.ACTIVE
    client.post(reader.url("pause"))
    assert status(sessions) == SubscriberStatus.PAUSED
    # A week passes while paused: lessons 2..5 would all have been due.
    with sessions() as s, s.begin():
        for d in s.scalars(select(Delivery)):
            d.due_at -= timedelta(days=7)
            if d.sent_at:
                d.sent_at -= timedelta(days=7)
    before = len(outbox_messages(settings))
    tick(app)
    assert len(outbox_messages(settings)) == before  # paused: nothing
    me = reader.url("me")
    assert client.post(me + "/resume").status_code == 303
    assert status(sessions) == SubscriberStatus.ACTIVE
    with sessions() as s:
        queued = s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)).all()
    assert [d.number for d in queued] == [2]
    from course.models import utcnow

    # One lesson at the next send hour, in the future: not now, and never several.
    assert queued[0].due_at > utcnow()
    tick(app)
    assert len(outbox_messages(settings)) == before


def test_progress_page_shows_lessons_and_next_time_in_the_readers_zone(
    client: FlaskClient, reader: Reader
) -> None:
    client.get(reader.url("checkin"))
    page = client.get(reader.url("me")).get_data(as_text=True)
    assert "1. Where insecurity comes from" in page
    assert "Check-in: Lighter" in page
    assert "Your next lesson arrives on" in page and "(UTC)" in page


def test_changing_the_send_hour_and_zone_moves_the_next_lesson(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    me = reader.url("me")
    response = client.post(me + "/schedule", data={"send_hour": "19", "timezone": "Asia/Tokyo"})
    assert response.status_code == 303
    with sessions() as s:
        queued = s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)).one()
    from zoneinfo import ZoneInfo

    local = queued.due_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (19, 0)
    for bad in (
        {"send_hour": "24", "timezone": "UTC"},
        {"send_hour": "x", "timezone": "UTC"},
        {"send_hour": "8", "timezone": "Nowhere/City"},
        # Names the tz database has that are not places (issue 17).
        {"send_hour": "8", "timezone": "Factory"},
        {"send_hour": "8", "timezone": "localtime"},
        {"send_hour": "8", "timezone": "Etc/GMT+5"},
        {},
    ):
        assert client.post(me + "/schedule", data=bad).status_code == 400


def test_the_zone_picker_offers_places_grouped_by_region_and_keeps_a_saved_alias(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    me = reader.url("me")
    page = client.get(me).get_data(as_text=True)
    assert '<optgroup label="America">' in page and '<optgroup label="Europe">' in page
    assert (
        '<option value="America/Argentina/Buenos_Aires">Argentina – Buenos Aires</option>' in page
    )
    assert 'value="Factory"' not in page and 'value="localtime"' not in page
    # A zone from signup that is an alias (a browser may send one) stays as it is.
    with sessions() as s, s.begin():
        s.scalars(select(Subscriber)).one().timezone = "US/Eastern"
    page = client.get(me).get_data(as_text=True)
    assert '<option value="US/Eastern" selected>US/Eastern (as saved)</option>' in page
    kept = client.post(me + "/schedule", data={"send_hour": "9", "timezone": "US/Eastern"})
    assert kept.status_code == 303


def test_data_download_and_delete_with_confirmation(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    client.get(reader.url("checkin"))
    me = reader.url("me")
    data = client.get(me + "/data.json")
    assert data.headers["Content-Disposition"].startswith("attachment")
    assert data.get_json()["subscriber"]["email"] == "ana@example.com"
    assert data.get_json()["lessons"][0]["checkin"] == "lighter"
    assert client.get(me + "/delete").status_code == 200
    assert client.post(me + "/delete").status_code == 400  # not confirmed
    assert status(sessions) == SubscriberStatus.ACTIVE
    assert client.post(me + "/delete", data={"confirm": "yes"}).status_code == 200
    with sessions() as s:
        # What stays names nobody: the row keeps the counts (privacy.erase), nothing more.
        (left,) = s.scalars(select(Subscriber)).all()
        assert left.email != "ana@example.com" and left.public_id != reader.public_id
        assert left.status == SubscriberStatus.ERASED
        assert s.scalars(select(LessonProgress.checkin)).all() == ["lighter"]
        assert s.scalars(select(LessonProgress.note)).all() == [None]
        assert not s.scalars(
            select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)
        ).all()  # nothing more is sent
        assert s.scalars(select(Event)).all()  # what they did still counts
    assert client.get(me).status_code == 404


def test_a_later_scan_keeps_the_readers_own_answer(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    client.post(reader.url("checkin"), data={"answer": "same"})
    with sessions() as s, s.begin():  # the answer was given hours ago
        for event in s.scalars(select(Event)):
            event.created_at -= timedelta(hours=5)
        for row in s.scalars(select(LessonProgress)):
            row.checkin_at -= timedelta(hours=5)
    for url in _all_links(reader.lesson1):  # a gateway re-scans the old email
        client.get(local_path(url))
    row = progress(sessions)
    assert row is not None and row.checkin == "same"


def test_unsubscribing_records_the_last_lesson_received(
    client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    client.post(reader.url("unsubscribe"))
    assert [e.lesson for e in events(sessions, EventKind.UNSUBSCRIBE)] == [1]


@pytest.mark.parametrize("hour", ["²", "1" * 5000, "-1", "24", "8.0", "٨", ""])
def test_odd_send_hours_are_a_400_not_a_500(client: FlaskClient, reader: Reader, hour: str) -> None:
    response = client.post(
        reader.url("me") + "/schedule", data={"send_hour": hour, "timezone": "UTC"}
    )
    assert response.status_code == 400


def test_a_schedule_change_moves_the_next_lesson_not_a_resend(
    app: Flask, client: FlaskClient, reader: Reader, sessions: sessionmaker[Session]
) -> None:
    from course.models import utcnow
    from course.subscriptions import by_public_id, resend_lesson

    with sessions() as s, s.begin():
        assert resend_lesson(s, by_public_id(s, reader.public_id), 1, utcnow(), operator_id=1)
    client.post(reader.url("me") + "/schedule", data={"send_hour": "19", "timezone": "Asia/Tokyo"})
    with sessions() as s:
        queued = {
            d.number: d
            for d in s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED))
        }
    assert queued[1].due_at <= utcnow()  # the re-send still goes now
    from zoneinfo import ZoneInfo

    assert queued[2].due_at.astimezone(ZoneInfo("Asia/Tokyo")).hour == 19
    first_sent = None
    with sessions() as s:
        first_sent = s.scalars(
            select(Delivery.sent_at).where(Delivery.number == 1, Delivery.kind == "lesson")
        ).one()
    tick(app)
    with sessions() as s:
        row = s.scalars(
            select(Delivery).where(Delivery.number == 1, Delivery.kind == "lesson")
        ).one()
    assert row.status == DeliveryStatus.SENT and row.sent_at == first_sent
