"""Real bookings: the booking systems' signed webhooks (Cal.com, Calendly, generic), matching
a booking to a reader, attributing it to a lesson, and counting it once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from course.app import create_app
from course.bookings import BookingKind, BookingNotice, record_booking
from course.models import Booking, Event, EventKind, Subscriber, utcnow
from course.privacy import erase, export_data
from course.reports import Filters, bookings_by_lesson
from course.tokens import Signer
from tests.conftest import CourseRunner, FakeClock, make_config
from tests.test_sending import enrol

CALCOM_SECRET = "calcom-webhook-secret-0123456789"
CALENDLY_KEY = "calendly-signing-key-0123456789abcdef"
GENERIC_SECRET = "generic-booking-secret-0123456789"

BOOKING_BRANCHES = {
    "CALCOM_WEBHOOK_SECRET": CALCOM_SECRET,
    "CALENDLY_SIGNING_KEY": CALENDLY_KEY,
    "BOOKING_WEBHOOK_SECRET": GENERIC_SECRET,
}


def booking_app(tmp_path: Path, db_url: str, **overrides: Any) -> Iterator[Flask]:
    app = create_app(make_config(tmp_path, db_url, **overrides))
    yield app
    app.extensions["course"].engine.dispose()


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """All three booking webhooks on, on SQLite and on PostgreSQL."""
    yield from booking_app(tmp_path, db_url, **BOOKING_BRANCHES)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def reader(app: Flask, email: str = "ana@example.com") -> str:
    """A confirmed reader of the first course; their public id."""
    settings = app.extensions["course"].settings
    return enrol(settings, FakeClock(now=utcnow()), email)


def signer(app: Flask) -> Signer:
    return app.extensions["course"].signer  # type: ignore[no-any-return]


def click_book(client: FlaskClient, app: Flask, public_id: str, lesson: int) -> str:
    """The reader clicks "Book a session" in a lesson; returns where it leads."""
    token = signer(app).dumps("book", public_id, lesson)
    response = client.get(f"/book/{token}")
    assert response.status_code == 302
    return str(response.headers["Location"])


def ref_of(app: Flask, public_id: str) -> str:
    """The reference our booking link passes on for this reader."""
    return signer(app).dumps("bookref", public_id)


def bookings(app: Flask) -> list[Booking]:
    with app.extensions["course"].sessions() as s:
        return list(s.scalars(select(Booking).order_by(Booking.id)))


def booking_events(app: Flask) -> list[tuple[str, int | None, str]]:
    with app.extensions["course"].sessions() as s:
        return [
            (e.kind, e.lesson, e.via)
            for e in s.scalars(select(Event).where(Event.kind.like("booking_%")).order_by(Event.id))
        ]


def counts(app: Flask) -> dict[int | None, tuple[int, dict[str, int]]]:
    with app.extensions["course"].sessions() as s:
        return {r.lesson: (r.clicked, r.confirmed) for r in bookings_by_lesson(s, Filters())}


# -- how each provider signs -----------------------------------------------------------------


def calcom_call(
    trigger: str, uid: str, email: str = "ana@example.com", **payload: Any
) -> tuple[bytes, dict[str, str]]:
    """A Cal.com webhook call: X-Cal-Signature-256 = hex HMAC-SHA256 of the raw body."""
    body = json.dumps(
        {
            "triggerEvent": trigger,
            "createdAt": "2026-11-26T09:30:00.538Z",
            "payload": {
                "type": "intro-session",
                "title": "Intro session between Harbor Therapy and Ana",
                "startTime": "2026-12-01T09:30:00Z",
                "endTime": "2026-12-01T10:20:00Z",
                "uid": uid,
                "bookingId": 4242,
                "status": "ACCEPTED",
                "attendees": payload.pop(
                    "attendees", [{"name": "Ana", "email": email, "timeZone": "Europe/Berlin"}]
                ),
                "responses": {"email": {"label": "email_address", "value": email}},
                "metadata": payload.pop("metadata", {}),
                **payload,
            },
        }
    ).encode()
    signature = hmac.new(CALCOM_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Cal-Signature-256": signature}


def calendly_call(
    event: str, uri: str, email: str = "ana@example.com", age: float = 0, **payload: Any
) -> tuple[bytes, dict[str, str]]:
    """A Calendly webhook call: Calendly-Webhook-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
    "t.body"> with the signing key."""
    body = json.dumps(
        {
            "event": event,
            "created_at": "2026-11-26T09:30:00.000000Z",
            "created_by": "https://api.calendly.com/users/AAAAAAAAAAAAAAAA",
            "payload": {
                "uri": uri,
                "email": email,
                "name": "Ana",
                "status": "active" if event == "invitee.created" else "canceled",
                "tracking": payload.pop("tracking", {}),
                "rescheduled": payload.pop("rescheduled", False),
                "old_invitee": payload.pop("old_invitee", None),
                "new_invitee": payload.pop("new_invitee", None),
                **payload,
            },
        }
    ).encode()
    t = str(int(time.time() - age))
    v1 = hmac.new(CALENDLY_KEY.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "Calendly-Webhook-Signature": f"t={t},v1={v1}",
    }


def generic_call(
    body: dict[str, Any] | bytes, age: float = 0, secret: str = GENERIC_SECRET
) -> tuple[bytes, dict[str, str]]:
    """Our documented webhook: X-Course-Signature = sha256=<hex HMAC-SHA256 of
    "<X-Course-Timestamp>.<body>">."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    t = str(int(time.time() - age))
    signature = hmac.new(secret.encode(), t.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return raw, {
        "Content-Type": "application/json",
        "X-Course-Timestamp": t,
        "X-Course-Signature": f"sha256={signature}",
    }


CALENDLY_INVITEE = "https://api.calendly.com/scheduled_events/EV1/invitees/INV"


# -- Cal.com ---------------------------------------------------------------------------------


def test_calcom_booking_is_matched_by_reference_and_attributed_to_the_clicked_lesson(
    app: Flask, client: FlaskClient
) -> None:
    pid = reader(app)
    click_book(client, app, pid, 1)
    click_book(client, app, pid, 3)  # the last click before booking
    body, headers = calcom_call(
        "BOOKING_CREATED",
        "cal-uid-1",
        email="someone.else@example.net",  # booked with another address: the ref decides
        metadata={"course_ref": ref_of(app, pid), "videoCallUrl": "https://cal.video/x"},
    )
    answer = client.post("/webhooks/bookings/calcom", data=body, headers=headers)
    assert answer.status_code == 200 and answer.get_json()["status"] == "recorded"
    [booking] = bookings(app)
    assert (booking.source, booking.external_id, booking.lesson, booking.status) == (
        "cal.com",
        "cal-uid-1",
        3,
        "confirmed",
    )
    assert booking_events(app) == [("booking_confirmed", 3, "cal.com")]
    assert counts(app)[3] == (1, {"cal.com": 1, "calendly": 0, "generic": 0})
    assert counts(app)[1][0] == 1  # clicked lesson 1 too, but booked for lesson 3


def test_calcom_matches_by_the_booking_form_address_without_attendees(
    app: Flask, client: FlaskClient
) -> None:
    pid = reader(app)
    click_book(client, app, pid, 2)
    body, headers = calcom_call("BOOKING_CREATED", "uid-r", email="Ana@example.com", attendees=[])
    answer = client.post("/webhooks/bookings/calcom", data=body, headers=headers)
    assert answer.get_json()["status"] == "recorded"
    assert [b.lesson for b in bookings(app)] == [2]


def test_calcom_refuses_bad_and_missing_signatures_and_records_nothing(
    app: Flask, client: FlaskClient
) -> None:
    reader(app)
    body, headers = calcom_call("BOOKING_CREATED", "cal-uid-1")
    url = "/webhooks/bookings/calcom"
    missing = {"Content-Type": "application/json"}
    assert client.post(url, data=body, headers=missing).status_code == 401
    wrong = dict(headers, **{"X-Cal-Signature-256": "0" * 64})
    assert client.post(url, data=body, headers=wrong).status_code == 401
    tampered = body.replace(b"cal-uid-1", b"cal-uid-2")
    assert client.post(url, data=tampered, headers=headers).status_code == 401
    other_key = hmac.new(b"another-secret", body, hashlib.sha256).hexdigest()
    assert (
        client.post(
            url, data=body, headers=dict(headers, **{"X-Cal-Signature-256": other_key})
        ).status_code
        == 401
    )
    assert bookings(app) == [] and booking_events(app) == []
    assert client.post(url, data=body, headers=headers).status_code == 200  # the real one


def test_calcom_repeated_cancelled_and_rescheduled(app: Flask, client: FlaskClient) -> None:
    pid = reader(app)
    click_book(client, app, pid, 2)
    url = "/webhooks/bookings/calcom"
    created = calcom_call("BOOKING_CREATED", "uid-a")
    for _ in range(3):  # the provider retries
        assert client.post(url, data=created[0], headers=created[1]).status_code == 200
    assert [b.external_id for b in bookings(app)] == ["uid-a"]
    moved = calcom_call("BOOKING_RESCHEDULED", "uid-b", rescheduleUid="uid-a")
    for _ in range(2):
        assert client.post(url, data=moved[0], headers=moved[1]).status_code == 200
    assert [(b.external_id, b.status, b.lesson) for b in bookings(app)] == [
        ("uid-a", "rescheduled", 2),
        ("uid-b", "confirmed", 2),
    ]
    assert counts(app)[2] == (1, {"cal.com": 1, "calendly": 0, "generic": 0})
    cancelled = calcom_call("BOOKING_CANCELLED", "uid-b", cancellationReason="Feeling better")
    for _ in range(2):
        assert client.post(url, data=cancelled[0], headers=cancelled[1]).status_code == 200
    # A delivery of the first "created" after all this changes nothing.
    assert client.post(url, data=created[0], headers=created[1]).get_json()["status"] == (
        "duplicate"
    )
    assert booking_events(app) == [
        ("booking_confirmed", 2, "cal.com"),
        ("booking_rescheduled", 2, "cal.com"),
        ("booking_cancelled", 2, "cal.com"),
    ]
    assert counts(app)[2] == (1, {"cal.com": 0, "calendly": 0, "generic": 0})


def test_calcom_malformed_unknown_and_incomplete_calls(app: Flask, client: FlaskClient) -> None:
    url = "/webhooks/bookings/calcom"

    def signed(raw: bytes) -> dict[str, str]:
        signature = hmac.new(CALCOM_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        return {"Content-Type": "application/json", "X-Cal-Signature-256": signature}

    for raw in (b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'):
        assert client.post(url, data=raw, headers=signed(raw)).status_code == 400
    ping = json.dumps({"triggerEvent": "PING", "payload": {}}).encode()
    answer = client.post(url, data=ping, headers=signed(ping))
    assert answer.status_code == 200 and answer.get_json()["status"] == "ignored"
    no_uid = json.dumps({"triggerEvent": "BOOKING_CREATED", "payload": {"attendees": []}}).encode()
    assert client.post(url, data=no_uid, headers=signed(no_uid)).status_code == 400
    assert bookings(app) == []


# -- Calendly --------------------------------------------------------------------------------


def test_calendly_booking_matched_by_tracking_reference(app: Flask, client: FlaskClient) -> None:
    pid = reader(app)
    location = click_book(client, app, pid, 4)
    # The booking link carried the reference in utm_content; Calendly returns it in tracking.
    ref = parse_qs(urlsplit(location).query)["utm_content"][0]
    body, headers = calendly_call(
        "invitee.created",
        CALENDLY_INVITEE,
        email="another@example.net",
        tracking={"utm_source": "course", "utm_campaign": "lesson-4", "utm_content": ref},
    )
    answer = client.post("/webhooks/bookings/calendly", data=body, headers=headers)
    assert answer.status_code == 200 and answer.get_json()["status"] == "recorded"
    assert [(b.source, b.external_id, b.lesson) for b in bookings(app)] == [
        ("calendly", CALENDLY_INVITEE, 4)
    ]
    assert counts(app)[4] == (1, {"cal.com": 0, "calendly": 1, "generic": 0})


def test_calendly_matches_by_address_in_any_case(app: Flask, client: FlaskClient) -> None:
    pid = reader(app)
    click_book(client, app, pid, 1)
    body, headers = calendly_call("invitee.created", CALENDLY_INVITEE, email="ANA@Example.COM")
    assert client.post("/webhooks/bookings/calendly", data=body, headers=headers).status_code == 200
    with app.extensions["course"].sessions() as s:
        [booking] = s.scalars(select(Booking)).all()
        subscriber = s.get(Subscriber, booking.subscriber_id)
        assert subscriber is not None and subscriber.public_id == pid and booking.lesson == 1


def test_calendly_refuses_bad_missing_and_replayed_signatures(
    app: Flask, client: FlaskClient
) -> None:
    reader(app)
    url = "/webhooks/bookings/calendly"
    body, headers = calendly_call("invitee.created", CALENDLY_INVITEE)
    t = headers["Calendly-Webhook-Signature"].split(",")[0]
    for bad in ("", t, f"{t},v1={'0' * 64}", "v1=abc", "garbage"):
        call = dict(headers, **{"Calendly-Webhook-Signature": bad})
        assert client.post(url, data=body, headers=call).status_code == 401, bad
    del headers["Calendly-Webhook-Signature"]
    assert client.post(url, data=body, headers=headers).status_code == 401
    # Signed correctly, but ten minutes ago: a replay.
    old_body, old_headers = calendly_call("invitee.created", CALENDLY_INVITEE, age=600)
    assert client.post(url, data=old_body, headers=old_headers).status_code == 401
    # Signed for another body.
    _, other = calendly_call("invitee.created", CALENDLY_INVITEE + "2")
    assert client.post(url, data=body, headers=other).status_code == 401
    assert bookings(app) == [] and booking_events(app) == []


@pytest.mark.parametrize("created_first", [True, False])
def test_calendly_reschedule_reported_twice_counts_once(
    app: Flask, client: FlaskClient, created_first: bool
) -> None:
    """Calendly reports a reschedule as the old invitee cancelled (rescheduled: true, with
    new_invitee) and the new one created (with old_invitee), in either order."""
    pid = reader(app)
    click_book(client, app, pid, 2)
    url = "/webhooks/bookings/calendly"
    old, new = CALENDLY_INVITEE, CALENDLY_INVITEE + "-NEW"
    first = calendly_call("invitee.created", old)
    assert client.post(url, data=first[0], headers=first[1]).status_code == 200
    cancel_half = calendly_call("invitee.canceled", old, rescheduled=True, new_invitee=new)
    create_half = calendly_call("invitee.created", new, old_invitee=old)
    halves = [create_half, cancel_half] if created_first else [cancel_half, create_half]
    for body, headers in [*halves, *halves]:  # and each retried
        assert client.post(url, data=body, headers=headers).status_code == 200
    assert [(b.external_id, b.status, b.lesson) for b in bookings(app)] == [
        (old, "rescheduled", 2),
        (new, "confirmed", 2),
    ]
    assert booking_events(app) == [
        ("booking_confirmed", 2, "calendly"),
        ("booking_rescheduled", 2, "calendly"),
    ]
    assert counts(app)[2][1]["calendly"] == 1
    cancel = calendly_call("invitee.canceled", new)
    assert client.post(url, data=cancel[0], headers=cancel[1]).status_code == 200
    assert counts(app)[2][1]["calendly"] == 0
    assert booking_events(app)[-1] == ("booking_cancelled", 2, "calendly")


# -- generic -------------------------------------------------------------------------------


def test_generic_webhook_signed_replayed_malformed_and_unknown(
    app: Flask, client: FlaskClient
) -> None:
    reader(app)
    url = "/webhooks/bookings/generic"
    event = {"event": "booking.confirmed", "id": "G-1", "email": "ana@example.com"}
    for body, headers in (
        generic_call(event, secret="wrong-secret"),
        generic_call(event, age=600),  # a replay
        generic_call(event, age=-600),  # from the future
    ):
        assert client.post(url, data=body, headers=headers).status_code == 401
    body, headers = generic_call(event)
    unsigned = {
        "Content-Type": "application/json",
        "X-Course-Timestamp": headers["X-Course-Timestamp"],
    }
    assert client.post(url, data=body, headers=unsigned).status_code == 401
    no_time = {k: v for k, v in headers.items() if k != "X-Course-Timestamp"}
    assert client.post(url, data=body, headers=no_time).status_code == 401
    assert bookings(app) == []
    bad_json = generic_call(b"{'id': 1")
    assert client.post(url, data=bad_json[0], headers=bad_json[1]).status_code == 400
    unknown = generic_call({"event": "booking.no_show", "id": "G-1"})
    answer = client.post(url, data=unknown[0], headers=unknown[1])
    assert answer.status_code == 200 and answer.get_json()["status"] == "ignored"
    assert bookings(app) == []
    for _ in range(2):
        answer = client.post(url, data=body, headers=headers)
        assert answer.status_code == 200
    assert answer.get_json()["status"] == "duplicate"
    assert [(b.source, b.external_id, b.lesson) for b in bookings(app)] == [
        ("generic", "G-1", None)
    ]
    cancel = generic_call({"event": "booking.cancelled", "id": "G-1"})
    assert client.post(url, data=cancel[0], headers=cancel[1]).status_code == 200
    assert [b.status for b in bookings(app)] == ["cancelled"]
    assert booking_events(app) == [
        ("booking_confirmed", None, "generic"),
        ("booking_cancelled", None, "generic"),
    ]


def test_a_booking_by_someone_who_is_not_a_reader_records_nothing(
    app: Flask, client: FlaskClient
) -> None:
    reader(app)
    body, headers = generic_call(
        {"event": "booking.confirmed", "id": "G-9", "email": "stranger@example.org"}
    )
    answer = client.post("/webhooks/bookings/generic", data=body, headers=headers)
    assert answer.status_code == 200 and answer.get_json()["status"] == "unmatched"
    forged = generic_call(
        {"event": "booking.confirmed", "id": "G-10", "ref": "not-a-signed-reference"}
    )
    answer = client.post("/webhooks/bookings/generic", data=forged[0], headers=forged[1])
    assert answer.get_json()["status"] == "unmatched"
    # Someone who signed up but never confirmed is not a reader either.
    reader(app, "pending@example.com")
    with app.extensions["course"].sessions() as s, s.begin():
        s.execute(
            update(Subscriber)
            .where(Subscriber.email == "pending@example.com")
            .values(confirmed_at=None, status="pending")
        )
    pending = generic_call(
        {"event": "booking.confirmed", "id": "G-11", "email": "pending@example.com"}
    )
    answer = client.post("/webhooks/bookings/generic", data=pending[0], headers=pending[1])
    assert answer.get_json()["status"] == "unmatched"
    assert bookings(app) == [] and booking_events(app) == []


def test_webhooks_without_their_secret_do_not_exist(tmp_path: Path, sqlite_url: str) -> None:
    for app in booking_app(tmp_path, sqlite_url):
        client = app.test_client()
        for provider in ("calcom", "calendly", "generic"):
            assert client.post(f"/webhooks/bookings/{provider}", json={}).status_code == 404


# -- attribution -------------------------------------------------------------------------------


def test_attribution_window(app: Flask, client: FlaskClient) -> None:
    """A booking counts for the lesson clicked within COURSE_BOOKING_ATTRIBUTION_DAYS (30)
    before it; later, or with no click at all, it has no lesson."""
    pid = reader(app)
    unclicked = reader(app, "ben@example.com")
    click_book(client, app, pid, 2)
    state = app.extensions["course"]
    window = timedelta(days=state.settings.booking_attribution_days)
    now = utcnow()

    def book(booking_id: str, at_days: float, ref_pid: str) -> None:
        notice = BookingNotice(
            "generic", BookingKind.CONFIRMED, booking_id, ref=ref_of(app, ref_pid)
        )
        with state.sessions() as s, s.begin():
            record_booking(
                s, notice, now + timedelta(days=at_days), signer=state.signer, window=window
            )

    book("inside", 29.9, pid)
    book("outside", 30.1, pid)
    book("no-click", 0, unclicked)
    assert [(b.external_id, b.lesson) for b in bookings(app)] == [
        ("inside", 2),
        ("outside", None),
        ("no-click", None),
    ]
    assert counts(app)[None] == (0, {"cal.com": 0, "calendly": 0, "generic": 2})


def test_a_shorter_window_is_a_setting(tmp_path: Path, sqlite_url: str) -> None:
    for app in booking_app(tmp_path, sqlite_url, BOOKING_ATTRIBUTION_DAYS=1, **BOOKING_BRANCHES):
        client = app.test_client()
        pid = reader(app)
        click_book(client, app, pid, 1)
        with app.extensions["course"].sessions() as s, s.begin():
            # The click was two days ago.
            s.execute(
                update(Event)
                .where(Event.kind == EventKind.BOOK)
                .values(created_at=utcnow() - timedelta(days=2))
            )
        body, headers = generic_call(
            {"event": "booking.confirmed", "id": "G-1", "ref": ref_of(app, pid)}
        )
        assert (
            client.post("/webhooks/bookings/generic", data=body, headers=headers).status_code == 200
        )
        assert [b.lesson for b in bookings(app)] == [None]


def test_bookings_stay_counted_after_the_reader_is_erased(app: Flask, client: FlaskClient) -> None:
    pid = reader(app)
    click_book(client, app, pid, 1)
    body, headers = calcom_call("BOOKING_CREATED", "uid-e")
    assert client.post("/webhooks/bookings/calcom", data=body, headers=headers).status_code == 200
    before = counts(app)
    state = app.extensions["course"]
    with state.sessions() as s, s.begin():
        subscriber = s.scalars(select(Subscriber).where(Subscriber.public_id == pid)).one()
        # The reader's own data export shows it (and its events), before the erasure.
        [exported] = export_data(s, subscriber)["bookings"]
        assert (exported["source"], exported["booking_id"], exported["lesson"]) == (
            "cal.com",
            "uid-e",
            1,
        )
        erased_id = subscriber.id
        erase(s, subscriber, state.settings.secret_keys, utcnow())
    assert counts(app) == before == {1: (1, {"cal.com": 1, "calendly": 0, "generic": 0})}
    # The booking stays with the erased reader's row, which names nobody now.
    assert [b.subscriber_id for b in bookings(app)] == [erased_id]
    with state.sessions() as s:
        assert s.get(Subscriber, erased_id).email.startswith("anonymized-")
    # A cancellation after the erasure still takes it off the count.
    cancel = calcom_call("BOOKING_CANCELLED", "uid-e")
    assert (
        client.post("/webhooks/bookings/calcom", data=cancel[0], headers=cancel[1]).status_code
        == 200
    )
    assert counts(app)[1][1]["cal.com"] == 0


# -- the booking link ----------------------------------------------------------------------------


def test_booking_link_without_webhooks_or_prefill_is_unchanged(
    tmp_path: Path, sqlite_url: str
) -> None:
    for app in booking_app(tmp_path, sqlite_url):
        pid = reader(app)
        query = parse_qs(urlsplit(click_book(app.test_client(), app, pid, 1)).query)
        assert query == {
            "ref": ["course"],
            "utm_source": ["course"],
            "utm_medium": ["email"],
            "utm_campaign": ["lesson-1"],
        }


def test_booking_link_carries_an_opaque_reference_for_each_configured_webhook(
    app: Flask, client: FlaskClient
) -> None:
    pid = reader(app)
    query = parse_qs(urlsplit(click_book(client, app, pid, 1)).query)
    refs = {query["metadata[course_ref]"][0], query["utm_content"][0], query["course_ref"][0]}
    assert len(refs) == 1
    [ref] = refs
    assert signer(app).loads("bookref", ref) == [pid]
    with app.extensions["course"].sessions() as s:
        subscriber = s.scalars(select(Subscriber).where(Subscriber.public_id == pid)).one()
        assert str(subscriber.id) != ref and "ana" not in ref.lower()
    assert "email" not in query and "name" not in query  # prefill is off by default


@pytest.mark.parametrize("prefill", [True, False])
def test_prefill_passes_name_and_address_only_when_turned_on(
    tmp_path: Path, sqlite_url: str, prefill: bool
) -> None:
    for app in booking_app(tmp_path, sqlite_url, BOOKING_PREFILL=prefill):
        pid = reader(app, "Ana.Lima@example.com")
        with app.extensions["course"].sessions() as s, s.begin():
            s.execute(update(Subscriber).values(name="Ana Lima"))
        query = parse_qs(urlsplit(click_book(app.test_client(), app, pid, 1)).query)
        if prefill:
            assert query["name"] == ["Ana Lima"] and query["email"] == ["Ana.Lima@example.com"]
        else:
            assert "name" not in query and "email" not in query
        assert "utm_content" not in query  # no booking webhook configured: no reference


# -- course stats ------------------------------------------------------------------------------


def test_course_stats_shows_confirmed_bookings(app: Flask, client: FlaskClient) -> None:
    runner = CourseRunner(app)
    assert "Confirmed bookings: 0\n" in runner.invoke(["stats"]).output
    pid = reader(app)
    click_book(client, app, pid, 1)
    for uid in ("uid-1", "uid-2"):
        body, headers = calcom_call("BOOKING_CREATED", uid)
        assert (
            client.post("/webhooks/bookings/calcom", data=body, headers=headers).status_code == 200
        )
    stranger = reader(app, "ben@example.com")  # booked without clicking
    body, headers = generic_call(
        {"event": "booking.confirmed", "id": "G-1", "ref": ref_of(app, stranger)}
    )
    assert client.post("/webhooks/bookings/generic", data=body, headers=headers).status_code == 200
    result = runner.invoke(["stats"])
    assert result.exit_code == 0, result.output
    assert (
        "Confirmed bookings: 3 (cal.com 2, generic 1), 1 not attributed to a lesson"
        in result.output
    )


def test_course_stats_has_no_bookings_line_without_a_booking_system(
    tmp_path: Path, sqlite_url: str
) -> None:
    for app in booking_app(tmp_path, sqlite_url):
        assert "Confirmed bookings" not in CourseRunner(app).invoke(["stats"]).output


def test_clicked_book_counts_each_reader_once_per_lesson(app: Flask, client: FlaskClient) -> None:
    ana, ben = reader(app), reader(app, "ben@example.com")
    click_book(client, app, ana, 1)
    with app.extensions["course"].sessions() as s, s.begin():
        # Ana's first click was two days ago: her click today is counted as an event again.
        s.execute(update(Event).values(created_at=utcnow() - timedelta(days=2)))
    click_book(client, app, ana, 1)
    click_book(client, app, ben, 1)
    click_book(client, app, ben, 2)
    with app.extensions["course"].sessions() as s:
        assert len(s.scalars(select(Event).where(Event.kind == EventKind.BOOK)).all()) == 4
    assert {k: v[0] for k, v in counts(app).items()} == {1: 2, 2: 1}


def test_the_webhooks_are_rate_limited_per_client(tmp_path: Path, sqlite_url: str) -> None:
    for app in booking_app(tmp_path, sqlite_url, **BOOKING_BRANCHES):
        client = app.test_client()
        answers = [
            client.post("/webhooks/bookings/calcom", data=b"{}").status_code for _ in range(121)
        ]
        assert answers[:120] == [401] * 120 and answers[120] == 429
