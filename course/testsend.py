"""A test send: one email of a course (published or a draft) to a practice's own address,
now, outside the course."""

from __future__ import annotations

from datetime import datetime

from course.config import Settings
from course.courses import PublishedCourse
from course.mail import transport_from_url
from course.render import Renderer, envelope_address, sample_reader


def send_test(
    settings: Settings,
    renderer: Renderer,
    course: PublishedCourse,
    key: int,
    address: str,
    now: datetime,
    kind: str = "lesson",
) -> None:
    """Send lesson ``key`` (or the completion or follow-up email, ``kind``) of ``course``
    to ``address`` through the configured transport.

    Raises ``LookupError`` for a missing lesson and ``course.mail.DeliveryError`` when the
    transport refuses it.
    """
    reader = sample_reader(settings, address)
    # A subject marked as a test and a Message-ID of its own: a mail app must never hide
    # the second test after an edit as a copy of the first.
    message = renderer.build(kind, key, reader, course, now, test=True)
    with transport_from_url(settings.mail_url, ehlo_name=settings.ehlo_name).open() as conn:
        conn.send(renderer.envelope_from, envelope_address(address), message)
