"""Keeping personal data out of the logs.

Our own log lines never name a reader, but other lines can: the web server's access log
has every link's token in its request line, an SMTP error can quote the recipient, a rate
limiter logs its key, a database error lists the values of the failed statement. So every
log record is masked before any handler sees it:

- email addresses become ``a***@example.com`` (also URL-encoded, ``a***%40example.com``);
- the token in a reader's link becomes ``[token]``: ``/confirm/[token]``, ``/me/[token]/pause``;
- the values of a failed SQL statement (``[parameters: ...]``) are dropped.

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
from typing import Any

#: The link paths whose next segment is a signed token (see ``course.web.links``).
TOKEN_PATHS = ("confirm", "unsubscribe", "done", "checkin", "view", "me", "pause", "book")

# An address is found from its "@" (or URL-encoded "%40") and domain; the local part is
# then walked back from the "@", at most 64 characters (its maximum length), which keeps
# the scan linear however long a hostile request line is.
_AT_DOMAIN = re.compile(r"(@|%40)((?:[\w-]{1,63}\.){1,16}[\w-]{0,62}\w)", re.IGNORECASE)
#: Characters of a local part besides letters and digits (RFC 5322 atext, and "%" for
#: URL-encoded ones).
_LOCAL_EXTRA = frozenset("!#$%&'*+-/=?^_`{|}~.")
#: Where a local part starts inside a URL or a key=value log line. A local part that
#: really contains one of these is still masked from there to the "@".
_LOCAL_STOP = frozenset("=&?/:")
_TOKEN = re.compile(rf"(/(?:{'|'.join(TOKEN_PATHS)})/)[^/\s?#\"'<>]+")
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")


def mask(text: str) -> str:
    """``text`` with email addresses, link tokens and SQL parameters masked."""
    if "@" in text or "%40" in text:
        text = _mask_addresses(text)
    if "/" in text:
        text = _TOKEN.sub(r"\1[token]", text)
    if "[parameters:" in text:
        text = _SQL_PARAMETERS.sub("[parameters: hidden]", text)
    return text


def _mask_addresses(text: str) -> str:
    """Every ``local@domain`` as ``l***@domain``."""
    parts: list[str] = []
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
        parts.append(text[done:start])
        parts.append(f"{text[start]}***{match.group(1)}{match.group(2)}")
        done = match.end()
    parts.append(text[done:])
    return "".join(parts)


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
