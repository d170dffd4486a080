"""A real SMTP relay on loopback that stores a message when its data ends, then answers late.

Some relays store (or queue, or scan) a message at the end of DATA and only then send their
250, sometimes more slowly than the client waits. :class:`SlowHandler` plays that relay on
an aiosmtpd server; :func:`slow_smtp_server` runs one on a free port::

    with slow_smtp_server(delay=1.5) as (controller, handler):
        ...  # send to 127.0.0.1:controller.port; handler.messages holds what was stored

The handler can also answer at once (``delay=0``), close the connection right after storing
a message instead of answering, refuse the next DATA, and answer the next MAIL FROM with a
421 the way a relay does when it closes an idle connection.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import RecordingHandler


class SlowHandler(RecordingHandler):
    """Records each message when its data ends (it is then "stored"), then waits ``delay``
    seconds (``asyncio.sleep``, the server keeps serving other connections) before it
    answers 250. Also refuses recipients listed in ``reject_rcpt``, like its base class.
    """

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        # Close the connection right after storing a message, without any answer.
        self.drop_after_data = False
        # Answer the next DATA with this reply (once), without storing the message.
        self.refuse_data: str | None = None
        # Answer this many next MAIL FROM commands with a 421 (a relay's idle timeout).
        self.mail_421 = 0
        self.mail_commands = 0
        self.mail_options: list[list[str]] = []  # of each accepted MAIL FROM

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.mail_commands += 1
        if self.mail_421 > 0:
            self.mail_421 -= 1
            return "421 4.4.2 Error: timeout exceeded"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.mail_options.append(list(mail_options))
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.refuse_data is not None:
            reply, self.refuse_data = self.refuse_data, None
            return reply
        reply = await super().handle_DATA(server, session, envelope)  # stored from here on
        if self.drop_after_data and server.transport is not None:
            server.transport.close()
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return reply

    def wait_for(self, count: int, timeout: float = 2.0) -> None:
        """Wait until at least ``count`` messages are stored (they arrive on the server's
        thread), or fail."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} messages stored, expected {count}")
            time.sleep(0.01)


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def slow_smtp_server(
    delay: float = 0.0, **smtp_options: Any
) -> Iterator[tuple[Controller, SlowHandler]]:
    """An aiosmtpd server with a :class:`SlowHandler` on a free loopback port.

    ``smtp_options`` go to aiosmtpd's ``SMTP``: ``timeout=0.3`` closes a connection idle
    for 0.3 s, ``enable_SMTPUTF8=False`` turns that extension off (it is on by default).
    """
    handler = SlowHandler(delay)
    smtp_options.setdefault("enable_SMTPUTF8", True)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **smtp_options)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()
