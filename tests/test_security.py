"""Abuse and hardening: rate limits, bots, origins and redirects, secrets, headers, bad
input, logs, retention and erasure."""

from __future__ import annotations

import logging
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import idna
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from course.app import create_app
from course.config import ConfigError, Settings, parse_origin
from course.logs import MaskingFilter, install_log_masking, mask
from course.models import (
    Base,
    Delivery,
    DeliveryKind,
    Event,
    EventKind,
    LessonProgress,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from course.operators import create_operator
from course.privacy import erase, purge_pending
from course.progress import record_event
from course.render import Reader as MailReader
from course.render import Renderer
from course.security import form_age, form_stamp, safe_next_url, url_origin
from course.subscriptions import (
    MAX_CONFIRMATIONS_PER_DAY,
    ConfirmationCaps,
    SignupData,
    confirm,
    subscribe,
    unsubscribe,
)
from tests.conftest import (
    REDIS_URL,
    SECRET,
    FakeClock,
    courses_for,
    make_config,
    outbox_messages,
)
from tests.helpers import confirm_like_a_person, forms, html_part, link, parse, text_part
from tests.test_admin import PASSWORD, csrf_from
from tests.test_links import enrol, tick

ALLOWED = "https://yourpractice.example"
BASE = "https://course.example.org"  # COURSE_BASE_URL in make_config

TABLES = (Subscriber, Delivery, LessonProgress, Event)


@pytest.fixture
def app_factory(tmp_path: Path, sqlite_url: str) -> Iterator[Callable[..., Flask]]:
    """Apps on the test database with settings of the test's choosing."""
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        application = create_app(make_config(tmp_path, sqlite_url, **overrides))
        apps.append(application)
        return application

    yield make
    for application in apps:
        application.extensions["course"].engine.dispose()


@pytest.fixture
def site_app(app_factory: Callable[..., Flask]) -> Flask:
    """An app that allows the practice's site as an origin."""
    return app_factory(ALLOWED_ORIGINS=[ALLOWED])


def counts(app: Flask) -> dict[str, int]:
    """Rows in every table that holds reader data."""
    with app.extensions["course"].sessions() as s:
        return {
            m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0) for m in TABLES
        }


def emails(app: Flask) -> list[str]:
    with app.extensions["course"].sessions() as s:
        return sorted(s.scalars(select(Subscriber.email)))


def hosted_form(client: FlaskClient, **kwargs: Any) -> dict[str, str]:
    """The hidden fields of the hosted form: CSRF token and time stamp."""
    page = client.get("/", **kwargs).get_data(as_text=True)
    form = forms(page)[0]
    fields = {k: v for k, v in form.fields.items() if k in ("csrf_token", "started")}
    assert set(fields) == {"csrf_token", "started"}, page
    return fields


def ip(address: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": address}}


# -- rate limits ------------------------------------------------------------------------------


def limit_keys(app: Flask, store: dict[str, str]) -> list[str]:
    """The keys the app's limiter holds in its store (memory or Redis)."""
    storage = app.extensions["course_limiter"].storage
    if store["RATELIMIT_STORAGE_URL"].startswith("memory"):
        return [str(key) for key in storage.storage]
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        prefix = store["RATELIMIT_KEY_PREFIX"]
        return [key.decode() for key in client.scan_iter(match=f"*{prefix}*")]
    finally:
        client.close()


def test_subscribe_is_limited_per_client_address(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    app = app_factory(
        SUBSCRIBE_LIMIT_PER_CLIENT="3 per minute",
        SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="100 per minute",
        **limit_store,
    )
    client = app.test_client()
    codes = [
        client.post("/subscribe", json={"email": f"p{i}@example.com"}, **ip("203.0.113.5"))
        for i in range(4)
    ]
    assert [r.status_code for r in codes] == [202, 202, 202, 429]
    assert "Too many attempts" in codes[3].get_json()["error"]
    assert "Retry-After" in codes[3].headers
    page = client.post("/subscribe", data={"email": "q@example.com"}, **ip("203.0.113.5"))
    assert page.status_code == 429 and "Too many attempts" in page.get_data(as_text=True)
    assert "<!doctype html>" in page.get_data(as_text=True)
    # Another client is not affected.
    other = client.post("/subscribe", json={"email": "r@example.com"}, **ip("203.0.113.6"))
    assert other.status_code == 202
    assert emails(app) == ["p0@example.com", "p1@example.com", "p2@example.com", "r@example.com"]
    assert any(limit_store["RATELIMIT_KEY_PREFIX"] in key for key in limit_keys(app, limit_store))


def test_nobody_can_block_a_persons_own_signup_by_asking_for_their_address(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    """There is no limit per target address that answers 429: requests for someone's
    address from anywhere never stop their own signup. What protects their inbox is the
    cap on confirmation emails per mailbox, which variants of the address share."""
    app = app_factory(
        SUBSCRIBE_LIMIT_PER_CLIENT="1000 per minute",
        SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="1000 per minute",
        CONFIRM_RESEND_SECONDS=0,
        **limit_store,
    )
    client = app.test_client()
    variants = ["victim@gmail.com", "Victim+x@gmail.com", "v.i.c.t.i.m@googlemail.com"]
    codes = [
        client.post("/subscribe", json={"email": variants[i % 3]}, **ip(f"198.51.100.{i}"))
        for i in range(1, 31)
    ]
    assert {c.status_code for c in codes} == {202}
    # The person, on our form, is not refused either: the same answer as always.
    fields = hosted_form(client)
    own = client.post(
        "/subscribe", data={**fields, "email": "victim@gmail.com"}, **ip("203.0.113.77")
    )
    assert own.status_code == 303 and own.headers["Location"] == "/thanks"
    # All variants together got 3 confirmation emails (and 3 enrolments were created).
    assert confirm_rows(app.extensions["course"].sessions) == 3
    # Nothing about the address is in the rate-limit store.
    keys = limit_keys(app, limit_store)
    assert not any("victim" in key or "gmail" in key for key in keys)


def test_admin_login_is_limited_per_client_and_per_account(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    app = app_factory(**limit_store)
    with app.extensions["course"].sessions() as s, s.begin():
        create_operator(s, "op@harbor.example.org", PASSWORD, "UTC")

    def attempt(client: FlaskClient, address: str, password: str = "wrong password!") -> int:
        token = csrf_from(client.get("/admin/login", **ip(address)).get_data(as_text=True))
        data = {"email": "op@harbor.example.org", "password": password, "csrf_token": token}
        return client.post("/admin/login", data=data, **ip(address)).status_code

    client = app.test_client()
    assert [attempt(client, "192.0.2.1") for _ in range(6)] == [401] * 5 + [429]
    # Per account: wrong passwords from many addresses, then even the right one waits.
    other = app_factory(
        **{**limit_store, "RATELIMIT_KEY_PREFIX": limit_store["RATELIMIT_KEY_PREFIX"] + "b"}
    )
    # (a second app on the same database, with counters of its own)
    spread = [attempt(other.test_client(), f"192.0.2.{i}") for i in range(10, 21)]
    assert spread == [401] * 10 + [429]
    assert attempt(other.test_client(), "192.0.2.99", PASSWORD) == 429


def test_several_workers_share_counters_only_through_redis(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    """Two apps stand for two gunicorn workers with the same configuration."""
    config = {"SUBSCRIBE_LIMIT_PER_CLIENT": "2 per minute", **limit_store}
    first, second = app_factory(**config), app_factory(**config)
    for i in range(2):
        assert first.test_client().post("/subscribe", json={"email": f"w{i}@example.com"})
    shared = limit_store["RATELIMIT_STORAGE_URL"].startswith("redis")
    status = second.test_client().post("/subscribe", json={"email": "w9@example.com"}).status_code
    assert status == (429 if shared else 202)


def test_a_limit_store_that_is_down_falls_back_to_memory(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(
        RATELIMIT_STORAGE_URL="redis://127.0.0.1:1/0", SUBSCRIBE_LIMIT_PER_CLIENT="2 per minute"
    )
    client = app.test_client()
    codes = [
        client.post("/subscribe", json={"email": f"d{i}@example.com"}).status_code for i in range(3)
    ]
    assert codes == [202, 202, 429]  # no 500, and still limited


def test_the_limit_settings_are_checked(app_factory: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError, match="SUBSCRIBE_LIMIT_PER_CLIENT"):
        app_factory(SUBSCRIBE_LIMIT_PER_CLIENT="lots")


def test_behind_a_proxy_the_forwarded_client_address_is_limited(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(PROXY_COUNT=1, SUBSCRIBE_LIMIT_PER_CLIENT="1 per minute")
    client = app.test_client()

    def post(forwarded: str, email: str) -> int:
        headers = {"X-Forwarded-For": forwarded}
        return client.post(
            "/subscribe", json={"email": email}, headers=headers, **ip("127.0.0.1")
        ).status_code

    assert post("203.0.113.1", "a@example.com") == 202
    assert post("203.0.113.2", "b@example.com") == 202  # another client behind the proxy
    assert post("203.0.113.1", "c@example.com") == 429


# -- bots: honeypot and fill time -------------------------------------------------------------


def test_the_hosted_form_carries_token_stamp_and_a_hidden_honeypot(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert hosted_form(client)
    honeypot = re.search(r'<div class="hp" hidden aria-hidden="true">(.*?)</div>', page, re.S)
    assert honeypot and 'name="website"' in honeypot.group(1)
    assert 'tabindex="-1"' in honeypot.group(1) and 'autocomplete="off"' in honeypot.group(1)


def test_a_filled_honeypot_gets_a_persons_answer_and_stores_nothing(site_app: Flask) -> None:
    client = site_app.test_client()
    origin = {"Origin": ALLOWED}
    person = client.post("/subscribe", data={"email": "ana@example.com"}, headers=origin)
    bot = client.post(
        "/subscribe",
        data={"email": "bot@example.com", "website": "https://spam.example"},
        headers=origin,
    )
    assert (bot.status_code, bot.headers["Location"], bot.data) == (
        person.status_code,
        person.headers["Location"],
        person.data,
    )
    json_person = client.post("/subscribe", json={"email": "bo@example.com"})
    json_bot = client.post("/subscribe", json={"email": "bot2@example.com", "website": "x"})
    assert (json_bot.status_code, json_bot.data) == (json_person.status_code, json_person.data)
    assert emails(site_app) == ["ana@example.com", "bo@example.com"]
    assert counts(site_app)["deliveries"] == 2


def test_a_form_sent_faster_than_a_person_types_is_dropped(
    app_factory: Callable[..., Flask],
) -> None:
    # 10 minutes, so "just now" is too fast however slow the machine running the test is.
    app = app_factory(SIGNUP_MIN_SECONDS=600)
    keys = app.extensions["course"].settings.secret_keys
    client = app.test_client()

    def post(email: str, stamp: str | None) -> Any:
        fields = hosted_form(client)
        data = {"email": email, "csrf_token": fields["csrf_token"]}
        if stamp is not None:
            data["started"] = stamp
        return client.post("/subscribe", data=data)

    fresh = hosted_form(client)["started"]  # the page's own stamp: issued just now
    old = form_stamp(keys, issued_at=time.time() - 3600)
    answers = {
        "fast@example.com": post("fast@example.com", fresh),
        "recent@example.com": post("recent@example.com", form_stamp(keys, time.time() - 60)),
        "forged@example.com": post("forged@example.com", old[:-3] + "abc"),
        "foreign@example.com": post("foreign@example.com", form_stamp(["x" * 40], 1_000_000)),
        "slow@example.com": post("slow@example.com", old),
        "nostamp@example.com": post("nostamp@example.com", None),
    }
    assert {r.status_code for r in answers.values()} == {303}
    assert {r.headers["Location"] for r in answers.values()} == {"/thanks"}
    # Our own form always carries its stamp: one without it was edited by a program.
    assert emails(app) == ["slow@example.com"]


def test_form_age_uses_an_injectable_clock() -> None:
    keys = (SECRET,)
    stamp = form_stamp(keys, issued_at=1_000_000)
    assert form_age(keys, stamp, now=1_000_005) == 5
    assert form_age(("another-key-" * 4,), stamp, now=1_000_005) is None
    for bad in ("", "x", stamp + "x", 12, None, "a" * 500):
        assert form_age(keys, bad, now=1_000_005) is None


def test_the_minimum_fill_time_defaults_to_three_seconds_and_zero_in_development(
    app_factory: Callable[..., Flask],
) -> None:
    assert (
        app_factory(SIGNUP_MIN_SECONDS=None).extensions["course"].settings.min_signup_seconds == 3
    )
    dev = app_factory(ENV="development", SIGNUP_MIN_SECONDS=None)
    assert dev.extensions["course"].settings.min_signup_seconds == 0


# -- at most three confirmations a day --------------------------------------------------------


CAPS = ConfirmationCaps()  # the signup form's caps (an import has none)


def confirm_rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        query = select(func.count()).select_from(Delivery)
        return int(s.scalar(query.where(Delivery.kind == DeliveryKind.CONFIRM)) or 0)


def test_at_most_three_confirmations_per_address_a_day(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    data = SignupData(email="ana@example.com", name=None, timezone=None, source=None)

    def sign_up() -> None:
        with sessions() as s, s.begin():
            subscribe(
                s, data, now=clock(), default_timezone="UTC", resend_after=timedelta(0), caps=CAPS
            )

    for _ in range(6):
        sign_up()
        clock.advance(minutes=10)
    assert confirm_rows(sessions) == MAX_CONFIRMATIONS_PER_DAY == 3
    clock.advance(hours=23)  # 23 h 50 min after the second one: still inside its day
    sign_up()
    assert confirm_rows(sessions) == 4  # only the first has left the 24 h window
    sign_up()
    assert confirm_rows(sessions) == 4


def test_the_cap_also_holds_for_an_address_that_left(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    data = SignupData(email="ana@example.com", name=None, timezone=None, source=None)
    with sessions() as s, s.begin():
        for _ in range(3):
            subscriber = subscribe(
                s, data, now=clock(), default_timezone="UTC", resend_after=timedelta(0), caps=CAPS
            )
        unsubscribe(s, subscriber, clock())
    with sessions() as s, s.begin():
        again = subscribe(
            s, data, now=clock(), default_timezone="UTC", resend_after=timedelta(0), caps=CAPS
        )
        assert again.status == SubscriberStatus.UNSUBSCRIBED  # nothing changed
    assert confirm_rows(sessions) == 3


def test_the_web_answer_stays_the_same_when_the_cap_is_reached(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(CONFIRM_RESEND_SECONDS=0, SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="100 per minute")
    client = app.test_client()
    answers = [client.post("/subscribe", json={"email": "ana@example.com"}) for _ in range(5)]
    assert {(r.status_code, r.data) for r in answers} == {(answers[0].status_code, answers[0].data)}
    assert confirm_rows(app.extensions["course"].sessions) == 3


# -- origins, CORS and redirects --------------------------------------------------------------

LOOKALIKE_ORIGINS = [
    "https://yourpractice.example.evil.com",
    "https://evil.com",
    "https://evilyourpractice.example",
    "https://sub.yourpractice.example",
    "http://yourpractice.example",
    "https://yourpractice.example:8443",
    "https://yourpractice.example.",
    "https://yourpractice.example@evil.com",
    "https://evil.com@yourpractice.example",
    "https://yourpractice.example/",
    "https://yourpractice.example\\.evil.com",
    "//yourpractice.example",
    "https:yourpractice.example",
    "yourpractice.example",
    "https://" + idna.encode("yourpractіce.example").decode(),  # Cyrillic і
    "*",
    "",
]


def test_preflight_from_an_allowed_origin(site_app: Flask) -> None:
    response = site_app.test_client().options(
        "/subscribe",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("origin", [*LOOKALIKE_ORIGINS, "null"])
def test_preflight_from_any_other_origin_is_refused(site_app: Flask, origin: str) -> None:
    response = site_app.test_client().options(
        "/subscribe", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


def test_options_without_origin_is_not_a_preflight(site_app: Flask) -> None:
    response = site_app.test_client().options("/subscribe")
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("origin", [ALLOWED, "HTTPS://YourPractice.Example", ALLOWED + ":443"])
def test_json_from_an_allowed_origin_can_read_the_answer(site_app: Flask, origin: str) -> None:
    response = site_app.test_client().post(
        "/subscribe", json={"email": "ana@example.com"}, headers={"Origin": origin}
    )
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    bad = site_app.test_client().post(
        "/subscribe", json={"email": "nope"}, headers={"Origin": origin}
    )
    assert bad.status_code == 400 and bad.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert emails(site_app) == ["ana@example.com"]


@pytest.mark.parametrize("origin", [*LOOKALIKE_ORIGINS, "null"])
def test_json_from_any_other_origin_is_refused(site_app: Flask, origin: str) -> None:
    response = site_app.test_client().post(
        "/subscribe", json={"email": "ana@example.com"}, headers={"Origin": origin}
    )
    assert response.status_code == 403
    assert "COURSE_ALLOWED_ORIGINS" in response.get_json()["error"]
    assert "Access-Control-Allow-Origin" not in response.headers
    assert counts(site_app)["subscribers"] == 0


def test_json_without_an_origin_and_from_our_own_pages_is_accepted(site_app: Flask) -> None:
    client = site_app.test_client()
    assert client.post("/subscribe", json={"email": "a@example.com"}).status_code == 202
    ours = client.post("/subscribe", json={"email": "b@example.com"}, headers={"Origin": BASE})
    assert ours.status_code == 202 and "Access-Control-Allow-Origin" not in ours.headers


def test_a_form_from_an_allowed_origin_needs_no_csrf_token(site_app: Flask) -> None:
    client = site_app.test_client()
    response = client.post(
        "/subscribe", data={"email": "ana@example.com"}, headers={"Origin": ALLOWED}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/thanks"
    # An old browser that sends only a Referer from the practice's page.
    referred = client.post(
        "/subscribe",
        data={"email": "bo@example.com"},
        headers={"Referer": ALLOWED + "/course?x=1"},
    )
    assert referred.status_code == 303
    assert emails(site_app) == ["ana@example.com", "bo@example.com"]


@pytest.mark.parametrize("origin", [o for o in LOOKALIKE_ORIGINS if o])
def test_a_form_from_any_other_origin_is_refused(site_app: Flask, origin: str) -> None:
    client = site_app.test_client()
    token = hosted_form(client)["csrf_token"]  # even with a valid token
    data = {"email": "ana@example.com", "csrf_token": token}
    response = client.post("/subscribe", data=data, headers={"Origin": origin})
    assert response.status_code == 403
    assert "not accepted from this website" in response.get_data(as_text=True)
    assert counts(site_app)["subscribers"] == 0


@pytest.mark.parametrize(
    "referer",
    ["https://evil.com/page", "https://yourpractice.example.evil.com/", "not a url", "//x"],
)
def test_a_form_with_a_foreign_referer_is_refused(site_app: Flask, referer: str) -> None:
    response = site_app.test_client().post(
        "/subscribe", data={"email": "ana@example.com"}, headers={"Referer": referer}
    )
    assert response.status_code == 403
    assert counts(site_app)["subscribers"] == 0


@pytest.mark.parametrize("headers", [{}, {"Origin": "null"}, {"Origin": BASE}])
def test_our_own_form_must_carry_its_csrf_token(site_app: Flask, headers: dict[str, str]) -> None:
    client = site_app.test_client()
    refused = client.post(
        "/subscribe", data={"email": "ana@example.com", "name": "Ana"}, headers=headers
    )
    assert refused.status_code == 400
    page = refused.get_data(as_text=True)
    assert "send the form once more" in page and 'value="ana@example.com"' in page
    foreign_token = hosted_form(site_app.test_client())["csrf_token"]  # another visitor's
    data = {"email": "ana@example.com", "csrf_token": foreign_token}
    assert client.post("/subscribe", data=data, headers=headers).status_code == 400
    assert counts(site_app)["subscribers"] == 0
    data = {**hosted_form(client), "email": "ana@example.com"}
    assert client.post("/subscribe", data=data, headers=headers).status_code == 303
    assert emails(site_app) == ["ana@example.com"]


def test_the_hosted_form_works_over_https_without_a_referer(site_app: Flask) -> None:
    """Our pages send no Referer (Referrer-Policy: no-referrer), so the CSRF check must not
    want one, even on https."""
    client = site_app.test_client()
    fields = hosted_form(client, base_url=BASE)
    response = client.post(
        "/subscribe",
        data={**fields, "email": "ana@example.com"},
        headers={"Origin": "null"},
        base_url=BASE,
    )
    assert response.status_code == 303
    assert emails(site_app) == ["ana@example.com"]


GOOD_NEXT = [
    (ALLOWED + "/thanks", ALLOWED + "/thanks"),
    (ALLOWED, ALLOWED + "/"),
    (
        "HTTPS://YourPractice.EXAMPLE/Course/Thanks?a=1&b=2#top",
        ALLOWED + "/Course/Thanks?a=1&b=2#top",
    ),
    (ALLOWED + ":443/thanks", ALLOWED + "/thanks"),
    (ALLOWED + "//evil.com", ALLOWED + "//evil.com"),  # a path on the practice's own site
    (BASE + "/thanks", BASE + "/thanks"),
]

BAD_NEXT = [
    "https://yourpractice.example.evil.com/thanks",
    "https://evil.com/",
    "//evil.com/",
    "///evil.com/",
    "https:evil.com",
    "https:/evil.com",
    "https:///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "https://evil.com\\@yourpractice.example/",
    "https://yourpractice.example\\@evil.com/",
    "https://yourpractice.example@evil.com/",
    "https://user:pass@yourpractice.example/",
    "https://yourpractice.example%40evil.com/",
    "http://yourpractice.example/thanks",
    "https://yourpractice.example:8443/thanks",
    "https://yourpractice.example:0/",
    "https://yourpractice.example:99999/",
    "https://yourpractice.example:/",
    "https://yourpractice.example./thanks",
    "https://yourpractіce.example/thanks",  # Cyrillic і
    "https://" + idna.encode("yourpractіce.example").decode() + "/thanks",
    "https://yourpractice.example\t.evil.com/",
    "https://yourpractice.example\n.evil.com/",
    " https://yourpractice.example/",
    "https://evil.com#https://yourpractice.example",
    "https://evil.com/?u=https://yourpractice.example",
    "javascript:alert(1)",
    "JaVaScRiPt://yourpractice.example/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://yourpractice.example/",
    "/thanks",
    "thanks",
    "https://yourpractice.example/" + "x" * 3000,
]


@pytest.mark.parametrize(("next_url", "location"), GOOD_NEXT)
def test_next_leads_back_to_an_allowed_site(site_app: Flask, next_url: str, location: str) -> None:
    response = site_app.test_client().post(
        "/subscribe",
        data={"email": "ana@example.com", "next": next_url},
        headers={"Origin": ALLOWED},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == location
    assert emails(site_app) == ["ana@example.com"]


@pytest.mark.parametrize("next_url", BAD_NEXT)
def test_next_never_leads_anywhere_else(site_app: Flask, next_url: str) -> None:
    response = site_app.test_client().post(
        "/subscribe",
        data={"email": "ana@example.com", "next": next_url},
        headers={"Origin": ALLOWED},
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "next" in response.get_data(as_text=True)
    assert counts(site_app)["subscribers"] == 0
    assert safe_next_url(next_url, (ALLOWED, BASE)) is None


def test_next_survives_a_correction_on_our_page(site_app: Flask) -> None:
    """A typo on the practice's form shows our page; fixing it there still leads back."""
    client = site_app.test_client()
    page = client.post(
        "/subscribe",
        data={"email": "ana@", "next": ALLOWED + "/thanks"},
        headers={"Origin": ALLOWED},
    )
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert f'name="next" value="{ALLOWED}/thanks"' in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token
    fixed = client.post(
        "/subscribe",
        data={"email": "ana@example.com", "next": ALLOWED + "/thanks", "csrf_token": token[1]},
        headers={"Origin": "null"},
    )
    assert fixed.status_code == 303 and fixed.headers["Location"] == ALLOWED + "/thanks"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://yourpractice.example", ALLOWED),
        ("HTTPS://YOURPRACTICE.EXAMPLE", ALLOWED),
        ("https://yourpractice.example:443", ALLOWED),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://localhost:80", "http://localhost"),
        ("https://[::1]:8443", "https://[::1]:8443"),
    ],
)
def test_parse_origin(value: str, expected: str | None) -> None:
    assert parse_origin(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "https://yourpractice.example.",
        "https://yourpractice.example/",
        "https://yourpractice.example@evil.com",
        "https://yourpractice.example\\.evil.com",
        "https:yourpractice.example",
        "//yourpractice.example",
        "https://yourpractіce.example",
        "https://yourpractice.example:0",
        "https://yourpractice.example:65536",
        "https://your_practice.example",
        "https://-yourpractice.example",
        "ftp://yourpractice.example",
        " https://yourpractice.example",
        "https://yourpractice.example\x00",
        "null",
        "*",
        "",
    ],
)
def test_parse_origin_refuses_anything_unusual(value: str) -> None:
    assert parse_origin(value) is None


def test_url_origin_of_tricky_urls() -> None:
    assert url_origin("https://yourpractice.example:443/a?b#c") == ALLOWED
    assert url_origin("https://evil.com\\@yourpractice.example") is None
    assert url_origin("https://yourpractice.example@evil.com") is None
    assert url_origin("https:evil.com") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://yourpractice.example", (ALLOWED,)),
        ("https://a.example, https://B.example/", ("https://a.example", "https://b.example")),
        (["https://a.example:443", "https://a.example"], ("https://a.example",)),
        ("https://müller.example", ("https://xn--mller-kva.example",)),
        ("", ()),
        ([], ()),
    ],
)
def test_allowed_origins_setting(
    app_factory: Callable[..., Flask], value: Any, expected: tuple[str, ...]
) -> None:
    app = app_factory(ALLOWED_ORIGINS=value)
    assert app.extensions["course"].settings.allowed_origins == expected


def test_allowed_origins_from_the_environment_as_a_json_list(
    app_factory: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURSE_ALLOWED_ORIGINS", '["https://a.example", "https://b.example"]')
    app = app_factory()
    assert app.extensions["course"].settings.allowed_origins == (
        "https://a.example",
        "https://b.example",
    )
    monkeypatch.setenv("COURSE_ALLOWED_ORIGINS", "https://c.example,https://d.example")
    assert app_factory().extensions["course"].settings.allowed_origins == (
        "https://c.example",
        "https://d.example",
    )


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "https://*.example",
        "https://a.example/path",
        "a.example",
        "ftp://a.example",
        "https://user@a.example",
        "https://a.example.",
    ],
)
def test_allowed_origins_setting_refuses_what_is_not_an_origin(
    app_factory: Callable[..., Flask], value: str
) -> None:
    with pytest.raises(ConfigError, match="COURSE_ALLOWED_ORIGINS"):
        app_factory(ALLOWED_ORIGINS=[value])


# -- the secret key ---------------------------------------------------------------------------

WEAK_KEYS = [
    None,
    "",
    "short-secret",
    "x" * 31 + "!",
    "k" * 40,
    "changeme" * 4,
    "secret-secret-secret-secret-secret",
    "your-secret-key-please-change-me-now",
    "generate-with-python-c-import-secrets-print-secrets-token-hex-32",
    "please-change-me-to-a-secret-abcdef",  # long, but mostly placeholder words
    "a8Kd93jfQ0z7Lm2xPq9wT5",  # random, but too short
    "abababababababababababababababab",
    "test-key-test-key-test-key-test-key",
]


@pytest.mark.parametrize("key", WEAK_KEYS)
def test_the_app_refuses_to_start_without_a_strong_secret(
    app_factory: Callable[..., Flask], key: str | None
) -> None:
    with pytest.raises(ConfigError, match="COURSE_SECRET_KEY") as info:
        app_factory(ENV="production", SECRET_KEY=key)
    if key:
        assert key not in str(info.value)  # the message may end up in logs


def test_strong_secrets_and_development_are_accepted(app_factory: Callable[..., Flask]) -> None:
    app_factory(ENV="production", SECRET_KEY=secrets.token_hex(32))
    app_factory(ENV="production", SECRET_KEY=secrets.token_urlsafe(32))
    app_factory()  # the test configuration's 48-character key
    app_factory(ENV="development", SECRET_KEY="changeme")  # a developer's laptop


def test_the_course_command_refuses_a_weak_secret(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env.update(COURSE_SECRET_KEY="changeme", COURSE_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    course = Path(sys.executable).parent / "course"
    result = subprocess.run(
        [str(course), "scheduler"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "COURSE_SECRET_KEY is too weak" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("weak", WEAK_KEYS[2:])
def test_fallback_keys_must_be_as_strong_as_the_main_key(
    app_factory: Callable[..., Flask], weak: str
) -> None:
    """An old key verifies links and the admin's cookie just as the main key does."""
    strong_old = secrets.token_hex(32)
    with pytest.raises(
        ConfigError, match="COURSE_SECRET_KEY_FALLBACKS entry 2 is too weak"
    ) as info:
        app_factory(SECRET_KEY_FALLBACKS=[strong_old, weak])
    assert weak not in str(info.value)


def test_strong_fallback_keys_verify_links_and_cookies(app_factory: Callable[..., Flask]) -> None:
    older, old = secrets.token_hex(32), secrets.token_hex(32)
    app = app_factory(SECRET_KEY_FALLBACKS=f"{older},{old}")
    assert app.config["SECRET_KEY_FALLBACKS"] == [old, older]  # Flask tries the newest first
    assert app.extensions["course"].settings.secret_keys == (older, old, SECRET)


# -- headers and cookies ----------------------------------------------------------------------


def csp(response: Any) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {d.split()[0]: " ".join(d.split()[1:]) for d in policy.split("; ")}


def assert_security_headers(response: Any, https: bool = True) -> None:
    policy = csp(response)
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["style-src-attr"] == "'unsafe-inline'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["form-action"].startswith("'self'")
    assert "unsafe-eval" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    if https:
        assert (
            response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        )
    else:
        assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/", {}),
        ("get", "/thanks", {}),
        ("get", "/healthz", {}),
        ("get", "/static/site.css", {}),
        ("get", "/static/timezone.js", {}),
        ("get", "/admin/login", {}),
        ("get", "/no-such-page", {}),
        ("get", "/confirm/not-a-token", {}),
        ("get", "/me/not-a-token/data.json", {"headers": {"Accept": "application/json"}}),
        ("get", "/dev/outbox", {}),
        ("post", "/subscribe", {"json": {"email": "ana@example.com"}}),
        ("post", "/subscribe", {"json": {"email": "bad"}}),
        ("post", "/subscribe", {"data": b"x" * 70_000, "content_type": "application/json"}),
        ("options", "/subscribe", {"headers": {"Origin": ALLOWED}}),
        ("put", "/subscribe", {}),
    ],
)
def test_every_response_carries_the_security_headers(
    site_app: Flask, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = getattr(site_app.test_client(), method)(path, **kwargs)
    response.close()  # static files are streamed
    assert_security_headers(response)
    if path.startswith("/static"):
        assert response.headers.get("Cache-Control") != "no-store"
    else:
        assert response.headers["Cache-Control"] == "no-store"


def test_reader_and_admin_pages_carry_the_headers_too(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com")
    for path in ("done", "checkin", "view", "me", "pause", "unsubscribe", "book"):
        assert_security_headers(client.get(reader.url(path)))
    assert_security_headers(client.post(reader.url("unsubscribe")))
    admin = logged_in_admin(app)
    for path in ("/admin/", "/admin/subscribers", f"/admin/subscribers/{reader.public_id}"):
        assert_security_headers(admin.get(path))


def test_a_rate_limited_answer_carries_the_headers(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(SUBSCRIBE_LIMIT_PER_CLIENT="1 per minute")
    client = app.test_client()
    client.post("/subscribe", json={"email": "a@example.com"})
    limited = client.post("/subscribe", json={"email": "b@example.com"})
    assert limited.status_code == 429
    assert_security_headers(limited)


def test_form_action_lists_the_allowed_origins(site_app: Flask) -> None:
    assert csp(site_app.test_client().get("/"))["form-action"] == f"'self' {ALLOWED}"


def test_over_plain_http_there_is_no_hsts_and_no_secure_cookie(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(BASE_URL="http://127.0.0.1:5000")
    response = app.test_client().get("/")
    assert_security_headers(response, https=False)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_the_session_cookie_is_httponly_samesite_and_secure(client: FlaskClient) -> None:
    cookie = client.get("/").headers["Set-Cookie"]  # the hosted form's CSRF token
    assert cookie.startswith("course_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


# -- bad input --------------------------------------------------------------------------------

FIELDS = ["email", "name", "timezone", "source"]


def good_signup(**override: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "email": "ana@example.com",
        "name": "Ana",
        "timezone": "Europe/Berlin",
        "source": "website",
    }
    data.update(override)
    return data


def post_both_ways(app: Flask, data: dict[str, Any]) -> list[Any]:
    """The same signup as JSON and as a form from the practice's site."""
    client = app.test_client()
    form = {k: v for k, v in data.items() if isinstance(v, str)}
    return [
        client.post("/subscribe", json=data),
        client.post("/subscribe", data=form, headers={"Origin": ALLOWED}),
    ]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    "payload",
    [
        "\r\nBcc: victim@example.com",
        "\nX-Injected: yes",
        "\rSubject: hi",
        "%0d%0aBcc: victim@example.com\r\nX: y",
        "\u2028Bcc: x",
        "\u0085Bcc: x",
        "a\x00b",
        "\x1b[31m",
    ],
)
def test_header_injection_in_any_field_is_refused(
    site_app: Flask, field: str, payload: str
) -> None:
    value = "ana@example.com" + payload if field == "email" else good_signup()[field] + payload
    for response in post_both_ways(site_app, good_signup(**{field: value})):
        assert response.status_code == 400
        if response.is_json:
            assert field in response.get_json()["fields"]
    assert counts(site_app)["subscribers"] == 0


@pytest.mark.parametrize("field", FIELDS)
def test_very_long_values_are_refused(site_app: Flask, field: str) -> None:
    for response in post_both_ways(site_app, good_signup(**{field: "a" * 20_000})):
        assert response.status_code == 400
    assert counts(site_app)["subscribers"] == 0


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [42, 1.5, True, [], ["ana@example.com"], {"a": "b"}])
def test_wrong_json_types_are_refused(
    client: FlaskClient, app: Flask, field: str, value: Any
) -> None:
    response = client.post("/subscribe", json=good_signup(**{field: value}))
    assert response.status_code == 400
    assert field in response.get_json()["fields"]
    assert counts(app)["subscribers"] == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"email=ana%40example.com&name=%FF%FEAna", "application/x-www-form-urlencoded"),
        (b"email=ana%FF%40example.com", "application/x-www-form-urlencoded"),
        (b'{"email": "ana@example.com", "name": "\xff\xfe"}', "application/json"),
        (b'{"email": "ana\xc3@example.com"}', "application/json"),
        (b"\xef\xbb\xbf\xff", "application/json"),
        (b"[" * 50_000, "application/json"),
        (b'{"email": ' * 5_000, "application/json"),
        (
            b'--x\r\nContent-Disposition: form-data; name="email"\r\n\r\n\xff\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
        ),
        (b"--x\r\n\r\n", "multipart/form-data; boundary=x"),
        (b"email=ana@example.com", "multipart/form-data"),  # no boundary
        (b"\x00\x01\x02", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
    ],
)
def test_wrong_encodings_and_broken_bodies_get_a_clear_400(
    site_app: Flask, body: bytes, content_type: str
) -> None:
    response = site_app.test_client().post(
        "/subscribe", data=body, content_type=content_type, headers={"Origin": ALLOWED}
    )
    assert response.status_code == 400
    assert counts(site_app)["subscribers"] == 0


def test_unreadable_form_text_names_the_field(site_app: Flask) -> None:
    response = site_app.test_client().post(
        "/subscribe",
        data=b"email=ana%40example.com&name=%FF%FEAna",
        content_type="application/x-www-form-urlencoded",
        headers={"Origin": ALLOWED},
    )
    assert "could not be read" in response.get_data(as_text=True)


def test_unknown_fields_are_ignored(site_app: Flask) -> None:
    extra = {"status": "active", "confirmed": True, "is_admin": True, "public_id": "mine"}
    response = site_app.test_client().post("/subscribe", json=good_signup(**extra))
    assert response.status_code == 202
    form = site_app.test_client().post(
        "/subscribe",
        data={"email": "bo@example.com", "status": "active", "public_id": "mine"},
        headers={"Origin": ALLOWED},
    )
    assert form.status_code == 303
    with site_app.extensions["course"].sessions() as s:
        rows = s.scalars(select(Subscriber)).all()
    assert {r.status for r in rows} == {SubscriberStatus.PENDING}
    assert all(r.public_id != "mine" for r in rows)


@pytest.mark.parametrize("content_type", ["application/json", "form", "multipart"])
def test_an_oversized_body_gets_a_friendly_413(
    site_app: Flask, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = site_app.test_client()
    big = "x" * (70 * 1024)
    if content_type == "application/json":
        response = client.post("/subscribe", json={"email": "ana@example.com", "name": big})
        assert response.status_code == 413
        assert "more data than this form accepts" in response.get_json()["error"]
    else:
        kwargs: dict[str, Any] = {"headers": {"Origin": ALLOWED}}
        if content_type == "multipart":
            kwargs["content_type"] = "multipart/form-data"
        response = client.post("/subscribe", data={"email": "a@example.com", "name": big}, **kwargs)
        assert response.status_code == 413
        assert "more data than this form accepts" in response.get_data(as_text=True)
    assert counts(site_app)["subscribers"] == 0
    # A big body is not mistaken for a broken rate-limit store.
    assert "falling back" not in caplog.text
    assert client.post("/subscribe", json={"email": "ok@example.com"}).status_code == 202


def test_an_oversized_body_on_a_link_gets_a_413(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com")
    response = client.post(reader.url("checkin"), data={"note": "x" * (70 * 1024)})
    assert response.status_code == 413
    assert "more data" in response.get_data(as_text=True)


HOSTILE_NAME = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


def test_html_in_a_name_is_escaped_on_every_page_and_in_the_html_part(
    app: Flask, client: FlaskClient, settings: Any
) -> None:
    before = len(outbox_messages(settings))
    client.post("/subscribe", json={"email": "ana@example.com", "name": HOSTILE_NAME})
    tick(app)
    confirmation = outbox_messages(settings)[before]
    assert confirm_like_a_person(client, link(confirmation, "confirm")).status_code == 200
    tick(app)
    lesson = outbox_messages(settings)[-1]
    # The confirmation greets nobody by a name typed into the form (a spam vector).
    assert "Hello," in text_part(confirmation) and "script" not in html_part(confirmation)
    for message in (lesson,):
        html = html_part(message)
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html.replace("&quot;", "&#34;")
        assert "&amp;amp;" in html  # the ampersand of the name itself, escaped once
        assert f"Hi {HOSTILE_NAME}," in text_part(message)  # plain text shows it as written
        to = parse(message)["To"]
        assert "\n" not in str(to) and "\r" not in str(to)
    # Pages that show the name.
    admin = logged_in_admin(app, client)
    with app.extensions["course"].sessions() as s:
        pid = s.scalars(select(Subscriber.public_id)).one()
    pages = [
        admin.get(f"/admin/subscribers/{pid}"),
        admin.get("/admin/subscribers"),
        client.post("/subscribe", data={"email": "bad@", "name": HOSTILE_NAME}),
    ]
    for response in pages:
        body = response.get_data(as_text=True)
        assert "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;" in pages[0].get_data(as_text=True)
    assert "&lt;script&gt;" in pages[2].get_data(as_text=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "=?utf-8?q?Ana=0D=0ABcc:_victim@example.com?="),
        ("name", "Ana =?utf-8?b?DQpCY2M6IHg=?="),
        ("email", "=?utf-8?q?a=0D=0ABcc=3A_x?=@example.com"),
    ],
)
def test_encoded_words_that_decode_to_a_new_header_are_refused(
    site_app: Flask, field: str, value: str
) -> None:
    """Mail software decodes RFC 2047 encoded words in headers; on this Python the email
    package even writes the decoded CR/LF out as a new header line (CVE-2024-6923)."""
    for response in post_both_ways(site_app, good_signup(**{field: value})):
        assert response.status_code == 400
    assert counts(site_app)["subscribers"] == 0


def test_the_renderer_refuses_cr_lf_in_a_name(settings: Any) -> None:
    renderer = Renderer(settings, app_signer(settings))
    lessons = courses_for(settings).default()
    assert lessons is not None
    with pytest.raises(ValueError):
        renderer.build(
            "confirm",
            1,
            MailReader("pid", "a@example.com", "Ana\r\nBcc: x@example.com"),
            lessons,
            now_utc(),
        )
    message = renderer.build(
        "confirm", 1, MailReader("pid", "a@example.com", "Ana, Bcc: x"), lessons, now_utc()
    )
    headers = message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert [h for h in headers if h.lower().startswith((b"to:", b"bcc:"))] == [
        b'To: "Ana, Bcc: x" <a@example.com>'
    ]


def app_signer(settings: Any) -> Any:
    from course.tokens import Signer

    return Signer(settings.secret_keys)


def now_utc() -> Any:
    from course.models import utcnow

    return utcnow()


def logged_in_admin(app: Flask, client: FlaskClient | None = None) -> FlaskClient:
    """A client signed in as an operator (created here)."""
    with app.extensions["course"].sessions() as s, s.begin():
        if s.scalar(select(func.count()).select_from(Base.metadata.tables["operators"])) == 0:
            create_operator(s, "op@harbor.example.org", PASSWORD, "UTC")
    admin = app.test_client()
    token = csrf_from(admin.get("/admin/login").get_data(as_text=True))
    response = admin.post(
        "/admin/login",
        data={"email": "op@harbor.example.org", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    return admin


# -- privacy: no third parties, no inline script ----------------------------------------------


class _Resources(HTMLParser):
    """Collects what a page loads (src/href of link, script, img, ...) and inline script."""

    LOADING = {"link", "script", "img", "iframe", "source", "video", "audio", "embed", "object"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_script = False
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in self.LOADING:
            for attr in ("src", "href", "srcset", "data", "poster"):
                if values.get(attr):
                    self.urls.append(str(values[attr]))
        if tag == "script":
            self._in_script = True
            if not values.get("src"):
                self.inline_script = True
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        for name, value in attrs:
            if value and "javascript:" in value.lower().replace(" ", ""):
                self.handlers.append(f"{name}=javascript:")
            if name == "style" and value and re.search(r"url\(|@import", value):
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def scan(html: str) -> _Resources:
    parser = _Resources()
    parser.feed(html)
    return parser


def assert_no_third_party(html: str, where: str) -> None:
    found = scan(html)
    for url in found.urls:
        if re.match(r"(?i)^(https?:)?//", url.strip()) or "url(" in url:
            assert url.startswith(BASE + "/"), f"{where}: third-party resource {url}"
    assert not found.inline_script, f"{where}: inline script"
    assert not found.handlers, f"{where}: event handler attributes {found.handlers}"


def test_no_third_party_resources_or_inline_script_in_pages_and_emails(
    app: Flask, client: FlaskClient, settings: Any
) -> None:
    reader = enrol(app, client, "ana@example.com")
    client.get(reader.url("checkin"))
    admin = logged_in_admin(app)
    pages = {
        "/": client.get("/"),
        "/thanks": client.get("/thanks"),
        "error": client.get("/nope"),
        "bad form": client.post("/subscribe", data={"email": "x"}),
        "/dev/outbox": client.get("/dev/outbox"),
    }
    for path in ("done", "checkin", "view", "me", "pause", "unsubscribe"):
        pages[path] = client.get(reader.url(path))
    pages["me/delete"] = client.get(reader.url("me") + "/delete")
    for path in (
        "/admin/",
        "/admin/subscribers",
        f"/admin/subscribers/{reader.public_id}",
        "/admin/lessons",
        "/admin/lessons/1",
        "/admin/login",
    ):
        pages[path] = admin.get(path)
    outbox = client.get("/dev/outbox").get_data(as_text=True)
    for name in re.findall(r'href="(/dev/outbox/[^"]+)"', outbox)[:2]:
        pages[name] = client.get(name)
    for where, response in pages.items():
        assert response.status_code < 500, where
        assert_no_third_party(response.get_data(as_text=True), where)
    # Every email: the confirmation and every lesson, both as sent.
    renderer = Renderer(settings, app_signer(settings))
    lessons = app.extensions["course"].courses.current().default()
    mail_reader = MailReader(reader.public_id, "ana@example.com", "Ana")
    messages = [renderer.build("confirm", 1, mail_reader, lessons, now_utc())]
    messages += [
        renderer.build(kind, key, mail_reader, lessons, now_utc())
        for kind, key in [("lesson", k) for k in lessons.content.order]
        + [("completion", 0), ("followup", 0)]
    ]
    messages += outbox_messages(settings)
    for message in messages:
        html = html_part(message)
        assert_no_third_party(html, parse(message)["Subject"])
        assert "<img" not in html.lower()  # no tracking pixels, no remote images
    css = (Path(__file__).resolve().parent.parent / "course" / "static" / "site.css").read_text()
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", css)


# -- logs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sent to ana.lopez@example.com ok", "sent to a***@example.com ok"),
        ("from o'brien+course@example.com", "from o***@example.com"),
        ("to=a=b@example.com;", "to=a=b***@example.com;"),
        ('"GET /?email=ana%40example.com HTTP/1.1"', '"GET /?email=a***%40example.com HTTP/1.1"'),
        ("<jürgen@müller.de>", "<j***@müller.de>"),
        ("550 5.1.1 <Bo+x@Sub.Example.co.uk>: no", "550 5.1.1 <B***@Sub.Example.co.uk>: no"),
        ('"GET /confirm/WzEsMl0.abc-_x HTTP/1.1" 200', '"GET /confirm/[token] HTTP/1.1" 200'),
        ("POST /me/eyJh.sig/schedule", "POST /me/[token]/schedule"),
        ("GET /book/tok.sig?utm=1", "GET /book/[token]?utm=1"),
        ("GET /unsubscribe/tok.sig", "GET /unsubscribe/[token]"),
        (
            "GET /done/a /checkin/b /view/c /pause/d",
            "GET /done/[token] /checkin/[token] /view/[token] /pause/[token]",
        ),
        ("[parameters: ('ana@example.com', 'Ana Secret')]", "[parameters: hidden]"),
        ("GET /static/site.css", "GET /static/site.css"),
        ("tick worker=a due=3 sent=3", "tick worker=a due=3 sent=3"),
    ],
)
def test_mask(line: str, expected: str) -> None:
    assert mask(line) == expected


def test_access_log_lines_of_real_requests_are_masked(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    from werkzeug.serving import make_server

    reader = enrol(app, client, "ana@example.com")
    token = reader.url("me").rsplit("/", 1)[1]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with caplog.at_level(logging.INFO):
            for path in (
                f"/me/{token}",
                f"/me/{token}/data.json",
                reader.url("view"),
                "/confirm/not-a-valid-token",
                "/?source=x&email=ana.lopez%40example.com",
            ):
                try:
                    urlopen(base + path, timeout=10).read()
                except HTTPError:
                    pass
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
    access = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert len(access) == 5, access
    text = "\n".join(access)
    assert "/me/[token] HTTP" in text and "/me/[token]/data.json" in text
    assert "/view/[token]" in text and "/confirm/[token]" in text
    assert token not in caplog.text and reader.url("view").rsplit("/", 1)[1] not in caplog.text
    assert "ana.lopez" not in caplog.text and "email=a***@example.com" in text


def test_gunicorn_access_lines_and_limiter_lines_are_masked(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("gunicorn.access").info(
            '%(h)s "%(r)s" %(s)s "%(f)s"',
            {
                "h": "203.0.113.9",
                "r": "GET /unsubscribe/WyJhYmMiXQ.sIg HTTP/1.1",
                "s": "200",
                "f": "https://mail.example/?to=ana@example.com",
            },
        )
        # Flask-Limiter logs the key of a breached limit: for the admin login, an address.
        client = app.test_client()
        with app.extensions["course"].sessions() as s, s.begin():
            create_operator(s, "op@harbor.example.org", PASSWORD, "UTC")
        for i in range(11):
            token = csrf_from(client.get("/admin/login").get_data(as_text=True))
            client.post(
                "/admin/login",
                data={"email": "op@harbor.example.org", "password": "x", "csrf_token": token},
                **ip(f"192.0.2.{i}"),
            )
    assert (
        '"GET /unsubscribe/[token] HTTP/1.1" 200 "https://mail.example/?to=a***@example.com"'
        in (caplog.text)
    )
    assert "WyJhYmMiXQ" not in caplog.text
    assert "exceeded" in caplog.text and "op@harbor.example.org" not in caplog.text


def test_tracebacks_lose_addresses_and_sql_values(caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy.exc import IntegrityError

    install_log_masking()
    try:
        raise IntegrityError(
            "INSERT INTO subscribers", ("ana@example.com", "Ana Secret"), Exception("x")
        )
    except IntegrityError:
        logging.getLogger("course.test").exception("could not store bo@example.com")
    assert "ana@example.com" not in caplog.text and "Ana Secret" not in caplog.text
    assert "bo@example.com" not in caplog.text and "b***@example.com" in caplog.text
    assert "[parameters: hidden]" in caplog.text


def test_the_masking_filter_works_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    """For logging configurations (gunicorn's logconfig_dict, the CLI)."""
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "to %s via %s", ("ana@example.com", "/done/abc"), None
    )
    assert MaskingFilter().filter(record) is True
    assert record.getMessage() == "to a***@example.com via /done/[token]"


def test_installing_the_masking_twice_wraps_once() -> None:
    install_log_masking()
    factory = logging.getLogRecordFactory()
    install_log_masking()
    assert logging.getLogRecordFactory() is factory


def test_a_signup_logs_nothing_personal(site_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client = site_app.test_client()
        client.post("/subscribe", json={"email": "ana.lopez@example.com", "name": "Ana Private"})
        client.post(
            "/subscribe",
            json={"email": "bot.lopez@example.com", "name": "Bot Private", "website": "x"},
        )
    assert "ana.lopez" not in caplog.text and "Ana Private" not in caplog.text
    assert "bot.lopez" not in caplog.text and "Bot Private" not in caplog.text
    assert "signup dropped reason=honeypot" in caplog.text


# -- retention and erasure --------------------------------------------------------------------


def test_purge_pending_deletes_unconfirmed_signups_after_the_retention_period(
    sessions: sessionmaker[Session], clock: FakeClock, settings: Settings
) -> None:
    courses = courses_for(settings)

    def sign_up(email: str) -> Subscriber:
        data = SignupData(email=email, name="Someone", timezone=None, source=None)
        with sessions() as s, s.begin():
            return subscribe(
                s, data, now=clock(), default_timezone="UTC", resend_after=timedelta(0)
            )

    start = clock.now
    sign_up("old@example.com")
    returning = sign_up("returning@example.com")
    with sessions() as s, s.begin():  # confirms, leaves, and comes back later
        sub = confirm(s, returning.public_id, clock(), courses=courses, settings=settings)
        assert sub is not None
        record_event(s, sub, EventKind.DONE, clock(), lesson=1)
        unsubscribe(s, sub, clock())
    confirmed = sign_up("active@example.com")
    with sessions() as s, s.begin():
        confirm(s, confirmed.public_id, clock(), courses=courses, settings=settings)
    clock.advance(days=2)
    sign_up("boundary@example.com")  # exactly 7 days old at purge time: kept
    clock.advance(days=3)
    sign_up("returning@example.com")  # asks to come back: changes nothing before a click
    sign_up("fresh@example.com")
    clock.now = start + timedelta(days=9)
    with sessions() as s, s.begin():
        assert purge_pending(s, clock(), 7) == 1
    with sessions() as s:
        left = sorted(s.scalars(select(Subscriber.email)))
        assert left == [
            "active@example.com",
            "boundary@example.com",
            "fresh@example.com",
            "returning@example.com",
        ]
        assert s.scalar(select(func.count()).select_from(Delivery).join(Subscriber)) == s.scalar(
            select(func.count()).select_from(Delivery)
        )
    clock.now = start + timedelta(days=20)
    with sessions() as s, s.begin():
        assert purge_pending(s, clock(), 7) == 2  # boundary and fresh
    with sessions() as s:
        # The returning reader never clicked: they are still the reader who left, with
        # their history and their opt-out, not a pending signup to purge.
        left = sorted(s.scalars(select(Subscriber.email)))
        assert left == ["active@example.com", "returning@example.com"]
        returning_reader = s.scalars(
            select(Subscriber).where(Subscriber.email == "returning@example.com")
        ).one()
        assert returning_reader.status == SubscriberStatus.UNSUBSCRIBED
        done = s.scalars(select(Event).where(Event.kind == EventKind.DONE)).all()
        assert len(done) == 1 and done[0].subscriber_id == returning_reader.id
    with sessions() as s, pytest.raises(ValueError):
        purge_pending(s, clock(), 0)


def test_pending_retention_setting(app_factory: Callable[..., Flask]) -> None:
    assert app_factory().extensions["course"].settings.pending_retention_days == 7
    assert (
        app_factory(PENDING_RETENTION_DAYS=14).extensions["course"].settings.pending_retention_days
        == 14
    )
    with pytest.raises(ConfigError, match="PENDING_RETENTION_DAYS"):
        app_factory(PENDING_RETENTION_DAYS=0)


def every_value(app: Flask) -> list[str]:
    """Every value in every table, as text."""
    values: list[str] = []
    with app.extensions["course"].engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                values += [str(v) for v in row if v is not None]
    return values


def test_erase_leaves_no_personal_data_anywhere(app: Flask, client: FlaskClient) -> None:
    email, name, note = "ana.private@example.com", "Anastasia Privatename", "my very private note"
    reader = enrol(app, client, "bo@example.com")  # someone else, who stays
    client.post("/subscribe", json={"email": email, "name": name, "timezone": "Asia/Tokyo"})
    with app.extensions["course"].sessions() as s:
        pid = s.scalars(select(Subscriber.public_id).where(Subscriber.email == email)).one()
    confirm_url = f"/confirm/{app.extensions['course'].signer.dumps('confirm', pid)}"
    assert client.post(confirm_url).status_code == 200
    tick(app)
    signer = app.extensions["course"].signer
    client.get(f"/checkin/{signer.dumps('checkin', pid, 1, 'stirred')}")
    client.post(f"/checkin/{signer.dumps('checkin', pid, 1, 'stirred')}", data={"note": note})
    client.get(f"/done/{signer.dumps('done', pid, 1)}")
    client.get(f"/book/{signer.dumps('book', pid, 1)}")
    client.post(f"/me/{signer.dumps('progress', pid)}/pause")
    before = every_value(app)
    assert any(email in v for v in before) and any(note in v for v in before)
    events_before = counts(app)["events"]
    with app.extensions["course"].sessions() as s, s.begin():
        erase(s, s.scalars(select(Subscriber).where(Subscriber.email == email)).one(), (), utcnow())
    after = every_value(app)
    for secret in (email, "ana.private", name, "Privatename", note, pid):
        assert not any(secret in v for v in after), secret
    assert counts(app)["events"] == events_before  # anonymous counts stay
    assert any("bo@example.com" in v for v in after)  # and nobody else was touched
    assert client.get(reader.url("me")).status_code == 200
