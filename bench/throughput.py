"""Sending throughput: the whole pipeline against plain smtplib, both to smtp-sink."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import bench_settings, database, seed, smtp_sink, timed
from course.db import make_engine, make_sessionmaker
from course.lessons import load_lessons
from course.mail import transport_from_url
from course.render import Reader, Renderer
from course.resources import lessons_dir
from course.sending import Sender
from course.tokens import Signer


def baseline(port: int, messages: int, message: bytes) -> float:
    """Messages per second: smtplib sending an already-built message over one connection."""
    client = smtplib.SMTP("127.0.0.1", port)
    client.ehlo()

    def run() -> None:
        for i in range(messages):
            client.sendmail("course@harbor.example.org", [f"reader{i}@example.com"], message)

    seconds, _ = timed(run)
    client.quit()
    return messages / seconds


def sample_message(port: int) -> bytes:
    settings = bench_settings("sqlite://", f"smtp://127.0.0.1:{port}")
    renderer = Renderer(settings, Signer(settings.secret_keys))
    lessons = load_lessons(lessons_dir(settings))
    reader = Reader("p000000000001", "reader1@example.com", "Reader")
    return renderer.build("lesson", 1, reader, lessons, datetime.now(UTC))


def pipeline(kind: str, port: int, messages: int, connections: int, workdir: Path) -> float:
    """Messages per second through claim, render, build, SMTP and mark sent."""
    with database(kind, workdir) as url:
        seed(url, messages, messages)
        settings = bench_settings(url, f"smtp://127.0.0.1:{port}", SMTP_CONNECTIONS=connections)
        engine = make_engine(url, asynchronous_commit=True)  # as `course scheduler` does
        sender = Sender(settings, make_sessionmaker(engine), transport_from_url(settings.mail_url))
        sender.library.current()  # load lessons outside the timing

        def run() -> int:
            sent = 0
            while True:
                result = sender.tick()
                sent += result.sent
                if result.due == 0:
                    return sent

        seconds, sent = timed(run)
        engine.dispose()
        if sent != messages:
            raise RuntimeError(f"sent {sent} of {messages}")
        return messages / seconds


def run(workdir: Path, messages: int, pool: int, kinds: list[str]) -> dict[str, Any]:
    """All throughput figures, each with the baseline measured in the same run."""
    out: dict[str, Any] = {"messages": messages, "pool_connections": pool}
    with smtp_sink() as port:
        message = sample_message(port)
        out["message_bytes"] = len(message)
        out["baseline_per_s"] = baseline(port, messages, message)
        for kind in kinds:
            for label, connections in (("one", 1), ("pool", pool)):
                rate = pipeline(kind, port, messages, connections, workdir)
                out[f"{kind}_{label}_per_s"] = rate
                out[f"{kind}_{label}_ratio"] = rate / out["baseline_per_s"]
    return out
