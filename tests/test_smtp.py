"""SMTP delivery against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from course.mail import MaybeDelivered, PermanentError, TransientError, transport_from_url
from course.mail.smtp import SMTPTransport
from course.models import Subscriber, SubscriberStatus
from tests.conftest import FakeClock, RecordingHandler, engine_settings, make_sender, sessions_for
from tests.helpers import parse
from tests.slow_smtp import slow_smtp_server
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
        # The five lessons, then the completion email a "day" (30 s) after the last one.
        assert subjects == [f"Day {n} of 5" for n in range(1, 6)] + ["You finish"]


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


# -- a slow relay: "maybe delivered" after DATA, re-opening before it --------------------------
# The relay stores each message when its data ends, then answers after `delay` seconds.


def test_a_timeout_after_the_data_is_maybe_delivered_and_not_resent() -> None:
    with slow_smtp_server(delay=1.5) as (controller, handler):
        transport = SMTPTransport("127.0.0.1", controller.port, timeout=0.2, data_timeout=0.6)
        with transport.open() as conn:
            started = time.monotonic()
            with pytest.raises(MaybeDelivered, match="maybe delivered") as raised:
                conn.send("a@example.org", "b@example.org", MESSAGE)
            # The DATA phase waited data_timeout, not the shorter timeout.
            assert time.monotonic() - started >= 0.6
            assert isinstance(raised.value, TransientError)  # the engine retries it later
            assert conn._client is None  # the connection was dropped, not resent on
            time.sleep(0.4)  # an immediate resend would have been stored by now
            assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"]]
            # The next message opens a new connection.
            handler.delay = 0
            conn.send("a@example.org", "c@example.org", MESSAGE)
        assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"], ["c@example.org"]]


def test_a_data_timeout_longer_than_the_relay_needs_waits_for_its_answer() -> None:
    with slow_smtp_server(delay=0.8) as (controller, handler):
        url = f"smtp://127.0.0.1:{controller.port}?timeout=0.2&data_timeout=3"
        with transport_from_url(url).open() as conn:
            started = time.monotonic()
            conn.send("a@example.org", "b@example.org", MESSAGE)
            assert time.monotonic() - started >= 0.8
            client = conn._client
            assert client is not None and client.sock is not None
            assert client.sock.gettimeout() == 0.2  # the short timeout is back after DATA
            handler.delay = 0
            conn.send("a@example.org", "c@example.org", MESSAGE)
            assert conn._client is client  # the same connection carries the next message
        assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"], ["c@example.org"]]
        assert handler.mail_commands == 2


def test_a_drop_after_the_data_is_maybe_delivered_and_not_resent() -> None:
    with slow_smtp_server() as (controller, handler):
        handler.drop_after_data = True  # stores the message, then closes without an answer
        with SMTPTransport("127.0.0.1", controller.port, timeout=2).open() as conn:
            with pytest.raises(MaybeDelivered):
                conn.send("a@example.org", "b@example.org", MESSAGE)
            time.sleep(0.3)
        assert len(handler.messages) == 1
        assert handler.mail_commands == 1


def test_a_connection_closed_while_idle_is_reopened_and_the_message_sent_once() -> None:
    with slow_smtp_server(timeout=0.3) as (controller, handler):  # closes after 0.3 s idle
        with SMTPTransport("127.0.0.1", controller.port, timeout=2).open() as conn:
            conn.send("a@example.org", "b@example.org", MESSAGE)
            first_client = conn._client
            time.sleep(0.6)  # the server closes the idle connection meanwhile
            conn.send("a@example.org", "c@example.org", MESSAGE)
            assert conn._client is not first_client  # noticed at MAIL FROM, re-opened
        time.sleep(0.1)
        assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"], ["c@example.org"]]


def test_a_421_on_a_kept_connection_is_reopened_but_not_on_a_new_one() -> None:
    with slow_smtp_server() as (controller, handler):
        with SMTPTransport("127.0.0.1", controller.port, timeout=2).open() as conn:
            conn.send("a@example.org", "b@example.org", MESSAGE)
            handler.mail_421 = 1  # a relay's idle timeout, announced at the next command
            conn.send("a@example.org", "c@example.org", MESSAGE)
            assert handler.mail_commands == 3  # refused once, then sent on a new connection
        with SMTPTransport("127.0.0.1", controller.port, timeout=2).open() as conn:
            handler.mail_421 = 1  # on a new connection: the relay really is closing
            with pytest.raises(TransientError, match="421"):
                conn.send("a@example.org", "d@example.org", MESSAGE)
            assert conn._client is None
            assert handler.mail_commands == 4
            conn.send("a@example.org", "d@example.org", MESSAGE)
        assert [m.rcpt_tos[0] for m in handler.messages] == [
            "b@example.org",
            "c@example.org",
            "d@example.org",
        ]


def test_refusals_leave_the_connection_usable() -> None:
    with slow_smtp_server() as (controller, handler):
        handler.reject_rcpt["x@example.org"] = "550 5.1.1 No such user"
        with SMTPTransport("127.0.0.1", controller.port, timeout=2).open() as conn:
            with pytest.raises(PermanentError, match="550") as refused:
                conn.send("a@example.org", "x@example.org", MESSAGE)
            assert refused.value.bounce
            client = conn._client
            handler.refuse_data = "554 5.7.1 Message rejected by content policy"
            with pytest.raises(PermanentError, match="554") as rejected:
                conn.send("a@example.org", "b@example.org", MESSAGE)
            assert not rejected.value.bounce
            handler.refuse_data = "451 4.3.0 Try again later"
            with pytest.raises(TransientError, match="451"):
                conn.send("a@example.org", "b@example.org", MESSAGE)
            conn.send("a@example.org", "b@example.org", MESSAGE)
            assert conn._client is client  # RSET after each refusal, no reconnect
        assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"]]


def test_a_non_ascii_recipient_needs_smtputf8() -> None:
    with slow_smtp_server() as (controller, handler):
        with SMTPTransport("127.0.0.1", controller.port, timeout=2).open() as conn:
            conn.send("a@example.org", "jörg@example.org", MESSAGE)
            conn.send("a@example.org", "b@example.org", MESSAGE)
        assert [m.rcpt_tos for m in handler.messages] == [["jörg@example.org"], ["b@example.org"]]
        assert ["SMTPUTF8" in options for options in handler.mail_options] == [True, False]
    with slow_smtp_server(enable_SMTPUTF8=False) as (controller, handler):
        with SMTPTransport("127.0.0.1", controller.port, timeout=2).open() as conn:
            with pytest.raises(PermanentError, match="SMTPUTF8") as refused:
                conn.send("a@example.org", "jörg@example.org", MESSAGE)
            assert not refused.value.bounce
        assert handler.messages == []


def test_the_engine_does_not_resend_a_maybe_delivered_message_at_once(
    tmp_path: Path, db_url: str
) -> None:
    from course.models import Delivery

    with slow_smtp_server(delay=1.5) as (controller, handler):
        url = f"smtp://127.0.0.1:{controller.port}?timeout=0.2&data_timeout=0.5"
        settings = engine_settings(tmp_path, db_url, MAIL_URL=url)
        clock = FakeClock()
        enrol(settings, clock, "ana@example.com")
        result = make_sender(settings, transport_from_url(settings.mail_url), clock).tick()
        assert (result.sent, result.failed) == (0, 0)
        time.sleep(0.3)
        assert len(handler.messages) == 1  # one copy for this tick (it used to be two)
    with sessions_for(settings.database_url)() as s:
        tried = [d for d in s.query(Delivery) if d.attempts]
    assert len(tried) == 1
    assert tried[0].due_at > clock()  # tried again later, not now


def test_data_timeout_url_option() -> None:
    transport = SMTPTransport.from_url("smtp://relay.example?timeout=10&data_timeout=120.5")
    assert (transport.timeout, transport.data_timeout) == (10.0, 120.5)
    assert SMTPTransport.from_url("smtp://relay.example").data_timeout == 600.0


@pytest.mark.parametrize("option", ["timeout", "data_timeout"])
@pytest.mark.parametrize("value", ["soon", "", "0", "-5", "nan", "inf"])
def test_bad_timeouts_are_refused(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"option {option} must be a positive number"):
        transport_from_url(f"smtp://relay.example?{option}={value}")


def test_bad_timeouts_are_refused_in_code() -> None:
    with pytest.raises(ValueError, match="data_timeout"):
        SMTPTransport("relay.example", 25, data_timeout=0)
