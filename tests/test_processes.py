"""`course scheduler --processes N`: several sender processes under one supervisor share the
work, a child that dies is replaced, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests.conftest import RecordingHandler, sessions_for
from tests.test_reliability import COURSE, _env, _wait


def _readers(db_url: str, count: int) -> None:
    now = utcnow()
    with sessions_for(db_url)() as s, s.begin():
        for i in range(count):
            sub = Subscriber(
                course_id=1,
                email=f"p{i}@example.com",
                timezone="UTC",
                status=SubscriberStatus.ACTIVE,
                created_at=now,
                confirmed_at=now,
                confirm_count=1,
            )
            s.add(sub)
            s.flush()
            s.add(
                Delivery(
                    subscriber_id=sub.id,
                    kind=DeliveryKind.LESSON,
                    number=1,
                    status=DeliveryStatus.QUEUED,
                    due_at=now,
                    attempts=0,
                )
            )


def _sent(db_url: str) -> int:
    with sessions_for(db_url)() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.kind == DeliveryKind.LESSON, Delivery.number == 1)
                .where(Delivery.sent_at.is_not(None))
            )
            or 0
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_several_processes_share_the_work_replace_a_dead_one_and_stop_cleanly(
    tmp_path: Path, db_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, handler = smtp_server
    _readers(db_url, 200)
    log_path = tmp_path / "scheduler.log"
    env = _env(
        db_url,
        controller.port,
        COURSE_LESSON_INTERVAL="3600",  # only lesson 1 in this test
        COURSE_BATCH_SIZE="10",  # small claims, so both processes get some
        COURSE_LOG_LEVEL="INFO",
        # Short timeouts and lease: the claims of the killed process come back in seconds.
        COURSE_MAIL_URL=f"smtp://127.0.0.1:{controller.port}?timeout=1&data_timeout=1.5",
        COURSE_CLAIM_LEASE_SECONDS="5",
    )
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(
            [COURSE, "scheduler", "--processes", "2"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait(lambda: "pids=[" in log_path.read_text(), 60, "the supervisor to start")
        found = re.search(r"pids=\[(\d+), (\d+)\]", log_path.read_text())
        assert found, log_path.read_text()
        first, second = int(found.group(1)), int(found.group(2))
        _wait(
            lambda: log_path.read_text().count("scheduler started worker=") == 2,
            60,
            "both sender processes",
        )
        _wait(lambda: _sent(db_url) >= 20, 60, "the first lessons")
        os.kill(first, signal.SIGKILL)  # a sender dies mid-work: another takes its place
        _wait(lambda: "starting another" in log_path.read_text(), 30, "a replacement")
        _wait(lambda: _sent(db_url) == 200, 120, "every lesson 1")
        _wait(
            lambda: log_path.read_text().count("scheduler started worker=") == 3,
            60,
            "the replacement to start",
        )
        workers = Counter(re.findall(r"scheduler started worker=(\S+)", log_path.read_text()))
        assert len(workers) == 3, log_path.read_text()  # two at first, then the replacement
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    time.sleep(0.5)
    assert not _alive(second), "a sender process outlived its supervisor"
    text = log_path.read_text()
    assert "scheduler supervisor stopped" in text
    assert text.count("scheduler stopped worker=") >= 2  # each live child stopped cleanly
    # Each reader got lesson 1 exactly once, apart from the documented in-flight window of
    # the killed process (at most its one message per connection).
    per_reader = Counter(m.rcpt_tos[0] for m in handler.messages)
    assert set(per_reader) == {f"p{i}@example.com" for i in range(200)}
    assert sum(per_reader.values()) - 200 <= 1


def test_sender_processes_stop_when_their_supervisor_is_killed(
    tmp_path: Path, sqlite_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, _handler = smtp_server
    from course.db import upgrade

    upgrade(sqlite_url)
    log_path = tmp_path / "scheduler.log"
    env = _env(sqlite_url, controller.port, COURSE_LOG_LEVEL="INFO")
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(
            [COURSE, "scheduler", "--processes", "2"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait(
            lambda: log_path.read_text().count("scheduler started worker=") == 2,
            60,
            "both sender processes",
        )
        found = re.search(r"pids=\[(\d+), (\d+)\]", log_path.read_text())
        assert found, log_path.read_text()
        children = [int(found.group(1)), int(found.group(2))]
        supervisor.kill()  # no SIGTERM to pass on
        supervisor.wait(timeout=10)
        _wait(lambda: not any(_alive(pid) for pid in children), 30, "the orphans to stop")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    assert log_path.read_text().count("the supervisor is gone; stopping this sender") == 2
