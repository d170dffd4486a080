"""Signup: validation, no enumeration, double opt-in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from course.models import Delivery, DeliveryKind, Subscriber, SubscriberStatus, utcnow
from tests.helpers import forms


def count(sessions: sessionmaker[Session], model: type, *where: object) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def post_form(client: FlaskClient, data: dict[str, str]):  # type: ignore[no-untyped-def]
    """Post the hosted form as a browser does: with every field the page put in it."""
    form = forms(client.get("/").get_data(as_text=True))[0]
    assert "csrf_token" in form.fields, "no CSRF token on the hosted form"
    return client.post(form.action, data={**form.fields, **data})


@pytest.mark.parametrize(
    ("email", "stored"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana.Lopez@Example.COM ", "Ana.Lopez@example.com"),
        ("jürgen@müller.de", "jürgen@müller.de"),
        ("user+course@sub.example.co.uk", "user+course@sub.example.co.uk"),
        ("用户@例子.广告", "用户@例子.广告"),
    ],
)
def test_good_addresses_are_stored_normalised(
    client: FlaskClient, sessions: sessionmaker[Session], email: str, stored: str
) -> None:
    response = client.post("/subscribe", json={"email": email})
    assert response.status_code == 202
    with sessions() as s:
        subscriber = s.scalars(select(Subscriber)).one()
    assert subscriber.email == stored
    assert subscriber.status == SubscriberStatus.PENDING


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "email"),
        ({"email": ""}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"email": 42}, "email"),
        ({"email": ["a@example.com"]}, "email"),
        ({"email": "x" * 330 + "@example.com"}, "email"),
        ({"email": "ana@example.com", "name": "x" * 101}, "name"),
        ({"email": "ana@example.com", "name": "Ana\r\nBcc: victim@example.com"}, "name"),
        ({"email": "ana@example.com", "name": {"first": "Ana"}}, "name"),
        ({"email": "ana@example.com", "timezone": "Mars/Olympus"}, "timezone"),
        ({"email": "ana@example.com", "source": "<script>"}, "source"),
    ],
)
def test_bad_json_gets_a_field_error_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session], payload: dict, field: str
) -> None:
    response = client.post("/subscribe", json=payload)
    assert response.status_code == 400
    assert field in response.get_json()["fields"]
    assert count(sessions, Subscriber) == 0


def test_bad_form_shows_the_page_again_with_message_and_values(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = post_form(client, {"email": "ana@", "name": "Ana <b>"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "valid email address" in page
    assert 'value="ana@"' in page
    assert "Ana &lt;b&gt;" in page  # kept, and escaped
    assert count(sessions, Subscriber) == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("email=ana@example.com", "text/plain", 415),
        ("<email>ana@example.com</email>", "application/xml", 415),
        ("{not json", "application/json", 400),
        ('["ana@example.com"]', "application/json", 400),
        ("null", "application/json", 400),
    ],
)
def test_wrong_content_type_or_body(
    client: FlaskClient,
    sessions: sessionmaker[Session],
    body: str,
    content_type: str,
    status: int,
) -> None:
    response = client.post("/subscribe", data=body, content_type=content_type)
    assert response.status_code == status
    assert count(sessions, Subscriber) == 0


def test_form_signup_redirects_to_thanks(client: FlaskClient) -> None:
    response = post_form(client, {"email": "ana@example.com", "name": "Ana"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/thanks")
    assert "check your inbox" in client.get("/thanks").get_data(as_text=True).lower()


def test_known_address_gets_the_same_response(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    first = client.post("/subscribe", json={"email": "ana@example.com"})
    # Active subscriber, differently cased: the answer must not reveal that they exist.
    with sessions() as s, s.begin():
        s.scalars(select(Subscriber)).one().status = SubscriberStatus.ACTIVE
    second = client.post("/subscribe", json={"email": "ANA@EXAMPLE.COM"})
    assert (first.status_code, first.get_json()) == (second.status_code, second.get_json())
    form_new = post_form(client, {"email": "new@example.com"})
    form_known = post_form(client, {"email": "Ana@example.com"})
    assert form_new.status_code == form_known.status_code == 303
    assert form_new.headers["Location"] == form_known.headers["Location"]
    assert count(sessions, Subscriber) == 2  # no duplicate enrolment


def test_confirmation_is_resent_only_after_the_quiet_period(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    confirm_rows = (Delivery.kind == DeliveryKind.CONFIRM,)
    client.post("/subscribe", json={"email": "ana@example.com"})
    client.post("/subscribe", json={"email": "ana@example.com"})
    assert count(sessions, Delivery, *confirm_rows) == 1
    with sessions() as s, s.begin():
        subscriber = s.scalars(select(Subscriber)).one()
        subscriber.confirm_sent_at = utcnow() - timedelta(minutes=6)
    client.post("/subscribe", json={"email": "ana@example.com"})
    assert count(sessions, Delivery, *confirm_rows) == 2


def test_active_subscriber_signing_up_again_gets_no_mail(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    client.post("/subscribe", json={"email": "ana@example.com"})
    with sessions() as s, s.begin():
        sub = s.scalars(select(Subscriber)).one()
        sub.status = SubscriberStatus.ACTIVE
        sub.confirm_sent_at = utcnow() - timedelta(days=1)
    client.post("/subscribe", json={"email": "ana@example.com"})
    assert count(sessions, Delivery) == 1


def test_hosted_page_works_without_javascript(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert '<form method="post" action="/subscribe"' in page
    assert 'name="email"' in page
    assert "5. You don&#39;t have to do this alone" in page  # the lessons, listed
    assert "<script>" not in page  # only an external, optional script
