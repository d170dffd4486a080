"""The SMTP transport: smtplib, one connection reused across a batch.

A message is sent in explicit steps (MAIL FROM, RCPT TO, DATA), because a failure means
something different before and after the message data went out:

- Before DATA nothing of the message has reached the relay. A connection that turns out
  to be gone (the relay closed it while idle between messages, it restarted) is re-opened
  once and the message is sent on the new connection.
- From the DATA command on, a timeout or a broken connection leaves the message *maybe
  delivered*: a relay stores a message when its data ends and only then answers, perhaps
  slowly. The connection is dropped and :class:`~course.mail.MaybeDelivered` raised; the
  message is never resent at once (the engine retries it later, with backoff).

Two timeouts (URL options ``timeout`` and ``data_timeout``, see :mod:`course.mail`): the
short one for connecting and for every other reply, and a long one for the DATA phase,
since RFC 5321 (section 4.5.3.2.6) recommends waiting 10 minutes for the reply to the end
of the data.
"""

from __future__ import annotations

import math
import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

from course.mail import MaybeDelivered, PermanentError, TransientError
from course.mail.connection import Closing, LazyConnection


@dataclass(frozen=True)
class SMTPTransport:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    security: str = "none"  # "none", "starttls" or "tls"
    timeout: float = 30.0  # seconds: connecting, each reply and write outside DATA
    verify: bool = True
    data_timeout: float = 600.0  # seconds: the DATA phase, up to the end-of-data reply
    ehlo_name: str = ""  # the name in EHLO; empty: this machine's fully qualified name

    def __post_init__(self) -> None:
        for name in ("timeout", "data_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SMTP {name} must be a positive number of seconds, got {value!r}")

    @classmethod
    def from_url(cls, url: str, *, ehlo_name: str = "") -> SMTPTransport:
        """Parse ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URLs."""
        parts = urlsplit(url)
        security = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}[parts.scheme]
        query = parse_qs(parts.query, keep_blank_values=True)
        default_port = {"none": 25, "starttls": 587, "tls": 465}[security]
        if not parts.hostname:
            raise ValueError("COURSE_MAIL_URL has no host")
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            security=security,
            timeout=_seconds(query, "timeout", 30.0),
            data_timeout=_seconds(query, "data_timeout", 600.0),
            verify=query.get("verify", ["true"])[0].lower() not in ("false", "0", "no"),
            ehlo_name=ehlo_name,
        )

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def connect(self) -> smtplib.SMTP:
        """Open, secure and authenticate one SMTP connection."""
        try:
            client: smtplib.SMTP
            if self.security == "tls":
                client = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.ehlo_name or None,
                    timeout=self.timeout,
                    context=self._tls_context(),
                )
            else:
                client = smtplib.SMTP(
                    self.host,
                    self.port,
                    local_hostname=self.ehlo_name or None,
                    timeout=self.timeout,
                )
            try:
                client.ehlo()
                if self.security == "starttls":
                    client.starttls(context=self._tls_context())
                    client.ehlo()
                if self.username:
                    client.login(self.username, self.password or "")
            except BaseException:
                client.close()  # a refused login or STARTTLS must not leave the socket open
                raise
            return client
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientError(f"SMTP login failed: {exc.smtp_code}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    @contextmanager
    def open(self) -> Iterator[SMTPConnection]:
        conn = SMTPConnection(self)
        try:
            yield conn
        finally:
            conn.close()


class SMTPConnection(LazyConnection[smtplib.SMTP]):
    """A lazily opened connection that re-opens itself after a drop."""

    lost = (OSError, smtplib.SMTPServerDisconnected)

    def __init__(self, transport: SMTPTransport) -> None:
        super().__init__()
        self.transport = transport

    def _connect(self) -> smtplib.SMTP:
        return self.transport.connect()

    def _hang_up(self, client: smtplib.SMTP) -> None:
        client.close()

    def _quit(self, client: smtplib.SMTP) -> None:
        try:
            client.quit()
        except smtplib.SMTPException:
            pass

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        """Send one message; classify failures as transient, permanent or maybe delivered."""
        client, _ = self._envelope_on_open_connection(
            lambda client: self._checked_envelope(client, envelope_from, to, len(message))
        )
        self._data(client, message)

    def _checked_envelope(
        self, client: smtplib.SMTP, envelope_from: str, to: str, size: int
    ) -> None:
        """:meth:`_envelope`, with smtplib's own errors classified (a lost connection
        passes through, to be re-opened)."""
        try:
            self._envelope(client, envelope_from, to, size)
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(f"the relay does not support SMTPUTF8: {exc}") from exc
        except smtplib.SMTPResponseException as exc:  # a malformed reply (smtplib closed)
            if exc.smtp_code == 421 or client.sock is None:
                self._drop()
            raise _classify(exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPException as exc:
            self._drop()
            raise TransientError(str(exc)) from exc

    def _envelope(self, client: smtplib.SMTP, envelope_from: str, to: str, size: int) -> None:
        """MAIL FROM and RCPT TO, as :meth:`smtplib.SMTP.sendmail` does them.

        A refusal raises its classified error after RSET, so the connection stays usable for
        the next message (421 raises :class:`Closing`). Connection errors pass through.
        """
        client.ehlo_or_helo_if_needed()
        options: list[str] = []
        if client.does_esmtp and client.has_extn("size"):
            options.append(f"size={size}")
        if not to.isascii():
            # A non-ASCII local part can only travel with the SMTPUTF8 extension.
            if not client.has_extn("smtputf8"):
                raise PermanentError("the relay does not support SMTPUTF8")
            options.append("SMTPUTF8")
        code, reply = client.mail(envelope_from, options)
        if code != 250:
            # Our own From address was refused: a configuration problem, not the reader's.
            # Retrying keeps the lesson; bouncing would drop the reader.
            self._refused(client, code, TransientError(f"sender refused: {code} {reply!r}"))
        code, reply = client.rcpt(to)
        if code not in (250, 251):
            self._refused(client, code, _classify(code, reply, at_recipient=True))

    def _data(self, client: smtplib.SMTP, message: bytes) -> None:
        """The DATA phase, under ``data_timeout``: a timeout or a drop is MaybeDelivered."""
        sock = client.sock
        if sock is not None:
            sock.settimeout(self.transport.data_timeout)
        reply: bytes | str
        try:
            code, reply = client.data(message)
        except smtplib.SMTPDataError as exc:  # DATA itself refused: no data was sent
            code, reply = exc.smtp_code, exc.smtp_error
        except (OSError, smtplib.SMTPException) as exc:
            # A timeout or a drop during DATA: the relay may have stored the message and
            # not answered (yet). Sending it again now could deliver it twice.
            self._drop()
            raise MaybeDelivered(
                f"maybe delivered: the connection broke or timed out during DATA"
                f" ({type(exc).__name__}: {exc}); not resent at once"
            ) from exc
        finally:
            if self._client is client and client.sock is not None:
                client.sock.settimeout(self.transport.timeout)
        if code != 250:
            try:
                self._refused(client, code, _classify(code, reply))
            except Closing as closing:
                raise closing.error from None

    def _refused(
        self, client: smtplib.SMTP, code: int, error: TransientError | PermanentError
    ) -> NoReturn:
        """After a refused command: RSET so the connection can carry the next message, or,
        for 421 (the server is closing the connection), drop it and raise :class:`Closing`.
        Then raise ``error``."""
        if code == 421:
            self._drop()
            raise Closing(error)
        try:
            code, _reply = client.rset()
        except (OSError, smtplib.SMTPException):
            code = 0
        if code != 250:
            self._drop()
        raise error


def _seconds(query: dict[str, list[str]], name: str, default: float) -> float:
    """A positive number of seconds from the URL query, or a ValueError naming the option."""
    if name not in query:
        return default
    text = query[name][0]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"COURSE_MAIL_URL option {name} must be a positive number of seconds, got {text!r}"
        )
    return value


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})")


def _classify(
    code: int, reply: bytes | str, *, at_recipient: bool = False
) -> TransientError | PermanentError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    message = f"{code} {text}".strip()
    if not 500 <= code < 600:
        return TransientError(message)
    return PermanentError(message, bounce=at_recipient and _mailbox_problem(code, text))


def _mailbox_problem(code: int, text: str) -> bool:
    """Is a 5xx reply to RCPT about the mailbox itself (RFC 3463 class 5.1.x / 5.2.1)?

    "550 5.7.1 relaying denied" at RCPT is our relay's configuration, not the reader.
    Without an enhanced status code, 550/551/553 mean a bad mailbox unless they say relay.
    """
    enhanced = _ENHANCED.match(text)
    if enhanced:
        subject, detail = enhanced.group(2), enhanced.group(3)
        return subject == "1" or (subject == "2" and detail == "1")
    return code in (550, 551, 553) and "relay" not in text.lower()
