"""The peer row: django-post_office sending the same lesson to the same sink, on PostgreSQL.

Run by ``bench.throughput`` as its own process (so that it can be pinned to a CPU), only
when ``django-post_office`` is importable; an optional extra, never a dependency of the
product: ``.venv/bin/pip install -e '.[bench]'`` before ``make bench`` to get the row.

``python -m bench.post_office_peer PORT SCHEMA MESSAGE_FILE N WORKDIR`` configures Django
against the PostgreSQL schema SCHEMA (of ``COURSE_BENCH_POSTGRES_URL``), creates
post_office's tables there, and queues N emails (one recipient each) carrying the subject,
the text and HTML bodies and the List-Unsubscribe headers of the lesson in MESSAGE_FILE.
It prints ``ready`` and waits for a line on standard input; then it sends the queue the
way post_office's ``send_queued_mail`` command does (``send_queued_mail_until_done``, one
process, post_office's defaults otherwise: batches of 100, 5 threads, a log row per
email), and prints ``{"seconds": ..., "sent": ..., "message_bytes": ...}``. The time
covers the sending only, not Django's start, the migration or the queueing.
"""

from __future__ import annotations

import email
import email.policy
import json
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.common import PG_URL

SENDER = "Harbor Therapy <course@harbor.example.org>"
KEPT_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")


def configure(port: int, schema: str) -> None:
    import django
    from django.conf import settings

    url = make_url(PG_URL)
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["django.contrib.contenttypes", "post_office"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": url.database or "",
                "USER": url.username or "",
                "PASSWORD": url.password or "",
                "HOST": url.host or "",
                "PORT": str(url.port or ""),
                "OPTIONS": {"options": f"-c search_path={schema}"},
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        POST_OFFICE={"BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"}},
        LOGGING_CONFIG=None,
    )
    django.setup()


def lesson_parts(raw: bytes) -> dict[str, Any]:
    """Subject, bodies and list headers of the lesson the course built."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    return {
        "subject": str(msg["Subject"]),
        "message": text.get_content() if text is not None else "",
        "html_message": html.get_content() if html is not None else "",
        "headers": {name: str(msg[name]) for name in KEPT_HEADERS if msg[name] is not None},
    }


def main() -> None:
    port, schema = int(sys.argv[1]), sys.argv[2]
    raw, messages, workdir = Path(sys.argv[3]).read_bytes(), int(sys.argv[4]), Path(sys.argv[5])
    configure(port, schema)
    from django.core.management import call_command
    from post_office.mail import send_queued_mail_until_done
    from post_office.models import PRIORITY, STATUS, Email

    call_command("migrate", verbosity=0)
    parts = lesson_parts(raw)
    Email.objects.bulk_create(
        [
            Email(
                from_email=SENDER,
                to=[f"reader{i}@example.com"],
                status=STATUS.queued,
                priority=PRIORITY.medium,
                **parts,
            )
            for i in range(messages)
        ],
        batch_size=1000,
    )
    size = len(Email.objects.first().email_message().message().as_bytes())
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    send_queued_mail_until_done(lockfile=str(workdir / "post_office"), processes=1)
    seconds = time.perf_counter() - start
    sent = Email.objects.filter(status=STATUS.sent).count()
    print(json.dumps({"seconds": seconds, "sent": sent, "message_bytes": size}), flush=True)


if __name__ == "__main__":
    main()
