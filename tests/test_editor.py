"""The course editor in the admin (issue 14): a course is created, written, checked,
previewed, test-sent and published in the browser's forms; every version is kept with its
author, compared and reverted; publishing says first what it does to readers, and those
words match what the sender then does; readers only ever get published versions.

Pages are driven as a browser drives them: each test fills in and sends the forms the
pages show (tests.helpers.forms), CSRF tokens included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from course.app import create_app
from course.content import CourseContent
from course.courses import draft_content, published_content
from course.editor import (
    EditProblem,
    ReaderPlace,
    StaleEdit,
    add_lesson,
    diff,
    diff_text,
    impact_of,
    move_lesson,
    new_key,
    remove_lesson,
    update_lesson,
)
from course.lessons import LessonFields
from course.models import Course, CourseVersion, Operator, SubscriberStatus, utcnow
from course.subscriptions import snooze
from tests.conftest import FakeClock, RecordingHandler, make_config
from tests.helpers import forms, parse, text_part
from tests.test_live_edits import COMPLETION, Harness, five_lessons
from tests.test_roles import add_staff, csrf_token, form_on, staff_client, submit
from tests.test_security import assert_no_third_party

#: For tests of form handling alone, which need not run on both databases.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

THERAPIST = "therapist@harbor.example.org"
ASSISTANT = "assistant@harbor.example.org"
COURSE = "/admin/courses/calm-at-work"


def body(reflection: str = "Write down one thing.") -> str:
    return f"A lesson in **Markdown**.\n\n## Today's reflection\n\n{reflection}"


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> dict[str, Any]:
    """Every test here on SQLite and on PostgreSQL (the editor's queries and locks)."""
    return make_config(tmp_path, db_url)


@pytest.fixture
def therapist(app: Flask) -> FlaskClient:
    add_staff(app, THERAPIST, "therapist")
    return staff_client(app, THERAPIST)


@pytest.fixture
def assistant(app: Flask) -> FlaskClient:
    add_staff(app, ASSISTANT, "assistant")
    return staff_client(app, ASSISTANT)


def page(client: FlaskClient, path: str, status: int = 200) -> TestResponse:
    response = client.get(path)
    assert response.status_code == status, (path, response.status_code)
    return response


def follow(client: FlaskClient, response: TestResponse) -> TestResponse:
    """The page a 303 leads to."""
    assert response.status_code == 303, response.status_code
    return page(client, response.headers["Location"])


def html(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def new_course(
    client: FlaskClient, title: str = "Calm at work", slug: str = "calm-at-work"
) -> None:
    response = submit(
        client, page(client, "/admin/courses"), "/admin/courses", title=title, slug=slug
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/courses/{slug}"


def add(client: FlaskClient, title: str, course: str = COURSE, **fields: str) -> int:
    """Add a lesson through the course page, fill in its form; returns its key."""
    response = submit(client, page(client, course), f"{course}/lessons", title=title)
    assert response.status_code == 303
    location = response.headers["Location"]
    key = int(location.rsplit("/", 1)[1])
    values = {"body": body(), **fields}
    saved = submit(client, page(client, location), location, None, **values)
    assert saved.status_code == 303
    return key


def selected(page: TestResponse) -> dict[str, str]:
    """What a browser sends for each <select> on the page: the selected option, else the
    first one (tests.helpers.forms reads inputs and text areas only)."""
    found = {}
    for name, options in re.findall(
        r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', html(page), re.S
    ):
        values = re.findall(r'<option value="([^"]*)"( selected)?', options)
        chosen = [v for v, flag in values if flag] or [values[0][0]]
        found[name] = chosen[0]
    return found


def settings_form(client: FlaskClient, course: str = COURSE) -> dict[str, str]:
    """The course's settings form as a browser would send it unchanged."""
    shown = page(client, course)
    form = form_on(shown, f"{course}/settings")
    return {**form.fields, **selected(shown)}


def stored(app: Flask, slug: str = "calm-at-work") -> tuple[Course, CourseContent, CourseContent]:
    """The course, its draft and its published content, as stored."""
    with app.extensions["course"].sessions() as s:
        course = s.scalars(select(Course).where(Course.slug == slug)).one()
        draft, published = draft_content(s, course), published_content(s, course)
        s.expunge(course)
    return course, draft, published


def titles(content: CourseContent) -> list[str]:
    return [lesson.title for lesson in content.lessons]


def publish_form(client: FlaskClient, course: str = COURSE, **values: str) -> TestResponse:
    review = page(client, f"{course}/publish")
    return submit(client, review, f"{course}/publish", None, **values)


# -- the editing operations, without Flask ------------------------------------------------------


def lessons(*keys: int) -> CourseContent:
    return CourseContent(
        lessons=tuple(
            LessonFields(key=k, subject=f"S{k}", title=f"T{k}", body=body()) for k in keys
        )
    )


def test_a_new_lesson_never_takes_a_key_an_earlier_version_used() -> None:
    content = lessons(1, 2)
    assert new_key(content, used={1, 2, 3, 7}) == 8  # 7 was removed in an earlier version
    added, lesson = add_lesson(content, {1, 2, 3, 7}, "  Breathing   out ")
    assert lesson.key == 8 and lesson.title == "Breathing out" and lesson.delay_days == 1
    assert lesson.subject == "Day {day} of {total}: Breathing out"
    assert [ls.key for ls in added.lessons] == [1, 2, 8]
    assert content.lessons == lessons(1, 2).lessons  # the models are frozen: a new content
    first, lesson = add_lesson(CourseContent(), set(), "First")
    assert lesson.key == 1 and lesson.delay_days == 0  # right after joining
    with pytest.raises(EditProblem):
        add_lesson(content, set(), "   ")


def test_moving_removing_and_updating_lessons() -> None:
    content = lessons(1, 2, 3)
    assert [ls.key for ls in move_lesson(content, 3, -1).lessons] == [1, 3, 2]
    assert [ls.key for ls in move_lesson(content, 1, 1).lessons] == [2, 1, 3]
    assert move_lesson(content, 1, -1) == content  # already first
    assert [ls.key for ls in remove_lesson(content, 2).lessons] == [1, 3]
    changed = update_lesson(content, 2, {"title": "New", "delay_days": 4})
    assert changed.lesson(2) == content.lessons[1].model_copy(
        update={"title": "New", "delay_days": 4}
    )
    for bad in ({"delay_days": -1}, {"delay_days": 366}, {"key": 9}, {"colour": "red"}):
        with pytest.raises(EditProblem):
            update_lesson(content, 2, bad)
    for stale in (
        lambda: move_lesson(content, 9, 1),
        lambda: remove_lesson(content, 9),
        lambda: update_lesson(content, 9, {"title": "x"}),
    ):
        with pytest.raises(StaleEdit):
            stale()


def test_the_diff_names_each_change_by_lesson() -> None:
    old = lessons(1, 2, 3, 4)
    new = update_lesson(remove_lesson(move_lesson(old, 4, -3), 2), 1, {"body": body("Other")})
    new, _ = add_lesson(new, {1, 2, 3, 4}, "Fresh")  # order: 4, 1, 3, 5
    entries = {entry.name: entry for entry in diff(old, new)}
    assert [e.status for e in entries.values()] == ["moved", "changed", "added", "removed"]
    assert entries["Lesson 1 “T4”"].note == "moved from place 4 to 1"
    assert entries["Lesson 1 “T4”"].lines == ()
    changed = entries["Lesson 2 “T1”"]
    assert [(line.kind, line.text) for line in changed.lines if line.kind in ("add", "del")] == [
        ("del", "-Write down one thing."),
        ("add", "+Other"),
    ]
    assert entries["“T2”"].note == "was lesson 2"
    text = diff_text(old, new)
    assert "--- 01-lesson-1.md\n+++ 02-lesson-1.md\n" in text and "+title: Fresh" in text
    assert diff(old, old) == [] and diff_text(old, old) == ""


# -- creating and writing a course --------------------------------------------------------------


def test_a_therapist_creates_a_course_and_writes_adds_reorders_and_removes_lessons(
    app: Flask, therapist: FlaskClient
) -> None:
    new_course(therapist)
    listing = html(page(therapist, "/admin/courses"))
    assert "Calm at work" in listing and "not yet" in listing
    first = add(therapist, "Breathing", delay_days="0")
    second = add(therapist, "Noticing")
    third = add(therapist, "Resting", subject="Day {day} of {total}: Rest", preheader="Slow.")
    assert (first, second, third) == (1, 2, 3)
    _, draft, published = stored(app)
    assert titles(draft) == ["Breathing", "Noticing", "Resting"]
    assert published == CourseContent()  # nothing reaches readers before publishing
    assert draft.lesson(3) == LessonFields(
        key=3,
        delay_days=1,
        subject="Day {day} of {total}: Rest",
        title="Resting",
        preheader="Slow.",
        body=body(),
    )

    # Move "Resting" up, then remove "Noticing": the buttons of the course page.
    course_page = page(therapist, COURSE)
    response = submit(therapist, course_page, f"{COURSE}/lessons/3/move", ("direction", "up"))
    assert response.status_code == 303
    assert titles(stored(app)[1]) == ["Breathing", "Resting", "Noticing"]
    response = submit(therapist, page(therapist, COURSE), f"{COURSE}/lessons/2/remove")
    assert "Lesson removed" in html(follow(therapist, response))
    assert titles(stored(app)[1]) == ["Breathing", "Resting"]
    # The first lesson has no "Up", the last no "Down".
    buttons = form_on(page(therapist, COURSE), f"{COURSE}/lessons/1/move").buttons
    assert buttons == [("direction", "down")]

    # A new lesson after a removed one never reuses its key, once a version had it.
    assert publish_form(therapist).status_code == 303
    response = submit(therapist, page(therapist, COURSE), f"{COURSE}/lessons/3/remove")
    assert add(therapist, "Again") == 4

    # Settings apply at once, with the same checks as a course.yaml.
    response = therapist.post(
        f"{COURSE}/settings",
        data={
            **settings_form(therapist),
            "description": "Ten quiet minutes.",
            "send_hour": "7",
            "weekdays_only": "y",
            "booking_url": "https://work.example.org/book",
        },
    )
    assert response.status_code == 303
    course, _, _ = stored(app)
    assert (course.description, course.send_hour, course.weekdays_only) == (
        "Ten quiet minutes.",
        7,
        True,
    )
    assert course.booking_url == "https://work.example.org/book"


@sqlite_only
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"booking_url": "javascript:alert(1)"}, "full address starting with https://"),
        ({"language": "not a language"}, "language code"),
        ({"send_hour": "24"}, "an hour from 0 to 23"),
        ({"status": "deleted"}, "draft, published or archived"),
        ({"title": ""}, "This field is required"),
    ],
)
def test_bad_settings_are_a_400_with_the_reason_and_change_nothing(
    app: Flask, therapist: FlaskClient, values: dict[str, str], message: str
) -> None:
    new_course(therapist)
    response = therapist.post(f"{COURSE}/settings", data={**settings_form(therapist), **values})
    assert response.status_code == 400
    assert message in html(response)
    course, _, _ = stored(app)
    assert (course.title, course.booking_url, course.language) == ("Calm at work", None, "en")


@sqlite_only
@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("Calm At Work", "lower-case letters"),
        ("feeling-secure", "already exists"),
        ("", "required"),
    ],
)
def test_a_course_with_a_bad_or_taken_address_is_refused(
    therapist: FlaskClient, slug: str, message: str
) -> None:
    response = submit(
        therapist, page(therapist, "/admin/courses"), "/admin/courses", title="X", slug=slug
    )
    assert response.status_code == 400 and message in html(response)


def test_an_unknown_placeholder_is_saved_and_shown_but_blocks_publishing(
    app: Flask, therapist: FlaskClient
) -> None:
    new_course(therapist)
    key = add(therapist, "Breathing", body="Hello {name}, breathe.\n\n## Today's reflection\n\nx")
    # Kept in the draft (nothing typed is lost), and shown next to the form.
    assert "Hello {name}" in stored(app)[1].lessons[0].body
    lesson_page = html(page(therapist, f"{COURSE}/lessons/{key}"))
    assert "the unknown placeholder {name}" in lesson_page
    assert "No preview" in lesson_page
    assert "unknown placeholder {name}" in html(page(therapist, COURSE))
    # The review page has no publish button, and a publish sent anyway is refused.
    review = page(therapist, f"{COURSE}/publish")
    assert "cannot be published yet" in html(review)
    assert not [f for f in forms(html(review)) if f.action == f"{COURSE}/publish"]
    _, draft, _ = stored(app)
    from course.web.admin_courses import fingerprint

    refused = therapist.post(
        f"{COURSE}/publish",
        data={"csrf_token": csrf_token(therapist), "draft": fingerprint(draft)},
    )
    assert refused.status_code == 400 and "unknown placeholder {name}" in html(refused)
    assert stored(app)[2] == CourseContent()  # nothing published
    # Fixed: it publishes.
    fixed = submit(
        therapist,
        page(therapist, f"{COURSE}/lessons/{key}"),
        f"{COURSE}/lessons/{key}",
        body=body(),
    )
    assert fixed.status_code == 303
    assert publish_form(therapist).status_code == 303
    assert titles(stored(app)[2]) == ["Breathing"]


@sqlite_only
@pytest.mark.parametrize(
    ("field", "value"), [("delay_days", "soon"), ("delay_days", "-1"), ("delay_days", "400")]
)
def test_a_lesson_form_with_a_value_out_of_range_is_a_400_and_saves_nothing(
    app: Flask, therapist: FlaskClient, field: str, value: str
) -> None:
    new_course(therapist)
    key = add(therapist, "Breathing")
    before = stored(app)[1]
    response = submit(
        therapist,
        page(therapist, f"{COURSE}/lessons/{key}"),
        f"{COURSE}/lessons/{key}",
        None,
        **{field: value, "title": "Changed"},
    )
    assert response.status_code == 400
    assert 'class="error"' in html(response)
    assert stored(app)[1] == before


def test_the_completion_and_follow_up_emails_are_edited_checked_and_removed(
    app: Flask, therapist: FlaskClient
) -> None:
    new_course(therapist)
    add(therapist, "Breathing")
    completion, followup = f"{COURSE}/after/completion", f"{COURSE}/after/followup"
    assert "has no completion email" in html(page(therapist, completion))
    response = submit(
        therapist, page(therapist, completion), completion, subject="Well done, {name}", days="2"
    )
    assert response.status_code == 303
    shown = html(follow(therapist, response))
    assert "unknown placeholder {name}" in shown and "the completion email has no text" in shown
    assert "cannot be published yet" in html(page(therapist, f"{COURSE}/publish"))
    submit(therapist, page(therapist, completion), completion, subject="Well done", body="Rest.")
    response = submit(
        therapist, page(therapist, followup), followup, subject="Two weeks on", body="How are you?"
    )
    assert response.status_code == 303
    assert submit(therapist, page(therapist, followup), followup, days="-3").status_code == 400
    _, draft, _ = stored(app)
    assert draft.completion is not None and (draft.completion.subject, draft.completion.days) == (
        "Well done",
        2,
    )
    assert draft.followup is not None and draft.followup.days == 14  # the form's default
    review = html(page(therapist, f"{COURSE}/publish"))
    assert "The completion email added" in review and "The follow-up email added" in review
    assert publish_form(therapist).status_code == 303
    # Removed with its own button; the course page says so.
    response = submit(therapist, page(therapist, followup), followup, ("remove", "yes"))
    assert "Follow-up email removed" in html(follow(therapist, response))
    assert stored(app)[1].followup is None and stored(app)[2].followup is not None


# -- previews and test sends --------------------------------------------------------------------


def test_the_preview_is_the_email_in_sandboxed_frames_with_its_text_part(
    app: Flask, therapist: FlaskClient
) -> None:
    new_course(therapist)
    key = add(therapist, "Breathing <b>out</b>", preheader="A quiet minute.")
    lesson_page = html(page(therapist, f"{COURSE}/lessons/{key}"))
    frames = re.findall(r"<iframe[^>]*>", lesson_page)
    assert len(frames) == 2
    for frame in frames:
        assert re.search(r"\bsandbox\b(?!=)", frame)  # no allow-scripts, no allow-same-origin
    assert 'class="preview phone"' in lesson_page and 'class="preview desktop"' in lesson_page
    source = re.search(r'src="([^"]+)"', frames[0])
    assert source is not None
    # The text part, escaped, in a <pre>.
    text = re.search(r'<pre class="text-part">(.*?)</pre>', lesson_page, re.S)
    assert text is not None and "Breathing &lt;b&gt;out&lt;/b&gt;" in text.group(1)
    assert "Subject:</strong> Day 1 of 1: Breathing &lt;b&gt;out&lt;/b&gt;" in lesson_page
    assert_no_third_party(lesson_page, "lesson page")
    assert " style=" not in lesson_page  # the admin's own pages: classes only
    frame = page(therapist, source.group(1))
    assert frame.mimetype == "text/html"
    assert "frame-ancestors 'self'" in frame.headers["Content-Security-Policy"]
    assert "script-src" not in frame.headers["Content-Security-Policy"]  # default-src 'none'
    assert frame.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "A lesson in <strong>Markdown</strong>" in html(frame)
    # A title is text, never markup (only inside a quoted attribute may "<" stay as it is).
    assert ">Breathing &lt;b&gt;out&lt;/b&gt;</h1>" in html(frame)
    assert "<b>" not in re.sub(r'"[^"]*"', "", html(frame))
    assert_no_third_party(html(frame), "preview")
    # Every other page of the editor frames nothing and runs no inline script.
    for path in (COURSE, f"{COURSE}/publish", f"{COURSE}/versions", "/admin/courses"):
        shown = html(page(therapist, path))
        assert_no_third_party(shown, path)
        assert " style=" not in shown, path
    assert (
        page(app.test_client(), source.group(1), 302).headers["Location"].startswith("/admin/login")
    )


@pytest.fixture
def smtp_app(
    tmp_path: Path, sqlite_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> Iterator[Flask]:
    controller, _ = smtp_server
    application = create_app(
        make_config(tmp_path, sqlite_url, MAIL_URL=f"smtp://127.0.0.1:{controller.port}")
    )
    yield application
    application.extensions["course"].engine.dispose()


def test_send_me_a_test_of_a_draft_lesson_and_email_arrives_at_the_smtp_server(
    smtp_app: Flask, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    _, handler = smtp_server
    add_staff(smtp_app, ASSISTANT, "assistant")
    add_staff(smtp_app, THERAPIST, "therapist")
    therapist = staff_client(smtp_app, THERAPIST)
    new_course(therapist)
    key = add(therapist, "Breathing")
    completion = f"{COURSE}/after/completion"
    saved = submit(
        therapist, page(therapist, completion), completion, subject="Well done", body="You did it."
    )
    assert saved.status_code == 303
    # An assistant, who cannot edit, tests the draft too: to their own address only.
    assistant = staff_client(smtp_app, ASSISTANT)
    response = submit(
        assistant, page(assistant, f"{COURSE}/lessons/{key}"), f"{COURSE}/test/lesson/{key}"
    )
    assert f"A test was sent to {ASSISTANT}" in html(follow(assistant, response))
    response = submit(assistant, page(assistant, completion), f"{COURSE}/test/completion/0")
    assert response.status_code == 303
    lesson, after = handler.messages
    assert lesson.rcpt_tos == [ASSISTANT] and after.rcpt_tos == [ASSISTANT]
    assert parse(lesson.data)["Subject"] == "[Test] Day 1 of 1: Breathing"
    assert "Write down one thing." in text_part(lesson.data)
    assert parse(after.data)["Subject"] == "[Test] Well done"
    # A lesson that cannot be built is not sent; the page says why.
    broken = add(therapist, "Unfinished", body="")
    response = submit(
        therapist, page(therapist, f"{COURSE}/lessons/{broken}"), f"{COURSE}/lessons/{broken}"
    )
    assert response.status_code == 303  # saved, with its problem
    response = therapist.post(
        f"{COURSE}/test/lesson/{broken}", data={"csrf_token": csrf_token(therapist)}
    )
    assert "Not sent: fix the problems" in html(follow(therapist, response))
    assert len(handler.messages) == 2


# -- publishing, versions, diff and revert ------------------------------------------------------


def test_publishing_keeps_each_version_with_its_author_and_shows_and_reverts_changes(
    app: Flask, therapist: FlaskClient
) -> None:
    new_course(therapist)
    key = add(therapist, "Breathing", body=body("Count to <four>."))
    add(therapist, "Noticing")
    review = html(page(therapist, f"{COURSE}/publish"))
    assert "Nobody is on this course now" in review
    response = publish_form(therapist, note="First cut")
    assert "Version 1 is published" in html(follow(therapist, response))
    course, draft, published = stored(app)
    assert course.status == "published" and course.draft is None and draft == published
    assert page(app.test_client(), "/c/calm-at-work").status_code == 200  # open for signups

    lesson = f"{COURSE}/lessons/{key}"
    submit(therapist, page(therapist, lesson), lesson, body=body("Count to <five>."))
    assert "the draft has changes readers do not get yet" in html(page(therapist, COURSE)).lower()
    assert stored(app)[2].lesson(key).body == body("Count to <four>.")  # type: ignore[union-attr]
    publish_form(therapist, note="Five, not four")

    with app.extensions["course"].sessions() as s:
        versions = s.scalars(select(CourseVersion).order_by(CourseVersion.number)).all()
        operator_id = s.scalars(select(Operator.id).where(Operator.email == THERAPIST)).one()
    mine = [v for v in versions if v.course_id == course.id]
    assert [(v.number, v.author, v.operator_id, v.note) for v in mine] == [
        (1, THERAPIST, operator_id, "First cut"),
        (2, THERAPIST, operator_id, "Five, not four"),
    ]
    listing = html(page(therapist, f"{COURSE}/versions"))
    assert "First cut" in listing and "Five, not four" in listing and THERAPIST in listing
    # The diff of version 2: the changed line, escaped, coloured by class.
    shown = html(page(therapist, f"{COURSE}/versions?diff=2"))
    assert '<span class="diff-del">-Count to &lt;four&gt;.</span>' in shown
    assert '<span class="diff-add">+Count to &lt;five&gt;.</span>' in shown
    assert "Version 2 against version 1" in shown
    assert "diff-add" in html(page(therapist, f"{COURSE}/versions?diff=1"))  # all added

    # Revert to version 1: copied into the draft, and published the usual way.
    versions_page = page(therapist, f"{COURSE}/versions")
    response = submit(therapist, versions_page, f"{COURSE}/versions/1/revert")
    assert response.headers["Location"] == f"{COURSE}/publish"
    assert stored(app)[1] == CourseContent.from_json(mine[0].content)
    assert stored(app)[2] == CourseContent.from_json(mine[1].content)  # not yet published
    shown = html(page(therapist, f"{COURSE}/versions?diff=draft"))
    assert '<span class="diff-add">+Count to &lt;four&gt;.</span>' in shown
    assert publish_form(therapist).status_code == 303
    assert stored(app)[2] == CourseContent.from_json(mine[0].content)

    # Discarding a draft brings back the published version.
    submit(therapist, page(therapist, lesson), lesson, title="Scrapped")
    submit(therapist, page(therapist, COURSE), f"{COURSE}/discard")
    assert titles(stored(app)[1]) == ["Breathing", "Noticing"]


def test_a_publish_of_a_draft_that_changed_since_the_review_is_refused(
    app: Flask, therapist: FlaskClient
) -> None:
    new_course(therapist)
    add(therapist, "Breathing")
    review = page(therapist, f"{COURSE}/publish")
    add(therapist, "Added in another tab")
    response = submit(therapist, review, f"{COURSE}/publish")
    assert response.status_code == 409 and "changed since you reviewed it" in html(response)
    assert stored(app)[2] == CourseContent()


def test_stale_forms_and_bad_addresses_get_a_message_not_a_500(
    app: Flask, therapist: FlaskClient
) -> None:
    new_course(therapist)
    add(therapist, "Breathing")
    key = add(therapist, "Second")
    lesson_page = page(therapist, f"{COURSE}/lessons/{key}")
    course_page = page(therapist, COURSE)
    submit(therapist, course_page, f"{COURSE}/lessons/{key}/remove")
    # Forms from before the removal.
    for action in (
        f"{COURSE}/lessons/{key}",
        f"{COURSE}/test/lesson/{key}",
        f"{COURSE}/lessons/{key}/remove",
    ):
        shown = lesson_page if "/remove" not in action else course_page
        response = submit(therapist, shown, action)
        assert response.status_code == 409, action
        assert "no longer in the draft" in html(response)
    token = csrf_token(therapist)
    odd = [
        ("get", "/admin/courses/no-such-course", 404),
        ("get", f"{COURSE}/lessons/{key}", 404),
        ("get", f"{COURSE}/lessons/99999999999999999999", 404),
        ("get", f"{COURSE}/after/nothing", 404),
        ("get", f"{COURSE}/preview/attachment/1", 404),
        ("get", f"{COURSE}/preview/lesson/77", 404),
        ("get", f"{COURSE}/versions?diff=abc", 400),
        ("get", f"{COURSE}/versions?diff=9", 404),
        ("get", f"{COURSE}/versions?diff=draft", 200),
        ("post", f"{COURSE}/lessons/1/move", 400),  # no direction
        ("post", f"{COURSE}/versions/9/revert", 404),
        ("post", f"{COURSE}/lessons", 400),  # no title
        ("post", f"{COURSE}/publish", 409),  # no fingerprint of a reviewed draft
    ]
    for method, path, status in odd:
        if method == "get":
            response = therapist.get(path)
        else:
            response = therapist.post(path, data={"csrf_token": token})
        assert response.status_code == status, (path, response.status_code)
    # Without the CSRF token nothing changes.
    assert therapist.post(f"{COURSE}/discard").status_code == 400
    assert titles(stored(app)[1]) == ["Breathing"]

    # Never published, the removed lesson's key is free again: a new lesson takes it. A
    # button or form from before still names the old one, and changes nothing.
    assert add(therapist, "Another") == key
    for action, button in (
        (f"{COURSE}/lessons/{key}/remove", None),
        (f"{COURSE}/lessons/{key}/move", ("direction", "up")),
    ):
        response = submit(therapist, course_page, action, button)
        assert response.status_code == 409 and "changed since" in html(response), action
    response = submit(therapist, lesson_page, f"{COURSE}/lessons/{key}", title="Old tab")
    assert response.status_code == 409
    assert titles(stored(app)[1]) == ["Breathing", "Another"]


@sqlite_only
def test_two_people_editing_one_lesson_lose_nothing(app: Flask, therapist: FlaskClient) -> None:
    new_course(therapist)
    key = add(therapist, "Breathing")
    lesson = f"{COURSE}/lessons/{key}"
    mine, theirs = page(therapist, lesson), page(therapist, lesson)
    assert submit(therapist, theirs, lesson, title="Theirs").status_code == 303
    response = submit(therapist, mine, lesson, title="Mine", body=body("My long text."))
    # Refused, with what was typed still in the form, ready to be saved deliberately.
    assert response.status_code == 409 and "changed since you opened it" in html(response)
    assert titles(stored(app)[1]) == ["Theirs"]
    again = form_on(response, lesson)
    assert again.fields["title"] == "Mine" and "My long text." in again.fields["body"]
    assert therapist.post(lesson, data=again.fields).status_code == 303
    assert titles(stored(app)[1]) == ["Mine"]


# -- roles --------------------------------------------------------------------------------------


def test_an_assistant_looks_and_previews_but_cannot_edit_or_publish(
    app: Flask, therapist: FlaskClient, assistant: FlaskClient
) -> None:
    new_course(therapist)
    key = add(therapist, "Breathing")
    for path in (COURSE, f"{COURSE}/lessons/{key}", f"{COURSE}/versions", "/admin/courses"):
        shown = html(page(assistant, path))
        assert not [f for f in forms(shown) if f.action.endswith(("/publish", "/settings"))]
    assert page(assistant, f"{COURSE}/preview/lesson/{key}").status_code == 200
    token = csrf_token(assistant)
    for path, data in (
        (f"{COURSE}/publish", {}),
        (f"{COURSE}/lessons/{key}", {"title": "Mine", "delay_days": "1"}),
        (f"{COURSE}/lessons", {"title": "New"}),
        (f"{COURSE}/lessons/{key}/remove", {}),
        (f"{COURSE}/settings", {"title": "Mine"}),
        (f"{COURSE}/discard", {}),
        ("/admin/courses", {"title": "Mine", "slug": "mine"}),
    ):
        response = assistant.post(path, data={**data, "csrf_token": token})
        assert response.status_code == 403, path
    assert assistant.get(f"{COURSE}/publish").status_code == 403
    assert titles(stored(app)[1]) == ["Breathing"] and stored(app)[2] == CourseContent()


@sqlite_only
def test_the_old_lesson_pages_lead_to_the_editor(therapist: FlaskClient) -> None:
    response = therapist.get("/admin/lessons")
    assert response.headers["Location"] == "/admin/courses/feeling-secure#lessons"
    assert therapist.get("/admin/lessons/2").headers["Location"] == (
        "/admin/courses/feeling-secure/lessons/2"
    )
    nav = html(page(therapist, "/admin/"))
    assert 'href="/admin/courses">Courses</a>' in nav


# -- readers: only published versions, and the impact summary -----------------------------------


@pytest.fixture
def harness(app: Flask, clock: FakeClock) -> Harness:
    """The live-edit harness (a sender on its own engine, a clock the test moves) on the
    admin app's database."""
    return Harness(app.extensions["course"].settings, clock)


def test_readers_get_only_published_versions(
    app: Flask, therapist: FlaskClient, harness: Harness
) -> None:
    course_id = harness.new_course("calm-at-work", five_lessons())
    pid = harness.enrol("ana@example.com", course_id)
    harness.run_for(hours=1)
    lesson = f"{COURSE}/lessons/2"
    saved = submit(therapist, page(therapist, lesson), lesson, body=body("Only in the draft."))
    assert saved.status_code == 303
    harness.run_for(days=1)  # lesson 2 goes out: as published, not as drafted
    [sent] = [s for s in harness.lessons(pid) if s.key == 2]
    assert "The text of lesson 2, edition 1." in sent.text
    assert "Only in the draft." not in sent.text
    publish_form(therapist)
    lesson = f"{COURSE}/lessons/3"
    submit(therapist, page(therapist, lesson), lesson, body=body("Published in time."))
    publish_form(therapist)
    harness.run_for(days=1)
    [sent] = [s for s in harness.lessons(pid) if s.key == 3]
    assert "Published in time." in sent.text


def test_the_impact_summary_counts_readers_at_each_place_as_the_sender_then_acts(
    app: Flask, therapist: FlaskClient, harness: Harness
) -> None:
    """Five lessons; readers who finished, had 4, 3, 2 (paused) and 1 (taking a break).
    The draft removes lesson 3, moves lesson 5 before lesson 4, rewrites lesson 4 and adds
    lesson 6 at the end. The summary's numbers are what the sender then does."""
    h = harness
    course_id = h.new_course("calm-at-work", five_lessons(), completion=COMPLETION)
    done = h.enrol("done@example.com", course_id)
    h.run_for(days=1, hours=1)
    four = h.enrol("four@example.com", course_id)
    h.run_for(days=1)
    three = h.enrol("three@example.com", course_id)
    h.run_for(days=1)
    two = h.enrol("two@example.com", course_id)
    h.run_for(days=1)
    one = h.enrol("one@example.com", course_id)
    h.run_for(hours=1)
    assert h.pause(two)
    # "Taking a break" is counted against the admin's clock (the real one): a break that
    # ends 20 real days from now, long after this test's simulated weeks.
    until = utcnow() + timedelta(days=20)
    h.act(one, lambda s, sub, c: snooze(s, sub, until, h.clock(), settings=h.settings, course=c))
    had = {pid: [s.key for s in h.lessons(pid)] for pid in (done, four, three, two, one)}
    assert had == {
        done: [1, 2, 3, 4, 5],
        four: [1, 2, 3, 4],
        three: [1, 2, 3],
        two: [1, 2],
        one: [1],
    }
    assert h.subscriber(done).status == SubscriberStatus.COMPLETED  # completion queued

    # The edits, through the course page's buttons and the lesson forms.
    submit(therapist, page(therapist, COURSE), f"{COURSE}/lessons/3/remove")
    submit(therapist, page(therapist, COURSE), f"{COURSE}/lessons/5/move", ("direction", "up"))
    lesson = f"{COURSE}/lessons/4"
    submit(therapist, page(therapist, lesson), lesson, body=body("Lesson 4, rewritten."))
    assert add(therapist, "Lesson 6") == 6
    assert [ls.key for ls in stored(app)[1].lessons] == [1, 2, 5, 4, 6]

    review = html(page(therapist, f"{COURSE}/publish"))
    items = re.findall(r"<li>(.*?)</li>", review.split('class="impact"')[1].split("</ul>")[0])
    assert "4 readers on this course now (1 paused, 1 taking a break)." in review
    assert items == [
        "Lesson “Lesson 6” added at the end: 4 readers still on the course will get it "
        "after their current last lesson. Readers who finished the course do not get it.",
        "Lesson “Lesson 3” removed: 2 readers who have not had it yet will not get it; 2 who "
        "had it will keep it. Nobody gets a lesson twice.",
        "Lessons reordered (“Lesson 5” now lesson 3): the next lesson of 2 readers changes: for "
        "2, it becomes “Lesson 5” instead of “Lesson 4”. Nobody gets a lesson twice, and a "
        "lesson a reader has passed by moving comes next for them.",
        "Text of “Lesson 4” changed: 3 readers who have not had it yet will get the new text; "
        "1 who had it will keep the version they got (its “read it again” page shows the new "
        "text).",
    ]
    assert publish_form(therapist).status_code == 303

    # What the sender does agrees. Lesson 3 goes to nobody new; lesson 6 to all four; the
    # reader who had 1-4 gets 5 (moved before 4) then 6; nobody gets anything twice.
    h.resume(two)
    h.run_for(days=40)
    got = {pid: [s.key for s in h.lessons(pid)] for pid in (done, four, three, two, one)}
    assert got == {
        done: [1, 2, 3, 4, 5],
        four: [1, 2, 3, 4, 5, 6],
        three: [1, 2, 3, 5, 4, 6],
        two: [1, 2, 5, 4, 6],
        one: [1],  # still taking a break
    }
    # The three who had not had lesson 4 get its new text (one of them after their break).
    rewritten = [s for s in h.sent(kind="lesson") if s.key == 4 and s.public_id in (three, two)]
    assert len(rewritten) == 2 and all("Lesson 4, rewritten." in s.text for s in rewritten)


def test_the_impact_of_removing_a_lesson_a_reader_is_waiting_for() -> None:
    """Pure counts on given places: the next lesson of a reader whose queued lesson is
    removed, and a reader who has had every other lesson."""
    old = lessons(1, 2, 3)
    new = remove_lesson(old, 2)
    places = [
        ReaderPlace("active", frozenset({1}), queued_lesson=2),
        ReaderPlace("active", frozenset({1, 3}), queued_lesson=2),
        ReaderPlace("paused", frozenset({1, 2})),
        ReaderPlace("completed", frozenset({1, 2, 3}), queued_after="completion"),
    ]
    found = impact_of(places, old, new)
    assert (found.on_course, found.paused, found.snoozed) == (3, 1, 0)
    [line] = found.lines
    assert line.readers == 2
    assert line.text == (
        "Lesson “T2” removed: 2 readers who have not had it yet will not get it; 1 who had it "
        "will keep it. It was the next lesson of 2: for 1, “T3” comes instead, at the same "
        "time; for 1, the course ends there (every other lesson is behind them). Nobody gets "
        "a lesson twice."
    )
    nothing = impact_of([], old, new)
    assert nothing.summary.startswith("Nobody is on this course now")


def test_a_lesson_brought_back_by_a_revert_is_not_sent_again_to_those_who_had_it() -> None:
    with_three, without = lessons(1, 2, 3), lessons(1, 2)
    places = [
        ReaderPlace("active", frozenset({1, 2, 3}), queued_lesson=None),  # had it before
        ReaderPlace("active", frozenset({1}), queued_lesson=2),
    ]
    [line] = impact_of(places, without, with_three).lines
    assert line.readers == 1
    assert line.text == (
        "Lesson “T3” added at the end: 1 reader still on the course will get it after their "
        "current last lesson; 1 who had it in an earlier version will not get it again. "
        "Readers who finished the course do not get it."
    )
