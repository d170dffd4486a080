"""The "Needs a look" page: stirred check-ins and risk-phrase matches reach a therapist,
urgent ones first, in their time zone; marking an item shows who and when; assistants
never see it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from course.models import LessonProgress, Reply, Subscriber
from tests.helpers import Form, forms
from tests.test_links import Reader, enrol
from tests.test_roles import (
    ASSISTANT,
    OWNER,
    THERAPIST,
    add_reply,
    add_staff,
    csrf_token,
    staff_client,
    write_checkin,
)

CARE = "/admin/care"
DARK_NOTE = "Honestly I want to die when he goes quiet like that."


@pytest.fixture
def readers(app: Flask) -> dict[str, Reader]:
    """Ana answered "It stirred things up"; Ben wrote a note with a risk phrase."""
    ana = enrol(app, app.test_client(), "ana@example.com")
    write_checkin(app.test_client(), ana, answer="stirred", note="")
    ben = enrol(app, app.test_client(), "ben@example.com")
    write_checkin(app.test_client(), ben, answer=None, note=DARK_NOTE)
    return {"ana": ana, "ben": ben}


@pytest.fixture
def therapist(app: Flask) -> FlaskClient:
    add_staff(app, OWNER, "owner")
    add_staff(app, THERAPIST, "therapist", timezone="Europe/Berlin")
    return staff_client(app, THERAPIST)


def items_of(app: Flask) -> dict[str, str]:
    """The list's item ids by reader address."""
    with app.extensions["course"].sessions() as s:
        rows = s.execute(
            select(LessonProgress, Subscriber.email).join(
                Subscriber, Subscriber.id == LessonProgress.subscriber_id
            )
        ).all()
        found = {}
        for row, email in rows:
            if row.risk:
                found[email] = f"note:{row.id}"
            elif row.checkin == "stirred":
                found[email] = f"checkin:{row.id}"
        return found


def mark_form(page: str, item: str) -> Form:
    [form] = [f for f in forms(page) if f.action == "/admin/care/mark" and f.fields["item"] == item]
    return form


def press(client: FlaskClient, form: Form, status: str) -> int:
    assert ("status", status) in form.buttons
    response = client.post(form.action, data={**form.fields, "status": status})
    return response.status_code


def rows_of(page: str) -> list[str]:
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    return body.split("<tr")[1:]


def test_stirred_check_ins_and_risk_notes_need_a_look(
    app: Flask, readers: dict[str, Reader], therapist: FlaskClient
) -> None:
    page = therapist.get(CARE).get_data(as_text=True)
    rows = rows_of(page)
    assert len(rows) == 2
    # Ben's note matched a risk phrase: urgent, first, with the phrase (not his words).
    urgent, stirred = rows
    assert "Urgent:" in urgent and "Note" in urgent and "ben@example.com" not in urgent
    assert "Matched: “want* to die”" in urgent and DARK_NOTE not in page
    assert f'href="/admin/subscribers/{readers["ben"].public_id}"' in urgent
    assert "Stirred things up" in stirred and "Urgent" not in stirred
    assert f'href="/admin/subscribers/{readers["ana"].public_id}"' in stirred
    assert "<strong>New</strong>" in urgent and "<strong>New</strong>" in stirred
    # When, in the therapist's own time zone.
    with app.extensions["course"].sessions() as s:
        note_at = s.scalars(
            select(LessonProgress.note_at).where(LessonProgress.risk.is_not(None))
        ).one()
    assert note_at is not None
    local = note_at.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M")
    assert f"<td>{local}</td>" in urgent
    assert "Times in Europe/Berlin" in page
    # The navigation counts new items.
    assert 'aria-label="2 new">2</span>' in page


def test_a_reply_with_a_risk_phrase_is_on_the_list_too(
    app: Flask, readers: dict[str, Reader], therapist: FlaskClient
) -> None:
    add_reply(app, "ana@example.com", "I keep thinking I should kill myself.")
    page = therapist.get(CARE).get_data(as_text=True)
    urgent = [row for row in rows_of(page) if "Urgent:" in row]
    assert len(urgent) == 2 and any("Reply" in row and "kill* myself" in row for row in urgent)
    assert "should kill myself" not in page


def test_marking_an_item_shows_who_and_when(
    app: Flask, readers: dict[str, Reader], therapist: FlaskClient
) -> None:
    items = items_of(app)
    page = therapist.get(CARE).get_data(as_text=True)
    assert press(therapist, mark_form(page, items["ben@example.com"]), "contacted") == 303
    page = therapist.get(CARE).get_data(as_text=True)
    assert "Marked as contacted." in page
    urgent = rows_of(page)[0]
    assert f"Contacted by {THERAPIST}" in urgent
    assert 'aria-label="1 new">1</span>' in page
    # Everyone at the practice sees it: the owner too.
    owner = staff_client(app, OWNER)
    owners_view = owner.get(CARE).get_data(as_text=True)
    assert f"Contacted by {THERAPIST}" in owners_view
    # A later mark replaces it, with its author.
    assert press(owner, mark_form(owners_view, items["ana@example.com"]), "seen") == 303
    page = therapist.get(CARE).get_data(as_text=True)
    assert f"Seen by {OWNER}" in page and 'href="/admin/care">Needs a look</a>' in page


def test_marks_are_checked(app: Flask, readers: dict[str, Reader], therapist: FlaskClient) -> None:
    item = items_of(app)["ben@example.com"]
    token = csrf_token(therapist)
    post = therapist.post
    assert (
        post(
            "/admin/care/mark", data={"item": item, "status": "gone", "csrf_token": token}
        ).status_code
        == 400
    )
    assert (
        post(
            "/admin/care/mark", data={"item": "note:9999", "status": "seen", "csrf_token": token}
        ).status_code
        == 404
    )
    assert (
        post(
            "/admin/care/mark", data={"item": "x", "status": "seen", "csrf_token": token}
        ).status_code
        == 404
    )
    assert (
        post("/admin/care/mark", data={"item": item, "status": "seen"}).status_code == 400
    )  # CSRF
    assert "<strong>New</strong>" in rows_of(therapist.get(CARE).get_data(as_text=True))[0]


def test_an_assistant_gets_403_and_no_link(
    app: Flask, readers: dict[str, Reader], therapist: FlaskClient
) -> None:
    add_staff(app, ASSISTANT, "assistant")
    assistant = staff_client(app, ASSISTANT)
    response = assistant.get(CARE)
    assert response.status_code == 403
    assert "want" not in response.get_data(as_text=True)
    item = items_of(app)["ben@example.com"]
    token = csrf_token(assistant)
    marked = assistant.post(
        "/admin/care/mark", data={"item": item, "status": "seen", "csrf_token": token}
    )
    assert marked.status_code == 403
    assert 'href="/admin/care"' not in assistant.get("/admin/").get_data(as_text=True)
    assert "<strong>New</strong>" in rows_of(therapist.get(CARE).get_data(as_text=True))[0]


def test_a_readers_page_shows_their_note_to_a_therapist_only(
    app: Flask, readers: dict[str, Reader], therapist: FlaskClient
) -> None:
    add_staff(app, ASSISTANT, "assistant")
    path = f"/admin/subscribers/{readers['ben'].public_id}"
    assert DARK_NOTE in therapist.get(path).get_data(as_text=True)
    assistants_view = staff_client(app, ASSISTANT).get(path)
    assert assistants_view.status_code == 200
    assert DARK_NOTE not in assistants_view.get_data(as_text=True)


def test_nothing_to_look_at(app: Flask, therapist: FlaskClient) -> None:
    page = therapist.get(CARE).get_data(as_text=True)
    assert "Nothing in the last 30 days." in page
    assert 'href="/admin/care">Needs a look</a>' in page  # no count when nothing is new
    with app.extensions["course"].sessions() as s:
        assert s.scalars(select(Reply)).all() == []
