"""Several web workers on PostgreSQL, a scanner that fetches every link at once, and a relay
that acknowledges slowly: what a hostile network does to a running installation."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from course.config import Settings
from course.mail import transport_from_url
from course.models import (
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    LessonProgress,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from course.tokens import Signer
from tests.conftest import FakeClock, engine_settings, make_sender, sessions_for
from tests.helpers import parse
from tests.slow_smtp import slow_smtp_server
from tests.test_sending import enrol

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _env(settings: Settings, base: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env.update(
        COURSE_DATABASE_URL=settings.database_url,
        COURSE_MAIL_URL=settings.mail_url,
        COURSE_SECRET_KEY=settings.secret_keys[-1],
        COURSE_BASE_URL=base,
        COURSE_MAIL_FROM="Harbor Therapy <course@harbor.example.org>",
        COURSE_DATA_KEYS="Cj6lHKly5z-xDlB9LK5eNYlPAYxuD-EWoGgvYkjXrRE=",
        COURSE_BOOKING_URL="https://practice.example.org/book",
        COURSE_TICK_SECONDS="0.3",
    )
    env.update(extra)
    return env


@pytest.fixture
def gunicorn(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Settings]]:
    """Four gunicorn workers (threads too) serving course.wsgi:app on the test database."""
    if not db_url.startswith("postgresql"):
        pytest.skip("several web workers share one database through PostgreSQL")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = engine_settings(
        tmp_path, db_url, BASE_URL=base, SECRET_KEY="k-" + secrets.token_hex(24)
    )
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "--workers", "3", "--threads", "2", "--bind", f"127.0.0.1:{port}"]
        + ["course.wsgi:app"],
        env=_env(settings, base),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(lambda: _status(f"{base}/healthz/web") == 200, 60, "gunicorn")
        yield base, settings
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
        assert "Traceback" not in output, output


def _status(url: str, data: bytes | None = None, method: str | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _sent_lesson_one(settings: Settings, email: str) -> str:
    """Enrol a reader and mark lesson 1 sent (as the scheduler would); their public id."""
    clock = FakeClock(now=utcnow())
    public_id = enrol(settings, clock, email)
    with sessions_for(settings.database_url)() as s, s.begin():
        s.execute(
            update(Delivery)
            .where(Delivery.number == 1, Delivery.kind == "lesson")
            .values(status=DeliveryStatus.SENT, sent_at=utcnow())
        )
    return public_id


@pytest.mark.slow
@pytest.mark.postgres
def test_a_scanner_fetching_every_link_at_once_records_nothing_and_never_500s(
    gunicorn: tuple[str, Settings],
) -> None:
    base, settings = gunicorn
    signer = Signer(settings.secret_keys)
    readers = [_sent_lesson_one(settings, f"r{i}@example.com") for i in range(3)]
    urls = []
    for pid in readers:
        urls += [
            f"{base}/done/{signer.dumps('done', pid, 1)}",
            f"{base}/book/{signer.dumps('book', pid, 1)}",
            f"{base}/view/{signer.dumps('view', pid, 1)}",
        ]
        urls += [
            f"{base}/checkin/{signer.dumps('checkin', pid, 1, answer)}"
            for answer in ("lighter", "same", "stirred")
        ]
    statuses: list[int] = []
    barrier = threading.Barrier(len(urls) * 2)

    def fetch(url: str) -> None:
        barrier.wait()
        statuses.append(_status(url))

    threads = [threading.Thread(target=fetch, args=(url,)) for url in urls * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == len(urls) * 2
    assert all(200 <= code < 400 for code in statuses), statuses
    with sessions_for(settings.database_url)() as s:
        kinds = [e.kind for e in s.scalars(select(Event).where(Event.via == "link"))]
        assert sorted(set(kinds)) == [EventKind.LINK_SCAN]
        rows = s.scalars(select(LessonProgress)).all()
        assert len(rows) == 3  # one per reader and lesson, however many fetched at once
        assert all(r.done_at is None and r.checkin is None for r in rows)


@pytest.mark.slow
@pytest.mark.postgres
def test_an_unsubscribe_during_a_slow_send_waits_for_it_and_nothing_follows(
    gunicorn: tuple[str, Settings], tmp_path: Path
) -> None:
    """The relay stores lesson 1 and takes its time to say so. The reader unsubscribes
    meanwhile: on PostgreSQL the sender holds the reader's row through the send, so the
    unsubscribe commits after lesson 1 is recorded (it waited), and nothing after lesson 1
    goes out (README, "Unsubscribing and pausing")."""
    base, settings = gunicorn
    signer = Signer(settings.secret_keys)
    with slow_smtp_server(delay=6) as (controller, handler):
        mail = f"smtp://127.0.0.1:{controller.port}"
        clock = FakeClock(now=utcnow())
        pid = enrol(settings, clock, "ana@example.com")  # lesson 1 due now
        sessions = sessions_for(settings.database_url)
        sender = subprocess.Popen(
            [str(BIN / "course"), "scheduler"],
            env=_env(settings, base, COURSE_MAIL_URL=mail, COURSE_LESSON_INTERVAL="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait(lambda: len(handler.messages) == 1, 30, "lesson 1 at the relay")
            assert not _lesson_recorded(sessions)  # the relay has not answered yet
            answered = _status(
                f"{base}/unsubscribe/{signer.dumps('unsubscribe', pid)}",
                data=b"List-Unsubscribe=One-Click",
            )
            # The page answered only once the message in flight was recorded.
            assert answered == 200 and _lesson_recorded(sessions)
            _wait(lambda: _lesson_recorded(sessions), 30, "the relay's late answer")
            time.sleep(3)  # several ticks: lesson 2 would be due after 1 second
        finally:
            sender.send_signal(signal.SIGTERM)
            output = sender.communicate(timeout=60)[0]
    assert "Traceback" not in output, output
    assert len(handler.messages) == 1  # lesson 1 once, nothing after it
    with sessions_for(settings.database_url)() as s:
        sub = s.scalars(select(Subscriber)).one()
        assert sub.status == SubscriberStatus.UNSUBSCRIBED
        lessons = {
            d.number: d.status for d in s.scalars(select(Delivery).where(Delivery.kind == "lesson"))
        }
    assert lessons[1] == DeliveryStatus.SENT
    assert lessons.get(2) in (None, DeliveryStatus.CANCELLED)


def _lesson_recorded(sessions: Any) -> bool:
    """Whether lesson 1 is recorded as sent (polled, so one engine for all the polls)."""
    with sessions() as s:
        row = s.scalars(
            select(Delivery).where(Delivery.kind == "lesson", Delivery.number == 1)
        ).one()
        return row.status == DeliveryStatus.SENT


def test_a_message_the_relay_never_acknowledges_is_sent_a_bounded_number_of_times(
    tmp_path: Path, db_url: str
) -> None:
    """A timeout after the end of DATA: never resent at once, retried with a wait, at most
    three sends in all; then it counts as delivered and the course goes on."""
    with slow_smtp_server(delay=1.0) as (controller, handler):
        url = f"smtp://127.0.0.1:{controller.port}?timeout=2&data_timeout=0.3"
        settings = engine_settings(tmp_path, db_url, MAIL_URL=url, LESSON_INTERVAL=60)
        clock = FakeClock(now=utcnow())
        enrol(settings, clock, "ana@example.com")
        sender = make_sender(settings, transport_from_url(url), clock)
        outcomes = []
        for _ in range(4):
            result = sender.tick()
            outcomes.append((result.sent, result.retried))
            clock.advance(minutes=50)
        stored = [parse(m.data)["Subject"] for m in handler.messages]
    assert outcomes == [(0, 1), (0, 1), (1, 0), (0, 1)]
    # Three tries of lesson 1, none at once after another; then lesson 2 on its own time.
    assert [subject[:10] for subject in stored] == ["Day 1 of 5"] * 3 + ["Day 2 of 5"]
    with sessions_for(settings.database_url)() as s:
        rows = {d.number: d for d in s.scalars(select(Delivery).where(Delivery.kind == "lesson"))}
    assert rows[1].status == DeliveryStatus.SENT and rows[1].unacknowledged == 3
    assert "counted as delivered" in (rows[1].last_error or "")
    assert 2 in rows  # the course did not stall


def test_claim_leases_outlast_the_longest_send(tmp_path: Path, sqlite_url: str) -> None:
    from course.config import ConfigError, Need

    settings = engine_settings(tmp_path, sqlite_url, MAIL_URL="smtp://relay.example")
    assert settings.problems([Need.MAIL]) == []  # 900 s lease, 30 s timeouts, 600 s for DATA
    short = engine_settings(
        tmp_path, sqlite_url, MAIL_URL="smtp://relay.example", CLAIM_LEASE_SECONDS=300
    )
    with pytest.raises(ConfigError, match="COURSE_CLAIM_LEASE_SECONDS \\(300\\) must be longer"):
        short.require(Need.MAIL)
    assert timedelta(seconds=settings.claim_lease_seconds) > timedelta(seconds=690)
