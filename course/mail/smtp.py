"""The SMTP transport: smtplib, one connection reused across a batch."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from course.mail import PermanentError, TransientError


@dataclass(frozen=True)
class SMTPTransport:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    security: str = "none"  # "none", "starttls" or "tls"
    timeout: float = 30.0
    verify: bool = True

    @classmethod
    def from_url(cls, url: str) -> SMTPTransport:
        """Parse ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URLs."""
        parts = urlsplit(url)
        security = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}[parts.scheme]
        query = parse_qs(parts.query)
        default_port = {"none": 25, "starttls": 587, "tls": 465}[security]
        if not parts.hostname:
            raise ValueError("COURSE_MAIL_URL has no host")
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            security=security,
            timeout=float(query.get("timeout", ["30"])[0]),
            verify=query.get("verify", ["true"])[0].lower() not in ("false", "0", "no"),
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
                    self.host, self.port, timeout=self.timeout, context=self._tls_context()
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            client.ehlo()
            if self.security == "starttls":
                client.starttls(context=self._tls_context())
                client.ehlo()
            if self.username:
                client.login(self.username, self.password or "")
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


class SMTPConnection:
    """A lazily opened connection that re-opens itself after a drop."""

    def __init__(self, transport: SMTPTransport) -> None:
        self.transport = transport
        self._client: smtplib.SMTP | None = None

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        """Send one message; classify failures as transient or permanent."""
        for attempt in (1, 2):
            if self._client is None:
                self._client = self.transport.connect()
            try:
                # A non-ASCII local part can only travel with the SMTPUTF8 extension.
                options = [] if to.isascii() else ["SMTPUTF8"]
                refused = self._client.sendmail(envelope_from, [to], message, options)
            except smtplib.SMTPNotSupportedError as exc:
                raise PermanentError(f"the relay does not support SMTPUTF8: {exc}") from exc
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = exc.recipients.get(to, (0, b""))
                raise _classify(code, reply, at_recipient=True) from exc
            except smtplib.SMTPSenderRefused as exc:
                # Our own From address was refused: a configuration problem, not the
                # reader's. Retrying keeps the lesson; bouncing would drop the reader.
                raise TransientError(f"sender refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:  # the server is closing the connection
                    self._drop()
                raise _classify(exc.smtp_code, exc.smtp_error) from exc
            except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                # The connection went away between messages (idle timeout, server restart).
                # Re-open once; a second failure is a real outage. A drop after DATA may
                # mean the server did accept the message: the retry resends it with the
                # same Message-ID, which is the documented at-least-once window.
                self._drop()
                if attempt == 2:
                    raise TransientError(f"connection lost: {exc}") from exc
                continue
            except smtplib.SMTPException as exc:
                self._drop()
                raise TransientError(str(exc)) from exc
            if refused:
                code, reply = refused[to]
                raise _classify(code, reply, at_recipient=True)
            return

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def close(self) -> None:
        """Say QUIT if the connection is still up."""
        if self._client is not None:
            try:
                self._client.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._drop()


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
