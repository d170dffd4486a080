"""Property-based tests: random input at the token parser, every link route, the signup
parsers, the origin and redirect checks, and the log masking.

The properties: never a 500, and a refused request never changes anything (the rows in
every table are counted before and after).
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from course.app import create_app
from course.config import parse_origin
from course.db import upgrade
from course.logs import mask
from course.models import Delivery, Event, LessonProgress, Subscriber
from course.render import Reader as MailReader
from course.render import Renderer, envelope_address
from course.security import safe_next_url, url_origin
from course.subscriptions import ValidationFailed, validate_signup
from course.tokens import PURPOSES, InvalidToken, Signer
from tests.conftest import SECRET, make_config
from tests.helpers import parse
from tests.test_links import Reader, enrol

ALLOWED = "https://yourpractice.example"
FAST = settings(max_examples=200, deadline=None)
HTTP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Every route under a token (path templates; {t} is the token).
LINK_ROUTES = [
    "/confirm/{t}",
    "/done/{t}",
    "/checkin/{t}",
    "/view/{t}",
    "/book/{t}",
    "/pause/{t}",
    "/unsubscribe/{t}",
    "/me/{t}",
    "/me/{t}/pause",
    "/me/{t}/resume",
    "/me/{t}/schedule",
    "/me/{t}/data.json",
    "/me/{t}/delete",
]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """One app for the module, with a reader who has received lesson 1."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'course.db'}"
    upgrade(url)
    app = create_app(
        make_config(
            tmp,
            url,
            ALLOWED_ORIGINS=[ALLOWED],
            # Hundreds of requests from one address: limits are tested in test_security.py.
            SUBSCRIBE_LIMIT_PER_CLIENT="100000 per minute",
            SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="100000 per minute",
        )
    )
    yield app
    app.extensions["course"].engine.dispose()


@pytest.fixture(scope="module")
def fuzz_reader(fuzz_app: Flask) -> Reader:
    return enrol(fuzz_app, fuzz_app.test_client(), "ana@example.com")


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app: Flask, fuzz_reader: Reader) -> FlaskClient:
    return fuzz_app.test_client()


def snapshot(app: Flask) -> dict[str, Any]:
    """Row counts of every table, and the reader's status: what a request could change."""
    with app.extensions["course"].sessions() as s:
        state: dict[str, Any] = {
            m.__tablename__: s.scalar(select(func.count()).select_from(m))
            for m in (Subscriber, Delivery, LessonProgress, Event)
        }
        state["statuses"] = sorted(s.scalars(select(Subscriber.status)))
        return state


# -- the token parser -----------------------------------------------------------------------

tokens = st.one_of(
    st.text(max_size=700),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.from_regex(r"[A-Za-z0-9_\-]{0,80}\.[A-Za-z0-9_\-]{0,40}(\.[A-Za-z0-9_\-]{0,40})?"),
)


@FAST
@given(purpose=st.sampled_from(PURPOSES), token=tokens)
def test_the_token_parser_accepts_only_its_own_tokens(purpose: str, token: str) -> None:
    signer = Signer([SECRET])
    try:
        payload = signer.loads(purpose, token)
    except InvalidToken:
        return
    # Random text is never a valid signature.
    pytest.fail(f"accepted a random token: {token!r} -> {payload!r}")


@FAST
@given(
    purpose=st.sampled_from(PURPOSES),
    public_id=st.text(min_size=1, max_size=40),
    extra=st.lists(st.one_of(st.integers(), st.text(max_size=20)), max_size=2),
    flip=st.integers(min_value=0),
)
def test_a_changed_token_is_refused(
    purpose: str, public_id: str, extra: list[Any], flip: int
) -> None:
    signer = Signer([SECRET])
    token = signer.dumps(purpose, public_id, *extra)
    assert signer.loads(purpose, token) == [public_id, *extra]
    position = flip % len(token)
    changed = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    try:
        payload = signer.loads(purpose, changed)
    except InvalidToken:
        return
    # base64 ignores the spare bits of the last character: the same bytes are still signed.
    assert payload == [public_id, *extra]


# -- every link route -----------------------------------------------------------------------


@HTTP
@given(
    route=st.sampled_from(LINK_ROUTES),
    token=st.text(min_size=1, max_size=300),
    method=st.sampled_from(["get", "post", "head"]),
    form=st.dictionaries(
        st.sampled_from(["answer", "note", "confirm", "send_hour", "timezone", "List-Unsubscribe"]),
        st.text(max_size=50),
        max_size=3,
    ),
)
def test_random_tokens_on_every_link_never_fail_or_change_anything(
    fuzz_app: Flask, fuzz_client: FlaskClient, route: str, token: str, method: str, form: dict
) -> None:
    before = snapshot(fuzz_app)
    url = route.format(t=quote(token, safe=""))
    kwargs = {"data": form} if method == "post" else {}
    response = getattr(fuzz_client, method)(url, **kwargs)
    assert response.status_code < 500
    assert response.status_code in (400, 404, 405)
    assert snapshot(fuzz_app) == before


@HTTP
@given(
    route=st.sampled_from(LINK_ROUTES),
    position=st.integers(min_value=0),
    char=st.sampled_from(string.ascii_letters + string.digits + "-_.~%"),
    method=st.sampled_from(["get", "post"]),
)
def test_almost_valid_tokens_never_fail_or_change_anything(
    fuzz_app: Flask,
    fuzz_client: FlaskClient,
    fuzz_reader: Reader,
    route: str,
    position: int,
    char: str,
    method: str,
) -> None:
    signer = fuzz_app.extensions["course"].signer
    purpose = {"me": "progress"}.get(route.split("/")[1], route.split("/")[1])
    payload: list[Any] = [fuzz_reader.public_id]
    if purpose in ("done", "view", "book"):
        payload.append(1)
    elif purpose == "checkin":
        payload += [1, "same"]
    token = signer.dumps(purpose, *payload)
    at = position % len(token)
    changed = token[:at] + char + token[at + 1 :]
    try:
        signer.loads(purpose, changed)
        assume(False)  # still a valid token (an unchanged or spare bit): not this property
    except InvalidToken:
        pass
    before = snapshot(fuzz_app)
    response = getattr(fuzz_client, method)(route.format(t=quote(changed, safe="")))
    assert response.status_code in (400, 404, 405)
    assert snapshot(fuzz_app) == before


# -- the signup parsers ---------------------------------------------------------------------

FIELD_NAMES = ["email", "name", "timezone", "source", "website", "started", "next", "csrf_token"]
anything_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


def assert_signup_answer(app: Flask, before: dict[str, Any], response: Any) -> None:
    """Never a 500; a refusal stores nothing."""
    assert response.status_code < 500
    if response.status_code >= 400:
        assert snapshot(app) == before
    else:
        assert response.status_code in (202, 303)


@HTTP
@given(
    fields=st.dictionaries(
        st.sampled_from(FIELD_NAMES) | st.text(max_size=10), st.text(max_size=200), max_size=8
    ),
    origin=st.sampled_from(
        [None, ALLOWED, "null", "https://evil.example", "https://course.example.org"]
    ),
)
def test_random_forms_never_fail_and_refusals_store_nothing(
    fuzz_app: Flask, fuzz_client: FlaskClient, fields: dict[str, str], origin: str | None
) -> None:
    before = snapshot(fuzz_app)
    headers = {"Origin": origin} if origin else {}
    response = fuzz_client.post("/subscribe", data=fields, headers=headers)
    assert_signup_answer(fuzz_app, before, response)


@HTTP
@given(
    body=st.one_of(
        anything_json,
        st.dictionaries(st.sampled_from(FIELD_NAMES), anything_json, max_size=6),
        st.fixed_dictionaries(
            {"email": st.one_of(st.emails(), st.text(max_size=40))},
            optional={"name": st.text(max_size=120), "timezone": st.text(max_size=40)},
        ),
    )
)
def test_random_json_never_fails_and_refusals_store_nothing(
    fuzz_app: Flask, fuzz_client: FlaskClient, body: Any
) -> None:
    before = snapshot(fuzz_app)
    response = fuzz_client.post("/subscribe", json=body)
    assert_signup_answer(fuzz_app, before, response)


@HTTP
@given(
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/json",
            "application/json; charset=utf-16",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "text/plain",
            "application/octet-stream",
            "",
        ]
    ),
)
def test_random_bytes_never_fail_and_refusals_store_nothing(
    fuzz_app: Flask, fuzz_client: FlaskClient, body: bytes, content_type: str
) -> None:
    before = snapshot(fuzz_app)
    response = fuzz_client.post(
        "/subscribe", data=body, content_type=content_type, headers={"Origin": ALLOWED}
    )
    assert_signup_answer(fuzz_app, before, response)


@FAST
@given(data=st.dictionaries(st.sampled_from(FIELD_NAMES[:4]), anything_json, max_size=4))
def test_validation_refuses_with_field_errors_only(data: dict[str, Any]) -> None:
    try:
        validate_signup(data, check_deliverability=False)
    except ValidationFailed as exc:
        assert exc.errors and all(isinstance(m, str) for m in exc.errors.values())


# -- a name that passes validation never adds a header --------------------------------------


@pytest.fixture(scope="module")
def renderer(fuzz_app: Flask) -> Renderer:
    course = fuzz_app.extensions["course"]
    return Renderer(course.settings, course.signer)


@settings(max_examples=150, deadline=None)
@given(name=st.text(max_size=110), email=st.emails())
def test_accepted_signups_never_add_a_mail_header(
    fuzz_app: Flask, renderer: Renderer, name: str, email: str
) -> None:
    from course.web.public import _field_problems

    data = {"email": email, "name": name}
    # What the signup endpoint refuses before validation (encoded words) never gets here.
    assume(not _field_problems(data, set()))
    try:
        signup = validate_signup(data, check_deliverability=False)
    except ValidationFailed:
        return
    from course.models import utcnow

    course = fuzz_app.extensions["course"].courses.current().default()
    assert course is not None
    message = renderer.build(
        "confirm", 1, MailReader("pid", signup.email, signup.name), course, utcnow()
    )
    head = message.split(b"\r\n\r\n", 1)[0]
    names = [
        line.split(b":", 1)[0].lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]
    assert sorted(names) == sorted(
        [
            b"from",
            b"to",
            b"subject",
            b"date",
            b"message-id",
            b"list-id",
            b"list-unsubscribe",
            b"list-unsubscribe-post",
            b"auto-submitted",
            b"content-type",
            b"mime-version",
        ]
    )
    to = [a.addr_spec for a in parse(message)["To"].addresses]
    assert to == [envelope_address(signup.email)]  # the domain in its ASCII form


# -- origins, redirects and log masking -----------------------------------------------------

url_like = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(
        [
            "",
            "https://yourpractice.example",
            "https://yourpractice.example.",
            "HTTPS://YOURPRACTICE.EXAMPLE",
            "https://yourpractice.example:",
            "https://yourpractice.example@",
            "https:",
            "//",
            "/\\",
            "https://",
            "http://yourpractice.example",
        ]
    ),
    st.text(max_size=60),
)


@FAST
@given(value=url_like)
def test_next_only_ever_leads_into_an_allowed_origin(value: str) -> None:
    target = safe_next_url(value, (ALLOWED,))
    if target is None:
        return
    assert target.startswith(ALLOWED + "/")
    parts = urlsplit(target)
    assert (parts.scheme, parts.netloc) == ("https", "yourpractice.example")
    assert url_origin(target) == ALLOWED
    assert "\\" not in target and target.isascii() and target.isprintable()


@FAST
@given(value=st.one_of(url_like, st.text(max_size=80)))
def test_parse_origin_is_canonical(value: str) -> None:
    origin = parse_origin(value)
    if origin is None:
        return
    assert parse_origin(origin) == origin
    assert origin == origin.lower() and "/" not in origin.removeprefix("http://").removeprefix(
        "https://"
    )
    assert not origin.endswith((".", ":443", ":80"))


@FAST
@given(email=st.emails(), before=st.text(max_size=20), after=st.text(max_size=20))
def test_log_masking_hides_every_address(email: str, before: str, after: str) -> None:
    # A mailbox spelled with the mask's own stars ("*@a.ac") reads the same once masked.
    assume(email.split("@")[0].strip("*") != "")
    masked = mask(f"{before} {email} {after}")
    assert email not in masked
    assert mask(f"to={quote(email, safe='')}") != f"to={quote(email, safe='')}"


@FAST
@given(
    path=st.sampled_from(
        ["confirm", "unsubscribe", "done", "checkin", "view", "me", "pause", "book"]
    ),
    token=st.from_regex(r"[A-Za-z0-9_\-.]{1,120}", fullmatch=True),
)
def test_log_masking_hides_every_token(path: str, token: str) -> None:
    line = f'127.0.0.1 - - [x] "GET /{path}/{token} HTTP/1.1" 200 -'
    assert mask(line) == f'127.0.0.1 - - [x] "GET /{path}/[token] HTTP/1.1" 200 -'
