"""Keeping personal data out of the logs.

Our own log lines never name a reader, but other lines can: the web server's access log
has every link's token in its request line, an SMTP error can quote the recipient, a rate
limiter logs its key, a database error lists the values of the failed statement. So every
log record is masked before any handler sees it:

- email addresses become ``a***@example.com`` (also URL-encoded, ``a***%40example.com``);
- the token in a reader's link becomes ``[token]``: ``/confirm/[token]``, ``/me/[token]/pause``;
- the values of a failed SQL statement (``[parameters: ...]``) are dropped.

Addresses and link paths are also found when some of their characters are percent-encoded
(``/%63onfirm%2F...``, ``ana%2Elopez%40example.com``): see :func:`_decode`.

Names and notes cannot be recognised in free text; they are kept out by never logging
them (nothing in ``course`` does).

:class:`MaskingFilter` is an ordinary :class:`logging.Filter` (usable in a logging config,
for example gunicorn's ``logconfig_dict``). :func:`install_log_masking` applies the same
masking to every record created in the process, whichever logger or handler it goes to;
the app factory calls it, and any command-line entry point can.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: The link paths whose next segment is a signed token (see ``course.web.links``).
TOKEN_PATHS = ("confirm", "unsubscribe", "done", "checkin", "view", "me", "pause", "book")

# Percent-encoding. A request line in gunicorn's access log holds the path as the client
# sent it (werkzeug's own log decodes it, but keeps "%2F", "%3F", "%25" and spaces
# encoded), while Werkzeug routes the *decoded* path: it decodes every %XX escape once
# (UTF-8), "%2F" included, so "/%63onfirm/<token>", "/confirm%2f<token>" and
# "/%6De%2F<token>/pause" all reach a reader's page. Routing is case-sensitive
# ("/CONFIRM/x" is a 404), merges repeated slashes ("/confirm//x" redirects to
# "/confirm/x", so that line names the token too), and takes ";params" as part of the
# token; "//confirm/x" is routed as "/confirm/x".
#
# So addresses and tokens are looked for in a decoded copy of the text (:func:`_decode`),
# which remembers where each of its characters starts in the original; a match is mapped
# back and only the secret part is replaced in the original text, the rest is kept as it
# was written ("/%63onfirm/[token]"). Decoding is one pass, and every pattern below runs
# on the decoded copy exactly as it would on plain text, so masking stays linear in the
# length of the line however it is encoded.
#
# An escape is left as written when the character it stands for would end what is being
# looked for. In the token pass, that is whitespace, "?", "#", quotes, "<" and ">": for
# Werkzeug "%3F" and "%20" are part of the path, so "/confirm/%3F<token>" is masked as one
# token, while a literal "?" still starts the query string ("%2F" is decoded: it ends the
# token as Werkzeug's router sees it, "/me/[token]%2Fpause"). In the address pass, that is
# any character that cannot be in an address or that starts a local part ("=", "/", a
# space...): "%" and hex digits are local-part characters, so such an escape is walked over
# as before, and decoding never masks less of an address than the plain text did.

# An address is found from its "@" (or URL-encoded "%40") and domain; the local part is
# then walked back from the "@", at most 64 characters (its maximum length), which keeps
# the scan linear however long a hostile request line is. Each label of the domain is a
# run of [\w-] ended by a dot that it cannot contain, so the pattern never backtracks more
# than a label's length.
_AT_DOMAIN = re.compile(r"(@|%40)((?:[\w-]{1,63}\.){1,16}[\w-]{0,62}\w)", re.IGNORECASE)
#: Characters of a local part besides letters and digits (RFC 5322 atext, and "%" for
#: URL-encoded ones).
_LOCAL_EXTRA = frozenset("!#$%&'*+-/=?^_`{|}~.")
#: Where a local part starts inside a URL or a key=value log line. A local part that
#: really contains one of these is still masked from there to the "@".
_LOCAL_STOP = frozenset("=&?/:")
# A token path (any case: routing is case-sensitive, but masking more is harmless), one or
# more slashes, then the token: a run of characters that cannot contain "/", so "/+" and
# the token never compete for a character and a failed match costs only its slash run.
_TOKEN = re.compile(rf"/(?:{'|'.join(TOKEN_PATHS)})/+([^/\s?#\"'<>]+)", re.IGNORECASE)
#: Characters that end a token in a log line; an escape standing for one is not decoded.
_ENDS_TOKEN = re.compile(r"[\s?#\"'<>]")
#: A run of %XX escapes.
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")

#: A replacement: characters [start, end) of the decoded text become the string.
_Edit = tuple[int, int, str]


def mask(text: str) -> str:
    """``text`` with email addresses, link tokens and SQL parameters masked."""
    if "@" in text or "%40" in text:
        text = _rewrite(text, _address_edits, keep=_ends_address)
    if "/" in text or "%2F" in text or "%2f" in text:
        text = _rewrite(text, _token_edits, keep=_ENDS_TOKEN.match)
    if "[parameters:" in text:
        text = _SQL_PARAMETERS.sub("[parameters: hidden]", text)
    return text


def _rewrite(
    text: str,
    find: Callable[[str], Iterable[_Edit]],
    keep: Callable[[str], object] | None = None,
) -> str:
    """``text`` with the edits ``find`` returns for its decoded copy applied to it."""
    if "%" in text:
        decoded, starts = _decode(text, keep)
    else:
        decoded, starts = text, None
    parts: list[str] = []
    done = 0
    for start, end, replacement in find(decoded):
        if starts is not None:
            start, end = starts[start], starts[end]
        parts.append(text[done:start])
        parts.append(replacement)
        done = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _decode(text: str, keep: Callable[[str], object] | None = None) -> tuple[str, list[int]]:
    """``text`` with its %XX escapes decoded once, as Werkzeug decodes a path.

    Returns the decoded text and, for each of its characters, the offset in ``text`` where
    it starts (plus ``len(text)`` at the end, for spans running to the end). An escape is
    left as written when it does not decode (a byte that is not valid UTF-8 with the
    escapes after it) or when ``keep`` is true for its character.
    """
    chars: list[str] = []
    starts: list[int] = []
    done = 0
    for run in _ESCAPES.finditer(text):
        chars.append(text[done : run.start()])
        starts.extend(range(done, run.start()))
        i, end = run.start(), run.end()
        while i < end:
            size = _utf8_length(int(text[i + 1 : i + 3], 16))
            char = None
            if size and i + 3 * size <= end:
                hexdigits = "".join(text[j + 1 : j + 3] for j in range(i, i + 3 * size, 3))
                try:
                    char = bytes.fromhex(hexdigits).decode("utf-8")
                except UnicodeDecodeError:  # overlong, a surrogate, a bad continuation byte
                    char = None
            if char is None or (keep is not None and keep(char)):
                chars.append(text[i : i + 3])
                starts.extend((i, i + 1, i + 2))
                i += 3
            else:
                chars.append(char)
                starts.append(i)
                i += 3 * size
        done = end
    chars.append(text[done:])
    starts.extend(range(done, len(text) + 1))
    return "".join(chars), starts


def _utf8_length(byte: int) -> int:
    """How many bytes a UTF-8 sequence starting with ``byte`` has; 0 if none can."""
    if byte < 0x80:
        return 1
    if 0xC2 <= byte <= 0xDF:
        return 2
    if 0xE0 <= byte <= 0xEF:
        return 3
    if 0xF0 <= byte <= 0xF4:
        return 4
    return 0


def _ends_address(char: str) -> bool:
    """Whether ``char`` cannot be part of an address, or starts its local part."""
    return not (char.isalnum() or char == "@" or char in _LOCAL_EXTRA) or char in _LOCAL_STOP


def _token_edits(text: str) -> Iterator[_Edit]:
    """The token after every token path, as ``[token]``."""
    for match in _TOKEN.finditer(text):
        yield match.start(1), match.end(1), "[token]"


def _address_edits(text: str) -> Iterator[_Edit]:
    """Every ``local@domain`` as ``l***@domain``: the local part after its first character."""
    done = 0
    for match in _AT_DOMAIN.finditer(text):
        at = match.start()
        if at < done:
            continue
        start = at
        while start > done and at - start < 64:
            ch = text[start - 1]
            if not (ch.isalnum() or ch in _LOCAL_EXTRA) or ch in _LOCAL_STOP:
                break
            start -= 1
        if start == at:
            if at == done or text[at - 1].isspace() or text[at - 1] in '<("':
                continue  # "@domain" on its own is not an address
            start = at - 1  # an unusual last character: mask it all the same
        yield start + 1, at, "***"
        done = match.end()


def mask_record(record: logging.LogRecord) -> None:
    """Mask a record in place: its message (with arguments), traceback and stack."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: logging itself reports it later
        return
    masked = mask(message)
    if masked != message or record.args:
        record.msg = masked
        record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = mask(record.exc_text)
    if record.stack_info:
        record.stack_info = mask(record.stack_info)


class MaskingFilter(logging.Filter):
    """A logging filter that masks addresses, link tokens and SQL parameters in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record; never drops it."""
        mask_record(record)
        return True


def install_log_masking() -> None:
    """Mask every log record created in this process from now on (idempotent).

    A filter on a logger does not see records of its child loggers, and servers (gunicorn)
    and test tools add handlers of their own, so the masking hooks into record creation
    instead: whichever logger or handler a record goes to, it is already masked.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "course_masking", False):
        return

    def masked_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        mask_record(record)
        return record

    masked_factory.course_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_factory)


def configure_logging(level: str = "INFO") -> None:
    """One line per event on stderr, ``key=value`` where it matters, for any log system;
    addresses, link tokens and SQL values masked (``course.logs``)."""
    install_log_masking()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(level)
    # APScheduler logs every job run at INFO, and Alembic its plugins; our own lines say more.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
