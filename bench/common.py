"""Shared pieces for the benchmarks: a fast SMTP sink, throw-away databases, timing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from course.config import Settings, load_settings
from course.db import upgrade
from course.models import Delivery, DeliveryKind, DeliveryStatus, Subscriber, SubscriberStatus

PG_URL = os.environ.get("COURSE_BENCH_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test")
SECRET = "benchmark-secret-key-0123456789abcdef0123456789"
#: A Fernet key for COURSE_DATA_KEYS, which a production configuration requires.
DATA_KEY = base64.urlsafe_b64encode(b"benchmark-data-key-0123456789abc").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int | None) -> list[str]:
    """A command prefix that runs a program on one CPU (``taskset``), or nothing."""
    if cpu is None:
        return []
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is missing: install Debian's util-linux package.")
    return ["taskset", "-c", str(cpu)]


@contextmanager
def smtp_sink(cpu: int | None = None) -> Iterator[int]:
    """Postfix's smtp-sink on a loopback port: accepts and discards mail, fast.

    ``cpu``: run it on that CPU only (``taskset``); None lets the kernel place it."""
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(binary):
        raise SystemExit(
            "smtp-sink is missing: install Debian's postfix package "
            "(`apt-get install -y postfix`, choose 'No configuration')."
        )
    port = free_port()
    args = [binary]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    proc = subprocess.Popen([*pinned(cpu), *args, f"127.0.0.1:{port}", "1000"])
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def pg_schema() -> Iterator[str]:
    """An empty PostgreSQL schema, dropped afterwards; yields its name."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with pg_schema() as schema:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        upgrade(url)
        yield url


def course_env(db_url: str, mail_url: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmark `course` command: this process's environment without
    any ``COURSE_*`` setting, then the settings below and ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COURSE_") or k.startswith("COURSE_BENCH_")
    }
    env.update(
        COURSE_DATABASE_URL=db_url,
        COURSE_MAIL_URL=mail_url,
        COURSE_SECRET_KEY=SECRET,
        COURSE_DATA_KEYS=DATA_KEY,
        COURSE_BASE_URL="https://course.example.org",
        COURSE_MAIL_FROM="Harbor Therapy <course@harbor.example.org>",
        COURSE_BOOKING_URL="https://harbor.example.org/book",
        COURSE_PRACTICE_NAME="Harbor Therapy",
        COURSE_BATCH_SIZE="500",
        COURSE_LESSON_INTERVAL=str(10**7),  # the next lessons are queued far ahead
        COURSE_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def bench_settings(db_url: str, mail_url: str, **overrides: Any) -> Settings:
    """Engine settings for a benchmark run."""
    config: dict[str, Any] = dict(
        DATABASE_URL=db_url,
        MAIL_URL=mail_url,
        SECRET_KEY=SECRET,
        BASE_URL="https://course.example.org",
        MAIL_FROM="Harbor Therapy <course@harbor.example.org>",
        BOOKING_URL="https://harbor.example.org/book",
        PRACTICE_NAME="Harbor Therapy",
        BATCH_SIZE=500,
        LESSON_INTERVAL=10**7,  # follow-up lessons are queued far in the future
    )
    config.update(overrides)
    return load_settings(config)


def first_lesson(conn: Any) -> tuple[int, int]:
    """(course id, key of its first lesson) of the course ``course db upgrade`` imported."""
    course_id, content = conn.execute(
        text(
            "SELECT c.id, v.content FROM courses c JOIN course_versions v"
            " ON v.id = c.published_version_id ORDER BY c.id LIMIT 1"
        )
    ).one()
    lessons = json.loads(content)["lessons"]
    return int(course_id), int(lessons[0]["key"])


def seed(
    db_url: str,
    subscribers: int,
    due: int,
    chunk: int = 20000,
    *,
    due_at: datetime | None = None,
) -> None:
    """``subscribers`` active readers of the first course; the first ``due`` have its first
    lesson due at ``due_at`` (now by default), the rest have it queued far ahead (queued but
    not due)."""
    engine = create_engine(db_url)
    now = datetime.now(UTC)
    later = datetime(2099, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        course_id, lesson = first_lesson(conn)
        for start in range(0, subscribers, chunk):
            stop = min(start + chunk, subscribers)
            conn.execute(
                insert(Subscriber),
                [
                    {
                        "id": i + 1,
                        "course_id": course_id,
                        "public_id": f"p{i:012d}",
                        "email": f"reader{i}@example.com",
                        "mailbox": f"reader{i}@example.com",
                        "name": "Reader",
                        "timezone": "UTC",
                        "status": SubscriberStatus.ACTIVE,
                        "created_at": now,
                        "confirmed_at": now,
                        "confirm_count": 1,
                    }
                    for i in range(start, stop)
                ],
            )
            conn.execute(
                insert(Delivery),
                [
                    {
                        "subscriber_id": i + 1,
                        "kind": DeliveryKind.LESSON,
                        "number": lesson,
                        "status": DeliveryStatus.QUEUED,
                        "due_at": (due_at or now) if i < due else later,
                        "attempts": 0,
                        "generation": 0,
                        "created_at": now,
                    }
                    for i in range(start, stop)
                ],
            )
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
    engine.dispose()


def timed(fn: Any) -> tuple[float, Any]:
    """Run ``fn()`` and return (seconds, result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (empty if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
