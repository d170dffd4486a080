"""Staff roles: every admin route checks the role, pages hide what a role cannot use, a
reader's notes and replies reach only therapists and owners, and owners manage staff
without ever leaving the practice without an owner."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from course.app import create_app
from course.bounces import apply_feedback
from course.care import risk_phrases
from course.db import upgrade
from course.feedback import Feedback, FeedbackKind
from course.models import LessonProgress, Operator, utcnow
from course.operators import (
    OperatorError,
    Role,
    create_operator,
    remove_operator,
    set_role,
    staff,
)
from course.web.admin import REQUIRED_ROLES
from tests.conftest import CourseRunner, make_config, sessions_for
from tests.helpers import Form, forms
from tests.test_links import Reader, enrol

PASSWORD = "a long enough password"
OWNER = "owner@harbor.example.org"
THERAPIST = "therapist@harbor.example.org"
ASSISTANT = "assistant@harbor.example.org"
EMAILS = {Role.OWNER: OWNER, Role.THERAPIST: THERAPIST, Role.ASSISTANT: ASSISTANT}
NOTE = "I want to die, some days. Nobody knows."
REPLY = "My partner read my phone again; I did not say anything."
LOGIN = "/admin/login"
EDITOR = "/admin/courses/feeling-secure"


# -- helpers shared by the role, two-factor, care and audit tests -----------------------------


def add_staff(app: Flask, email: str, role: Role | str, timezone: str = "UTC") -> int:
    with app.extensions["course"].sessions() as s, s.begin():
        return create_operator(s, email, PASSWORD, timezone, role=role).id


def form_on(page: TestResponse | str, action: str) -> Form:
    """The one form on ``page`` that posts to ``action``."""
    html = page if isinstance(page, str) else page.get_data(as_text=True)
    found = [f for f in forms(html) if f.action == action]
    assert len(found) == 1, f"no single form for {action} on the page"
    return found[0]


def submit(
    client: FlaskClient,
    page: TestResponse | str,
    action: str,
    button: tuple[str, str] | None = None,
    **values: str,
) -> TestResponse:
    """Fill in the form for ``action`` on ``page`` and send it (pressing ``button``)."""
    form = form_on(page, action)
    data = {**form.fields, **values}
    if button is not None:
        assert button in form.buttons, f"no button {button} in the form"
        data[button[0]] = button[1]
    return client.post(form.action, data=data)


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD) -> TestResponse:
    """The login page's form, filled in and sent."""
    return submit(client, client.get(LOGIN), LOGIN, email=email, password=password)


def staff_client(app: Flask, email: str) -> FlaskClient:
    """A browser signed in as ``email`` (an account without two-factor sign-in)."""
    client = app.test_client()
    response = sign_in(client, email)
    assert response.status_code == 302, response.status_code
    return client


def csrf_token(client: FlaskClient) -> str:
    """A CSRF token of this browser's session, from the sign-out form every admin page has
    (or the login page's form when not signed in)."""
    page = client.get("/admin/")
    if page.status_code != 200:
        page = client.get(LOGIN)
    return next(f.fields["csrf_token"] for f in forms(page.get_data(as_text=True)))


def write_checkin(client: FlaskClient, reader: Reader, *, answer: str | None, note: str) -> None:
    """What the reader does on the check-in page (opened from the lesson email): press an
    answer, then write a note in the form on the page that answer shows."""
    page = client.get(reader.url("checkin"))
    assert page.status_code == 200
    if answer is not None:
        html = page.get_data(as_text=True)
        [buttons] = [f for f in forms(html) if ("answer", answer) in f.buttons]
        page = client.post(buttons.action, data={**buttons.fields, "answer": answer})
        assert page.status_code == 200
    if note:
        [form] = [f for f in forms(page.get_data(as_text=True)) if "note" in f.fields]
        response = client.post(form.action, data={**form.fields, "note": note})
        assert response.status_code == 200 and "Saved." in response.get_data(as_text=True)


def add_reply(app: Flask, email: str, text: str = REPLY) -> None:
    """A reply from the reader, as the replies mailbox delivers it (course.bounces)."""
    course = app.extensions["course"]
    feedback = Feedback(FeedbackKind.REPLY, recipients=(email,), text=text, subject="Re: Day 1")
    with course.sessions() as s, s.begin():
        outcome = apply_feedback(
            s,
            feedback,
            secret_keys=course.settings.secret_keys,
            soft_bounce_limit=3,
            now=utcnow(),
            via="test",
            phrases=risk_phrases(None),
        )
    assert outcome == "reply"


# -- the shared world of the route matrix -----------------------------------------------------


@dataclass
class World:
    app: Flask
    reader: Reader
    note_item: str
    target_id: int  # an assistant whose role owners set (to what it already is)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def throwaway(self) -> int:
        """A new assistant account, to be removed."""
        return add_staff(self.app, f"temp{next(self.numbers)}@harbor.example.org", "assistant")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path = tmp_path_factory.mktemp("roles")
    url = f"sqlite:///{tmp_path / 'course.db'}"
    upgrade(url)
    # Many sign-ins from one address in a minute: the limits have tests of their own.
    app = create_app(make_config(tmp_path, url, RATELIMIT_ENABLED=False))
    for role, email in EMAILS.items():
        add_staff(app, email, role)
    target = add_staff(app, "target@harbor.example.org", "assistant")
    reader = enrol(app, app.test_client(), "ana@example.com")
    write_checkin(app.test_client(), reader, answer="stirred", note=NOTE)
    add_reply(app, "ana@example.com")
    with app.extensions["course"].sessions() as s:
        row = s.scalars(select(LessonProgress)).one()
        note_item = f"note:{row.id}"
    yield World(app, reader, note_item, target)
    app.extensions["course"].engine.dispose()


def everyone(status: int) -> dict[Role, int]:
    return {r: status for r in Role}


def at_least(least: Role, status: int) -> dict[Role, int]:
    return {r: status if r.includes(least) else 403 for r in Role}


Request = Callable[[World], tuple[str, dict[str, str]]]


def _get(path: str) -> Request:
    return lambda w: (path.format(pid=w.reader.public_id), {})


#: Every admin route and method: how to call it, and what each role gets. A route missing
#: here fails test_the_matrix_names_every_admin_route.
ROUTES: dict[tuple[str, str], tuple[Request, dict[Role, int]]] = {
    ("/admin/login", "GET"): (_get(LOGIN), everyone(200)),
    ("/admin/login", "POST"): (
        lambda w: (LOGIN, {"email": OWNER, "password": "not the password"}),
        everyone(401),
    ),
    # Without a password step first, the code step sends everyone back to the login.
    ("/admin/login/code", "GET"): (_get("/admin/login/code"), everyone(302)),
    ("/admin/login/code", "POST"): (
        lambda w: ("/admin/login/code", {"code": "123456"}),
        everyone(302),
    ),
    ("/admin/logout", "POST"): (lambda w: ("/admin/logout", {}), everyone(302)),
    # Each staff member's own choice of the admin's language (docs/translating.md).
    ("/admin/language", "POST"): (
        lambda w: ("/admin/language", {"language": "en", "next": "/admin/"}),
        everyone(303),
    ),
    ("/admin/2fa", "GET"): (_get("/admin/2fa"), everyone(200)),
    ("/admin/2fa", "POST"): (lambda w: ("/admin/2fa", {"code": "abc"}), everyone(400)),
    ("/admin/", "GET"): (_get("/admin/"), everyone(200)),
    ("/admin/subscribers", "GET"): (_get("/admin/subscribers?q=ana"), everyone(200)),
    ("/admin/subscribers/<public_id>", "GET"): (_get("/admin/subscribers/{pid}"), everyone(200)),
    ("/admin/subscribers/<public_id>/<action>", "POST"): (
        lambda w: (f"/admin/subscribers/{w.reader.public_id}/pause", {}),
        everyone(303),
    ),
    ("/admin/retry-failed", "POST"): (lambda w: ("/admin/retry-failed", {}), everyone(303)),
    ("/admin/subscribers/<public_id>/export.json", "GET"): (
        _get("/admin/subscribers/{pid}/export.json"),
        at_least(Role.THERAPIST, 200),
    ),
    ("/admin/subscribers/<public_id>/erase", "GET"): (
        _get("/admin/subscribers/{pid}/erase"),
        everyone(200),
    ),
    ("/admin/subscribers/<public_id>/erase", "POST"): (
        lambda w: (f"/admin/subscribers/{w.reader.public_id}/erase", {"confirm": "not it"}),
        everyone(400),  # passed the role check, refused for the wrong confirmation
    ),
    # The old lesson pages lead to the course editor.
    ("/admin/lessons", "GET"): (_get("/admin/lessons"), everyone(302)),
    ("/admin/lessons/<int:key>", "GET"): (_get("/admin/lessons/2"), everyone(302)),
    ("/admin/lessons/<int:key>/test", "POST"): (
        lambda w: ("/admin/lessons/2/test", {}),
        everyone(307),
    ),
    # The course editor: everyone looks, previews and tests; therapists and owners edit.
    # The edits here pass the role check and are then refused for what they send (400,
    # 409), so the shared course stays as it is.
    ("/admin/courses", "GET"): (_get("/admin/courses"), everyone(200)),
    ("/admin/courses", "POST"): (
        lambda w: ("/admin/courses", {"title": "New", "slug": f"new-{next(w.numbers)}"}),
        at_least(Role.THERAPIST, 303),
    ),
    ("/admin/courses/<slug>", "GET"): (_get(EDITOR), everyone(200)),
    ("/admin/courses/<slug>/settings", "POST"): (
        lambda w: (f"{EDITOR}/settings", {"title": ""}),
        at_least(Role.THERAPIST, 400),
    ),
    ("/admin/courses/<slug>/lessons", "POST"): (
        lambda w: (f"{EDITOR}/lessons", {"title": ""}),
        at_least(Role.THERAPIST, 400),
    ),
    ("/admin/courses/<slug>/lessons/<int:key>", "GET"): (
        _get(f"{EDITOR}/lessons/2"),
        everyone(200),
    ),
    ("/admin/courses/<slug>/lessons/<int:key>", "POST"): (
        lambda w: (f"{EDITOR}/lessons/2", {"title": "Not as shown"}),
        at_least(Role.THERAPIST, 409),
    ),
    ("/admin/courses/<slug>/lessons/<int:key>/move", "POST"): (
        lambda w: (f"{EDITOR}/lessons/2/move", {"direction": "sideways"}),
        at_least(Role.THERAPIST, 400),
    ),
    ("/admin/courses/<slug>/lessons/<int:key>/remove", "POST"): (
        lambda w: (f"{EDITOR}/lessons/2/remove", {}),
        at_least(Role.THERAPIST, 409),
    ),
    ("/admin/courses/<slug>/after/<which>", "GET"): (
        _get(f"{EDITOR}/after/completion"),
        everyone(200),
    ),
    ("/admin/courses/<slug>/after/<which>", "POST"): (
        lambda w: (f"{EDITOR}/after/completion", {"days": "many"}),
        at_least(Role.THERAPIST, 400),
    ),
    ("/admin/courses/<slug>/preview/<kind>/<int:key>", "GET"): (
        _get(f"{EDITOR}/preview/lesson/2"),
        everyone(200),
    ),
    ("/admin/courses/<slug>/test/<kind>/<int:key>", "POST"): (
        lambda w: (f"{EDITOR}/test/lesson/2", {}),
        everyone(303),
    ),
    ("/admin/courses/<slug>/publish", "GET"): (
        _get(f"{EDITOR}/publish"),
        at_least(Role.THERAPIST, 200),
    ),
    ("/admin/courses/<slug>/publish", "POST"): (
        lambda w: (f"{EDITOR}/publish", {"draft": "not the reviewed one"}),
        at_least(Role.THERAPIST, 409),
    ),
    ("/admin/courses/<slug>/discard", "POST"): (
        lambda w: (f"{EDITOR}/discard", {}),
        at_least(Role.THERAPIST, 303),
    ),
    ("/admin/courses/<slug>/versions", "GET"): (
        _get(f"{EDITOR}/versions?diff=1"),
        everyone(200),
    ),
    ("/admin/courses/<slug>/versions/<int:number>/revert", "POST"): (
        lambda w: (f"{EDITOR}/versions/99/revert", {}),
        at_least(Role.THERAPIST, 404),
    ),
    ("/admin/care", "GET"): (_get("/admin/care"), at_least(Role.THERAPIST, 200)),
    ("/admin/care/mark", "POST"): (
        lambda w: ("/admin/care/mark", {"item": w.note_item, "status": "seen"}),
        at_least(Role.THERAPIST, 303),
    ),
    ("/admin/staff", "GET"): (_get("/admin/staff"), at_least(Role.OWNER, 200)),
    ("/admin/staff", "POST"): (
        lambda w: (
            "/admin/staff",
            {
                "email": f"new{next(w.numbers)}@harbor.example.org",
                "role": "assistant",
                "timezone": "Europe/Berlin",
                "password": PASSWORD,
            },
        ),
        at_least(Role.OWNER, 303),
    ),
    ("/admin/staff/<int:operator_id>/role", "POST"): (
        lambda w: (f"/admin/staff/{w.target_id}/role", {"role": "assistant"}),
        at_least(Role.OWNER, 303),
    ),
    ("/admin/staff/<int:operator_id>/reset-2fa", "POST"): (
        lambda w: (f"/admin/staff/{w.target_id}/reset-2fa", {}),
        at_least(Role.OWNER, 303),
    ),
    ("/admin/staff/<int:operator_id>/remove", "POST"): (
        lambda w: (f"/admin/staff/{w.throwaway()}/remove", {}),
        at_least(Role.OWNER, 303),
    ),
    ("/admin/audit", "GET"): (_get("/admin/audit"), at_least(Role.OWNER, 200)),
}

#: Routes anyone may open: the two sign-in steps.
PUBLIC = {"admin.login", "admin.login_code"}


def test_the_matrix_names_every_admin_route(world: World) -> None:
    """A new admin route fails here until it is in ROUTES with what each role gets, and
    until its view has the role check (``requires``)."""
    found = set()
    for rule in world.app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.add((rule.rule, method))
        assert rule.endpoint in PUBLIC or rule.endpoint in REQUIRED_ROLES, (
            f"{rule.rule} ({rule.endpoint}) has no role check: use @requires(...)"
        )
    assert found - set(ROUTES) == set(), "admin routes missing from ROUTES"
    assert set(ROUTES) - found == set(), "ROUTES names routes that do not exist"


@pytest.mark.parametrize("role", [None, *Role], ids=["anonymous", *Role])
@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {r}" for r, m in ROUTES])
def test_every_admin_route_checks_the_role(
    world: World, route: tuple[str, str], role: Role | None
) -> None:
    rule, method = route
    build, expected = ROUTES[route]
    client = world.app.test_client() if role is None else staff_client(world.app, EMAILS[role])
    path, data = build(world)
    if method == "GET":
        response = client.get(path)
    else:
        response = client.post(path, data={**data, "csrf_token": csrf_token(client)})
    body = response.get_data(as_text=True)
    if role is None:
        public = rule.startswith(LOGIN)
        want = expected[Role.ASSISTANT] if public else 302
        assert response.status_code == want, (path, response.status_code)
        if not public:
            assert response.headers["Location"].startswith(LOGIN)
    else:
        assert response.status_code == expected[role], (path, response.status_code)
        if response.status_code == 403:
            assert "isn't part of your role" in body
            assert "ask an owner" in body
    # What readers wrote reaches only the roles that read notes.
    if role is None or not role.reads_notes:
        assert NOTE not in body and REPLY not in body
        assert "want to die" not in body  # not even the matched risk phrase


@pytest.mark.parametrize("role", [Role.THERAPIST, Role.OWNER])
def test_therapists_and_owners_read_notes_and_replies(world: World, role: Role) -> None:
    client = staff_client(world.app, EMAILS[role])
    page = client.get(f"/admin/subscribers/{world.reader.public_id}").get_data(as_text=True)
    assert NOTE in page and REPLY in page
    export = client.get(f"/admin/subscribers/{world.reader.public_id}/export.json").get_json()
    assert export["lessons"][0]["note"] == NOTE
    assert export["replies"][0]["text"] == REPLY


def test_an_assistant_sees_the_timeline_but_no_words_of_the_reader(world: World) -> None:
    client = staff_client(world.app, ASSISTANT)
    page = client.get(f"/admin/subscribers/{world.reader.public_id}").get_data(as_text=True)
    assert NOTE not in page and REPLY not in page and "Re: Day 1" not in page
    # The facts are there: a check-in, that a note was written, that they replied.
    assert "Checked in on lesson 1: stirred things up" in page
    assert "Wrote a note on lesson 1" in page
    assert "Replied by email <span" in page
    assert "shown only to therapists and owners" in page
    # No export link (the export contains the notes), but every other action.
    actions = {f.action for f in forms(page)}
    assert f"/admin/subscribers/{world.reader.public_id}/unsubscribe" in actions
    assert "export.json" not in page
    assert f"/admin/subscribers/{world.reader.public_id}/erase" in page


@pytest.mark.parametrize(
    ("role", "visible", "hidden"),
    [
        (Role.ASSISTANT, [], ["/admin/care", "/admin/staff", "/admin/audit"]),
        (Role.THERAPIST, ["/admin/care"], ["/admin/staff", "/admin/audit"]),
        (Role.OWNER, ["/admin/care", "/admin/staff", "/admin/audit"], []),
    ],
)
def test_the_navigation_shows_only_what_the_role_can_use(
    world: World, role: Role, visible: list[str], hidden: list[str]
) -> None:
    page = staff_client(world.app, EMAILS[role]).get("/admin/").get_data(as_text=True)
    for link in ["/admin/subscribers", "/admin/courses", "/admin/2fa", *visible]:
        assert f'href="{link}"' in page, link
    for link in hidden:
        assert f'href="{link}"' not in page, link


# -- staff accounts -------------------------------------------------------------------------


@pytest.fixture
def owner(app: Flask) -> FlaskClient:
    add_staff(app, OWNER, "owner")
    return staff_client(app, OWNER)


def role_in_db(app: Flask, email: str) -> str | None:
    sessions: sessionmaker[Session] = app.extensions["course"].sessions
    with sessions() as s:
        return s.scalars(select(Operator.role).where(Operator.email == email)).first()


def test_an_owner_creates_staff_who_then_sign_in_with_that_role(
    app: Flask, owner: FlaskClient
) -> None:
    page = owner.get("/admin/staff")
    response = submit(
        owner,
        page,
        "/admin/staff",
        email="lee@harbor.example.org",
        role="therapist",
        timezone="Europe/Berlin",
        password="lee's first password",
    )
    assert response.status_code == 303
    listing = owner.get("/admin/staff").get_data(as_text=True)
    assert "Created lee@harbor.example.org" in listing and "lee@harbor.example.org" in listing
    assert role_in_db(app, "lee@harbor.example.org") == "therapist"
    lee = app.test_client()
    assert sign_in(lee, "lee@harbor.example.org", "lee's first password").status_code == 302
    assert lee.get("/admin/care").status_code == 200
    assert lee.get("/admin/staff").status_code == 403
    # A bad form is shown again with the reasons; nothing is created.
    bad = submit(
        owner,
        owner.get("/admin/staff"),
        "/admin/staff",
        email="lee@harbor.example.org",
        role="therapist",
        timezone="Mars/Olympus",
        password="short",
    )
    assert bad.status_code == 400
    assert "Use a time zone name" in bad.get_data(as_text=True)
    duplicate = submit(
        owner,
        owner.get("/admin/staff"),
        "/admin/staff",
        email="LEE@harbor.example.org",
        role="assistant",
        timezone="UTC",
        password="another long password",
    )
    assert duplicate.status_code == 400 and "already exists" in duplicate.get_data(as_text=True)


def test_a_role_change_applies_at_once(app: Flask, owner: FlaskClient) -> None:
    kim = add_staff(app, "kim@harbor.example.org", "assistant")
    kims_browser = staff_client(app, "kim@harbor.example.org")
    assert kims_browser.get("/admin/care").status_code == 403
    action = f"/admin/staff/{kim}/role"
    assert submit(owner, owner.get("/admin/staff"), action, role="therapist").status_code == 303
    assert "kim@harbor.example.org is now therapist" in owner.get("/admin/staff").get_data(
        as_text=True
    )
    # Same session, no new sign-in: the role is read at every request.
    assert kims_browser.get("/admin/care").status_code == 200
    assert submit(owner, owner.get("/admin/staff"), action, role="assistant").status_code == 303
    assert kims_browser.get("/admin/care").status_code == 403
    # A made-up role is refused.
    token = csrf_token(owner)
    assert owner.post(action, data={"role": "admin", "csrf_token": token}).status_code == 400
    assert role_in_db(app, "kim@harbor.example.org") == "assistant"


def test_the_last_owner_can_neither_demote_nor_remove_themselves(
    app: Flask, owner: FlaskClient
) -> None:
    with app.extensions["course"].sessions() as s:
        me = s.scalars(select(Operator.id).where(Operator.email == OWNER)).one()
    demote = submit(owner, owner.get("/admin/staff"), f"/admin/staff/{me}/role", role="therapist")
    assert demote.status_code == 303
    assert "the practice needs an owner" in owner.get("/admin/staff").get_data(as_text=True)
    remove = submit(owner, owner.get("/admin/staff"), f"/admin/staff/{me}/remove")
    assert remove.status_code == 303
    assert "the practice needs an owner" in owner.get("/admin/staff").get_data(as_text=True)
    assert role_in_db(app, OWNER) == "owner"
    # With a second owner, the first may step down; the second then cannot.
    second = add_staff(app, "pat@harbor.example.org", "owner")
    page = owner.get("/admin/staff")
    assert submit(owner, page, f"/admin/staff/{me}/role", role="therapist").status_code == 303
    assert role_in_db(app, OWNER) == "therapist"
    assert owner.get("/admin/staff").status_code == 403  # no longer an owner, at once
    pat = staff_client(app, "pat@harbor.example.org")
    submit(pat, pat.get("/admin/staff"), f"/admin/staff/{second}/remove")
    assert role_in_db(app, "pat@harbor.example.org") == "owner"


def test_removing_an_account_ends_its_sessions(app: Flask, owner: FlaskClient) -> None:
    kim = add_staff(app, "kim@harbor.example.org", "therapist")
    kims_browser = staff_client(app, "kim@harbor.example.org")
    assert kims_browser.get("/admin/").status_code == 200
    response = submit(owner, owner.get("/admin/staff"), f"/admin/staff/{kim}/remove")
    assert response.status_code == 303
    assert "Removed kim@harbor.example.org" in owner.get("/admin/staff").get_data(as_text=True)
    assert kims_browser.get("/admin/").status_code == 302
    assert sign_in(app.test_client(), "kim@harbor.example.org").status_code == 401
    token = csrf_token(owner)
    assert owner.post(f"/admin/staff/{kim}/remove", data={"csrf_token": token}).status_code == 404


def test_a_staff_change_without_csrf_token_is_refused(app: Flask, owner: FlaskClient) -> None:
    kim = add_staff(app, "kim@harbor.example.org", "assistant")
    assert owner.post(f"/admin/staff/{kim}/role", data={"role": "owner"}).status_code == 400
    assert role_in_db(app, "kim@harbor.example.org") == "assistant"


# -- the command line -----------------------------------------------------------------------


def test_admin_create_makes_the_first_account_an_owner_and_asks_for_a_role_after(
    runner: CourseRunner, app: Flask
) -> None:
    typed = f"{PASSWORD}\n{PASSWORD}\n"
    first = runner.invoke(["admin", "create", OWNER], input=typed)
    assert first.exit_code == 0, first.output
    assert f"Created operator {OWNER}. Role: owner." in first.output
    second = runner.invoke(["admin", "create", THERAPIST], input=typed)
    assert second.exit_code == 2
    assert "--role" in second.output and "Password" not in second.output  # asked first
    third = runner.invoke(["admin", "create", THERAPIST, "--role", "therapist"], input=typed)
    assert third.exit_code == 0 and "Role: therapist." in third.output
    bad = runner.invoke(["admin", "create", ASSISTANT, "--role", "admin"], input=typed)
    assert bad.exit_code == 2
    assert role_in_db(app, THERAPIST) == "therapist" and role_in_db(app, ASSISTANT) is None
    listing = runner.invoke(["admin", "list"])
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert any(OWNER in line and "owner" in line and "never" in line for line in lines)
    assert any(THERAPIST in line and "therapist" in line and "off" in line for line in lines)


def test_an_unknown_role_in_the_database_grants_the_least(app: Flask) -> None:
    add_staff(app, OWNER, "owner")
    with app.extensions["course"].sessions() as s, s.begin():
        s.scalars(select(Operator)).one().role = "superuser"
    client = staff_client(app, OWNER)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/care").status_code == 403


# -- the rules themselves, on SQLite and PostgreSQL -----------------------------------------------


def test_role_rules_on_every_database(db_url: str) -> None:
    sessions = sessions_for(db_url)
    with sessions() as s, s.begin():
        first = create_operator(s, OWNER, PASSWORD)
        assert first.role == "owner"  # the first account, without being told
        with pytest.raises(OperatorError, match="name a role"):
            create_operator(s, THERAPIST, PASSWORD)
        with pytest.raises(OperatorError, match="name a role"):
            create_operator(s, THERAPIST, PASSWORD, role="superuser")
        therapist = create_operator(s, THERAPIST, PASSWORD, role=Role.THERAPIST)
        ids = first.id, therapist.id
    owner_id, therapist_id = ids
    with sessions() as s, s.begin():
        with pytest.raises(OperatorError, match="needs an owner"):
            set_role(s, owner_id, Role.ASSISTANT)
        with pytest.raises(OperatorError, match="needs an owner"):
            remove_operator(s, owner_id)
        set_role(s, therapist_id, "owner")
    with sessions() as s, s.begin():
        set_role(s, owner_id, "assistant")  # another owner exists now
        with pytest.raises(OperatorError, match="needs an owner"):
            remove_operator(s, therapist_id)
        assert remove_operator(s, owner_id) == OWNER
    with sessions() as s:
        assert [(o.email, o.role) for o in staff(s)] == [(THERAPIST, "owner")]
