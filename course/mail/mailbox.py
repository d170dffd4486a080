"""Reading a bounce/reply mailbox over IMAP or POP3 (the standard library's ``imaplib`` and
``poplib``).

The caller lists messages with :meth:`Mailbox.messages`, and for each one says what became
of it: :meth:`Mailbox.processed` (it was handled: a bounce recorded, a reply stored) or
:meth:`Mailbox.kept` (it could not be used: not a bounce, unparseable, for someone else).

**A message must never be handled twice.** Handling a bounce twice counts it twice (and may
stop a reader's lessons too early); handling a reply twice stores it twice. Flags such as
``\\Seen`` are not enough to remember what was handled: a person reading the same mailbox in
a mail program sets and clears them. So a handled message leaves the folder that is read:

- IMAP: :meth:`~Mailbox.processed` moves it to the ``processed`` folder, or deletes and
  expunges it when no such folder is set; :meth:`~Mailbox.kept` moves it to the ``kept``
  folder, where a person can look at it. Either way it is gone from the folder that is
  read, so no later run sees it again. MOVE (RFC 6851) is used when the server offers it,
  as it is one atomic step; otherwise COPY, then ``\\Deleted``, then EXPUNGE (only this
  message's UID with UID EXPUNGE where the server has UIDPLUS; a plain EXPUNGE also removes
  other messages someone else marked ``\\Deleted``). Messages marked ``\\Deleted`` are never
  listed, so one left half-moved by a dropped connection (copied and marked, not yet
  expunged) is not handled again either. A message id is ``"<UIDVALIDITY>:<UID>"``: UIDs
  are only stable while the folder's UIDVALIDITY stays the same, so an id from before a
  change of UIDVALIDITY is refused instead of acting on whichever message now has its UID.
- POP3 has no folders. :meth:`~Mailbox.processed` deletes the message (DELE), and the
  server carries the deletions out only when the session ends normally (QUIT, sent when the
  ``with`` block is left, even after an error in it, since the messages marked until then
  were handled). If that QUIT fails, the deletions are undone by the server: leaving the
  block then raises :class:`MailboxError`, so the caller knows those messages will be
  listed again. :meth:`~Mailbox.kept` leaves the message on the server: deleting a message
  the engine could not use would destroy what may be a person's real reply, and there is no
  other folder to put it in. The caller therefore remembers the ids (UIDL, stable across
  sessions) of kept messages and passes them as ``skip``, so they are neither downloaded nor
  handled again.

URL forms (``imaps://user:password@host:993/Folder?processed=Done``):

- ``imaps://`` IMAP over implicit TLS (port 993); ``imap://`` IMAP with STARTTLS, required
  (port 143); ``pop3s://`` POP3 over implicit TLS (995); ``pop3://`` POP3 with STLS,
  required (110). User name and password are percent-decoded (``%40`` for ``@``).
- The path is the IMAP folder to read (default ``INBOX``); POP3 URLs have none.
- Query options: ``processed=<folder>`` (IMAP: where handled messages go; default: they
  are deleted), ``kept=<folder>`` (IMAP: where unusable messages go, default
  ``course-kept``), ``timeout=<seconds>`` (default 30, for connecting and each reply),
  ``verify=false`` (skip certificate checks: only for a test server with a self-signed
  certificate), ``plain=true`` (``imap://`` and ``pop3://`` without any TLS: only for a
  test server on loopback, refused for any other host). Folders are created when missing.

Errors: a URL that cannot be used raises :class:`ValueError` when it is read; a server that
cannot be reached, refuses the login or the folder raises :class:`MailboxError`. Neither
message ever contains the password, and nothing here logs passwords or message contents.
"""

from __future__ import annotations

import base64
import imaplib
import ipaddress
import logging
import math
import poplib
import re
import ssl
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

__all__ = ["Mailbox", "MailboxError", "MailboxSettings", "open_mailbox"]

#: scheme -> (protocol, implicit TLS, default port)
_SCHEMES = {
    "imaps": ("imap", True, 993),
    "imap": ("imap", False, 143),
    "pop3s": ("pop3", True, 995),
    "pop3": ("pop3", False, 110),
}
_OPTIONS = ("processed", "kept", "verify", "timeout", "plain")
_LOOPBACK_NAMES = ("localhost",)
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: UIDs fetched per IMAP FETCH command.
_FETCH_BATCH = 25
#: The longest line accepted from a POP3 server (poplib's own limit is 2048 bytes, which
#: real messages, e.g. single-line HTML bodies, exceed).
_POP3_MAX_LINE = 1_000_000


class MailboxError(Exception):
    """The mailbox cannot be used now: the server cannot be reached, refuses the login, the
    folder, or a command. The message never contains the password."""


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    if name not in query:
        return default
    value = query[name][0].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"mailbox URL option {name}= must be true or false, got {value!r}")


def _check_folder(what: str, name: str) -> None:
    if not name:
        raise ValueError(f"mailbox URL: the {what} folder name is empty")
    if _CONTROL.search(name):
        raise ValueError(f"mailbox URL: the {what} folder name contains control characters")


@dataclass(frozen=True)
class MailboxSettings:
    """Where the mailbox is and what to do with its messages (see the module docstring)."""

    scheme: str  # "imaps", "imap", "pop3s" or "pop3"
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"  # IMAP: the folder that is read
    processed: str | None = None  # IMAP: where handled messages go; None: delete them
    kept: str = "course-kept"  # IMAP: where messages that could not be used go
    verify: bool = True  # check the server's certificate
    timeout: float = 30.0  # seconds, for connecting and for each reply
    plain: bool = False  # no TLS at all (loopback test servers only)

    def __post_init__(self) -> None:
        if self.scheme not in _SCHEMES:
            raise ValueError(
                f"mailbox URL scheme must be one of {', '.join(_SCHEMES)}, got {self.scheme!r}"
            )
        if not self.host:
            raise ValueError("mailbox URL has no host")
        if not 0 < self.port < 65536:
            raise ValueError(f"mailbox URL port must be 1 to 65535, got {self.port}")
        if not self.username:
            raise ValueError("mailbox URL has no user name (imaps://user:password@host)")
        if _CONTROL.search(self.username) or _CONTROL.search(self.password):
            raise ValueError("mailbox URL: the user name or password contains control characters")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(
                f"mailbox URL timeout must be a positive number of seconds, got {self.timeout!r}"
            )
        if self.plain:
            if self.implicit_tls:
                raise ValueError(
                    f"mailbox URL option plain=true is for imap:// and pop3:// only, "
                    f"not {self.scheme}://"
                )
            if not _is_loopback(self.host):
                raise ValueError(
                    "mailbox URL option plain=true (no TLS, the password in clear text) is only "
                    f"allowed for a test server on loopback (127.0.0.1, ::1, localhost), "
                    f"not {self.host!r}"
                )
        if self.protocol == "pop3":
            if self.folder != "INBOX" or self.processed is not None:
                raise ValueError(
                    "POP3 has no folders: a pop3 URL takes no folder path and no processed= option"
                )
            return
        _check_folder("source", self.folder)
        _check_folder("kept", self.kept)
        if self.processed is not None:
            _check_folder("processed", self.processed)
        for what, target in (("processed", self.processed), ("kept", self.kept)):
            if target is not None and _same_folder(target, self.folder):
                raise ValueError(
                    f"mailbox URL: the {what} folder must differ from the folder that is read "
                    f"({self.folder!r}), or its messages would be read again"
                )

    @property
    def protocol(self) -> str:
        """``"imap"`` or ``"pop3"``."""
        return _SCHEMES[self.scheme][0]

    @property
    def implicit_tls(self) -> bool:
        return _SCHEMES[self.scheme][1]

    @classmethod
    def from_url(cls, url: str) -> MailboxSettings:
        """Read an ``imaps://``, ``imap://``, ``pop3s://`` or ``pop3://`` URL.

        Raises :class:`ValueError` with a message that names the problem, never the
        password."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ValueError(
                "mailbox URL cannot be parsed (is the port a number? percent-encode special "
                "characters of the user name and password, e.g. %40 for @)"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            shown = f"{scheme}://" if scheme else "no scheme"
            raise ValueError(f"mailbox URL must start with {', '.join(_SCHEMES)}, got {shown}")
        if not parts.hostname:
            raise ValueError(
                "mailbox URL has no host (percent-encode special characters of the user name "
                "and password, e.g. %23 for #, %2F for /, %40 for @)"
            )
        if parts.username is None or parts.password is None:
            raise ValueError(
                "mailbox URL needs a user name and a password: scheme://user:pass@host"
            )
        if parts.fragment:
            raise ValueError("mailbox URL has a #fragment (percent-encode # as %23)")
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise ValueError("mailbox URL query cannot be parsed (use name=value&...)") from None
        unknown = sorted(set(query) - set(_OPTIONS))
        if unknown:
            raise ValueError(
                f"mailbox URL has unknown options {', '.join(unknown)} "
                f"(known: {', '.join(_OPTIONS)})"
            )
        repeated = sorted(name for name, values in query.items() if len(values) > 1)
        if repeated:
            raise ValueError(f"mailbox URL repeats options {', '.join(repeated)}")
        protocol = _SCHEMES[scheme][0]
        path = unquote(parts.path)
        if protocol == "pop3":
            if path not in ("", "/"):
                raise ValueError("POP3 has no folders: a pop3 URL takes no folder path")
            for name in ("processed", "kept"):
                if name in query:
                    raise ValueError(f"POP3 has no folders: a pop3 URL takes no {name}= option")
            folder = "INBOX"
        else:
            folder = path[1:] if path.startswith("/") else path
            folder = folder or "INBOX"
        timeout_text = query.get("timeout", ["30"])[0]
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise ValueError(
                f"mailbox URL timeout must be a number of seconds, got {timeout_text!r}"
            ) from None
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port or _SCHEMES[scheme][2],
            username=unquote(parts.username),
            password=unquote(parts.password),
            folder=folder,
            processed=query["processed"][0] if "processed" in query else None,
            kept=query.get("kept", ["course-kept"])[0],
            verify=_flag(query, "verify", True),
            timeout=timeout,
            plain=_flag(query, "plain", False),
        )

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def describe(self) -> str:
        """``imaps://user@host:port/Folder``, for messages (no password)."""
        path = f"/{self.folder}" if self.protocol == "imap" else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{self.username}@{host}:{self.port}{path}"


class Mailbox(Protocol):
    """An open mailbox; see the module docstring for what happens to messages."""

    def __enter__(self) -> Mailbox: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def messages(
        self, limit: int = 200, skip: AbstractSet[str] = frozenset()
    ) -> list[tuple[str, bytes]]:
        """Up to ``limit`` messages, oldest first, as (stable id, raw bytes). Messages whose
        id is in ``skip`` are not downloaded."""
        ...

    def processed(self, message_id: str) -> None:
        """The message was handled: move it to the processed folder, or delete it."""
        ...

    def kept(self, message_id: str) -> None:
        """The message could not be used: move it to the kept folder (IMAP), or leave it on
        the server (POP3; pass its id in ``skip`` from then on)."""
        ...


def open_mailbox(url: str | MailboxSettings) -> Mailbox:
    """The mailbox at ``url``, to be used as ``with open_mailbox(url) as box:``.

    The URL is checked here (:class:`ValueError`); the connection is made when the ``with``
    block is entered (:class:`MailboxError`)."""
    settings = url if isinstance(url, MailboxSettings) else MailboxSettings.from_url(url)
    if settings.protocol == "imap":
        return ImapMailbox(settings)
    return Pop3Mailbox(settings)


def _same_folder(a: str, b: str) -> bool:
    if a.upper() == "INBOX" or b.upper() == "INBOX":
        return a.upper() == b.upper()
    return a == b


def _imap_utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501, section 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            encoded = base64.b64encode(data).rstrip(b"=").replace(b"/", b",")
            out.append("&" + encoded.decode("ascii") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _imap_mailbox_name(name: str) -> str:
    """A folder name as an IMAP quoted string."""
    encoded = _imap_utf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: Any) -> str:
    """A server's response text, for an error message."""
    if isinstance(data, list | tuple):
        return " ".join(_text(item) for item in data if item is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace").strip()
    return str(data).strip()


def _quietly(close: Callable[[], object]) -> None:
    """Close a connection that may already be broken (a failed TLS handshake closes the
    socket under the client)."""
    try:
        close()
    except OSError:
        pass


class _Client:
    """What both protocols share: the settings, and error messages without the password."""

    settings: MailboxSettings

    def _scrub(self, message: str) -> str:
        password = self.settings.password
        if password:
            message = message.replace(password, "***")
        return message

    def _error(self, message: str) -> MailboxError:
        return MailboxError(self._scrub(f"{self.settings.describe()}: {message}"))


class ImapMailbox(_Client):
    """A mailbox folder read over IMAP; messages leave the folder when they are handled."""

    def __init__(self, settings: MailboxSettings) -> None:
        self.settings = settings
        self._client: imaplib.IMAP4 | None = None
        self._capabilities: set[str] = set()
        self._uidvalidity = ""
        self._existing: set[str] = set()

    # -- session ---------------------------------------------------------------------------

    def __enter__(self) -> ImapMailbox:
        self._client = self._connect()
        try:
            self._login()
            self._select()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # LOGOUT without CLOSE: CLOSE would expunge every message marked \Deleted in the
        # folder, including ones someone else marked.
        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()  # sends LOGOUT and closes the connection
        except (imaplib.IMAP4.error, OSError):
            _quietly(client.shutdown)

    def _connect(self) -> imaplib.IMAP4:
        s = self.settings
        try:
            client: imaplib.IMAP4
            if s.implicit_tls:
                client = imaplib.IMAP4_SSL(
                    s.host, s.port, ssl_context=s.tls_context(), timeout=s.timeout
                )
            else:
                client = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise self._error(f"cannot connect: {exc}") from None
        if not s.implicit_tls and not s.plain:
            try:
                if "STARTTLS" not in client.capabilities:
                    raise self._error(
                        "the server does not offer STARTTLS; use imaps://, or plain=true for "
                        "a test server on loopback"
                    )
                client.starttls(ssl_context=s.tls_context())
            except (OSError, imaplib.IMAP4.error) as exc:
                _quietly(client.shutdown)
                raise self._error(f"STARTTLS failed: {exc}") from None
            except MailboxError:
                _quietly(client.shutdown)
                raise
        return client

    def _login(self) -> None:
        s = self.settings
        client = self._imap()
        try:
            if s.username.isascii() and s.password.isascii():
                client.login(s.username, s.password)
            elif "AUTH=PLAIN" in client.capabilities:
                secret = f"\0{s.username}\0{s.password}".encode()
                client.authenticate("PLAIN", lambda _challenge: secret)
            else:
                raise self._error(
                    "the user name or password is not ASCII and the server offers no "
                    "AUTH=PLAIN to send it in UTF-8"
                )
        except imaplib.IMAP4.error as exc:
            raise self._error(f"login as {s.username!r} refused: {_text(exc.args)}") from None
        except OSError as exc:
            raise self._error(f"connection lost while logging in: {exc}") from None
        # Servers announce more capabilities (MOVE, UIDPLUS) once logged in.
        typ, data = self._command("CAPABILITY", client.capability)
        words = b" ".join(d for d in data if isinstance(d, bytes)).decode("ascii", "replace")
        self._capabilities = {word.upper() for word in words.split()}

    def _select(self) -> None:
        client = self._imap()
        folder = self.settings.folder
        typ, data = self._command("SELECT", client.select, _imap_mailbox_name(folder))
        if typ != "OK":
            raise self._error(f"cannot select folder {folder!r}: {_text(data)}")
        _, values = client.response("UIDVALIDITY")
        value = values[0] if values and values[0] is not None else None
        if value is None:  # not announced with SELECT: ask for it
            typ, data = self._command(
                "STATUS", client.status, _imap_mailbox_name(folder), "(UIDVALIDITY)"
            )
            match = re.search(rb"UIDVALIDITY (\d+)", b" ".join(d for d in data if d))
            if typ != "OK" or match is None:
                raise self._error(f"the server gives no UIDVALIDITY for {folder!r}")
            value = match.group(1)
        self._uidvalidity = value.decode("ascii") if isinstance(value, bytes) else str(value)

    def _imap(self) -> imaplib.IMAP4:
        if self._client is None:
            raise RuntimeError("the mailbox is not open: use it in a `with` block")
        return self._client

    def _command(self, name: str, method: Any, *args: Any) -> tuple[str, list[Any]]:
        """Run one imaplib command; a dropped connection or protocol error is a MailboxError."""
        try:
            typ, data = method(*args)
        except imaplib.IMAP4.abort as exc:
            raise self._error(f"connection lost during {name}: {exc}") from None
        except imaplib.IMAP4.error as exc:
            raise self._error(f"{name} failed: {exc}") from None
        except OSError as exc:
            raise self._error(f"connection lost during {name}: {exc}") from None
        return str(typ), list(data)

    def _uid_command(self, name: str, *args: str) -> list[Any]:
        typ, data = self._command(f"UID {name}", self._imap().uid, name, *args)
        if typ != "OK":
            raise self._error(f"UID {name} refused: {_text(data)}")
        return data

    # -- messages --------------------------------------------------------------------------

    def messages(
        self, limit: int = 200, skip: AbstractSet[str] = frozenset()
    ) -> list[tuple[str, bytes]]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        data = self._uid_command("SEARCH", "UNDELETED")
        uids = sorted(int(word) for chunk in data if chunk for word in chunk.split())
        wanted = [uid for uid in uids if self._id(uid) not in skip][:limit]
        bodies: dict[int, bytes] = {}
        for start in range(0, len(wanted), _FETCH_BATCH):
            batch = wanted[start : start + _FETCH_BATCH]
            response = self._uid_command("FETCH", ",".join(map(str, batch)), "(UID BODY.PEEK[])")
            bodies.update(_fetched_bodies(response))
        # A message expunged by someone else since the SEARCH is simply not returned.
        return [(self._id(uid), bodies[uid]) for uid in wanted if uid in bodies]

    def processed(self, message_id: str) -> None:
        uid = self._uid(message_id)
        if self.settings.processed is None:
            self._delete(uid)
            log.info("mailbox: deleted message %s", message_id)
        else:
            self._move(uid, self.settings.processed)
            log.info("mailbox: moved message %s to %r", message_id, self.settings.processed)

    def kept(self, message_id: str) -> None:
        uid = self._uid(message_id)
        self._move(uid, self.settings.kept)
        log.info("mailbox: kept message %s in %r", message_id, self.settings.kept)

    def _id(self, uid: int) -> str:
        return f"{self._uidvalidity}:{uid}"

    def _uid(self, message_id: str) -> str:
        validity, _, uid = message_id.partition(":")
        if not (validity.isdigit() and uid.isdigit() and int(uid) > 0):
            raise ValueError(f"not an IMAP message id (UIDVALIDITY:UID): {message_id!r}")
        self._imap()
        if validity != self._uidvalidity:
            raise self._error(
                f"message {message_id} is from before the folder's UIDVALIDITY changed "
                f"(now {self._uidvalidity}): its UID may name another message now"
            )
        return uid

    def _ensure_folder(self, folder: str) -> None:
        if folder in self._existing:
            return
        client = self._imap()
        name = _imap_mailbox_name(folder)
        typ, _ = self._command("STATUS", client.status, name, "(MESSAGES)")
        if typ != "OK":
            typ, data = self._command("CREATE", client.create, name)
            if typ != "OK" and b"ALREADYEXISTS" not in b" ".join(d for d in data if d):
                raise self._error(f"cannot create folder {folder!r}: {_text(data)}")
            self._command("SUBSCRIBE", client.subscribe, name)  # so mail programs show it
            log.info("mailbox: created folder %r", folder)
        self._existing.add(folder)

    def _move(self, uid: str, folder: str) -> None:
        self._ensure_folder(folder)
        name = _imap_mailbox_name(folder)
        if "MOVE" in self._capabilities:
            self._uid_command("MOVE", uid, name)
        else:
            self._uid_command("COPY", uid, name)
            self._delete(uid)

    def _delete(self, uid: str) -> None:
        self._uid_command("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self._capabilities:
            self._uid_command("EXPUNGE", uid)
        else:
            typ, data = self._command("EXPUNGE", self._imap().expunge)
            if typ != "OK":
                raise self._error(f"EXPUNGE refused: {_text(data)}")


def _fetched_bodies(response: list[Any]) -> dict[int, bytes]:
    """UID -> message from an imaplib ``UID FETCH ... (UID BODY.PEEK[])`` answer.

    imaplib gives each message as ``(b'7 (UID 42 BODY[] {123}', b'<message>')`` followed by
    ``b')'`` (or by ``b' UID 42)'`` when the server puts the UID after the body); unrelated
    FETCH responses (flag changes by another client) may be mixed in."""
    bodies: dict[int, bytes] = {}
    for index, item in enumerate(response):
        if not isinstance(item, tuple) or b"BODY[]" not in item[0]:
            continue
        match = re.search(rb"\bUID (\d+)", item[0])
        if match is None and index + 1 < len(response):
            following = response[index + 1]
            if isinstance(following, bytes):
                match = re.search(rb"\bUID (\d+)", following)
        if match is not None:
            bodies[int(match.group(1))] = item[1]
    return bodies


class _POP3(poplib.POP3):
    """poplib's POP3 with a longer line limit (see _POP3_MAX_LINE)."""

    def _getline(self) -> tuple[bytes, int]:
        line: bytes = self.file.readline(_POP3_MAX_LINE + 1)
        if len(line) > _POP3_MAX_LINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets


class _POP3_SSL(_POP3, poplib.POP3_SSL):
    pass


class Pop3Mailbox(_Client):
    """A POP3 maildrop; handled messages are deleted when the session ends normally."""

    def __init__(self, settings: MailboxSettings) -> None:
        self.settings = settings
        self._client: poplib.POP3 | None = None
        self._numbers: dict[str, int] = {}  # UIDL -> message number in this session

    def __enter__(self) -> Pop3Mailbox:
        self._client = self._connect()
        try:
            self._login()
        except BaseException:
            _quietly(self._client.close)
            self._client = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            # QUIT carries out the deletions (DELE) of processed messages; also after an
            # error in the `with` block, since those messages were handled.
            client.quit()
        except (poplib.error_proto, OSError) as error:
            problem = self._error(
                f"QUIT failed ({error}): messages marked processed in this session stay on "
                "the server and will be listed again"
            )
            if exc_type is None:
                raise problem from None
            log.warning("%s", problem)
        finally:
            _quietly(client.close)

    def _connect(self) -> poplib.POP3:
        s = self.settings
        try:
            client: poplib.POP3
            if s.implicit_tls:
                client = _POP3_SSL(s.host, s.port, timeout=s.timeout, context=s.tls_context())
            else:
                client = _POP3(s.host, s.port, timeout=s.timeout)
        except (OSError, poplib.error_proto) as exc:
            raise self._error(f"cannot connect: {exc}") from None
        if not s.implicit_tls and not s.plain:
            try:
                client.stls(context=s.tls_context())
            except (OSError, poplib.error_proto) as exc:
                _quietly(client.close)
                raise self._error(
                    f"STLS (STARTTLS) failed: {exc}; use pop3s://, or plain=true for a test "
                    "server on loopback"
                ) from None
        return client

    def _login(self) -> None:
        s = self.settings
        client = self._pop()
        try:
            client.user(s.username)
            client.pass_(s.password)
        except poplib.error_proto as exc:
            raise self._error(f"login as {s.username!r} refused: {_text(exc.args)}") from None
        except OSError as exc:
            raise self._error(f"connection lost while logging in: {exc}") from None

    def _pop(self) -> poplib.POP3:
        if self._client is None:
            raise RuntimeError("the mailbox is not open: use it in a `with` block")
        return self._client

    @contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        try:
            yield
        except poplib.error_proto as exc:
            raise self._error(f"{name} failed: {_text(exc.args)}") from None
        except OSError as exc:
            raise self._error(f"connection lost during {name}: {exc}") from None

    def _list(self) -> None:
        with self._errors("UIDL"):
            _, lines, _ = self._pop().uidl()
        self._numbers = {}
        for line in lines:
            number, _, uid = line.partition(b" ")
            self._numbers[uid.strip().decode("latin-1")] = int(number)

    def messages(
        self, limit: int = 200, skip: AbstractSet[str] = frozenset()
    ) -> list[tuple[str, bytes]]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._list()
        wanted = sorted((number, uid) for uid, number in self._numbers.items() if uid not in skip)[
            :limit
        ]
        found = []
        for number, uid in wanted:
            with self._errors("RETR"):
                _, lines, _ = self._pop().retr(number)
            found.append((uid, b"".join(line + b"\r\n" for line in lines)))
        return found

    def processed(self, message_id: str) -> None:
        number = self._numbers.get(message_id)
        if number is None:  # not listed yet in this session
            self._list()
            number = self._numbers.get(message_id)
        if number is None:
            log.info("mailbox: message %s is no longer on the server", message_id)
            return
        with self._errors("DELE"):
            self._pop().dele(number)
        del self._numbers[message_id]
        log.info("mailbox: deleted message %s (when the session ends)", message_id)

    def kept(self, message_id: str) -> None:
        self._pop()
        log.info("mailbox: kept message %s on the server", message_id)
