"""Our own SMTP client: today's transport (:mod:`course.mail.smtp`) with PIPELINING.

The same transport as :class:`~course.mail.smtp.SMTPTransport`, built on plain sockets and
:mod:`ssl` instead of :mod:`smtplib`, so that it can use SMTP PIPELINING (RFC 2920) and
prepare the message data without smtplib's per-line regex:

- When the relay offers PIPELINING, MAIL FROM, RCPT TO and DATA leave in one write and the
  three replies are read afterwards; the message data follows the 354 reply in a second
  write. Without PIPELINING each command waits for its reply, as smtplib does.
- The message data is dot-stuffed with one :meth:`bytes.replace` (only lines that start
  with "." change) and has CRLF line ends: a message that already has them, as the engine's
  messages do, is only counted, never rewritten.

Everything else is today's behaviour, and mostly today's code: the settings are an
:class:`~course.mail.smtp.SMTPTransport` (the same URL forms, options, defaults and checks),
and replies are classified by the same helpers (:func:`course.mail.smtp._classify`, with
its bounce rule). In particular:

- Before the DATA reply nothing of the message has reached the relay: a connection that
  turns out to be gone is re-opened once and the message sent on the new one; a 421 (the
  relay is closing) on a kept connection is re-opened once too, on a new one it is final.
- From the DATA reply on, a timeout or a broken connection is :class:`MaybeDelivered`, and
  the phase is timed by ``data_timeout``; everything else by ``timeout``.
- A refused command is followed by RSET, so the connection carries the next message; with
  PIPELINING the replies to the commands sent after the refused one are read first.
- STARTTLS, implicit TLS (``smtps://``), AUTH (CRAM-MD5, PLAIN, LOGIN, tried in smtplib's
  order), SIZE and SMTPUTF8 as smtplib does them.

Deliberate differences from smtplib, none of which changes how a reply is classified: an
EHLO refused falls back to HELO (RFC 5321, 4.1.4); a reply line longer than 8192 bytes is
a broken connection (smtplib turns it into a 500 reply); credentials are sent as UTF-8;
a non-ASCII envelope sender uses SMTPUTF8 (and, when the relay lacks it, fails as a
transient configuration problem, where smtplib raises UnicodeEncodeError); the data of a
message with bare CR or LF line ends gets CRLF; bytes the relay sends after its reply to
STARTTLS (before TLS is up) break the connection instead of being read as replies; and
TCP_NODELAY is set, since every write is a whole group of commands or a whole message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import smtplib
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from course.mail import MaybeDelivered, PermanentError, TransientError
from course.mail.connection import Closing, LazyConnection
from course.mail.smtp import SMTPTransport, _classify

_MAXLINE = 8192  # the longest reply line accepted (smtplib's limit)
_MAX_CHALLENGES = 5  # AUTH challenges answered before giving up (smtplib's limit)
_AUTH_ORDER = ("CRAM-MD5", "PLAIN", "LOGIN")  # smtplib's preference


class _Broken(Exception):
    """The connection is unusable: closed by the server, or it answered something else than
    SMTP. Handled like :class:`OSError`."""


@dataclass(frozen=True)
class PipeliningTransport:
    """The SMTP transport, speaking SMTP itself (with PIPELINING when the relay offers it).

    ``settings`` holds host, port, credentials, security, timeouts, verify and ehlo_name,
    exactly as :class:`~course.mail.smtp.SMTPTransport` reads them from a URL.
    """

    settings: SMTPTransport

    @classmethod
    def from_url(cls, url: str, *, ehlo_name: str = "") -> PipeliningTransport:
        """Parse ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URLs, as today."""
        return cls(SMTPTransport.from_url(url, ehlo_name=ehlo_name))

    def connect(self) -> _Client:
        """Open, secure and authenticate one SMTP connection."""
        settings = self.settings
        try:
            return _Client.open(settings)
        except _LoginFailed as exc:
            raise TransientError(f"SMTP login failed: {exc.code}") from exc
        except (OSError, _Broken) as exc:
            raise TransientError(
                f"cannot connect to {settings.host}:{settings.port}: {exc}"
            ) from exc

    @contextmanager
    def open(self) -> Iterator[PipeliningConnection]:
        conn = PipeliningConnection(self)
        try:
            yield conn
        finally:
            conn.close()


class PipeliningConnection(LazyConnection["_Client"]):
    """A lazily opened connection that re-opens itself after a drop."""

    lost = (OSError, _Broken)

    def __init__(self, transport: PipeliningTransport) -> None:
        super().__init__()
        self.transport = transport

    def _connect(self) -> _Client:
        return self.transport.connect()

    def _hang_up(self, client: _Client) -> None:
        client.sock.close()

    def _quit(self, client: _Client) -> None:
        client.command(b"QUIT\r\n")

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        """Send one message; classify failures as transient, permanent or maybe delivered."""
        self.start(envelope_from, to, message)()

    def start(self, envelope_from: str, to: str, message: bytes) -> Callable[[], None]:
        """Send one message up to its last byte and return what waits for the relay's
        answer (and raises as :meth:`send` does).

        The sender builds its next message between the two: the relay reads and stores
        this one meanwhile (course.sending overlaps the two that way).
        """
        data = _data_block(message)
        client, pipelined = self._envelope_on_open_connection(
            lambda client: self._envelope(client, envelope_from, to, len(message))
        )
        return self._data(client, data, pipelined)

    def _envelope(self, client: _Client, envelope_from: str, to: str, size: int) -> bool:
        """MAIL FROM and RCPT TO; with PIPELINING, DATA goes in the same write. Returns
        whether it did (then the DATA reply is still to be read).

        A refusal raises its classified error after RSET, so the connection stays usable for
        the next message (421 raises :class:`Closing`). Connection errors pass through.
        """
        options = ""
        if client.esmtp and "size" in client.features:
            options = f" SIZE={size}"
        encoding = "ascii"
        if not to.isascii():
            # A non-ASCII local part can only travel with the SMTPUTF8 extension.
            if "smtputf8" not in client.features:
                raise PermanentError("the relay does not support SMTPUTF8")
            options += " SMTPUTF8"
            encoding = "utf-8"
        elif not envelope_from.isascii():
            if "smtputf8" not in client.features:
                # Our own address: a configuration problem, not the reader's (see below).
                raise TransientError("the envelope sender needs SMTPUTF8, the relay lacks it")
            options += " SMTPUTF8"
            encoding = "utf-8"
        mail = _command(f"MAIL FROM:{_path(envelope_from)}{options}", encoding)
        rcpt = _command(f"RCPT TO:{_path(to)}", encoding)
        pipelined = client.pipelining
        client.write(mail + rcpt + b"DATA\r\n" if pipelined else mail)
        code, reply = client.reply()
        if code != 250:
            # Our own From address was refused: a configuration problem, not the reader's.
            # Retrying keeps the lesson; bouncing would drop the reader.
            refused = TransientError(f"sender refused: {code} {reply!r}")
            self._refused(client, code, refused, pending=2 if pipelined else 0)
        if not pipelined:
            client.write(rcpt)
        code, reply = client.reply()
        if code not in (250, 251):
            classified = _classify(code, reply, at_recipient=True)
            self._refused(client, code, classified, pending=1 if pipelined else 0)
        return pipelined

    def _data(self, client: _Client, data: bytes, pipelined: bool) -> Callable[[], None]:
        """The DATA phase, under ``data_timeout``: a timeout or a drop is MaybeDelivered.

        Sends the data and returns the wait for the final reply (or, when DATA itself was
        refused, a wait that raises the refusal)."""
        settings = self.transport.settings
        client.sock.settimeout(settings.data_timeout)
        try:
            if not pipelined:
                client.write(b"DATA\r\n")
            code, reply = client.reply()
            if code == 354:  # otherwise DATA itself was refused: no data was sent
                client.write(data)
        except (OSError, _Broken) as exc:
            self._maybe_delivered(client, exc)
        if code != 354:
            self._restore_timeout(client)
            self._answered(client, code, reply)

        def finish() -> None:
            try:
                code, reply = client.reply()
            except (OSError, _Broken) as exc:
                self._maybe_delivered(client, exc)
            self._restore_timeout(client)
            if code != 250:
                self._answered(client, code, reply)

        return finish

    def _maybe_delivered(self, client: _Client, exc: Exception) -> NoReturn:
        # A timeout or a drop during DATA: the relay may have stored the message and not
        # answered (yet). Sending it again now could deliver it twice.
        self._drop()
        raise MaybeDelivered(
            f"maybe delivered: the connection broke or timed out during DATA"
            f" ({type(exc).__name__}: {exc}); not resent at once"
        ) from exc

    def _restore_timeout(self, client: _Client) -> None:
        if self._client is client:
            client.sock.settimeout(self.transport.settings.timeout)

    def _answered(self, client: _Client, code: int, reply: bytes) -> NoReturn:
        """A refusal at DATA or after the data, classified; RSET keeps the connection."""
        try:
            self._refused(client, code, _classify(code, reply))
        except Closing as closing:
            raise closing.error from None

    def _refused(
        self,
        client: _Client,
        code: int,
        error: TransientError | PermanentError,
        *,
        pending: int = 0,
    ) -> NoReturn:
        """After a refused command: RSET so the connection can carry the next message, or,
        for 421 (the server is closing the connection), drop it and raise :class:`Closing`.
        Then raise ``error``.

        ``pending`` replies (to commands pipelined after the refused one) are read first.
        Should the server have accepted the pipelined DATA all the same, it gets an empty
        message (the final dot alone), which it must refuse: it has no valid recipient.
        """
        if code == 421:
            self._drop()
            raise Closing(error)
        try:
            for _ in range(pending):
                code, _reply = client.reply()
                if code == 354:
                    client.write(b".\r\n")
                    code, _reply = client.reply()
                if code == 421:
                    raise _Broken("the server is closing the connection")
            code, _reply = client.command(b"RSET\r\n")
        except (OSError, _Broken):
            code = 0
        if code != 250:
            self._drop()
        raise error


class _LoginFailed(Exception):
    """Every AUTH mechanism tried was refused; ``code`` is the last reply's."""

    def __init__(self, code: int, reply: bytes) -> None:
        super().__init__(f"{code} {reply!r}")
        self.code = code


class _Client:
    """One SMTP session: the socket, the bytes read but not used yet, the extensions."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self.esmtp = False
        self.features: dict[str, str] = {}  # lower-case keyword -> parameters, as smtplib

    @property
    def pipelining(self) -> bool:
        return "pipelining" in self.features

    @classmethod
    def open(cls, settings: SMTPTransport) -> _Client:
        """Connect, read the greeting, say EHLO, secure and log in, as smtplib does."""
        sock = socket.create_connection((settings.host, settings.port), settings.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if settings.security == "tls":
                sock = settings._tls_context().wrap_socket(sock, server_hostname=settings.host)
            client = cls(sock)
            code, reply = client.reply()
            if code != 220:
                raise _Broken(f"the server greeted with {code} {reply!r}")
            name = settings.ehlo_name or _local_hostname()
            client.hello(name)
            if settings.security == "starttls":
                if "starttls" not in client.features:
                    raise _Broken("the server does not offer STARTTLS")
                code, reply = client.command(b"STARTTLS\r\n")
                if code != 220:
                    raise _Broken(f"STARTTLS refused: {code} {reply!r}")
                if client._buffer:
                    # Bytes sent before TLS is up must not pass for replies after it.
                    raise _Broken("the server sent more than its reply to STARTTLS")
                client.sock = sock = settings._tls_context().wrap_socket(
                    sock, server_hostname=settings.host
                )
                client.hello(name)
            if settings.username:
                client.login(settings.username, settings.password or "")
            return client
        except BaseException:
            sock.close()
            raise

    def hello(self, name: str) -> None:
        """EHLO, and HELO if the server refuses it; records the extensions offered."""
        self.esmtp, self.features = False, {}
        code, reply = self.command(_command(f"EHLO {name}", "ascii"))
        if code == 250:
            self.esmtp, self.features = True, _features(reply)
            return
        code, reply = self.command(_command(f"HELO {name}", "ascii"))
        if code != 250:
            raise _Broken(f"EHLO and HELO refused: {code} {reply!r}")

    def login(self, user: str, password: str) -> None:
        """AUTH with the first of smtplib's mechanisms the server offers that works."""
        if "auth" not in self.features:
            raise _Broken("the server does not offer AUTH")
        offered = self.features["auth"].upper().split()
        mechanisms = [m for m in _AUTH_ORDER if m in offered]
        if not mechanisms:
            raise _Broken(f"no suitable AUTH mechanism among {' '.join(offered)}")
        code, reply = 0, b""
        for mechanism in mechanisms:
            code, reply = self._auth(mechanism, user, password)
            if code in (235, 503):  # 503: already authenticated
                return
        raise _LoginFailed(code, reply)

    def _auth(self, mechanism: str, user: str, password: str) -> tuple[int, bytes]:
        plain = f"\0{user}\0{password}"
        if mechanism == "CRAM-MD5":  # no initial response
            code, reply = self.command(b"AUTH CRAM-MD5\r\n")
        else:
            first = plain if mechanism == "PLAIN" else user
            code, reply = self.command(b"AUTH %s %s\r\n" % (mechanism.encode(), _b64(first)))
        for _ in range(_MAX_CHALLENGES):
            if code != 334:
                return code, reply
            if mechanism == "CRAM-MD5":
                try:
                    challenge = base64.b64decode(reply)
                except binascii.Error as exc:
                    raise _Broken(f"bad CRAM-MD5 challenge: {reply!r}") from exc
                digest = hmac.new(password.encode(), challenge, "md5").hexdigest()
                answer = f"{user} {digest}"
            else:
                answer = plain if mechanism == "PLAIN" else password
            code, reply = self.command(_b64(answer) + b"\r\n")
        raise _Broken(f"the server keeps asking for AUTH {mechanism}: {code} {reply!r}")

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: bytes) -> tuple[int, bytes]:
        self.sock.sendall(line)
        return self.reply()

    def reply(self) -> tuple[int, bytes]:
        """Read one reply, as :meth:`smtplib.SMTP.getreply`: its code (-1 when it has none)
        and its text, the lines of a multi-line reply joined with ``\\n``."""
        lines: list[bytes] = []
        while True:
            line = self._line()
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                return -1, b"\n".join(lines)
            if line[3:4] != b"-":
                return code, b"\n".join(lines)

    def _line(self) -> bytes:
        buffer = self._buffer
        searched = 0
        while True:
            end = buffer.find(b"\n", searched) + 1
            if end:
                if end > _MAXLINE:
                    raise _Broken("reply line too long")
                line = bytes(buffer[:end])
                del buffer[:end]
                return line
            if len(buffer) > _MAXLINE:
                raise _Broken("reply line too long")
            searched = len(buffer)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Broken("connection closed by the server")
            buffer += chunk


def _data_block(message: bytes) -> bytes:
    """The bytes that follow a 354 reply: the message with CRLF line ends, lines starting
    with "." doubled (RFC 5321, 4.5.2), and the final "." line.

    For a message that already has CRLF line ends the result is byte for byte what smtplib
    sends for it; otherwise bare CR and LF become CRLF first, as smtplib does for text.
    """
    newlines = message.count(b"\n")
    if newlines != message.count(b"\r") or newlines != message.count(b"\r\n"):
        message = _LINE_END.sub(b"\r\n", message)
    message = message.replace(b"\r\n.", b"\r\n..")
    if message.startswith(b"."):
        message = b"." + message
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


_LINE_END = re.compile(rb"\r\n|\r|\n")
# Addresses smtplib.quoteaddr would only wrap in <>: nothing parseaddr would read as a
# display name, comment, route or list.
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"]+")
_OLDSTYLE_AUTH = re.compile(r"auth=(.*)", re.I)
_FEATURE = re.compile(r"([A-Za-z0-9][A-Za-z0-9\-]*) ?")


def _path(address: str) -> str:
    """The address as it goes in MAIL FROM or RCPT TO, as :func:`smtplib.quoteaddr` writes
    it (and without its parsing for a plain address)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _command(text: str, encoding: str) -> bytes:
    """One command line; a CR or LF inside it is refused, as smtplib refuses it."""
    if "\r" in text or "\n" in text:
        shown = text.replace("\n", "\\n").replace("\r", "\\r")
        raise ValueError(f"command and arguments contain prohibited newline characters: {shown}")
    return f"{text}\r\n".encode(encoding)


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8"))


def _features(reply: bytes) -> dict[str, str]:
    """The extensions in an EHLO reply, parsed as :meth:`smtplib.SMTP.ehlo` parses them."""
    features: dict[str, str] = {}
    for line in reply.decode("latin-1").split("\n")[1:]:
        old_auth = _OLDSTYLE_AUTH.match(line)
        if old_auth:
            features["auth"] = features.get("auth", "") + " " + old_auth.group(1)
            continue
        found = _FEATURE.match(line)
        if found:
            keyword = found.group(1).lower()
            params = line[found.end(1) :].strip()
            if keyword == "auth":
                features["auth"] = features.get("auth", "") + " " + params
            else:
                features[keyword] = params
    return features


def _local_hostname() -> str:
    """The name for EHLO when none is configured, chosen as smtplib chooses it."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        address = socket.gethostbyname(socket.gethostname())
    except socket.gaierror:
        address = "127.0.0.1"
    return f"[{address}]"
