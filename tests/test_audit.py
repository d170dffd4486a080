"""The audit log: every view of a reader's notes or replies is recorded (their page for a
therapist or owner, "Needs a look", an export), with staff changes; owners read it, newest
first, page by page; it outlives an erasure and a removed account."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from course import audit
from course.audit import Action
from course.models import AuditLog, Subscriber, utcnow
from tests.helpers import forms
from tests.test_links import Reader, enrol
from tests.test_roles import (
    ASSISTANT,
    NOTE,
    OWNER,
    THERAPIST,
    add_staff,
    staff_client,
    submit,
    write_checkin,
)

AUDIT = "/admin/audit"


@pytest.fixture
def staff(app: Flask) -> dict[str, int]:
    return {
        email: add_staff(app, email, role)
        for email, role in ((OWNER, "owner"), (THERAPIST, "therapist"), (ASSISTANT, "assistant"))
    }


@pytest.fixture
def reader(app: Flask) -> Reader:
    """A reader who wrote a note."""
    ana = enrol(app, app.test_client(), "ana@example.com")
    write_checkin(app.test_client(), ana, answer=None, note=NOTE)
    return ana


def subscriber_id(sessions: sessionmaker[Session], email: str) -> int:
    with sessions() as s:
        return s.scalars(select(Subscriber.id).where(Subscriber.email == email)).one()


def logged(sessions: sessionmaker[Session], *actions: Action) -> list[tuple[int, str, int | None]]:
    """(operator, action, subscriber) of the log's rows, oldest first (sign-ins left out
    unless asked for)."""
    wanted = [a.value for a in actions] or [a.value for a in Action if a != Action.SIGN_IN]
    with sessions() as s:
        rows = s.scalars(
            select(AuditLog).where(AuditLog.action.in_(wanted)).order_by(AuditLog.id)
        ).all()
    return [(r.operator_id, r.action, r.subscriber_id) for r in rows]


def test_reading_a_readers_notes_is_recorded(
    app: Flask, sessions: sessionmaker[Session], staff: dict[str, int], reader: Reader
) -> None:
    ana = subscriber_id(sessions, "ana@example.com")
    page = f"/admin/subscribers/{reader.public_id}"
    therapist = staff_client(app, THERAPIST)
    assert NOTE in therapist.get(page).get_data(as_text=True)
    assert logged(sessions) == [(staff[THERAPIST], "view_notes", ana)]
    # An assistant sees no notes: nothing to record.
    assert NOTE not in staff_client(app, ASSISTANT).get(page).get_data(as_text=True)
    assert logged(sessions) == [(staff[THERAPIST], "view_notes", ana)]
    # Nor for a reader with no note or reply: the page showed nothing private.
    ben = enrol(app, app.test_client(), "ben@example.com")
    therapist.get(f"/admin/subscribers/{ben.public_id}")
    assert len(logged(sessions)) == 1


def test_the_care_list_and_an_export_are_recorded(
    app: Flask, sessions: sessionmaker[Session], staff: dict[str, int], reader: Reader
) -> None:
    ana = subscriber_id(sessions, "ana@example.com")
    owner = staff_client(app, OWNER)
    assert owner.get("/admin/care").status_code == 200
    export = owner.get(f"/admin/subscribers/{reader.public_id}/export.json")
    assert export.get_json()["lessons"][0]["note"] == NOTE
    assert logged(sessions) == [
        (staff[OWNER], "view_care", None),
        (staff[OWNER], "export", ana),
    ]
    # Refused attempts read nothing, and record nothing.
    assistant = staff_client(app, ASSISTANT)
    assert assistant.get("/admin/care").status_code == 403
    assert assistant.get(f"/admin/subscribers/{reader.public_id}/export.json").status_code == 403
    assert len(logged(sessions)) == 2
    # The log never holds what the reader wrote.
    with sessions() as s:
        for row in s.scalars(select(AuditLog)):
            assert "die" not in (row.detail or "")


def test_owners_read_the_log_newest_first(
    app: Flask, sessions: sessionmaker[Session], staff: dict[str, int], reader: Reader
) -> None:
    staff_client(app, THERAPIST).get(f"/admin/subscribers/{reader.public_id}")
    owner = staff_client(app, OWNER)
    owner.get("/admin/care")
    page = owner.get(AUDIT).get_data(as_text=True)
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    rows = body.split("<tr>")[1:]
    assert "Opened “Needs a look”" in rows[0] and OWNER in rows[0]
    assert "Signed in" in rows[1] and OWNER in rows[1]
    assert "Read a reader&#39;s notes and replies" in rows[2] and THERAPIST in rows[2]
    assert f'href="/admin/subscribers/{reader.public_id}">Ana</a>' in rows[2]
    assert NOTE not in page
    for email in (THERAPIST, ASSISTANT):
        assert staff_client(app, email).get(AUDIT).status_code == 403


def test_the_log_is_paginated(
    app: Flask, sessions: sessionmaker[Session], staff: dict[str, int]
) -> None:
    start = utcnow() - timedelta(days=1)
    with sessions() as s, s.begin():
        for minute in range(60):
            audit.record(
                s,
                staff[THERAPIST],
                Action.VIEW_CARE,
                None,
                start + timedelta(minutes=minute),
                detail=f"entry {minute}",
            )
    owner = staff_client(app, OWNER)  # a sign-in: the newest entry
    first = owner.get(AUDIT).get_data(as_text=True)
    assert "61 entries." in first and "Page 1 of 2" in first
    assert first.index("Signed in") < first.index("entry 59") < first.index("entry 11")
    assert "entry 10" not in first
    second = owner.get(f"{AUDIT}?page=2").get_data(as_text=True)
    assert "entry 10" in second and "entry 0<" in second and "entry 11" not in second
    assert 'href="/admin/audit?page=1"' in second
    assert owner.get(f"{AUDIT}?page=-3").status_code == 200  # an odd page is the first


def test_the_log_outlives_an_erasure_and_a_removed_account(
    app: Flask, sessions: sessionmaker[Session], staff: dict[str, int], reader: Reader
) -> None:
    therapist = staff_client(app, THERAPIST)
    therapist.get(f"/admin/subscribers/{reader.public_id}")
    owner = staff_client(app, OWNER)
    erase_page = owner.get(f"/admin/subscribers/{reader.public_id}/erase")
    action = f"/admin/subscribers/{reader.public_id}/erase"
    assert submit(owner, erase_page, action, confirm="ana@example.com").status_code == 303
    response = submit(owner, owner.get("/admin/staff"), f"/admin/staff/{staff[THERAPIST]}/remove")
    assert response.status_code == 303
    # The rows stay: the reader's link cleared by the database, the operator's id kept.
    assert logged(sessions, Action.VIEW_NOTES) == [(staff[THERAPIST], "view_notes", None)]
    assert logged(sessions, Action.STAFF_REMOVE) == [(staff[OWNER], "staff_remove", None)]
    page = owner.get(AUDIT).get_data(as_text=True)
    assert f"#{staff[THERAPIST]} (removed)" in page and "(erased)" in page
    assert "Removed a staff account" in page and f"staff #{staff[THERAPIST]}" in page
    assert "ana@example.com" not in page


def test_staff_changes_and_care_marks_are_recorded(
    app: Flask, sessions: sessionmaker[Session], staff: dict[str, int], reader: Reader
) -> None:
    owner = staff_client(app, OWNER)
    page = owner.get("/admin/staff")
    response = submit(
        owner,
        page,
        "/admin/staff",
        email="lee@harbor.example.org",
        role="assistant",
        timezone="UTC",
        password="a first password for lee",
    )
    assert response.status_code == 303
    page = owner.get("/admin/staff")
    submit(owner, page, f"/admin/staff/{staff[ASSISTANT]}/role", role="therapist")
    care = owner.get("/admin/care").get_data(as_text=True)
    [mark] = [f for f in forms(care) if f.action == "/admin/care/mark"]
    owner.post(mark.action, data={**mark.fields, "status": "seen"})
    ana = subscriber_id(sessions, "ana@example.com")
    assert logged(sessions, Action.STAFF_CREATE, Action.STAFF_ROLE, Action.CARE_MARK) == [
        (staff[OWNER], "staff_create", None),
        (staff[OWNER], "staff_role", None),
        (staff[OWNER], "care_mark", ana),
    ]
    with sessions() as s:
        details = [r.detail for r in s.scalars(select(AuditLog).order_by(AuditLog.id))]
    assert f"staff #{staff[ASSISTANT]}: therapist" in details
    assert any(d and d.startswith("note:") and d.endswith(" seen") for d in details)


def test_record_and_entries(sessions: sessionmaker[Session], staff: dict[str, int]) -> None:
    now = utcnow()
    with sessions() as s, s.begin():
        audit.record(s, staff[OWNER], "export", None, now, detail="x" * 500)
        with pytest.raises(ValueError):
            audit.record(s, staff[OWNER], "made_up", None, now)
    with sessions() as s:
        rows, total = audit.entries(s, 1)
    assert total == 1 and rows[0].label == "Exported a reader's data"
    assert rows[0].operator == OWNER and rows[0].erased and len(rows[0].detail or "") == 200
