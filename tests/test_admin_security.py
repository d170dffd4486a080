"""The admin login against an attacker.

- Logging out ends the session on the server: a copy of the cookie made before stops working.
- The rate-limit store never holds what was typed into the login form, only a keyed hash.
- Nobody can lock the practice out: only failed attempts count against an account, and a
  browser the operator has signed in from before ("known device") is exempt from that
  per-account limit (the per-client-address limit still holds for everyone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login.utils import encode_cookie
from itsdangerous import URLSafeTimedSerializer
from werkzeug.test import TestResponse

from course.app import create_app
from course.operators import create_operator, end_sessions
from course.security import keyed_hash
from course.web.admin import DEVICE_COOKIE
from tests.conftest import make_config
from tests.helpers import Form, forms
from tests.test_security import limit_keys

PASSWORD = "a long enough password"
KIM = "kim@harbor.example.org"
LEE = "lee@harbor.example.org"
KIM_HOME = "203.0.113.7"  # the address kim's own browser comes from
LOGIN = "/admin/login"


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def app_factory(tmp_path: Path, sqlite_url: str) -> Iterator[Callable[..., Flask]]:
    """Apps on one test database, with settings of the test's choosing."""
    apps: list[Flask] = []

    def make(db_url: str = sqlite_url, **overrides: Any) -> Flask:
        application = create_app(make_config(tmp_path, db_url, **overrides))
        apps.append(application)
        return application

    yield make
    for application in apps:
        application.extensions["course"].engine.dispose()


def add_operator(app: Flask, email: str) -> int:
    # Only the first account is an owner without being told; these tests are about signing
    # in, not about roles, so every account is an owner.
    with app.extensions["course"].sessions() as s, s.begin():
        return create_operator(s, email, PASSWORD, "UTC", role="owner").id


def ip(address: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def form_on(page: TestResponse, action: str) -> Form:
    """The form on ``page`` that posts to ``action``."""
    found = [f for f in forms(page.get_data(as_text=True)) if f.action == action]
    assert len(found) == 1, f"no single form for {action} on the page"
    return found[0]


def sign_in(
    client: FlaskClient, email: str, password: str = PASSWORD, address: str = "127.0.0.1"
) -> TestResponse:
    """Fill in the login page's form as a browser would, and send it."""
    form = form_on(client.get(LOGIN, **ip(address)), LOGIN)
    assert form.method == "post" and "csrf_token" in form.fields
    data = {**form.fields, "email": email, "password": password}
    return client.post(form.action, data=data, **ip(address))


def sign_out(client: FlaskClient, address: str = "127.0.0.1") -> TestResponse:
    """Press "Sign out" on the dashboard."""
    form = form_on(client.get("/admin/", **ip(address)), "/admin/logout")
    return client.post(form.action, data=form.fields, **ip(address))


def is_signed_in(client: FlaskClient, address: str = "127.0.0.1") -> bool:
    """Whether the dashboard opens (from ``address``: a session is tied to its client)."""
    response = client.get("/admin/", **ip(address))
    if response.status_code == 302:
        assert response.headers["Location"].startswith(LOGIN)
        return False
    assert response.status_code == 200
    return True


def copy_cookie(source: FlaskClient, target: FlaskClient, name: str, path: str = "/") -> None:
    cookie = source.get_cookie(name, path=path)
    assert cookie is not None, f"no {name} cookie"
    target.set_cookie(name, cookie.value, path=path)


def device_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(DEVICE_COOKIE, path=LOGIN)
    return cookie.value if cookie else None


def attack(app: Flask, email: str, attempts: int, **client_kwargs: Any) -> list[int]:
    """Wrong passwords for ``email``, each from a new client address (a botnet)."""
    codes = []
    for i in range(attempts):
        client = app.test_client()
        if "device" in client_kwargs:
            client.set_cookie(DEVICE_COOKIE, client_kwargs["device"], path=LOGIN)
        codes.append(sign_in(client, email, f"guess number {i}", f"198.51.100.{i + 1}").status_code)
    return codes


# -- 1. logout ends the session on the server --------------------------------------------------


def test_logout_ends_a_copied_session_cookie(
    app_factory: Callable[..., Flask], db_url: str
) -> None:
    app = app_factory(db_url)
    add_operator(app, KIM)
    browser = app.test_client()
    assert sign_in(browser, KIM).status_code == 302
    # Someone copies the session cookie (same client address and browser, so Flask-Login's
    # "strong" session protection does not stop them: only the server-side check can).
    thief = app.test_client()
    copy_cookie(browser, thief, "course_session")
    assert is_signed_in(thief)

    assert sign_out(browser).status_code == 302
    assert not is_signed_in(browser)
    assert not is_signed_in(thief)
    # Signing in again works, and does not bring the old copy back to life.
    assert sign_in(browser, KIM).status_code == 302
    assert is_signed_in(browser)
    assert not is_signed_in(thief)


def test_logout_also_ends_a_remember_me_cookie(app_factory: Callable[..., Flask]) -> None:
    """No page sets Flask-Login's remember-me cookie today; if one ever does, it carries the
    same "<id>:<version>" and is refused after logout just the same."""
    app = app_factory()
    kim = add_operator(app, KIM)
    with app.test_request_context():
        remember = encode_cookie(f"{kim}:0")
    before = app.test_client()
    before.set_cookie("remember_token", remember)
    assert is_signed_in(before)

    browser = app.test_client()
    assert sign_in(browser, KIM).status_code == 302
    assert sign_out(browser).status_code == 302
    after = app.test_client()
    after.set_cookie("remember_token", remember)
    assert not is_signed_in(after)


def test_sign_out_everywhere_ends_every_session_of_the_operator(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory()
    kim = add_operator(app, KIM)
    add_operator(app, LEE)
    laptop, phone, lees = app.test_client(), app.test_client(), app.test_client()
    for client, email in ((laptop, KIM), (phone, KIM), (lees, LEE)):
        assert sign_in(client, email).status_code == 302
    with app.extensions["course"].sessions() as s, s.begin():
        end_sessions(s, kim)
    assert not is_signed_in(laptop) and not is_signed_in(phone)
    assert is_signed_in(lees)  # other operators are not affected


def test_a_session_without_a_version_must_sign_in_again(app_factory: Callable[..., Flask]) -> None:
    """Sessions made before session versions named the operator by id alone."""
    app = app_factory()
    kim = add_operator(app, KIM)
    browser = app.test_client()
    assert sign_in(browser, KIM).status_code == 302
    with browser.session_transaction() as session:
        assert session["_user_id"] == f"{kim}:0"
        session["_user_id"] = str(kim)
    assert not is_signed_in(browser)


# -- 2. what was typed never reaches the rate-limit store -------------------------------------


def test_the_limit_store_never_holds_what_was_typed(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    app = app_factory(**limit_store)
    add_operator(app, KIM)
    typed = [" Kim@Harbor.Example.org ", "my-password-typed-in-the-wrong-box", "lee@elsewhere.test"]
    for i, text in enumerate(typed):
        assert sign_in(app.test_client(), text, "wrong password", f"192.0.2.{i}").status_code == 401
    assert sign_in(app.test_client(), KIM, PASSWORD, "192.0.2.50").status_code == 302

    keys = limit_keys(app, limit_store)
    assert keys and all(limit_store["RATELIMIT_KEY_PREFIX"] in key for key in keys)
    joined = "\n".join(keys).lower()
    for text in [*typed, KIM, "kim", "harbor", "wrong-box", "elsewhere", "@"]:
        assert text.strip().lower() not in joined, text
    # What is there is the keyed hash of the typed address (trimmed, lower-cased).
    secret_keys = app.extensions["course"].settings.secret_keys
    assert keyed_hash(secret_keys, KIM) in joined


# -- 3. nobody can lock an operator out -------------------------------------------------------


def test_an_attacker_cannot_lock_kim_out_of_her_known_browser(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    app = app_factory(**limit_store)
    add_operator(app, KIM)
    kims_browser = app.test_client()
    assert sign_in(kims_browser, KIM, address=KIM_HOME).status_code == 302
    assert device_cookie(kims_browser)
    # The device stays known after logout.
    assert sign_out(kims_browser, KIM_HOME).status_code == 302

    # 30 wrong passwords for kim from 30 addresses: the account limit holds after 10.
    assert attack(app, KIM, 30) == [401] * 10 + [429] * 20

    # Kim, on the browser she used before, signs in all the same.
    assert sign_in(kims_browser, KIM, address=KIM_HOME).status_code == 302
    assert is_signed_in(kims_browser, KIM_HOME)
    # A new browser (even at kim's address, with the right password) waits.
    assert sign_in(app.test_client(), KIM, address=KIM_HOME).status_code == 429


def test_the_known_device_cookie(app_factory: Callable[..., Flask]) -> None:
    app = app_factory()
    kim = add_operator(app, KIM)
    browser = app.test_client()
    response = sign_in(browser, KIM)
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(DEVICE_COOKIE)]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "secure", "max-age", "path"} <= attributes
    assert "SameSite=Lax" in header and f"Path={LOGIN}" in header
    value = device_cookie(browser)
    assert value and "kim" not in value.lower()
    # Signed with the app's keys under its own salt, naming only the operator's id.
    secret_keys = list(app.extensions["course"].settings.secret_keys)
    payload = URLSafeTimedSerializer(secret_keys, salt="course.admin-device").loads(value)
    assert payload[0] == kim and isinstance(payload[1], str) and KIM not in str(payload)
    # A failed login sets no device cookie.
    stranger = app.test_client()
    assert sign_in(stranger, KIM, "wrong password").status_code == 401
    assert device_cookie(stranger) is None


def test_over_plain_http_the_device_cookie_is_not_secure(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(BASE_URL="http://127.0.0.1:5000")
    add_operator(app, KIM)
    response = sign_in(app.test_client(), KIM)
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(DEVICE_COOKIE)]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header


def test_successful_logins_do_not_count_against_the_account(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    app = app_factory(**limit_store)
    add_operator(app, KIM)
    # Twelve sign-ins from twelve new browsers (no device cookie, so not exempt).
    for i in range(12):
        assert sign_in(app.test_client(), KIM, address=f"192.0.2.{i + 1}").status_code == 302
    # The account still has all ten failures to give.
    assert attack(app, KIM, 11) == [401] * 10 + [429]


def test_the_per_client_limit_still_holds_on_a_known_device(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    app = app_factory(**limit_store)
    add_operator(app, KIM)
    browser = app.test_client()
    assert sign_in(browser, KIM, address=KIM_HOME).status_code == 302
    codes = [sign_in(browser, KIM, "wrong password", KIM_HOME).status_code for _ in range(4)]
    assert codes == [401] * 4
    # Five POSTs this minute from this address: even the right password waits.
    assert sign_in(browser, KIM, address=KIM_HOME).status_code == 429
    # Another address is not affected.
    assert sign_in(app.test_client(), KIM, address="192.0.2.77").status_code == 302


def test_a_device_cookie_counts_only_for_its_own_operator_and_only_if_genuine(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory()
    kim = add_operator(app, KIM)
    add_operator(app, LEE)
    kims_browser = app.test_client()
    assert sign_in(kims_browser, KIM, address=KIM_HOME).status_code == 302
    genuine = device_cookie(kims_browser)
    assert genuine
    assert attack(app, LEE, 11) == [401] * 10 + [429]
    assert attack(app, KIM, 11) == [401] * 10 + [429]
    # Kim's device cookie does not help with lee's account.
    assert sign_in(kims_browser, LEE, address=KIM_HOME).status_code == 429
    # A tampered cookie, or one signed with another key, helps nobody.
    tampered = genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB")
    forged = URLSafeTimedSerializer("not-our-key", salt="course.admin-device").dumps([kim, "nonce"])
    for value in (tampered, forged, "garbage", ""):
        client = app.test_client()
        client.set_cookie(DEVICE_COOKIE, value, path=LOGIN)
        assert sign_in(client, KIM, address="192.0.2.200").status_code == 429, value
    # The genuine one still works.
    assert sign_in(kims_browser, KIM, address=KIM_HOME).status_code == 302


def test_a_stolen_device_cookie_gives_no_unlimited_guesses(
    app_factory: Callable[..., Flask], limit_store: dict[str, str]
) -> None:
    app = app_factory(**limit_store)
    add_operator(app, KIM)
    kims_browser = app.test_client()
    assert sign_in(kims_browser, KIM, address=KIM_HOME).status_code == 302
    stolen = device_cookie(kims_browser)
    assert stolen
    # Guesses with the stolen cookie are limited per cookie...
    assert attack(app, KIM, 12, device=stolen) == [401] * 10 + [429] * 2
    # ...and did not count against kim's account: she can still sign in from a new browser.
    assert sign_in(app.test_client(), KIM, address="192.0.2.90").status_code == 302
