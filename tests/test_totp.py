"""Two-factor sign-in (TOTP): set-up with a QR code drawn on the server, a second step after
the password, codes that work once, recovery codes that work once, limits on guessing, the
practice's "everyone must" setting, and an owner's reset.

The server's clock is a FakeClock (``course.web.admin.utcnow``), so each test chooses which
30-second step a code belongs to instead of waiting for the next one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

import course.web.admin as admin_module
from course.app import create_app
from course.crypto import use_keys
from course.models import AuditLog, Operator
from course.operators import (
    SecondFactor,
    check_second_factor,
    create_operator,
    enable_totp,
    new_totp_secret,
    recovery_codes_left,
    reset_totp,
)
from course.web.admin import DEVICE_COOKIE
from tests.conftest import DATA_KEY, CourseRunner, FakeClock, make_config, sessions_for
from tests.helpers import forms
from tests.test_roles import (
    OWNER,
    PASSWORD,
    THERAPIST,
    add_staff,
    form_on,
    sign_in,
    staff_client,
    submit,
)

CODE_STEP = "/admin/login/code"
ENROL = "/admin/2fa"


@pytest.fixture(autouse=True)
def server_clock(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    monkeypatch.setattr(admin_module, "utcnow", clock)
    return clock


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


def secret_on(page: TestResponse) -> str:
    """The secret as the set-up page shows it for typing by hand (in groups of four)."""
    found = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.get_data(as_text=True))
    assert found, "no secret on the page"
    return found.group(1).replace(" ", "")


def code(secret: str, clock: FakeClock, steps: int = 0) -> str:
    """What the authenticator app shows at the server's time, ``steps`` x 30 s later."""
    return pyotp.TOTP(secret).at(clock(), counter_offset=steps)


def recovery_codes_on(page: TestResponse) -> list[str]:
    return re.findall(
        r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", page.get_data(as_text=True)
    )


def enrol(client: FlaskClient, clock: FakeClock) -> tuple[str, list[str]]:
    """Set up two-factor sign-in from the page: read the secret, type the app's code."""
    page = client.get(ENROL)
    assert page.status_code == 200
    secret = secret_on(page)
    response = submit(client, page, ENROL, code=code(secret, clock))
    assert response.status_code == 200, response.get_data(as_text=True)
    codes = recovery_codes_on(response)
    assert len(codes) == 10
    return secret, codes


def password_step(client: FlaskClient, email: str = OWNER, **kwargs: Any) -> TestResponse:
    response = sign_in(client, email)
    assert response.status_code == 302
    assert response.headers["Location"] == CODE_STEP
    return response


def code_step(client: FlaskClient, typed: str, **kwargs: Any) -> TestResponse:
    page = client.get(CODE_STEP, **kwargs)
    assert page.status_code == 200
    form = form_on(page, CODE_STEP)
    return client.post(form.action, data={**form.fields, "code": typed}, **kwargs)


def is_signed_in(client: FlaskClient) -> bool:
    response = client.get("/admin/")
    if response.status_code == 302:
        return False
    assert response.status_code == 200
    return True


@pytest.fixture
def enrolled(app: Flask, clock: FakeClock) -> tuple[str, list[str]]:
    """The owner, with two-factor sign-in set up (their secret and recovery codes)."""
    add_staff(app, OWNER, "owner")
    found = enrol(staff_client(app, OWNER), clock)
    clock.advance(seconds=30)  # the next code is a new one
    return found


def operator_row(app: Flask, email: str = OWNER) -> Operator:
    sessions: sessionmaker[Session] = app.extensions["course"].sessions
    with sessions() as s:
        operator = s.scalars(select(Operator).where(Operator.email == email)).one()
        operator.totp_secret  # noqa: B018 - load the deferred columns before the session ends
        operator.recovery_codes  # noqa: B018
        return operator


def audit_actions(app: Flask) -> list[tuple[str, str | None]]:
    with app.extensions["course"].sessions() as s:
        return [(r.action, r.detail) for r in s.scalars(select(AuditLog).order_by(AuditLog.id))]


# -- set-up -----------------------------------------------------------------------------------


def test_the_set_up_page_draws_the_qr_code_itself_and_shows_the_secret(
    app: Flask, clock: FakeClock
) -> None:
    add_staff(app, OWNER, "owner")
    client = staff_client(app, OWNER)
    page = client.get(ENROL)
    html = page.get_data(as_text=True)
    # Inline SVG drawn by the server: no image from anywhere, no data: URL, no script.
    assert '<svg role="img" aria-label="QR code" viewBox=' in html
    assert "<img" not in html and "data:" not in html and "<script" not in html
    assert "script-src 'self';" in page.headers["Content-Security-Policy"]
    secret = secret_on(page)
    assert len(secret) == 32
    # Reloading keeps the same secret (the QR code already scanned stays valid)...
    assert secret_on(client.get(ENROL)) == secret
    # ...which the session holds only encrypted.
    cookie = client.get_cookie("course_session")
    assert cookie is not None
    data = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    assert secret not in json.dumps(data) and secret not in cookie.value
    # A wrong code changes nothing.
    wrong = submit(
        client,
        client.get(ENROL),
        ENROL,
        code="000000" if code(secret, clock) != "000000" else "111111",
    )
    assert wrong.status_code == 400 and "That code didn" in wrong.get_data(as_text=True)
    assert operator_row(app).totp_enabled_at is None


def test_set_up_stores_the_secret_encrypted_and_shows_recovery_codes_once(
    app: Flask, clock: FakeClock
) -> None:
    add_staff(app, OWNER, "owner")
    client = staff_client(app, OWNER)
    secret, codes = enrol(client, clock)
    assert len(set(codes)) == 10
    # Shown once: the page now only says it is on, and how many codes are left.
    later = client.get(ENROL).get_data(as_text=True)
    assert "Two-factor sign-in is on" in later and "10 unused recovery codes" in later
    assert not any(c in later for c in codes)
    # At rest: the secret encrypted with the data keys; the codes only as hashes.
    with app.extensions["course"].engine.connect() as conn:
        stored, hashes = conn.execute(
            text("SELECT totp_secret, recovery_codes FROM operators")
        ).one()
    assert stored.startswith("gAAAAA") and secret not in stored
    assert operator_row(app).totp_secret == secret
    assert len(json.loads(hashes)) == 10
    assert not any(c in hashes or c.replace("-", "") in hashes for c in codes)
    assert ("totp_enrol", None) in audit_actions(app)


# -- signing in ------------------------------------------------------------------------------


def test_sign_in_needs_the_code_after_the_password(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    browser = app.test_client()
    password_step(browser)
    # Nothing is signed in between the two steps, and the browser is not yet "known".
    assert not is_signed_in(browser)
    assert browser.get_cookie(DEVICE_COOKIE, path="/admin/login") is None
    response = code_step(browser, code(secret, clock))
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    assert is_signed_in(browser)
    assert browser.get_cookie(DEVICE_COOKIE, path="/admin/login") is not None
    assert ("sign_in", "password+code") in audit_actions(app)
    # Typed the way people type it: with a space in the middle.
    clock.advance(seconds=30)
    other = app.test_client()
    password_step(other)
    typed = code(secret, clock)
    assert code_step(other, f"{typed[:3]} {typed[3:]}").status_code == 302


def test_a_wrong_code_is_refused(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    browser = app.test_client()
    password_step(browser)
    right = code(secret, clock)
    wrong = "000000" if right != "000000" else "111111"
    response = code_step(browser, wrong)
    assert response.status_code == 401
    assert "That code didn" in response.get_data(as_text=True)
    assert not is_signed_in(browser)
    # A code too old for the window is wrong too.
    assert code_step(browser, code(secret, clock, -2)).status_code == 401
    assert code_step(browser, "not a code").status_code == 401
    assert not is_signed_in(browser)
    assert code_step(browser, right).status_code == 302


def test_a_code_works_only_once(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    first = app.test_client()
    password_step(first)
    used = code(secret, clock)
    assert code_step(first, used).status_code == 302
    # Someone who saw the code (and knows the password) cannot use it again...
    thief = app.test_client()
    password_step(thief)
    assert code_step(thief, used).status_code == 401
    # ...nor the code before it, though still inside the clock window.
    assert code_step(thief, code(secret, clock, -1)).status_code == 401
    assert not is_signed_in(thief)
    # The next step's code works (once).
    assert code_step(thief, code(secret, clock, 1)).status_code == 302


def test_the_set_up_code_cannot_sign_in(app: Flask, clock: FakeClock) -> None:
    add_staff(app, OWNER, "owner")
    client = staff_client(app, OWNER)
    page = client.get(ENROL)
    secret = secret_on(page)
    typed = code(secret, clock)
    assert submit(client, page, ENROL, code=typed).status_code == 200
    browser = app.test_client()
    password_step(browser)
    assert code_step(browser, typed).status_code == 401


def test_a_recovery_code_works_once(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]]
) -> None:
    _, codes = enrolled
    browser = app.test_client()
    password_step(browser)
    response = code_step(browser, codes[3].upper())  # as read off paper: case does not matter
    assert response.status_code == 302
    page = browser.get("/admin/").get_data(as_text=True)
    assert "You signed in with a recovery code" in page and "9 recovery codes left" in page
    assert ("sign_in", "password+recovery code") in audit_actions(app)
    again = app.test_client()
    password_step(again)
    assert code_step(again, codes[3]).status_code == 401
    assert code_step(again, "abcde-fghjk").status_code == 401  # not one of theirs
    assert code_step(again, codes[4].replace("-", " ")).status_code == 302
    assert "8 unused recovery codes" in again.get(ENROL).get_data(as_text=True)


def test_the_step_between_password_and_code_expires(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    browser = app.test_client()
    password_step(browser)
    page = browser.get(CODE_STEP)
    clock.advance(minutes=6)
    form = form_on(page, CODE_STEP)
    response = browser.post(form.action, data={**form.fields, "code": code(secret, clock)})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/login"
    assert "took too long" in browser.get("/admin/login").get_data(as_text=True)
    assert not is_signed_in(browser)
    # Without a password step there is no code step at all.
    assert app.test_client().get(CODE_STEP).status_code == 302


def test_signing_out_everywhere_also_ends_a_half_finished_sign_in(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    attacker = app.test_client()
    password_step(attacker)
    owner = app.test_client()
    password_step(owner)
    assert code_step(owner, code(secret, clock)).status_code == 302
    submit(owner, owner.get("/admin/"), "/admin/logout")
    # The session version changed: the attacker's half-finished sign-in is void.
    page = attacker.get(CODE_STEP)
    assert page.status_code == 302


def test_codes_are_limited_per_account(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    # The owner's own browser, which has signed in before.
    own = app.test_client()
    password_step(own)
    assert code_step(own, code(secret, clock)).status_code == 302
    submit(own, own.get("/admin/"), "/admin/logout")
    clock.advance(seconds=30)
    right = code(secret, clock)
    wrong = "000000" if right not in ("000000",) else "111111"
    # Someone with the password guesses codes from many addresses.
    statuses = []
    for i in range(11):
        address = {"environ_base": {"REMOTE_ADDR": f"198.51.100.{i + 1}"}}
        guesser = app.test_client()
        page = guesser.get("/admin/login", **address)
        form = form_on(page, "/admin/login")
        fields = {**form.fields, "email": OWNER, "password": PASSWORD}
        assert guesser.post("/admin/login", data=fields, **address).status_code == 302
        statuses.append(code_step(guesser, wrong, **address).status_code)
    assert statuses == [401] * 10 + [429]
    # A new browser now waits, even with the right code...
    late = app.test_client()
    password_step(late)
    assert code_step(late, right).status_code == 429
    # ...but the owner's own browser is not locked out.
    password_step(own)
    assert code_step(own, right).status_code == 302


# -- the practice requires it ------------------------------------------------------------------


def test_require_totp_sends_the_operator_to_set_it_up_first(
    app_factory: Callable[..., Flask], clock: FakeClock
) -> None:
    app = app_factory(REQUIRE_TOTP=True)
    add_staff(app, OWNER, "owner")
    browser = app.test_client()
    response = sign_in(browser, OWNER)
    assert response.status_code == 302 and response.headers["Location"] == ENROL
    # Nothing else opens until it is set up.
    for path in ("/admin/", "/admin/subscribers", "/admin/care", "/admin/staff", "/admin/audit"):
        response = browser.get(path)
        assert response.status_code == 302 and response.headers["Location"] == ENROL, path
    page = browser.get(ENROL)
    html = page.get_data(as_text=True)
    assert "The practice requires two-factor sign-in" in html
    assert 'href="/admin/subscribers"' not in html  # no navigation but "Sign out"
    assert {f.action for f in forms(html)} == {ENROL, "/admin/logout"}
    secret, _ = enrol(browser, clock)
    assert browser.get("/admin/").status_code == 200
    # From now on, the code step.
    clock.advance(seconds=30)
    later = app.test_client()
    password_step(later)
    assert code_step(later, code(secret, clock)).status_code == 302


def test_require_totp_still_lets_the_operator_sign_out(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(REQUIRE_TOTP=True)
    add_staff(app, OWNER, "owner")
    browser = app.test_client()
    sign_in(browser, OWNER)
    assert submit(browser, browser.get(ENROL), "/admin/logout").status_code == 302
    assert browser.get(ENROL).status_code == 302  # signed out: to the login


# -- an owner's reset ---------------------------------------------------------------------------


def test_an_owner_resets_a_lost_phone(app_factory: Callable[..., Flask], clock: FakeClock) -> None:
    app = app_factory(REQUIRE_TOTP=True)
    add_staff(app, OWNER, "owner")
    kim = add_staff(app, THERAPIST, "therapist")
    owner = app.test_client()
    sign_in(owner, OWNER)
    enrol(owner, clock)
    therapist = app.test_client()
    sign_in(therapist, THERAPIST)
    enrol(therapist, clock)
    assert is_signed_in(therapist)
    staff_page = owner.get("/admin/staff")
    assert "On since" in staff_page.get_data(as_text=True)
    response = submit(owner, staff_page, f"/admin/staff/{kim}/reset-2fa")
    assert response.status_code == 303
    assert "Two-factor sign-in was reset" in owner.get("/admin/staff").get_data(as_text=True)
    # Their sessions ended; their next sign-in asks for a new set-up, not a code.
    assert not is_signed_in(therapist)
    response = sign_in(therapist, THERAPIST)
    assert response.status_code == 302 and response.headers["Location"] == ENROL
    enrol(therapist, clock)
    assert ("staff_reset_2fa", f"staff #{kim}") in audit_actions(app)
    # Only owners may.
    assert therapist.get("/admin/staff").status_code == 403


def test_the_command_line_resets_two_factor_when_no_owner_can(
    app: Flask, clock: FakeClock, enrolled: tuple[str, list[str]], runner: CourseRunner
) -> None:
    result = runner.invoke(["admin", "reset-2fa", OWNER.upper()])
    assert result.exit_code == 0, result.output
    assert "is off" in result.output
    assert operator_row(app).totp_enabled_at is None
    assert sign_in(app.test_client(), OWNER).headers["Location"] == "/admin/"
    assert runner.invoke(["admin", "reset-2fa", "nobody@example.org"]).exit_code == 1
    [line] = [x for x in runner.invoke(["admin", "list"]).output.splitlines() if OWNER in x]
    assert " off " in line


# -- the rules themselves, on SQLite and PostgreSQL -----------------------------------------------


def test_codes_and_recovery_codes_work_once_on_every_database(
    db_url: str, clock: FakeClock
) -> None:
    use_keys([DATA_KEY])
    sessions = sessions_for(db_url)
    secret = new_totp_secret()
    with sessions() as s, s.begin():
        operator_id = create_operator(s, OWNER, PASSWORD).id
    with sessions() as s, s.begin():
        wrong = "000000" if code(secret, clock) != "000000" else "111111"
        assert enable_totp(s, operator_id, secret, wrong, clock()) is None
    with sessions() as s, s.begin():
        codes = enable_totp(s, operator_id, secret, code(secret, clock), clock())
    assert codes is not None and len(codes) == 10
    with sessions() as s, s.begin():  # already on: a second set-up is refused
        assert enable_totp(s, operator_id, new_totp_secret(), code(secret, clock), clock()) is None
    clock.advance(seconds=30)
    now, typed = clock(), code(secret, clock)
    with sessions() as s, s.begin():
        assert check_second_factor(s, operator_id, typed, now) is SecondFactor.CODE
    with sessions() as s, s.begin():
        assert check_second_factor(s, operator_id, typed, now) is None
        assert check_second_factor(s, operator_id, codes[0], now) is SecondFactor.RECOVERY_CODE
    with sessions() as s, s.begin():
        assert check_second_factor(s, operator_id, codes[0], now) is None
        assert check_second_factor(s, operator_id, codes[1], now) is SecondFactor.RECOVERY_CODE
        operator = s.get(Operator, operator_id)
        assert operator is not None and recovery_codes_left(operator) == 8
        reset_totp(s, operator_id)
    with sessions() as s:
        operator = s.get(Operator, operator_id)
        assert operator is not None and operator.totp_enabled_at is None
        assert operator.session_version == 1  # the reset ended their sessions
        assert check_second_factor(s, operator_id, codes[2], now) is None
