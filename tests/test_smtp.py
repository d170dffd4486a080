"""SMTP delivery against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from course.mail import PermanentError, TransientError, transport_from_url
from course.mail.smtp import SMTPTransport
from course.models import Subscriber, SubscriberStatus
from tests.conftest import FakeClock, RecordingHandler, engine_settings, make_sender, sessions_for
from tests.helpers import parse
from tests.test_sending import enrol

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def test_url_forms() -> None:
    plain = SMTPTransport.from_url("smtp://relay.example:2525?timeout=5")
    assert (plain.host, plain.port, plain.security, plain.timeout) == (
        "relay.example",
        2525,
        "none",
        5.0,
    )
    starttls = SMTPTransport.from_url("smtp+starttls://user%40x:p%3Ass@mail.example")
    assert (starttls.port, starttls.security, starttls.username, starttls.password) == (
        587,
        "starttls",
        "user@x",
        "p:ss",
    )
    implicit = SMTPTransport.from_url("smtps://mail.example?verify=false")
    assert (implicit.port, implicit.security, implicit.verify) == (465, "tls", False)
    with pytest.raises(ValueError, match="COURSE_MAIL_URL"):
        transport_from_url("http://example.org")


def test_whole_course_over_real_smtp(
    tmp_path: Path, db_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, handler = smtp_server
    settings = engine_settings(
        tmp_path, db_url, MAIL_URL=f"smtp://127.0.0.1:{controller.port}", LESSON_INTERVAL=30
    )
    clock = FakeClock()
    sender = make_sender(settings, transport_from_url(settings.mail_url), clock)
    for name in ("ana", "bo", "cy"):
        enrol(settings, clock, f"{name}@example.com")
    for _ in range(12):
        sender.tick()
        clock.advance(seconds=15)
    by_reader: dict[str, list[str]] = {}
    for received in handler.messages:
        msg = parse(received.data)
        assert received.mail_from == "course@harbor.example.org"
        by_reader.setdefault(received.rcpt_tos[0], []).append(str(msg["Subject"])[:10])
    assert sorted(by_reader) == ["ana@example.com", "bo@example.com", "cy@example.com"]
    for subjects in by_reader.values():
        assert subjects == [f"Day {n} of 5" for n in range(1, 6)]


def test_permanent_rejection_bounces_only_that_reader(
    tmp_path: Path, db_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, handler = smtp_server
    handler.reject_rcpt["gone@example.com"] = "550 5.1.1 No such user"
    handler.reject_rcpt["busy@example.com"] = "451 4.3.0 Try again later"
    settings = engine_settings(tmp_path, db_url, MAIL_URL=f"smtp://127.0.0.1:{controller.port}")
    clock = FakeClock()
    for name in ("gone", "busy", "fine"):
        enrol(settings, clock, f"{name}@example.com")
    result = make_sender(settings, transport_from_url(settings.mail_url), clock).tick()
    assert (result.sent, result.retried, result.failed) == (1, 1, 1)
    assert [m.rcpt_tos for m in handler.messages] == [["fine@example.com"]]
    with sessions_for(settings.database_url)() as s:
        status = {sub.email: sub.status for sub in s.query(Subscriber)}
    assert status == {
        "gone@example.com": SubscriberStatus.BOUNCED,
        "busy@example.com": SubscriberStatus.ACTIVE,
        "fine@example.com": SubscriberStatus.ACTIVE,
    }


def test_connection_is_reused_and_reopened_after_a_drop(
    smtp_server: tuple[Controller, RecordingHandler],
) -> None:
    controller, handler = smtp_server
    transport = SMTPTransport("127.0.0.1", controller.port)
    with transport.open() as conn:
        conn.send("a@example.org", "b@example.org", MESSAGE)
        first_client = conn._client
        conn.send("a@example.org", "c@example.org", MESSAGE)
        assert conn._client is first_client  # one connection for the batch
        first_client.sock.close()  # the server or network drops it
        conn.send("a@example.org", "d@example.org", MESSAGE)
    assert [m.rcpt_tos[0] for m in handler.messages] == [
        "b@example.org",
        "c@example.org",
        "d@example.org",
    ]


def test_refused_connection_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with SMTPTransport("127.0.0.1", port, timeout=2).open() as conn:
        with pytest.raises(TransientError):
            conn.send("a@example.org", "b@example.org", MESSAGE)


def test_a_server_that_never_answers_times_out_as_transient() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        transport = SMTPTransport("127.0.0.1", listener.getsockname()[1], timeout=0.5)
        with transport.open() as conn, pytest.raises(TransientError):
            conn.send("a@example.org", "b@example.org", MESSAGE)
    finally:
        thread.join(2)
        for sock in accepted:
            sock.close()
        listener.close()


def test_5xx_recipient_is_permanent(smtp_server: tuple[Controller, RecordingHandler]) -> None:
    controller, handler = smtp_server
    handler.reject_rcpt["x@example.org"] = "550 nope"
    with SMTPTransport("127.0.0.1", controller.port).open() as conn:
        with pytest.raises(PermanentError, match="550"):
            conn.send("a@example.org", "x@example.org", MESSAGE)


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def tls_server(
    certificate: tuple[Path, Path], request: pytest.FixtureRequest
) -> Iterator[tuple[Controller, RecordingHandler]]:
    handler = RecordingHandler()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = _server_context(certificate)
    if request.param == "starttls":
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.mark.parametrize(
    ("tls_server", "scheme"),
    [("starttls", "smtp+starttls"), ("implicit", "smtps")],
    indirect=["tls_server"],
)
def test_tls_forms(tls_server: tuple[Controller, RecordingHandler], scheme: str) -> None:
    controller, handler = tls_server
    transport = transport_from_url(f"{scheme}://127.0.0.1:{controller.port}?verify=false")
    with transport.open() as conn:
        conn.send("a@example.org", "b@example.org", MESSAGE)
    assert len(handler.messages) == 1
    # With certificate checks on, a self-signed certificate is refused.
    strict = transport_from_url(f"{scheme}://127.0.0.1:{controller.port}")
    with strict.open() as conn, pytest.raises(TransientError):
        conn.send("a@example.org", "b@example.org", MESSAGE)


@pytest.mark.parametrize(
    ("code", "reply", "at_recipient", "bounce"),
    [
        (550, "5.1.1 No such user", True, True),
        (550, "No such user here", True, True),
        (552, "5.2.1 Mailbox disabled", True, True),
        (550, "5.7.1 Relaying denied", True, False),
        (550, "Relaying denied", True, False),
        (554, "5.7.1 Message rejected as spam", False, False),
        (552, "5.3.4 Message too big", False, False),
    ],
)
def test_only_mailbox_problems_bounce_the_reader(
    code: int, reply: str, at_recipient: bool, bounce: bool
) -> None:
    from course.mail.smtp import _classify

    error = _classify(code, reply, at_recipient=at_recipient)
    assert isinstance(error, PermanentError) and error.bounce is bounce


def test_a_refused_message_fails_the_delivery_but_keeps_the_reader(
    tmp_path: Path, db_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, handler = smtp_server

    async def refuse(server, session, envelope):  # type: ignore[no-untyped-def]
        return "554 5.7.1 Message rejected by content policy"

    handler.handle_DATA = refuse  # type: ignore[method-assign]
    settings = engine_settings(tmp_path, db_url, MAIL_URL=f"smtp://127.0.0.1:{controller.port}")
    clock = FakeClock()
    enrol(settings, clock, "ana@example.com")
    result = make_sender(settings, transport_from_url(settings.mail_url), clock).tick()
    assert result.failed == 1
    with sessions_for(settings.database_url)() as s:
        assert s.query(Subscriber).one().status == SubscriberStatus.ACTIVE
