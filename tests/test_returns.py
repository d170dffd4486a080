"""What comes back after sending, end to end: a message in a real IMAP or POP3 mailbox (or
a provider's signed webhook call), to the reader's state, to the dashboard."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from sqlalchemy import select

from course.app import create_app
from course.envelope import envelope_sender
from course.models import (
    Delivery,
    DeliveryStatus,
    Event,
    EventKind,
    InboundMessage,
    Reply,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests import mailserver
from tests.conftest import CourseRunner, FakeClock, make_config, make_sender
from tests.helpers import REPO
from tests.test_health import admin_client
from tests.test_sending import MemoryTransport, enrol

dovecot = mailserver.dovecot
SAMPLES = REPO / "tests" / "samples" / "feedback"
SAMPLE_PID = "Qx7pZ1aB2cD3eF4gH5iJ6k"


def sample(name: str, public_id: str, *, lesson: int = 1, verp: str | None = None) -> bytes:
    """A sample report about this reader's lesson ``lesson`` (and delivered to ``verp``)."""
    raw = (SAMPLES / f"{name}.eml").read_bytes()
    raw = raw.replace(SAMPLE_PID.encode(), public_id.encode())
    for n in range(1, 10):
        raw = raw.replace(
            f"<lesson-{n}.{public_id}".encode(), f"<lesson-{lesson}.{public_id}".encode()
        )
    if verp:
        for tag in (
            b"bounces+d2s.4f1c9a07be@harbor.example.org",
            b"bounces+d2x.aa11bb22cc@harbor.example.org",
        ):
            raw = raw.replace(tag, verp.encode())
    return raw


@pytest.fixture
def setup(
    tmp_path: Path, sqlite_url: str, dovecot: Any
) -> Iterator[Callable[..., tuple[Flask, str]]]:
    """An app reading the test mailbox, and a reader who received lesson 1; returns
    (app, the reader's public id)."""
    apps: list[Flask] = []

    def make(scheme: str = "imap", **overrides: Any) -> tuple[Flask, str]:
        port = dovecot.imap_port if scheme == "imap" else dovecot.pop3_port
        from urllib.parse import quote

        url = (
            f"{scheme}://{quote(dovecot.user, safe='')}:{quote(dovecot.password, safe='')}"
            f"@127.0.0.1:{port}/?plain=true"
        )
        if scheme == "imap":
            url = url.replace("/?", "/INBOX?") + "&processed=Done"
        app = create_app(
            make_config(
                tmp_path,
                sqlite_url,
                BOUNCE_MAILBOX_URL=url,
                BOUNCE_ADDRESS="bounces@harbor.example.org",
                VERP=True,
                **overrides,
            )
        )
        apps.append(app)
        settings = app.extensions["course"].settings
        clock = FakeClock(now=utcnow() - timedelta(days=2))
        public_id = enrol(settings, clock, "ana@example.com")
        make_sender(settings, MemoryTransport(), clock).tick()  # lesson 1 sent
        return app, public_id

    yield make
    for app in apps:
        app.extensions["course"].engine.dispose()


def reader(app: Flask) -> Subscriber:
    with app.extensions["course"].sessions() as s:
        return s.scalars(select(Subscriber)).one()


def check(app: Flask) -> str:
    result = CourseRunner(app).invoke(["bounces", "check"])
    assert result.exit_code == 0, result.output
    return str(result.output)


def lesson_one_verp(app: Flask) -> str:
    with app.extensions["course"].sessions() as s:
        delivery = s.scalars(
            select(Delivery).where(Delivery.kind == "lesson", Delivery.number == 1)
        ).one()
    return envelope_sender(app.extensions["course"].settings, delivery.id)


@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_a_hard_bounce_in_the_mailbox_stops_the_course(
    setup: Callable[..., tuple[Flask, str]], dovecot: Any, scheme: str
) -> None:
    app, pid = setup(scheme)
    dovecot.deliver(sample("postfix_hard_5.1.1", pid, verp=lesson_one_verp(app)))
    assert "bounces: 1 bounced" in check(app)
    assert reader(app).status == SubscriberStatus.BOUNCED
    with app.extensions["course"].sessions() as s:
        lesson_two = select(Delivery).where(Delivery.kind == "lesson", Delivery.number == 2)
        assert [d.status for d in s.scalars(lesson_two)] == [DeliveryStatus.CANCELLED]
        event = s.scalars(select(Event).where(Event.kind == EventKind.BOUNCE)).one()
        assert event.value == "hard:5.1.1" and event.via == "bounces"
    # Handled once: gone from the inbox (moved, or deleted on POP3), never read again.
    assert dovecot.folder_messages("INBOX") == []
    if scheme == "imap":
        assert len(dovecot.folder_messages("Done")) == 1
    assert "no messages" in check(app)
    # And no further lesson goes out to this reader.
    settings = app.extensions["course"].settings
    transport = MemoryTransport()
    make_sender(settings, transport, FakeClock(now=utcnow() + timedelta(days=3))).tick()
    assert transport.sent == []
    page = admin_client(app).get("/admin/").get_data(as_text=True)
    assert "Hard bounces</th><td>1" in page


def test_a_bounce_found_by_its_message_id_and_soft_bounces_that_add_up(
    setup: Callable[..., tuple[Flask, str]], dovecot: Any
) -> None:
    app, pid = setup(SOFT_BOUNCE_LIMIT=2)
    dovecot.deliver(sample("postfix_soft_mailbox_full_5.2.2", pid))  # no VERP: Message-ID
    assert "1 soft-bounce" in check(app)
    assert reader(app).status == SubscriberStatus.ACTIVE and reader(app).soft_bounces == 1
    dovecot.deliver(
        sample("postfix_soft_mailbox_full_5.2.2", pid).replace(b"Mailbox full", b"Mailbox is full")
    )
    assert "1 bounced" in check(app)
    assert reader(app).status == SubscriberStatus.BOUNCED


def test_a_complaint_unsubscribes_at_once_with_the_reason(
    setup: Callable[..., tuple[Flask, str]], dovecot: Any
) -> None:
    app, pid = setup()
    dovecot.deliver(sample("arf_yahoo", pid))
    assert "1 complaint" in check(app)
    assert reader(app).status == SubscriberStatus.UNSUBSCRIBED
    with app.extensions["course"].sessions() as s:
        complaint = s.scalars(select(Event).where(Event.kind == EventKind.COMPLAINT)).one()
        unsubscribe = s.scalars(select(Event).where(Event.kind == EventKind.UNSUBSCRIBE)).one()
    assert complaint.value == "abuse" and unsubscribe.via == "complaint"
    assert complaint.lesson == 1
    assert "Spam complaints</th><td>1" in admin_client(app).get("/admin/").get_data(as_text=True)


def test_replies_reach_the_timeline_and_auto_replies_do_not(
    setup: Callable[..., tuple[Flask, str]], dovecot: Any
) -> None:
    app, pid = setup()
    dovecot.deliver(sample("reply_plain_gmail", pid))
    dovecot.deliver(sample("auto_gmail_vacation", pid))
    output = check(app)
    assert "1 reply" in output and "1 auto-reply" in output
    with app.extensions["course"].sessions() as s:
        [reply] = s.scalars(select(Reply)).all()
    assert reply.lesson == 1 and reply.text and "wrote:" not in reply.text
    page = admin_client(app).get(f"/admin/subscribers/{pid}").get_data(as_text=True)
    assert "Replied to lesson 1" in page
    assert reply.text.split()[0] in page
    assert page.count("Replied") == 1  # the out-of-office is not shown as a reply
    export = admin_client(app).get(f"/admin/subscribers/{pid}/export.json").get_json()
    assert export["replies"][0]["text"] == reply.text
    from course.privacy import erase

    with app.extensions["course"].sessions() as s, s.begin():
        erase(s, s.scalars(select(Subscriber)).one(), (), utcnow())
    with app.extensions["course"].sessions() as s:
        assert s.scalars(select(Reply)).all() == []


def test_unmatched_and_unreadable_messages_are_kept_and_counted_never_lost(
    setup: Callable[..., tuple[Flask, str]], dovecot: Any
) -> None:
    app, pid = setup()
    stranger = (SAMPLES / "gmail_hard_5.1.1.eml").read_bytes()  # about nobody we know
    dovecot.deliver(stranger)
    dovecot.deliver((SAMPLES / "junk_binary.eml").read_bytes())
    output = check(app)
    assert "1 unmatched" in output and "1 unusable" in output
    assert len(dovecot.folder_messages("course-kept")) == 2
    assert reader(app).status == SubscriberStatus.ACTIVE
    assert "no messages" in check(app)  # kept ones are not read again
    assert "Mailbox messages kept unread</th><td>2" in admin_client(app).get("/admin/").get_data(
        as_text=True
    )


def test_a_message_applied_before_a_crash_is_not_applied_twice(
    setup: Callable[..., tuple[Flask, str]], dovecot: Any
) -> None:
    """The database has the effect, the mailbox was never told (the process died): the
    next run finds the message's fingerprint and only tells the mailbox."""
    from course.mailroom import fingerprint

    app, pid = setup()
    raw = sample("postfix_soft_mailbox_full_5.2.2", pid)
    with app.extensions["course"].sessions() as s, s.begin():
        s.add(
            InboundMessage(
                key=fingerprint("bounces", raw),
                source="bounces",
                mailbox_id=None,
                outcome="soft-bounce",
                created_at=utcnow(),
            )
        )
    dovecot.deliver(raw)
    assert "1 soft-bounce" in check(app)
    assert reader(app).soft_bounces == 0  # the effect is not applied a second time
    assert dovecot.folder_messages("INBOX") == []


def test_a_mailbox_that_cannot_be_read_is_reported_not_raised(
    tmp_path: Path, sqlite_url: str
) -> None:
    app = create_app(
        make_config(tmp_path, sqlite_url, BOUNCE_MAILBOX_URL="imap://u:p@127.0.0.1:1/?plain=true")
    )
    result = CourseRunner(app).invoke(["bounces", "check"])
    assert (
        result.exit_code == 1 and "cannot be read" in result.output and ":p@" not in result.output
    )
    app.extensions["course"].engine.dispose()


# -- webhooks ----------------------------------------------------------------------------------

MAILGUN_KEY = "key-" + "0" * 28


@pytest.fixture
def hooked(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Flask, str, Any]]:
    """An app with all three webhooks on, and a reader who received lesson 1."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = create_app(
        make_config(
            tmp_path,
            sqlite_url,
            MAILGUN_SIGNING_KEY=MAILGUN_KEY,
            SENDGRID_VERIFICATION_KEY=base64.b64encode(public).decode(),
            POSTMARK_WEBHOOK_AUTH="postmark:hook-password",
        )
    )
    settings = app.extensions["course"].settings
    clock = FakeClock(now=utcnow())
    public_id = enrol(settings, clock, "ana@example.com")
    make_sender(settings, MemoryTransport(), clock).tick()
    yield app, public_id, private
    app.extensions["course"].engine.dispose()


def _mailgun(event: dict[str, Any], key: str = MAILGUN_KEY, age: float = 0) -> dict[str, Any]:
    timestamp = str(int(time.time() - age))
    token = hashlib.sha256(json.dumps(event).encode() + timestamp.encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event,
    }


def test_mailgun_webhook_signed_unsigned_and_replayed(hooked: tuple[Flask, str, Any]) -> None:
    app, pid, _ = hooked
    client = app.test_client()
    event = {
        "event": "failed",
        "severity": "permanent",
        "recipient": "ana@example.com",
        "message": {"headers": {"message-id": f"lesson-1.{pid}@course.example.org"}},
        "delivery-status": {"code": 550, "enhanced-code": "5.1.1", "message": "No such user"},
    }
    unsigned = {"event-data": event}
    bad = _mailgun(event, key="key-wrong" + "0" * 23)
    old = _mailgun(event, age=3600)
    for body in (unsigned, bad, old):
        assert client.post("/webhooks/mailgun", json=body).status_code == 401
    assert reader(app).status == SubscriberStatus.ACTIVE
    good = _mailgun(event)
    answer = client.post("/webhooks/mailgun", json=good)
    assert answer.status_code == 200 and answer.get_json()["applied"] == 1
    assert reader(app).status == SubscriberStatus.BOUNCED
    assert client.post("/webhooks/mailgun", json=good).get_json()["applied"] == 0  # a retry
    complaint = _mailgun({"event": "complained", "recipient": "ana@example.com"})
    assert client.post("/webhooks/mailgun", json=complaint).status_code == 200
    with app.extensions["course"].sessions() as s:
        assert (
            s.scalars(select(Event).where(Event.kind == EventKind.COMPLAINT)).one().via == "mailgun"
        )


def _sendgrid(private: Any, body: bytes, age: float = 0) -> dict[str, str]:
    timestamp = str(int(time.time() - age))
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def test_sendgrid_webhook_signed_unsigned_and_tampered(hooked: tuple[Flask, str, Any]) -> None:
    app, pid, private = hooked
    client = app.test_client()
    body = json.dumps(
        [
            {"event": "delivered", "email": "ana@example.com", "sg_event_id": "e1"},
            {
                "event": "spamreport",
                "email": "ana@example.com",
                "smtp-id": f"<lesson-1.{pid}@course.example.org>",
                "sg_event_id": "e2",
            },
        ]
    ).encode()
    headers = _sendgrid(private, body)
    missing = {"Content-Type": "application/json"}
    assert client.post("/webhooks/sendgrid", data=body, headers=missing).status_code == 401
    tampered = body.replace(b"spamreport", b"spamreporx")
    assert client.post("/webhooks/sendgrid", data=tampered, headers=headers).status_code == 401
    other = ec.generate_private_key(ec.SECP256R1())
    assert (
        client.post("/webhooks/sendgrid", data=body, headers=_sendgrid(other, body)).status_code
        == 401
    )
    assert reader(app).status == SubscriberStatus.ACTIVE
    answer = client.post("/webhooks/sendgrid", data=body, headers=headers)
    assert answer.status_code == 200 and answer.get_json()["applied"] == 1
    assert reader(app).status == SubscriberStatus.UNSUBSCRIBED
    assert "Spam complaints</th><td>1" in admin_client(app).get("/admin/").get_data(as_text=True)


def test_postmark_webhook_needs_its_credentials(hooked: tuple[Flask, str, Any]) -> None:
    app, _, _ = hooked
    client = app.test_client()
    bounce = {"RecordType": "Bounce", "Type": "HardBounce", "Email": "ana@example.com", "ID": 7}
    auth = "Basic " + base64.b64encode(b"postmark:hook-password").decode()
    wrong = "Basic " + base64.b64encode(b"postmark:guess").decode()
    assert client.post("/webhooks/postmark", json=bounce).status_code == 401
    assert (
        client.post("/webhooks/postmark", json=bounce, headers={"Authorization": wrong}).status_code
        == 401
    )
    assert reader(app).status == SubscriberStatus.ACTIVE
    assert (
        client.post("/webhooks/postmark", json=bounce, headers={"Authorization": auth}).status_code
        == 200
    )
    assert reader(app).status == SubscriberStatus.BOUNCED


def test_webhooks_that_are_not_configured_do_not_exist(app: Flask) -> None:
    for provider in ("mailgun", "sendgrid", "postmark"):
        assert app.test_client().post(f"/webhooks/{provider}", json={}).status_code == 404
