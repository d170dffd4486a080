"""Rendering: one lesson message per reader, against building it with the email package."""

from __future__ import annotations

import timeit
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from bench.common import bench_settings
from course.courses import folder_view
from course.render import Reader, Renderer
from course.resources import lessons_dir
from course.tokens import Signer


def run(number: int = 2000) -> dict[str, Any]:
    """Microseconds per message: our build, and the email package building the same bodies."""
    settings = bench_settings("sqlite://", "outbox:/dev/null")
    renderer = Renderer(settings, Signer(settings.secret_keys))
    lessons = folder_view(lessons_dir(settings))[0]
    now = datetime.now(UTC)
    counter = iter(range(10**9))

    def ours() -> bytes:
        i = next(counter)
        return renderer.build(
            "lesson", 2, Reader(f"p{i:012d}", f"r{i}@example.com", "Reader"), lessons, now
        )

    def naive() -> bytes:
        # What a straightforward engine does per message: fill the bodies, then let the
        # email package build and encode the MIME message.
        i = next(counter)
        reader = Reader(f"p{i:012d}", f"r{i}@example.com", "Reader")
        compiled = renderer.compiled("lesson", 2, lessons)
        values = renderer.slot_values(compiled.slots | {"unsubscribe_url"}, reader, "lesson", 2)
        html, text = compiled.fill(values)
        msg = EmailMessage(policy=SMTP.clone(max_line_length=998))
        msg["From"] = settings.mail_from
        msg["To"] = reader.email
        msg["Subject"] = compiled.subject
        msg["Message-ID"] = renderer.message_id("lesson", 2, reader.public_id)
        msg.set_content(text, charset="utf-8", cte="quoted-printable")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
        return msg.as_bytes()

    ours()
    naive()
    ours_us = min(timeit.repeat(ours, number=number, repeat=3)) / number * 1e6
    naive_us = min(timeit.repeat(naive, number=number, repeat=3)) / number * 1e6
    return {"ours_us": ours_us, "email_package_us": naive_us, "ratio": ours_us / naive_us}
