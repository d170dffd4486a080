"""Development only: browse the outbox folder, so the demo can be clicked through end to end.

Registered only while ``COURSE_MAIL_URL`` is an ``outbox:`` folder.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

from flask import Blueprint, Flask, abort, render_template
from flask.typing import ResponseReturnValue

from course.extensions import state
from course.mail.outbox import OutboxTransport

bp = Blueprint("dev", __name__, url_prefix="/dev")


def init_app(app: Flask) -> None:
    """Register the outbox viewer (the factory does so only in development)."""
    app.register_blueprint(bp)


_NAME = re.compile(r"^[0-9]+-[A-Za-z0-9._-]+\.eml$")


def _outbox() -> OutboxTransport:
    return OutboxTransport(state().settings.mail_url.removeprefix("outbox:"))


def _parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


@bp.get("/outbox")
def outbox() -> ResponseReturnValue:
    """The messages in the outbox, newest first."""
    rows = []
    for path in _outbox().messages()[:200]:
        msg = _parse(path.read_bytes())
        rows.append(
            {"name": path.name, "to": msg["To"], "subject": msg["Subject"], "date": msg["Date"]}
        )
    return render_template("web/dev_outbox.html", rows=rows)


@bp.get("/outbox/<name>")
def message(name: str) -> ResponseReturnValue:
    """One message: headers, the text part, and the HTML part in a sandboxed frame."""
    if not _NAME.match(name):
        abort(404)
    path = _outbox().folder / name
    if not path.is_file():
        abort(404)
    msg = _parse(path.read_bytes())
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return render_template(
        "web/dev_message.html",
        name=name,
        headers=list(msg.items()),
        text=text.get_content() if text else "",
        html=html.get_content() if html else "",
    )
