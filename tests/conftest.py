"""Shared fixtures: an app on a fresh database (SQLite, and PostgreSQL when it answers),
a controllable clock, and a real SMTP server on loopback."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session as DBSession
from sqlalchemy.orm import sessionmaker

from course.app import create_app, split_overrides
from course.cli import main as course_command
from course.config import Settings, load_settings
from course.courses import Catalogue, CourseLibrary, PublishedCourse, published_content
from course.db import make_engine, make_sessionmaker, upgrade
from course.mail.outbox import OutboxTransport
from course.models import Course, CourseVersion
from course.sending import Sender


class ClosingClient(FlaskClient):
    """A test client that closes each response once it has been read, as a real server
    does. Work a view schedules for after its answer (``response.call_on_close``, e.g.
    deciding a stored signup) then runs before the test looks at the database."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


Flask.test_client_class = ClosingClient

PG_URL = os.environ.get("COURSE_TEST_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test")
SECRET = "test-secret-key-0123456789abcdef0123456789abcdef"
DATA_KEY = "Cj6lHKly5z-xDlB9LK5eNYlPAYxuD-EWoGgvYkjXrRE="  # encrypts notes in tests


def _postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def _skip_or_fail(reason: str, env: str) -> None:
    if os.environ.get(env):
        pytest.fail(f"{reason} ({env} is set, so this must not be skipped)")
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a throw-away PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'course.db'}"
        upgrade(url)
        yield url
        return
    if not _postgres_available():
        _skip_or_fail(
            "PostgreSQL is not reachable on 127.0.0.1:5432", "COURSE_TEST_REQUIRE_POSTGRES"
        )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database, for tests that do not depend on the database kind."""
    url = f"sqlite:///{tmp_path / 'course.db'}"
    upgrade(url)
    return url


def make_config(tmp_path: Path, db_url: str, **overrides: Any) -> dict[str, Any]:
    """A test configuration: the given database, an outbox in ``tmp_path``."""
    config: dict[str, Any] = {
        "ENV": "production",
        "TESTING": True,
        "DATABASE_URL": db_url,
        "MAIL_URL": f"outbox:{tmp_path / 'outbox'}",
        "SECRET_KEY": SECRET,
        "DATA_KEYS": DATA_KEY,
        "BASE_URL": "https://course.example.org",
        "BOOKING_URL": "https://practice.example.org/book?ref=course",
        "PRACTICE_NAME": "Harbor Therapy",
        "MAIL_FROM": "Harbor Therapy <course@harbor.example.org>",
        # Tests post the hosted form right after loading it; the fill-time rule has tests of
        # its own (test_security.py).
        "SIGNUP_MIN_SECONDS": 0,
    }
    config.update(overrides)
    return config


@pytest.fixture
def config(tmp_path: Path, sqlite_url: str) -> dict[str, Any]:
    return make_config(tmp_path, sqlite_url)


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Flask]:
    application = create_app(config)
    yield application
    state_ = application.extensions["course"]
    state_.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class CourseRunner:
    """Runs ``course`` commands against an app's configured state (database, lessons)."""

    def __init__(self, app: Flask) -> None:
        self.state = app.extensions["course"]

    def invoke(self, args: list[str], input: str | None = None) -> Result:
        """Run ``course ARGS...`` and return click's result."""
        return CliRunner().invoke(course_command, args, input=input, obj=self.state)


@pytest.fixture
def runner(app: Flask) -> CourseRunner:
    return CourseRunner(app)


@pytest.fixture
def settings(app: Flask) -> Settings:
    return app.extensions["course"].settings  # type: ignore[no-any-return]


@pytest.fixture
def sessions(app: Flask) -> sessionmaker[DBSession]:
    return app.extensions["course"].sessions  # type: ignore[no-any-return]


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 7, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


_engines: list[Engine] = []


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    """Close every engine a test opened, so no connection outlives its test."""
    yield
    while _engines:
        _engines.pop().dispose()


def sessions_for(url: str) -> sessionmaker[DBSession]:
    """A session factory on a new engine (closed after the test), like another process."""
    engine = make_engine(url)
    _engines.append(engine)
    return make_sessionmaker(engine)


def make_sender(
    settings: Settings, transport: Any, clock: FakeClock, worker: str = "test-worker"
) -> Sender:
    """A sender on its own engine, like a separate ``course scheduler`` process."""
    return Sender(
        settings, sessions_for(settings.database_url), transport, clock=clock, worker=worker
    )


def courses_for(settings: Settings) -> Catalogue:
    """The courses in the settings' database, as the sender and the web app see them."""
    return CourseLibrary(sessions_for(settings.database_url)).current()


def first_course(settings: Settings) -> PublishedCourse:
    """The first course (the shipped five-day course in a new database)."""
    found = courses_for(settings).default()
    assert found is not None
    return found


def publish_a_broken_lesson(db_url: str, body: str = "Hi {{ no_such_slot }}") -> None:
    """Make lesson 2 of the first course unusable in its published version. Publishing
    refuses such a lesson, so this is a hand edit in the database (or an older release's
    checks): what the sender, the health check and the doctor must still handle."""
    with sessions_for(db_url)() as s, s.begin():
        course = s.get(Course, 1)
        assert course is not None
        content = published_content(s, course)
        broken = content.lessons[1].model_copy(update={"body": body})
        content = content.model_copy(
            update={"lessons": (content.lessons[0], broken, *content.lessons[2:])}
        )
        version = CourseVersion(course_id=1, number=99, content=content.to_json(), author="hand")
        s.add(version)
        s.flush()
        course.published_version_id = version.id


def engine_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    """Engine settings without a Flask app."""
    fields, _flask_only = split_overrides(make_config(tmp_path, db_url, **overrides))
    return load_settings(fields)


# -- a real SMTP server on loopback ---------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class RecordingHandler:
    """Accepts mail and records it; can be told to refuse certain recipients."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.reject_rcpt: dict[str, str] = {}  # address -> SMTP reply

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.reject_rcpt.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.messages.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(envelope.content))
        )
        return "250 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, RecordingHandler]]:
    """An aiosmtpd server on a free loopback port."""
    handler = RecordingHandler()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


def outbox_messages(settings: Settings) -> list[bytes]:
    """The messages in the outbox folder, oldest first."""
    outbox = OutboxTransport(settings.mail_url.removeprefix("outbox:"))
    return [p.read_bytes() for p in reversed(outbox.messages())]


# -- rate-limit stores ----------------------------------------------------------------------

REDIS_URL = os.environ.get("COURSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_available() -> bool:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(params=["memory", "redis"])
def limit_store(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """App config for a rate-limit store: this process's memory, or Redis.

    Each test gets its own key prefix, so no two tests (or runs) share counters; its Redis
    keys are deleted afterwards. Without Redis the Redis variant is skipped, unless
    COURSE_TEST_REQUIRE_REDIS is set.
    """
    prefix = f"course-test-{uuid.uuid4().hex[:12]}"
    if request.param == "memory":
        yield {"RATELIMIT_STORAGE_URL": "memory://", "RATELIMIT_KEY_PREFIX": prefix}
        return
    if not _redis_available():
        _skip_or_fail(f"Redis is not reachable at {REDIS_URL}", "COURSE_TEST_REQUIRE_REDIS")
    yield {"RATELIMIT_STORAGE_URL": REDIS_URL, "RATELIMIT_KEY_PREFIX": prefix}
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
