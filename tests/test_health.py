"""Health that tells the truth: /healthz fails for each reason a practice would care about,
and a delivery that cannot even be built fails visibly instead of looping unseen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from course.app import create_app
from course.models import Delivery, DeliveryStatus, SchedulerTick, utcnow
from tests.conftest import (
    CourseRunner,
    FakeClock,
    make_config,
    make_sender,
    publish_a_broken_lesson,
)
from tests.test_sending import MemoryTransport, enrol


@pytest.fixture
def app_factory(tmp_path: Path, sqlite_url: str) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app(make_config(tmp_path, sqlite_url, **overrides))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["course"].engine.dispose()


def tick(app: Flask, at: Any = None) -> None:
    """A scheduler's heartbeat at ``at`` (default: now)."""
    with app.extensions["course"].sessions() as session, session.begin():
        session.merge(SchedulerTick(worker="w1", last_tick_at=at or utcnow()))


def health(app: Flask) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get("/healthz")
    return response.status_code, response.get_json()


def test_healthy_when_everything_is_fine(app_factory: Callable[..., Flask]) -> None:
    app = app_factory()
    tick(app)
    status, body = health(app)
    assert status == 200, body
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["database"] == "ok" and body["content"] == "ok"


def test_503_when_no_scheduler_ever_ticked(app_factory: Callable[..., Flask]) -> None:
    status, body = health(app_factory())
    assert status == 503
    assert body["reasons"] == ["no scheduler has ever ticked: start `course scheduler`"]


def test_503_when_the_scheduler_stopped_ticking(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(TICK_SECONDS=5)
    tick(app, utcnow() - timedelta(minutes=2))
    status, body = health(app)
    assert status == 503 and body["scheduler_stale"] is True
    assert body["reasons"][0].startswith("no scheduler has ticked since")
    # ... while the web process itself is fine, so a load balancer keeps it in rotation.
    web = app.test_client().get("/healthz/web")
    assert web.status_code == 200 and web.get_json()["status"] == "ok"


def test_503_when_the_database_does_not_answer(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, "postgresql+psycopg://127.0.0.1:1/nothing"))
    status, body = health(app)
    assert status == 503
    assert body["database"] == "unreachable"
    assert body["reasons"] == ["the database does not answer"]
    assert app.test_client().get("/healthz/web").status_code == 503


def test_503_when_a_published_lesson_is_broken(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    app = app_factory()
    publish_a_broken_lesson(app.extensions["course"].settings.database_url)
    tick(app)
    status, body = health(app)
    assert status == 503 and body["content"] == "broken"
    [reason] = body["reasons"]
    assert reason.startswith("content: feeling-secure: lesson 2") and "no_such_slot" in reason


def test_503_when_a_template_is_broken(app_factory: Callable[..., Flask], tmp_path: Path) -> None:
    (tmp_path / "brand" / "email").mkdir(parents=True)
    (tmp_path / "brand" / "email" / "confirm.txt").write_text("Hello {{ r.greeting }\n")
    app = app_factory(TEMPLATES_DIR=str(tmp_path / "brand"))
    tick(app)
    status, body = health(app)
    assert status == 503
    assert any("confirm.txt: line 1:" in reason for reason in body["reasons"]), body


def test_503_when_deliveries_are_overdue(
    app_factory: Callable[..., Flask], tmp_path: Path, sqlite_url: str
) -> None:
    app = app_factory(HEALTH_MAX_DELAY_MINUTES=30)
    settings = app.extensions["course"].settings
    enrol(settings, FakeClock(now=utcnow() - timedelta(minutes=20)), "ana@example.com")
    tick(app)
    assert health(app)[0] == 200  # due 20 minutes ago: late, but within the allowed delay
    enrol(settings, FakeClock(now=utcnow() - timedelta(minutes=45)), "ben@example.com")
    status, body = health(app)
    assert status == 503 and body["overdue"] == 1
    assert body["reasons"][0].startswith("1 deliveries are overdue")


def test_a_delivery_whose_build_raises_fails_after_the_window_with_its_error(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    """A template that breaks only when filled in: each tick is an attempt with the error,
    retried soon, and after the retry window the delivery is failed and /healthz says so."""
    (tmp_path / "brand" / "email").mkdir(parents=True)
    (tmp_path / "brand" / "email" / "lesson.txt").write_text("{{ lesson.no_such_field }}\n")
    app = app_factory(TEMPLATES_DIR=str(tmp_path / "brand"), HEALTH_MAX_FAILED=1)
    settings = app.extensions["course"].settings
    clock = FakeClock(now=utcnow())
    enrol(settings, clock, "ana@example.com")
    transport = MemoryTransport()
    sender = make_sender(settings, transport, clock)
    first = sender.tick()
    assert first.due == 1 and first.retried == 1 and first.sent == 0
    with app.extensions["course"].sessions() as session:
        row = session.scalars(select(Delivery).where(Delivery.kind == "lesson")).one()
        assert row.status == DeliveryStatus.QUEUED and row.attempts == 1
        assert row.last_error and "cannot build the message" in row.last_error
        assert "no_such_field" in row.last_error
        # Looked at again soon: the practice may be fixing the template right now.
        assert row.due_at <= clock() + timedelta(minutes=5)
    attempts = 1
    while clock() - first_time(app) < timedelta(hours=24):
        clock.advance(minutes=5)
        result = sender.tick()
        attempts += result.retried + result.failed
    assert result.failed == 1
    with app.extensions["course"].sessions() as session:
        row = session.scalars(select(Delivery).where(Delivery.kind == "lesson")).one()
        assert row.status == DeliveryStatus.FAILED and row.attempts == attempts
        assert row.failed_at == clock() and "no_such_field" in (row.last_error or "")
    assert transport.sent == []  # confirming cancelled the confirmation; nothing went out
    tick(app)
    status, body = health(app)
    assert status == 503 and body["failed_24h"] == 1
    assert "1 deliveries failed in the last 24 hours" in body["reasons"]
    stats = CourseRunner(app).invoke(["stats"])
    assert "Failed: 1 in all, 1 in the last 24 h" in stats.output
    assert "failed lesson 1: cannot build the message" in stats.output
    assert "WARNING 1 deliveries failed in the last 24 hours" in stats.output
    dashboard = admin_client(app).get("/admin/")
    assert "cannot build the message" in dashboard.get_data(as_text=True)


def first_time(app: Flask) -> Any:
    with app.extensions["course"].sessions() as session:
        row = session.scalars(select(Delivery).where(Delivery.kind == "lesson")).one()
        return row.first_failed_at


def test_failures_of_bounced_readers_do_not_count(
    app_factory: Callable[..., Flask],
) -> None:
    from course.mail import PermanentError

    app = app_factory(HEALTH_MAX_FAILED=1)
    settings = app.extensions["course"].settings
    clock = FakeClock(now=utcnow())
    enrol(settings, clock, "gone@example.com")
    transport = MemoryTransport()
    transport.fail["gone@example.com"] = PermanentError("550 5.1.1 no such user", bounce=True)
    make_sender(settings, transport, clock).tick()
    tick(app)
    status, body = health(app)
    assert status == 200, body
    assert body["failed_total"] == 1 and body["failed_24h"] == 0


def admin_client(app: Flask) -> Any:
    """A test client signed in as an operator, through the login form."""
    from sqlalchemy import select

    from course.models import Operator
    from course.operators import create_operator
    from tests.helpers import forms

    with app.extensions["course"].sessions() as session, session.begin():
        if session.scalars(select(Operator)).first() is None:
            create_operator(session, "kim@example.org", "a long password 123", "UTC")
    client = app.test_client()
    form = forms(client.get("/admin/login").get_data(as_text=True))[0]
    form.fields.update(email="kim@example.org", password="a long password 123")
    assert client.post("/admin/login", data=form.fields).status_code == 302
    return client
