"""What both SMTP clients share: a connection opened on first use, re-opened once when it
turns out to be gone before a message went out, and closed with QUIT.

The rule for a lost connection lives here once: before DATA nothing of the message has
reached the relay, so a connection that went away between messages (the relay's idle
timeout, a restart) is re-opened and the message sent on the new one. A second failure is
an outage. A 421 reply before DATA on a kept connection is the same idle timeout, said
politely; on a new connection the relay really is unavailable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from course.mail import PermanentError, TransientError

ClientT = TypeVar("ClientT")
ResultT = TypeVar("ResultT")


class Closing(Exception):
    """A 421 reply: the server is closing the connection; ``error`` is the classified reply."""

    def __init__(self, error: TransientError | PermanentError) -> None:
        super().__init__(str(error))
        self.error = error


class LazyConnection(ABC, Generic[ClientT]):
    """One SMTP connection, opened on first use and kept across messages."""

    #: Errors that mean the connection is gone.
    lost: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    def __init__(self) -> None:
        self._client: ClientT | None = None

    @abstractmethod
    def _connect(self) -> ClientT:
        """Open, secure and authenticate a connection (TransientError when that fails)."""

    @abstractmethod
    def _hang_up(self, client: ClientT) -> None:
        """Close the socket, without a word to the server."""

    @abstractmethod
    def _quit(self, client: ClientT) -> None:
        """Say QUIT (may raise one of :attr:`lost`)."""

    def _envelope_on_open_connection(
        self, envelope: Callable[[ClientT], ResultT]
    ) -> tuple[ClientT, ResultT]:
        """Run ``envelope`` (the commands before the message data) on the connection,
        opening it first, and re-opening it once if it turns out to be gone."""
        for attempt in (1, 2):
            reused = self._client is not None
            if self._client is None:
                self._client = self._connect()
            client = self._client
            try:
                return client, envelope(client)
            except self.lost as exc:
                # Nothing of the message went out yet (at most the DATA command, whose
                # reply was not read).
                self._drop()
                if attempt == 2:
                    raise TransientError(f"connection lost: {exc}") from exc
            except Closing as closing:
                if reused and attempt == 1:
                    continue
                raise closing.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._hang_up(self._client)
            finally:
                self._client = None

    def close(self) -> None:
        """Say QUIT if the connection is still up."""
        if self._client is not None:
            try:
                self._quit(self._client)
            except self.lost:
                pass
            finally:
                self._drop()
