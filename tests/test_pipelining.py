"""The pipelining SMTP transport (:mod:`course.mail.pipelining`) against real servers.

- aiosmtpd, as tests/test_smtp.py uses it, in two variants: one that offers PIPELINING
  (aiosmtpd handles pipelined commands but does not announce the extension; a handler hook
  adds it to the EHLO reply) and one that does not (aiosmtpd as it comes);
- :class:`WireServer`, a small SMTP server of our own that checks *when* commands arrive:
  without PIPELINING none may come before the reply to the previous one, with PIPELINING it
  holds back its replies to MAIL FROM and RCPT TO until DATA has arrived too;
- Postfix's ``smtp-sink`` (``apt-get install -y postfix``), skipped when it is missing.

Several tests run the same conversation through today's smtplib transport and through the
new one and require the same outcome.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from course.mail import DeliveryError, MaybeDelivered, PermanentError, TransientError, Transport
from course.mail.pipelining import PipeliningTransport, _data_block
from course.mail.smtp import SMTPTransport
from course.models import Subscriber, SubscriberStatus
from tests.conftest import FakeClock, engine_settings, make_sender, sessions_for
from tests.helpers import parse
from tests.slow_smtp import SlowHandler, free_port
from tests.test_sending import enrol

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
# Lines that start with "." must be doubled on the wire and arrive as they were.
DOTTY = (
    b".a first line that starts with a dot\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b".\r\n"
    b"..\r\n"
    b". a dot and a space\r\n"
    b"...three\r\n"
    b"a line with a . inside, and one ending in a dot.\r\n"
    b"\r\n"
    b".\r\n"
    b".last line\r\n"
)


def pipelining(url: str) -> PipeliningTransport:
    return PipeliningTransport.from_url(url)


# -- aiosmtpd, with and without PIPELINING ---------------------------------------------------


class Handler(SlowHandler):
    """:class:`tests.slow_smtp.SlowHandler` (records messages, can answer late, drop after the
    data, refuse DATA, answer MAIL with 421), which can also offer PIPELINING and refuse the
    next MAIL FROM."""

    def __init__(self, pipelining: bool, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.pipelining = pipelining
        self.reject_mail: str | None = None  # the reply to the next MAIL FROM (once)

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.reject_mail is not None:
            reply, self.reject_mail = self.reject_mail, None
            return reply
        return await super().handle_MAIL(server, session, envelope, address, mail_options)


@contextmanager
def serve(
    pipelining: bool, delay: float = 0.0, **smtp_options: Any
) -> Iterator[tuple[Controller, Handler]]:
    """An aiosmtpd server on a free loopback port; ``smtp_options`` go to its ``SMTP``."""
    handler = Handler(pipelining, delay)
    smtp_options.setdefault("enable_SMTPUTF8", True)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **smtp_options)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Controller, Handler]]:
    with serve(request.param) as running:
        yield running


def url_of(controller: Controller, options: str = "timeout=5") -> str:
    return f"smtp://127.0.0.1:{controller.port}?{options}"


def test_settings_and_url_forms_are_todays() -> None:
    for url in (
        "smtp://relay.example:2525?timeout=5",
        "smtp+starttls://user%40x:p%3Ass@mail.example?data_timeout=120.5",
        "smtps://mail.example?verify=false",
    ):
        assert pipelining(url).settings == SMTPTransport.from_url(url)
    assert pipelining("smtp://relay.example").settings.data_timeout == 600.0
    for bad in ("smtp://relay.example?timeout=0", "smtp://relay.example?data_timeout=soon"):
        with pytest.raises(ValueError, match="must be a positive number"):
            pipelining(bad)


def test_messages_arrive_on_one_connection(server: tuple[Controller, Handler]) -> None:
    controller, handler = server
    with pipelining(url_of(controller)).open() as conn:
        conn.send("a@example.org", "r0@example.org", MESSAGE)
        client = conn._client
        assert client is not None and client.pipelining is handler.pipelining
        for n in range(1, 200):
            conn.send(f"bounce+{n}@example.org", f"r{n}@example.org", MESSAGE)
        assert conn._client is client  # one connection for the whole batch
    assert [m.rcpt_tos for m in handler.messages] == [[f"r{n}@example.org"] for n in range(200)]
    assert [m.mail_from for m in handler.messages[:2]] == ["a@example.org", "bounce+1@example.org"]
    assert {m.data for m in handler.messages} == {MESSAGE}
    assert handler.mail_commands == 200


def test_lines_starting_with_a_dot_arrive_byte_identical(
    server: tuple[Controller, Handler],
) -> None:
    controller, handler = server
    with pipelining(url_of(controller)).open() as conn:
        conn.send("a@example.org", "b@example.org", DOTTY)
        conn.send("a@example.org", "b@example.org", b".")
        conn.send("a@example.org", "b@example.org", b"Subject: no end\r\n\r\nlast line")
        conn.send("a@example.org", "b@example.org", b"Subject: bare\n\n.dot\nline\rold mac\n")
    assert [m.data for m in handler.messages] == [
        DOTTY,
        b".\r\n",
        b"Subject: no end\r\n\r\nlast line\r\n",  # the final CRLF is added
        b"Subject: bare\r\n\r\n.dot\r\nline\r\nold mac\r\n",  # bare LF and CR become CRLF
    ]


def _smtplib_data(message: bytes) -> bytes:
    """What smtplib sends after the 354 reply (SMTP.data), for a message with CRLF ends."""
    quoted = re.sub(rb"(?m)^\.", b"..", message)
    if quoted[-2:] != b"\r\n":
        quoted += b"\r\n"
    return quoted + b".\r\n"


def test_data_is_dot_stuffed_exactly_as_smtplib_does() -> None:
    pieces = [b".", b"..", b"x", b" .", b"a.b", b"", b"\r\n", b".\r\n", b"\r\n.", b"text"]
    rng = random.Random(15)
    messages = [DOTTY, MESSAGE, b"", b".", b"\r\n", b"\r\n.\r\n", b".\r\n.\r\n"]
    messages += [b"".join(rng.choices(pieces, k=rng.randint(1, 30))) for _ in range(3000)]
    for message in messages:
        if message.count(b"\n") == message.count(b"\r") == message.count(b"\r\n"):
            assert _data_block(message) == _smtplib_data(message), message
    # Other line ends are made CRLF first, as smtplib does for a message given as text.
    assert _data_block(b"a\n.b\r.c\r\n") == _smtplib_data(b"a\r\n.b\r\n.c\r\n")
    assert _data_block(b"a\r\r\n\n") == _smtplib_data(b"a\r\n\r\n\r\n")


# -- the same outcomes as today's transport ---------------------------------------------------

Outcome = tuple[str, bool | None, str]


def _outcome(send: Callable[[], None]) -> Outcome:
    try:
        send()
    except DeliveryError as exc:
        return type(exc).__name__, getattr(exc, "bounce", None), str(exc)
    return "sent", None, ""


def _refusals(transport: Transport, handler: Handler) -> list[Outcome]:
    """Refused recipients, a refused sender, a refused DATA and a refused message, on one
    connection, each followed by a message that goes through."""
    handler.reject_rcpt["gone@example.org"] = "550 5.1.1 No such user"
    handler.reject_rcpt["nobody@example.org"] = "550 No such user here"
    handler.reject_rcpt["relay@example.org"] = "550 5.7.1 Relaying denied"
    handler.reject_rcpt["busy@example.org"] = "451 4.3.0 Try again later"
    outcomes: list[Outcome] = []
    with transport.open() as conn:
        conn.send("a@example.org", "ok@example.org", MESSAGE)
        outcomes.append(("sent", None, ""))
        client = getattr(conn, "_client", None)
        assert client is not None

        def send(to: str = "ok@example.org") -> None:
            outcomes.append(_outcome(lambda: conn.send("a@example.org", to, MESSAGE)))
            # After each refusal the connection was reset (RSET), not closed.
            assert getattr(conn, "_client", None) is client

        for to in ("gone@example.org", "nobody@example.org", "relay@example.org"):
            send(to)
        send("busy@example.org")
        send()
        handler.reject_mail = "553 5.7.1 Sender address rejected"
        send()
        handler.reject_mail = "452 4.3.1 Insufficient system storage"
        send()
        handler.refuse_data = "554 5.7.1 Message rejected by content policy"
        send()
        handler.refuse_data = "451 4.3.0 Try again later"
        send()
        send()
    return outcomes


def test_refusals_are_classified_as_today_and_keep_the_connection() -> None:
    results = {}
    for name, make in (("smtplib", SMTPTransport.from_url), ("pipelining", pipelining)):
        for offer in (True, False):
            with serve(offer) as (controller, handler):
                results[name, offer] = _refusals(make(url_of(controller)), handler)
                stored = [m.rcpt_tos for m in handler.messages]
                assert stored == [["ok@example.org"]] * 3, (name, offer)
    today = results["smtplib", False]
    assert results["pipelining", True] == today
    assert results["pipelining", False] == today
    assert results["smtplib", True] == today
    # What today's classification is, spelled out.
    assert [(kind, bounce) for kind, bounce, _ in today] == [
        ("sent", None),
        ("PermanentError", True),  # 550 5.1.1: the mailbox does not exist
        ("PermanentError", True),  # 550 without an enhanced code
        ("PermanentError", False),  # 5.7.1 relaying: our relay, not the reader
        ("TransientError", None),  # 451 at RCPT
        ("sent", None),
        ("TransientError", None),  # our sender refused: configuration, retried later
        ("TransientError", None),
        ("PermanentError", False),  # the content refused: fails, does not bounce
        ("TransientError", None),  # 451 after the data
        ("sent", None),
    ]
    assert today[1][2] == "550 5.1.1 No such user"
    assert today[6][2].startswith("sender refused: 553")


def test_a_dropped_connection_after_the_data_is_maybe_delivered_as_today() -> None:
    for make in (SMTPTransport.from_url, pipelining):
        for offer in (True, False):
            with serve(offer) as (controller, handler):
                handler.drop_after_data = True  # stores the message, closes without a reply
                with make(url_of(controller)).open() as conn:
                    with pytest.raises(MaybeDelivered, match="maybe delivered") as raised:
                        conn.send("a@example.org", "b@example.org", MESSAGE)
                    assert isinstance(raised.value, TransientError)
                    assert conn._client is None  # dropped, and the message not sent again
                    handler.drop_after_data = False
                    conn.send("a@example.org", "c@example.org", MESSAGE)  # a new connection
            assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"], ["c@example.org"]]
            assert handler.mail_commands == 2


def test_a_timeout_after_the_data_is_maybe_delivered() -> None:
    with serve(True, delay=1.5) as (controller, handler):  # answers 1.5 s after storing
        url = url_of(controller, "timeout=0.2&data_timeout=0.6")
        with pipelining(url).open() as conn:
            with pytest.raises(MaybeDelivered, match="maybe delivered"):
                conn.send("a@example.org", "b@example.org", MESSAGE)
            assert conn._client is None
            handler.delay = 0
            conn.send("a@example.org", "c@example.org", MESSAGE)
        assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"], ["c@example.org"]]
        assert handler.mail_commands == 2


@pytest.mark.parametrize("offer", [True, False], ids=["pipelining", "one-by-one"])
def test_the_data_phase_waits_data_timeout_then_timeout_is_back(offer: bool) -> None:
    # The relay answers the end of the data after 0.5 s: longer than `timeout`, so only a
    # wait of `data_timeout` gets the message through on the same connection.
    with serve(offer, delay=0.5) as (controller, handler):
        url = url_of(controller, "timeout=0.2&data_timeout=5")
        with pipelining(url).open() as conn:
            conn.send("a@example.org", "b@example.org", MESSAGE)
            client = conn._client
            assert client is not None and client.sock.gettimeout() == 0.2
            handler.delay = 0
            conn.send("a@example.org", "c@example.org", MESSAGE)
            assert conn._client is client
        assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"], ["c@example.org"]]


def test_a_421_on_a_kept_connection_is_reopened_but_not_on_a_new_one(
    server: tuple[Controller, Handler],
) -> None:
    controller, handler = server
    with pipelining(url_of(controller)).open() as conn:
        conn.send("a@example.org", "b@example.org", MESSAGE)
        handler.mail_421 = 1  # a relay's idle timeout, announced at the next command
        conn.send("a@example.org", "c@example.org", MESSAGE)
        assert handler.mail_commands == 3  # refused once, then sent on a new connection
    with pipelining(url_of(controller)).open() as conn:
        handler.mail_421 = 1  # on a new connection: the relay really is closing
        with pytest.raises(TransientError, match="421") as raised:
            conn.send("a@example.org", "d@example.org", MESSAGE)
        assert not isinstance(raised.value, MaybeDelivered)
        assert conn._client is None
        conn.send("a@example.org", "d@example.org", MESSAGE)
    assert [m.rcpt_tos[0] for m in handler.messages] == [
        "b@example.org",
        "c@example.org",
        "d@example.org",
    ]


def test_size_and_smtputf8(server: tuple[Controller, Handler]) -> None:
    controller, handler = server
    with pipelining(url_of(controller)).open() as conn:
        conn.send("a@example.org", "jörg@example.org", MESSAGE)
        conn.send("a@example.org", "b@example.org", MESSAGE)
    assert [m.rcpt_tos for m in handler.messages] == [["jörg@example.org"], ["b@example.org"]]
    assert [[o.upper() for o in options] for options in handler.mail_options] == [
        [f"SIZE={len(MESSAGE)}", "SMTPUTF8"],
        [f"SIZE={len(MESSAGE)}"],
    ]


@pytest.mark.parametrize("offer", [True, False], ids=["pipelining", "one-by-one"])
def test_a_non_ascii_recipient_without_smtputf8_fails_without_bouncing(offer: bool) -> None:
    with serve(offer, enable_SMTPUTF8=False) as (controller, handler):
        with pipelining(url_of(controller)).open() as conn:
            with pytest.raises(PermanentError, match="SMTPUTF8") as refused:
                conn.send("a@example.org", "jörg@example.org", MESSAGE)
            assert not refused.value.bounce
            conn.send("a@example.org", "b@example.org", MESSAGE)
        assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"]]


def test_a_line_break_in_an_address_smuggles_no_command(
    server: tuple[Controller, Handler],
) -> None:
    controller, handler = server
    for make in (SMTPTransport.from_url, pipelining):
        with make(url_of(controller)).open() as conn:
            # smtplib.quoteaddr keeps only the address it can parse; so does the new one.
            conn.send("a@example.org", "b@example.org>\r\nRCPT TO:<c@example.org", MESSAGE)
    assert [m.rcpt_tos for m in handler.messages] == [["b@example.org"], ["b@example.org"]]
    assert handler.mail_commands == 2


def test_refused_connection_is_transient() -> None:
    port = free_port()  # nothing listens there
    with pipelining(f"smtp://127.0.0.1:{port}?timeout=2").open() as conn:
        with pytest.raises(TransientError, match="cannot connect"):
            conn.send("a@example.org", "b@example.org", MESSAGE)


def test_a_server_that_never_answers_times_out_as_transient() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        url = f"smtp://127.0.0.1:{listener.getsockname()[1]}?timeout=0.5"
        with pipelining(url).open() as conn, pytest.raises(TransientError) as raised:
            conn.send("a@example.org", "b@example.org", MESSAGE)
        assert not isinstance(raised.value, MaybeDelivered)
    finally:
        thread.join(2)
        for sock in accepted:
            sock.close()
        listener.close()


# -- a server of our own that checks when the commands arrive ---------------------------------


class WireServer:
    """A small SMTP server on loopback that checks the order of the conversation.

    Without PIPELINING in its EHLO reply, a command that arrives before the reply to the
    previous one is recorded in ``early`` (a client that waits for each reply cannot have
    sent it yet). With PIPELINING it holds back its replies to MAIL FROM and RCPT TO until
    DATA has arrived too (RFC 2920 allows that): a client that waited for each reply would
    wait until its timeout, and fail.

    ``wire`` keeps each message's data as it came (dot-stuffed, with the final dot line),
    ``messages`` after undoing the stuffing. ``close_after_message`` closes the connection
    after the next message has been answered, as a relay's idle timeout does.
    """

    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.commands: list[str] = []
        self.early: list[str] = []
        self.wire: list[bytes] = []
        self.messages: list[bytes] = []
        self.connections = 0
        self.close_after_message = False
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                self._converse(conn, _Lines(conn))
            except (OSError, EOFError):
                pass

    def _converse(self, conn: socket.socket, lines: _Lines) -> None:
        conn.sendall(b"220 wire.test ESMTP\r\n")
        held: list[bytes] = []
        while True:
            verb = lines.line()[:4].upper().decode()
            if lines.buffered() and not self.pipelining:
                self.early.append(verb)
            self.commands.append(verb)
            if verb == "EHLO":
                offer = b"250-PIPELINING\r\n" if self.pipelining else b""
                conn.sendall(b"250-wire.test\r\n" + offer + b"250 SIZE 1000000\r\n")
            elif verb in ("MAIL", "RCPT"):
                if self.pipelining:
                    held.append(b"250 2.1.0 Ok\r\n")
                else:
                    conn.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == "DATA":
                conn.sendall(b"".join(held) + b"354 End data with <CR><LF>.<CR><LF>\r\n")
                held.clear()
                data = b""
                while not data.endswith(b"\r\n.\r\n") and data != b".\r\n":
                    data += lines.line()
                self.wire.append(data)
                self.messages.append(re.sub(rb"(?m)^\.", b"", data[:-3]))
                conn.sendall(b"250 2.0.0 Ok: queued\r\n")
                if self.close_after_message:
                    self.close_after_message = False
                    return
            elif verb == "QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                conn.sendall(b"250 2.0.0 Ok\r\n")


class _Lines:
    """Reads lines from a socket, and tells whether more bytes have already arrived."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def buffered(self) -> bool:
        return bool(self.buffer)


@pytest.fixture
def wire_server(request: pytest.FixtureRequest) -> Iterator[WireServer]:
    running = WireServer(request.param)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("wire_server", [True], indirect=True)
def test_with_pipelining_mail_rcpt_and_data_go_without_waiting(wire_server: WireServer) -> None:
    url = f"smtp://127.0.0.1:{wire_server.port}?timeout=3"
    with pipelining(url).open() as conn:
        for message in (MESSAGE, DOTTY, MESSAGE):
            # The server answers MAIL FROM only once DATA has come: a client that waited
            # for that answer would time out here.
            conn.send("a@example.org", "b@example.org", message)
    assert wire_server.messages == [MESSAGE, DOTTY, MESSAGE]
    assert wire_server.wire == [_smtplib_data(m) for m in (MESSAGE, DOTTY, MESSAGE)]
    assert wire_server.commands == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 3 + ["QUIT"]
    assert wire_server.connections == 1


@pytest.mark.parametrize("wire_server", [False], indirect=True)
def test_without_pipelining_each_command_waits_for_its_reply(wire_server: WireServer) -> None:
    url = f"smtp://127.0.0.1:{wire_server.port}?timeout=3"
    with pipelining(url).open() as conn:
        for message in (MESSAGE, DOTTY, MESSAGE):
            conn.send("a@example.org", "b@example.org", message)
    assert wire_server.early == []
    assert wire_server.messages == [MESSAGE, DOTTY, MESSAGE]
    assert wire_server.wire == [_smtplib_data(m) for m in (MESSAGE, DOTTY, MESSAGE)]
    assert wire_server.commands == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 3 + ["QUIT"]


@pytest.mark.parametrize("wire_server", [True, False], indirect=True)
def test_a_connection_closed_between_messages_is_reopened_and_sent_once(
    wire_server: WireServer,
) -> None:
    url = f"smtp://127.0.0.1:{wire_server.port}?timeout=3"
    with pipelining(url).open() as conn:
        wire_server.close_after_message = True  # the relay closes the idle connection
        conn.send("a@example.org", "b@example.org", MESSAGE)
        first = conn._client
        conn.send("a@example.org", "c@example.org", DOTTY)  # noticed, re-opened, sent
        assert conn._client is not first
    assert wire_server.messages == [MESSAGE, DOTTY]
    assert wire_server.connections == 2


# -- TLS and AUTH ------------------------------------------------------------------------------

USER, PASSWORD = "user@example.org", "p:ss wörd"
CREDENTIALS = "user%40example.org:p%3Ass%20w%C3%B6rd"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Logins:
    """An aiosmtpd authenticator that accepts USER/PASSWORD and records each attempt."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, bool]] = []  # (mechanism, over TLS)

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        self.attempts.append((mechanism, tls))
        good = data.login == USER.encode() and data.password == PASSWORD.encode()
        return AuthResult(success=good, handled=False, auth_data=data)


@pytest.mark.parametrize("offer", [True, False], ids=["pipelining", "one-by-one"])
@pytest.mark.parametrize("scheme", ["smtp+starttls", "smtps"])
def test_tls_forms_with_auth(
    certificate: tuple[Path, Path], scheme: str, offer: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    logins = Logins()
    if scheme == "smtp+starttls":
        # STARTTLS required, and AUTH offered only once TLS is up: the client must say EHLO
        # again after STARTTLS and log in then.
        tls: dict[str, Any] = {"tls_context": context, "require_starttls": True}
    else:
        tls = {"ssl_context": context, "auth_require_tls": False}
    with serve(offer, authenticator=logins, **tls) as (controller, handler):
        where = f"{scheme}://{CREDENTIALS}@127.0.0.1:{controller.port}"
        with pipelining(f"{where}?verify=false&timeout=5").open() as conn:
            conn.send("a@example.org", "b@example.org", DOTTY)
            client = conn._client
            assert client is not None and client.pipelining is offer
            assert isinstance(client.sock, ssl.SSLSocket)
            conn.send("a@example.org", "c@example.org", MESSAGE)
        assert [m.data for m in handler.messages] == [DOTTY, MESSAGE]
        assert logins.attempts == [("PLAIN", True)]
        # With certificate checks on, a self-signed certificate is refused...
        with pipelining(f"{where}?timeout=5").open() as conn:
            with pytest.raises(TransientError, match="cannot connect.*CERTIFICATE_VERIFY_FAILED"):
                conn.send("a@example.org", "b@example.org", MESSAGE)
        # ...and accepted once trusted: the name checked is the host of the URL.
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        with pipelining(f"{where}?timeout=5").open() as conn:
            conn.send("a@example.org", "d@example.org", MESSAGE)
        assert len(handler.messages) == 3


def test_starttls_is_required_when_the_url_asks_for_it(server: tuple[Controller, Handler]) -> None:
    controller, handler = server  # offers no STARTTLS
    url = f"smtp+starttls://127.0.0.1:{controller.port}?timeout=5"
    with pipelining(url).open() as conn:
        with pytest.raises(TransientError, match="STARTTLS"):
            conn.send("a@example.org", "b@example.org", MESSAGE)
    assert handler.messages == []


class CramHandler(Handler):
    """Also offers CRAM-MD5 (RFC 2195), which aiosmtpd does not have."""

    CHALLENGE = b"<1896.697170952@relay.test>"

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        response = await server.challenge_auth(self.CHALLENGE)
        assert isinstance(response, bytes)
        user, _, digest = response.partition(b" ")
        expected = hmac.new(PASSWORD.encode(), self.CHALLENGE, "md5").hexdigest().encode()
        good = user == USER.encode() and hmac.compare_digest(digest, expected)
        return AuthResult(success=good, handled=False, auth_data=LoginPassword(user, b""))


@pytest.mark.parametrize(
    ("offered", "used"),
    [(["PLAIN", "LOGIN"], "PLAIN"), (["LOGIN"], "LOGIN"), (["CRAM-MD5", "PLAIN"], "CRAM-MD5")],
)
def test_auth_mechanisms_in_smtplibs_order(offered: list[str], used: str) -> None:
    logins = Logins()
    handler = CramHandler(True)
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=logins,
        auth_require_tls=False,
        auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN", "CRAM-MD5") if m not in offered],
    )
    controller.start()
    try:
        url = f"smtp://{CREDENTIALS}@127.0.0.1:{controller.port}?timeout=5"
        with pipelining(url).open() as conn:
            conn.send("a@example.org", "b@example.org", MESSAGE)
        assert len(handler.messages) == 1
        assert [m for m, _ in logins.attempts] == ([] if used == "CRAM-MD5" else [used])
        wrong = f"smtp://{USER}:wrong@127.0.0.1:{controller.port}?timeout=5"
        # The error the smtplib transport gives, and neither leaves its socket open (this
        # suite turns the ResourceWarning of an unclosed socket into an error).
        with pipelining(wrong).open() as conn:
            with pytest.raises(TransientError, match="SMTP login failed: 535") as failed:
                conn.send("a@example.org", "b@example.org", MESSAGE)
            assert not isinstance(failed.value, MaybeDelivered)
            assert conn._client is None
        with SMTPTransport.from_url(wrong).open() as plain:
            with pytest.raises(TransientError, match="SMTP login failed: 535"):
                plain.send("a@example.org", "b@example.org", MESSAGE)
        assert len(handler.messages) == 1
    finally:
        controller.stop()


# -- the engine on the new transport ------------------------------------------------------------


def test_whole_course_and_bounces_through_the_engine(tmp_path: Path, db_url: str) -> None:
    with serve(True) as (controller, handler):
        handler.reject_rcpt["gone@example.com"] = "550 5.1.1 No such user"
        handler.reject_rcpt["busy@example.com"] = "451 4.3.0 Try again later"
        url = url_of(controller)
        settings = engine_settings(tmp_path, db_url, MAIL_URL=url, LESSON_INTERVAL=30)
        clock = FakeClock()
        sender = make_sender(settings, pipelining(url), clock)
        for name in ("ana", "bo", "gone", "busy"):
            enrol(settings, clock, f"{name}@example.com")
        for _ in range(12):
            sender.tick()
            clock.advance(seconds=15)
    by_reader: dict[str, list[str]] = {}
    for received in handler.messages:
        assert received.mail_from == "course@harbor.example.org"
        subject = str(parse(received.data)["Subject"])[:10]
        by_reader.setdefault(received.rcpt_tos[0], []).append(subject)
    lessons = [f"Day {n} of 5" for n in range(1, 6)] + ["You finish"]
    assert by_reader == {"ana@example.com": lessons, "bo@example.com": lessons}
    with sessions_for(settings.database_url)() as s:
        status = {sub.email: sub.status for sub in s.query(Subscriber)}
    assert status == {
        "ana@example.com": SubscriberStatus.COMPLETED,
        "bo@example.com": SubscriberStatus.COMPLETED,
        "gone@example.com": SubscriberStatus.BOUNCED,
        "busy@example.com": SubscriberStatus.ACTIVE,
    }


# -- Postfix's smtp-sink -------------------------------------------------------------------------


def _smtp_sink() -> str | None:
    for candidate in (
        shutil.which("smtp-sink"),
        "/usr/sbin/smtp-sink",
        "/usr/lib/postfix/sbin/smtp-sink",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.skipif(
    _smtp_sink() is None, reason="Postfix's smtp-sink is not installed (apt-get install postfix)"
)
@pytest.mark.parametrize("offer", [True, False], ids=["pipelining", "one-by-one"])
def test_200_messages_to_smtp_sink(offer: bool) -> None:
    sink = _smtp_sink()
    assert sink is not None
    port = free_port()
    # -c: print counters; -n 1: exit when the first session ends; -p: no PIPELINING.
    command = [sink, "-c", "-n", "1", *([] if offer else ["-p"])]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # smtp-sink refuses to keep root's privileges
    process = subprocess.Popen(
        [*command, f"127.0.0.1:{port}", "10"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        with pipelining(f"smtp://127.0.0.1:{port}?timeout=5").open() as conn:
            for _ in range(200):  # until smtp-sink listens (a refused connect is no session)
                try:
                    conn.send("bounce+0@example.org", "r0@example.org", DOTTY)
                    break
                except TransientError:
                    time.sleep(0.05)
            client = conn._client
            assert client is not None and client.pipelining is offer
            for n in range(1, 200):
                conn.send(f"bounce+{n}@example.org", f"r{n}@example.org", DOTTY)
            assert conn._client is client
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    counters = re.findall(rb"sess=(\d+) quit=(\d+) mesg=(\d+)", output)
    assert counters, output
    assert counters[-1] == (b"1", b"1", b"200"), output


# -- the choice in COURSE_MAIL_URL ------------------------------------------------------------


def test_the_mail_url_picks_the_pipelining_client_unless_told_otherwise() -> None:
    from course.mail import transport_from_url
    from course.mail.pipelining import PipeliningTransport
    from course.mail.smtp import SMTPTransport

    assert isinstance(transport_from_url("smtp://relay:25"), PipeliningTransport)
    assert isinstance(transport_from_url("smtps://relay?pipelining=on"), PipeliningTransport)
    plain = transport_from_url("smtp+starttls://u:p@relay?pipelining=off&timeout=5")
    assert isinstance(plain, SMTPTransport) and plain.timeout == 5.0
    with pytest.raises(ValueError, match="pipelining must be on or off"):
        transport_from_url("smtp://relay?pipelining=maybe")
