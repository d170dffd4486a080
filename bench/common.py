"""Shared pieces for the benchmarks: a fast SMTP sink, throw-away databases, timing."""

from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's smtp-sink on a loopback port: accepts and discards mail, fast."""
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
    proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "1000"])
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
    schema = f"bench_{uuid.uuid4().hex[:10]}"
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


def seed(db_url: str, subscribers: int, due: int, chunk: int = 20000) -> None:
    """``subscribers`` active readers; the first ``due`` have lesson 1 due now, the rest
    have their next lesson queued a week ahead (queued but not due)."""
    engine = create_engine(db_url)
    now = datetime.now(UTC)
    later = datetime(2099, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        for start in range(0, subscribers, chunk):
            stop = min(start + chunk, subscribers)
            conn.execute(
                insert(Subscriber),
                [
                    {
                        "id": i + 1,
                        "public_id": f"p{i:012d}",
                        "email": f"reader{i}@example.com",
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
                        "number": 1,
                        "status": DeliveryStatus.QUEUED,
                        "due_at": now if i < due else later,
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
