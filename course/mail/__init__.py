"""Mail transports: how a finished message leaves the engine.

A transport is opened once per batch (``with transport.open() as conn``) and sends finished
messages with ``conn.send(envelope_from, to, message_bytes)``. The engine only depends on
this small interface; :func:`transport_from_url` picks the real implementation.

URL forms (``COURSE_MAIL_URL``):

- ``outbox:`` or ``outbox:/path/to/folder``: one ``.eml`` file per message (development).
- ``smtp://user:pass@host:25``: plain SMTP, for a relay on the same machine or network.
- ``smtp+starttls://user:pass@host:587``: SMTP upgraded with STARTTLS (required).
- ``smtps://user:pass@host:465``: SMTP over implicit TLS.

Query options (``smtp://relay:25?timeout=30&data_timeout=600``):

- ``timeout`` (seconds, default 30): how long to wait for the connection, for each
  command's reply and for each network write. A relay that does not answer within it
  is treated as down, and the message is retried later.
- ``data_timeout`` (seconds, default 600): the same limit for the DATA phase only, from
  the DATA command to the relay's reply after the end of the message. Relays often scan
  or store a message before they answer, and RFC 5321 (section 4.5.3.2.6) recommends
  waiting 10 minutes for that reply. A timeout or a drop in this phase means the message
  was *maybe delivered* (:class:`MaybeDelivered`): it is never resent at once.
- ``verify=false`` (TLS forms only): skip certificate checks, only for a test relay with
  a self-signed certificate.

- ``pipelining=off``: send with Python's ``smtplib`` (course.mail.smtp), one command at a
  time, instead of our own client (course.mail.pipelining, the default). Ours sends MAIL,
  RCPT and DATA in one round trip when the relay offers PIPELINING (RFC 2920) and falls
  back to one command at a time when it does not; both classify every reply the same way.
  The switch is there for a relay that misbehaves with pipelined commands.

Both timeouts must be positive numbers; anything else is refused when the URL is read.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol


class DeliveryError(Exception):
    """Sending one message failed."""


class TransientError(DeliveryError):
    """Try again later: a 4xx reply, a refused or dropped connection, a timeout."""


class MaybeDelivered(TransientError):
    """The connection broke or timed out after the message data was sent.

    The relay may have stored the message (it stores it when the data ends, then answers),
    so it must never be resent at once on a new connection: that is how a slow relay gets
    one message several times. The engine retries it later, with backoff, a bounded number
    of times; each of those sends may deliver a copy (with the same Message-ID). Code that
    only knows :class:`TransientError` still retries it later.
    """


class PermanentError(DeliveryError):
    """The server refused this message for good (a 5xx reply): do not try again.

    ``bounce`` says whether the refusal is about the recipient's mailbox (it does not
    exist, is disabled): then nothing more should go to that reader. A refusal of the
    content or of our relay access is not the reader's fault and does not bounce them.
    """

    def __init__(self, message: str, *, bounce: bool = False) -> None:
        super().__init__(message)
        self.bounce = bounce


class Connection(Protocol):
    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        """Hand one finished message to the server, or raise a :class:`DeliveryError`."""


def start_send(conn: Connection, envelope_from: str, to: str, message: bytes) -> Callable[[], None]:
    """Begin sending ``message`` and return the wait for the server's answer, which raises
    what :meth:`Connection.send` raises.

    A connection that can split the two (course.mail.pipelining) returns once the last
    byte is written, so the caller can work while the server reads; for any other, the
    whole send happens in the wait.
    """
    start = getattr(conn, "start", None)
    if start is not None:
        finish: Callable[[], None] = start(envelope_from, to, message)
        return finish
    return lambda: conn.send(envelope_from, to, message)


class Transport(Protocol):
    def open(self) -> AbstractContextManager[Connection]:
        """A connection for one batch; closed when the ``with`` block ends."""


def transport_from_url(url: str, *, ehlo_name: str = "") -> Transport:
    """Build the transport described by ``url`` (see the module docstring); ``ehlo_name``
    is the name given in SMTP's EHLO (empty: this machine's fully qualified name)."""
    from urllib.parse import parse_qs, urlsplit

    from course.mail.outbox import OutboxTransport
    from course.mail.pipelining import PipeliningTransport
    from course.mail.smtp import SMTPTransport

    if url.startswith("outbox:"):
        return OutboxTransport(url.removeprefix("outbox:") or "outbox")
    if url.split("://", 1)[0] in ("smtp", "smtp+starttls", "smtps"):
        choice = parse_qs(urlsplit(url).query).get("pipelining", ["on"])[0].lower()
        if choice in ("off", "false", "0", "no"):
            return SMTPTransport.from_url(url, ehlo_name=ehlo_name)
        if choice not in ("on", "true", "1", "yes"):
            raise ValueError(f"COURSE_MAIL_URL: pipelining must be on or off, got {choice!r}")
        return PipeliningTransport.from_url(url, ehlo_name=ehlo_name)
    raise ValueError(
        f"COURSE_MAIL_URL must start with outbox:, smtp://, smtp+starttls:// or smtps://,"
        f" got {url.split(':', 1)[0]!r}"
    )
